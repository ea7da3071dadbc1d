"""Crop sampling: which window a training patch comes from."""

from __future__ import annotations

import numpy as np

from ductai.data.sampling import Crop, CropSampler, crop_padded


def sample_with(boxes, is_mimic, shape=(300, 400), tissue_cols=200, duct_row=None) -> dict:
    image = np.zeros((1, *shape), np.float32)
    image[0, :, :tissue_cols] = 0.4  # breast on the chest-wall side, air to the right
    duct = np.zeros((1, *shape), np.uint8)
    if duct_row is not None:
        duct[0, duct_row, 20:60] = 1
    return {
        "image": image,
        "duct": duct,
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "is_mimic": np.asarray(is_mimic, bool),
    }


def window_holds(crop: Crop, box) -> bool:
    x0, y0, x1, y1 = box
    return (
        crop.col0 <= np.floor(x0)
        and np.ceil(x1) <= crop.col0 + crop.width
        and crop.row0 <= np.floor(y0)
        and np.ceil(y1) <= crop.row0 + crop.height
    )


def test_positive_windows_hold_the_box_at_varying_offsets_inside_the_image():
    box = [150.5, 120.2, 170.0, 131.7]
    sampler = CropSampler((64, 64), positive_fraction=1.0, mimic_fraction=0, duct_fraction=0)
    sample = sample_with([box], [False])
    rng = np.random.default_rng(0)
    crops = [sampler.choose(sample, rng) for _ in range(200)]
    assert all(c.kind == "positive" and window_holds(c, box) for c in crops)
    assert all(c.row0 >= 0 and c.row0 + 64 <= 300 for c in crops)
    # The edge margin holds: the box starts at least 16 px from the window's left edge...
    assert min(150 - c.col0 for c in crops) >= 16
    # ... and the object's position in the patch varies (not always centred).
    assert len({(c.row0, c.col0) for c in crops}) > 50


def test_an_object_larger_than_the_patch_is_covered_by_the_window():
    box = [10, 10, 200, 40]  # wider than the patch (extravasation)
    sampler = CropSampler((64, 64), positive_fraction=1.0, mimic_fraction=0, duct_fraction=0)
    rng = np.random.default_rng(1)
    for _ in range(50):
        crop = sampler.choose(sample_with([box], [False]), rng)
        assert crop.col0 >= 10 and crop.col0 + 64 <= 200  # inside the object's extent
        assert crop.row0 <= 10 and crop.row0 + 64 >= 40


def test_mimic_duct_and_random_windows_and_fallbacks():
    boxes = [[100, 100, 110, 110], [300, 200, 306, 206]]
    rng = np.random.default_rng(2)
    mimic = CropSampler((64, 64), positive_fraction=0, mimic_fraction=1, duct_fraction=0)
    sample = sample_with(boxes, [False, True], duct_row=250)
    for _ in range(20):
        crop = mimic.choose(sample, rng)
        assert crop.kind == "mimic" and window_holds(crop, boxes[1])
    duct = CropSampler((64, 64), positive_fraction=0, mimic_fraction=0, duct_fraction=1)
    for _ in range(20):
        crop = duct.choose(sample, rng)
        assert crop.kind == "duct" and crop_padded(sample["duct"], crop).any()
    # No finding in the image: a positive draw falls back to the duct, then the breast.
    positive = CropSampler((64, 64), positive_fraction=1, mimic_fraction=0, duct_fraction=0)
    assert positive.choose(sample_with(boxes[1:], [True], duct_row=250), rng).kind == "duct"
    random_crops = [positive.choose(sample_with([], []), rng) for _ in range(50)]
    assert all(c.kind == "random" for c in random_crops)
    # Random windows contain breast tissue (the right half of the image is air).
    assert all(crop_padded(sample["image"], c).max() > 0 for c in random_crops)


def test_mimic_windows_also_land_on_burnt_in_markers():
    """Markers are no target but the same kind of hard negative as a mimic."""
    rng = np.random.default_rng(3)
    mimic = CropSampler((64, 64), positive_fraction=0, mimic_fraction=1, duct_fraction=0)
    finding, marker = [100, 100, 110, 110], [330, 20, 380, 40]
    sample = sample_with([finding], [False])
    sample["markers"] = np.asarray([marker], np.float32)
    crops = [mimic.choose(sample, rng) for _ in range(20)]
    assert all(c.kind == "mimic" and window_holds(c, marker) for c in crops)
    # with a mimic as well, both are drawn
    sample = sample_with([finding, [50, 250, 56, 256]], [False, True])
    sample["markers"] = np.asarray([marker], np.float32)
    held = [window_holds(mimic.choose(sample, rng), marker) for _ in range(60)]
    assert 0 < sum(held) < 60


def test_windows_past_the_image_are_zero_padded():
    image = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    out = crop_padded(image, Crop("random", -1, 2, 5, 4))
    assert out.shape == (1, 5, 4)
    np.testing.assert_array_equal(out[0, 1:4, :2], image[0, :, 2:])
    assert out[0, 0].sum() == 0 and out[0, 4].sum() == 0 and out[0, :, 2:].sum() == 0
    # An image smaller than the patch: the window is larger than the image.
    small = sample_with([[2, 2, 5, 5]], [False], shape=(20, 30), tissue_cols=30)
    sampler = CropSampler((64, 64), positive_fraction=1, mimic_fraction=0, duct_fraction=0)
    crop = sampler.choose(small, np.random.default_rng(3))
    patch = crop_padded(small["image"], crop)
    assert patch.shape == (1, 64, 64) and np.isclose(patch.sum(), small["image"].sum())
