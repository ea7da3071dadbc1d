"""Findings from the lesion channel's components, labelled by the detector (inference/candidates.py)."""

import numpy as np
import pytest

from ductai.data.labels import CLASSES
from ductai.inference.candidates import FALLBACK_LABEL, candidate_table, hits
from ductai.inference.postprocess import RawDetections


def _detector(boxes, scores, labels) -> RawDetections:
    return RawDetections(
        np.asarray(boxes, float).reshape(-1, 4),
        np.asarray(scores, float),
        np.asarray([CLASSES.index(c) for c in labels], np.int64),
    )


def _lesion_map() -> np.ndarray:
    lesion = np.zeros((100, 100), np.float32)
    lesion[10:20, 30:40] = 0.3
    lesion[14, 35] = 0.9  # component A: box [30, 10, 40, 20], peak 0.9
    lesion[60:66, 60:64] = 0.6  # component B: box [60, 60, 64, 66]
    lesion[90, 5] = 0.99  # a single pixel: too small
    lesion[50, 50] = 0.05  # below the threshold
    return lesion


def test_components_give_boxes_scores_and_the_best_hitting_class():
    detector = _detector(
        [[28, 8, 38, 18], [31, 11, 39, 19], [80, 80, 90, 90]],
        [0.4, 0.7, 0.8],
        ["irregularity", "ectasia", "cutoff"],
    )
    found = candidate_table(detector, _lesion_map(), threshold=0.1, min_area_px=4).detections
    got = {
        tuple(b): (round(s, 4), CLASSES[lab])
        for b, s, lab in zip(found.boxes, found.scores, found.labels)
    }
    assert got == {
        (30.0, 10.0, 40.0, 20.0): (0.9, "ectasia"),  # the higher-scoring of the two hits
        (60.0, 60.0, 64.0, 66.0): (0.6, FALLBACK_LABEL),  # no detector box on it
        (80.0, 80.0, 90.0, 90.0): (0.4, "cutoff"),  # detector only: half its score
    }


def test_without_detector_findings_the_components_stand_alone():
    found = candidate_table(_detector([], [], []), _lesion_map(), min_area_px=1).detections
    assert len(found) == 3  # the single pixel counts at min_area_px=1
    assert {CLASSES[i] for i in found.labels} == {FALLBACK_LABEL}


def test_hit_rule_is_the_scorers():
    box = np.array([[0.0, 0.0, 10.0, 10.0]])
    others = np.array(
        [
            [8.0, 8.0, 11.0, 11.0],  # centre (9.5, 9.5) inside
            [9.0, 0.0, 30.0, 10.0],  # centre outside, IoU 1/30
            [5.0, 0.0, 15.0, 10.0],  # centre (10, 5) on the open edge, IoU 50/150
        ]
    )
    assert hits(box, others).tolist() == [[True, False, True]]


def test_a_mimic_box_lowers_the_candidate_it_hits_in_logit():
    detector = _detector([], [], [])
    mimics = _detector(
        [[61, 61, 63, 65], [0, 0, 5, 5]], [0.9, 0.99], ["air_bubble", "calcification"]
    )
    table = candidate_table(detector, _lesion_map(), mimics=mimics)
    plain = table.detections.scores
    by_box = {tuple(b): s for b, s in zip(table.detections.boxes, table.penalized_scores(2.0))}
    assert by_box[(30.0, 10.0, 40.0, 20.0)] == pytest.approx(0.9)  # no mimic on it: unchanged
    # B (0.6) under an air bubble of score 0.9: logit 0.405 - 1.8 -> 0.199
    assert by_box[(60.0, 60.0, 64.0, 66.0)] == pytest.approx(
        1 / (1 + np.exp(-(np.log(0.6 / 0.4) - 1.8))), rel=1e-6
    )
    assert by_box[(60.0, 60.0, 64.0, 66.0)] < by_box[(30.0, 10.0, 40.0, 20.0)]
    # no penalty, no change
    assert np.array_equal(table.penalized_scores(0.0), plain)
    # no mimic box, no change either, however large the penalty
    alone = candidate_table(detector, _lesion_map())
    assert np.array_equal(alone.penalized_scores(2.0), alone.detections.scores)
