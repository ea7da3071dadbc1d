"""Training plots written as PNG files: FROC, precision-recall, learning curves, overlays.

Figures are built with ``matplotlib.figure.Figure`` (Agg canvas) and never through pyplot, so
nothing opens a window, no global backend is switched and no figure leaks between calls.
Colours: truth green, prediction orange/red; mimic truths blue (dashed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ductai.data.labels import CLASSES, FINDINGS

TRUTH, PRED, MIMIC = "#2ca02c", "#ff7f0e", "#1f77b4"


def _save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x)


def plot_froc(curves: Mapping[str, Any], path: str | Path) -> Path:
    """FROC curve (``DetectionMetrics.curves()`` or its ``"froc"`` part), log FP axis."""
    froc = curves.get("froc", curves)
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    fps, sens = _np(froc["fps_per_image"]), _np(froc["sensitivity"])
    # Draw what the metrics report: the best sensitivity at an FP rate <= x, from the left
    # edge of the log axis (where 0 FP cannot be shown) to the right edge.
    lo, hi = 1 / 16, 16
    xs = np.concatenate([[lo], np.unique(fps[(fps > lo) & (fps < hi)]), [hi]])
    ys = [np.nanmax(sens[fps <= x], initial=0.0) for x in xs]
    ax.step(xs, ys, where="post", color=PRED, label="FROC")
    rates, at = _np(froc.get("rates", [])), _np(froc.get("sens_at_rates", []))
    if len(rates) and np.isfinite(at).any():  # no lesion targets: no CPM to show
        ax.plot(rates, at, "o", color="k", label=f"CPM {np.nanmean(at):.3f}")
    ax.set_xscale("log", base=2)
    ax.set_xlim(lo, hi)
    ticks = [0.125, 0.25, 0.5, 1, 2, 4, 8]
    ax.set_xticks(ticks, ["1/8", "1/4", "1/2", "1", "2", "4", "8"])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("lesion sensitivity")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best")
    return _save(fig, path)


def plot_pr(curves: Mapping[str, Any], path: str | Path) -> Path:
    """Precision-recall per finding class (and ``any``) from ``DetectionMetrics.curves()``."""
    pr = curves.get("pr", curves)
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    for name, c in pr.items():
        ap = c.get("ap", math.nan)
        style = {"color": "k", "linewidth": 2} if name == "any" else {}
        ax.plot(_np(c["recall"]), _np(c["precision"]), label=f"{name} AP {ap:.3f}", **style)
    if not pr:
        ax.text(0.5, 0.5, "no finding targets", ha="center", va="center")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(True, alpha=0.3)
    if pr:
        ax.legend(loc="lower left", fontsize="small")
    return _save(fig, path)


def plot_learning_curves(
    history: Mapping[str, Sequence[tuple[float, float]]], path: str | Path
) -> Path:
    """One panel per series: ``history[name] = [(step, value), ...]``."""
    names = [k for k, v in history.items() if len(v)]
    cols = min(3, max(len(names), 1))
    rows = max(math.ceil(len(names) / cols), 1)
    fig = Figure(figsize=(4 * cols, 3 * rows))
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        steps, values = zip(*history[name])
        ax.plot(steps, values, marker="." if len(steps) < 50 else None)
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    if not names:
        fig.add_subplot().text(0.5, 0.5, "no history yet", ha="center", va="center")
    fig.tight_layout()
    return _save(fig, path)


def overlay_grid(
    images: Sequence[Any] | torch.Tensor,
    preds: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    path: str | Path,
    max_items: int = 8,
    score_threshold: float = 0.3,
    classes: Sequence[str] = CLASSES,
) -> Path:
    """Canonical images with truth and prediction drawn on top, one panel each.

    ``images[i]``: [1, H, W] or [H, W]. ``preds[i]`` / ``targets[i]`` may hold ``seg``
    ([2, H, W]: duct, lesion; probabilities for predictions) and ``boxes`` / ``labels``
    (plus ``scores`` for predictions, drawn when >= ``score_threshold``). Duct contours:
    truth green, prediction orange; the predicted lesion channel is a heat map.
    """
    n = min(len(images), max_items)
    cols = min(4, max(n, 1))
    rows = max(math.ceil(n / cols), 1)
    fig = Figure(figsize=(5 * cols, 5 * rows))
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        img = _np(images[i]).squeeze()
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        _draw_seg(ax, preds[i].get("seg"), targets[i].get("seg"))
        _draw_boxes(ax, targets[i], classes, truth=True)
        _draw_boxes(ax, preds[i], classes, truth=False, score_threshold=score_threshold)
        ax.set_axis_off()
    fig.suptitle(
        "truth: green (mimics blue, dashed)   prediction: orange (mimic classes red, dotted)",
        fontsize="small",
    )
    return _save(fig, path, dpi=150)


def _draw_seg(ax: Any, pred: Any, truth: Any) -> None:
    if truth is not None:  # truth first and wider, so the prediction stays visible on top
        truth = _np(truth)
        if truth[0].max() > 0:
            ax.contour(truth[0], levels=[0.5], colors=TRUTH, linewidths=1.5)
    if pred is not None:
        pred = _np(pred)
        if pred.shape[0] > 1:
            heat = np.ma.masked_less(pred[1], 0.05)  # transparent where there is no lesion
            ax.imshow(heat, cmap="hot", alpha=0.5, vmin=0, vmax=1)
        if pred[0].max() >= 0.5:
            ax.contour(pred[0], levels=[0.5], colors=PRED, linewidths=0.6)


def _draw_boxes(
    ax: Any,
    d: Mapping[str, Any],
    classes: Sequence[str],
    truth: bool,
    score_threshold: float = 0.0,
) -> None:
    if "boxes" not in d:
        return
    boxes, labels = _np(d["boxes"]).reshape(-1, 4), _np(d.get("labels", [])).astype(int)
    scores = _np(d["scores"]) if "scores" in d else np.ones(len(boxes))
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        name = classes[labels[k]] if k < len(labels) and labels[k] < len(classes) else "?"
        if not truth and scores[k] < score_threshold:
            continue
        is_finding = name in FINDINGS
        if truth:
            colour, style = (TRUTH, "-") if is_finding else (MIMIC, "--")
        else:
            colour, style = (PRED, "-") if is_finding else ("#d62728", ":")
        # Continuous pixel coordinates: pixel (r, c) spans [c, c+1); imshow centres it at c.
        ax.add_patch(
            Rectangle(
                (x0 - 0.5, y0 - 0.5),
                x1 - x0,
                y1 - y0,
                fill=False,
                edgecolor=colour,
                linestyle=style,
                linewidth=1,
            )
        )
        text = name if truth else f"{name} {scores[k]:.2f}"
        ax.text(x0 - 0.5, y0 - 1.5, text, color=colour, fontsize=6, va="bottom")
