"""COCO and mask-image importers; the box axis convention against MONAI's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from monai.apps.detection.transforms.box_ops import convert_mask_to_box
from PIL import Image

from ductai.data.datalist import load_datalist, split_by_patient, write_datalist
from ductai.data.errors import DatalistError
from ductai.data.import_coco import import_coco, segmentation_to_mask
from ductai.data.import_masks import import_masks
from ductai.data.label_masks import boxes_from_mask, read_mask


def _rle_string(counts: list[int]) -> str:
    """pycocotools' rleToString, to produce compressed RLE test input."""
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def _rle_counts(mask: np.ndarray) -> list[int]:
    flat = mask.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], edges])).tolist()


def test_boxes_follow_ductai_axes_and_monai_uses_array_axes():
    mask = np.zeros((10, 20), dtype=np.uint8)
    mask[2:4, 5:9] = 1
    boxes, labels = boxes_from_mask(mask, {1: "papilloma"})
    assert boxes == [[5.0, 2.0, 9.0, 4.0]] and labels == ["papilloma"]
    monai_boxes, _ = convert_mask_to_box(mask[None], bg_label=0)
    np.testing.assert_array_equal(monai_boxes[0], [2, 5, 4, 9])  # [row0, col0, row1, col1]


def test_components_or_instances():
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[1:3, 1:3] = 1
    mask[6:9, 6:8] = 1
    mask[0, 9] = 2
    boxes, labels = boxes_from_mask(mask, {1: "papilloma", 2: "air_bubble"})
    assert boxes == [[1, 1, 3, 3], [6, 6, 8, 9], [9, 0, 10, 1]]
    assert labels == ["papilloma", "papilloma", "air_bubble"]
    boxes, _ = boxes_from_mask(mask, default_class="cutoff", split_components=False)
    assert boxes[0] == [1, 1, 8, 9]
    with pytest.raises(ValueError, match=r"mask values \[1, 2\] have no class"):
        boxes_from_mask(mask)


def test_polygon_and_rle_segmentations_decode_to_the_same_mask():
    expected = np.zeros((12, 9), dtype=bool)
    expected[3:7, 2:6] = True
    polygon = [[2, 3, 6, 3, 6, 7, 2, 7]]  # pixel edges in continuous coordinates
    np.testing.assert_array_equal(segmentation_to_mask(polygon, (12, 9)), expected)
    counts = _rle_counts(expected)
    plain = {"size": [12, 9], "counts": counts}
    np.testing.assert_array_equal(segmentation_to_mask(plain, (12, 9)), expected)
    compact = {"size": [12, 9], "counts": _rle_string(counts)}
    np.testing.assert_array_equal(segmentation_to_mask(compact, (12, 9)), expected)


def _coco(tmp_path, dicom, categories):
    images_root = tmp_path / "imgs"
    images_root.mkdir()
    for pid, lat, view in (("A", "R", "CC"), ("A", "R", "MLO"), ("B", "L", "CC")):
        ds = dicom.make(laterality=lat, view=view)
        ds.PatientID = pid
        dicom.write(ds, images_root / f"{pid}_{lat}{view}.dcm")
    coco = {
        "images": [
            {"id": 1, "file_name": "A_RCC.dcm", "width": 48, "height": 60},
            {"id": 2, "file_name": "A_RMLO.dcm", "width": 48, "height": 60},
            {"id": 3, "file_name": "B_LCC.dcm", "width": 48, "height": 60, "patient_id": "Bx"},
        ],
        "categories": categories,
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 20, 5, 6]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4]},
            {
                "id": 3,
                "image_id": 2,
                "category_id": 3,
                "bbox": [0, 0, 4, 4],
                "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]],
            },
        ],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    return path, images_root


def test_import_coco(tmp_path, dicom):
    categories = [
        {"id": 1, "name": "Papilloma"},
        {"id": 2, "name": "air bubble"},
        {"id": 3, "name": "duct"},
    ]
    path, root = _coco(tmp_path, dicom, categories)
    entries = import_coco(path, root)
    first, second, third = entries
    assert first.boxes == [[10, 20, 15, 26], [1, 2, 4, 6]]
    assert first.labels == ["papilloma", "air_bubble"]
    assert (first.patient_id, first.laterality, first.view) == ("A", "R", "CC")
    assert third.patient_id == "Bx"  # the COCO record wins over the header
    assert second.boxes == [] and second.duct is not None
    duct = read_mask(second.duct)
    assert duct.shape == (60, 48) and duct[:4, :4].all() and duct.sum() == 16
    datalist = write_datalist(tmp_path / "datalist.json", split_by_patient(entries, seed=0))
    assert load_datalist(datalist)


def test_unknown_coco_category_is_a_clear_error_unless_mapped(tmp_path, dicom):
    categories = [
        {"id": 1, "name": "lesion"},
        {"id": 2, "name": "bubble"},
        {"id": 3, "name": "vessel"},
    ]
    path, root = _coco(tmp_path, dicom, categories)
    with pytest.raises(DatalistError) as caught:
        import_coco(path, root)
    assert "unknown COCO category 'lesion': map it with category_map" in str(caught.value)
    assert "'vessel'" in str(caught.value)
    entries = import_coco(path, root, category_map={"lesion": "papilloma", "vessel": None})
    assert entries[0].labels == ["papilloma", "air_bubble"] and entries[1].duct is None


def test_import_masks(tmp_path, dicom):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for name in ("one", "two", "three"):
        dicom.write(dicom.make(laterality="L", view="MLO"), images / f"{name}.dcm")
    lesions = np.zeros((60, 48), dtype=np.uint8)
    lesions[5:10, 5:8] = 1
    lesions[30:33, 20:30] = 2
    Image.fromarray(lesions).save(masks / "one_lesions.png")
    Image.fromarray((lesions > 0).astype(np.uint8)).save(masks / "two_duct.png")
    entries = import_masks(images, masks, classes={1: "papilloma", 2: "calcification"})
    assert [e.image.rsplit("/", 1)[-1] for e in entries] == ["one.dcm", "two.dcm"]
    assert entries[0].boxes == [[5, 5, 8, 10], [20, 30, 30, 33]]
    assert entries[0].labels == ["papilloma", "calcification"]
    assert entries[0].duct is None and entries[1].duct.endswith("two_duct.png")
    assert (entries[0].patient_id, entries[0].laterality, entries[0].view) == ("P001", "L", "MLO")
    with pytest.raises(
        DatalistError, match=r"one_lesions\.png: mask values \[1, 2\] have no class"
    ):
        import_masks(images, masks)
