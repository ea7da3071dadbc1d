"""Detections after the networks: flip TTA merge, NMS across classes, mimics, score fusion, heatmap.

Boxes here are ductai ``[x0, y0, x1, y1]`` (x = column) in one image grid; MONAI's box
utilities are axis-order agnostic for IoU and NMS, so they take these boxes as they are.

Fusion rule (``fuse_scores``, used when ``PredictorOptions.lesion_source`` is "detector";
the default takes findings from the lesion channel, inference/candidates.py): a finding's score is
``(1 - w) * detector score + w * max(lesion heatmap inside its box)``, with ``w`` =
``fusion_weight`` (0.5 by default). Both are calibrated-ish probabilities in [0, 1], so the
result is too; a box the segmentation net also sees as lesion keeps its score, a box on a
plain duct loses up to half of it. Mimic boxes are never fused (the lesion channel is trained
on findings only, so fusing would only lower their scores and let findings win NMS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.data.box_utils import batched_nms, box_iou, non_max_suppression

from ductai.data.labels import CLASSES, FINDINGS


@dataclass
class RawDetections:
    """Detector output of one image as numpy: boxes [N, 4] xyxy, scores [N], labels [N]."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @classmethod
    def empty(cls) -> RawDetections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))

    @classmethod
    def from_torch(cls, det: dict[str, torch.Tensor]) -> RawDetections:
        return cls(
            det["boxes"].detach().float().cpu().numpy().astype(np.float64).reshape(-1, 4),
            det["scores"].detach().float().cpu().numpy().astype(np.float64).reshape(-1),
            det["labels"].detach().cpu().numpy().astype(np.int64).reshape(-1),
        )

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, index) -> RawDetections:
        return RawDetections(self.boxes[index], self.scores[index], self.labels[index])

    def centred_in(self, mask: np.ndarray) -> RawDetections:
        """The boxes whose centre pixel lies in ``mask`` (bool, the boxes' grid)."""
        if not len(self):
            return self
        h, w = mask.shape
        cols = np.clip(((self.boxes[:, 0] + self.boxes[:, 2]) / 2).astype(int), 0, w - 1)
        rows = np.clip(((self.boxes[:, 1] + self.boxes[:, 3]) / 2).astype(int), 0, h - 1)
        return self.select(mask[rows, cols])


def flip_rows_boxes(boxes: np.ndarray, height: int) -> np.ndarray:
    """Boxes found on an image flipped upside down, in the unflipped image: y -> H - y."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    y0 = height - boxes[:, 3]
    y1 = height - boxes[:, 1]
    boxes[:, 1], boxes[:, 3] = y0, y1
    return boxes


def merge_tta(passes: list[RawDetections], iou: float = 0.5) -> RawDetections:
    """Pool the passes' detections (same grid), keep one box per object, average its score.

    Same-class NMS over the pooled boxes picks the representatives; each one's score becomes
    the mean over the passes of that pass's best same-class score at IoU >= ``iou`` (0 for
    a pass that missed it), so a box seen by one pass of two keeps half its score.
    """
    if len(passes) == 1:
        return passes[0]
    pooled = RawDetections(
        np.concatenate([p.boxes for p in passes]),
        np.concatenate([p.scores for p in passes]),
        np.concatenate([p.labels for p in passes]),
    )
    if len(pooled) == 0:
        return pooled
    keep = _nms(pooled, iou, per_class=True)
    kept = pooled.select(keep)
    scores = np.zeros(len(kept))
    for p in passes:
        if len(p) == 0:
            continue
        overlap = box_iou_np(kept.boxes, p.boxes)
        overlap[kept.labels[:, None] != p.labels[None, :]] = 0.0
        best = np.where(overlap >= iou, p.scores[None, :], 0.0).max(axis=1)
        scores += best
    kept.scores = scores / len(passes)
    return kept


def nms_across_classes(dets: RawDetections, iou: float) -> RawDetections:
    """One box per place whatever its class: a mimic that outscores a finding suppresses it."""
    if len(dets) == 0:
        return dets
    return dets.select(_nms(dets, iou, per_class=False))


def split_mimics(dets: RawDetections) -> tuple[RawDetections, RawDetections]:
    """(findings, mimics): labels index ``CLASSES``; the mimics follow the findings."""
    is_finding = dets.labels < len(FINDINGS)
    return dets.select(is_finding), dets.select(~is_finding)


def box_max(heatmap: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Max of ``heatmap`` over the pixels each box touches (0 for a box outside the image)."""
    h, w = heatmap.shape
    out = np.zeros(len(boxes))
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes).reshape(-1, 4)):
        c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        c1, r1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
        if c1 > c0 and r1 > r0:
            out[i] = float(heatmap[r0:r1, c0:c1].max())
    return out


def fuse_scores(
    scores: np.ndarray, boxes: np.ndarray, lesion_map: np.ndarray | None, weight: float
) -> np.ndarray:
    """Final finding scores (module docstring); the detector's alone without a lesion map."""
    scores = np.asarray(scores, dtype=np.float64)
    if lesion_map is None or weight == 0 or len(scores) == 0:
        return scores
    return (1.0 - weight) * scores + weight * box_max(lesion_map, boxes)


def detection_heatmap(
    shape: tuple[int, int], boxes: np.ndarray, scores: np.ndarray, sigma_fraction: float = 0.25
) -> np.ndarray:
    """Max over boxes of a Gaussian at the box centre, sigma a quarter of its width/height
    (about e^-2 of the peak at the box edge), peak = the box's score."""
    out = np.zeros(shape, dtype=np.float32)
    for (x0, y0, x1, y1), score in zip(np.asarray(boxes).reshape(-1, 4), scores):
        sx = max(0.5, (x1 - x0) * sigma_fraction)
        sy = max(0.5, (y1 - y0) * sigma_fraction)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        # Only a +-3 sigma window: the rest is below 1 % of the peak.
        c0, c1 = max(0, int(cx - 3 * sx)), min(shape[1], int(np.ceil(cx + 3 * sx)))
        r0, r1 = max(0, int(cy - 3 * sy)), min(shape[0], int(np.ceil(cy + 3 * sy)))
        if c1 <= c0 or r1 <= r0:
            continue
        xs = (np.arange(c0, c1) + 0.5 - cx) / sx  # pixel centres (docs/conventions.md)
        ys = (np.arange(r0, r1) + 0.5 - cy) / sy
        g = float(score) * np.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2))
        np.maximum(out[r0:r1, c0:c1], g.astype(np.float32), out=out[r0:r1, c0:c1])
    return out


def label_name(index: int) -> str:
    return CLASSES[int(index)]


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(box_iou(torch.as_tensor(a), torch.as_tensor(b)), dtype=np.float64)


def _nms(dets: RawDetections, iou: float, per_class: bool) -> np.ndarray:
    """Indices kept, highest score first (MONAI's NMS; ``batched_nms`` offsets each class)."""
    boxes = torch.as_tensor(dets.boxes, dtype=torch.float32)
    scores = torch.as_tensor(dets.scores, dtype=torch.float32)
    if per_class:
        keep = batched_nms(boxes, scores, torch.as_tensor(dets.labels), nms_thresh=iou)
    else:
        keep = non_max_suppression(boxes, scores, nms_thresh=iou)
    return np.asarray(keep, dtype=np.int64).reshape(-1)
