"""The pipeline's stages as `run_inference` calls them: one seam per part of the package.

Each function forwards to the part that owns the work (predictor, localization, writers), so
the runner reads as the flow of docs/inference-design.md and a change of one part's API is
absorbed here, in one place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ductai.data.atomic import atomic_write_text
from ductai.inference.types import StudyLesion, ViewLocalization, ViewPrediction

__all__ = [
    "load_predictor",
    "localize_breast",
    "localize_view",
    "model_name",
    "positioner_angle",
    "study_folder",
    "write_breast",
    "write_json_atomic",
    "write_view",
]


def load_predictor(
    model: str,
    device: str | None = None,
    tta: bool | str | None = None,
    score_threshold: float | None = None,
    **options: Any,
):
    """The Predictor of ``model``; ``options`` set more PredictorOptions fields."""
    import torch

    from ductai.inference.predictor import Predictor

    if device and device.startswith("cuda") and not torch.cuda.is_available():
        # A user error, not a crash: said in one line by the CLI.
        raise ValueError(f"--device {device}: CUDA is not available here; use --device cpu")
    return Predictor.from_path(
        model, device=device or "auto", tta=tta, score_threshold=score_threshold, **options
    )


def model_name(predictor: Any) -> str:
    bundle = getattr(predictor, "bundle", None)
    if bundle is None:
        return type(predictor).__name__
    return f"{bundle.name} {bundle.version} ({bundle.source})"


def localize_view(prediction: ViewPrediction) -> ViewLocalization:
    from ductai.inference.localization import localize_view as localize

    return localize(prediction).localization


def positioner_angle(path: str | Path) -> float | None:
    """PositionerPrimaryAngle (the MLO obliquity) from the header; None when absent."""
    import pydicom

    try:
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["PositionerPrimaryAngle"]
        )
        value = ds.get("PositionerPrimaryAngle")
        return None if value in (None, "") else float(value)
    except Exception:  # a missing or odd angle falls back to the localization's default
        return None


def localize_breast(
    predictions: Sequence[ViewPrediction],
    localizations: Sequence[ViewLocalization],
    pair_threshold: float | None = None,
):
    """Cross-view matching of one breast: a StudyLocalization (lesions, flags, notes);
    findings scoring below ``pair_threshold`` are not paired across views."""
    from ductai.inference.localization import localize_study

    angles = {
        p.image.sop_instance_uid: angle
        for p in predictions
        if (angle := positioner_angle(p.image.path)) is not None
    }
    return localize_study(
        list(zip(predictions, localizations)), obliquity_deg=angles, min_score=pair_threshold
    )


def write_view(
    out_dir: Path,
    prediction: ViewPrediction,
    localization: ViewLocalization | None,
    lesions: Sequence[StudyLesion],
    study_folder: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """DIR/<SOPInstanceUID>/ with every per-view output; (folder, its report.json)."""
    from ductai.inference.writers import write_view_outputs

    folder = write_view_outputs(
        out_dir, prediction, localization, list(lesions), study_folder=study_folder
    )
    return folder, json.loads((folder / "report.json").read_text())


def study_folder(study_instance_uid: str, laterality: str) -> str:
    from ductai.inference.writers import study_folder_name

    return study_folder_name(study_instance_uid, laterality)


def write_breast(
    out_dir: Path,
    study_instance_uid: str,
    laterality: str,
    predictions: Sequence[ViewPrediction],
    localizations: Sequence[ViewLocalization | None],
    lesions: Sequence[StudyLesion],
    flags: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> tuple[Path, dict[str, Any]]:
    """DIR/study_<StudyUID>_<L|R>/ with study_report.json and surgical_map.png."""
    from ductai.inference.writers import write_study_outputs

    folder = write_study_outputs(
        out_dir,
        study_instance_uid,
        laterality,
        list(predictions),
        list(localizations),
        list(lesions),
        flags=list(flags),
        messages=list(notes),
    )
    return folder, json.loads((folder / "study_report.json").read_text())


def write_json_atomic(path: Path, document: Any) -> None:
    """A reader never sees half a JSON file."""
    atomic_write_text(path, json.dumps(document, indent=1))
