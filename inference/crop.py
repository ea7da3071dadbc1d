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


def tissue_components(image: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, areas) of what stands clearly above the air floor (the 1st percentile), after
    a 3x3 opening that drops detector noise and single bright pixels; None without any."""
    floor = float(np.percentile(image, 1))
    top = float(np.percentile(image, 99))
    threshold = floor + max(0.02, 0.05 * (top - floor))
    mask = (image > threshold).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return None
    areas = stats[:, cv2.CC_STAT_AREA].copy()
    areas[0] = 0  # the background
    return labels, areas


def breast_crop(image: np.ndarray, margin: int = 16, min_fraction: float = 0.01) -> Crop:
    """The bounding box of the breast in a canonical image (air is its darkest, flat level).

    Every tissue component (``tissue_components``) of at least ``min_fraction`` of the
    largest one counts (a cut-off axillary tail, a separate fold), so small burnt-in markers
    in the air are ignored. Falls back to the whole image.
    """
    shape = (int(image.shape[0]), int(image.shape[1]))
    found = tissue_components(image)
    if found is None:
        return Crop.whole(shape)
    labels, areas = found
    rows, cols = np.nonzero(np.isin(labels, np.flatnonzero(areas >= min_fraction * areas.max())))
    return Crop(
        max(0, int(rows.min()) - margin),
        min(shape[0], int(rows.max()) + 1 + margin),
        max(0, int(cols.min()) - margin),
        min(shape[1], int(cols.max()) + 1 + margin),
        shape,
    )


def breast_gate(image: np.ndarray, grow_px: int = 7, min_fraction: float = 0.1) -> np.ndarray:
    """Where findings and ducts may be: the breast, grown by ``grow_px`` (a faint skin line,
    the nipple's edge). bool, the image's shape.

    The breast is the largest tissue component plus any other of at least ``min_fraction``
    of it (a tail cut off by the image edge). Burnt-in orientation markers, text and rulers
    in the air are bright, small and apart from it, and the nets, which never learnt that
    they carry no contrast, mark them as lesions and ducts (measured on simulated views with
    markers: benchmarks/bench_markers.py). All True when no tissue stands out.
    """
    found = tissue_components(image)
    if found is None:
        return np.ones(image.shape, bool)
    labels, areas = found
    keep = np.isin(labels, np.flatnonzero(areas >= min_fraction * areas.max())).astype(np.uint8)
    if grow_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow_px + 1,) * 2)
        keep = cv2.dilate(keep, kernel)
    return keep.astype(bool)
