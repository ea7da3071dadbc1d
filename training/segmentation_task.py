"""Segmentation: one training epoch and whole-image validation (duct lumen + lesion channel).

Targets are ``seg`` [B, 2, H, W] (duct, lesion), sigmoid multi-label; ``channel_mask`` [B, 2]
marks which channels an image is labelled for (a datalist entry may lack duct masks).
"""

from __future__ import annotations

import torch
from monai.inferers import SlidingWindowInferer
from torch import nn

from ductai.training.config import TrainConfig
from ductai.training.distributed import DistContext, mean_across, merge_metrics, unwrap
from ductai.training.engine import Engine, autocast, to_images
from ductai.training.losses import SegmentationLossConfig, build_segmentation_loss
from ductai.training.metrics import SegmentationMetrics
from ductai.training.validation import Validation


def build_criterion(config: TrainConfig) -> nn.Module:
    # The loss section also holds the detector's weights; the segmentation loss takes its own.
    return build_segmentation_loss(
        config.loss.model_dump(include=set(SegmentationLossConfig.model_fields))
    )


def train_one_epoch(engine: Engine, criterion: nn.Module, loader, steps: int) -> None:
    engine.model.train()
    for batch in engine.batches(loader, steps, f"epoch {engine.epoch + 1}"):
        images = engine.images(batch["image"])
        target = batch["seg"].to(engine.ctx.device, non_blocking=True)
        mask = batch.get("channel_mask")
        mask = mask.to(target.device) if mask is not None else None
        with engine.autocast():
            logits = engine.model(images)
        # The loss in float32: Dice sums over many pixels overflow float16.
        loss = criterion(logits.float(), target, mask)
        engine.step(loss, n_images=images.shape[0])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    config: TrainConfig,
    ctx: DistContext,
    criterion: nn.Module | None = None,
    overlays: int = 0,
) -> Validation:
    """Sliding-window (Gaussian-blended) inference on whole images; metrics over all ranks."""
    net = unwrap(model).eval()
    v = config.validation
    inferer = SlidingWindowInferer(
        roi_size=v.roi_size, sw_batch_size=v.sw_batch_size, overlap=v.overlap, mode="gaussian"
    )
    metrics = SegmentationMetrics(threshold=v.threshold, spacing_mm=config.data.spacing_mm)
    result = Validation()
    losses: list[float] = []
    for batch in loader:
        image = to_images(batch["image"], config, ctx)
        target, mask = batch["seg"], batch.get("channel_mask")
        with autocast(config, ctx):
            logits = inferer(image, net)
        logits = logits.float().cpu()
        if criterion is not None:
            losses.append(float(criterion(logits, target, mask)))
        probs = torch.sigmoid(logits)
        metrics.update(probs, target, label_mask=mask)
        if len(result.overlays) < overlays:
            result.overlays.append((batch["image"][0], {"seg": probs[0]}, {"seg": target[0]}))
    merge_metrics(metrics, ctx)
    result.metrics = metrics.compute()
    if criterion is not None:
        result.metrics["loss"] = mean_across(sum(losses) / max(len(losses), 1), ctx)
    result.per_image = metrics.per_image
    return result
