"""Datasets yielding the canonical sample dict (docs/training-design.md) for training.

* `DatalistDataset`: images and label files of a datalist, read and brought to canonical
  space once (the expensive part: decoding a 10 MP DICOM and resampling it), cached on disk
  by MONAI's `PersistentDataset` or in memory by `CacheDataset`; the random training
  transform runs after the cache, on every access.
* `simulated_dataset`: the on-the-fly simulator as an endless source, new breasts each epoch.
* `SimulatedMix`: simulated views from several presets mixed by weight, each breast's preset
  fixed by (seed, breast index).

Missing labels, recorded in ``meta`` so losses can tell "absent" from "not drawn":
no instance mask -> each box gets a filled ellipse (``meta["instances_from_boxes"]``), so the
lesion channel exists; no duct mask -> an all-zero duct and ``meta["has_duct"] = False``
(the segmentation transform turns it into ``channel_mask[0] = 0``); no centerline -> the
skeleton of the duct mask; no truth file -> ``nipple`` is NaN.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, PersistentDataset
from monai.data import Dataset as MonaiDataset
from monai.transforms import Transform
from skimage.morphology import skeletonize
from torch.utils.data import Dataset

from ductai import __version__
from ductai.data.canonical import to_canonical
from ductai.data.datalist import DatalistEntry, load_datalist
from ductai.data.dicom_reader import read_galactogram
from ductai.data.errors import ImageReadError
from ductai.data.image_files import IMAGE_SUFFIXES, read_image_file
from ductai.data.instances import paint_missing_instances
from ductai.data.label_masks import read_mask
from ductai.data.labels import CLASSES, MIMICS, UNKNOWN

__all__ = [
    "DatalistDataset",
    "LoadCanonicald",
    "SimulatedEpochs",
    "SimulatedMix",
    "datalist_dataset",
    "simulated_dataset",
]

# Bump when LoadCanonicald's output changes: old cache files are then never read again.
CACHE_FORMAT = 1


class LoadCanonicald(Transform):
    """Datalist item -> canonical sample dict (numpy). Deterministic, so MONAI caches it."""

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        entry = DatalistEntry.model_validate(item["entry"])
        spacing_mm = float(item["spacing_mm"])
        image = _read_image(entry, item.get("pixel_spacing"))
        pixels, geometry = to_canonical(image, spacing_mm)
        shape = pixels.shape
        original = (image.rows, image.columns)

        def mask(field: str) -> np.ndarray | None:
            path = getattr(entry, field)
            if not path:
                return None
            values = read_mask(path)
            if values.shape != original:
                raise ImageReadError(
                    path, f"{field} mask is {values.shape}, the image {entry.image} is {original}"
                )
            return geometry.image_to_canonical(values, "nearest")

        boxes = geometry.boxes_to_canonical(np.asarray(entry.boxes).reshape(-1, 4))
        duct = mask("duct")
        centerline = mask("centerline")
        instances, drawn = paint_missing_instances(mask("instances"), boxes, shape)
        if centerline is None and duct is not None:
            centerline = skeletonize(duct > 0)
        nipple, truth = np.full(2, np.nan, dtype=np.float32), _truth(entry)
        if "nipple_px" in truth:
            nipple = geometry.points_to_canonical(np.asarray(truth["nipple_px"]))[0]
        meta = {
            "image": entry.image,
            "patient_id": entry.patient_id,
            "laterality": image.laterality if entry.laterality == UNKNOWN else entry.laterality,
            "view": image.view if entry.view == UNKNOWN else entry.view,
            "geometry": geometry.to_dict(),
            "has_duct": duct is not None,
            "has_centerline": entry.centerline is not None,
            "instances_from_boxes": bool(drawn.any()),
            # One string, not a list: default_collate needs equal-length lists across a batch.
            "warnings": "; ".join(image.warnings),
        }
        empty = np.zeros(shape, dtype=np.uint8)
        return {
            "image": pixels[None],
            "duct": (empty if duct is None else (duct > 0).astype(np.uint8))[None],
            "centerline": (empty if centerline is None else (centerline > 0).astype(np.uint8))[
                None
            ],
            "instances": instances[None],
            "boxes": boxes.astype(np.float32),
            "labels": np.array([CLASSES.index(n) for n in entry.labels], dtype=np.int64),
            "is_mimic": np.array([n in MIMICS for n in entry.labels], dtype=bool),
            # burnt-in letters (a simulated set's truth): hard negatives for the crop sampler
            "markers": geometry.boxes_to_canonical(
                np.asarray(truth.get("markers", []), dtype=np.float64).reshape(-1, 4)
            ).astype(np.float32),
            "nipple": np.asarray(nipple, dtype=np.float32),
            "meta": meta,
        }


def _read_image(entry: DatalistEntry, default_spacing):
    path = Path(entry.image)
    spacing = getattr(entry, "pixel_spacing", None) or default_spacing
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return read_image_file(path, spacing, entry.laterality, entry.view)
    return read_galactogram(path, spacing)


def _truth(entry: DatalistEntry) -> dict[str, Any]:
    return json.loads(Path(entry.truth).read_text()) if entry.truth else {}


def _cache_key(entry: DatalistEntry, spacing_mm: float, pixel_spacing) -> str:
    """What the cached sample depends on: files (path, size, mtime), labels, spacing, code.

    File stats rather than content hashes: hashing every 20 MB DICOM at each start would
    cost as much as the decoding the cache saves; an edited file changes size or mtime.
    """
    files = {}
    for field, path in entry.paths().items():
        stat = Path(path).stat()
        files[field] = [path, stat.st_size, stat.st_mtime_ns]
    key = {
        "ductai": __version__,
        "format": CACHE_FORMAT,
        "spacing_mm": spacing_mm,
        "pixel_spacing": pixel_spacing,
        "files": files,
        "entry": entry.model_dump(mode="json"),
    }
    return json.dumps(key, sort_keys=True)


def _hash_item(item: dict[str, Any]) -> bytes:
    return hashlib.sha256(item["key"].encode()).hexdigest().encode()


class DatalistDataset(Dataset):
    """Canonical samples of datalist entries; ``transform`` (random) runs after the cache.

    ``cache_dir``: a persistent cache (one ``.pt`` file per image, MONAI `PersistentDataset`),
    valid across runs and shared by DataLoader workers; keyed by the files' paths, sizes and
    modification times, the labels, the spacing and the ductai version. ``in_memory``: load
    every image once now (MONAI `CacheDataset`, ``cache_workers`` threads); for small sets.
    ``pixel_spacing``: mm for files that carry none (PNG/TIFF, or a DICOM without it); an
    entry's own ``pixel_spacing`` key wins.
    """

    def __init__(
        self,
        entries: Sequence[DatalistEntry],
        spacing_mm: float,
        cache_dir: str | Path | None = None,
        transform: Callable | None = None,
        in_memory: bool = False,
        pixel_spacing: float | None = None,
        cache_workers: int = 1,
    ) -> None:
        if cache_dir is not None and in_memory:
            raise ValueError("choose one cache: cache_dir (disk) or in_memory")
        self.entries = list(entries)
        self.spacing_mm = float(spacing_mm)
        self.transform = transform
        items = [
            {
                "entry": e.model_dump(mode="json"),
                "spacing_mm": self.spacing_mm,
                "pixel_spacing": pixel_spacing,
                "key": _cache_key(e, self.spacing_mm, pixel_spacing),
            }
            for e in self.entries
        ]
        loader = LoadCanonicald()
        if cache_dir is not None:
            self.cache_dir: Path | None = Path(cache_dir)
            self.source: Dataset = PersistentDataset(
                items, loader, cache_dir=self.cache_dir, hash_func=_hash_item
            )
        elif in_memory:
            self.cache_dir = None
            self.source = CacheDataset(
                items, loader, num_workers=cache_workers, progress=False, copy_cache=False
            )
        else:
            self.cache_dir = None
            self.source = MonaiDataset(items, loader)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = _as_numpy(self.source[index])
        return self.transform(sample) if self.transform is not None else sample


def _as_numpy(sample: dict[str, Any]) -> dict[str, Any]:
    """The persistent cache stores tensors; give every source the same (numpy) format."""
    return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in sample.items()}


def datalist_dataset(
    path: str | Path, split: str, spacing_mm: float, **kwargs: Any
) -> DatalistDataset:
    """`DatalistDataset` of one split ("training", "validation", "test") of a datalist file."""
    splits = load_datalist(path)
    if split not in splits:
        raise ValueError(f"split must be one of {sorted(splits)}, not {split!r}")
    return DatalistDataset(splits[split], spacing_mm, **kwargs)


class SimulatedEpochs(Dataset):
    """``length`` samples per epoch; `set_epoch` moves on to breasts never seen before.

    Sample i of epoch e comes from view ``(e * length + i) // crops_per_view`` of the
    simulator's endless stream, so every epoch is new and any (seed, epoch, index) is
    reproducible. Rendering a view costs far more than cropping and augmenting it:
    ``crops_per_view > 1`` reuses each rendered view for that many consecutive samples (each
    with its own random crop). The reuse lives in each worker, and a DataLoader gives each
    worker whole batches of consecutive indices: keep ``shuffle=False`` and make the batch
    size a multiple of ``crops_per_view``. Call ``set_epoch`` before each epoch's iterator is
    created; workers started with ``persistent_workers=True`` keep their epoch, so leave
    persistent workers off for this source.
    """

    def __init__(
        self,
        simulator,
        length: int,
        transform: Callable | None = None,
        crops_per_view: int = 1,
    ) -> None:
        if length < 1 or crops_per_view < 1:
            raise ValueError(
                f"length and crops_per_view must be >= 1, not {length}, {crops_per_view}"
            )
        self.simulator = simulator
        self.length = int(length)
        self.transform = transform
        self.crops_per_view = int(crops_per_view)
        self.epoch = 0
        self._last: tuple[int, dict[str, Any]] | None = None  # (view, sample) of this process

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        view = (self.epoch * self.length + int(index)) // self.crops_per_view
        if self._last is None or self._last[0] != view:
            sample = self.simulator[view]
            sample["meta"]["epoch"] = self.epoch
            self._last = (view, sample) if self.crops_per_view > 1 else None
        else:
            sample = self._last[1]
        return self.transform(sample) if self.transform is not None else sample


class SimulatedMix(Dataset):
    """Simulated views of ``length`` items from several presets mixed by weight.

    ``presets`` maps a preset (a name under configs/simulation/ or a YAML path) to a positive
    weight (normalised). Items ``2b`` and ``2b + 1`` are the two views of breast ``b``, both
    rendered with the preset ``preset_of(b)``, at breast index ``b`` of ``seed`` whatever the
    preset, so every breast of the mix has its own anatomy and any (seed, index) is
    reproducible (a resumed or distributed run sees the same breasts). ``meta["preset"]``
    names the preset. ``overrides`` (``key=value``, as on the command line) change every
    preset alike, e.g. ``anatomy.findings.class_weights.cutoff=0.3``.

    ``stratify=True`` (fixed sets: validation, a finite training set): each preset gets its
    share of the ``ceil(length / 2)`` breasts by largest remainder, every preset at least one
    breast when there are as many breasts as presets, in an order shuffled by the seed.
    ``stratify=False`` (the endless stream): each breast draws its preset independently,
    from a generator seeded by (seed, breast) only.
    """

    _SALT = 0x5052_4553  # keeps the preset draws apart from the simulator's own streams

    def __init__(
        self,
        presets: Mapping[str, float],
        spacing_mm: float = 0.3,
        length: int = 1000,
        seed: int = 0,
        transform: Callable | None = None,
        stratify: bool = True,
        overrides: list[str] | None = None,
    ) -> None:
        from ductai.simulation.dataset import SimulatedGalactograms

        if not presets or any(not (math.isfinite(w) and w > 0) for w in presets.values()):
            raise ValueError(f"presets must map names to positive weights, not {dict(presets)}")
        # Sorted by name: the same mapping written in another order gives the same data.
        self.names = sorted(presets)
        weights = np.array([float(presets[n]) for n in self.names])
        self.weights = weights / weights.sum()
        self._cumulative = np.cumsum(self.weights)
        self.length, self.seed = int(length), int(seed)
        self.transform = transform
        self.sources = {
            n: SimulatedGalactograms(n, spacing_mm, self.length, seed, overrides=overrides)
            for n in self.names
        }
        self._assigned: np.ndarray | None = None
        if stratify:
            self._assigned = self._stratified(math.ceil(self.length / 2))

    def _stratified(self, breasts: int) -> np.ndarray:
        share = self.weights * breasts
        counts = np.floor(share).astype(int)
        for k in np.argsort(-(share - counts), kind="stable")[: breasts - counts.sum()]:
            counts[k] += 1
        if breasts >= len(counts):
            for k in np.flatnonzero(counts == 0):
                counts[np.argmax(counts)] -= 1
                counts[k] = 1
        order = np.repeat(np.arange(len(counts)), counts)
        return np.random.default_rng([self.seed, self._SALT]).permutation(order)

    def preset_of(self, breast: int) -> str:
        if self._assigned is not None:
            return self.names[int(self._assigned[breast])]
        u = np.random.default_rng([self.seed, int(breast), self._SALT]).random()
        k = int(np.searchsorted(self._cumulative, u, side="right"))
        return self.names[min(k, len(self.names) - 1)]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        name = self.preset_of(int(index) // 2)
        sample = self.sources[name][int(index)]
        sample["meta"]["preset"] = name
        return self.transform(sample) if self.transform is not None else sample


def simulated_dataset(
    steps_per_epoch: int,
    batch_size: int,
    config: Any = "default",
    spacing_mm: float = 0.3,
    seed: int = 0,
    transform: Callable | None = None,
    crops_per_view: int = 1,
    overrides: list[str] | None = None,
) -> SimulatedEpochs:
    """The simulator as a training source: ``steps_per_epoch * batch_size`` samples per epoch.

    ``config``: a preset name or YAML path, a ``SimulationConfig``, or a mapping preset ->
    weight (`SimulatedMix`: each breast's preset drawn from (seed, breast)); ``overrides``
    (``key=value``) change every preset named (not a ready ``SimulationConfig``)."""
    from ductai.simulation.dataset import SimulatedGalactograms

    if isinstance(config, Mapping):
        simulator: Dataset = SimulatedMix(
            config, spacing_mm, 2**62, seed, stratify=False, overrides=overrides
        )
    else:
        simulator = SimulatedGalactograms(config, spacing_mm, 2**62, seed, overrides=overrides)
    return SimulatedEpochs(simulator, steps_per_epoch * batch_size, transform, crops_per_view)
