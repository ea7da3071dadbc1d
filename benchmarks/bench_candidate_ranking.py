"""Are lesions missed because no candidate finds them, or because candidates rank badly?

    .venv/bin/python benchmarks/bench_candidate_ranking.py [--model models/default]
        [--sets hard:12:900,default:20:901] [--out outputs/bench-candidate-ranking]

Runs the whole pipeline once per set with every candidate of the finding rule
(inference/candidates.py: lesion-channel components, and detector findings no component
explains) reported, records each candidate's features (peak and mean probability, area,
detector and mimic scores), and matches the reported boxes with the truth on the DICOM grid
under the scorer's hit rule. Prints, per set:

* the recall ceiling: the share of truth lesions that some candidate hits, per class;
* FROC CPM, sensitivity and mimic false positives at 1 FP/image of candidate orderings: peak
  probability (unexplained detector findings at half their score; the rule of 0.4.0) and
  re-scorings by area, mean probability and the detector's mimic score (the logit penalty
  of 2 is the rule since 0.4.1).

A high ceiling with a low CPM says the ranking, not the proposal, loses the lesions. The
orderings are scored by ``ductai evaluate``'s ``DetectionMetrics``. The defaults are the
selection sets, never the test seeds (777, 778).
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.special import logit

from ductai.data.labels import CLASSES, FINDINGS
from ductai.inference import candidates
from ductai.inference import predictor as predictor_module
from ductai.inference.postprocess import nms_across_classes, split_mimics
from ductai.inference.predictor import Predictor
from ductai.inference.run import run_inference
from ductai.training.evaluate_inference import SCORING_THRESHOLD, _simulated_entries
from ductai.training.inference_scoring import image_key, truth_from_datalist_entry
from ductai.training.metrics.detection import DetectionMetrics, hit_matrix

ID_BASE, ID_STEP = 0.1, 1e-4  # candidate k of a view is reported with score 0.1 + k * 1e-4


def _logit(p: float) -> float:
    return float(logit(min(max(p, 1e-6), 1 - 1e-6)))


def _shipped(c: dict) -> float:
    return c["peak"] if c["component"] else 0.5 * c["detector"]


def _mimic_penalty(weight: float) -> Callable[[dict], float]:
    # candidates.penalize_mimics on one recorded candidate
    return lambda c: _logit(_shipped(c)) - weight * c["mimic"]


RULES: dict[str, Callable[[dict], float]] = {
    "peak probability (0.4.0)": _shipped,
    "+ 0.5 log(area)": lambda c: (
        _logit(_shipped(c)) + 0.5 * np.log(max(c["area"], 1.0)) * c["component"]
    ),
    "+ logit(mean probability)": lambda c: _logit(_shipped(c)) + _logit(c["mean"]) * c["component"],
    **{
        f"- {w:g} x mimic score{' (since 0.4.1)' if w == 2 else ''}": _mimic_penalty(w)
        for w in (1.0, 2.0, 3.0, 4.0, 6.0)
    },
}


class RecordingRule:
    """Stands in for candidates.segmentation_candidates: keeps every candidate's features and
    gives candidate k of a view the score ID_BASE + k * ID_STEP so that it can be found in
    the report after the pipeline has mapped its box to the DICOM grid."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.features: dict[str, list[dict]] = {}
        self.view: str | None = None
        self.raw = None
        self.original = candidates.segmentation_candidates

    def __call__(self, findings, lesion, threshold=0.1, min_area_px=4, detector_weight=0.5, **_):
        out = self.original(findings, lesion, threshold, min_area_px, 1.0)
        n_components = len(candidates.lesion_components(lesion, threshold, min_area_px)[0])
        if len(out.scores) * ID_STEP + ID_BASE >= 1.0:
            raise RuntimeError(f"{self.view}: too many candidates ({len(out.scores)}) to number")
        _, mimics = split_mimics(nms_across_classes(self.raw, self.predictor.options.nms_iou))
        by_detector = candidates.hits(out.boxes, findings.boxes)
        by_mimic = candidates.hits(out.boxes, mimics.boxes)
        records = []
        for k, box in enumerate(out.boxes.astype(int)):
            patch = lesion[box[1] : box[3], box[0] : box[2]]
            inside = patch[patch >= threshold]
            component = k < n_components
            detector = findings.scores[by_detector[k]] if component else out.scores[k : k + 1]
            records.append(
                {
                    "component": component,
                    "peak": float(out.scores[k]) if component else 0.0,
                    "detector": float(detector.max()) if len(detector) else 0.0,
                    "area": float(inside.size),
                    "mean": float(inside.mean()) if inside.size else 0.0,
                    "mimic": float(mimics.scores[by_mimic[k]].max()) if by_mimic[k].any() else 0.0,
                }
            )
        self.features[self.view] = records
        out.scores = ID_BASE + ID_STEP * np.arange(len(out.scores), dtype=np.float64)
        return out


def record_candidates(model: str, preset: str, n: int, seed: int, out: Path) -> list[dict]:
    """Per view: the truth, its lesion indices, the candidates (features, DICOM-grid box,
    label) and the candidate x lesion hit matrix."""
    predictor = Predictor.from_path(model, score_threshold=SCORING_THRESHOLD)
    rule = RecordingRule(predictor)
    predict, postprocess = predictor.predict, predictor.postprocess

    def predict_view(image, pixel_spacing=None):
        rule.view = image_key(image.path if hasattr(image, "path") else image)
        return predict(image, pixel_spacing)

    def postprocess_view(probs, raw, crop):
        rule.raw = raw
        return postprocess(probs, raw, crop)

    predictor.predict, predictor.postprocess = predict_view, postprocess_view
    entries = _simulated_entries(out / "simulated", preset, n, seed, workers=1)
    predictor_module.segmentation_candidates = rule
    try:
        run = run_inference([e.image for e in entries], out / "inference", predictor=predictor)
    finally:
        predictor_module.segmentation_candidates = rule.original
    reports = {image_key(v.path): v.report for v in run.views}
    views = []
    for entry in entries:
        truth = truth_from_datalist_entry(entry)
        lesion_idx = [i for i, label in enumerate(truth.labels) if label in FINDINGS]
        reported = [les for les in reports.get(truth.key, {}).get("lesions", [])]
        reported = [les for les in reported if les["label"] in FINDINGS]
        boxes = np.asarray([les["bbox_px"] for les in reported], float).reshape(-1, 4)
        hits, _ = hit_matrix(boxes, truth.boxes[lesion_idx].reshape(-1, 4))
        features = rule.features.get(truth.key, [])
        found = []
        for k, les in enumerate(reported):
            record = dict(features[round((les["score"] - ID_BASE) / ID_STEP)])
            record.update(box=boxes[k], label=CLASSES.index(les["label"]))
            found.append(record)
        views.append({"truth": truth, "lesions": lesion_idx, "candidates": found, "hits": hits})
    return views


def score_ordering(views: list[dict], score: Callable[[dict], float]) -> dict[str, float]:
    """``ductai evaluate``'s detection metrics with the candidates scored by ``score``."""
    metrics = DetectionMetrics()
    for view in views:
        found = view["candidates"]
        truth = view["truth"]
        metrics.update(
            [
                {
                    "boxes": np.asarray([c["box"] for c in found]).reshape(-1, 4),
                    "scores": np.asarray([score(c) for c in found], float),
                    "labels": np.asarray([c["label"] for c in found], np.int64),
                }
            ],
            [{"boxes": truth.boxes, "labels": [CLASSES.index(lb) for lb in truth.labels]}],
        )
    return metrics.compute()


def ceiling(views: list[dict]) -> dict[str, str]:
    """Per class: truth lesions that some candidate hits, of all."""
    total, reached = Counter(), Counter()
    for view in views:
        for j, index in enumerate(view["lesions"]):
            label = view["truth"].labels[index]
            total[label] += 1
            reached[label] += bool(view["hits"][:, j].any())
    return {label: f"{reached[label]}/{total[label]}" for label in FINDINGS if total[label]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--sets", default="hard:12:900,default:20:901", help="PRESET:N:SEED,...")
    parser.add_argument("--out", default="outputs/bench-candidate-ranking")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for item in args.sets.split(","):
        preset, n, seed = item.split(":")
        views = record_candidates(
            args.model, preset, int(n), int(seed), Path(args.out) / f"{preset}-{seed}"
        )
        n_candidates = sum(len(v["candidates"]) for v in views)
        print(f"\n{preset} seed {seed}: {len(views)} views, {n_candidates} candidates")
        print("recall ceiling (truth lesions hit by some candidate):", ceiling(views))
        print("| ordering | CPM | sens@1FP | image AUC | mimic FP/img at 1 FP |")
        print("|---|---|---|---|---|")
        for name, rule in RULES.items():
            m = score_ordering(views, rule)
            print(
                f"| {name} | {m['cpm']:.3f} | {m['sens@1fp']:.3f} | {m['auc']:.3f} "
                f"| {m['mimic_fp_per_image']:.2f} |"
            )


if __name__ == "__main__":
    main()
