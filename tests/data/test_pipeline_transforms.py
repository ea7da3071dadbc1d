"""Training/validation transforms: a box follows its lesion through every augmentation."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch

from ductai.data.instances import boxes_from_instances, paint_missing_instances
from ductai.data.labels import CLASSES
from ductai.data.transforms import (
    AugmentConfig,
    TrainTransform,
    build_train_transform,
    build_val_transform,
    detection_collate,
    geometric_augmentations,
    photometric_augmentations,
)

ROWS, COLS = 220, 260
GEOMETRIC = ("Affine", "VerticalFlip", "ElasticTransform", "GridDistortion")
PAPILLOMA, CUTOFF, BUBBLE = (CLASSES.index(n) for n in ("papilloma", "cutoff", "air_bubble"))


def synthetic_sample() -> dict:
    """Breast tissue (0.3, brighter to the right), a duct, two findings and a mimic whose
    pixels are bright (0.95) in the image: so the image must move with the masks too."""
    r, c = np.mgrid[:ROWS, :COLS]
    image = (0.2 + 0.2 * c / COLS).astype(np.float32)
    duct = (np.abs(r - 110) < 3).astype(np.uint8)
    instances = np.zeros((ROWS, COLS), np.int32)
    instances[((r - 100) / 9) ** 2 + ((c - 80) / 14) ** 2 <= 1] = 1  # papilloma, oval
    instances[(r >= 140) & (r < 152) & (c >= 170) & (c < 178)] = 2  # cut-off, small block
    instances[(r - 60) ** 2 + (c - 190) ** 2 <= 36] = 3  # air bubble, round
    image[instances > 0] = 0.95
    boxes, _ = boxes_from_instances(instances, 3)
    return {
        "image": image[None],
        "duct": duct[None],
        "centerline": (np.abs(r - 110) < 1).astype(np.uint8)[None],
        "instances": instances[None],
        "boxes": boxes,
        "labels": np.array([PAPILLOMA, CUTOFF, BUBBLE], dtype=np.int64),
        "is_mimic": np.array([False, False, True]),
        "nipple": np.array([COLS, 110], dtype=np.float32),
        "meta": {"laterality": "R", "view": "CC"},
    }


def all_on(**overrides) -> AugmentConfig:
    """Every augmentation with probability 1."""
    cfg = AugmentConfig(patch_size=128, **overrides)
    probabilities = {n: 1.0 for n in AugmentConfig.model_fields if n.endswith("_p")}
    return cfg.model_copy(update=probabilities)


def individual_transforms() -> list[A.BasicTransform]:
    cfg = all_on()
    out = []
    for t in geometric_augmentations(cfg) + photometric_augmentations(cfg):
        children = t.transforms if isinstance(t, A.OneOf) else [t]
        for child in children:
            child.p = 1.0
            out.append(child)
    return out


def check_boxes_follow_instances(out: dict) -> None:
    instances = out["instances"][0].numpy()
    boxes = out["boxes"].numpy()
    assert len(boxes) == len(out["object_ids"]) == len(out["labels"])
    for box, value in zip(boxes, out["object_ids"].tolist()):
        rows, cols = np.nonzero(instances == value)
        assert len(rows) > 0
        tight = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        np.testing.assert_array_equal(box, tight)
        assert (cols + 0.5 > box[0]).all() and (cols + 0.5 < box[2]).all()
        assert (rows + 0.5 > box[1]).all() and (rows + 0.5 < box[3]).all()
    # Objects not reported are gone (or nearly) from the patch.
    dropped = set(range(1, 4)) - set(out["object_ids"].tolist())
    for value in dropped:
        assert (instances == value).sum() < 2


def check_image_follows_instances(out: dict) -> None:
    image = out["image"][0].numpy()
    inside = out["instances"][0].numpy() > 0
    if inside.sum() > 20:
        # Lesion pixels stay bright, the tissue around them stays darker (photometric changes
        # keep the order; geometric ones move image and masks together).
        assert np.median(image[inside]) > np.median(image[~inside]) + 0.2


@pytest.mark.parametrize("transform", individual_transforms(), ids=lambda t: type(t).__name__)
def test_box_follows_lesion_through_each_transform(transform):
    torch.manual_seed(0)
    cfg = AugmentConfig(
        patch_size=128, positive_fraction=0.6, mimic_fraction=0.4, duct_fraction=0.0
    )
    tr = TrainTransform("detection", cfg, augmentations=[transform], return_instances=True)
    sample = synthetic_sample()
    moved = 0
    for _ in range(12):
        out = tr(sample)
        check_boxes_follow_instances(out)
        check_image_follows_instances(out)
        assert len(out["boxes"]) >= 1  # positive and mimic crops keep their object
        # Without geometry, boxes are the stored boxes shifted by the crop.
        crop = tr.last_crop
        shift = np.float32([crop.col0, crop.row0, crop.col0, crop.row0])
        expected = sample["boxes"][out["object_ids"].numpy() - 1] - shift
        whole = (expected[:, :2] >= 0).all(1) & (expected[:, 2:] <= 128).all(1)
        moved += not np.array_equal(out["boxes"].numpy()[whole], expected[whole])
    if type(transform).__name__ in GEOMETRIC:
        assert moved > 0, "a geometric transform should move boxes"
    else:
        assert moved == 0, "a photometric transform must not move boxes"


def test_box_follows_lesion_through_full_pipeline():
    torch.manual_seed(1)
    tr = TrainTransform("detection", all_on(), return_instances=True)
    sample = synthetic_sample()
    for _ in range(30):
        out = tr(sample)
        check_boxes_follow_instances(out)
        check_image_follows_instances(out)


def test_segmentation_lesion_channel_is_union_of_findings():
    torch.manual_seed(2)
    tr = TrainTransform("segmentation", all_on(), return_instances=True)
    for _ in range(10):
        out = tr(synthetic_sample())
        instances = out["instances"][0].numpy()
        expected = np.isin(instances, [1, 2]).astype(np.float32)  # not the bubble (3)
        np.testing.assert_array_equal(out["seg"][1].numpy(), expected)
        assert set(np.unique(out["seg"].numpy())) <= {0.0, 1.0}


def test_no_horizontal_flip_or_inversion():
    forbidden = (A.HorizontalFlip, A.Transpose, A.RandomRotate90, A.D4, A.InvertImg)
    pipeline = A.Compose(geometric_augmentations(all_on()) + photometric_augmentations(all_on()))

    def walk(t):
        yield t
        for child in getattr(t, "transforms", []):
            yield from walk(child)

    assert not any(isinstance(t, forbidden) for t in walk(pipeline))
    # Functionally: tissue brightens towards the nipple (right); it still does after
    # every geometric augmentation at probability 1, and the lesion stays bright.
    torch.manual_seed(3)
    tr = TrainTransform("segmentation", all_on(rotate_deg=15), geometric_augmentations(all_on()))
    sample = synthetic_sample()
    sample["image"][0][sample["instances"][0] > 0] = 0.3  # keep only the gradient
    for _ in range(20):
        image = tr(sample)["image"][0].numpy()
        middle = image[32:96]
        left, right = middle[:, 8:40], middle[:, 88:120]
        tissue_left, tissue_right = left[left > 0.1], right[right > 0.1]
        if len(tissue_left) > 50 and len(tissue_right) > 50:
            assert np.median(tissue_right) > np.median(tissue_left)


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_output_types_and_shapes(task):
    torch.manual_seed(4)
    out = build_train_transform(task, AugmentConfig(patch_size=(96, 128)))(synthetic_sample())
    assert out["image"].dtype == torch.float32 and out["image"].shape == (1, 96, 128)
    assert float(out["image"].min()) >= 0.0 and float(out["image"].max()) <= 1.0
    if task == "segmentation":
        assert out["seg"].dtype == torch.float32 and out["seg"].shape == (2, 96, 128)
        assert out["channel_mask"].tolist() == [1.0, 1.0]
        assert "boxes" not in out
    else:
        assert out["boxes"].dtype == torch.float32 and out["boxes"].shape[1:] == (4,)
        assert out["labels"].dtype == torch.int64 and out["labels"].shape == out["boxes"].shape[:1]
        assert "seg" not in out


def test_validation_transform_whole_image_and_centre_crop():
    sample = synthetic_sample()
    whole = build_val_transform("detection")(sample)
    assert whole["image"].shape == (1, ROWS, COLS)
    np.testing.assert_array_equal(whole["boxes"].numpy(), sample["boxes"])
    assert whole["meta"] == sample["meta"]
    seg = build_val_transform("segmentation")(sample)
    assert seg["seg"].shape == (2, ROWS, COLS)
    np.testing.assert_array_equal(seg["seg"][0].numpy(), sample["duct"][0])
    cfg = AugmentConfig(patch_size=128, val_center_crop=True)
    crop = build_val_transform("detection", cfg)(sample)
    assert crop["image"].shape == (1, 128, 128)
    row0, col0 = (ROWS - 128) // 2, (COLS - 128) // 2
    np.testing.assert_array_equal(
        crop["image"][0].numpy(), sample["image"][0, row0 : row0 + 128, col0 : col0 + 128]
    )
    # The bubble is cut by the crop's right edge: its box is clipped there.
    expected = np.clip(sample["boxes"] - np.float32([col0, row0, col0, row0]), 0, 128)
    assert expected[2, 2] == 128
    np.testing.assert_allclose(crop["boxes"].numpy(), expected)


def test_positive_and_mimic_crops_contain_their_object():
    torch.manual_seed(5)
    sample = synthetic_sample()
    positive = TrainTransform(
        "detection",
        AugmentConfig(patch_size=64, positive_fraction=1.0, mimic_fraction=0, duct_fraction=0),
    )
    mimic = TrainTransform(
        "detection",
        AugmentConfig(patch_size=64, positive_fraction=0.0, mimic_fraction=1.0, duct_fraction=0),
    )
    centres = []
    for _ in range(25):
        out = positive(sample)
        assert positive.last_crop.kind == "positive"
        assert set(out["labels"].tolist()) & {PAPILLOMA, CUTOFF}
        out = mimic(sample)
        assert mimic.last_crop.kind == "mimic"
        assert BUBBLE in out["labels"].tolist()
        crop = mimic.last_crop
        centres.append((crop.row0, crop.col0))
    # Random placement: the mimic is not always at the same spot of the patch.
    assert len(set(centres)) > 5


def test_objects_without_instance_pixels_get_an_ellipse_in_their_box():
    boxes = np.array([[10, 20, 30, 28], [50.2, 5.1, 50.7, 5.6]], dtype=np.float32)
    painted, drawn = paint_missing_instances(None, boxes, (40, 60))
    assert drawn.tolist() == [True, True]
    derived, keep = boxes_from_instances(painted, 2)
    assert keep.all()
    np.testing.assert_array_equal(derived[0], boxes[0])  # inscribed: touches every side
    assert derived[1].tolist() == [50, 5, 51, 6]  # a sub-pixel box still gets its pixel
    # A real instance mask wins: nothing is painted over it.
    again, drawn = paint_missing_instances(painted, boxes, (40, 60))
    assert not drawn.any() and np.array_equal(again, painted)


def test_missing_duct_label_is_masked_out():
    sample = synthetic_sample()
    sample["meta"] = {"has_duct": False}
    out = build_train_transform("segmentation", AugmentConfig(patch_size=64))(sample)
    assert out["channel_mask"].tolist() == [0.0, 1.0]


def test_detection_collate():
    torch.manual_seed(6)
    tr = build_train_transform("detection", AugmentConfig(patch_size=64))
    batch = detection_collate([tr(synthetic_sample()) for _ in range(3)])
    assert batch["image"].shape == (3, 1, 64, 64)
    assert len(batch["boxes"]) == len(batch["labels"]) == 3
    val = build_val_transform("detection")
    small = synthetic_sample()
    small["image"] = small["image"][:, :100]
    for key in ("duct", "centerline", "instances"):
        small[key] = small[key][:, :100]
    mixed = detection_collate([val(synthetic_sample()), val(small)])
    assert isinstance(mixed["image"], list) and len(mixed["meta"]) == 2


def test_config_rejects_unknown_keys_and_bad_fractions():
    with pytest.raises(ValueError, match="horizontal_flip_p"):
        AugmentConfig(horizontal_flip_p=0.5)
    with pytest.raises(ValueError, match="fractions"):
        AugmentConfig(positive_fraction=0.8, mimic_fraction=0.3)
    with pytest.raises(ValueError, match="affine_p"):
        AugmentConfig(affine_p=1.5)
    assert AugmentConfig(patch_size=96).patch_size == (96, 96)
