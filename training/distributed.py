"""Process-group plumbing so one trainer runs alone or under ``torchrun`` (DDP).

``torchrun --nproc_per_node N -m ductai.cli train CONFIG`` sets RANK / WORLD_SIZE /
LOCAL_RANK; ``setup`` turns them into a process group (NCCL on CUDA, gloo on CPU). Data is
sharded by ``training.loaders.StepSampler`` (the rank-aware DistributedSampler of this
trainer), metrics are merged through their ``state()`` / ``merge()``, and only rank 0
logs to MLflow and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("trainer.device is 'cuda' but no CUDA device is available")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def setup(device_preference: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun; a 1-process context otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(device=pick_device(device_preference))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, local_rank, world_size, device)


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    if not ctx.distributed:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def merge_metrics(metrics: Any, ctx: DistContext) -> Any:
    """Every rank ends with the metrics of all ranks (same compute() everywhere)."""
    if not ctx.distributed:
        return metrics
    states: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(states, metrics.state())
    metrics.reset()
    metrics.merge(states)
    return metrics


def mean_across(value: float, ctx: DistContext) -> float:
    if not ctx.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def broadcast(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's value on every rank (e.g. whether to stop early)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
