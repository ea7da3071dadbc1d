"""report.json per view and study_report.json per breast (issue 4, "Outputs").

Everything is built from the canonical-space contract types (inference/types.py) and mapped to
the original DICOM grid here; nothing else in the report is computed, so the report says what
the predictor and the localization said. Schemas: inference/schemas/*.schema.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ductai import __version__
from ductai.inference.types import StudyLesion, ViewLocalization, ViewPrediction
from ductai.inference.writers.grid import box_px, path_px, point_px

__all__ = [
    "FLAG_MESSAGES",
    "REPORT_SCHEMA_VERSION",
    "build_report",
    "build_study_report",
    "study_lesion_summary",
]

REPORT_SCHEMA_VERSION = "1.0"

# Why a flag matters to the reader: a flagged study must never read as a normal one.
FLAG_MESSAGES = {
    "no_opacified_duct": "No opacified duct found: not a galactogram, or the cannulation failed.",
    "not_galactogram": "No contrast-filled duct: this image does not look like a galactogram.",
    "contrast_stops_early": "Contrast stops early: incomplete fill, distal ducts not assessed.",
    "incomplete_fill": "Incomplete fill: parts of the duct system are not opacified.",
    "extravasation": "Contrast outside the ducts (extravasation): the exam may need repeating.",
    "no_segmentation_model": "The model has no segmentation network: no duct mask or duct tree.",
    "no_detection_model": "The model has no detection network: lesions are not reported.",
    "no_nipple": "Nipple not found: distances and clock positions are unknown.",
    "single_view": "Only one view of this breast: clock, quadrant and depth are unknown.",
}


def _num(value: Any, digits: int = 2) -> float | None:
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if np.isfinite(value) else None


def _message(flag: str) -> str:
    return FLAG_MESSAGES.get(flag, flag.replace("_", " "))


def study_lesion_for(
    sop_uid: str, index: int, study_lesions: Sequence[StudyLesion]
) -> StudyLesion | None:
    for lesion in study_lesions:
        if lesion.views.get(sop_uid) == index:
            return lesion
    return None


def _image(prediction: ViewPrediction) -> dict[str, Any]:
    img = prediction.image
    return {
        "sop_instance_uid": img.sop_instance_uid,
        "study_instance_uid": img.study_instance_uid,
        "series_instance_uid": img.series_instance_uid,
        "patient_id": img.patient_id,
        "laterality": img.laterality,
        "view": img.view,
        "rows": int(prediction.geometry.original_shape[0]),
        "columns": int(prediction.geometry.original_shape[1]),
        "pixel_spacing_mm": [float(v) for v in prediction.geometry.original_spacing_mm],
        "source_path": str(img.path),
    }


def _duct(localization: ViewLocalization | None) -> dict[str, Any]:
    duct = dict(localization.duct) if localization is not None else {}
    return {
        "found": bool(duct.get("found", False)),
        "area_mm2": _num(duct.get("area_mm2"), 1),
        "branches": None if duct.get("branches") is None else int(duct["branches"]),
        "generations": None if duct.get("generations") is None else int(duct["generations"]),
        "total_length_mm": _num(duct.get("total_length_mm"), 1),
    }


def _lesions(
    prediction: ViewPrediction,
    localization: ViewLocalization | None,
    study_lesions: Sequence[StudyLesion],
) -> list[dict[str, Any]]:
    geometry = prediction.geometry
    sop = prediction.image.sop_instance_uid
    next_id = 1 + max((lesion.id for lesion in study_lesions), default=0)
    out = []
    for index, det in enumerate(prediction.detections):
        loc = None
        if localization is not None and index < len(localization.lesions):
            loc = localization.lesions[index]
        study = study_lesion_for(sop, index, study_lesions)
        if study is None:  # a lesion the cross-view step did not see keeps a unique number
            lesion_id, next_id = next_id, next_id + 1
        else:
            lesion_id = study.id
        box = box_px(geometry, det.box)
        side = np.asarray(det.box, dtype=float)
        # Largest extent of the box: the size a surgeon plans an excision margin around.
        diameter = max(side[2] - side[0], side[3] - side[1]) * geometry.spacing_mm
        out.append(
            {
                "id": int(lesion_id),
                "label": det.label,
                "score": round(float(det.score), 4),
                "center_px": [round((box[0] + box[2]) / 2, 2), round((box[1] + box[3]) / 2, 2)],
                "bbox_px": box,
                "diameter_mm": _num(diameter),
                "distance_to_nipple_mm": _num(loc.distance_to_nipple_mm) if loc else None,
                "duct_path_length_mm": _num(loc.duct_path_length_mm) if loc else None,
                "branch_generation": (
                    int(loc.branch_generation)
                    if loc is not None and loc.branch_generation is not None
                    else None
                ),
                "side": loc.side if loc else None,
                "offset_mm": _num(loc.offset_mm) if loc else None,
                "clock": study.clock if study else None,
                "quadrant": study.quadrant if study else None,
                "depth": study.depth if study else None,
                "duct_path_px": path_px(geometry, loc.duct_path) if loc else [],
            }
        )
    return out


def view_flags(prediction: ViewPrediction, localization: ViewLocalization | None) -> list[str]:
    flags = list(localization.fill_flags) if localization is not None else []
    missing = set(prediction.model.get("missing", []) or [])
    if prediction.duct_prob is None or "segmentation" in missing:
        flags.append("no_segmentation_model")
    if "detection" in missing:
        flags.append("no_detection_model")
    if localization is not None and localization.nipple is None:
        flags.append("no_nipple")
    return list(dict.fromkeys(flags))  # unique, in order


def build_report(
    prediction: ViewPrediction,
    localization: ViewLocalization | None,
    study_lesions: Sequence[StudyLesion] = (),
    outputs: dict[str, str] | None = None,
    timings: dict[str, float] | None = None,
    messages: Sequence[str] = (),
) -> dict[str, Any]:
    """The report.json of one view (validates against report.schema.json)."""
    flags = view_flags(prediction, localization)
    geometry = prediction.geometry
    nipple = point_px(geometry, localization.nipple) if localization else None
    orifice = point_px(geometry, localization.orifice) if localization else None
    all_timings = {k: round(float(v), 4) for k, v in (prediction.timings or {}).items()}
    all_timings.update({k: round(float(v), 4) for k, v in (timings or {}).items()})
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "ductai_version": __version__,
        "image": _image(prediction),
        "nipple_px": nipple,
        "orifice_px": orifice,
        "breast_depth_mm": _num(localization.breast_depth_mm) if localization else None,
        "duct": _duct(localization),
        "lesions": _lesions(prediction, localization, study_lesions),
        "flags": flags,
        "messages": [_message(f) for f in flags] + list(prediction.image.warnings) + list(messages),
        "outputs": dict(outputs or {}),
        "model": _model(prediction.model),
        "timings": all_timings,
    }


def _model(model: dict) -> dict[str, Any]:
    sha = model.get("sha256") or {}
    return {
        "name": str(model.get("name", "")),
        "version": str(model.get("version", "")),
        "sha256": {str(k): str(v) for k, v in sha.items()} if isinstance(sha, dict) else str(sha),
        "missing": [str(t) for t in model.get("missing", []) or []],
        "operating_threshold": _optional_float(model.get("operating_threshold")),
        "report_threshold": _optional_float(model.get("report_threshold")),
    }


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def study_lesion_summary(
    lesion: StudyLesion,
    predictions: dict[str, ViewPrediction],
    localizations: dict[str, ViewLocalization | None],
) -> dict[str, Any]:
    """One lesion of a breast with the distances of its views.

    A projection only shortens distances, so the longer of the views' values is the better
    estimate of the 3D distance; a localization may give it directly (distance_to_nipple_mm).
    """
    distances, paths, generations, views = [], [], [], []
    for sop, index in lesion.views.items():
        pred = predictions.get(sop)
        loc = localizations.get(sop)
        views.append(
            {
                "sop_instance_uid": sop,
                "view": pred.image.view if pred else None,
                "index": int(index),
            }
        )
        if loc is not None and index < len(loc.lesions):
            one = loc.lesions[index]
            distances.append(one.distance_to_nipple_mm)
            paths.append(one.duct_path_length_mm)
            generations.append(one.branch_generation)
    distance = getattr(lesion, "distance_to_nipple_mm", None)
    if distance is None:
        distance = max((d for d in distances if d is not None), default=None)
    return {
        "id": int(lesion.id),
        "label": lesion.label,
        "score": round(float(lesion.score), 4),
        "clock": lesion.clock,
        "quadrant": lesion.quadrant,
        "depth": lesion.depth,
        "distance_to_nipple_mm": _num(distance),
        "duct_path_length_mm": _num(max((p for p in paths if p is not None), default=None)),
        "branch_generation": max((g for g in generations if g is not None), default=None),
        "views": views,
    }


def build_study_report(
    study_instance_uid: str,
    laterality: str,
    predictions: Sequence[ViewPrediction],
    localizations: Sequence[ViewLocalization | None],
    study_lesions: Sequence[StudyLesion],
    view_folders: dict[str, str] | None = None,
    outputs: dict[str, str] | None = None,
    flags: Sequence[str] = (),
    messages: Sequence[str] = (),
) -> dict[str, Any]:
    """The study_report.json of one breast (validates against study_report.schema.json)."""
    by_sop = {p.image.sop_instance_uid: p for p in predictions}
    locs = {p.image.sop_instance_uid: loc for p, loc in zip(predictions, localizations)}
    all_flags = list(flags)
    if len(predictions) < 2:
        all_flags.append("single_view")
    views = []
    for pred, loc in zip(predictions, localizations):
        sop = pred.image.sop_instance_uid
        views.append(
            {
                "sop_instance_uid": sop,
                "view": pred.image.view,
                "folder": (view_folders or {}).get(sop),
                "flags": view_flags(pred, loc),
            }
        )
        all_flags.extend(view_flags(pred, loc))
    all_flags = list(dict.fromkeys(all_flags))
    model = _model(predictions[0].model) if predictions else _model({})
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "ductai_version": __version__,
        "study_instance_uid": study_instance_uid,
        "laterality": laterality,
        "views": views,
        "lesions": [study_lesion_summary(les, by_sop, locs) for les in study_lesions],
        "flags": all_flags,
        "messages": [_message(f) for f in all_flags] + list(messages),
        "outputs": dict(outputs or {}),
        "model": model,
    }
