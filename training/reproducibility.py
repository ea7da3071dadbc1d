"""One seed for everything: python, numpy, torch, data order, simulator, loader workers."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed every global RNG; ranks get distinct streams (their crops must differ)."""
    s = int(seed) + 1_000_003 * int(rank)
    random.seed(s)
    # The legacy global generator on purpose: third-party code (MONAI, albumentations) draws
    # from it.
    np.random.seed(s % 2**32)  # noqa: NPY002
    torch.manual_seed(s)


def set_deterministic(enabled: bool, cuda: bool) -> None:
    """Deterministic kernels (slower) or the fastest ones (cuDNN autotuning)."""
    if enabled:
        # cuBLAS needs a fixed workspace for deterministic matmuls (must precede CUDA init).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: a kernel without a deterministic version warns once instead of failing
        # a long run; CPU training is fully deterministic either way.
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(False)
    if cuda:
        torch.backends.cudnn.deterministic = enabled
        torch.backends.cudnn.benchmark = not enabled


def worker_init_fn(worker_id: int) -> None:
    """Seed a loader worker's python and numpy RNGs from the seed torch derived for it.

    The loader's generator is seeded from (trainer seed, epoch, rank), so every worker's
    stream is fixed by the one seed; the train transform re-seeds its own generators from
    ``torch.initial_seed()`` (``ductai.data.transforms``).
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002
