"""Line integrals of the scene's primitives (tubes, blobs) per material, and their exact masks.

Everything is rasterised on the canonical grid of a :class:`ViewGeometry` (nipple pointing
right); ``render`` flips to the stored orientation. Each primitive is evaluated only inside
its own bounding box, so the cost scales with primitive size, not image size.

Tubes are truncated cones with spherical end caps: the chord at in-plane distance ``d`` from
the axis is ``2 sqrt(r^2 - d^2) / cos(tilt)``. Tubes of one ``chain`` merge with ``max`` so
joints are seamless; chains add up, so crossing ducts are denser where they overlap.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import numpy as np
from skimage.draw import line as draw_line

from .scene import Blob, Scene, Tube
from .views import ViewGeometry

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (pixel indices, end exclusive)


@dataclass(frozen=True)
class ProjectedTube:
    """A tube on the canonical pixel grid."""

    a: np.ndarray  # (2,) pixel xy of p0
    b: np.ndarray  # (2,) pixel xy of p1
    r0: float  # radius in pixels
    r1: float
    mm_per_px: float
    inv_cos: float  # 1 / cos(tilt out of the image plane)
    scale: float  # chord scale from compression (thickness / in-plane stretch) * concentration
    max_chord: float  # chords never exceed the 3D segment plus its caps (mm)


@dataclass(frozen=True)
class ProjectedBlob:
    """An ellipsoid on the canonical grid: ``chord = peak * sqrt(1 - p^T S p)``."""

    centre: np.ndarray  # (2,) pixel xy
    inv_shape: np.ndarray  # (2, 2) S in pixel units
    peak: float  # central chord in mm (times concentration)
    half_extent: np.ndarray  # (2,) bounding half sizes in pixels
    lobulation: float
    lobes: np.ndarray  # (k, 3): frequency, amplitude, phase
    softness: float = 0.0  # chord profile (1 - rho^2) ** (0.5 + softness)


@dataclass
class PrimitiveMaps:
    """Per-material thickness maps (mm) and the exact 2D masks of one view."""

    iodine: np.ndarray  # float32 (rows, cols): mm of full-strength contrast
    materials: dict[str, np.ndarray]  # other materials, allocated when present
    duct_mask: np.ndarray  # uint8
    centerline: np.ndarray  # uint8
    footprints: dict[int, tuple[Box, np.ndarray]] = field(default_factory=dict)  # finding -> mask


def _clip_box(x0: float, y0: float, x1: float, y1: float, shape: tuple[int, int]) -> Box | None:
    box = (
        max(int(np.floor(x0)), 0),
        max(int(np.floor(y0)), 0),
        min(int(np.ceil(x1)), shape[1]),
        min(int(np.ceil(y1)), shape[0]),
    )
    return box if box[0] < box[2] and box[1] < box[3] else None


def _grid(box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of a box, as a row vector (x) and a column vector (y)."""
    x = np.arange(box[0], box[2], dtype=np.float32)[None, :] + np.float32(0.5)
    y = np.arange(box[1], box[3], dtype=np.float32)[:, None] + np.float32(0.5)
    return x, y


def project_tube(tube: Tube, geom: ViewGeometry, concentration: float = 1.0) -> ProjectedTube:
    """Move a tube with the view's compression onto the canonical grid.

    Ducts and lesions are stiff, fluid-filled structures: the affine map moves their end
    points, but their radii (and blob shapes) keep their size, so every view shows the
    same calibre and the truth's diameters hold in millimetres.
    """
    ends = geom.to_plane(np.stack([tube.p0, tube.p1]))
    delta = ends[1] - ends[0]
    in_plane = float(np.hypot(delta[0], delta[1]))
    length = float(np.linalg.norm(delta))
    inv_cos = min(length / in_plane, 20.0) if in_plane > 1e-9 else 20.0
    sp = geom.spacing_mm
    return ProjectedTube(
        a=ends[0, :2] / sp,
        b=ends[1, :2] / sp,
        r0=tube.r0 / sp,
        r1=tube.r1 / sp,
        mm_per_px=sp,
        inv_cos=inv_cos,
        scale=concentration,
        max_chord=(length + 2 * max(tube.r0, tube.r1)) * concentration,
    )


def tube_box(t: ProjectedTube, shape: tuple[int, int]) -> Box | None:
    r = max(t.r0, t.r1) + 1.0
    return _clip_box(
        min(t.a[0], t.b[0]) - r,
        min(t.a[1], t.b[1]) - r,
        max(t.a[0], t.b[0]) + r,
        max(t.a[1], t.b[1]) + r,
        shape,
    )


def tube_chord(t: ProjectedTube, box: Box) -> np.ndarray:
    """Chord length (mm, float32) of a projected tube at the pixel centres of ``box``."""
    x, y = _grid(box)
    ex, ey = np.float32(t.b[0] - t.a[0]), np.float32(t.b[1] - t.a[1])
    length2 = float(ex * ex + ey * ey)
    dx, dy = x - np.float32(t.a[0]), y - np.float32(t.a[1])
    if length2 < 1e-12:
        along = np.zeros((dy.shape[0], dx.shape[1]), np.float32)
    else:
        along = (dx * ex + dy * ey) * np.float32(1.0 / length2)
    clamped = np.clip(along, 0.0, 1.0)
    px = dx - clamped * ex
    py = dy - clamped * ey
    radius = np.float32(t.r0) + np.float32(t.r1 - t.r0) * clamped
    half2 = radius * radius - (px * px + py * py)
    np.maximum(half2, 0.0, out=half2)
    chord = np.sqrt(half2)
    # inside the cylinder the ray crosses it obliquely; the caps are spheres
    inside = (along > 0.0) & (along < 1.0)
    chord *= np.where(
        inside,
        np.float32(2 * t.inv_cos * t.mm_per_px * t.scale),
        np.float32(2 * t.mm_per_px * t.scale),
    )
    np.minimum(chord, np.float32(t.max_chord), out=chord)
    return chord


def _lobes(seed: int) -> np.ndarray:
    """Surface lobules of a blob from its own seed, so every view sees the same shape."""
    rng = np.random.default_rng(seed)
    freqs = np.arange(2, 7, dtype=float)
    amps = rng.uniform(0.2, 1.0, freqs.size) / freqs
    phases = rng.uniform(0, 2 * np.pi, freqs.size)
    return np.stack([freqs, amps / amps.sum(), phases], axis=1)


def project_blob(blob: Blob, geom: ViewGeometry, concentration: float = 1.0) -> ProjectedBlob:
    """Ellipsoid moved (rigidly turned) into the view; S is the Schur complement of its quadric."""
    rotation = geom.matrix / np.linalg.norm(geom.matrix, axis=1, keepdims=True)
    shape = rotation @ blob.rotation @ np.diag(blob.radii)  # columns: ellipsoid axes in uvc
    inv = np.linalg.inv(shape)
    quad = inv.T @ inv  # q^T Q q <= 1 inside (q relative to the centre, mm)
    q_cc = quad[2, 2]
    schur = quad[:2, :2] - np.outer(quad[:2, 2], quad[2, :2]) / q_cc
    sp = geom.spacing_mm
    inv_shape = schur * sp * sp  # pixel units
    cov = np.linalg.inv(inv_shape)
    grow = 1.0 + abs(blob.lobulation)
    return ProjectedBlob(
        centre=geom.to_plane(blob.center)[0, :2] / sp,
        inv_shape=inv_shape,
        peak=2.0 / np.sqrt(q_cc) * concentration,
        half_extent=np.sqrt(np.diag(cov)) * grow,
        lobulation=float(blob.lobulation),
        lobes=_lobes(blob.seed),
        softness=float(blob.softness),
    )


def blob_box(b: ProjectedBlob, shape: tuple[int, int]) -> Box | None:
    h = b.half_extent + 1.0
    return _clip_box(
        b.centre[0] - h[0], b.centre[1] - h[1], b.centre[0] + h[0], b.centre[1] + h[1], shape
    )


def blob_chord(b: ProjectedBlob, box: Box) -> np.ndarray:
    """Chord length (mm, float32) of a projected (lobulated) ellipsoid inside ``box``."""
    x, y = _grid(box)
    dx, dy = x - np.float32(b.centre[0]), y - np.float32(b.centre[1])
    s = b.inv_shape.astype(np.float32)
    rho2 = s[0, 0] * dx * dx + (2 * s[0, 1]) * dx * dy + s[1, 1] * dy * dy
    if b.lobulation:
        angle = np.arctan2(dy, dx)
        bumps = np.zeros_like(rho2)
        for freq, amp, phase in b.lobes:
            bumps += np.float32(amp) * np.cos(np.float32(freq) * angle + np.float32(phase))
        if b.lobulation > 0:
            rho2 /= np.square(1.0 + np.float32(b.lobulation) * bumps)
        else:  # negative: lobules inside the outline only (clefts), never beyond it
            rho2 /= np.square(1.0 + np.float32(0.5 * b.lobulation) * (1.0 - bumps))
    inside = np.maximum(1.0 - rho2, 0.0)
    half = np.sqrt(inside) if not b.softness else np.power(inside, np.float32(0.5 + b.softness))
    return half * np.float32(b.peak)


def _filled(tube: Tube) -> float:
    return tube.concentration if tube.material == "iodine" else 1.0


TubeItem = tuple  # (key, Tube, ProjectedTube, Box)


def _add_chained_tubes(
    tubes: list[TubeItem],
    iodine: np.ndarray,
    materials: dict[str, np.ndarray],
    duct_mask: np.ndarray,
    keep: dict[int, tuple[Box, np.ndarray]],
) -> None:
    """Max-merge each chain, sum chains; ``tubes`` holds (key, Tube, ProjectedTube, box)."""
    by_chain: dict[tuple, list[TubeItem]] = {}
    for item in tubes:
        by_chain.setdefault((item[1].material, item[0][0], item[1].chain), []).append(item)
    for (material, _, _), items in by_chain.items():
        target = (
            iodine if material == "iodine" else _material_map(materials, material, iodine.shape)
        )
        boxes = np.array([it[3] for it in items])
        for i, (key, tube, proj, box) in enumerate(items):
            chord = tube_chord(proj, box)
            if key in keep:
                keep[key] = (box, chord > 0)
            if material == "iodine" and tube.branch >= 0 and key[0] == "tree":
                duct_mask[box[1] : box[3], box[0] : box[2]] |= (chord > 0).view(np.uint8)
            # earlier overlapping tubes of the chain: add only what exceeds their max
            prior = np.flatnonzero(
                (boxes[:i, 0] < box[2])
                & (boxes[:i, 2] > box[0])
                & (boxes[:i, 1] < box[3])
                & (boxes[:i, 3] > box[1])
            )
            if prior.size:
                previous = np.zeros_like(chord)
                for j in prior:
                    np.maximum(previous, tube_chord(items[j][2], box), out=previous)
                chord = np.maximum(chord - previous, 0.0)
            target[box[1] : box[3], box[0] : box[2]] += chord


def _material_map(
    materials: dict[str, np.ndarray], name: str, shape: tuple[int, int]
) -> np.ndarray:
    if name not in materials:
        materials[name] = np.zeros(shape, np.float32)
    return materials[name]


def draw_centerline(scene: Scene, geom: ViewGeometry, out: np.ndarray) -> None:
    """1-px centrelines of the filled branches (canonical grid)."""
    rows, cols = out.shape
    for branch in scene.branches:
        if not branch.filled or len(branch.points) < 2:
            continue
        xy = np.floor(geom.to_canonical_px(branch.points)).astype(int)
        for (x0, y0), (x1, y1) in itertools.pairwise(xy):
            rr, cc = draw_line(y0, x0, y1, x1)
            ok = (rr >= 0) & (rr < rows) & (cc >= 0) & (cc < cols)
            out[rr[ok], cc[ok]] = 1


def view_cannula(scene: Scene, geom: ViewGeometry) -> list[Tube]:
    """The cannula and tubing as placed for this view.

    They hang outside the breast and are repositioned between views; with an off-profile
    nipple everything outside the orifice turns out of the image plane by the nipple's tilt
    (about the in-plane axis across the nipple), so the cannula enters obliquely,
    foreshortened over the breast. The part inside the duct stays where it is.
    """
    if geom.nipple_in_profile or not scene.cannula:
        return scene.cannula
    e_c = geom.matrix[2] / np.linalg.norm(geom.matrix[2])
    axis = np.cross(np.array([1.0, 0.0, 0.0]), e_c)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(geom.nipple_tilt_deg)
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    turn = np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)
    origin = np.asarray(scene.orifice, dtype=float)

    def moved(p: np.ndarray) -> np.ndarray:
        return origin + turn @ (p - origin)

    first = scene.cannula[0]
    tubes = [  # the inserted part stays in the channel; the rest turns about the orifice
        replace(first, p1=origin.copy()),
        replace(first, p0=origin.copy(), p1=moved(first.p1)),
    ]
    tubes += [replace(t, p0=moved(t.p0), p1=moved(t.p1)) for t in scene.cannula[1:]]
    return tubes


def project_primitives(
    scene: Scene, geom: ViewGeometry, contrast_scale: float = 1.0
) -> PrimitiveMaps:
    """Rasterise every tube and blob of the scene (and the cannula) for one view."""
    shape = geom.shape
    iodine = np.zeros(shape, np.float32)
    materials: dict[str, np.ndarray] = {}
    duct_mask = np.zeros(shape, np.uint8)
    centerline = np.zeros(shape, np.uint8)
    keep: dict = {}
    for finding in scene.findings:
        for t in finding.tubes:
            keep[("tree", t)] = None
        for b in finding.blobs:
            keep[("blob", b)] = None

    tubes = []
    for group, items in (("tree", scene.tubes), ("cannula", view_cannula(scene, geom))):
        for i, tube in enumerate(items):
            strength = _filled(tube) * (contrast_scale if tube.material == "iodine" else 1.0)
            proj = project_tube(tube, geom, strength if strength > 0 else 1.0)
            box = tube_box(proj, shape)
            if box is None:
                continue
            if strength > 0:
                tubes.append(((group, i), tube, proj, box))
            elif (group, i) in keep:  # unfilled part of a finding: a footprint, no material
                keep[(group, i)] = (box, tube_chord(proj, box) > 0)
    _add_chained_tubes(tubes, iodine, materials, duct_mask, keep)
    lumen = _LumenOwner(scene, tubes)

    # blobs that add material first, then lucent ones that displace contrast
    order = sorted(range(len(scene.blobs)), key=lambda i: scene.blobs[i].sign < 0)
    for i in order:
        blob = scene.blobs[i]
        if i in lumen.chain_of:  # the duct's own lumen (widened, in or around a lesion)
            lumen.render(i, geom, iodine, materials, duct_mask, keep)
            continue
        strength = blob.concentration * (contrast_scale if blob.material == "iodine" else 1.0)
        proj = project_blob(blob, geom, strength if blob.sign > 0 else 1.0)
        box = blob_box(proj, shape)
        if box is None:
            continue
        chord = blob_chord(proj, box)
        if ("blob", i) in keep:
            keep[("blob", i)] = (box, chord > 0)
        region = (slice(box[1], box[3]), slice(box[0], box[2]))
        if blob.sign > 0:
            target = (
                iodine
                if blob.material == "iodine"
                else _material_map(materials, blob.material, shape)
            )
            target[region] += chord
        else:
            removed = np.minimum(iodine[region], chord)
            strength = 1.0
            own = lumen.own(i, box)
            if own is not None:  # a defect in a duct displaces that duct's contrast only
                own_chord, strength = own
                removed = np.minimum(removed, np.minimum(own_chord, chord * np.float32(strength)))
            iodine[region] -= removed
            if blob.material != "iodine":  # the defect's own material fills the displaced lumen
                _material_map(materials, blob.material, shape)[region] += removed / np.float32(
                    strength
                )
    np.maximum(iodine, 0.0, out=iodine)

    draw_centerline(scene, geom, centerline)
    footprints = {}
    for finding in scene.findings:
        parts = [keep.get(("tree", t)) for t in finding.tubes] + [
            keep.get(("blob", b)) for b in finding.blobs
        ]
        parts = [p for p in parts if p is not None]
        if parts:
            footprints[finding.index] = _union(parts)
    return PrimitiveMaps(iodine, materials, duct_mask, centerline, footprints)


IN_LUMEN_DEFECTS = ("papilloma", "air_bubble", "irregularity")


class _LumenOwner:
    """Which duct (chain) the in-lumen primitives of findings belong to.

    A papilloma's finding may carry iodine blobs (``sign`` +1): the widened lumen that hugs
    it, an exact ellipsoid merged with its duct's chain like a tube of that chain (max, no
    double counting), drawn into the duct mask and not into the lesion's own mask. Lucent
    blobs of in-lumen findings (papillomas, air bubbles, marginal defects) then displace
    the contrast of their own duct only, at its concentration, never a crossing duct's.
    """

    def __init__(self, scene: Scene, tubes: list[TubeItem]):
        branch_chain = {t.branch: t.chain for t in scene.tubes if t.branch >= 0}
        self.chain_of: dict[int, int] = {}  # lumen blob -> chain
        self.defects: dict[int, tuple[int, list[int]]] = {}  # lucent blob -> chain, lumens
        for f in scene.findings:
            if f.label not in IN_LUMEN_DEFECTS or f.branch not in branch_chain:
                continue
            chain = branch_chain[f.branch]
            lumens = [
                b
                for b in f.blobs
                if scene.blobs[b].material == "iodine" and scene.blobs[b].sign > 0
            ]
            for b in lumens:
                self.chain_of[b] = chain
            for b in f.blobs:
                if scene.blobs[b].sign < 0:
                    self.defects[b] = (chain, lumens)
        self.items: dict[int, list[TubeItem]] = {}
        for item in tubes:
            if item[0][0] == "tree" and item[1].material == "iodine":
                self.items.setdefault(item[1].chain, []).append(item)
        self.scene = scene
        self.drawn: dict[int, tuple[Box, np.ndarray]] = {}  # lumen blob -> box, chord

    def _chain(self, chain: int, box: Box) -> tuple[np.ndarray, float] | None:
        """Max-merged chord of a chain's tubes in ``box`` and their largest strength."""
        out, strength = None, 0.0
        for _, _, proj, tb in self.items.get(chain, []):
            if tb[0] >= box[2] or tb[2] <= box[0] or tb[1] >= box[3] or tb[3] <= box[1]:
                continue
            chord = tube_chord(proj, box)
            out = chord if out is None else np.maximum(out, chord)
            strength = max(strength, proj.scale)
        return None if out is None else (out, strength)

    def render(self, i: int, geom: ViewGeometry, iodine, materials, duct_mask, keep) -> None:
        blob = self.scene.blobs[i]
        unit = project_blob(blob, geom, 1.0)
        box = blob_box(unit, iodine.shape)
        if box is None:
            return
        chain = self._chain(self.chain_of[i], box)
        if chain is None:  # the duct is not filled here
            return
        own, strength = chain
        chord = blob_chord(unit, box) * np.float32(strength * blob.concentration)
        iodine[box[1] : box[3], box[0] : box[2]] += np.maximum(chord - own, 0.0)
        duct_mask[box[1] : box[3], box[0] : box[2]] |= (chord > 0).view(np.uint8)
        self.drawn[i] = (box, chord)
        keep.pop(("blob", i), None)  # the lumen belongs to the duct, not to the lesion's mask

    def own(self, i: int, box: Box) -> tuple[np.ndarray, float] | None:
        """The contrast of the defect's own duct in ``box`` (chain max lumen), its strength."""
        if i not in self.defects:
            return None
        chain_id, lumens = self.defects[i]
        chain = self._chain(chain_id, box)
        own, strength = (
            chain
            if chain is not None
            else (np.zeros((box[3] - box[1], box[2] - box[0]), np.float32), 0.0)
        )
        for j in lumens:
            if j not in self.drawn:
                continue
            (x0, y0, x1, y1), chord = self.drawn[j]
            ox0, oy0, ox1, oy1 = max(x0, box[0]), max(y0, box[1]), min(x1, box[2]), min(y1, box[3])
            if ox0 >= ox1 or oy0 >= oy1:
                continue
            sub = own[oy0 - box[1] : oy1 - box[1], ox0 - box[0] : ox1 - box[0]]
            np.maximum(sub, chord[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0], out=sub)
        if strength <= 0:
            return own, 1.0
        return own, strength


def _union(parts: list[tuple[Box, np.ndarray]]) -> tuple[Box, np.ndarray]:
    boxes = np.array([p[0] for p in parts])
    box = (
        int(boxes[:, 0].min()),
        int(boxes[:, 1].min()),
        int(boxes[:, 2].max()),
        int(boxes[:, 3].max()),
    )
    mask = np.zeros((box[3] - box[1], box[2] - box[0]), bool)
    for (x0, y0, x1, y1), m in parts:
        mask[y0 - box[1] : y1 - box[1], x0 - box[0] : x1 - box[0]] |= m
    return box, mask
