"""Checkpoints: atomic save, safe load (``weights_only=True``), RNG state round trip.

A checkpoint file holds ``{"ductai_checkpoint": FORMAT_VERSION, "payload": payload}``; the
payload may contain only tensors, numbers, strings, bools, None, lists, tuples and dicts, so
loading never unpickles arbitrary objects. ``save_checkpoint`` checks that up front and names
the offending key, rather than writing a file that ``load_checkpoint`` would refuse later.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ductai.data.atomic import atomic_write

FORMAT_KEY = "ductai_checkpoint"
FORMAT_VERSION = 1

_SCALARS = (type(None), bool, int, float, str, torch.dtype, torch.device, torch.Size)


class CheckpointError(ValueError):
    """A file that is not a readable ductai checkpoint, or a payload that cannot be saved."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically; returns the path.

    The bytes go to a temporary file in the same directory (same file system, so the rename
    is atomic), are flushed and fsynced, then ``os.replace`` puts them at ``path``. A crash at
    any point leaves either the old file or the new one at ``path``, never a partial file.
    """
    path = Path(path)
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint payload must be a dict, got {type(payload).__name__}")
    _check_safe(payload, "payload")
    atomic_write(path, lambda tmp: _save(tmp, payload))
    return path


def _save(tmp: str, payload: dict[str, Any]) -> None:
    with open(tmp, "wb") as f:
        torch.save({FORMAT_KEY: FORMAT_VERSION, "payload": payload}, f)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` and return its payload.

    Raises ``FileNotFoundError`` for a missing file and ``CheckpointError`` (naming the file)
    for a truncated, corrupt or foreign one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: not a readable ductai checkpoint (truncated, corrupt or not written by "
            f"ductai.models.checkpoint.save_checkpoint): {first_line}"
        ) from e
    if not isinstance(obj, dict) or FORMAT_KEY not in obj or "payload" not in obj:
        raise CheckpointError(
            f"{path}: a torch file but not a ductai checkpoint (no {FORMAT_KEY!r} marker)"
        )
    if obj[FORMAT_KEY] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: ductai checkpoint format {obj[FORMAT_KEY]!r}, this version reads "
            f"{FORMAT_VERSION}"
        )
    return obj["payload"]


def rng_state() -> dict[str, Any]:
    """Python, numpy (global), torch CPU and CUDA RNG states as a weights_only-safe dict."""
    version, internal, gauss_next = random.getstate()
    # The legacy global generator is what np.random.* calls (and old augmenters) draw from.
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states captured by ``rng_state`` (CUDA only when present and available)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npy = state["numpy"]
    # .cpu(): a checkpoint loaded with map_location="cuda" holds these tensors on the GPU.
    keys = np.asarray(torch.as_tensor(npy["keys"]).cpu().numpy(), dtype=np.uint32)
    np.random.set_state(  # noqa: NPY002
        (npy["kind"], keys, int(npy["pos"]), int(npy["has_gauss"]), float(npy["cached_gaussian"]))
    )
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [torch.as_tensor(s, dtype=torch.uint8).cpu() for s in state["cuda"]]
        # A resume on fewer GPUs restores the devices it has.
        for i, s in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, device=i)


def _check_safe(obj: Any, where: str) -> None:
    # numpy scalars first: np.float64 subclasses float but does not load with weights_only.
    if type(obj).__module__ != "numpy" and isinstance(obj, (torch.Tensor, *_SCALARS)):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str | int | float | bool | type(None)):
                raise CheckpointError(f"{where}: key {k!r} of type {type(k).__name__} not allowed")
            _check_safe(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _check_safe(v, f"{where}[{i}]")
        return
    hint = " (use .tolist() or torch.as_tensor)" if type(obj).__module__ == "numpy" else ""
    raise CheckpointError(
        f"{where}: {type(obj).__module__}.{type(obj).__name__} cannot be loaded with "
        f"weights_only=True; store tensors, numbers, strings, lists or dicts{hint}"
    )
