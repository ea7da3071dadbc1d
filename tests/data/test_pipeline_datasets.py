"""Datasets: a datalist gives the on-the-fly format, cached; loaders with workers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import ductai.data.datasets as datasets
from ductai.data.datalist import load_datalist
from ductai.data.datasets import (
    DatalistDataset,
    SimulatedMix,
    datalist_dataset,
    simulated_dataset,
)
from ductai.data.instances import boxes_from_instances
from ductai.data.labels import FINDINGS
from ductai.data.transforms import (
    AugmentConfig,
    build_train_transform,
    detection_collate,
)
from ductai.simulation.config import load_simulation_config
from ductai.simulation.dataset import SimulatedGalactograms
from ductai.simulation.generate import generate_dataset

ROOT = Path(__file__).resolve().parents[2]

SPACING = 0.3


@pytest.fixture(scope="module")
def sim_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    generate_dataset(out, n_breasts=1, seed=0)
    return out


@pytest.fixture(scope="module")
def entries(sim_folder):
    return load_datalist(sim_folder / "datalist.json")["training"]


@pytest.fixture
def count_reads(monkeypatch):
    calls = []
    original = datasets.read_galactogram

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(datasets, "read_galactogram", counting)
    return calls


def test_samples_match_the_on_the_fly_format(sim_folder, entries):
    dataset = datalist_dataset(sim_folder / "datalist.json", "training", SPACING)
    assert len(dataset) == len(entries) == 2
    # The same breast (seed 0, breast 0) rendered on the fly at the training spacing.
    on_the_fly = SimulatedGalactograms(length=2, spacing_mm=SPACING, seed=0)
    for index, sample in enumerate(dataset):
        reference = on_the_fly[index]
        assert set(reference) <= set(sample)
        for key, value in reference.items():
            if isinstance(value, np.ndarray):
                assert sample[key].dtype == value.dtype, key
                assert sample[key].ndim == value.ndim, key
        shape = sample["image"].shape
        assert shape[0] == 1
        for key in ("duct", "centerline", "instances"):
            assert sample[key].shape == shape, key
        assert sample["image"].min() >= 0.0 and sample["image"].max() <= 1.0
        assert sample["meta"]["has_duct"] and not sample["meta"]["instances_from_boxes"]
        assert np.isfinite(sample["nipple"]).all()
        assert shape == reference["image"].shape
        assert sample["meta"]["view"] == reference["meta"]["view"]
        # Full-resolution DICOM resampled vs rendered at 0.3 mm: the same geometry to a pixel.
        np.testing.assert_allclose(sample["nipple"], reference["nipple"], atol=1.5)
        np.testing.assert_array_equal(sample["labels"], reference["labels"])
        np.testing.assert_allclose(sample["boxes"], reference["boxes"], atol=2.0)


def test_boxes_agree_with_instances(entries):
    for sample in DatalistDataset(entries, SPACING):
        boxes = sample["boxes"]
        assert len(boxes) == len(sample["labels"]) == len(sample["is_mimic"]) > 0
        derived, keep = boxes_from_instances(sample["instances"], len(boxes))
        assert keep.all()
        # The stored (3D-geometry) box holds its instance's pixels, give or take a pixel.
        assert (derived[:, :2] >= np.floor(boxes[:, :2]) - 1).all()
        assert (derived[:, 2:] <= np.ceil(boxes[:, 2:]) + 1).all()
        # ... and they are the same object: the instance fills most of the box's middle.
        centres = ((boxes[:, :2] + boxes[:, 2:]) / 2).astype(int)
        for k, (x, y) in enumerate(centres, start=1):
            window = sample["instances"][0, y - 1 : y + 2, x - 1 : x + 2]
            assert (window == k).any()


def test_persistent_cache_is_hit_on_the_second_pass(tmp_path, entries, count_reads):
    cache = tmp_path / "cache"
    first = [s["image"] for s in DatalistDataset(entries, SPACING, cache_dir=cache)]
    assert len(count_reads) == 2
    assert len(list(cache.glob("*.pt"))) == 2
    again = DatalistDataset(entries, SPACING, cache_dir=cache)
    second = [again[i] for i in range(len(again))]
    assert len(count_reads) == 2  # nothing decoded again
    for a, b in zip(first, second):
        assert isinstance(b["image"], np.ndarray)  # tensors from the cache come back as numpy
        np.testing.assert_array_equal(a, b["image"])
    assert second[0]["meta"]["geometry"]["spacing_mm"] == SPACING
    # Another spacing is another cache entry.
    DatalistDataset(entries, 0.5, cache_dir=cache)[0]
    assert len(count_reads) == 3 and len(list(cache.glob("*.pt"))) == 3


def test_memory_cache_reads_once(entries, count_reads):
    dataset = DatalistDataset(entries, SPACING, in_memory=True)
    assert len(count_reads) == 2
    for _ in range(2):
        for i in range(len(dataset)):
            dataset[i]
    assert len(count_reads) == 2
    with pytest.raises(ValueError, match="one cache"):
        DatalistDataset(entries, SPACING, cache_dir="x", in_memory=True)


def test_missing_masks_are_synthesised_and_flagged(entries):
    bare = [
        e.model_copy(update={"duct": None, "instances": None, "centerline": None}) for e in entries
    ]
    sample = DatalistDataset(bare, SPACING)[0]
    assert not sample["meta"]["has_duct"] and sample["meta"]["instances_from_boxes"]
    assert sample["duct"].sum() == 0
    derived, keep = boxes_from_instances(sample["instances"], len(sample["boxes"]))
    assert keep.all()
    # Ellipses inscribed in the boxes: the derived box sits inside the stored one.
    assert (derived[:, :2] >= np.floor(sample["boxes"][:, :2])).all()
    assert (derived[:, 2:] <= np.ceil(sample["boxes"][:, 2:])).all()
    out = build_train_transform("segmentation", AugmentConfig(patch_size=64))(sample)
    assert out["channel_mask"].tolist() == [0.0, 1.0]


def test_dataloader_with_workers_from_a_cached_datalist(tmp_path, entries):
    torch.manual_seed(0)
    transform = build_train_transform("detection", AugmentConfig(patch_size=96))
    dataset = DatalistDataset(entries * 4, SPACING, cache_dir=tmp_path, transform=transform)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=detection_collate)
    batches = list(loader)
    assert len(batches) == 2
    for batch in batches:
        assert batch["image"].shape == (4, 1, 96, 96)
        assert all(b.dtype == torch.float32 and b.shape[1:] == (4,) for b in batch["boxes"])
    # Workers are seeded apart: the two batches (one per worker) are not the same crops.
    assert not torch.equal(batches[0]["image"], batches[1]["image"])


def test_simulated_source_with_workers_and_new_epochs():
    torch.manual_seed(0)
    transform = build_train_transform("segmentation", AugmentConfig(patch_size=64))
    dataset = simulated_dataset(steps_per_epoch=2, batch_size=2, seed=3, transform=transform)
    assert len(dataset) == 4
    loader = DataLoader(dataset, batch_size=2, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2
    assert batches[0]["image"].shape == (2, 1, 64, 64) and batches[0]["seg"].shape == (2, 2, 64, 64)
    raw = simulated_dataset(steps_per_epoch=1, batch_size=2, seed=3)
    first = raw[0]
    raw.set_epoch(1)
    second = raw[0]
    assert second["meta"]["epoch"] == 1 and second["meta"]["index"] == 2
    assert first["image"].shape != second["image"].shape or not np.array_equal(
        first["image"], second["image"]
    )


def test_crops_per_view_reuses_each_rendered_view():
    torch.manual_seed(0)
    transform = build_train_transform("detection", AugmentConfig(patch_size=64))
    dataset = simulated_dataset(2, 2, seed=3, crops_per_view=2)
    calls = []
    render = dataset.simulator.__getitem__
    dataset.simulator = type(
        "Counting", (), {"__getitem__": lambda s, i: calls.append(i) or render(i)}
    )()
    views = [dataset[i]["meta"]["index"] for i in range(4)]
    assert views == [0, 0, 1, 1] and calls == [0, 1]
    dataset.transform = transform
    first, second = dataset[2], dataset[3]  # one view, two different random crops
    assert not torch.equal(first["image"], second["image"])


def test_preset_mix_is_deterministic_and_weighted():
    mix = {"default": 0.7, "hard": 0.3}
    endless = SimulatedMix(mix, length=2**62, seed=5, stratify=False)
    picks = [endless.preset_of(b) for b in range(2000)]
    again = SimulatedMix({"hard": 3, "default": 7}, length=2**62, seed=5, stratify=False)
    assert picks == [again.preset_of(b) for b in range(2000)]  # (seed, breast) only
    assert abs(picks.count("hard") / len(picks) - 0.3) < 0.04
    other_seed = SimulatedMix(mix, length=2**62, seed=6, stratify=False)
    assert picks != [other_seed.preset_of(b) for b in range(2000)]
    # A fixed set holds each preset in proportion, each at least once; same seed, same set.
    for views, hard in ((8, 1), (3, 1), (20, 3), (64, 10)):
        fixed = SimulatedMix(mix, length=views, seed=5)
        breasts = [fixed.preset_of(b) for b in range((views + 1) // 2)]
        assert breasts.count("hard") == hard, (views, breasts)
        assert breasts == [
            SimulatedMix(mix, length=views, seed=5).preset_of(b) for b in range(len(breasts))
        ]
    with pytest.raises(ValueError, match="positive weights"):
        SimulatedMix({"default": 1, "hard": 0})


def test_preset_mix_renders_each_breast_with_its_preset():
    mix = SimulatedMix({"default": 0.5, "hard": 0.5}, spacing_mm=2.0, length=4, seed=1)
    presets = [mix.preset_of(b) for b in range(2)]
    assert sorted(presets) == ["default", "hard"]
    for index in range(4):
        sample = mix[index]
        name = presets[index // 2]
        assert sample["meta"]["preset"] == name and sample["meta"]["index"] == index
        alone = SimulatedGalactograms(name, spacing_mm=2.0, length=4, seed=1)[index]
        assert np.array_equal(sample["image"], alone["image"])
    stream = simulated_dataset(1, 2, config={"default": 0.5, "hard": 0.5}, spacing_mm=2.0, seed=1)
    assert isinstance(stream.simulator, SimulatedMix)
    assert stream[0]["meta"]["preset"] == stream.simulator.preset_of(0)


def test_train_overrides_change_the_training_views_only():
    """`data.simulation.train_overrides` reshape every training preset (here: only cut-offs,
    three per breast); validation keeps the presets as shipped."""
    from ductai.data.labels import CLASSES
    from ductai.training.config import load_train_config
    from ductai.training.loaders import build_datasets

    weights = {name: int(name == "cutoff") for name in FINDINGS}
    overrides = ["anatomy.findings.count_probabilities=[0,0,0,1]"] + [
        f"anatomy.findings.class_weights.{name}={w}" for name, w in weights.items()
    ]
    config = load_train_config(
        ROOT / "configs/segmentation/small_cpu.yaml",
        [f"data.simulation.train_overrides={json.dumps(overrides)}", "data.spacing_mm=2.0"],
    )
    train, val = build_datasets(config)
    for index in range(4):
        sample = train.simulator[index]
        found = [CLASSES[k] for k, mimic in zip(sample["labels"], sample["is_mimic"]) if not mimic]
        assert found and set(found) == {"cutoff"}, (index, found)
    for name, source in val.sources.items():
        shipped = load_simulation_config(name).anatomy.findings
        assert source.config.anatomy.findings == shipped
        assert train.simulator.sources[name].config.anatomy.findings.class_weights == weights
    with pytest.raises(ValueError, match="not a SimulationConfig"):  # would be ignored
        SimulatedGalactograms(load_simulation_config("default"), overrides=overrides)
