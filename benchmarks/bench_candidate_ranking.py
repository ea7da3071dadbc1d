"""Are lesions missed because no candidate finds them, or because candidates rank badly?

    .venv/bin/python benchmarks/bench_candidate_ranking.py [--model models/default]
        [--sets hard:12:900,default:20:901] [--out outputs/bench-candidate-ranking]

Records every first-stage candidate of each set (training/rescorer_data.py: the bundle's
nets, the candidate rule of inference/candidates.py, boxes mapped to the DICOM grid and
matched with the truth under the scorer's hit rule; cached per set under --out) and prints,
per set:

* the recall ceiling: the share of truth lesions that some candidate hits, per class;
* FROC CPM, sensitivity and mimic false positives at 1 FP/image of candidate orderings, scored
  by ``ductai evaluate``'s ``DetectionMetrics`` (the first stage's row reproduces
  ``ductai evaluate`` without a rescorer): peak probability (0.4.0), re-scorings by area and
  mean probability, the mimic penalty sweep (2 since 0.4.1), and, when the bundle has one,
  the second-stage rescorer at each blend (inference/rescoring.py).

A high ceiling with a low CPM says the ranking, not the proposal, loses the lesions. The
defaults are the selection sets, never the test seeds (777, 778).
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.special import expit

from ductai.data.labels import FINDINGS
from ductai.inference.bundle import load_bundle
from ductai.inference.candidates import FEATURES, clipped_logit
from ductai.inference.rescoring import Rescorer, blend_scores
from ductai.training.metrics.detection import hit_matrix
from ductai.training.rescorer_data import CandidateSet, score_ordering
from ductai.training.rescorer_sets import parse_sets, record_sets
from ductai.training.rescorer_train import BLENDS, _logits

F = {name: i for i, name in enumerate(FEATURES)}


def _unpenalized(c: CandidateSet) -> np.ndarray:
    """The rule's score before the mimic penalty: peak, or half the detector's score."""
    f = c.features
    peak, detector = expit(f[:, F["peak_logit"]]), expit(f[:, F["detector_logit"]])
    return np.where(f[:, F["component"]] > 0, peak, 0.5 * detector)


def _penalty(weight: float) -> Callable[[CandidateSet], np.ndarray]:
    return lambda c: expit(clipped_logit(_unpenalized(c)) - weight * c.features[:, F["mimic"]])


ORDERINGS: dict[str, Callable[[CandidateSet], np.ndarray]] = {
    "peak probability (0.4.0)": _unpenalized,
    "+ 0.5 log(area)": lambda c: expit(
        clipped_logit(_unpenalized(c))
        + 0.5 * c.features[:, F["log_area"]] * c.features[:, F["component"]]
    ),
    "+ logit(mean probability)": lambda c: expit(
        clipped_logit(_unpenalized(c))
        + c.features[:, F["mean_logit"]] * c.features[:, F["component"]]
    ),
    **{
        f"- {w:g} x mimic score{' (first stage since 0.4.1)' if w == 2 else ''}": _penalty(w)
        for w in (1.0, 2.0, 3.0, 4.0, 6.0)
    },
}


def ceiling(views: CandidateSet) -> dict[str, str]:
    """Per class: truth lesions that some candidate hits, of all."""
    total, reached = Counter(), Counter()
    for v, truth in enumerate(views.truths):
        is_finding = [label in FINDINGS for label in truth.labels]
        boxes = views.boxes[views.view == v]
        hits, _ = hit_matrix(boxes, truth.boxes[is_finding].reshape(-1, 4))
        labels = [label for label in truth.labels if label in FINDINGS]
        for j, label in enumerate(labels):
            total[label] += 1
            reached[label] += bool(hits[:, j].any())
    return {label: f"{reached[label]}/{total[label]}" for label in FINDINGS if total[label]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--sets", default="hard:12:900,default:20:901", help="PRESET:N:SEED,...")
    parser.add_argument("--out", default="outputs/bench-candidate-ranking")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sets = parse_sets(args.sets)
    bundle = load_bundle(args.model)
    rescorer = Rescorer.load(bundle.rescorer_file) if bundle.rescorer_file else None
    recorded = record_sets(args.model, sets, Path(args.out) / "sets", args.workers)
    for source, views in zip(sets, recorded):
        orderings = {name: rule(views) for name, rule in ORDERINGS.items()}
        if rescorer is not None:
            logits = _logits(rescorer.model, views)
            for blend in BLENDS:
                mark = " (shipped)" if blend == rescorer.blend else ""
                orderings[f"rescorer, blend {blend:g}{mark}"] = blend_scores(
                    views.scores, logits, blend
                )
        print(f"\n{source.label}: {len(views.truths)} views, {len(views)} candidates")
        print("recall ceiling (truth lesions hit by some candidate):", ceiling(views))
        print("| ordering | CPM | sens@1FP | image AUC | mimic FP/img at 1 FP |")
        print("|---|---|---|---|---|")
        for name, scores in orderings.items():
            m = score_ordering(views, scores)
            print(
                f"| {name} | {m['cpm']:.3f} | {m['sens@1fp']:.3f} | {m['auc']:.3f} "
                f"| {m['mimic_fp_per_image']:.2f} |"
            )


if __name__ == "__main__":
    main()
