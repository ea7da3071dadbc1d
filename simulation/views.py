"""Per-view geometry: compress the 3D breast with an affine map and place it on the detector.

The same affine map moves every primitive, so one 3D lesion lands consistently in CC, ML and
MLO. Image-plane coordinates (mm, "canonical"): ``u`` from the chest-wall edge of the image
towards the nipple, ``v`` down the image rows; ``c`` along the compression (beam) axis.
The stored DICOM grid flips columns for the right breast (nipple to the image's left).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .imaging_config import ImagingConfig, sample
from .scene import Scene

VIEWS = ("CC", "MLO", "ML")
# DICOM PatientOrientation (column direction, row direction) per laterality and view family.
PATIENT_ORIENTATION = {
    ("R", "CC"): ("P", "L"),
    ("L", "CC"): ("A", "R"),
    ("R", "MLO"): ("P", "F"),
    ("L", "MLO"): ("A", "F"),
    ("R", "ML"): ("P", "F"),
    ("L", "ML"): ("A", "F"),
}


@dataclass(frozen=True)
class ViewGeometry:
    """Affine compression plus detector placement of one view."""

    view: str
    laterality: str
    matrix: np.ndarray  # (3, 3): breast-frame mm -> (u, v, c) mm
    offset: np.ndarray  # (3,)
    spacing_mm: float  # object-plane pixel spacing of the rendered grid
    shape: tuple[int, int]  # rows, cols
    thickness_mm: float  # compressed breast thickness
    scales: tuple[float, float, float]  # in-plane depth, in-plane vertical, compression
    chest_wall_u: float  # u of the chest wall (image edge at u = 0)
    body_depth: float  # in-plane depth of the breast body (chest wall to areola), mm
    centre_v: float  # v of the nipple axis
    half_height_down: float  # outline semi-axis towards the image bottom
    half_height_up: float  # outline semi-axis towards the image top (axilla on MLO)
    obliquity_deg: float  # MLO angle (0 for ML, 90 for CC)

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def cols(self) -> int:
        return self.shape[1]

    def to_plane(self, points: np.ndarray) -> np.ndarray:
        """Breast-frame points (N, 3) -> compressed (u, v, c) in mm."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        return points @ self.matrix.T + self.offset

    def to_canonical_px(self, points: np.ndarray) -> np.ndarray:
        """Breast-frame points -> continuous (x, y) pixels with the nipple pointing right."""
        uvc = self.to_plane(points)
        return uvc[:, :2] / self.spacing_mm

    def canonical_to_stored(self, xy: np.ndarray) -> np.ndarray:
        xy = np.array(xy, dtype=float, copy=True)
        if self.laterality == "R":
            xy[..., 0] = self.cols - xy[..., 0]
        return xy

    def project(self, points: np.ndarray) -> np.ndarray:
        """Breast-frame points (N, 3) -> continuous (x, y) in the stored DICOM pixel grid."""
        return self.canonical_to_stored(self.to_canonical_px(points))

    @property
    def nipple_uv(self) -> np.ndarray:
        return self.to_plane(np.zeros(3))[0, :2]


def view_axes(view: str, obliquity_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (image-down ``e_v``, compression ``e_c``) in the breast frame.

    CC: rows run medial, compression superior-inferior. ML/MLO: rows run towards the feet;
    MLO turns the compression axis from medial (y) towards superior (z) by the obliquity.
    """
    if view == "CC":
        return np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])
    theta = np.deg2rad(obliquity_deg)
    e_c = np.array([0.0, np.cos(theta), np.sin(theta)])
    e_v = np.array([0.0, np.sin(theta), -np.cos(theta)])
    return e_v, e_c


def _semi_axis(scene: Scene, direction: np.ndarray) -> float:
    """Half extent of the breast's chest-wall ellipse along a unit direction in (y, z)."""
    b = scene.breast
    return float(np.hypot(b.half_width * direction[1], b.half_height * direction[2]))


def make_view_geometry(
    scene: Scene,
    view: str,
    config: ImagingConfig,
    rng: np.random.Generator,
    detector_spacing_mm: float,
    magnification: float,
    spacing_mm: float | None = None,
) -> ViewGeometry:
    """Sample compression and placement of one view; ``spacing_mm`` sets the rendered grid."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    breast = scene.breast
    obliquity = 90.0 if view == "CC" else 0.0
    if view == "MLO":
        obliquity = sample(rng, config.mlo_angle_deg)
    e_v, e_c = view_axes(view, obliquity)
    h_c, h_v = _semi_axis(scene, e_c), _semi_axis(scene, e_v)

    lo, hi = config.compressed_thickness_mm
    thickness = float(np.clip(2 * h_c * sample(rng, config.compression_fraction), lo, hi))
    thickness = min(thickness, 2 * h_c)
    s_c = thickness / (2 * h_c)
    s_x = s_c ** -sample(rng, config.spreading_exponent)
    s_v = s_c ** -sample(rng, config.spreading_exponent)

    chest_wall_u = sample(rng, config.chest_wall_offset_mm)
    nipple_u = chest_wall_u + s_x * breast.depth
    half_v = s_v * h_v
    up = 1.0 if view == "CC" else rng.uniform(1.3, 1.7)  # axillary tail on ML/MLO

    # the smallest detector field that holds the breast (mm at the detector plane)
    fields = sorted(config.field_sizes_mm, key=lambda f: f[0] * f[1])
    field = fields[-1]
    for cand in fields:
        if (nipple_u + 12) * magnification <= cand[0] and 2.1 * half_v * magnification <= cand[1]:
            field = cand
            break
    obj_spacing = detector_spacing_mm / magnification if spacing_mm is None else spacing_mm
    cols = round(field[0] / magnification / obj_spacing)
    rows = round(field[1] / magnification / obj_spacing)
    height_mm = rows * obj_spacing
    shift = sample(rng, config.vertical_offset_fraction) * height_mm
    centre_v = height_mm * (0.5 if view == "CC" else 0.58) + shift

    matrix = np.stack([-s_x * np.array([1.0, 0.0, 0.0]), s_v * e_v, s_c * e_c])
    offset = np.array([chest_wall_u + s_x * breast.depth, centre_v, 0.0])
    return ViewGeometry(
        view=view,
        laterality=breast.laterality,
        matrix=matrix,
        offset=offset,
        spacing_mm=float(obj_spacing),
        shape=(rows, cols),
        thickness_mm=thickness,
        scales=(float(s_x), float(s_v), float(s_c)),
        chest_wall_u=chest_wall_u,
        body_depth=s_x * (breast.depth - breast.nipple_length),
        centre_v=centre_v,
        half_height_down=half_v,
        half_height_up=half_v * up,
        obliquity_deg=obliquity,
    )
