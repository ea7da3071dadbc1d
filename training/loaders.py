"""Datasets and loaders from the config, with a step-addressed, rank-aware sampler.

``StepSampler`` fixes which item every (global step, rank, slot) sees from the seed alone:
position ``p`` of the stream is item ``perm_{p // N}[p % N]`` with ``perm_q`` a permutation
seeded by (seed, q). An epoch is ``steps_per_epoch`` steps of that stream, so a finite
datalist is cycled and the simulator (N large) is an endless source, and a resume from a
mid-epoch checkpoint continues at exactly the next batch. Like ``DistributedSampler``,
each rank takes its own slice of every global batch. ``shuffle=False`` (the endless
simulator, new views every epoch anyway) keeps each batch's indices consecutive, so a view
rendered once serves ``crops_per_view`` crops.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ductai.training.config import TrainConfig
from ductai.training.distributed import DistContext
from ductai.training.reproducibility import worker_init_fn


class StepSampler(Sampler[int]):
    def __init__(
        self,
        num_items: int,
        batch_size: int,
        steps_per_epoch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        self.n, self.batch_size, self.steps = num_items, batch_size, steps_per_epoch
        self.seed, self.rank, self.world, self.shuffle = seed, rank, world_size, shuffle
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        perms: dict[int, np.ndarray] = {}
        for step in range(self.epoch * self.steps + self.start_step, (self.epoch + 1) * self.steps):
            first = (step * self.world + self.rank) * self.batch_size
            for p in range(first, first + self.batch_size):
                if not self.shuffle:
                    yield p % self.n
                    continue
                q = p // self.n
                if q not in perms:
                    perms[q] = np.random.default_rng([self.seed, q]).permutation(self.n)
                yield int(perms[q][p % self.n])


def steps_per_epoch(config: TrainConfig, num_items: int, world_size: int) -> int:
    if config.trainer.steps_per_epoch is not None:
        return config.trainer.steps_per_epoch
    return max(1, math.ceil(num_items / (config.data.batch_size * world_size)))


def build_datasets(config: TrainConfig, world_size: int = 1) -> tuple[Dataset, Dataset]:
    """(train, validation) datasets in canonical space with the task's transforms."""
    from ductai.data.transforms import build_train_transform, build_val_transform

    train_tf = build_train_transform(config.task, config.augment)
    val_tf = build_val_transform(config.task, config.augment)
    d = config.data
    if d.source == "datalist":
        from ductai.data.datasets import datalist_dataset

        cache = (
            {"cache_dir": d.cache_dir or config.output_dir / "cache"}
            if d.cache == "disk"
            else {"in_memory": d.cache == "memory"}
        )
        train = datalist_dataset(
            d.datalist, d.train_split, d.spacing_mm, transform=train_tf, **cache
        )
        val = datalist_dataset(d.datalist, d.val_split, d.spacing_mm, transform=val_tf, **cache)
        for split, ds in ((d.train_split, train), (d.val_split, val)):
            if len(ds) == 0:
                raise ValueError(f"{d.datalist}: the {split!r} list is empty")
        return train, val
    from ductai.data.datasets import SimulatedMix, simulated_dataset

    sim, seed = d.simulation, config.trainer.seed
    # Validation breasts come from another seed than training ones: never the same anatomy.
    train_seed = sim.train_seed if sim.train_seed is not None else seed
    val_seed = sim.val_seed if sim.val_seed is not None else seed + 7919
    if sim.train_length is None:
        # Endless: each breast draws its preset from (seed, breast) with the mix's weights.
        train = simulated_dataset(
            config.trainer.steps_per_epoch * world_size,
            d.batch_size,
            config=sim.presets,
            spacing_mm=d.spacing_mm,
            seed=train_seed,
            transform=train_tf,
            crops_per_view=sim.crops_per_view,
            overrides=sim.train_overrides,
        )
    else:
        train = SimulatedMix(
            sim.presets, d.spacing_mm, sim.train_length, train_seed, overrides=sim.train_overrides
        )
        train = RenderedOnce(train, train_tf) if d.cache == "memory" else _with(train, train_tf)
    # Fixed sets hold every preset in proportion (SimulatedMix, stratified).
    val = SimulatedMix(sim.presets, d.spacing_mm, sim.val_length, val_seed)
    val = RenderedOnce(val, val_tf) if d.cache == "memory" else _with(val, val_tf)
    return train, val


def _with(dataset, transform):
    dataset.transform = transform
    return dataset


class RenderedOnce(Dataset):
    """A fixed simulated set rendered once, in the main process (forked workers share it);
    the (random) transform still runs on every access."""

    def __init__(self, source: Dataset, transform) -> None:
        self.samples = [source[i] for i in range(len(source))]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.samples[index])
        sample["meta"] = dict(sample.get("meta", {}))
        return self.transform(sample)


def collate_fn(task: str):
    if task == "detection":
        from ductai.data.transforms import detection_collate

        return detection_collate
    return _collate_segmentation


def _collate_segmentation(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keep everything else (meta, ids) as lists."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        if isinstance(values[0], torch.Tensor) and all(v.shape == values[0].shape for v in values):
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out


def train_loader(
    config: TrainConfig, dataset: Dataset, sampler: StepSampler, ctx: DistContext, epoch: int
) -> DataLoader:
    """A loader for one epoch; its generator (hence worker seeds) depends on seed, epoch, rank."""
    g = torch.Generator().manual_seed(config.trainer.seed * 1_000_003 + epoch * 1009 + ctx.rank)
    w = config.data.num_workers
    return DataLoader(
        dataset,
        batch_size=config.data.batch_size,
        sampler=sampler,
        num_workers=w,
        collate_fn=collate_fn(config.task),
        pin_memory=ctx.device.type == "cuda",
        drop_last=True,
        worker_init_fn=worker_init_fn if w else None,
        generator=g,
        prefetch_factor=4 if w else None,
    )


def val_indices(num_items: int, ctx: DistContext) -> list[int]:
    """This rank's share of the validation images (every image exactly once overall)."""
    return list(range(ctx.rank, num_items, ctx.world_size))


def val_loader(config: TrainConfig, dataset: Dataset, ctx: DistContext) -> DataLoader:
    # Whole images of different sizes: one per batch; sliding windows batch the patches.
    subset = torch.utils.data.Subset(dataset, val_indices(len(dataset), ctx))
    w = min(config.data.num_workers, len(subset))
    return DataLoader(
        subset,
        batch_size=1,
        shuffle=False,
        num_workers=w,
        collate_fn=collate_fn(config.task),
        pin_memory=ctx.device.type == "cuda",
        worker_init_fn=worker_init_fn if w else None,
    )
