"""Crop a canonical image to the breast before the networks, and paste results back exactly.

A full-field view is often half air; the nets cost in proportion to the pixels they see. The
crop is an integer window, so undoing it is a pure shift (boxes + (c0, r0), maps pasted
into zeros): no resampling, no rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Crop:
    """Rows r0:r1, columns c0:c1 of a canonical image of shape ``full_shape``."""

    r0: int
    r1: int
    c0: int
    c1: int
    full_shape: tuple[int, int]

    @classmethod
    def whole(cls, shape: tuple[int, int]) -> Crop:
        return cls(0, int(shape[0]), 0, int(shape[1]), (int(shape[0]), int(shape[1])))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.r1 - self.r0, self.c1 - self.c0)

    @property
    def fraction(self) -> float:
        """Share of the full image's pixels inside the crop."""
        return (self.shape[0] * self.shape[1]) / max(1, self.full_shape[0] * self.full_shape[1])

    def apply(self, array: np.ndarray) -> np.ndarray:
        return array[..., self.r0 : self.r1, self.c0 : self.c1]

    def boxes_to_full(self, boxes: np.ndarray) -> np.ndarray:
        """Crop-grid ``[x0, y0, x1, y1]`` -> full canonical grid (a shift)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        return boxes + np.array([self.c0, self.r0, self.c0, self.r0], dtype=np.float64)

    def boxes_to_crop(self, boxes: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        return boxes - np.array([self.c0, self.r0, self.c0, self.r0], dtype=np.float64)

    def paste(self, array: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """A crop-grid map ``[..., h, w]`` into a full-size map (``fill`` outside the crop)."""
        out = np.full((*array.shape[:-2], *self.full_shape), fill, dtype=array.dtype)
        out[..., self.r0 : self.r1, self.c0 : self.c1] = array
        return out

    def to_dict(self) -> dict:
        return {"rows": [self.r0, self.r1], "cols": [self.c0, self.c1]}


def breast_crop(image: np.ndarray, margin: int = 16, min_fraction: float = 0.01) -> Crop:
    """The bounding box of the breast in a canonical image (air is its darkest, flat level).

    Tissue is whatever stands clearly above the air floor (the 1st percentile); a 3x3
    opening drops detector noise and single bright pixels; every component of at least
    ``min_fraction`` of the largest one counts (a cut-off axillary tail, a separate fold), so
    small burnt-in markers in the air are ignored. Falls back to the whole image.
    """
    shape = (int(image.shape[0]), int(image.shape[1]))
    floor = float(np.percentile(image, 1))
    top = float(np.percentile(image, 99))
    threshold = floor + max(0.02, 0.05 * (top - floor))
    mask = (image > threshold).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return Crop.whole(shape)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = stats[1:][areas >= min_fraction * areas.max()]
    c0 = int(keep[:, cv2.CC_STAT_LEFT].min())
    r0 = int(keep[:, cv2.CC_STAT_TOP].min())
    c1 = int((keep[:, cv2.CC_STAT_LEFT] + keep[:, cv2.CC_STAT_WIDTH]).max())
    r1 = int((keep[:, cv2.CC_STAT_TOP] + keep[:, cv2.CC_STAT_HEIGHT]).max())
    return Crop(
        max(0, r0 - margin),
        min(shape[0], r1 + margin),
        max(0, c0 - margin),
        min(shape[1], c1 + margin),
        shape,
    )
