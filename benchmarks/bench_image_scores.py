"""What sets the image-level score: which findings top lesion-free views, and the AUC without them.

    .venv/bin/python benchmarks/bench_image_scores.py EVAL_DIR [EVAL_DIR ...]

Reads what ``ductai evaluate --out EVAL_DIR`` left (truth under ``simulated/labels``, reports
under ``inference``), no re-run. The image score is the highest finding score of the view,
as ``ductai evaluate`` scores the AUC (training/metrics/detection.py). Per folder:

* lesion views / lesion-free views: how many, and the median image score of each;
* on lesion views, the share whose top finding hits a truth finding (the scorer's hit rule);
* on lesion-free views, what the top finding is labelled and what it lies on: a mimic (air
  bubble, calcification), the opacified duct (truth duct mask at its centre), or elsewhere;
* the AUC, and the AUC with each predicted class left out of the image score: a class whose
  removal raises the AUC is the one that scores lesion-free views high.

Use it on selection sets; the test sets are for the model card's figures only.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
from _common import reports_by_image
from sklearn.metrics import roc_auc_score

from ductai.data.labels import FINDINGS
from ductai.training.inference_scoring import image_key, truth_from_simulation
from ductai.training.metrics.detection import hit_matrix


def _views(folder: Path):
    """(truth, report) of every simulated view the evaluation reported on."""
    reports = reports_by_image(folder)
    for truth_json in sorted((folder / "simulated" / "labels").glob("*.json")):
        image = folder / "simulated" / "images" / f"{truth_json.stem}.dcm"
        report = reports.get(image_key(image))
        if report is not None:
            yield truth_from_simulation(truth_json, image), report


def _lies_on(truth, lesion: dict) -> str:
    hits, _ = hit_matrix(np.asarray([lesion["bbox_px"]], float), truth.boxes)
    labels = {truth.labels[q] for q in np.flatnonzero(hits[0])}
    if labels & set(FINDINGS):
        return "finding"
    if labels:
        return "mimic: " + "+".join(sorted(labels))
    duct = truth.duct()
    x, y = (round(c) for c in lesion["center_px"])
    if duct is not None and 0 <= y < duct.shape[0] and 0 <= x < duct.shape[1] and duct[y, x]:
        return "duct"
    return "elsewhere"


def _auc(positive: list[bool], scores: list[float]) -> float:
    pos = np.asarray(positive)
    return float(roc_auc_score(pos, scores)) if 0 < pos.sum() < len(pos) else float("nan")


def _median(values: np.ndarray) -> str:
    return f"{np.median(values):.2f}" if len(values) else "-"


def summarise(folder: Path) -> dict:
    positive, reports, top_on, top_label, top_hits_finding = [], [], Counter(), Counter(), []
    for truth, report in _views(folder):
        lesions = [x for x in report["lesions"] if x["label"] in FINDINGS]
        is_pos = any(label in FINDINGS for label in truth.labels)
        positive.append(is_pos)
        reports.append(lesions)
        top = max(lesions, key=lambda x: x["score"], default=None)
        if is_pos:
            top_hits_finding.append(top is not None and _lies_on(truth, top) == "finding")
        elif top is not None:
            top_on[_lies_on(truth, top)] += 1
            top_label[top["label"]] += 1

    def image_scores(skip: str | None = None) -> list[float]:
        return [max((x["score"] for x in ls if x["label"] != skip), default=0.0) for ls in reports]

    scores = np.asarray(image_scores())
    pos = np.asarray(positive, bool)
    return {
        "views": f"{pos.sum()} / {(~pos).sum()}",
        "median score": f"{_median(scores[pos])} / {_median(scores[~pos])}",
        "top hits a finding": f"{np.mean(top_hits_finding):.2f}" if top_hits_finding else "-",
        "lesion-free top: label": ", ".join(f"{k} {v}" for k, v in top_label.most_common()),
        "lesion-free top: on": ", ".join(f"{k} {v}" for k, v in top_on.most_common()),
        "AUC": f"{_auc(positive, list(scores)):.3f}",
        "AUC without": ", ".join(
            f"{c} {_auc(positive, image_scores(skip=c)):.3f}" for c in FINDINGS
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="ductai evaluate --out folders")
    args = parser.parse_args()
    rows = [(folder.name, summarise(folder)) for folder in args.folders]
    header = ["set", *rows[0][1]] if rows else ["set"]
    header[1:3] = [f"{h} (lesion / lesion-free)" for h in header[1:3]]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, row in rows:
        print("| " + " | ".join([name, *row.values()]) + " |")


if __name__ == "__main__":
    main()
