"""Crop a canonical image to the breast before the networks, and paste results back exactly.

A full-field view is often half air; the nets cost in proportion to the pixels they see. The
crop is an integer window, so undoing it is a pure shift (boxes + (c0, r0), maps pasted
into zeros): no resampling, no rounding. The crop may carry the breast gate on its grid:
where findings and ducts may be (``BreastRegion.gate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    # bool [h, w] on the crop's grid: the breast, grown (None: no gate)
    gate: np.ndarray | None = field(default=None, compare=False, repr=False)

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


@dataclass(frozen=True)
class BreastRegion:
    """The tissue of a canonical image, labelled once: what stands clearly above the air floor
    (the 1st percentile) after a 3x3 opening that drops detector noise and single bright
    pixels, as 8-connected components. The crop and the gate both derive from it."""

    labels: np.ndarray | None  # int32 component map; None when no tissue stands out
    stats: np.ndarray | None  # cv2 component stats, row 0 the background
    shape: tuple[int, int]

    @classmethod
    def of(cls, image: np.ndarray) -> BreastRegion:
        shape = (int(image.shape[0]), int(image.shape[1]))
        floor = float(np.percentile(image, 1))
        top = float(np.percentile(image, 99))
        threshold = floor + max(0.02, 0.05 * (top - floor))
        mask = (image > threshold).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n <= 1:
            return cls(None, None, shape)
        return cls(labels, stats, shape)

    def _kept(self, min_fraction: float) -> np.ndarray:
        """Component ids of at least ``min_fraction`` of the largest one."""
        areas = self.stats[1:, cv2.CC_STAT_AREA]
        return np.flatnonzero(areas >= min_fraction * areas.max()) + 1

    def crop(self, margin: int = 16, min_fraction: float = 0.01) -> Crop:
        """The bounding box of every component of at least ``min_fraction`` of the largest (a
        cut-off axillary tail, a separate fold), so small burnt-in markers in the air are
        ignored; the whole image without tissue."""
        if self.labels is None:
            return Crop.whole(self.shape)
        keep = self.stats[self._kept(min_fraction)]
        c0 = int(keep[:, cv2.CC_STAT_LEFT].min())
        r0 = int(keep[:, cv2.CC_STAT_TOP].min())
        c1 = int((keep[:, cv2.CC_STAT_LEFT] + keep[:, cv2.CC_STAT_WIDTH]).max())
        r1 = int((keep[:, cv2.CC_STAT_TOP] + keep[:, cv2.CC_STAT_HEIGHT]).max())
        return Crop(
            max(0, r0 - margin),
            min(self.shape[0], r1 + margin),
            max(0, c0 - margin),
            min(self.shape[1], c1 + margin),
            self.shape,
        )

    def gate(self, grow_px: int = 7, min_fraction: float = 0.1) -> np.ndarray:
        """Where findings and ducts may be: the largest component plus any other of at least
        ``min_fraction`` of it (a tail cut off by the image edge), grown by ``grow_px`` (a
        faint skin line, the nipple's edge); bool, the image's shape, all True without tissue.

        Burnt-in orientation markers, text and rulers in the air are bright, small and apart
        from the breast; nets that never learnt that they carry no contrast mark them as
        lesions and ducts (benchmarks/bench_markers.py).
        """
        if self.labels is None:
            return np.ones(self.shape, bool)
        keep = np.zeros(len(self.stats), np.uint8)
        keep[self._kept(min_fraction)] = 1
        mask = keep[self.labels]  # a lookup per pixel, not a search
        if grow_px > 0:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow_px + 1,) * 2)
            mask = cv2.dilate(mask, kernel)
        return mask.astype(bool)
