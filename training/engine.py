"""The mechanics of optimisation shared by both tasks: devices, AMP, one step, progress.

Task modules (``segmentation_task``, ``detection_task``) keep the explicit part, forward
pass and loss, in a short ``train_one_epoch``; ``Engine.step`` does backward, gradient
scaling and clipping, the optimizer and scheduler, counting and the per-step hook.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ductai.training.config import TrainConfig
from ductai.training.distributed import DistContext


def use_amp(config: TrainConfig, ctx: DistContext) -> bool:
    # AMP and channels-last help on GPUs only (float16 autocast on CPU is slow or absent).
    return config.trainer.amp and ctx.device.type == "cuda"


def autocast(config: TrainConfig, ctx: DistContext):
    if not use_amp(config, ctx):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.float16)


def to_images(x: torch.Tensor, config: TrainConfig, ctx: DistContext) -> torch.Tensor:
    x = x.to(ctx.device, non_blocking=True)
    if config.trainer.channels_last and ctx.device.type == "cuda":
        return x.contiguous(memory_format=torch.channels_last)
    return x


class Engine:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        config: TrainConfig,
        ctx: DistContext,
        on_step: Callable[[Engine], None] | None = None,
    ) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.config, self.ctx, self.on_step = config, ctx, on_step
        self.amp = use_amp(config, ctx)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.grad_clip = config.trainer.grad_clip
        self.global_step = 0
        self.epoch = 0
        self.step_in_epoch = 0
        # Running figures for the progress bar and the step metrics.
        self.window: list[tuple[float, int, float, float]] = []  # loss, images, step s, data s
        self._last = time.perf_counter()
        self._data_wait = 0.0

    # -- devices and precision -----------------------------------------------------------
    def autocast(self):
        return autocast(self.config, self.ctx)

    def images(self, x: torch.Tensor) -> torch.Tensor:
        return to_images(x, self.config, self.ctx)

    # -- the loop ------------------------------------------------------------------------
    def batches(self, loader: Iterable, total: int, desc: str) -> Iterator[Any]:
        """Iterate ``loader`` with a progress bar showing the running loss and images/s."""
        show = self.ctx.is_main and self.config.trainer.progress
        bar = tqdm(
            total=total,
            initial=self.step_in_epoch,
            desc=desc,
            disable=not show,
            dynamic_ncols=True,
            mininterval=1.0,
            leave=False,
        )
        self._last = time.perf_counter()
        with bar:
            it = iter(loader)
            while True:
                t0 = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    return
                self._data_wait = time.perf_counter() - t0
                yield batch
                bar.update(1)
                stats = self.running()
                bar.set_postfix(loss=f"{stats['loss']:.4f}", img_s=f"{stats['images_per_s']:.1f}")

    def step(self, loss: torch.Tensor, n_images: int) -> None:
        """Backward and update for one batch, then the per-step hook."""
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"loss is {value} at step {self.global_step + 1}: lower optim.lr, set "
                "trainer.grad_clip, or check the data"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.global_step += 1
        self.step_in_epoch += 1
        now = time.perf_counter()
        self.window.append(
            (value, n_images * self.ctx.world_size, now - self._last, self._data_wait)
        )
        self.window = self.window[-50:]
        self._last = now
        if self.on_step is not None:
            self.on_step(self)

    def running(self) -> dict[str, float]:
        """Means over the last steps: loss, images/s (all ranks), fraction waiting for data."""
        if not self.window:
            return {"loss": math.nan, "images_per_s": 0.0, "data_wait": 0.0}
        losses, images, secs, waits = zip(*self.window)
        total = max(sum(secs), 1e-9)
        return {
            "loss": sum(losses) / len(losses),
            "images_per_s": sum(images) / total,
            "data_wait": sum(waits) / total,
        }

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # -- checkpoint state ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "global_step": self.global_step,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.global_step = int(state["global_step"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
