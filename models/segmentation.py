"""Segmentation networks (MONAI), registered by name.

Every network maps [B, 1, H, W] -> logits [B, 2, H, W] (channel 0 duct lumen, channel 1
lesion; sigmoid, multi-label). Defaults are small enough to train on a CPU: ducts are thin, so
the full-resolution level keeps 16 channels and depth carries the capacity; configs override
any constructor argument by name.
"""

from __future__ import annotations

from monai.networks.nets import AttentionUnet, BasicUNet, FlexibleUNet, SegResNet, UNet
from torch import nn

from ductai.models.registry import register_model

# spatial_dims, in/out channels are the ductai contract; overridable for experiments.
_IO = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2}


@register_model("basic_unet", task="segmentation", target=BasicUNet)
def basic_unet(**kwargs) -> BasicUNet:
    defaults = {**_IO, "features": (16, 32, 64, 128, 256, 16)}
    return BasicUNet(**{**defaults, **kwargs})


@register_model("unet", task="segmentation", target=UNet)
def unet(**kwargs) -> UNet:
    defaults = {
        **_IO,
        "channels": (16, 32, 64, 128, 256),
        "strides": (2, 2, 2, 2),
        "num_res_units": 2,
        "norm": "batch",
    }
    return UNet(**{**defaults, **kwargs})


@register_model("segresnet", task="segmentation", target=SegResNet)
def segresnet(**kwargs) -> SegResNet:
    defaults = {**_IO, "init_filters": 16, "blocks_down": (1, 2, 2, 4), "blocks_up": (1, 1, 1)}
    return SegResNet(**{**defaults, **kwargs})


@register_model("attention_unet", task="segmentation", target=AttentionUnet)
def attention_unet(**kwargs) -> AttentionUnet:
    defaults = {**_IO, "channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2)}
    return AttentionUnet(**{**defaults, **kwargs})


@register_model("flexible_unet", task="segmentation", target=FlexibleUNet)
def flexible_unet(**kwargs) -> FlexibleUNet:
    # pretrained weights download at run time (and fail offline): never by default.
    defaults = {
        **_IO,
        "backbone": "efficientnet-b0",
        "pretrained": False,
        "decoder_channels": (128, 64, 32, 16, 16),
    }
    model = FlexibleUNet(**{**defaults, **kwargs})
    # The EfficientNet classifier head (conv, norm, fc) is built but never run by the U-Net:
    # drop it so every parameter gets a gradient (DDP without find_unused_parameters).
    for name in ("_conv_head", "_bn1", "_fc"):
        if isinstance(getattr(model.encoder, name, None), nn.Module):
            setattr(model.encoder, name, nn.Identity())
    return model
