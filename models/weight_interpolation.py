"""Weight-space interpolation of two checkpoints of one network (WiSE-FT, Wortsman et al. 2022).

A fine-tuned network and the one it started from lie in one basin: their weights' average
often generalises better than either, at no inference cost. ``interpolate_checkpoints``
writes ``(1 - weight) * base + weight * tuned`` as a new checkpoint that ``write_bundle``
and ``model.init_from`` read like any other.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

import ductai
from ductai.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def interpolate_checkpoints(
    base: str | os.PathLike,
    tuned: str | os.PathLike,
    weight: float,
    out: str | os.PathLike,
) -> Path:
    """``out`` = base's weights moved ``weight`` of the way to tuned's (0: base, 1: tuned).

    Both must hold the same network (task, model name and arguments, parameter names and
    shapes); the result keeps tuned's config and no optimizer state. Integer buffers (batch
    norm's counters) are tuned's.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    a, b = load_checkpoint(base), load_checkpoint(tuned)
    net_a, net_b = _network(a), _network(b)
    if net_a != net_b:
        raise CheckpointError(f"{base} and {tuned}: different networks ({net_a} / {net_b})")
    wa, wb = a["model"], b["model"]
    if set(wa) != set(wb):
        raise CheckpointError(f"{base} and {tuned}: different parameter names")
    mixed: dict[str, torch.Tensor] = {}
    for name, tb in wb.items():
        ta = wa[name]
        if ta.shape != tb.shape:
            raise CheckpointError(
                f"{base} and {tuned}: {name} has shape {tuple(ta.shape)} / {tuple(tb.shape)}"
            )
        if tb.is_floating_point():
            mixed[name] = ((1 - weight) * ta.float() + weight * tb.float()).to(tb.dtype)
        else:
            mixed[name] = tb.clone()
    payload = {
        "model": mixed,
        "config": b["config"],
        "task": b["task"],
        "ductai_version": ductai.__version__,
        "run_id": None,
        "best": None,
        "interpolation": {"base": str(base), "tuned": str(tuned), "weight": float(weight)},
    }
    return save_checkpoint(out, payload)


def _network(payload: dict) -> tuple:
    """(task, model name, model arguments): what makes two checkpoints one network."""
    model = payload["config"]["model"]
    return payload.get("task"), model["name"], model.get("kwargs")
