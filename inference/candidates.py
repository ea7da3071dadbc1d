"""Lesion candidates from the segmentation net's lesion channel, labelled by the detector.

Why the lesion channel leads: on the selection sets (hard seed 900, default seed 901) the
connected components of the lesion channel found more lesions at every false-positive rate
than the detector's boxes, with or without score fusion: FROC CPM 0.46 / 0.61 against
0.30 / 0.47 for the fused boxes (model 0.3.0). The detector still names the class, marks the
mimics and adds what the channel missed.

Rule (``candidate_table``; ``CandidateTable.penalized_scores`` applies the mimic penalty):
* one candidate per 8-connected component of ``lesion >= threshold`` with at least
  ``min_area_px`` pixels; its box is the component's extent, its score the component's
  highest probability;
* its class is that of the highest-scoring detector finding that hits it (the scorer's hit
  rule: IoU >= 0.1 or the finding's centre inside the box); with none, ``FALLBACK_LABEL``,
  the commonest cause of a filling defect;
* detector findings that hit no component are kept at ``detector_weight`` times their score,
  so they rank below what both nets see;
* a candidate that a mimic box of the detector hits (air bubble, calcification) loses
  ``mimic_penalty`` times that box's score in logit: ``logit(s') = logit(s) - penalty * m``.
  A soft penalty, not a veto: the detector also calls some papillomas air bubbles. On the
  selection sets (model 0.4.0, ``benchmarks/bench_candidate_ranking.py``) a penalty of 2 took
  the mimics marked at 1 FP/image from 0.42 to 0.29 per image on hard 900 and kept CPM
  (0.507 -> 0.514 hard 900, 0.674 -> 0.677 default 901); 3 and more cost CPM on default 901.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import expit, logit

from ductai.data.labels import CLASSES
from ductai.inference.postprocess import RawDetections, box_iou_np

__all__ = [
    "FALLBACK_LABEL",
    "FEATURES",
    "CandidateTable",
    "candidate_table",
    "clipped_logit",
    "hits",
    "lesion_components",
]

FALLBACK_LABEL = "papilloma"
HIT_IOU = 0.1


def lesion_components(
    lesion: np.ndarray, threshold: float, min_area_px: int
) -> tuple[np.ndarray, np.ndarray]:
    """(boxes [N, 4] x0 y0 x1 y1, max probability [N]) of the components above ``threshold``."""
    boxes, peak, _, _ = _components(lesion, threshold, min_area_px)
    return boxes, peak


def _components(
    lesion: np.ndarray, threshold: float, min_area_px: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boxes, peak and mean probability, and area (pixels) of the components kept."""
    labels, n = ndimage.label(lesion >= threshold, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros(0)
    index = np.arange(1, n + 1)
    area = np.asarray(ndimage.sum_labels(np.ones(lesion.shape, np.int32), labels, index), float)
    # per-label maximum over the labelled pixels only (ndimage.maximum sorts the whole image)
    inside = labels > 0
    peak = np.full(n, -np.inf)
    np.maximum.at(peak, labels[inside] - 1, lesion[inside])
    mean = np.asarray(ndimage.mean(lesion, labels, index), dtype=np.float64)
    boxes = np.array(
        [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labels)],
        dtype=np.float64,
    )
    keep = area >= min_area_px
    return boxes[keep], peak[keep], mean[keep], area[keep]


def hits(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Bool [N, M]: ``others[j]`` hits ``boxes[i]`` (IoU >= 0.1 or its centre inside)."""
    if len(boxes) == 0 or len(others) == 0:
        return np.zeros((len(boxes), len(others)), bool)
    cx = (others[:, 0] + others[:, 2]) / 2
    cy = (others[:, 1] + others[:, 3]) / 2
    b = boxes[:, None, :]
    inside = (cx >= b[..., 0]) & (cx < b[..., 2]) & (cy >= b[..., 1]) & (cy < b[..., 3])
    return inside | (box_iou_np(boxes, others) >= HIT_IOU)


@dataclass
class CandidateTable:
    """Every candidate of one image before the mimic penalty, with what the rescorer reads.

    ``features`` [N, len(FEATURES)]: per candidate, whether it is a lesion-channel component
    (else a detector finding no component explains), the logit of its peak and of its mean
    lesion probability (of 0 for a detector-only one), log area in pixels, the logit of the
    best detector finding score hitting it (its own for a detector-only one), the best mimic
    box score hitting it, and the log of its box width and height in pixels. Logits, clipped
    at ``FEATURE_EPS``: the peaks of true and false components differ in how close to 1 they
    are (0.999 against 0.99999), which probabilities hide.
    """

    detections: RawDetections  # scores: the rule's (peak, or detector_weight x detector)
    features: np.ndarray
    mimic_score: np.ndarray  # best detector mimic box hitting each candidate (0 for none)

    def penalized_scores(self, penalty: float) -> np.ndarray:
        """``logit(s') = logit(s) - penalty * m`` for the candidates a mimic box hits."""
        scores = self.detections.scores
        if penalty <= 0 or not self.mimic_score.any():
            return scores
        return expit(clipped_logit(scores) - penalty * self.mimic_score)


FEATURES = (
    "component",
    "peak_logit",
    "mean_logit",
    "log_area",
    "detector_logit",
    "mimic",
    "log_width",
    "log_height",
)
FEATURE_EPS = 1e-6


def clipped_logit(p: np.ndarray) -> np.ndarray:
    """``logit(p)`` with ``p`` clipped to [FEATURE_EPS, 1 - FEATURE_EPS] (|logit| <= 13.8)."""
    return logit(np.clip(np.asarray(p, dtype=np.float64), FEATURE_EPS, 1 - FEATURE_EPS))


def candidate_table(
    findings: RawDetections,
    lesion: np.ndarray,
    threshold: float = 0.1,
    min_area_px: int = 4,
    detector_weight: float = 0.5,
    mimics: RawDetections | None = None,
) -> CandidateTable:
    """The candidates of the module docstring's rule, with their features."""
    boxes, peak, mean, area = _components(lesion, threshold, min_area_px)
    hit = hits(boxes, findings.boxes)
    labels = np.full(len(boxes), CLASSES.index(FALLBACK_LABEL), dtype=np.int64)
    detector = np.zeros(len(boxes))
    for i, row in enumerate(hit):
        if row.any():
            best = np.flatnonzero(row)[np.argmax(findings.scores[row])]
            labels[i] = findings.labels[best]
            detector[i] = findings.scores[best]
    unmatched = findings.select(~hit.any(axis=0))
    dets = RawDetections(
        np.concatenate([boxes, unmatched.boxes]).reshape(-1, 4),
        np.concatenate([peak, detector_weight * unmatched.scores]),
        np.concatenate([labels, unmatched.labels]).astype(np.int64),
    )
    mimics = mimics if mimics is not None else RawDetections.empty()
    mimic_score = np.zeros(len(dets))
    if len(dets) and len(mimics):
        hit_mimic = hits(dets.boxes, mimics.boxes)
        mimic_score = np.where(hit_mimic, mimics.scores[None, :], 0.0).max(axis=1)
    n_other = len(unmatched)
    size = np.maximum(dets.boxes[:, 2:] - dets.boxes[:, :2], 1.0)
    features = np.column_stack(
        [
            np.r_[np.ones(len(boxes)), np.zeros(n_other)],
            clipped_logit(np.r_[peak, np.zeros(n_other)]),
            clipped_logit(np.r_[mean, np.zeros(n_other)]),
            np.log(np.maximum(np.r_[area, size[len(boxes) :].prod(axis=1)], 1.0)),
            clipped_logit(np.r_[detector, unmatched.scores]),
            mimic_score,
            np.log(size[:, 0]),
            np.log(size[:, 1]),
        ]
    ).reshape(-1, len(FEATURES))
    return CandidateTable(dets, features.astype(np.float32), mimic_score)
