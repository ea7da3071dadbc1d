"""Projected tissue of the compressed breast: thickness, skin, glands, pectoral muscle.

Smooth fields (edge distance, glandular fraction, muscle fraction) are built on a coarse grid
and upsampled; only the thickness profile at the skin line is evaluated per pixel, so the
skin edge stays sharp. All maps are on the canonical grid (nipple pointing right).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import scipy.fft
from scipy.ndimage import map_coordinates

from .imaging_config import ImagingConfig, sample
from .scene import Breast
from .views import ViewGeometry

COARSE_MM = 0.5  # grid of the smooth fields
ARC_PX = 60.0 / COARSE_MM  # polar texture: coarse px of arc per radian around the nipple


@dataclass
class CoarseTissue:
    """Smooth fields on a coarse grid that covers exactly the image."""

    edge_mm: np.ndarray  # distance inside the skin line (negative outside)
    glandular: np.ndarray  # fraction of the inner path that is fibroglandular
    muscle: np.ndarray  # fraction of the inner path that is pectoral muscle
    spacing: tuple[float, float]  # coarse (row, col) spacing in mm


def power_law_noise(
    rng: np.random.Generator, shape: tuple[int, int], beta: float, stretch: float = 1.0
) -> np.ndarray:
    """Zero-mean, unit-std Gaussian field with power spectrum ~ 1 / f**beta (float32).

    ``stretch`` > 1 elongates structures along the rows (anisotropic tissue).
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    spectrum = scipy.fft.rfft2(white, workers=1)
    fy = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None] / np.float32(stretch)
    fx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    radius2 = fy * fy + fx * fx
    radius2[0, 0] = np.inf
    spectrum *= np.power(radius2, np.float32(-beta / 4.0))
    field = scipy.fft.irfft2(spectrum, s=shape, workers=1).astype(np.float32)
    field -= field.mean()
    field /= field.std() + np.float32(1e-12)
    return field


def triangular(rng: np.random.Generator, bounds: list[float], mode: float) -> float:
    lo, hi = bounds
    return float(lo if lo == hi else rng.triangular(lo, mode, hi))


def _coarse_coords(geom: ViewGeometry) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    rows, cols = geom.shape
    height, width = rows * geom.spacing_mm, cols * geom.spacing_mm
    crows, ccols = max(int(np.ceil(height / COARSE_MM)), 8), max(int(np.ceil(width / COARSE_MM)), 8)
    sr, sc = height / crows, width / ccols
    u = ((np.arange(ccols, dtype=np.float32) + 0.5) * sc)[None, :]
    v = ((np.arange(crows, dtype=np.float32) + 0.5) * sr)[:, None]
    return u, v, (sr, sc)


def _distance_inside(rho: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """First-order distance (mm) to the level set ``rho = 1`` (positive where rho < 1)."""
    gv, gu = np.gradient(rho, spacing[0], spacing[1])
    grad = np.sqrt(gu * gu + gv * gv)
    return ((1.0 - rho) / np.maximum(grad, 1e-6)).astype(np.float32)


def edge_distance(geom: ViewGeometry, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate distance (mm) inside the compressed breast outline, on a regular grid
    (``u`` a row vector, ``v`` a column vector of at least two samples each).

    The outline (``ViewGeometry.outline_rho``) is a half-(super)ellipse from the chest wall
    to the areola, sheared along a drooping or oblique nipple axis, taller towards the
    axilla on ML/MLO; behind the chest wall the tissue runs to the image edge. On MLO an
    abdominal skin fold may show below the inframammary fold.
    """
    spacing = (float(v[1, 0] - v[0, 0]), float(u[0, 1] - u[0, 0]))
    edge = _distance_inside(geom.outline_rho(u, v), spacing)
    axilla = geom.axilla_distance(u, v)
    if axilla is not None:
        np.maximum(edge, axilla, out=edge)
    abdomen = geom.abdomen_rho(u, v)
    if abdomen is not None:
        np.maximum(edge, _distance_inside(abdomen, spacing), out=edge)
    return edge


def glandular_fraction(
    geom: ViewGeometry,
    breast: Breast,
    config: ImagingConfig,
    rng: np.random.Generator,
    u: np.ndarray,
    v: np.ndarray,
    edge: np.ndarray,
) -> tuple[np.ndarray, float]:
    """Fibroglandular fraction per coarse pixel.

    A central cone behind the nipple, biased towards the upper-outer quadrant, broken into
    scalloped islands by fat lobules; a subcutaneous (and retromammary) fat layer of random
    thickness; thin Cooper's ligaments running through the fat towards the skin. Tissue
    structures are mildly elongated along rays from the nipple (ducts and stroma converge
    on it) without turning into a starburst.
    """
    nipple_u = geom.nipple_uv[0]
    depth = (nipple_u - u) / max(nipple_u - geom.chest_wall_u, 1.0)  # 0 nipple .. 1 chest wall
    lateral = (v - geom.axis_v(u)) / np.float32(geom.half_height_down)
    # upper-outer bias: rows run medial (CC) or down (MLO), so both put it at negative v
    shift = rng.uniform(0.0, 0.25)
    width = 0.35 + 0.45 * np.clip(depth, 0.0, 1.0)
    spread = rng.uniform(0.3, 0.45)
    profile = np.exp(-(((depth - 0.42) / spread) ** 2) - ((lateral + shift) / width) ** 2)
    beta = triangular(rng, config.texture_beta, config.texture_beta_mode)
    # tissue flows towards the nipple: part of the noise is sampled in polar coordinates
    polar = _polar_coords(u, v, nipple_u, geom.centre_v)
    # the rays converge on the nipple: fade the warped part out within ~10 mm of it (an
    # off-profile nipple lies inside the breast, where a starburst would show)
    near = 1.0 - np.exp(-np.square(polar[1] * np.float32(COARSE_MM / 10.0)))
    texture = near * _warped(power_law_noise(rng, edge.shape, beta, stretch=1.6), polar)
    clouds = 0.6 * near * _warped(power_law_noise(rng, edge.shape, 3.2, stretch=1.4), polar)
    clouds += 0.8 * power_law_noise(rng, edge.shape, 3.2)
    lobules = power_law_noise(rng, edge.shape, 2.8)  # fat lobules: scalloped margins
    field = 1.6 * profile + 0.6 * clouds + 0.3 * texture + 0.2 * lobules
    # subcutaneous and retromammary fat: no glands right under the skin or on the muscle
    fat_mm = rng.uniform(4.0, 14.0) * (1.3 - breast.glandular_fraction)
    field -= 2.0 * np.exp(-np.maximum(edge, 0.0) / fat_mm)
    behind = np.maximum(u - np.float32(max(geom.chest_wall_u, 0.0)), 0.0)
    field -= 0.8 * np.exp(-behind / rng.uniform(3.0, 8.0))
    inside = edge > 0
    density = float(np.clip(breast.glandular_fraction, 0.02, 0.9))
    threshold = np.quantile(field[inside], 1.0 - density) if inside.any() else 0.0
    steep = 1.6 * sample(rng, config.texture_contrast)
    frac = 1.0 / (1.0 + np.exp(-steep * (field - threshold)))
    # dense tissue is never a uniform plateau: the stroma/fat mix along the path varies
    mottle = 0.15 + 0.85 / (1.0 + np.exp(-1.5 * power_law_noise(rng, edge.shape, 2.2)))
    frac *= 1.0 - np.float32(sample(rng, config.dense_mottle)) * frac * mottle
    # Cooper's ligaments: thin, gently curved strands through the fat towards the skin. They
    # are level lines of a phase that grows steadily across the rays from the nipple plus a
    # smooth wobble, so they never close into loops ("worms"), as level lines of plain
    # noise do; they show in the fat, fade where the glands are and vanish near the nipple
    pitch = rng.uniform(8.0, 18.0) / COARSE_MM  # strand spacing along the arc, coarse px
    wobble = _warped(power_law_noise(rng, edge.shape, 3.5, stretch=3.0), polar)
    phase = polar[0] / np.float32(pitch) + np.float32(0.35) * wobble
    gap = np.abs(phase - np.round(phase)) * np.float32(pitch * COARSE_MM)  # mm to a strand
    strands = np.exp(-np.square(gap / np.float32(rng.uniform(0.25, 0.45))))
    strands *= np.clip(0.8 * power_law_noise(rng, edge.shape, 3.0), 0.0, 1.0)  # broken, patchy
    where = (1.0 - frac) * np.clip(depth * 3.0, 0.0, 1.0)
    frac = np.clip(frac + sample(rng, config.ligament_strength) * strands * where, 0.0, 1.0)
    return frac.astype(np.float32), beta


def _polar_coords(u: np.ndarray, v: np.ndarray, nipple_u: float, nipple_v: float) -> np.ndarray:
    """(row, col) positions into a noise grid indexed by (angle arc, radius) around the nipple."""
    du, dv = nipple_u - u, v - nipple_v
    radius = np.sqrt(du * du + dv * dv) / COARSE_MM
    arc = np.arctan2(dv, du) * np.float32(ARC_PX)  # arc length at 60 mm from the nipple
    return np.stack(np.broadcast_arrays(arc, radius))


def _warped(noise: np.ndarray, polar: np.ndarray) -> np.ndarray:
    """Noise resampled on polar coordinates: structures elongate along rays from the nipple."""
    rows, cols = noise.shape
    # one turn around the nipple spans exactly the (periodic) noise rows: no seam in front
    # of an off-profile nipple
    turn = np.float32(rows / (2 * np.pi * ARC_PX))
    coords = np.stack([np.mod(polar[0] * turn + rows / 2, rows), np.mod(polar[1], cols)])
    return map_coordinates(noise, coords, order=1, mode="grid-wrap").astype(np.float32)


FINE_TILE = 512  # periodic tile of the fine texture (FFT noise tiles seamlessly)


def fine_texture(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Fine trabecular texture on the mid grid (half the coarse spacing): a periodic
    power-law tile repeated over the image, zero mean, unit std (float32)."""
    tile = power_law_noise(rng, (FINE_TILE, FINE_TILE), beta)
    reps = (-(-shape[0] // FINE_TILE), -(-shape[1] // FINE_TILE))
    return np.tile(tile, reps)[: shape[0], : shape[1]]


def pectoral_fraction(
    geom: ViewGeometry,
    config: ImagingConfig,
    rng: np.random.Generator,
    u: np.ndarray,
    v: np.ndarray,
) -> np.ndarray:
    """Muscle fraction of the path: a triangle on MLO, sometimes a sliver on CC."""
    muscle = np.zeros(np.broadcast_shapes(u.shape, v.shape), np.float32)
    height = geom.rows * geom.spacing_mm
    if geom.view == "MLO":
        width = sample(rng, config.pectoral_width_fraction) * (
            geom.nipple_uv[0] - geom.chest_wall_u
        )
        width += max(geom.chest_wall_u, 0.0)
        length = sample(rng, config.pectoral_height_fraction) * height
        # a smooth band along the upper chest-wall edge whose anterior margin bulges
        # (convex, sometimes nearly straight); the muscle thickens towards the chest wall
        bulge = rng.uniform(0.2, 1.0)  # 0: straight margin; larger: more convex
        t = np.clip(np.clip(v, 0, None) / np.float32(length), 0.0, 1.0)
        margin = np.float32(width) * (1.0 - t) * (1.0 + np.float32(bulge) * t)
        gap = margin - u  # mm in front of the anterior margin (> 0 in the muscle)
        ramp = rng.uniform(4.0, 10.0)
        muscle = np.clip(gap / np.float32(ramp), 0.0, 1.0) ** 0.7
        muscle *= 0.75 + 0.25 * np.clip(gap / np.float32(max(width, 1.0)), 0.0, 1.0)
        muscle *= rng.uniform(0.6, 0.9)
    elif geom.view == "CC" and rng.random() < config.pectoral_on_cc_probability:
        # a soft, partial sliver of muscle at the posterior edge: a low lens whose density
        # fades in from its margin to its core, never a flat bright patch
        width = sample(rng, config.pectoral_on_cc_width_mm) + max(geom.chest_wall_u, 0.0)
        half = rng.uniform(0.25, 0.6) * geom.half_height_down
        centre = geom.centre_v + rng.uniform(-0.3, 0.3) * geom.half_height_down
        r = np.sqrt(
            (u / np.float32(width)) ** 2 + ((v - np.float32(centre)) / np.float32(half)) ** 2
        )
        inside = np.clip(1.0 - r, 0.0, 1.0)
        muscle = inside * inside * (3.0 - 2.0 * inside)
        muscle *= np.float32(sample(rng, config.pectoral_on_cc_strength))
    return muscle.astype(np.float32)


def coarse_tissue(
    geom: ViewGeometry, breast: Breast, config: ImagingConfig, rng: np.random.Generator
) -> tuple[CoarseTissue, dict[str, float]]:
    u, v, spacing = _coarse_coords(geom)
    edge = edge_distance(geom, u, v)
    glands, beta = glandular_fraction(geom, breast, config, rng, u, v, edge)
    muscle = pectoral_fraction(geom, config, rng, u, v)
    muscle *= edge > 0
    return CoarseTissue(edge, glands, muscle, spacing), {"texture_beta": beta}


def upsample(field: np.ndarray, shape: tuple[int, int], cubic: bool = False) -> np.ndarray:
    """Resize a coarse field to the image grid (pixel centres aligned, float32)."""
    mode = cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR
    return cv2.resize(field, (shape[1], shape[0]), interpolation=mode)


def thickness_profile(
    edge: np.ndarray, thickness: float, skin: float
) -> tuple[np.ndarray, np.ndarray]:
    """Inner (under the skin) and skin path lengths from the edge distance.

    The compressed breast ends in a half-round edge of radius ``thickness / 2``; the skin is a
    shell, so rays tangent to it near the skin line cross a long path of skin.
    """
    radius = np.float32(thickness / 2)
    inner_r = np.float32(max(thickness / 2 - skin, 0.1))
    e = np.clip(edge, 0.0, radius)
    outer = np.sqrt(e * (2 * radius - e)) * np.float32(2)
    e_in = np.clip(edge - np.float32(skin), 0.0, inner_r)
    inner = np.sqrt(e_in * (2 * inner_r - e_in)) * np.float32(2)
    outer -= inner
    return inner, outer
