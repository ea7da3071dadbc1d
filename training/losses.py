"""Segmentation losses: MONAI Dice+CE / Dice+focal per channel, optional clDice on the ducts.

The network gives logits [B, 2, H, W]: channel 0 duct lumen, channel 1 lesion (docs/
training-design.md). Both channels are independent (sigmoid, multi-label), so the loss is a
weighted mean of one MONAI loss per channel. Doing it per channel, rather than handing MONAI
both channels at once, lets a batch leave out the images that have no label for a channel
(``label_mask``): real data sets often annotate lesion boxes but not the duct lumen, and an
unlabelled duct must not be taught as "no duct".
"""

from __future__ import annotations

from typing import Literal

import torch
from monai.losses import DiceCELoss, DiceFocalLoss, SoftclDiceLoss
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

DUCT, LESION = 0, 1


class SegmentationLossConfig(BaseModel):
    """Loss settings (a section of the training config)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["dice_ce", "dice_focal"] = "dice_ce"
    lambda_dice: float = Field(1.0, ge=0)
    # Weight of the voxel-wise term: binary cross-entropy for dice_ce, focal loss for dice_focal.
    lambda_ce: float = Field(1.0, ge=0)
    focal_gamma: float = Field(2.0, ge=0)
    # Per-channel weights (duct, lesion) of the weighted mean over channels.
    channel_weights: tuple[float, float] = (1.0, 1.0)
    # Dice over the whole batch (nnU-Net style): most lesion-channel crops are empty, and a
    # per-image Dice on an empty target is a noisy all-or-nothing term.
    batch_dice: bool = True
    # clDice (Shit et al. 2021) on the duct channel, added as cldice_weight * clDice; 0 = off.
    cldice_weight: float = Field(0.0, ge=0)
    # Soft-skeleton iterations: must reach the largest duct radius in pixels at the
    # training spacing (a 3 mm ampulla at 0.2 mm/px is a radius of about 8 px).
    cldice_iters: int = Field(10, ge=1, le=50)


class SegmentationLoss(nn.Module):
    """Weighted per-channel Dice+CE (or Dice+focal) plus optional clDice on the duct channel.

    ``forward(logits [B,C,H,W], target [B,C,H,W], label_mask=None)``; ``label_mask`` is a bool
    [B, C] (or [B] for the duct channel only) that is False where an image has no label for a
    channel: those (image, channel) pairs are left out. A channel with no labelled image in
    the batch contributes nothing. Returns a scalar; ``last_terms`` holds the parts as floats
    for logging.
    """

    def __init__(self, cfg: SegmentationLossConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.name == "dice_ce":
            self.base = DiceCELoss(
                sigmoid=True,
                batch=cfg.batch_dice,
                lambda_dice=cfg.lambda_dice,
                lambda_ce=cfg.lambda_ce,
            )
        else:
            self.base = DiceFocalLoss(
                sigmoid=True,
                batch=cfg.batch_dice,
                gamma=cfg.focal_gamma,
                lambda_dice=cfg.lambda_dice,
                lambda_focal=cfg.lambda_ce,
            )
        self.cldice = (
            SoftclDiceLoss(iter_=cfg.cldice_iters, sigmoid=True) if cfg.cldice_weight > 0 else None
        )
        self.last_terms: dict[str, float] = {}

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, label_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(
                f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ"
            )
        n_ch = logits.shape[1]
        if n_ch != len(self.cfg.channel_weights):
            raise ValueError(f"{n_ch} channels but {len(self.cfg.channel_weights)} channel weights")
        mask = _label_mask(label_mask, logits.shape[0], n_ch, logits.device)
        target = target.to(logits.dtype)

        # Starts as a zero that is still part of the graph: a batch with no labelled channel
        # then backpropagates zeros instead of failing (and DDP sees every parameter used).
        total = logits.sum() * 0.0
        weight_sum = 0.0
        terms: dict[str, float] = {}
        for c, w in enumerate(self.cfg.channel_weights):
            rows = mask[:, c]
            if w == 0 or not bool(rows.any()):
                continue
            term = self.base(logits[rows, c : c + 1], target[rows, c : c + 1])
            terms[f"seg_ch{c}"] = float(term.detach())
            total = total + w * term
            weight_sum += w
        if weight_sum > 0:
            total = total / weight_sum
        if self.cldice is not None and bool(mask[:, DUCT].any()):
            rows = mask[:, DUCT]
            cl = self.cldice(logits[rows, DUCT : DUCT + 1], target[rows, DUCT : DUCT + 1])
            terms["cldice"] = float(cl.detach())
            total = total + self.cfg.cldice_weight * cl
        self.last_terms = terms
        return total


def _label_mask(
    label_mask: torch.Tensor | None, batch: int, n_ch: int, device: torch.device
) -> torch.Tensor:
    """Bool [B, C]; a [B] mask applies to the duct channel only (lesion labels always exist)."""
    if label_mask is None:
        return torch.ones(batch, n_ch, dtype=torch.bool, device=device)
    m = torch.as_tensor(label_mask, device=device).bool()
    if m.ndim == 1:
        full = torch.ones(batch, n_ch, dtype=torch.bool, device=device)
        full[:, DUCT] = m
        return full
    if m.shape != (batch, n_ch):
        raise ValueError(
            f"label_mask must be [B] or [B, C] = {(batch, n_ch)}, got {tuple(m.shape)}"
        )
    return m


def build_segmentation_loss(cfg: SegmentationLossConfig | dict | None = None) -> SegmentationLoss:
    """The segmentation loss from a config (object, plain dict or None for the defaults)."""
    if cfg is None:
        cfg = SegmentationLossConfig()
    elif isinstance(cfg, dict):
        cfg = SegmentationLossConfig.model_validate(cfg)
    return SegmentationLoss(cfg)
