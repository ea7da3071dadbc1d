"""Canonical results on the original DICOM pixel grid (the only place the writers map them).

Points and boxes use the continuous convention of docs/conventions.md, which is also DICOM's
SCOORD image convention (0,0 = top-left corner of the top-left pixel), so the numbers go into
report.json and the SR unchanged.
"""

from __future__ import annotations

import cv2
import numpy as np

from ductai.data.canonical import CanonicalGeometry

__all__ = [
    "DUCT_THRESHOLD",
    "box_px",
    "duct_mask_px",
    "lesion_mask_px",
    "path_px",
    "point_px",
    "probability_px",
]

DUCT_THRESHOLD = 0.5  # duct_prob at or above this is duct in duct_mask.png and the SEG


def _r(value: float) -> float:
    return round(float(value), 2)


def point_px(geometry: CanonicalGeometry, point) -> list[float] | None:
    """Canonical [x, y] -> original [col, row], or None."""
    if point is None:
        return None
    x, y = geometry.points_to_original(np.asarray(point, dtype=float))[0]
    return [_r(x), _r(y)]


def path_px(geometry: CanonicalGeometry, points) -> list[list[float]]:
    if points is None or len(points) == 0:
        return []
    return [[_r(x), _r(y)] for x, y in geometry.points_to_original(np.asarray(points, float))]


def box_px(geometry: CanonicalGeometry, box) -> list[float]:
    """Canonical [x0, y0, x1, y1] -> original, re-sorted after flips."""
    return [_r(v) for v in geometry.boxes_to_original(np.asarray(box, dtype=float))[0]]


def duct_mask_px(geometry: CanonicalGeometry, duct_prob: np.ndarray | None) -> np.ndarray:
    """uint8 original-grid mask, 255 = duct (0 everywhere when there is no segmentation)."""
    if duct_prob is None:
        return np.zeros(geometry.original_shape, dtype=np.uint8)
    # threshold after a linear upsampling: smooth duct walls instead of 0.3 mm staircases
    # (duct Dice +0.01 to +0.02 on held-out views against the fine truth)
    prob = np.clip(np.asarray(duct_prob, dtype=np.float32), 0.0, 1.0)
    prob = geometry.to_original(prob, interpolation="linear")
    return np.where(prob >= DUCT_THRESHOLD, 255, 0).astype(np.uint8)


def probability_px(geometry: CanonicalGeometry, prob: np.ndarray | None) -> np.ndarray:
    """uint8 original-grid probability, value = round(255 p) (linear interpolation)."""
    if prob is None:
        return np.zeros(geometry.original_shape, dtype=np.uint8)
    p = np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0)
    p = geometry.to_original(p, interpolation="linear")
    return np.rint(np.clip(p, 0.0, 1.0) * 255).astype(np.uint8)


def lesion_mask_px(shape: tuple[int, int], boxes_px: list[list[float]]) -> np.ndarray:
    """uint8 mask (255) of the ellipses inscribed in the reported boxes.

    The SEG's lesion segment marks exactly the reported lesions (not heatmap spill elsewhere);
    a lesion is a compact defect, and the inscribed ellipse is the box's best compact shape.
    """
    mask = np.zeros(shape, dtype=np.uint8)
    for x0, y0, x1, y1 in boxes_px:
        center = ((x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5)  # continuous -> pixel-index centre
        axes = (max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5))
        # cv2 takes fixed-point coordinates: 4 fractional bits keep sub-pixel boxes exact.
        cv2.ellipse(
            mask,
            (round(center[0] * 16), round(center[1] * 16)),
            (round(axes[0] * 16), round(axes[1] * 16)),
            0,
            0,
            360,
            255,
            thickness=-1,
            lineType=cv2.LINE_8,
            shift=4,
        )
    return mask
