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
    # outline variation (all enlarge the projected 3D half-ellipsoid, never shrink it, so
    # every duct and lesion stays inside the skin line)
    droop: float = 0.0  # the nipple axis drops this many mm of v per mm of u towards the nipple
    squareness: float = 2.0  # superellipse exponent of the outline (2: ellipse, more: fuller)
    abdomen: tuple[float, float, float, float] | None = None  # (u, v, semi-u, semi-v) mm
    axilla: tuple[float, float, float, float] | None = None  # MLO: top and tangent points (u, v)
    nipple_tilt_deg: float = 0.0  # out-of-plane turn of the nipple (0: in profile)
    apex_bulge: tuple[float, float, float] = (0.0, 0.0, 1.0)  # (growth, angle, width) radians

    @property
    def nipple_in_profile(self) -> bool:
        return self.nipple_tilt_deg == 0.0

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

    @property
    def nipple_axis(self) -> np.ndarray:
        """Unit in-plane direction (u, v) from the nipple base towards its tip."""
        d = np.array([1.0, self.droop])
        return d / np.linalg.norm(d)

    def axis_v(self, u: np.ndarray) -> np.ndarray:
        """v of the nipple axis at ``u`` (constant behind the chest wall)."""
        u = np.maximum(u, np.float32(self.chest_wall_u))
        return np.float32(self.centre_v) + np.float32(self.droop) * (
            u - np.float32(self.nipple_uv[0])
        )

    def outline_rho(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Normalised radius of the breast outline at (u, v) mm: < 1 inside the skin line.

        The projected 3D half-ellipsoid is the ellipse ``rho = 1`` in a frame sheared along
        the nipple axis (the view matrix applies the same shear); the taller top (axillary
        tail), fuller superellipse and bulge past an off-profile nipple only enlarge it.
        """
        uc = np.maximum(u - np.float32(self.chest_wall_u), 0.0)
        du = uc / np.float32(self.body_depth)
        dv = v - self.axis_v(u)
        dv = dv / np.where(
            dv < 0, np.float32(self.half_height_up), np.float32(self.half_height_down)
        )
        p = np.float32(self.squareness)
        if p == 2.0:
            rho = np.sqrt(du * du + dv * dv)
        else:
            rho = np.power(np.power(du, p) + np.power(np.abs(dv), p), np.float32(1.0) / p)
        growth, angle, width = self.apex_bulge
        if growth > 0:  # the breast reaches past an off-profile nipple
            phi = np.arctan2(dv, du) - np.float32(angle)
            rho = rho / (1.0 + np.float32(growth) * np.exp(-np.square(phi / np.float32(width))))
        return rho.astype(np.float32)

    def axilla_distance(self, u: np.ndarray, v: np.ndarray) -> np.ndarray | None:
        """Signed distance (mm, > 0 inside) to the axillary tail on MLO: the triangle between
        the top point ``(u_top, v_top)``, the point where a straight skin line from it touches
        the breast outline ``(u_t, v_t)``, and the image edge; with the outline it makes the
        convex hull of the breast and the top point."""
        if self.axilla is None:
            return None
        u_top, v_top, u_t, v_t = self.axilla
        du, dv = u_t - u_top, v_t - v_top
        norm = float(np.hypot(du, dv))
        line = (v - np.float32(v_top)) * np.float32(du / norm) - (
            (u - np.float32(u_top)) * np.float32(dv / norm)
        )  # > 0 below-left of the skin line
        return np.minimum(np.minimum(line, np.float32(u_t) - u), np.float32(v_t) - v)

    def abdomen_rho(self, u: np.ndarray, v: np.ndarray) -> np.ndarray | None:
        """Normalised radius of the abdominal skin fold below the inframammary fold (MLO)."""
        if self.abdomen is None:
            return None
        u0, v0, au, av = self.abdomen
        du = (u - np.float32(u0)) / np.float32(au)
        dv = (v - np.float32(v0)) / np.float32(av)
        return np.sqrt(du * du + dv * dv).astype(np.float32)


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
    outline = config.outline(view)
    droop = sample(rng, outline.droop)
    up = sample(rng, outline.half_height_up)  # axillary tail on ML/MLO
    down = sample(rng, outline.half_height_down)  # a fuller, drooping lower pole
    squareness = sample(rng, outline.squareness)

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
    centre_v = height_mm * sample(rng, outline.nipple_height_fraction) + shift

    # the droop shears v along u about the nipple: the chest-wall base of the breast sits
    # droop * depth above the nipple (oblique MLO, drooping ML, a CC nipple turned aside)
    matrix = np.stack([-s_x * np.array([1.0, 0.0, 0.0]), s_v * e_v, s_c * e_c])
    matrix[1] += droop * matrix[0]
    offset = np.array([chest_wall_u + s_x * breast.depth, centre_v, 0.0])
    body_depth = s_x * (breast.depth - breast.nipple_length)

    # the abdominal skin fold below the inframammary fold, at the lower posterior corner
    abdomen = None
    imf_v = centre_v - droop * s_x * breast.depth + half_v * down
    if view == "MLO" and imf_v < height_mm and rng.random() < config.abdomen_probability:
        au = sample(rng, config.abdomen_size_mm)
        av = au * rng.uniform(1.0, 2.0)
        abdomen = (min(chest_wall_u, 0.0) - 0.2 * au, imf_v + rng.uniform(0.6, 0.9) * av, au, av)

    # MLO: the axillary tail runs up along the muscle to above the top edge
    axilla = None
    if view == "MLO":
        u_top = chest_wall_u + sample(rng, config.axilla_width_fraction) * s_x * breast.depth
        axilla = _axilla(
            u_top, -10.0, chest_wall_u, body_depth, centre_v, droop, s_x * breast.depth, half_v * up
        )

    # an off-profile nipple projects over the breast: the outline reaches past its tip
    tilt, bulge = 0.0, (0.0, 0.0, 1.0)
    if rng.random() < config.nipple_off_profile_probability:
        tilt = sample(rng, config.nipple_tilt_deg) * rng.choice([-1.0, 1.0])
        reach = nipple_u + sample(rng, config.nipple_off_profile_mm) - chest_wall_u
        angle, width = rng.uniform(-0.25, 0.25), rng.uniform(0.5, 0.8)
        growth = (reach / body_depth - 1.0) * np.exp((angle / width) ** 2)  # at the nipple
        bulge = (float(growth), angle, width)
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
        body_depth=body_depth,
        centre_v=centre_v,
        half_height_down=half_v * down,
        half_height_up=half_v * up,
        obliquity_deg=obliquity,
        droop=droop,
        squareness=squareness,
        abdomen=abdomen,
        axilla=axilla,
        nipple_tilt_deg=float(tilt),
        apex_bulge=bulge,
    )


def _axilla(u_top, v_top, chest_wall_u, body_depth, nipple_v, droop, nipple_depth, half_up):
    """Top point and tangent point of the straight axillary skin line on MLO, or None when the
    breast outline already reaches above the top point."""
    t = np.linspace(0.0, np.pi / 2, 256)
    u = chest_wall_u + body_depth * np.cos(t)
    v = nipple_v + droop * (u - chest_wall_u - nipple_depth) - half_up * np.sin(t)
    if v.min() <= v_top or u_top >= u.max():
        return None
    right = u > u_top
    angle = np.arctan2(v[right] - v_top, u[right] - u_top)
    k = int(np.argmin(angle))
    return (float(u_top), float(v_top), float(u[right][k]), float(v[right][k]))
