"""Import COCO annotations: bboxes -> ductai boxes, a "duct" category's segmentation -> masks.

COCO polygons are in continuous pixel coordinates (pixel centres at +0.5), like ductai's;
RLE (compressed or not) is decoded here so pycocotools is not needed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.data.box_utils import convert_box_mode
from skimage.draw import polygon2mask

from ductai.data.datalist import DatalistEntry, identity_for
from ductai.data.errors import DatalistError
from ductai.data.label_masks import write_mask
from ductai.data.labels import CLASSES

log = logging.getLogger(__name__)

DUCT = "duct"
# Common spellings of ductai's classes; a category_map entry overrides these.
_ALIASES = {
    **{c: c for c in CLASSES},
    "cut_off": "cutoff",
    "wall_irregularity": "irregularity",
    "filling_defect": "papilloma",
    "intraductal_papilloma": "papilloma",
    "duct_ectasia": "ectasia",
    "bubble": "air_bubble",
    "air": "air_bubble",
    "calcifications": "calcification",
    "calc": "calcification",
    "duct": DUCT,
    "ducts": DUCT,
    "duct_lumen": DUCT,
}


def import_coco(
    coco_json: str | Path,
    images_root: str | Path,
    category_map: Mapping[str, str | None] | None = None,
    masks_dir: str | Path | None = None,
) -> list[DatalistEntry]:
    """Entries for every image of a COCO file (boxes of lesion categories, duct masks).

    `category_map` maps COCO category names to ductai classes, to "duct", or to None (ignore).
    Images may carry "patient_id", "laterality", "view" keys; otherwise the DICOM header or
    the file stem is used. Duct masks are written to `masks_dir` (default: beside the JSON).
    """
    coco_json, images_root = Path(coco_json), Path(images_root)
    coco = json.loads(coco_json.read_text())
    masks_dir = Path(masks_dir) if masks_dir else coco_json.parent / "masks"
    categories = _map_categories(coco, category_map or {}, coco_json)
    by_image: dict[Any, list[dict]] = {}
    for annotation in coco.get("annotations", []):
        by_image.setdefault(annotation["image_id"], []).append(annotation)

    entries, problems = [], []
    for record in coco.get("images", []):
        path = images_root / record["file_name"]
        if not path.is_file():
            problems.append(f"image {record['id']}: file not found: {path}")
            continue
        boxes, labels, duct = [], [], None
        for annotation in by_image.get(record["id"], []):
            name = categories[annotation["category_id"]]
            if name == DUCT:
                shape = (int(record["height"]), int(record["width"]))
                part = segmentation_to_mask(annotation.get("segmentation"), shape)
                duct = part if duct is None else duct | part
            elif name is not None:
                boxes.append(annotation["bbox"])
                labels.append(name)
        xyxy = convert_box_mode(np.asarray(boxes, float).reshape(-1, 4), "xywh", "xyxy")
        duct_path = None
        if duct is not None:
            duct_path = write_mask(masks_dir / f"{path.stem}_duct.png", duct.astype(np.uint8))
        try:
            entries.append(
                DatalistEntry(
                    image=str(path.resolve()),
                    duct=str(duct_path.resolve()) if duct_path else None,
                    boxes=np.asarray(xyxy, float).tolist(),
                    labels=labels,
                    **identity_for(path, record),
                )
            )
        except ValueError as exc:
            problems.append(f"image {record['id']} ({path.name}): {exc}")
    if problems:
        raise DatalistError(coco_json, problems)
    return entries


def _map_categories(coco: dict, category_map: Mapping[str, str | None], source: Path) -> dict:
    used = {a["category_id"] for a in coco.get("annotations", [])}
    mapped, unknown = {}, []
    for category in coco.get("categories", []):
        name = category["name"]
        if name in category_map:
            target = category_map[name]
        else:
            target = _ALIASES.get(name.strip().lower().replace(" ", "_").replace("-", "_"), "?")
        if target not in (*CLASSES, DUCT, None):
            if category["id"] in used:
                unknown.append(name)
            target = None
        mapped[category["id"]] = target
    missing = used - set(mapped)
    if unknown or missing:
        problems = [
            f"unknown COCO category {name!r}: map it with category_map={{{name!r}: 'papilloma'}} "
            f"(classes: {', '.join(CLASSES)}, or 'duct' for duct masks, or None to ignore)"
            for name in unknown
        ]
        problems += [f"annotations use category id {i}, which is not defined" for i in missing]
        raise DatalistError(source, problems)
    return mapped


def segmentation_to_mask(segmentation: Any, shape: tuple[int, int]) -> np.ndarray:
    """COCO polygons or RLE -> bool mask of `shape` (rows, columns)."""
    mask = np.zeros(shape, dtype=bool)
    if not segmentation:
        return mask
    if isinstance(segmentation, dict):
        return _rle_to_mask(segmentation, shape)
    for polygon in segmentation:
        xy = np.asarray(polygon, dtype=float).reshape(-1, 2)
        # skimage tests pixel centres at integer (row, col): shift by the half pixel.
        mask |= polygon2mask(shape, xy[:, ::-1] - 0.5)
    return mask


def _rle_to_mask(rle: dict, shape: tuple[int, int]) -> np.ndarray:
    height, width = rle.get("size", shape)
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = _decode_rle_string(counts)
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True  # runs alternate background, foreground, ...
    flat = np.repeat(values, counts)
    if flat.size != height * width:
        raise ValueError(f"RLE covers {flat.size} pixels, size says {height}x{width}")
    return flat.reshape((height, width), order="F")  # COCO runs go down columns


def _decode_rle_string(text: str) -> list[int]:
    """pycocotools' compact RLE string (LEB128-like, differences of every other count)."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            char = ord(text[position]) - 48
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            position += 1
            shift += 5
            if not more and char & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts
