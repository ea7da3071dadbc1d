"""`ductai inspect`: what ductai understands of each image file, and what is wrong with it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ductai.data.dicom_reader import read_galactogram
from ductai.data.errors import ImageReadError
from ductai.data.galactogram import Galactogram
from ductai.data.image_files import IMAGE_SUFFIXES, read_image_file

_SHORT_SOURCE = {
    "PixelSpacing": "PS",
    "ImagerPixelSpacing": "IPS",
    "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor": "IPS/mag",
    "user": "given",
}


@dataclass
class Inspection:
    path: str
    size_bytes: int = 0
    rows: int | None = None
    columns: int | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    spacing_source: str = ""
    laterality: str = ""
    view: str = ""
    photometric: str = ""
    patient_orientation: tuple[str, str] | None = None
    transfer_syntax: str = ""
    modality: str = ""
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def inspect_paths(
    paths: Iterable[str | Path], pixel_spacing: float | None = None
) -> list[Inspection]:
    """One Inspection per file (folders are walked); a bad file is reported, never raised."""
    return [inspect_file(p, pixel_spacing) for p in _files(paths)]


def _files(paths: Iterable[str | Path]) -> list[Path]:
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
        else:
            found.append(path)  # a missing file is reported as such
    return found


def inspect_file(path: Path, pixel_spacing: float | None = None) -> Inspection:
    result = Inspection(path=str(path))
    try:
        result.size_bytes = path.stat().st_size
        if path.suffix.lower() in IMAGE_SUFFIXES:
            image = read_image_file(path, pixel_spacing=pixel_spacing)
        else:
            image = read_galactogram(path, pixel_spacing=pixel_spacing)
    except (ImageReadError, OSError, ValueError) as exc:
        result.error = str(exc)
        return result
    except Exception as exc:  # never crash on one odd file: report it
        result.error = f"{path}: unexpected {type(exc).__name__}: {exc}"
        return result
    _fill(result, image)
    return result


def _fill(result: Inspection, image: Galactogram) -> None:
    result.rows, result.columns = image.rows, image.columns
    result.pixel_spacing_mm = image.pixel_spacing_mm
    result.spacing_source = image.spacing_source
    result.laterality, result.view = image.laterality, image.view
    result.photometric = image.photometric
    result.patient_orientation = image.patient_orientation
    result.transfer_syntax = image.transfer_syntax
    result.modality = image.modality
    result.warnings = list(image.warnings)


def format_inspection(results: list[Inspection], as_json: bool = False) -> str:
    """A table plus a list of problems, or (as_json) a JSON list of the inspections."""
    if as_json:
        return json.dumps([asdict(r) for r in results], indent=1)
    header = ("file", "size", "spacing mm", "side", "view", "photometric", "orient.",
              "transfer syntax", "mod.", "status")  # fmt: skip
    rows = [header] + [_row(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    problems = [f"{r.path}: ERROR {_without_path(r)}" for r in results if r.error] + [
        f"{r.path}: warning: {w}" for r in results for w in r.warnings
    ]
    if problems:
        lines += ["", "Problems:"] + [f"  {p}" for p in problems]
    refused = sum(1 for r in results if r.error)
    lines += ["", f"{len(results)} file(s): {len(results) - refused} readable, {refused} refused"]
    return "\n".join(lines)


def _without_path(r: Inspection) -> str:
    return (r.error or "").removeprefix(f"{r.path}: ")


def _row(r: Inspection) -> tuple[str, ...]:
    if r.error:
        status = "ERROR"
    else:
        status = f"{len(r.warnings)} warning(s)" if r.warnings else "ok"
    spacing = ""
    if r.pixel_spacing_mm:
        spacing = "x".join(f"{s:g}" for s in r.pixel_spacing_mm)
        spacing += f" ({_SHORT_SOURCE.get(r.spacing_source, r.spacing_source)})"
    return (
        r.path,
        f"{r.rows}x{r.columns}" if r.rows else "",
        spacing,
        r.laterality,
        r.view,
        r.photometric,
        "\\".join(r.patient_orientation) if r.patient_orientation else "",
        r.transfer_syntax,
        r.modality,
        status,
    )
