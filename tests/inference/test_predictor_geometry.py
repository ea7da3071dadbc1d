"""Coordinates through the predictor: truth boxes round trip, flip TTA, crop to the breast.

The tiny fixture nets find nothing useful, so the coordinate path is checked with an oracle:
the simulator's truth boxes, mapped into the canonical crop as the detector would report them,
go through the predictor's own post-processing and back to the DICOM grid.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ductai.data.canonical import to_canonical
from ductai.data.dicom_reader import read_galactogram
from ductai.data.labels import CLASSES, FINDINGS
from ductai.inference.crop import BreastRegion, Crop
from ductai.inference.lesions import box_size_mm, lesion_record
from ductai.inference.postprocess import (
    RawDetections,
    flip_rows_boxes,
    fuse_scores,
    merge_tta,
    nms_across_classes,
)
from ductai.inference.predictor import Predictor


@pytest.fixture(scope="module")
def oracle_predictor(tiny_bundle):
    # nms_iou=1: truth objects may touch (bubbles in a row); keep them all. The detector's boxes
    # are the findings here: the component rule (tests/inference/test_candidates.py) would
    # replace them by pixel extents.
    return Predictor.from_path(
        tiny_bundle, backend="eager", nms_iou=1.0, score_threshold=0.0, lesion_source="detector"
    )


def test_truth_boxes_round_trip_to_the_dicom_grid(oracle_predictor, simulated_study):
    seen_finding = seen_mimic = False
    for path in simulated_study.images:
        truth = simulated_study.truth_for(path)
        objects = truth["objects"]
        image = read_galactogram(path)
        canonical, geometry = to_canonical(image, oracle_predictor.spacing_mm)
        crop = BreastRegion.of(canonical).crop()
        full = geometry.boxes_to_canonical(np.array([o["bbox_px"] for o in objects]))
        scores = np.linspace(0.9, 0.5, len(objects))
        labels = np.array([CLASSES.index(o["label"]) for o in objects])
        raw = RawDetections(crop.boxes_to_crop(full), scores, labels)
        # A lesion channel of 0.8 over each finding's box: the fused score is known.
        probs = np.zeros((2, *crop.shape), np.float32)
        for box, o in zip(crop.boxes_to_crop(full), objects):
            if o["label"] in FINDINGS:
                x0, y0, x1, y1 = box
                probs[1, int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = 0.8
        duct, lesion, (findings, mimics) = oracle_predictor.postprocess(probs, raw, crop)

        assert duct.shape == lesion.shape == canonical.shape
        truth_findings = [o for o in objects if not o["is_mimic"]]
        truth_mimics = [o for o in objects if o["is_mimic"]]
        assert len(findings) == len(truth_findings) and len(mimics) == len(truth_mimics)
        assert all(d.label in FINDINGS for d in findings)
        by_label_box = {(o["label"], tuple(o["bbox_px"])): o for o in objects}
        for det in findings + mimics:
            record = lesion_record(det, geometry)
            match = [
                o
                for (label, box), o in by_label_box.items()
                if label == det.label and np.allclose(box, record.bbox_px, atol=1e-6)
            ]
            assert len(match) == 1, (det, record.bbox_px)
            o = match[0]
            x0, y0, x1, y1 = o["bbox_px"]
            assert x0 <= record.center_px[0] <= x1 and y0 <= record.center_px[1] <= y1
            width, height = box_size_mm(o["bbox_px"], truth["pixel_spacing_mm"])
            assert record.diameter_mm == pytest.approx(max(width, height))
            i = objects.index(o)
            if o["is_mimic"]:
                assert det.score == pytest.approx(scores[i])  # mimics are never fused
                seen_mimic = True
            else:
                assert det.score == pytest.approx(0.5 * scores[i] + 0.5 * 0.8)
                # The heatmap holds the lesion: channel and Gaussian peak at the centre.
                cx, cy = (np.asarray(det.box[:2]) + det.box[2:]) / 2
                assert lesion[int(cy), int(cx)] >= 0.8 - 1e-6
                seen_finding = True
    assert seen_finding and seen_mimic


def test_mimic_wins_nms_over_a_finding_at_the_same_place():
    box = np.array([[10.0, 10.0, 20.0, 20.0]])
    raw = RawDetections(
        np.concatenate([box, box + 0.5]),
        np.array([0.4, 0.9]),
        np.array([FINDINGS.index("papilloma"), CLASSES.index("air_bubble")]),
    )
    kept = nms_across_classes(raw, iou=0.3)
    assert [CLASSES[i] for i in kept.labels] == ["air_bubble"]


def test_fusion_rule():
    lesion_map = np.zeros((20, 20), np.float32)
    lesion_map[5:8, 5:8] = 0.6
    boxes = np.array([[4.0, 4.0, 9.0, 9.0], [12.0, 12.0, 15.0, 15.0]])
    fused = fuse_scores(np.array([0.8, 0.8]), boxes, lesion_map, weight=0.5)
    np.testing.assert_allclose(fused, [0.7, 0.4])
    np.testing.assert_allclose(fuse_scores(np.array([0.8]), boxes[:1], None, 0.5), [0.8])


def test_flip_inverts_boxes_exactly():
    height = 50
    mask = np.zeros((height, 30), bool)
    mask[10:20, 5:10] = True  # pixels rows 10..19, cols 5..9 -> box [5, 10, 10, 20]
    box = np.array([[5.0, 10.0, 10.0, 20.0]])
    rows, cols = np.nonzero(mask[::-1])
    flipped_box = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    np.testing.assert_array_equal(flip_rows_boxes(box, height)[0], flipped_box)
    np.testing.assert_array_equal(flip_rows_boxes(flip_rows_boxes(box, height), height), box)


def test_tta_merge_averages_scores_per_class():
    box = np.array([[5.0, 10.0, 10.0, 20.0]])
    one = RawDetections(box, np.array([0.8]), np.array([0]))
    same = RawDetections(box + 0.1, np.array([0.6]), np.array([0]))
    merged = merge_tta([one, same])
    assert len(merged) == 1 and merged.scores[0] == pytest.approx(0.7)
    missed = merge_tta([one, RawDetections.empty()])
    assert missed.scores[0] == pytest.approx(0.4)
    other_class = merge_tta([one, RawDetections(box, np.array([0.6]), np.array([1]))])
    assert sorted(other_class.scores) == pytest.approx([0.3, 0.4])


def test_tta_detection_pass_is_flipped_back(tiny_bundle, simulated_study):
    predictor = Predictor.from_path(
        tiny_bundle, backend="eager", tta=True, detector_score_threshold=0.0
    )
    canonical, _ = to_canonical(read_galactogram(simulated_study.images[0]), 1.0)
    x = torch.from_numpy(canonical)[None, None]
    with torch.inference_mode():
        got = predictor._detect(x)
        (plain,) = predictor.detector(x)
        (flipped,) = predictor.detector(torch.flip(x, dims=[-2]))
    back = RawDetections.from_torch(flipped)
    back.boxes = flip_rows_boxes(back.boxes, x.shape[-2])
    expected = merge_tta([RawDetections.from_torch(plain), back])
    assert len(got) > 0
    np.testing.assert_allclose(got.boxes, expected.boxes)
    np.testing.assert_allclose(got.scores, expected.scores)


def _breast_and_marker(marker=(slice(5, 8), slice(100, 103))) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = 0.03 + 0.005 * rng.random((100, 120), dtype=np.float32)
    image[20:80, 0:60] = 0.3  # breast against the chest wall (column 0)
    image[marker] = 1.0  # a burnt-in marker in the air
    return image


def test_breast_crop_ignores_air_and_markers():
    crop = BreastRegion.of(_breast_and_marker()).crop(margin=4)
    assert (crop.r0, crop.r1, crop.c0, crop.c1) == (16, 84, 0, 64)
    assert crop.fraction < 0.5
    assert BreastRegion.of(np.zeros((10, 12), np.float32)).crop() == Crop.whole((10, 12))


def test_breast_gate_drops_markers_and_keeps_the_breast():
    gate = BreastRegion.of(_breast_and_marker((slice(5, 9), slice(100, 110)))).gate(grow_px=2)
    assert gate[20:80, 0:60].all() and gate[18, 30] and gate[50, 61]  # grown by 2 px
    assert not gate[5:9, 100:110].any() and not gate[50, 63]
    assert BreastRegion.of(np.zeros((10, 12), np.float32)).gate().all()  # no tissue: no gate
    raw = RawDetections(
        np.array([[10, 30, 20, 40], [98, 4, 112, 10]], float),
        np.array([0.9, 0.8]),
        np.array([0, 1]),
    )
    kept = raw.centred_in(gate)
    assert len(kept) == 1 and kept.scores[0] == 0.9


def test_crop_undo_is_exact():
    crop = Crop(3, 17, 5, 26, (20, 30))
    image = np.arange(600, dtype=np.float32).reshape(20, 30)
    pasted = crop.paste(crop.apply(image))
    np.testing.assert_array_equal(pasted[3:17, 5:26], image[3:17, 5:26])
    assert pasted.sum() == image[3:17, 5:26].sum()
    boxes = np.array([[0.5, 1.25, 7.0, 9.0], [10.0, 0.0, 21.0, 14.0]])
    np.testing.assert_array_equal(crop.boxes_to_crop(crop.boxes_to_full(boxes)), boxes)
    np.testing.assert_array_equal(crop.boxes_to_full(boxes)[0], [5.5, 4.25, 12.0, 12.0])


def test_predictor_maps_are_the_cropped_nets_pasted(tiny_predictor, simulated_study):
    pred = tiny_predictor.predict(simulated_study.images[0])
    rows, cols = pred.model["crop"]["rows"], pred.model["crop"]["cols"]
    crop = Crop(rows[0], rows[1], cols[0], cols[1], pred.geometry.canonical_shape)
    assert crop.fraction < 1.0  # the simulated view has air to drop
    x = torch.from_numpy(crop.apply(pred.canonical).copy())[None, None]
    with torch.inference_mode():
        probs = torch.sigmoid(tiny_predictor.inferer(x, tiny_predictor.segmenter))[0].numpy()
    # off the breast (the grown gate) the maps are zero: no duct on a marker in the air
    grow = round(tiny_predictor.options.breast_gate_mm / tiny_predictor.spacing_mm)
    gate = BreastRegion.of(pred.canonical).gate(grow_px=grow)
    assert gate[crop.r0 : crop.r1, crop.c0 : crop.c1].mean() < 1.0
    np.testing.assert_allclose(pred.duct_prob, crop.paste(probs[0]) * gate, atol=1e-6)
    outside = np.ones(pred.geometry.canonical_shape, bool)
    outside[crop.r0 : crop.r1, crop.c0 : crop.c1] = False
    assert not pred.duct_prob[outside].any()
