"""Per-breast outputs: DIR/study_<StudyInstanceUID>_<L|R>/{study_report.json, surgical_map.png}."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ductai.inference.types import StudyLesion, ViewLocalization, ViewPrediction
from ductai.inference.writers.atomic import atomic_folder, safe_name, safe_uid
from ductai.inference.writers.images import surgical_map_image, write_png
from ductai.inference.writers.report import build_study_report
from ductai.inference.writers.schema import validate_study_report

__all__ = ["study_folder_name", "write_study_outputs"]


def study_folder_name(study_instance_uid: str, laterality: str) -> str:
    return safe_name(f"study_{safe_uid(study_instance_uid)}_{safe_name(laterality)}")


def write_study_outputs(
    out_dir: str | Path,
    study_instance_uid: str,
    laterality: str,
    predictions: Sequence[ViewPrediction],
    localizations: Sequence[ViewLocalization | None],
    study_lesions: Sequence[StudyLesion],
    flags: Sequence[str] = (),
    messages: Sequence[str] = (),
) -> Path:
    """Write the breast's study_report.json and surgical_map.png; returns the folder."""
    name = study_folder_name(study_instance_uid, laterality)
    final = Path(out_dir) / name
    folders = {
        p.image.sop_instance_uid: f"../{safe_uid(p.image.sop_instance_uid)}" for p in predictions
    }
    with atomic_folder(final) as tmp:
        report = build_study_report(
            study_instance_uid,
            laterality,
            predictions,
            localizations,
            study_lesions,
            view_folders=folders,
            outputs={"surgical_map": "surgical_map.png"},
            flags=flags,
            messages=messages,
        )
        write_png(tmp / "surgical_map.png", surgical_map_image(laterality, report["lesions"]))
        validate_study_report(report)
        (tmp / "study_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return final
