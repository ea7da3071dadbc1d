"""Score what `ductai infer` reports against the truth, image by image, on the ORIGINAL grid.

Both sides are plain per-view records keyed by the image file's resolved path, so the scorer
never depends on how the predictions were made: `predicted[key]` is the view's report
(``lesions`` as in report.json: ``bbox_px``, ``score``, ``label``, ``distance_to_nipple_mm``,
``clock``, ``quadrant``, ``depth``) plus ``duct_mask`` (bool array on the DICOM grid, or None);
`ViewTruth` holds the simulator's (or a datalist's) truth on the same grid. Feeding the truth
as predictions (`truth_as_prediction`) must give perfect scores: the tests check that.

Metrics (definitions where they are computed):

* detection: `DetectionMetrics` (FROC/CPM, sensitivity at 1 FP/image, image AUC, mimic false
  positives, AP at IoU 0.1), boxes in original pixels;
* ducts: Dice and clDice of the duct mask (`SegmentationMetrics`, threshold already applied,
  original pixel grid, views whose truth has a duct mask);
* localization, for truth findings detected in a view (the highest-scoring reported finding
  at or above ``localization_threshold`` that hits it, `hit_matrix` rule): |reported - true|
  distance to the nipple in mm. The truth is the distance ON THAT VIEW
  (``image_distance_to_nipple_mm``: the compressed projection a surgeon measures on the
  image), not the uncompressed 3D distance, which no single view shows; the 3D error is kept
  as ``distance_3d_error_mm_mean`` for reference;
* per breast, for truth findings present in both views: clock within one hour (circular),
  quadrant and depth third equal. A lesion missed in both views, or reported without a clock,
  counts as wrong (``*_accuracy``); ``*_accuracy_given`` counts only lesions that got one.
  ``clock_off_axis_accuracy``: the same for lesions at least ``OFF_AXIS_MM`` from the nipple
  axis, where a clock position is well defined (one hour is 2.6 mm of arc at 5 mm from the
  axis, so retro-areolar lesions get an arbitrary hour from millimetres of error).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ductai.data.labels import CLASSES, FINDINGS
from ductai.training.metrics import DetectionMetrics, SegmentationMetrics
from ductai.training.metrics.detection import hit_matrix

OFF_AXIS_MM = 10.0

__all__ = [
    "ViewTruth",
    "clock_error_hours",
    "image_key",
    "score_inference",
    "truth_as_prediction",
    "truth_from_datalist_entry",
    "truth_from_simulation",
]


@dataclass
class ViewTruth:
    key: str  # the image file's resolved path: what a prediction is looked up by
    breast: str  # study UID + laterality: views of one breast share it
    laterality: str
    boxes: np.ndarray  # [M, 4] original pixels, findings and mimics
    labels: list[str]
    objects: list[dict[str, Any]] = field(default_factory=list)  # per box: instance, location
    duct_mask: Path | np.ndarray | None = None

    def duct(self) -> np.ndarray | None:
        if self.duct_mask is None or isinstance(self.duct_mask, np.ndarray):
            return self.duct_mask
        return np.asarray(Image.open(self.duct_mask)) > 0


def truth_from_simulation(
    truth_json: str | Path, image: str | Path, duct_png: str | Path | None = None
) -> ViewTruth:
    """A simulator view: `labels/<id>.json` and `labels/<id>_duct.png` of `image`."""
    truth_json = Path(truth_json)
    t = json.loads(truth_json.read_text())
    if duct_png is None:
        candidate = truth_json.with_name(f"{truth_json.stem}_duct.png")
        duct_png = candidate if candidate.exists() else None
    objects = [
        {
            "instance": o.get("instance"),
            "distance_to_nipple_mm": o.get("distance_to_nipple_mm"),
            "image_distance_to_nipple_mm": o.get(
                "image_distance_to_nipple_mm", _image_distance(o, t)
            ),
            "clock": o.get("clock"),
            "center_3d_mm": o.get("center_3d_mm"),
            "quadrant": o.get("quadrant"),
            "depth": o.get("depth"),
        }
        for o in t["objects"]
    ]
    return ViewTruth(
        key=image_key(image),
        breast=f"{t['study_instance_uid']}_{t['laterality']}",
        laterality=t["laterality"],
        boxes=np.asarray([o["bbox_px"] for o in t["objects"]], float).reshape(-1, 4),
        labels=[o["label"] for o in t["objects"]],
        objects=objects,
        duct_mask=Path(duct_png) if duct_png else None,
    )


def _image_distance(obj: dict[str, Any], view: dict[str, Any]) -> float | None:
    """Nipple-to-centre distance on the view (truth files written before the field existed)."""
    if obj.get("center_px") is None or view.get("nipple_px") is None:
        return None
    spacing = float(np.mean(view.get("pixel_spacing_mm") or [math.nan]))
    return float(np.hypot(*np.subtract(obj["center_px"], view["nipple_px"]))) * spacing


def image_key(path: str | Path) -> str:
    return str(Path(path).resolve())


def truth_from_datalist_entry(entry) -> ViewTruth:
    """A datalist entry (absolute paths); its `truth` JSON, when present, adds localization."""
    if entry.truth:
        return truth_from_simulation(entry.truth, entry.image, entry.duct)
    return ViewTruth(
        key=image_key(entry.image),
        breast=f"{entry.study_instance_uid or entry.patient_id}_{entry.laterality}",
        laterality=entry.laterality,
        boxes=np.asarray(entry.boxes, float).reshape(-1, 4),
        labels=list(entry.labels),
        objects=[{} for _ in entry.labels],
        duct_mask=Path(entry.duct) if entry.duct else None,
    )


def truth_as_prediction(truth: ViewTruth) -> dict[str, Any]:
    """The oracle: the truth's findings reported with score 1 (mimics never reported)."""
    lesions = []
    for box, label, obj in zip(truth.boxes, truth.labels, truth.objects):
        if label not in FINDINGS:
            continue
        lesions.append(
            {
                "bbox_px": [float(v) for v in box],
                "score": 1.0,
                "label": label,
                "distance_to_nipple_mm": obj.get(
                    "image_distance_to_nipple_mm", obj.get("distance_to_nipple_mm")
                ),
                "clock": obj.get("clock"),
                "quadrant": obj.get("quadrant"),
                "depth": obj.get("depth"),
            }
        )
    return {"lesions": lesions, "duct_mask": truth.duct()}


def clock_error_hours(predicted: str, true_hours: float) -> float:
    """Circular difference in hours between an "H:MM" clock and a clock in hours [0, 12)."""
    hour, minute = (int(v) for v in predicted.split(":"))
    diff = abs((hour % 12 + minute / 60.0) - true_hours) % 12.0
    return min(diff, 12.0 - diff)


def _true_clock_hours(obj: dict[str, Any], laterality: str) -> float | None:
    """Exact clock of a truth lesion (from its 3D centre), else its rounded "H:MM"."""
    if obj.get("center_3d_mm") is not None and laterality in ("L", "R"):
        from ductai.simulation.truth import clock_hours

        return clock_hours(obj["center_3d_mm"], laterality)
    if obj.get("clock"):
        hour, minute = (int(v) for v in str(obj["clock"]).split(":"))
        return (hour % 12) + minute / 60.0
    return None


def _axis_offset(obj: dict[str, Any]) -> float | None:
    if obj.get("axis_offset_mm") is not None:
        return float(obj["axis_offset_mm"])
    c = obj.get("center_3d_mm")
    return None if c is None else float(math.hypot(c[1], c[2]))


def _prediction_arrays(lesions: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    findings = [les for les in lesions if les["label"] in FINDINGS]
    boxes = np.asarray([les["bbox_px"] for les in findings], float).reshape(-1, 4)
    scores = np.asarray([les["score"] for les in findings], float)
    labels = np.asarray([CLASSES.index(les["label"]) for les in findings], np.int64)
    return boxes, scores, labels


def _matches(
    truth: ViewTruth, lesions: list[dict[str, Any]], threshold: float = -math.inf
) -> dict[int, dict[str, Any]]:
    """Truth finding index -> the highest-scoring reported finding >= threshold that hits it."""
    lesions = [les for les in lesions if les["score"] >= threshold]
    findings = [les for les in lesions if les["label"] in FINDINGS]
    boxes, scores, _ = _prediction_arrays(lesions)
    hits, _ = hit_matrix(boxes, truth.boxes)
    out: dict[int, dict[str, Any]] = {}
    for j, label in enumerate(truth.labels):
        if label not in FINDINGS or not hits[:, j].any():
            continue
        k = int(np.argmax(np.where(hits[:, j], scores, -np.inf)))
        out[j] = findings[k]
    return out


def score_inference(
    predicted: Mapping[str, dict[str, Any]],
    truths: list[ViewTruth],
    localization_threshold: float | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, curves) over the views of `truths`; a view without a prediction is missed.

    A view with no prediction at all (its file failed) is scored as reporting nothing, so
    failures lower the figures instead of vanishing from them. Localization is scored on the
    findings reported at ``localization_threshold`` (the model's calibrated operating point),
    by default the 1-FP/image threshold of this very set.
    """
    det = DetectionMetrics()
    seg = SegmentationMetrics(channels=("duct",), cldice_channels=("duct",))
    for truth in truths:
        pred = predicted.get(truth.key) or {"lesions": [], "duct_mask": None}
        boxes, scores, labels = _prediction_arrays(pred["lesions"])
        target_labels = np.asarray([CLASSES.index(lb) for lb in truth.labels], np.int64)
        det.update(
            [{"boxes": boxes, "scores": scores, "labels": labels}],
            [{"boxes": truth.boxes, "labels": target_labels}],
            ids=[truth.key],
        )
        true_duct = truth.duct()
        if true_duct is not None:
            mask = pred.get("duct_mask")
            mask = np.zeros_like(true_duct) if mask is None else np.asarray(mask, bool)
            if mask.shape != true_duct.shape:
                raise ValueError(
                    f"{truth.key}: duct mask {mask.shape} is not on the truth's grid "
                    f"{true_duct.shape}"
                )
            seg.update(mask[None, None], true_duct[None, None], ids=[truth.key])

    metrics = {k: v for k, v in det.compute().items()}
    if localization_threshold is None:
        localization_threshold = metrics.get("threshold@1fp", -math.inf)
    if not math.isfinite(localization_threshold):
        localization_threshold = -math.inf
    metrics["localization_threshold"] = localization_threshold
    distance_errors: list[float] = []
    distance_3d_errors: list[float] = []
    by_breast: dict[str, list[tuple[ViewTruth, dict[int, dict[str, Any]]]]] = {}
    for truth in truths:
        pred = predicted.get(truth.key) or {"lesions": [], "duct_mask": None}
        matched = _matches(truth, pred["lesions"], localization_threshold)
        for j, lesion in matched.items():
            reported = lesion.get("distance_to_nipple_mm")
            if reported is None:
                continue
            obj = truth.objects[j]
            true_image = obj.get("image_distance_to_nipple_mm")
            true_3d = obj.get("distance_to_nipple_mm")
            if true_image is not None or true_3d is not None:
                distance_errors.append(abs(float(reported) - (true_image or true_3d)))
            if true_3d is not None:
                distance_3d_errors.append(abs(float(reported) - true_3d))
        by_breast.setdefault(truth.breast, []).append((truth, matched))

    metrics["n_views"] = float(len(truths))
    if seg.per_image:
        seg_metrics = seg.compute()
        metrics["dice_duct"] = seg_metrics["dice_duct"]
        metrics["cldice_duct"] = seg_metrics["cldice_duct"]
    else:
        metrics["dice_duct"] = metrics["cldice_duct"] = math.nan
    errors = np.asarray(distance_errors, float)
    metrics["n_matched_lesion_views"] = float(errors.size)
    metrics["distance_error_mm_mean"] = float(errors.mean()) if errors.size else math.nan
    metrics["distance_error_mm_median"] = float(np.median(errors)) if errors.size else math.nan
    metrics["distance_3d_error_mm_mean"] = (
        float(np.mean(distance_3d_errors)) if distance_3d_errors else math.nan
    )
    metrics.update(_study_metrics(by_breast))
    return metrics, det.curves()


def _study_metrics(
    by_breast: dict[str, list[tuple[ViewTruth, dict[int, dict[str, Any]]]]],
) -> dict[str, float]:
    """Clock, quadrant and depth of truth findings seen in both views of their breast."""
    names = ("clock", "clock_off_axis", "quadrant", "depth")
    tallies = {name: [0, 0, 0] for name in names}  # right, given, all
    for views in by_breast.values():
        if len(views) < 2:
            continue
        # instance -> [(truth object, laterality, reported lesion or None)] over the views
        seen: dict[Any, list[tuple[dict, str, dict | None]]] = {}
        for truth, matched in views:
            for j, (label, obj) in enumerate(zip(truth.labels, truth.objects)):
                if label in FINDINGS and obj.get("instance") is not None:
                    seen.setdefault(obj["instance"], []).append(
                        (obj, truth.laterality, matched.get(j))
                    )
        for entries in seen.values():
            if len(entries) < 2:
                continue  # the truth itself has the lesion in one view only
            obj, laterality, _ = entries[0]
            reported = [r for _, _, r in entries if r is not None]
            best = max(reported, key=lambda r: r["score"]) if reported else {}
            true_hours = _true_clock_hours(obj, laterality)
            checks = {
                "clock": (
                    best.get("clock"),
                    lambda c, h=true_hours: h is not None and clock_error_hours(c, h) <= 1.0,
                ),
                "quadrant": (best.get("quadrant"), lambda q, o=obj: q == o.get("quadrant")),
                "depth": (best.get("depth"), lambda d, o=obj: d == o.get("depth")),
            }
            offset = _axis_offset(obj)
            if offset is not None and offset >= OFF_AXIS_MM:
                checks["clock_off_axis"] = checks["clock"]
            for name, (value, is_right) in checks.items():
                tallies[name][2] += 1
                if value is not None:
                    tallies[name][1] += 1
                    tallies[name][0] += int(bool(is_right(value)))
    out: dict[str, float] = {}
    for name, (right, given, total) in tallies.items():
        out[f"{name}_accuracy"] = right / total if total else math.nan
        out[f"{name}_accuracy_given"] = right / given if given else math.nan
        out[f"n_{name}_lesions"] = float(total)
    return out
