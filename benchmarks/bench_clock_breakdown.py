"""Where the clock position is lost: detection in both views, cross-view pairing, or geometry.

    .venv/bin/python benchmarks/bench_clock_breakdown.py EVAL_DIR [EVAL_DIR ...]

Reads what ``ductai evaluate --out EVAL_DIR`` left (the simulated set's truth under
``simulated/labels``, the reports under ``inference``, ``metrics.json``), no re-run. For each
truth finding that both views of its breast show, at the evaluation's localization threshold:

* found in both: some reported finding hits it (the scorer's rule) in the CC and in the
  ML/MLO;
* paired right: the study lesion that holds the CC finding also holds an ML/MLO finding that
  hits the same truth lesion;
* clock right: within one hour of the truth (the scorer's figure, from the highest-scoring
  finding that hits it), split by pairing and by the distance from the nipple axis (one hour
  is 2.6 mm of arc at 5 mm from the axis).

Prints a Markdown table per folder. Use it on selection sets before changing the pairing
(inference/localization/study.py) or the nipple axis (inference/localization/nipple.py).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from _common import reports_by_image

from ductai.data.labels import FINDINGS
from ductai.training.inference_scoring import (
    OFF_AXIS_MM,
    _axis_offset,
    _matches,
    _true_clock_hours,
    clock_error_hours,
    hit_matrix,
    image_key,
    truth_from_simulation,
)


def _hits(truth, lesion: dict) -> set:
    """Truth findings (instances) that one reported finding hits."""
    h, _ = hit_matrix(np.asarray([lesion["bbox_px"]], float), truth.boxes)
    return {
        truth.objects[q].get("instance")
        for q in np.flatnonzero(h[0])
        if truth.labels[q] in FINDINGS
    }


def _side_findings_paired_with(study: dict | None, cc_index: int) -> list[int]:
    """Indices of the side view's findings in the study lesion of CC finding ``cc_index``."""
    for lesion in (study or {}).get("lesions", []):
        if any(v["view"] == "CC" and v["index"] == cc_index for v in lesion["views"]):
            return [v["index"] for v in lesion["views"] if v["view"] != "CC"]
    return []


def breakdown(folder: Path) -> dict[str, float]:
    threshold = json.loads((folder / "metrics.json").read_text())["metrics"].get(
        "localization_threshold", -math.inf
    )
    threshold = -math.inf if threshold is None else threshold
    reports = reports_by_image(folder)
    studies = {}
    for path in (folder / "inference").glob("study_*/study_report.json"):
        study = json.loads(path.read_text())
        studies[(study["study_instance_uid"], study["laterality"])] = study

    counts = dict.fromkeys(
        ("both views", "found in both", "paired right", "given a clock", "clock right"), 0
    )
    counts.update({"right | paired right": 0, "off axis": 0, "off axis right": 0})
    labels = folder / "simulated" / "labels"
    for cc_json in sorted(labels.glob("*CC.json")):
        side_json = next(iter(sorted(labels.glob(cc_json.stem[:-2] + "M*.json"))), None)
        if side_json is None:
            continue
        views = []
        for truth_json in (cc_json, side_json):
            image = folder / "simulated" / "images" / f"{truth_json.stem}.dcm"
            truth = truth_from_simulation(truth_json, image)
            report = reports.get(image_key(image))
            if report is None:
                break
            views.append((truth, report, _matches(truth, report["lesions"], threshold)))
        if len(views) < 2:
            continue
        (t_cc, r_cc, m_cc), (t_side, r_side, m_side) = views
        study = studies.get((r_cc["image"]["study_instance_uid"], r_cc["image"]["laterality"]))
        side_index = {
            o.get("instance"): k
            for k, (label, o) in enumerate(zip(t_side.labels, t_side.objects))
            if label in FINDINGS
        }
        for j, (label, obj) in enumerate(zip(t_cc.labels, t_cc.objects)):
            instance = obj.get("instance")
            k = side_index.get(instance)
            if label not in FINDINGS or instance is None or k is None:
                continue
            counts["both views"] += 1
            paired = False
            if j in m_cc and k in m_side:
                counts["found in both"] += 1
                partners = _side_findings_paired_with(study, r_cc["lesions"].index(m_cc[j]))
                paired = any(instance in _hits(t_side, r_side["lesions"][i]) for i in partners)
            counts["paired right"] += int(paired)
            reported = [r for r in (m_cc.get(j), m_side.get(k)) if r is not None]
            best = max(reported, key=lambda r: r["score"]) if reported else {}
            if not best.get("clock"):
                continue
            counts["given a clock"] += 1
            true_hours = _true_clock_hours(obj, t_cc.laterality)
            right = true_hours is not None and clock_error_hours(best["clock"], true_hours) <= 1.0
            off_axis = (_axis_offset(obj) or 0.0) >= OFF_AXIS_MM
            counts["clock right"] += int(right)
            counts["right | paired right"] += int(right and paired)
            counts["off axis"] += int(off_axis and paired)
            counts["off axis right"] += int(off_axis and paired and right)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="ductai evaluate --out folders")
    args = parser.parse_args()
    header = [
        "set",
        "lesions in both views",
        "found in both",
        "paired right",
        "given a clock",
        "clock right",
        "right, paired right",
        "paired right, >= 10 mm off axis: right",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for folder in args.folders:
        c = breakdown(folder)
        cells = [
            folder.name,
            c["both views"],
            c["found in both"],
            c["paired right"],
            c["given a clock"],
            c["clock right"],
            f"{c['right | paired right']} of {c['paired right']}",
            f"{c['off axis right']} of {c['off axis']}",
        ]
        print("| " + " | ".join(str(x) for x in cells) + " |")


if __name__ == "__main__":
    main()
