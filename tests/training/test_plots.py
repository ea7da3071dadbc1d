"""Plots write non-empty PNG files from real metric outputs."""

from __future__ import annotations

import numpy as np
import torch

from ductai.data.labels import CLASSES
from ductai.training.metrics import DetectionMetrics
from ductai.training.plots import overlay_grid, plot_froc, plot_learning_curves, plot_pr

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


def curves() -> dict:
    m = DetectionMetrics()
    rng = np.random.default_rng(0)
    for i in range(10):
        xy = rng.uniform(0, 100, (3, 2))
        boxes = np.concatenate([xy, xy + 10], axis=1)
        m.update(
            [{"boxes": boxes, "scores": rng.random(3), "labels": np.array([0, 1, 5])}],
            [{"boxes": boxes[:1] + 2, "labels": np.array([i % 5])}],
        )
    return m.curves()


def test_froc_and_pr(tmp_path):
    c = curves()
    assert is_png(plot_froc(c, tmp_path / "froc.png"))
    assert is_png(plot_pr(c, tmp_path / "sub" / "pr.png"))
    assert is_png(plot_pr({"pr": {}}, tmp_path / "empty_pr.png"))


def test_learning_curves(tmp_path):
    history = {
        "train/loss": [(i, 1 / (i + 1)) for i in range(20)],
        "val/dice_duct": [(5, 0.3), (10, 0.5), (15, 0.6)],
        "empty": [],
    }
    assert is_png(plot_learning_curves(history, tmp_path / "curves.png"))
    assert is_png(plot_learning_curves({}, tmp_path / "none.png"))


def test_overlay_grid(tmp_path):
    images = torch.rand(3, 1, 64, 64)
    seg = torch.zeros(3, 2, 64, 64)
    seg[:, 0, 30:33, 5:60] = 1
    seg[:, 1, 10:16, 10:16] = 1
    targets = [
        {"seg": seg[i], "boxes": torch.tensor([[10.0, 10, 16, 16], [40, 40, 46, 46]]),
         "labels": torch.tensor([0, CLASSES.index("air_bubble")])}
        for i in range(3)
    ]  # fmt: skip
    preds = [
        {"seg": seg[i] * 0.8, "boxes": torch.tensor([[11.0, 11, 17, 17]]),
         "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}
        for i in range(3)
    ]  # fmt: skip
    path = overlay_grid(images, preds, targets, tmp_path / "overlay.png", max_items=2)
    assert is_png(path)
    # Images without any annotation draw too.
    assert is_png(overlay_grid([np.zeros((32, 32))], [{}], [{}], tmp_path / "bare.png"))
