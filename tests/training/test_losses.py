"""Segmentation losses: finite, learnable, clDice active, label masks respected."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from ductai.training.losses import SegmentationLossConfig, build_segmentation_loss


def thin_line_batch(n: int = 2, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with a bright 2-px diagonal-ish duct and a small lesion blob, and their targets."""
    g = torch.Generator().manual_seed(0)
    img = torch.rand(n, 1, size, size, generator=g) * 0.2
    target = torch.zeros(n, 2, size, size)
    for b in range(n):
        for c in range(4, size - 4):
            r = 6 + c // 3 + b
            target[b, 0, r : r + 2, c] = 1
        target[b, 1, 20:24, 6:10] = 1
    img = img + 0.7 * target[:, :1] + 0.4 * target[:, 1:]
    return img, target


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))


@pytest.mark.parametrize("name", ["dice_ce", "dice_focal"])
@pytest.mark.parametrize("cldice_weight", [0.0, 0.5])
def test_loss_is_finite_and_falls_on_a_thin_line(name, cldice_weight):
    loss_fn = build_segmentation_loss({"name": name, "cldice_weight": cldice_weight})
    img, target = thin_line_batch()
    net = tiny_net()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = loss_fn(net(img), target)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_cldice_changes_the_gradient_of_the_duct_channel_only():
    _, target = thin_line_batch()
    logits = torch.randn_like(target, requires_grad=True)
    grads = []
    for w in (0.0, 1.0):
        loss = build_segmentation_loss({"cldice_weight": w})(logits, target)
        (g,) = torch.autograd.grad(loss, logits)
        grads.append(g)
    assert not torch.allclose(grads[0][:, 0], grads[1][:, 0])
    torch.testing.assert_close(grads[0][:, 1], grads[1][:, 1])
    assert "cldice" in build_segmentation_loss({"cldice_weight": 1.0}).cfg.model_dump_json()


def test_unlabelled_duct_images_are_left_out():
    loss_fn = build_segmentation_loss({"cldice_weight": 0.5})
    _, target = thin_line_batch()
    logits = torch.randn_like(target)
    other = target.clone()
    other[1, 0] = 0  # image 1's duct "label" changes, but image 1 has no duct label
    mask = torch.tensor([True, False])
    a = loss_fn(logits, target, label_mask=mask)
    b = loss_fn(logits, other, label_mask=mask)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(loss_fn(logits, target), loss_fn(logits, other))
    # The lesion channel of the unlabelled-duct image still counts.
    other[1, 1] = 0
    assert not torch.allclose(a, loss_fn(logits, other, label_mask=mask))


def test_no_labels_at_all_gives_zero_without_nan():
    loss_fn = build_segmentation_loss()
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    loss = loss_fn(logits, torch.zeros(2, 2, 8, 8), label_mask=torch.zeros(2, 2, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()  # still differentiable (a zero gradient)


def test_channel_weights_select_channels():
    _, target = thin_line_batch()
    logits = torch.randn_like(target)
    duct_only = build_segmentation_loss({"channel_weights": (1.0, 0.0)})
    changed = target.clone()
    changed[:, 1] = 0
    torch.testing.assert_close(duct_only(logits, target), duct_only(logits, changed))


def test_config_is_strict():
    with pytest.raises(ValidationError, match="lamda_dice"):
        SegmentationLossConfig.model_validate({"lamda_dice": 1.0})
    with pytest.raises(ValidationError):
        SegmentationLossConfig(name="softmax_ce")
    with pytest.raises(ValueError, match="channel weights"):
        build_segmentation_loss()(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
