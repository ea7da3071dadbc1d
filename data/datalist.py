"""MONAI Decathlon-style datalists: entry schema, patient-wise splits, writing and checked loading.

In memory, entry paths are absolute; on disk they are relative to the datalist's folder
(docs/simulated-dataset.md), so a dataset folder can be moved or shared as a whole.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from ductai.data.errors import DatalistError
from ductai.data.labels import CLASSES, UNKNOWN

SPLITS = ("training", "validation", "test")
SPLIT_ALIASES = {"train": "training", "val": "validation"}


def resolve_split(name: str) -> str:
    """A split's name in a datalist (``train`` and ``val`` accepted); a clear error otherwise."""
    split = SPLIT_ALIASES.get(name, name)
    if split not in SPLITS:
        raise ValueError(f"no split {name!r}; a datalist has {', '.join(SPLITS)}")
    return split


PATH_FIELDS = ("image", "duct", "instances", "centerline", "truth")


class DatalistEntry(BaseModel):
    """One image (one view) with its labels; unknown extra keys are kept."""

    model_config = ConfigDict(extra="allow")

    image: str
    duct: str | None = None
    instances: str | None = None
    centerline: str | None = None
    truth: str | None = None
    boxes: list[list[float]] = []  # [x0, y0, x1, y1], x = column, continuous pixel coordinates
    labels: list[str] = []
    patient_id: str
    study_instance_uid: str | None = None
    laterality: str = UNKNOWN
    view: str = UNKNOWN

    @field_validator("boxes")
    @classmethod
    def _boxes_are_well_formed(cls, boxes: list[list[float]]) -> list[list[float]]:
        for i, box in enumerate(boxes):
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise ValueError(f"box {i} {box} is not 4 finite numbers [x0, y0, x1, y1]")
            if box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f"box {i} {box} is empty or inverted (needs x1 > x0, y1 > y0)")
            if min(box) < 0:
                raise ValueError(f"box {i} {box} has negative coordinates")
        return boxes

    @field_validator("labels")
    @classmethod
    def _labels_are_classes(cls, labels: list[str]) -> list[str]:
        unknown = sorted(set(labels) - set(CLASSES))
        if unknown:
            raise ValueError(f"unknown labels {unknown}; classes are {list(CLASSES)}")
        return labels

    @field_validator("laterality")
    @classmethod
    def _laterality(cls, value: str) -> str:
        if value not in ("L", "R", UNKNOWN):
            raise ValueError(f"laterality must be 'L', 'R' or 'unknown', not {value!r}")
        return value

    @model_validator(mode="after")
    def _one_label_per_box(self) -> DatalistEntry:
        if len(self.boxes) != len(self.labels):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.labels)} labels")
        return self

    def paths(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in PATH_FIELDS if getattr(self, k)}

    def with_paths(self, mapping) -> DatalistEntry:
        """A copy with every path field passed through `mapping`."""
        return self.model_copy(update={k: mapping(v) for k, v in self.paths().items()})


def split_by_patient(
    entries: Sequence[DatalistEntry],
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> dict[str, list[DatalistEntry]]:
    """Training/validation/test lists; every patient's images land in one split only.

    Deterministic for a seed and a set of patients (input order does not matter). Patient
    counts follow the fractions by largest remainder; a split with a positive fraction gets
    at least one patient whenever there are enough patients.
    """
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
        raise ValueError(
            f"fractions must be three non-negative numbers summing to 1, not {fractions}"
        )
    patients = sorted({e.patient_id for e in entries})
    order = np.random.default_rng(seed).permutation(len(patients))
    counts = _allocate(len(patients), fractions)
    split_of: dict[str, str] = {}
    start = 0
    for name, count in zip(SPLITS, counts):
        for index in order[start : start + count]:
            split_of[patients[index]] = name
        start += count
    return {name: [e for e in entries if split_of[e.patient_id] == name] for name in SPLITS}


def _allocate(n: int, fractions: Sequence[float]) -> list[int]:
    exact = [f * n for f in fractions]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i, fraction in enumerate(fractions):
        donor = max(range(len(counts)), key=lambda j: counts[j])
        if fraction > 0 and counts[i] == 0 and counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return counts


def write_datalist(
    path: str | Path,
    splits: dict[str, Iterable[DatalistEntry]],
    name: str = "ductai",
    description: str = "",
) -> Path:
    """Write the Decathlon-style JSON with every path relative to the datalist's folder."""
    path = Path(path)
    folder = path.parent.resolve()
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)}; use {list(SPLITS)}")

    def relative(p: str) -> str:
        return Path(os.path.relpath(Path(p).resolve(), folder)).as_posix()

    document: dict[str, Any] = {
        "name": name,
        "description": description,
        "classes": list(CLASSES),
        "box_convention": "[x0, y0, x1, y1], x = column, continuous pixel coordinates",
    }
    for split in SPLITS:
        entries = [e.with_paths(relative) for e in splits.get(split, [])]
        document[f"num{split.capitalize()}"] = len(entries)
        document[split] = [e.model_dump(exclude_none=True) for e in entries]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


def load_datalist(path: str | Path, check: bool = True) -> dict[str, list[DatalistEntry]]:
    """Read a datalist, resolve its paths and (if `check`) verify files and labels.

    Every problem is collected first; one `DatalistError` lists them all.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise DatalistError(path, [f"not a readable JSON file: {exc}"]) from exc
    problems: list[str] = []
    if not isinstance(document, dict) or not any(s in document for s in SPLITS):
        raise DatalistError(path, [f"no {'/'.join(SPLITS)} lists"])
    folder = path.parent.resolve()
    splits: dict[str, list[DatalistEntry]] = {}
    for split in SPLITS:
        splits[split] = []
        for index, raw in enumerate(document.get(split) or []):
            where = f"{split}[{index}]"
            if isinstance(raw, dict) and "image" in raw:
                where += f" ({raw['image']})"
            try:
                entry = DatalistEntry.model_validate(raw)
            except ValidationError as exc:
                problems += [f"{where}: {_describe(err)}" for err in exc.errors()]
                continue
            entry = entry.with_paths(lambda p: str((folder / p).resolve()))
            if check:
                problems += [
                    f"{where}: {field} file not found: {p}"
                    for field, p in entry.paths().items()
                    if not Path(p).is_file()
                ]
            splits[split].append(entry)
    problems += _patient_leaks(document)
    if problems:
        raise DatalistError(path, problems)
    return splits


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def _patient_leaks(document: dict[str, Any]) -> list[str]:
    # Read from the raw lists so that invalid entries still count.
    seen: dict[str, set[str]] = {}
    for split in SPLITS:
        for raw in document.get(split) or []:
            if isinstance(raw, dict) and raw.get("patient_id") is not None:
                seen.setdefault(str(raw["patient_id"]), set()).add(split)
    return [
        f"patient {pid} is in several splits: {sorted(names)}"
        for pid, names in sorted(seen.items())
        if len(names) > 1
    ]


def datalist_from_simulation(out_dir: str | Path) -> list[DatalistEntry]:
    """Entries (absolute paths) from the per-view truth files of `ductai simulate`."""
    out_dir = Path(out_dir)
    entries = []
    for truth_path in sorted((out_dir / "labels").glob("*.json")):
        truth = json.loads(truth_path.read_text())
        image_id = truth["image_id"]

        def existing(name: str) -> str | None:
            candidate = out_dir / name
            return str(candidate.resolve()) if candidate.is_file() else None

        objects = truth.get("objects", [])
        entries.append(
            DatalistEntry(
                image=str((out_dir / "images" / f"{image_id}.dcm").resolve()),
                duct=existing(f"labels/{image_id}_duct.png"),
                instances=existing(f"labels/{image_id}_instances.png"),
                centerline=existing(f"labels/{image_id}_centerline.png"),
                truth=str(truth_path.resolve()),
                boxes=[list(map(float, o["bbox_px"])) for o in objects],
                labels=[o["label"] for o in objects],
                patient_id=str(truth["patient_id"]),
                study_instance_uid=truth.get("study_instance_uid"),
                laterality=truth.get("laterality", UNKNOWN),
                view=truth.get("view", UNKNOWN),
            )
        )
    return entries


def write_simulation_datalist(
    out_dir: str | Path,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> Path:
    """OUT/datalist.json for a simulated data set, split by patient."""
    out_dir = Path(out_dir)
    splits = split_by_patient(datalist_from_simulation(out_dir), fractions, seed)
    return write_datalist(out_dir / "datalist.json", splits, description="ductai simulation")


def identity_for(image_path: str | Path, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """Patient, study, laterality and view of an image being imported.

    Given values win; then the DICOM header; else the file stem is the patient id (each image
    its own patient, so views of one breast may be split apart: give patient ids to avoid it).
    """
    from ductai.data.dicom_reader import read_identity

    given = {k: v for k, v in (given or {}).items() if v not in (None, "")}
    found = read_identity(image_path) or {}
    identity = {
        "patient_id": found.get("patient_id") or Path(image_path).stem,
        "study_instance_uid": found.get("study_instance_uid") or None,
        "laterality": found.get("laterality", UNKNOWN),
        "view": found.get("view", UNKNOWN),
    }
    identity.update({k: given[k] for k in identity if k in given})
    identity["patient_id"] = str(identity["patient_id"])
    lat = str(identity["laterality"]).upper()
    identity["laterality"] = lat if lat in ("L", "R") else UNKNOWN
    return identity
