"""LesionDetector: box convention at the boundary, a real learning signal, no torchvision."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from monai.apps.detection.transforms.box_ops import convert_mask_to_box

from ductai.models.detection import LesionDetector, from_monai_boxes, naive_detector, to_monai_boxes
from ductai.models.registry import create_model

# A bright disc (a lesion) at rows 90..111, columns 150..171 of a 256 x 256 image.
ROW0, COL0, DIAM = 90, 150, 22
BLOB_BOX = torch.tensor([[COL0, ROW0, COL0 + DIAM, ROW0 + DIAM]], dtype=torch.float32)


def _blob_image(size: int = 256, row0: int = ROW0, col0: int = COL0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    image = 0.25 + 0.05 * torch.randn(1, 1, size, size, generator=g)
    rr, cc = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = (DIAM - 1) / 2
    disc = (rr - (row0 + r)) ** 2 + (cc - (col0 + r)) ** 2 <= r**2
    image[0, 0][disc] = 0.9
    return image.clamp(0, 1)


def _is_torchvision(name: str) -> bool:
    return name == "torchvision" or name.startswith("torchvision.")


def _lands_on(box: torch.Tensor, truth: torch.Tensor, min_iou: float) -> bool:
    """Centre inside the true box (the metrics' hit rule) and some overlap."""
    cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
    inside = truth[0] <= cx <= truth[2] and truth[1] <= cy <= truth[3]
    return bool(inside) and _iou(box, truth) >= min_iou


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    lt = torch.maximum(a[:2], b[:2])
    rb = torch.minimum(a[2:], b[2:])
    inter = (rb - lt).clamp(min=0).prod()
    area = (a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter
    return float(inter / area)


def test_box_conversion_follows_the_blob():
    # A rectangle (taller than wide, off the diagonal) so a swapped axis cannot pass.
    mask = torch.zeros(1, 64, 96, dtype=torch.int32)
    mask[0, 10:30, 50:56] = 1  # rows 10..29, columns 50..55
    monai_box = torch.as_tensor(convert_mask_to_box(mask, bg_label=0)[0], dtype=torch.float32)
    expected = torch.tensor([[50.0, 10.0, 56.0, 30.0]])  # ductai: [c0, r0, c1 + 1, r1 + 1]
    torch.testing.assert_close(from_monai_boxes(monai_box), expected)
    torch.testing.assert_close(to_monai_boxes(expected), monai_box)
    torch.testing.assert_close(from_monai_boxes(to_monai_boxes(expected)), expected)


@pytest.fixture(scope="module")
def trained():
    """A small detector overfitted to one image with one bright blob (label 0, papilloma)."""
    torch.manual_seed(0)
    model = create_model("retinanet").train()
    images = torch.cat([_blob_image(seed=0), _blob_image(seed=1)])
    targets = [{"boxes": BLOB_BOX.clone(), "labels": torch.tensor([0])} for _ in range(2)]
    steps = 25
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    # A decaying rate settles the box regression (a constant one hops between anchors).
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.2)
    history = []
    for _ in range(steps):
        losses = model(images, targets)
        loss = losses["classification"] + losses["box_regression"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    return model.eval(), history


def test_training_losses_are_finite_and_fall(trained):
    _, history = trained
    assert set(history[0]) == {"classification", "box_regression"}
    totals = [h["classification"] + h["box_regression"] for h in history]
    assert all(torch.isfinite(torch.tensor(totals)))
    first, last = sum(totals[:3]) / 3, sum(totals[-5:]) / 5
    assert last < 0.5 * first, totals


def test_eval_boxes_land_on_the_blob_in_ductai_convention(trained):
    model, _ = trained
    with torch.no_grad():
        (out,) = model(_blob_image(seed=2))
    assert set(out) == {"boxes", "scores", "labels"}
    best = out["scores"].argmax()
    assert out["labels"][best] == 0
    # The blob is off the diagonal (rows 90.., columns 150..): swapped axes cannot pass.
    assert _lands_on(out["boxes"][best], BLOB_BOX[0], min_iou=0.5), out["boxes"][best]


def test_sliding_window_on_a_larger_image(trained):
    model, _ = trained
    # 384 x 320 > a 192 x 192 window: MONAI's sliding-window inferer runs; the blob moves to
    # rows 218.., columns 190.. (inside one window, as the overlap of 0.5 guarantees for a
    # lesion smaller than half a window).
    big = torch.full((1, 1, 384, 320), 0.25)
    big[..., 200:256, 40:296] = _blob_image(seed=3)[..., ROW0 - 18 : ROW0 + 38, 0:256]
    expected = torch.tensor([COL0 + 40, 200 + 18, COL0 + 40 + DIAM, 200 + 18 + DIAM]).float()
    model.set_sliding_window((192, 192), overlap=0.5)
    try:
        assert model._needs_sliding_window(big)
        with torch.no_grad():
            (out,) = model(big)
    finally:
        model.set_sliding_window((1024, 1024))
    best = out["scores"].argmax()
    assert _lands_on(out["boxes"][best], expected, min_iou=0.3), (out["boxes"][:3], expected)


def test_no_torchvision_was_imported(trained):
    assert not [m for m in sys.modules if _is_torchvision(m)]


def test_background_only_crop_trains():
    model = LesionDetector(block_inplanes=(8, 16, 16), fpn_channels=16).train()
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model(torch.rand(1, 1, 64, 64), targets)
    assert torch.isfinite(losses["classification"])
    assert float(losses["box_regression"].detach()) == 0.0
    # Every parameter still gets a (zero) gradient: DDP needs no find_unused_parameters.
    (losses["classification"] + losses["box_regression"]).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_anchor_levels_must_match_pyramid():
    with pytest.raises(ValueError, match="one tuple per pyramid level"):
        LesionDetector(anchor_sizes_mm=((2.0, 3.0),))


def test_naive_detector_is_the_tutorial_setup():
    model = naive_detector()
    assert model.strides == [4, 8, 16, 32]
    assert model.network.feature_extractor.out_channels == 256
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 26.0, 30.0]]), "labels": torch.tensor([1])}]
    losses = model.train()(torch.rand(1, 1, 64, 64), targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_builds_and_trains_with_torchvision_blocked():
    # A fresh interpreter where importing torchvision fails, as beside a CPU torch wheel.
    code = textwrap.dedent(
        """
        import sys
        import importlib.abc

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torchvision" or name.startswith("torchvision."):
                    raise ImportError("torchvision blocked by test")
                return None

        sys.meta_path.insert(0, Block())
        import torch
        from ductai.models.registry import create_model

        model = create_model("retinanet", block_inplanes=(8, 16, 16), fpn_channels=16)
        targets = [{"boxes": torch.tensor([[10.0, 12.0, 26.0, 30.0]]), "labels": torch.tensor([1])}]
        losses = model.train()(torch.rand(1, 1, 64, 64), targets)
        sum(losses.values()).backward()
        model.eval()(torch.rand(1, 1, 64, 64))
        assert not [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
