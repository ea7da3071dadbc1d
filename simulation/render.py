"""Render one mammographic view of a :class:`Scene`: pixels in the stored DICOM orientation
plus exact masks, boxes and the 3D -> pixel projection of that image."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import physics
from .imaging_config import ImagingConfig, VendorLook, sample
from .markers import burn_in_markers
from .presentation import Processing, present
from .projection import PrimitiveMaps, project_primitives
from .scene import Scene
from .tissue_maps import coarse_tissue, fine_texture, thickness_profile, upsample
from .views import PATIENT_ORIENTATION, ViewGeometry, make_view_geometry


@dataclass
class RenderedView:
    pixels: np.ndarray  # uint16 stored values, standard DICOM orientation
    photometric: str  # MONOCHROME2 (contrast white) or MONOCHROME1 (inverted)
    bits_stored: int
    window_center: float
    window_width: float
    pixel_spacing_mm: tuple[float, float]  # (row, col) in the breast plane
    imager_pixel_spacing_mm: tuple[float, float]  # at the detector
    magnification: float
    patient_orientation: tuple[str, str]
    view: str
    laterality: str
    duct_mask: np.ndarray  # uint8
    centerline: np.ndarray  # uint8
    instances: np.ndarray  # uint16, k = objects[k - 1]
    objects: list[dict]
    nipple_px: tuple[float, float]
    orifice_px: tuple[float, float]
    physics: dict
    project: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    vendor: str = ""
    geometry: ViewGeometry | None = field(default=None, repr=False)
    marker_boxes: list[list[float]] = field(default_factory=list)  # burnt-in, stored [x0,y0,x1,y1]


def _pick_vendor(config: ImagingConfig, rng: np.random.Generator) -> VendorLook:
    weights = np.array([v.weight for v in config.vendors], dtype=float)
    return config.vendors[int(rng.choice(len(weights), p=weights / weights.sum()))]


def _effective_energy(config: ImagingConfig, thickness: float, rng: np.random.Generator) -> float:
    """Automatic exposure control picks harder beams for thicker breasts."""
    lo, hi = config.effective_energy_kev
    t_lo, t_hi = config.compressed_thickness_mm
    frac = (thickness - t_lo) / max(t_hi - t_lo, 1.0) + rng.normal(0.0, 0.15)
    return float(lo + (hi - lo) * np.clip(frac, 0.0, 1.0))


def _nipple_frame(geom: ViewGeometry, box, tip: np.ndarray):
    """(t, d) px over ``box``: t behind the tip along the nipple axis, d across it."""
    a = geom.nipple_axis
    x = np.arange(box[0], box[2], dtype=np.float32)[None, :] + np.float32(0.5 - tip[0])
    y = np.arange(box[1], box[3], dtype=np.float32)[:, None] + np.float32(0.5 - tip[1])
    t = -(x * np.float32(a[0]) + y * np.float32(a[1]))
    d = y * np.float32(a[0]) - x * np.float32(a[1])
    return t, d


def _axis_box(geom: ViewGeometry, tip: np.ndarray, back: float, front: float, half: float):
    """Pixel box around the nipple axis from ``front`` px past the tip to ``back`` px behind
    it, ``half`` px to each side."""
    a = geom.nipple_axis
    n = np.array([-a[1], a[0]])
    corners = np.array(
        [tip + sa * a + sn * half * n for sa in (front, -back) for sn in (-1.0, 1.0)]
    )
    box = (
        max(int(np.floor(corners[:, 0].min())), 0),
        max(int(np.floor(corners[:, 1].min())), 0),
        min(int(np.ceil(corners[:, 0].max())), geom.cols),
        min(int(np.ceil(corners[:, 1].max())), geom.rows),
    )
    return box if box[0] < box[2] and box[1] < box[3] else None


def _nipple_path(scene: Scene, geom: ViewGeometry, rng: np.random.Generator):
    """Path length (mm) through the nipple in profile and the box it covers, or None.

    The nipple is a solid of revolution about the (drooping) nipple axis: an elliptical
    dome at the tip, a slightly widening body and a small flare where it meets the areola.
    Behind the skin line its path fades over a few millimetres into the subareolar tissue,
    so the bump is continuous with the skin line (no gap, no halo).
    """
    sp = geom.spacing_mm
    r = scene.breast.nipple_radius / sp
    tip = geom.to_canonical_px(np.zeros(3))[0]
    base_u = (geom.chest_wall_u + geom.body_depth) / sp
    protrusion = max((tip[0] - base_u) * float(np.hypot(1.0, geom.droop)), 1.0)
    dome = rng.uniform(0.5, 1.0) * min(protrusion, 1.2 * r)
    widen = rng.uniform(0.0, 0.25)
    box = _axis_box(geom, tip, protrusion + 8.0 / sp, 2.0, 1.5 * r + 1)
    if box is None:
        return None
    t, d = _nipple_frame(geom, box, tip)
    s = np.clip(t / np.float32(protrusion), 0.0, 1.0)
    cap = 1.0 - np.square(1.0 - np.clip(t / np.float32(dome), 0.0, 1.0))
    flare = np.square(np.clip((s - 0.8) / 0.2, 0.0, 1.0))
    radius = np.float32(r) * np.sqrt(cap) * (1.0 + np.float32(widen) * s + 0.2 * flare)
    chord = 2.0 * np.sqrt(np.maximum(radius * radius - d * d, 0.0)) * np.float32(sp)
    chord *= t >= 0
    behind = np.maximum((t - np.float32(protrusion)) * np.float32(sp) - np.float32(1.0), 0.0)
    chord *= np.exp(-behind / np.float32(1.5))
    np.minimum(chord, np.float32(geom.thickness_mm), out=chord)
    return box, chord.astype(np.float32)


def _nipple_en_face(scene: Scene, geom: ViewGeometry, rng: np.random.Generator):
    """Excess path (mm) of an off-profile nipple projected over the breast, and its box.

    Turned out of the image plane by ``nipple_tilt_deg``, the nipple shows as a soft, round
    to oval density centred on its tip, foreshortened along its axis.
    """
    sp = geom.spacing_mm
    breast = scene.breast
    r = breast.nipple_radius / sp
    tilt = np.deg2rad(abs(geom.nipple_tilt_deg))
    length = geom.scales[0] * breast.nipple_length / sp * np.cos(tilt)  # foreshortened
    along = r + 0.5 * length
    tip = geom.to_canonical_px(np.zeros(3))[0]
    centre_t = 0.5 * length  # the oval covers the nipple from its tip back to its base
    box = _axis_box(geom, tip, length + r + 2, r + 2, r + 2)
    if box is None:
        return None
    t, d = _nipple_frame(geom, box, tip)
    rho2 = np.square((t - np.float32(centre_t)) / np.float32(along)) + np.square(d / np.float32(r))
    inside = np.maximum(1.0 - rho2, 0.0)
    peak = min(breast.nipple_length * np.sin(tilt) + 2.0, 2.0 * breast.nipple_radius)
    chord = np.power(inside, np.float32(0.6)) * np.float32(peak * rng.uniform(0.7, 1.1))
    return box, chord.astype(np.float32)


def _areola(geom: ViewGeometry, rng: np.random.Generator):
    """Weights (0..1, over a box) of the thickened areolar skin around a nipple in profile,
    the box, and the excess; the weights fall off across the nipple axis."""
    sp = geom.spacing_mm
    tip = geom.nipple_uv / sp
    radius = rng.uniform(12.0, 22.0) / sp
    extra = float(rng.uniform(0.1, 0.4))
    box = _axis_box(geom, tip, 2.0 * radius, 2.0 * radius, 1.6 * radius)
    if box is None or not geom.nipple_in_profile:
        return None, None, extra
    _, d = _nipple_frame(geom, box, tip)
    w = np.exp(-np.square(np.square(d / np.float32(radius))))
    return w.astype(np.float32), box, extra


def _line_integral(scene, geom, config, rng, energy, prims: PrimitiveMaps):
    """Total attenuation (dimensionless) per pixel and the breast support mask."""
    breast = scene.breast
    coarse, tissue_params = coarse_tissue(geom, breast, config, rng)
    mu_fat = physics.attenuation("adipose", energy)
    mu_gland = physics.attenuation("glandular", energy)
    mu_muscle = physics.attenuation("muscle", energy)
    glands = coarse.glandular * (1.0 - coarse.muscle)
    mu_inner = mu_fat + glands * np.float32(mu_gland - mu_fat)
    mu_inner += coarse.muscle * np.float32(mu_muscle - mu_fat)
    edge = upsample(coarse.edge_mm, geom.shape)
    inner, skin = thickness_profile(edge, geom.thickness_mm, breast.skin_thickness)
    mu_skin = np.float32(physics.attenuation("skin", energy))
    # areola: the skin around the nipple is thicker (it shows only near the skin line)
    areola, abox, extra = _areola(geom, rng)
    if areola is not None:
        skin[abox[1] : abox[3], abox[0] : abox[2]] *= 1.0 + np.float32(extra) * areola
    # fine trabecular detail on a grid of half the coarse spacing, strongest at the
    # gland/fat margins and in the glands, none in the muscle; then to the image grid
    mid_shape = (2 * mu_inner.shape[0], 2 * mu_inner.shape[1])
    weight = glands * (1.0 - glands) * 2.0 + 0.15 * glands
    weight *= np.float32(sample(rng, config.fine_texture_strength) * (mu_gland - mu_fat))
    weight *= 1.0 - coarse.muscle
    fine = fine_texture(rng, mid_shape, sample(rng, config.fine_texture_beta))
    fine *= upsample(weight.astype(np.float32), mid_shape)
    fine += upsample(mu_inner.astype(np.float32), mid_shape, cubic=True)
    total = upsample(fine, geom.shape)
    total *= inner
    total += skin * mu_skin
    support = (edge > 0).view(np.uint8)
    # the breast's shape alone (mean tissue, skin, nipple): the vendor's thickness estimate
    mu_mean = np.float32(mu_fat + float(np.mean(glands[coarse.edge_mm > 0])) * (mu_gland - mu_fat))
    # it knows the skin only roughly: the skin line stays visible, thin and moderate
    shape = inner * mu_mean
    shape += skin * np.float32(0.5 * (mu_mean + mu_skin))
    if not geom.nipple_in_profile:  # projected over the breast: a soft, round density
        nipple = _nipple_en_face(scene, geom, rng)
        if nipple is not None:
            box, chord = nipple
            chord *= np.float32(mu_skin - mu_fat)
            total[box[1] : box[3], box[0] : box[2]] += chord
        nipple = None
    else:
        nipple = _nipple_path(scene, geom, rng)
    if nipple is not None:  # the path is at least the nipple's: a bump continuous with the skin
        box, chord = nipple
        region = (slice(box[1], box[3]), slice(box[0], box[2]))
        np.maximum(shape[region], chord * mu_mean, out=shape[region])
        chord *= np.float32(1.05) * mu_skin
        np.maximum(total[region], chord, out=total[region])
        support[region] |= (chord > 0).view(np.uint8)
    contrast = scene.contrast_mg_per_ml
    total += prims.iodine * np.float32(physics.excess_attenuation("iodine", energy, contrast))
    for material, thickness in prims.materials.items():
        total += thickness * np.float32(physics.excess_attenuation(material, energy, contrast))
    np.maximum(total, 0.0, out=total)
    return total, support, tissue_params, shape


def _objects(scene: Scene, geom: ViewGeometry, prims: PrimitiveMaps, instances: np.ndarray):
    """Instance mask (canonical grid) and object records in stored coordinates."""
    objects = []
    rows, cols = geom.shape
    for finding in scene.findings:
        centre = geom.project(finding.center)[0]
        inside = 0 <= centre[0] < cols and 0 <= centre[1] < rows
        footprint = prims.footprints.get(finding.index)
        if footprint is None and not inside:
            continue
        k = len(objects) + 1
        if footprint is not None:
            (x0, y0, x1, y1), mask = footprint
            instances[y0:y1, x0:x1][mask] = k
            if geom.laterality == "R":
                x0, x1 = cols - x1, cols - x0
            box = [x0, y0, x1, y1]
        else:
            half = 0.5 * finding.size_mm / geom.spacing_mm
            box = [centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half]
        if inside:  # the centre always lies in its box (cut-off ends sit on the footprint edge)
            box = [
                min(box[0], np.floor(centre[0])),
                min(box[1], np.floor(centre[1])),
                max(box[2], np.floor(centre[0]) + 1),
                max(box[3], np.floor(centre[1]) + 1),
            ]
        box = [
            float(np.clip(box[0], 0, cols)),
            float(np.clip(box[1], 0, rows)),
            float(np.clip(box[2], 0, cols)),
            float(np.clip(box[3], 0, rows)),
        ]
        objects.append(
            {
                "instance": k,
                "finding": finding.index,
                "label": finding.label,
                "is_mimic": finding.is_mimic,
                "bbox_px": box,
                "center_px": [float(centre[0]), float(centre[1])],
            }
        )
    return objects


def render_view(
    scene: Scene,
    view: str,
    config: ImagingConfig,
    rng: np.random.Generator,
    spacing_mm: float | None = None,
) -> RenderedView:
    """Render ``view`` ("CC", "MLO", "ML") of ``scene``; ``spacing_mm`` renders a coarser grid
    directly (None: the detector's native pitch). Reproducible from ``rng``."""
    look = _pick_vendor(config, rng)
    detector_spacing = float(rng.choice(look.pixel_spacing_mm))
    magnification = sample(rng, config.magnification)
    geom = make_view_geometry(scene, view, config, rng, detector_spacing, magnification, spacing_mm)
    energy = _effective_energy(config, geom.thickness_mm, rng)
    contrast_scale = sample(rng, config.contrast_scale)
    prims = project_primitives(scene, geom, contrast_scale)
    line_integral, support, tissue_params, shape = _line_integral(
        scene, geom, config, rng, energy, prims
    )

    # exposure under automatic exposure control: a target fluence behind the breast
    pixel_area = geom.spacing_mm**2 * magnification**2
    target = sample(rng, config.quanta_per_mm2) * pixel_area
    step = max(1, round(1.0 / geom.spacing_mm))
    behind = line_integral[::step, ::step][support[::step, ::step] > 0]
    median = float(np.median(behind)) if behind.size else 0.0
    quanta_air = target * float(np.exp(median))
    quanta = physics.expected_quanta(line_integral, quanta_air)
    sigma_px = sample(rng, config.blur_sigma_mm) / (geom.spacing_mm * magnification)
    quanta = physics.detector_blur(quanta, sigma_px, sample(rng, config.blur_tail))
    electronic = sample(rng, config.electronic_noise)
    quanta = physics.add_noise(quanta, rng, electronic)
    np.maximum(quanta, 1.0, out=quanta)
    np.log(quanta, out=quanta)
    log_signal = np.float32(np.log(quanta_air)) - quanta  # ~ line integral, air ~ 0

    proc = Processing.sample(look, rng)
    lo, hi = config.bits_stored
    bits = int(rng.integers(int(lo), int(hi) + 1))
    # everything opacified (ducts, lobular blush, extravasated contrast) stays out of the
    # tissue statistics and the equalisation's low-pass: no darkened parenchyma, no halos
    opacified = prims.duct_mask | (prims.iodine > np.float32(0.02)).view(np.uint8)
    pixels, centre, width = present(
        log_signal, support, opacified, geom.spacing_mm, proc, bits, shape
    )
    # markers draw from a stream jumped off the view's, so the rest of every view (and of
    # the views after it) is the same with or without them
    marker_rng = np.random.Generator(_copy_bit_generator(rng).jumped())
    stored = _stored_orientation(geom)
    shown = stored(pixels)
    marker_boxes = burn_in_markers(
        shown,
        stored(support > 0),
        geom.spacing_mm,
        f"{geom.laterality} {view}",
        2**bits - 1,
        config,
        marker_rng,
    )
    pixels = stored(shown)
    monochrome1 = bool(rng.random() < config.monochrome1_probability)
    if monochrome1:
        pixels = np.uint16(2**bits - 1) - pixels
        centre = float(2**bits - 1) - centre

    instances = np.zeros(geom.shape, np.uint16)
    objects = _objects(scene, geom, prims, instances)
    nipple = geom.project(np.zeros(3))[0]
    orifice = geom.project(scene.orifice)[0]
    physics_params = {
        "kvp_effective_kev": round(energy, 2),
        "glandular_fraction": round(float(scene.breast.glandular_fraction), 3),
        "contrast_mg_per_ml": round(float(scene.contrast_mg_per_ml), 1),
        "contrast_scale": round(contrast_scale, 3),
        "compressed_thickness_mm": round(geom.thickness_mm, 1),
        "obliquity_deg": round(geom.obliquity_deg, 1),
        "vendor_look": look.name,
        "detector_spacing_mm": detector_spacing,
        "magnification": round(magnification, 3),
        "quanta_per_pixel_air": round(quanta_air, 1),
        "electronic_noise": round(electronic, 2),
        "blur_sigma_px": round(sigma_px, 3),
        "tone": proc.tone,
        "tone_slope": round(proc.tone_slope, 3),
        "equalization": round(proc.equalization, 3),
        "unsharp_amount": round(proc.unsharp_amount, 3),
        "bits_stored": bits,
        "monochrome1": monochrome1,
        "markers": len(marker_boxes),
        **{k: round(v, 3) for k, v in tissue_params.items()},
    }
    return RenderedView(
        pixels=stored(pixels),
        photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2",
        bits_stored=bits,
        window_center=centre,
        window_width=width,
        pixel_spacing_mm=(geom.spacing_mm, geom.spacing_mm),
        imager_pixel_spacing_mm=(geom.spacing_mm * magnification,) * 2,
        magnification=magnification,
        patient_orientation=PATIENT_ORIENTATION[(geom.laterality, view)],
        view=view,
        laterality=geom.laterality,
        duct_mask=stored(prims.duct_mask),
        centerline=stored(prims.centerline),
        instances=stored(instances),
        objects=objects,
        nipple_px=(float(nipple[0]), float(nipple[1])),
        orifice_px=(float(orifice[0]), float(orifice[1])),
        physics=physics_params,
        project=geom.project,
        vendor=look.name,
        geometry=geom,
        marker_boxes=marker_boxes,
    )


def _copy_bit_generator(rng: np.random.Generator) -> np.random.BitGenerator:
    copy = type(rng.bit_generator)()
    copy.state = rng.bit_generator.state
    return copy


def _stored_orientation(geom: ViewGeometry) -> Callable[[np.ndarray], np.ndarray]:
    """Canonical (nipple right) -> stored: right breasts are mirrored left-right."""
    if geom.laterality == "R":
        return lambda a: np.ascontiguousarray(a[:, ::-1])
    return lambda a: a
