"""Label images on disk and boxes from them (x = column, continuous pixel coordinates).

MONAI's `convert_mask_to_box` orders box axes like the array, i.e. [row0, col0, row1, col1]
for a 2D [H, W] mask; ductai boxes are [col0, row0, col1, row1] (docs/conventions.md).
`skimage.measure.regionprops` is used here because it needs no one-channel-per-box stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from skimage.measure import label as connected_components
from skimage.measure import regionprops

from ductai.data.errors import ImageReadError


def read_mask(path: str | Path) -> np.ndarray:
    """A 2D integer label image from PNG or TIFF."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            mask = np.asarray(tifffile.imread(path))
        else:
            with Image.open(path) as image:
                mask = np.asarray(image)
    except Exception as exc:
        raise ImageReadError(path, f"mask could not be read: {exc}") from exc
    if mask.ndim == 3:  # grey saved as RGB(A): identical channels
        mask = mask[..., 0]
    if mask.ndim != 2 or (not np.issubdtype(mask.dtype, np.integer) and mask.dtype != np.bool_):
        raise ImageReadError(
            path, f"mask must be a 2D integer image, not {mask.dtype} {mask.shape}"
        )
    return mask


def write_mask(path: str | Path, mask: np.ndarray) -> Path:
    """uint8 PNG (uint16 when labels exceed 255)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.uint8 if int(mask.max(initial=0)) <= 255 else np.uint16
    Image.fromarray(mask.astype(dtype)).save(path)
    return path


def boxes_from_mask(
    mask: np.ndarray,
    classes: Mapping[int, str] | None = None,
    default_class: str | None = None,
    split_components: bool = True,
) -> tuple[list[list[float]], list[str]]:
    """Boxes and class names from a label mask.

    Each non-zero value is a class (`classes[value]`, else `default_class`); with
    `split_components` each 8-connected component of a value is one object, otherwise all
    pixels of a value are one object (an instance mask).
    """
    classes = dict(classes or {})
    values = [int(v) for v in np.unique(mask) if v != 0]
    unknown = [v for v in values if v not in classes and default_class is None]
    if unknown:
        raise ValueError(
            f"mask values {unknown} have no class: give classes={{value: name}} or default_class"
        )
    boxes: list[list[float]] = []
    labels: list[str] = []
    for value in values:
        objects = mask == value
        regions = connected_components(objects, connectivity=2) if split_components else objects
        for region in regionprops(regions.astype(np.int32)):
            row0, col0, row1, col1 = region.bbox  # end-exclusive: the continuous box edges
            boxes.append([float(col0), float(row0), float(col1), float(row1)])
            labels.append(classes.get(value, default_class))
    return boxes, labels
