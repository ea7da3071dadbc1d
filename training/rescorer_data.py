"""Candidates of simulated views, with what the rescorer reads and whether each is a lesion.

Runs a bundle's first stage (both nets, the candidate rule, the mimic penalty) on every view
of a simulated set, exactly as ``Predictor.predict`` does up to the scores, and keeps per
candidate: its patches (inference/rescoring.py), features (candidates.FEATURES), first-stage
score, class, box on the DICOM grid, and label: 1 when it hits a truth finding under the
scorer's hit rule (training/metrics/detection.py ``hit_matrix``), matched on the DICOM grid as
``ductai evaluate`` matches reports. The views' truth stays with the set, so an ordering of
these candidates can be scored with ``DetectionMetrics`` like ``ductai evaluate`` scores reports.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ductai.data.canonical import to_canonical
from ductai.data.datalist import DatalistEntry, datalist_from_simulation
from ductai.data.dicom_reader import read_galactogram
from ductai.data.labels import CLASSES, FINDINGS
from ductai.inference.predictor import Predictor
from ductai.inference.rescoring import candidate_patches
from ductai.training.inference_scoring import ViewTruth, truth_from_datalist_entry
from ductai.training.metrics.detection import DetectionMetrics, hit_matrix

__all__ = ["CandidateSet", "record_candidates", "score_ordering"]

log = logging.getLogger(__name__)


@dataclass
class CandidateSet:
    """Candidates of a set of views, one row each; ``view`` indexes ``truths``."""

    patches: np.ndarray  # [N, C, P, P] float16
    features: np.ndarray  # [N, F] float32
    scores: np.ndarray  # [N] first-stage score (mimic penalty applied)
    labels: np.ndarray  # [N] class index (CLASSES)
    boxes: np.ndarray  # [N, 4] DICOM pixels
    target: np.ndarray  # [N] 1 = hits a truth finding
    view: np.ndarray  # [N]
    truths: list[ViewTruth]

    def __len__(self) -> int:
        return len(self.target)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            **{k: getattr(self, k) for k in _ARRAYS},
            truths=json.dumps([_truth_to_json(t) for t in self.truths]),
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> CandidateSet:
        with np.load(path) as data:
            arrays = {k: data[k] for k in _ARRAYS}
            truths = [_truth_from_json(t) for t in json.loads(str(data["truths"]))]
        return cls(**arrays, truths=truths)

    @classmethod
    def concatenate(cls, sets: list[CandidateSet]) -> CandidateSet:
        offsets = np.cumsum([0] + [len(s.truths) for s in sets])
        return cls(
            **{k: np.concatenate([getattr(s, k) for s in sets]) for k in _ARRAYS if k != "view"},
            view=np.concatenate([s.view + o for s, o in zip(sets, offsets)]),
            truths=[t for s in sets for t in s.truths],
        )


_ARRAYS = ("patches", "features", "scores", "labels", "boxes", "target", "view")


def record_candidates(predictor: Predictor, views: Path | list[DatalistEntry]) -> CandidateSet:
    """Every first-stage candidate of ``views``: datalist entries with boxes, or the folder
    of a ``ductai simulate`` run."""
    if not predictor.uses_candidates:
        raise ValueError(
            "the rescorer needs a bundle with both nets and lesion_source segmentation"
        )
    rows: dict[str, list] = {k: [] for k in _ARRAYS}
    truths = []
    entries = datalist_from_simulation(views) if isinstance(views, Path) else views
    for index, entry in enumerate(entries):
        truth = truth_from_datalist_entry(entry)
        found = _view_candidates(predictor, entry.image)
        is_finding = np.array([label in FINDINGS for label in truth.labels], bool)
        hits, _ = hit_matrix(found["boxes"], truth.boxes[is_finding].reshape(-1, 4))
        found["target"] = hits.any(axis=1).astype(np.uint8)
        found["view"] = np.full(len(found["target"]), index, np.int32)
        for k in _ARRAYS:
            rows[k].append(found[k])
        truths.append(truth)
    return CandidateSet(**{k: np.concatenate(v) for k, v in rows.items()}, truths=truths)


def _view_candidates(predictor: Predictor, path: Path) -> dict[str, np.ndarray]:
    """``Predictor.predict`` up to the first stage's scores, with the rescorer's inputs."""
    canonical, geometry = to_canonical(read_galactogram(path), predictor.spacing_mm)
    crop = predictor.crop(canonical)
    pixels, probs, raw = predictor.run_nets(canonical, crop)
    table = predictor.candidate_table(*predictor.findings_and_mimics(raw), probs[1])
    dets = predictor.score_candidates(table, pixels, probs, rescore=False)
    maps = np.stack([pixels, probs[1], probs[0]])
    return {
        "patches": candidate_patches(maps, dets.boxes).astype(np.float16),
        "features": table.features,
        "scores": dets.scores,
        "labels": dets.labels,
        "boxes": geometry.boxes_to_original(crop.boxes_to_full(dets.boxes)).reshape(-1, 4),
    }


def score_ordering(
    candidates: CandidateSet, scores: np.ndarray, threshold: float = 0.05
) -> dict[str, float]:
    """``ductai evaluate``'s detection metrics of the candidates scored ``scores``, those
    below ``threshold`` dropped as the scoring run of ``ductai evaluate`` drops them."""
    metrics = DetectionMetrics()
    for v, truth in enumerate(candidates.truths):
        keep = (candidates.view == v) & (scores >= threshold)
        metrics.update(
            [
                {
                    "boxes": candidates.boxes[keep],
                    "scores": scores[keep],
                    "labels": candidates.labels[keep],
                }
            ],
            [{"boxes": truth.boxes, "labels": [CLASSES.index(lb) for lb in truth.labels]}],
        )
    return metrics.compute()


def _truth_to_json(truth: ViewTruth) -> dict:
    return {
        "key": truth.key,
        "breast": truth.breast,
        "laterality": truth.laterality,
        "boxes": truth.boxes.tolist(),
        "labels": truth.labels,
    }


def _truth_from_json(data: dict) -> ViewTruth:
    return ViewTruth(
        key=data["key"],
        breast=data["breast"],
        laterality=data["laterality"],
        boxes=np.asarray(data["boxes"], float).reshape(-1, 4),
        labels=list(data["labels"]),
    )
