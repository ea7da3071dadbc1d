"""Registry: every segmentation network trains on [B, 1, H, W] -> [B, 2, H, W]; clear errors."""

from __future__ import annotations

import pytest
import torch

from ductai.models.registry import available_models, create_model, model_task

SEG_MODELS = available_models("segmentation")


def test_contract_names_are_registered():
    assert {"basic_unet", "unet", "segresnet", "attention_unet"} <= set(SEG_MODELS)
    assert "retinanet" in available_models("detection")
    assert set(available_models()) == set(SEG_MODELS) | set(available_models("detection"))
    assert model_task("unet") == "segmentation"
    assert model_task("retinanet") == "detection"


@pytest.mark.parametrize("name", SEG_MODELS)
def test_segmentation_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    x = torch.rand(2, 1, 128, 128)
    y = model(x)
    assert y.shape == (2, 2, 128, 128)
    y.float().sigmoid().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_kwargs_override_defaults():
    model = create_model("basic_unet", features=(8, 8, 16, 32, 64, 8))
    small = sum(p.numel() for p in model.parameters())
    default = sum(p.numel() for p in create_model("basic_unet").parameters())
    assert small < default


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown model 'unet3000'.*basic_unet"):
        create_model("unet3000")


def test_wrong_kwarg_is_named():
    with pytest.raises(ValueError, match=r"'chanels'.*channels"):
        create_model("unet", chanels=(8, 16))
    with pytest.raises(ValueError, match="'fpn_width'"):
        create_model("retinanet", fpn_width=32)


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="task"):
        available_models("classification")
