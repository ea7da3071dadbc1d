"""Canonical image space: nipple to the right, one isotropic spacing, exact inverse maps.

Continuous pixel coordinates (docs/conventions.md): pixel (r, c) covers [c, c+1) x [r, r+1).
Resampling keeps the image edges aligned (cv2's pixel-centre convention), so a point maps by
x' = x * W'/W and a flip by x' = W' - x: both exact affine maps, inverted exactly.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from ductai.data.galactogram import Galactogram
from ductai.data.intensity import IntensityParams, normalize_intensity
from ductai.data.labels import LATERAL_VIEWS, UNKNOWN

__all__ = [
    "CanonicalGeometry",
    "IntensityParams",
    "canonical_geometry_for",
    "decide_flips",
    "normalize_intensity",
    "to_canonical",
]

log = logging.getLogger(__name__)

_CV2_INTERPOLATION = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST_EXACT,  # pixel-centre nearest: exact inverse on equal grids
}
_CV2_NEAREST_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64)
_CV2_SMOOTH_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


@dataclass(frozen=True)
class CanonicalGeometry:
    """How one image maps to canonical space: flip in the original grid, then resample."""

    original_shape: tuple[int, int]  # (rows, columns)
    original_spacing_mm: tuple[float, float]  # (row, column)
    spacing_mm: float  # canonical, isotropic
    flip_cols: bool
    flip_rows: bool
    canonical_shape: tuple[int, int]
    flip_reason: str = ""

    @classmethod
    def create(
        cls,
        original_shape: tuple[int, int],
        original_spacing_mm: tuple[float, float],
        spacing_mm: float,
        flip_cols: bool = False,
        flip_rows: bool = False,
        flip_reason: str = "",
    ) -> CanonicalGeometry:
        if not spacing_mm > 0:
            raise ValueError(f"canonical spacing must be positive, not {spacing_mm}")
        shape = tuple(
            max(1, round(n * s / spacing_mm)) for n, s in zip(original_shape, original_spacing_mm)
        )
        return cls(
            original_shape=(int(original_shape[0]), int(original_shape[1])),
            original_spacing_mm=(float(original_spacing_mm[0]), float(original_spacing_mm[1])),
            spacing_mm=float(spacing_mm),
            flip_cols=bool(flip_cols),
            flip_rows=bool(flip_rows),
            canonical_shape=(int(shape[0]), int(shape[1])),
            flip_reason=flip_reason,
        )

    @property
    def scale(self) -> tuple[float, float]:
        """Exact (row, column) scale canonical/original; differs slightly from the spacing ratio."""
        return (
            self.canonical_shape[0] / self.original_shape[0],
            self.canonical_shape[1] / self.original_shape[1],
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["scale"] = list(self.scale)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CanonicalGeometry:
        return cls(
            original_shape=tuple(data["original_shape"]),
            original_spacing_mm=tuple(data["original_spacing_mm"]),
            spacing_mm=float(data["spacing_mm"]),
            flip_cols=bool(data["flip_cols"]),
            flip_rows=bool(data["flip_rows"]),
            canonical_shape=tuple(data["canonical_shape"]),
            flip_reason=str(data.get("flip_reason", "")),
        )

    # ---- points and boxes (continuous pixel coordinates, x = column, y = row) ----
    def points_to_canonical(self, points: np.ndarray) -> np.ndarray:
        xy = _as_points(points) * (self.scale[1], self.scale[0])
        return self._flip_points(xy, *self.canonical_shape)

    def points_to_original(self, points: np.ndarray) -> np.ndarray:
        xy = self._flip_points(_as_points(points), *self.canonical_shape)
        return xy / (self.scale[1], self.scale[0])

    def boxes_to_canonical(self, boxes: np.ndarray) -> np.ndarray:
        return self._map_boxes(boxes, self.points_to_canonical)

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        return self._map_boxes(boxes, self.points_to_original)

    def _flip_points(self, xy: np.ndarray, rows: int, cols: int) -> np.ndarray:
        xy = xy.copy()
        if self.flip_cols:
            xy[:, 0] = cols - xy[:, 0]
        if self.flip_rows:
            xy[:, 1] = rows - xy[:, 1]
        return xy

    @staticmethod
    def _map_boxes(boxes: np.ndarray, mapping) -> np.ndarray:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        a = mapping(boxes[:, :2])
        b = mapping(boxes[:, 2:])
        # A flip turns x0 into the larger x: re-sort so boxes stay [x0, y0, x1, y1].
        return np.concatenate([np.minimum(a, b), np.maximum(a, b)], axis=1)

    # ---- arrays ([H, W] or [..., H, W]) ----
    def image_to_canonical(self, array: np.ndarray, interpolation: str = "area") -> np.ndarray:
        """Original-grid array -> canonical grid; "area" for images, "nearest" for label masks."""
        array = np.asarray(array)
        _check_shape(array, self.original_shape, "original")
        return _resize(self._flip_array(array), self.canonical_shape, interpolation)

    def to_original(self, array: np.ndarray, interpolation: str = "nearest") -> np.ndarray:
        """Canonical-grid mask/heatmap -> the original grid, exactly original_shape."""
        array = np.asarray(array)
        _check_shape(array, self.canonical_shape, "canonical")
        return self._flip_array(_resize(array, self.original_shape, interpolation))

    def _flip_array(self, array: np.ndarray) -> np.ndarray:
        if self.flip_cols:
            array = array[..., :, ::-1]
        if self.flip_rows:
            array = array[..., ::-1, :]
        return np.ascontiguousarray(array)


def _as_points(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def _check_shape(array: np.ndarray, shape: tuple[int, int], grid: str) -> None:
    if array.ndim < 2 or tuple(array.shape[-2:]) != tuple(shape):
        raise ValueError(f"array of shape {array.shape} does not end in the {grid} shape {shape}")


def _resize(array: np.ndarray, shape: tuple[int, int], interpolation: str) -> np.ndarray:
    if interpolation not in _CV2_INTERPOLATION:
        raise ValueError(f"interpolation must be one of {sorted(_CV2_INTERPOLATION)}")
    if tuple(array.shape[-2:]) == tuple(shape):
        return array.copy()
    if array.ndim > 2:
        planes = array.reshape(-1, *array.shape[-2:])
        out = np.stack([_resize(p, shape, interpolation) for p in planes])
        return out.reshape(*array.shape[:-2], *shape)
    dtype = array.dtype
    work = array
    if dtype == np.bool_:
        work = array.astype(np.uint8)
    elif interpolation == "nearest" and dtype not in _CV2_NEAREST_DTYPES:
        work = array.astype(np.int32)  # e.g. int64 instance maps: the labels fit
    elif interpolation != "nearest" and dtype not in _CV2_SMOOTH_DTYPES:
        work = array.astype(np.float32)
    out = cv2.resize(work, (shape[1], shape[0]), interpolation=_CV2_INTERPOLATION[interpolation])
    return out.astype(dtype) if interpolation == "nearest" else out


def decide_flips(
    laterality: str,
    view: str,
    orientation: tuple[str, str] | None,
    image: np.ndarray | None = None,
) -> tuple[bool, bool, str]:
    """(flip_cols, flip_rows, reason): nipple to the right, rows to medial (CC) or feet (ML)."""
    lateral_view = view in LATERAL_VIEWS
    if orientation is not None:
        towards_cols, towards_rows = orientation
        flip_cols = None
        if "P" in towards_cols or "A" in towards_cols:
            flip_cols = "P" in towards_cols
        if "H" in towards_rows or "F" in towards_rows:
            flip_rows = "H" in towards_rows
        elif view != UNKNOWN and lateral_view:
            flip_rows = False
        else:
            # CC family: rows must run towards medial, i.e. away from this breast's side.
            flip_rows = laterality != UNKNOWN and laterality in towards_rows
        if flip_cols is not None:
            return flip_cols, flip_rows, f"PatientOrientation {towards_cols}\\{towards_rows}"
    missing = (
        "no PatientOrientation"
        if orientation is None
        else (
            f"PatientOrientation {orientation[0]}\\{orientation[1]} has no anterior/posterior column"
        )
    )
    if laterality in ("L", "R"):
        # Standard hanging: a right breast's nipple points to the image's left. Without a
        # PatientOrientation nothing says the file follows it: a clear chest wall on the other
        # edge overrules it (a mirrored model input would put the nipple at the chest wall).
        standard = laterality == "R"
        seen = None if image is None else chest_wall_on_right(image)
        if seen is not None and seen != standard:
            reason = (
                f"image content: the chest wall is on the image's {'right' if seen else 'left'}, "
                f"against the standard hanging of laterality {laterality} ({missing})"
            )
            return seen, False, reason
        return standard, False, f"laterality {laterality} ({missing})"
    if image is None:
        return False, False, "no orientation, laterality or image: unchanged"
    return _flip_from_content(image), False, "image content (no orientation or laterality)"


# The chest wall's edge is tissue over most of its height, the nipple's edge mostly air; an
# edge counts as tissue in a row when most of its strip is above the air level.
CHEST_WALL_MARGIN = 0.25  # least difference of those row fractions that decides


def _edge_tissue(image: np.ndarray) -> tuple[float, float]:
    """Fractions of rows whose left and right edge strips (2 % of the width) are tissue."""
    sample = image[::4, ::4]
    air, high = float(np.percentile(sample, 1)), float(np.percentile(sample, 99))
    level = air + 0.1 * (high - air)
    strip = max(1, image.shape[1] // 50)
    left = float(((image[:, :strip] > level).mean(axis=1) > 0.5).mean())
    right = float(((image[:, -strip:] > level).mean(axis=1) > 0.5).mean())
    return left, right


def chest_wall_on_right(image: np.ndarray) -> bool | None:
    """True / False when the image clearly shows its chest wall on the right / left edge, None
    when the edges do not tell (a breast filling the width, an empty image). ``image``:
    contrast bright, tissue brighter than air (the intensity rule)."""
    left, right = _edge_tissue(np.asarray(image, dtype=np.float32))
    if abs(right - left) < CHEST_WALL_MARGIN:
        return None
    return right > left


def _flip_from_content(image: np.ndarray) -> bool:
    """The chest wall is the edge with more tissue; tissue is brighter than air after the rule."""
    seen = chest_wall_on_right(image)
    if seen is not None:
        return seen
    strip = max(1, image.shape[1] // 50)
    left = float(np.mean(image[:, :strip]))
    right = float(np.mean(image[:, -strip:]))
    return right > left


def canonical_geometry_for(image: Galactogram, spacing_mm: float) -> CanonicalGeometry:
    """The geometry for one image; warns (in image.warnings) when flips are guessed."""
    # the pixels are needed for the canonical image anyway; they decide only without tags
    flip_cols, flip_rows, reason = decide_flips(
        image.laterality, image.view, image.patient_orientation, image.pixels
    )
    if not reason.startswith("PatientOrientation"):
        message = f"canonical flips decided from {reason}"
        if message not in image.warnings:
            image.warnings.append(message)
        log.warning("%s: %s", image.path, message)
    return CanonicalGeometry.create(
        (image.rows, image.columns),
        image.pixel_spacing_mm,
        spacing_mm,
        flip_cols=flip_cols,
        flip_rows=flip_rows,
        flip_reason=reason,
    )


def to_canonical(image: Galactogram, spacing_mm: float) -> tuple[np.ndarray, CanonicalGeometry]:
    """The model's view of `image`: float32 [H, W] in [0, 1], plus the geometry to invert it."""
    geometry = canonical_geometry_for(image, spacing_mm)
    pixels = geometry.image_to_canonical(image.pixels, interpolation="area")
    return np.clip(pixels, 0.0, 1.0).astype(np.float32, copy=False), geometry
