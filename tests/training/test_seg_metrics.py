"""Segmentation metrics on synthetic masks with hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ductai.training.metrics import SegmentationMetrics
from ductai.training.metrics.segmentation import cldice

H, W = 48, 64


def line(row: int, c0: int = 5, c1: int = 45, thick: int = 1) -> np.ndarray:
    m = np.zeros((H, W), np.float32)
    m[row : row + thick, c0:c1] = 1
    return m


def batch(duct: np.ndarray, lesion: np.ndarray | None = None) -> torch.Tensor:
    lesion = np.zeros_like(duct) if lesion is None else lesion
    return torch.from_numpy(np.stack([duct, lesion]))[None]


def scores(pred_duct, true_duct, pred_les=None, true_les=None, spacing=0.5) -> dict:
    m = SegmentationMetrics(spacing_mm=spacing)
    m.update(batch(pred_duct, pred_les), batch(true_duct, true_les))
    return m.per_image[0]


def test_perfect_match_scores_one_and_zero_distance():
    r = scores(line(10, thick=3), line(10, thick=3))
    assert r["dice_duct"] == pytest.approx(1.0)
    assert r["cldice_duct"] == pytest.approx(1.0)
    assert r["hd95_duct_mm"] == pytest.approx(0.0)


def test_shifted_line_dice_zero_and_hd95_is_the_shift_in_mm():
    # A 1-pixel line three rows off: no overlap; every boundary point is 3 px = 1.5 mm away.
    r = scores(line(13), line(10), spacing=0.5)
    assert r["dice_duct"] == pytest.approx(0.0)
    assert r["cldice_duct"] == pytest.approx(0.0)
    assert r["hd95_duct_mm"] == pytest.approx(1.5)


def test_hd95_ignores_a_single_far_outlier():
    # 40 line pixels at distance 0 plus one stray pixel 20 rows away: the maximum is 20 px but
    # the 95th percentile of the 41 distances is 0.
    pred = line(10)
    pred[30, 20] = 1
    r = scores(pred, line(10), spacing=1.0)
    assert r["hd95_duct_mm"] == pytest.approx(0.0)
    # Three-quarter overlap: Dice = 2*40/(41+40).
    assert r["dice_duct"] == pytest.approx(80 / 81)


def test_cldice_of_a_broken_line_by_hand():
    # Truth: a 1-px line of 40 (its own skeleton). Prediction: the same with a 10-px gap.
    # Tprec = 30/30, Tsens = 30/40 -> clDice = 2*0.75/1.75.
    pred = line(10)
    pred[10, 20:30] = 0
    assert cldice(pred, line(10)) == pytest.approx(2 * 0.75 / 1.75)


def test_cldice_ignores_thickness_that_dice_punishes():
    # A 3-px-thick prediction of a 1-px line: Dice = 2*40/(120+40) = 0.5, but the centreline
    # is right, so clDice stays near 1 (Tsens = 1 exactly; Tprec depends on skimage's ends).
    r = scores(line(9, thick=3), line(10))
    assert r["dice_duct"] == pytest.approx(0.5)
    assert r["cldice_duct"] > 0.9


def test_cldice_punishes_a_missed_thin_branch_that_dice_barely_sees():
    # Truth: a 7-px trunk (280 px) plus a separate 1-px branch (40 px); prediction: trunk only.
    truth = line(10, thick=7) + line(30)
    r = scores(line(10, thick=7), truth)
    assert r["dice_duct"] == pytest.approx(2 * 280 / (280 + 320))  # 0.933
    assert r["cldice_duct"] < 0.75  # about half the centreline is missing
    assert r["cldice_duct"] < r["dice_duct"] - 0.2


def test_empty_rules():
    empty = np.zeros((H, W), np.float32)
    m = SegmentationMetrics(spacing_mm=0.5)
    # image 0: lesion both empty -> excluded; image 1: lesion false alarm -> 0 and inf.
    blob = empty.copy()
    blob[5:8, 5:8] = 1
    pred = torch.cat([batch(line(10), empty), batch(line(10), blob)])
    true = torch.cat([batch(line(10), empty), batch(line(10), empty)])
    m.update(pred, true)
    r0, r1 = m.per_image
    assert math.isnan(r0["dice_lesion"]) and math.isnan(r0["hd95_lesion_mm"])
    assert r1["dice_lesion"] == 0.0 and math.isinf(r1["hd95_lesion_mm"])
    out = m.compute()
    assert out["dice_lesion"] == 0.0  # only the false alarm is scored
    assert out["n_scored_lesion"] == 1
    assert math.isnan(out["hd95_lesion_mm"])  # no finite HD95 to average ...
    assert out["hd95_lesion_inf"] == 1  # ... but the infinite one is counted
    assert out["dice_duct"] == pytest.approx(1.0)


def test_missed_structure_scores_zero():
    empty = np.zeros((H, W), np.float32)
    r = scores(empty, line(10))
    assert r["dice_duct"] == 0.0 and r["cldice_duct"] == 0.0
    assert math.isinf(r["hd95_duct_mm"])


def test_unlabelled_channel_is_left_out():
    m = SegmentationMetrics(spacing_mm=0.5)
    pred = torch.cat([batch(line(10)), batch(line(20))])
    true = torch.cat([batch(line(10)), batch(line(30))])  # image 1 would score 0
    m.update(pred, true, label_mask=torch.tensor([[True, True], [False, True]]))
    assert m.compute()["dice_duct"] == pytest.approx(1.0)
    assert m.compute()["n_scored_duct"] == 1


def test_pixels_without_spacing():
    m = SegmentationMetrics()
    m.update(batch(line(13)), batch(line(10)))
    assert m.compute()["hd95_duct_px"] == pytest.approx(3.0)


def test_threshold_binarises_probabilities():
    probs = line(10) * 0.6
    m = SegmentationMetrics(threshold=0.7)
    m.update(batch(probs), batch(line(10)))
    assert m.per_image[0]["dice_duct"] == 0.0


def test_state_merge_equals_single_pass():
    rng = np.random.default_rng(0)
    preds = [batch(line(int(r), thick=2)) for r in rng.integers(5, 40, 6)]
    trues = [batch(line(int(r), thick=2)) for r in rng.integers(5, 40, 6)]
    single = SegmentationMetrics(spacing_mm=0.2)
    ranks = [SegmentationMetrics(spacing_mm=0.2) for _ in range(2)]
    for i, (p, t) in enumerate(zip(preds, trues)):
        single.update(p, t, ids=[i])
        ranks[i % 2].update(p, t, ids=[i])
    merged = SegmentationMetrics(spacing_mm=0.2)
    merged.merge([r.state() for r in ranks])
    a, b = single.compute(), merged.compute()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], nan_ok=True), k


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\[B, 2, H, W\]"):
        SegmentationMetrics().update(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
