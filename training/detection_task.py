"""Detection: one training epoch of the RetinaNet losses and whole-image FROC validation.

Batches come from ``ductai.data.transforms.detection_collate``: ``image`` [B, 1, h, w],
``boxes`` / ``labels`` lists (ductai ``[x0, y0, x1, y1]``, mimics included: the detector
learns them as classes and they are suppressed at inference).
"""

from __future__ import annotations

import torch
from torch import nn

from ductai.training.config import TrainConfig
from ductai.training.distributed import DistContext, merge_metrics, unwrap
from ductai.training.engine import Engine, autocast, to_images
from ductai.training.metrics import DetectionMetrics
from ductai.training.validation import Validation


def _targets(batch: dict, device: torch.device) -> list[dict[str, torch.Tensor]]:
    return [
        {"boxes": b.to(device), "labels": lab.to(device)}
        for b, lab in zip(batch["boxes"], batch["labels"])
    ]


def train_one_epoch(engine: Engine, config: TrainConfig, loader, steps: int) -> None:
    weights = {
        "classification": config.loss.classification_weight,
        "box_regression": config.loss.box_regression_weight,
    }
    engine.model.train()
    for batch in engine.batches(loader, steps, f"epoch {engine.epoch + 1}"):
        images = engine.images(batch["image"])
        targets = _targets(batch, engine.ctx.device)
        with engine.autocast():
            losses = engine.model(images, targets)
        loss = sum(weights[k] * v.float() for k, v in losses.items())
        engine.step(loss, n_images=images.shape[0])


@torch.no_grad()
def evaluate(
    model: nn.Module, loader, config: TrainConfig, ctx: DistContext, overlays: int = 0
) -> Validation:
    """Whole images through the detector (its sliding window); FROC etc. over all ranks."""
    net = unwrap(model).eval()
    metrics = DetectionMetrics()
    result = Validation()
    for batch in loader:
        images = batch["image"]
        images = (
            [to_images(i[None], config, ctx)[0] for i in images]
            if isinstance(images, list)
            else to_images(images, config, ctx)
        )
        with autocast(config, ctx):
            preds = net(images)
        preds = [
            {k: v.float().cpu() if k != "labels" else v.cpu() for k, v in p.items()} for p in preds
        ]
        targets = [{"boxes": b, "labels": lab} for b, lab in zip(batch["boxes"], batch["labels"])]
        metrics.update(preds, targets)
        for i in range(len(preds)):
            if len(result.overlays) < overlays:
                result.overlays.append((batch["image"][i], preds[i], targets[i]))
    merge_metrics(metrics, ctx)
    result.metrics = metrics.compute()
    result.curves = metrics.curves()
    return result
