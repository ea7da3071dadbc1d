"""Instance masks and boxes: boxes derived from instance pixels, instances drawn from boxes.

An instance mask holds value k on the pixels of object k, whose box is ``boxes[k - 1]``
(docs/training-design.md). Boxes are ductai ``[x0, y0, x1, y1]`` in continuous pixel
coordinates (docs/conventions.md): the box around pixels c0..c1, r0..r1 is
``[c0, r0, c1 + 1, r1 + 1]``.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage


def boxes_from_instances(
    instances: np.ndarray, n_objects: int, min_pixels: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Tight boxes float32 [n_objects, 4] of values 1..n_objects and a keep mask bool [n].

    Objects with fewer than `min_pixels` pixels (cut out of a crop, or shrunk away by an
    augmentation) get ``keep = False`` and a zero box.
    """
    instances = np.asarray(instances).reshape(instances.shape[-2:])
    boxes = np.zeros((n_objects, 4), dtype=np.float32)
    if n_objects == 0:
        return boxes, np.zeros(0, dtype=bool)
    keep = _pixel_counts(instances, n_objects)[1:] >= max(1, min_pixels)
    # find_objects gives slices of each value's bounding box in one pass over the array.
    for index, found in enumerate(ndimage.find_objects(instances, max_label=n_objects)):
        if found is not None and keep[index]:
            rows, cols = found
            boxes[index] = (cols.start, rows.start, cols.stop, rows.stop)
    return boxes, keep


def paint_missing_instances(
    instances: np.ndarray | None, boxes: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """An instance mask in which every box has pixels; and which objects were drawn.

    Objects without a single pixel (no instance mask at all, e.g. boxes imported from COCO,
    or an object too small for the grid) get a filled ellipse inscribed in their box, drawn
    only over background so real instance pixels win. Returns (int32 [H, W], bool [N]).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if instances is None:
        out = np.zeros(shape, dtype=np.int32)
    else:
        out = np.asarray(instances).reshape(shape)
    n = len(boxes)
    drawn = _pixel_counts(out, n)[1:] == 0
    if not drawn.any():  # the usual case: no copy
        return out.astype(np.int32, copy=False), drawn
    out = out.astype(np.int32, copy=True)
    for index in np.flatnonzero(drawn):
        out = _paint_ellipse(out, boxes[index], index + 1)
    return out, drawn


def _pixel_counts(instances: np.ndarray, n: int) -> np.ndarray:
    """Pixels of values 0..n ([n + 1]); values above n (unknown objects) are ignored."""
    values = instances.ravel()
    if values.dtype.kind == "i" or values.max(initial=0) > n:
        values = np.clip(values, 0, n + 1)  # bincount needs non-negative; cap unknown values
    return np.bincount(values, minlength=n + 2)[: n + 1]


def _paint_ellipse(out: np.ndarray, box: np.ndarray, value: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    # Pixel centres sit at c + 0.5: the ellipse through the box's pixel-centre extent.
    centre = ((x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5)
    axes = (max(0.0, (x1 - x0) / 2 - 0.5), max(0.0, (y1 - y0) / 2 - 0.5))
    canvas = np.zeros(out.shape, dtype=np.uint8)
    shift = 4  # cv2 draws at 1/16 pixel precision with integer coordinates
    cv2.ellipse(
        canvas,
        (round(centre[0] * 16), round(centre[1] * 16)),
        (round(axes[0] * 16), round(axes[1] * 16)),
        0,
        0,
        360,
        1,
        thickness=-1,
        shift=shift,
    )
    row = int(np.clip(np.floor(centre[1] + 0.5), 0, out.shape[0] - 1))
    col = int(np.clip(np.floor(centre[0] + 0.5), 0, out.shape[1] - 1))
    canvas[row, col] = 1  # a sub-pixel box still gets its pixel
    out[(canvas > 0) & (out == 0)] = value
    return out
