"""The on-the-fly dataset: canonical space, reproducibility, and agreement with the disk path."""

from __future__ import annotations

import numpy as np
import torch

from ductai.data.canonical import to_canonical
from ductai.data.dicom_reader import read_galactogram
from ductai.data.labels import CLASSES
from ductai.simulation.config import load_simulation_config
from ductai.simulation.dataset import SimulatedGalactograms, canonical_sample
from ductai.simulation.dicom_writer import DicomIdentity, write_mg_dicom
from ductai.simulation.sample import simulate_breast


def test_items_are_canonical_training_samples():
    ds = SimulatedGalactograms("default", spacing_mm=0.4, length=8, seed=5)
    for index in range(4):
        item = ds[index]
        image = item["image"]
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[0] == 1
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert item["duct"].shape == image.shape and item["duct"].any()
        height, width = image.shape[1:]
        boxes = item["boxes"]
        assert boxes.shape == (len(item["labels"]), 4)
        assert np.all(boxes[:, 0] < boxes[:, 2]) and np.all(boxes[:, 1] < boxes[:, 3])
        assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= width)
        assert np.all(boxes[:, [1, 3]] <= height)
        assert all(0 <= label < len(CLASSES) for label in item["labels"])
        # Canonical orientation: the nipple points right, the chest wall is at column 0.
        tissue = image[0] > 0.05
        tissue_cols = np.nonzero(tissue.any(axis=0))[0]
        assert item["nipple"][0] > tissue_cols.mean()
        assert tissue[:, : width // 10].mean() > tissue[:, -width // 10 :].mean()
        assert item["meta"]["view"] in (("CC",) if index % 2 == 0 else ("MLO", "ML"))


def test_reproducible_and_loader_ready():
    a = SimulatedGalactograms("default", spacing_mm=0.4, length=4, seed=2)
    b = SimulatedGalactograms("default", spacing_mm=0.4, length=4, seed=2)
    assert np.array_equal(a[3]["image"], b[3]["image"])
    assert not np.array_equal(a[2]["image"], a[0]["image"])
    loader = torch.utils.data.DataLoader(a, batch_size=None, num_workers=2)
    images = [item["image"] for item in loader]
    assert len(images) == 4 and np.array_equal(np.asarray(images[3]), a[3]["image"])


def test_disk_and_on_the_fly_paths_agree(tmp_path):
    """A view written as DICOM and read back lands in the same canonical image."""
    config = load_simulation_config("default")
    (view,) = simulate_breast(config, seed=3, index=0, spacing_mm=0.25, slots=(0,))
    path = tmp_path / "view.dcm"
    write_mg_dicom(path, view.rendered, DicomIdentity.generate("P", "3"))
    from_disk, geometry = to_canonical(read_galactogram(path), 0.25)
    on_the_fly = canonical_sample(view, 0.25)
    assert on_the_fly["meta"]["geometry"] == geometry.to_dict()
    np.testing.assert_allclose(on_the_fly["image"][0], from_disk, atol=1e-5)
