"""Lesion detection metrics: FROC / CPM, COCO AP at IoU 0.1, image-level AUC, mimic false positives.

Boxes are ductai's ``[x0, y0, x1, y1]`` (docs/conventions.md). Predictions are dicts with
``boxes`` [N, 4], ``scores`` [N], ``labels`` [N] (indices into ``classes``); targets have
``boxes`` [M, 4] and ``labels`` [M], mimics included. Definitions:

* **Hit**: a prediction hits a target when IoU >= ``hit_iou`` (0.1) **or** the prediction's
  centre lies inside the target box (half-open, [x0, x1) x [y0, y1)). Lesions are small and
  their boxes loose, so a centre inside the lesion counts even when the box sizes differ.
* **Lesion-level FROC** over finding targets, class-agnostic: only predictions of a finding
  class take part (mimic-class predictions are suppressed at inference, never reported).
  Each prediction is assigned to the one finding target it hits with the largest IoU; a
  target's score is the highest score among its predictions (detected at threshold t when
  that score >= t); further predictions on an already hit target are neither true nor false
  positives (CAMELYON/LUNA convention). A **false positive** is a finding-class prediction
  that hits no finding target (one on a mimic is a false positive too). The curve comes from
  MONAI ``compute_froc_curve_data``.
* **Sensitivity at f FP/image** = the highest sensitivity among score thresholds whose FP
  rate is <= f (no interpolation, so every figure is a threshold one can deploy). **CPM** =
  mean over ``FP_RATES`` = 1/8 ... 8. The **1-FP operating point** is the lowest threshold
  with at most 1 FP/image; per-class sensitivity (``sens@1fp_<class>``) is the share of each
  finding class's targets detected there by a prediction of any finding class.
* **Mimic FP rate** (``mimic_fp_per_image``): false positives that hit a mimic target, per
  image, at the 1-FP operating point; ``mimic_fp_per_image@0.5`` at score >= 0.5.
* **AP at IoU 0.1** (COCO, class-aware, IoU only, as MONAI's ``COCOMetric`` with
  ``matching_batch``): ``map@0.1`` = mean AP over finding classes that have targets;
  ``ap@0.1_any`` treats all findings as one class.
* **Image-level AUC**: image score = highest finding-class score (0 without predictions);
  positive = the image has a finding target (sklearn ``roc_auc_score``; NaN if one class).

Empty sets give NaN, never an exception: no finding targets -> sensitivities NaN.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from monai.apps.detection.metrics.coco import COCOMetric
from monai.apps.detection.metrics.matching import matching_batch
from monai.data.box_utils import box_iou
from monai.metrics.froc import compute_froc_curve_data
from sklearn.metrics import roc_auc_score

from ductai.data.labels import CLASSES, FINDINGS

FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _rate_key(rate: float) -> str:
    return f"froc_sens@{rate:g}"


def _np(x: Any, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape(shape)


def hit_matrix(
    pred_boxes: np.ndarray, gt_boxes: np.ndarray, hit_iou: float = 0.1, centre_in_box: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(hits [N, M] bool, iou [N, M]) of predictions against targets under the hit rule."""
    n, m = len(pred_boxes), len(gt_boxes)
    if n == 0 or m == 0:
        return np.zeros((n, m), bool), np.zeros((n, m))
    iou = np.asarray(box_iou(pred_boxes, gt_boxes), dtype=float)
    hits = iou >= hit_iou
    if centre_in_box:
        cx = (pred_boxes[:, 0] + pred_boxes[:, 2])[:, None] / 2
        cy = (pred_boxes[:, 1] + pred_boxes[:, 3])[:, None] / 2
        g = gt_boxes[None]
        inside = (cx >= g[..., 0]) & (cx < g[..., 2]) & (cy >= g[..., 1]) & (cy < g[..., 3])
        hits |= inside
    return hits, iou


@contextmanager
def _quiet_root_logger():
    # MONAI's COCOMetric warns on the root logger for every class without targets.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


class DetectionMetrics:
    """Accumulates per-image predictions and targets; ``compute()`` gives the lesion metrics.

    Distributed use: ``states = all_gather_object(m.state()); m.reset(); m.merge(states)``.
    """

    def __init__(
        self,
        classes: Sequence[str] = CLASSES,
        findings: Sequence[str] = FINDINGS,
        hit_iou: float = 0.1,
        centre_in_box: bool = True,
        ap_iou: float = 0.1,
        fp_rates: Sequence[float] = FP_RATES,
    ) -> None:
        self.classes = tuple(classes)
        self.findings = tuple(findings)
        unknown = set(self.findings) - set(self.classes)
        if unknown:
            raise ValueError(f"findings not in classes: {sorted(unknown)}")
        self.finding_ids = np.array([self.classes.index(f) for f in self.findings])
        self.mimic_ids = np.array([i for i, c in enumerate(self.classes) if c not in self.findings])
        self.hit_iou = hit_iou
        self.centre_in_box = centre_in_box
        self.ap_iou = ap_iou
        self.fp_rates = tuple(fp_rates)
        self.records: list[dict[str, Any]] = []

    # accumulation ----------------------------------------------------------------------------

    def reset(self) -> None:
        self.records = []

    def update(
        self, preds: Sequence[dict], targets: Sequence[dict], ids: Sequence[Any] | None = None
    ) -> None:
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
        for i, (p, t) in enumerate(zip(preds, targets)):
            n_pred = len(p["scores"])
            n_gt = len(t["labels"])
            self.records.append(
                {
                    "id": ids[i] if ids is not None else len(self.records),
                    "pred_boxes": _np(p["boxes"], np.float64, (n_pred, 4)),
                    "pred_scores": _np(p["scores"], np.float64, (n_pred,)),
                    "pred_labels": _np(p["labels"], np.int64, (n_pred,)),
                    "gt_boxes": _np(t["boxes"], np.float64, (n_gt, 4)),
                    "gt_labels": _np(t["labels"], np.int64, (n_gt,)),
                }
            )

    def state(self) -> list[dict[str, Any]]:
        """The accumulated per-image records (numpy arrays): picklable, for all_gather_object."""
        return [dict(r) for r in self.records]

    def merge(self, states: Iterable[list[dict[str, Any]]]) -> None:
        """Adds the records of other states (e.g. from every rank) to this object's."""
        for st in states:
            self.records.extend(dict(r) for r in st)

    # lesion-level matching -------------------------------------------------------------------

    def _match(self) -> dict[str, np.ndarray]:
        """Per target: best score (-inf if missed) and class; per false positive: score, mimic."""
        tp_probs, tp_labels, fp_probs, fp_mimic, image_scores, image_pos = [], [], [], [], [], []
        for r in self.records:
            is_find_p = np.isin(r["pred_labels"], self.finding_ids)
            boxes, scores = r["pred_boxes"][is_find_p], r["pred_scores"][is_find_p]
            is_find_t = np.isin(r["gt_labels"], self.finding_ids)
            gt_f, gt_m = r["gt_boxes"][is_find_t], r["gt_boxes"][~is_find_t]

            hits, iou = hit_matrix(boxes, gt_f, self.hit_iou, self.centre_in_box)
            best = np.full(len(gt_f), -np.inf)
            for k in range(len(boxes)):
                if hits[k].any():
                    j = int(np.argmax(np.where(hits[k], iou[k], -1.0)))
                    best[j] = max(best[j], scores[k])
            is_fp = ~hits.any(axis=1) if len(gt_f) else np.ones(len(boxes), bool)
            mimic_hits, _ = hit_matrix(boxes[is_fp], gt_m, self.hit_iou, self.centre_in_box)

            tp_probs.append(best)
            tp_labels.append(r["gt_labels"][is_find_t])
            fp_probs.append(scores[is_fp])
            fp_mimic.append(mimic_hits.any(axis=1))
            image_scores.append(scores.max() if len(scores) else 0.0)
            image_pos.append(bool(is_find_t.any()))
        cat = np.concatenate
        return {
            "tp_probs": cat(tp_probs) if tp_probs else np.zeros(0),
            "tp_labels": cat(tp_labels).astype(np.int64) if tp_labels else np.zeros(0, np.int64),
            "fp_probs": cat(fp_probs) if fp_probs else np.zeros(0),
            "fp_mimic": cat(fp_mimic).astype(bool) if fp_mimic else np.zeros(0, bool),
            "image_scores": np.asarray(image_scores, float),
            "image_pos": np.asarray(image_pos, bool),
        }

    def _froc(self, m: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """FROC points ordered by increasing FP rate, with the score threshold of each."""
        n_images, n_targets = len(self.records), len(m["tp_probs"])
        # MONAI skips the lowest distinct score as a threshold (CAMELYON's convention, where
        # it is the 0 of missed targets): missed targets carry -inf and one -inf sentinel
        # joins the FPs, so -inf is always the skipped value and every real score is a
        # threshold.
        fp = np.append(m["fp_probs"], -np.inf)
        tp = m["tp_probs"]
        fps, sens = compute_froc_curve_data(fp, tp, max(n_targets, 1), max(n_images, 1))
        thresholds = np.append(np.unique(np.concatenate([fp, tp]))[1:], np.inf)
        if n_targets == 0:
            sens = np.full_like(sens, np.nan, dtype=float)
        order = np.argsort(-thresholds, kind="stable")  # strictest first: FP rate ascending
        return {
            "fps_per_image": fps[order],
            "sensitivity": sens[order],
            "thresholds": thresholds[order],
        }

    @staticmethod
    def _operating_point(froc: dict[str, np.ndarray], rate: float) -> tuple[float, float]:
        """(sensitivity, threshold) of the lowest threshold with FP rate <= rate."""
        ok = froc["fps_per_image"] <= rate + 1e-9
        thr = float(froc["thresholds"][ok].min())
        sens = froc["sensitivity"][ok]
        return (float(np.nanmax(sens)) if np.isfinite(sens).any() else math.nan), thr

    # AP via MONAI's COCO implementation -------------------------------------------------------

    def _coco_ap(self) -> tuple[dict[str, float], dict[str, dict[str, np.ndarray]]]:
        """AP at ``ap_iou`` per finding class and class-agnostic (``any``), and PR curves."""
        any_id = len(self.findings)  # the class-agnostic copy gets the next class index
        names = [*self.findings, "any"]
        to_local = {int(g): k for k, g in enumerate(self.finding_ids)}
        pb, pc, ps, gb, gc = [], [], [], [], []
        for r in self.records:
            keep_p = np.isin(r["pred_labels"], self.finding_ids)
            keep_t = np.isin(r["gt_labels"], self.finding_ids)
            pb.append(r["pred_boxes"][keep_p])
            ps.append(r["pred_scores"][keep_p])
            pc.append(np.array([to_local[int(c)] for c in r["pred_labels"][keep_p]], np.int64))
            gb.append(r["gt_boxes"][keep_t])
            gc.append(np.array([to_local[int(c)] for c in r["gt_labels"][keep_t]], np.int64))
        coco = COCOMetric(
            classes=names,
            iou_list=(self.ap_iou,),
            iou_range=(self.ap_iou, self.ap_iou, 0.05),
            max_detection=(1000,),
            verbose=False,
        )

        def match(pred_classes: list[np.ndarray], gt_classes: list[np.ndarray]) -> list[dict]:
            return matching_batch(
                iou_fn=box_iou,
                iou_thresholds=coco.iou_thresholds,
                pred_boxes=pb,
                pred_classes=pred_classes,
                pred_scores=ps,
                gt_boxes=gb,
                gt_classes=gt_classes,
                max_detections=1000,
            )

        by_class = match(pc, gc)
        agnostic = match(
            [np.full_like(c, any_id) for c in pc], [np.full_like(c, any_id) for c in gc]
        )
        combined = [{**a, **b} for a, b in zip(by_class, agnostic)]
        with _quiet_root_logger():
            stats, _ = coco(combined)
        ap: dict[str, float] = {}
        pr: dict[str, dict[str, np.ndarray]] = {}
        for k, name in enumerate(names):
            value = stats[f"{name}_AP_IoU_{self.ap_iou:.2f}_MaxDet_1000"]
            ap[name] = float(value) if value >= 0 else math.nan  # -1: no targets of the class
            curve = _pr_curve([r[k] for r in combined if k in r])
            if curve is not None:
                pr[name] = curve
        return ap, pr

    # results ---------------------------------------------------------------------------------

    def compute(self) -> dict[str, float]:
        m = self._match()
        froc = self._froc(m)
        out: dict[str, float] = {"n_images": float(len(self.records))}
        sens_at = []
        for rate in self.fp_rates:
            s, _ = self._operating_point(froc, rate)
            out[_rate_key(rate)] = s
            sens_at.append(s)
        out["cpm"] = float(np.mean(sens_at)) if np.isfinite(sens_at).all() else math.nan
        out["sens@1fp"], thr = self._operating_point(froc, 1.0)
        out["threshold@1fp"] = thr
        for k, name in enumerate(self.findings):
            of_class = m["tp_labels"] == self.finding_ids[k]
            out[f"sens@1fp_{name}"] = (
                float((m["tp_probs"][of_class] >= thr).mean()) if of_class.any() else math.nan
            )
        n = max(len(self.records), 1)
        on_mimic = m["fp_mimic"]
        out["mimic_fp_per_image"] = float((on_mimic & (m["fp_probs"] >= thr)).sum() / n)
        out["mimic_fp_per_image@0.5"] = float((on_mimic & (m["fp_probs"] >= 0.5)).sum() / n)
        ap, _ = self._coco_ap()
        finite = [v for k, v in ap.items() if k != "any" and np.isfinite(v)]
        out["map@0.1"] = float(np.mean(finite)) if finite else math.nan
        out["ap@0.1_any"] = ap["any"]
        for name in self.findings:
            out[f"ap@0.1_{name}"] = ap[name]
        pos = m["image_pos"]
        out["auc"] = (
            float(roc_auc_score(pos, m["image_scores"])) if 0 < pos.sum() < len(pos) else math.nan
        )
        return out

    def curves(self) -> dict[str, Any]:
        """FROC points and PR curves (per finding class and ``any``) for plotting."""
        m = self._match()
        froc = self._froc(m)
        froc["rates"] = np.asarray(self.fp_rates)
        froc["sens_at_rates"] = np.array([self._operating_point(froc, r)[0] for r in self.fp_rates])
        ap, pr = self._coco_ap()
        for name, curve in pr.items():
            curve["ap"] = ap[name]
        return {"froc": froc, "pr": pr}


def _pr_curve(matches: list[dict[str, np.ndarray]]) -> dict[str, Any] | None:
    """Precision-recall over all images of one class from ``matching_batch`` results."""
    if not matches:
        return None
    n_gt = int(sum(np.count_nonzero(r["gtIgnore"] == 0) for r in matches))
    if n_gt == 0:
        return None
    scores = np.concatenate([r["dtScores"] for r in matches])
    tp = np.concatenate([r["dtMatches"][0] for r in matches]).astype(bool)
    order = np.argsort(-scores, kind="mergesort")
    tp_cum = np.cumsum(tp[order])
    fp_cum = np.cumsum(~tp[order])
    return {
        "recall": tp_cum / n_gt,
        "precision": tp_cum / np.maximum(tp_cum + fp_cum, 1),
        "scores": scores[order],
    }
