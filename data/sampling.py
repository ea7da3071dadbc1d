"""Where training crops go: on a finding, on a mimic or a burnt-in marker (hard negatives), on a
duct, or in the breast.

MONAI's ``RandCropByPosNegLabeld`` centres every crop on the sampled pixel, so a small lesion
would always sit in the middle of the patch and a detector could learn "lesions are central".
Here the window is placed uniformly among all positions that contain the object's box (a
margin from the border where it fits), then kept inside the image where possible. Windows
may still reach past the image (small images, objects at the edge): `crop_padded` fills with
0, which is air in canonical space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KINDS = ("positive", "mimic", "duct", "random")


@dataclass(frozen=True)
class Crop:
    """A window [row0, row0 + height) x [col0, col0 + width) of the image; may reach outside."""

    kind: str
    row0: int
    col0: int
    height: int
    width: int

    def expanded(self, margin: int) -> Crop:
        return Crop(
            self.kind,
            self.row0 - margin,
            self.col0 - margin,
            self.height + 2 * margin,
            self.width + 2 * margin,
        )


@dataclass(frozen=True)
class CropSampler:
    patch_size: tuple[int, int]
    positive_fraction: float = 0.5
    mimic_fraction: float = 0.15
    duct_fraction: float = 0.15
    edge_margin: int = 16  # keep a sampled object this far from the patch border when it fits
    tissue_threshold: float = 0.05  # canonical intensity above which a pixel is breast, not air
    grid_stride: int = 4  # random/duct centres are drawn from a strided grid: cheap, unbiased

    def choose(self, sample: dict, rng: np.random.Generator) -> Crop:
        """The patch window for one sample (``image`` [1, H, W], ``boxes``, ``is_mimic``, ``duct``)."""
        u = rng.random()
        is_mimic = np.asarray(sample["is_mimic"], dtype=bool)
        boxes = np.asarray(sample["boxes"], dtype=np.float64).reshape(-1, 4)
        wanted = (
            "positive"
            if u < self.positive_fraction
            else "mimic"
            if u < self.positive_fraction + self.mimic_fraction
            else "duct"
            if u < self.positive_fraction + self.mimic_fraction + self.duct_fraction
            else "random"
        )
        if wanted in ("positive", "mimic"):
            pool = boxes[is_mimic == (wanted == "mimic")]
            if wanted == "mimic" and "markers" in sample:  # burnt-in letters: hard negatives too
                pool = np.vstack([pool, np.asarray(sample["markers"], np.float64).reshape(-1, 4)])
            if len(pool):
                return self._around(wanted, pool[rng.integers(len(pool))], sample, rng)
            wanted = "duct"  # no such object in this image: fall back to the anatomy
        if wanted == "duct" and "duct" in sample:
            point = _random_point(np.asarray(sample["duct"])[0] > 0, self.grid_stride, rng)
            if point is not None:
                return self._around("duct", point, sample, rng, margin=0)
        tissue = np.asarray(sample["image"])[0] > self.tissue_threshold
        point = _random_point(tissue, self.grid_stride, rng)
        if point is None:  # blank image: anywhere
            shape = np.asarray(sample["image"]).shape[-2:]
            point = np.array([rng.integers(shape[1]), rng.integers(shape[0])], dtype=float)
            point = np.concatenate([point, point + 1])
        return self._around("random", point, sample, rng, margin=0)

    def _around(
        self,
        kind: str,
        box: np.ndarray,
        sample: dict,
        rng: np.random.Generator,
        margin: int | None = None,
    ) -> Crop:
        rows, cols = np.asarray(sample["image"]).shape[-2:]
        height, width = self.patch_size
        margin = self.edge_margin if margin is None else margin
        x0, y0, x1, y1 = box
        col0 = _window_start(x0, x1, width, cols, margin, rng)
        row0 = _window_start(y0, y1, height, rows, margin, rng)
        return Crop(kind, row0, col0, height, width)


def _window_start(
    lo: float, hi: float, patch: int, size: int, margin: int, rng: np.random.Generator
) -> int:
    """A start s such that [s, s + patch) holds the pixels of [lo, hi) when it can."""
    first, stop = math.floor(lo), max(math.ceil(hi), math.floor(lo) + 1)  # pixel range
    extent = stop - first
    if extent <= patch:
        margin = min(margin, (patch - extent) // 2)
        a, b = stop + margin - patch, first - margin
    else:  # larger than the patch (extravasation): a window inside the object
        a, b = first, stop - patch
    # Prefer windows inside the image, or holding all of an image smaller than the patch.
    inside_a, inside_b = sorted((0, size - patch))
    inside_a, inside_b = max(a, inside_a), min(b, inside_b)
    if inside_a <= inside_b:
        a, b = inside_a, inside_b
    return int(rng.integers(a, b + 1))


def _random_point(mask: np.ndarray, stride: int, rng: np.random.Generator) -> np.ndarray | None:
    """A random pixel of `mask` as a 1-pixel box [x0, y0, x1, y1], or None if empty."""
    offset = rng.integers(stride, size=2)
    grid = mask[offset[0] :: stride, offset[1] :: stride]
    found = np.flatnonzero(grid)
    if len(found) == 0:
        found_full = np.flatnonzero(mask)
        if len(found_full) == 0:
            return None
        row, col = np.unravel_index(rng.choice(found_full), mask.shape)
    else:
        r, c = np.unravel_index(rng.choice(found), grid.shape)
        row, col = offset[0] + r * stride, offset[1] + c * stride
    return np.array([col, row, col + 1, row + 1], dtype=float)


def crop_padded(array: np.ndarray, crop: Crop) -> np.ndarray:
    """``array[..., window]`` with zeros where the window leaves the image.

    One slice copy per array: cheaper than pad-then-crop on a whole mammogram.
    """
    rows, cols = array.shape[-2:]
    out = np.zeros((*array.shape[:-2], crop.height, crop.width), dtype=array.dtype)
    r0, c0 = max(crop.row0, 0), max(crop.col0, 0)
    r1, c1 = min(crop.row0 + crop.height, rows), min(crop.col0 + crop.width, cols)
    if r0 < r1 and c0 < c1:
        out[..., r0 - crop.row0 : r1 - crop.row0, c0 - crop.col0 : c1 - crop.col0] = array[
            ..., r0:r1, c0:c1
        ]
    return out
