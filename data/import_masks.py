"""Import annotated images given as mask files: duct masks and lesion masks -> datalist entries."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from ductai.data.datalist import DatalistEntry, identity_for
from ductai.data.errors import DatalistError
from ductai.data.label_masks import boxes_from_mask, read_mask

IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".tif", ".tiff", "")


def import_masks(
    images_dir: str | Path,
    masks_dir: str | Path,
    duct_pattern: str = "{stem}_duct.png",
    lesion_pattern: str = "{stem}_lesions.png",
    classes: Mapping[int, str] | None = None,
    default_class: str | None = None,
    lesions_are_instances: bool = False,
    identity: Callable[[Path], dict] | None = None,
) -> list[DatalistEntry]:
    """One entry per image in `images_dir` that has a duct and/or lesion mask in `masks_dir`.

    Lesion masks: each non-zero value is a class (`classes`, e.g. {1: "papilloma",
    2: "air_bubble"}, or `default_class`) and each connected component one box; with
    `lesions_are_instances` each value is one object instead. `identity(path)` may return
    patient_id / laterality / view / study_instance_uid (default: the DICOM header, then
    the file stem as patient id). Problems are collected and raised together.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    entries: list[DatalistEntry] = []
    problems: list[str] = []
    for image in sorted(p for p in images_dir.iterdir() if p.is_file()):
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        duct = masks_dir / duct_pattern.format(stem=image.stem)
        lesions = masks_dir / lesion_pattern.format(stem=image.stem)
        if not duct.is_file() and not lesions.is_file():
            continue
        boxes: list[list[float]] = []
        labels: list[str] = []
        if lesions.is_file():
            try:
                boxes, labels = boxes_from_mask(
                    read_mask(lesions), classes, default_class, not lesions_are_instances
                )
            except ValueError as exc:
                problems.append(f"{lesions}: {exc}")
                continue
        if duct.is_file():
            try:
                read_mask(duct)
            except ValueError as exc:
                problems.append(str(exc))
                continue
        try:
            entries.append(
                DatalistEntry(
                    image=str(image.resolve()),
                    duct=str(duct.resolve()) if duct.is_file() else None,
                    boxes=boxes,
                    labels=labels,
                    **identity_for(image, identity(image) if identity else None),
                )
            )
        except ValueError as exc:
            problems.append(f"{image}: {exc}")
    if problems:
        raise DatalistError(masks_dir, problems)
    return entries
