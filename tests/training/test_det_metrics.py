"""Detection metrics on hand-built predictions whose FROC, AP and AUC are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ductai.data.labels import CLASSES
from ductai.training.metrics import FP_RATES, DetectionMetrics
from ductai.training.metrics.detection import hit_matrix

PAP, CUT, IRR, ECT = (CLASSES.index(c) for c in ("papilloma", "cutoff", "irregularity", "ectasia"))
BUBBLE, CALC = CLASSES.index("air_bubble"), CLASSES.index("calcification")


def box(x: float, y: float, size: float = 10.0) -> list[float]:
    return [x, y, x + size, y + size]


def pred(*items: tuple[list[float], float, int]) -> dict:
    if not items:
        return {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}
    boxes, scores, labels = zip(*items)
    return {
        "boxes": torch.tensor(boxes),
        "scores": torch.tensor(scores),
        "labels": torch.tensor(labels),
    }


def target(*items: tuple[list[float], int]) -> dict:
    if not items:
        return {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}
    boxes, labels = zip(*items)
    return {"boxes": np.array(boxes), "labels": np.array(labels)}


T1, T2, M1 = box(10, 10), box(50, 50), box(100, 100)
T3, T4 = box(30, 30), box(150, 150)
M2 = box(70, 70)


def hand_built() -> tuple[list[dict], list[dict]]:
    """4 images, 4 finding targets (T4 never found), 5 false positives, 2 of them on mimics.

    Finding-class scores, descending, as (FP, TP) counts:
    0.9 T1 (0,1) | 0.8 on bubble M1 (1,1) | 0.7 (2,1) | 0.6 T3 (2,2) | 0.45 on calc M2 (3,2)
    | 0.4 (4,2) | 0.3 T2 (4,3) | 0.2 (5,3). FP/image = FP/4, sensitivity = TP/4.
    """
    targets = [
        target((T1, PAP), (T2, CUT), (M1, BUBBLE)),
        target((T3, IRR), (T4, ECT)),
        target((M2, CALC)),
        target(),
    ]
    preds = [
        pred(
            (T1, 0.9, PAP),
            (box(11, 11), 0.85, PAP),  # a second hit on T1: neither TP nor FP
            (M1, 0.8, PAP),  # finding-class prediction on a bubble: FP on a mimic
            (M1, 0.95, BUBBLE),  # mimic-class prediction: never counted
            (T2, 0.3, IRR),  # wrong class still finds the lesion (class-agnostic FROC)
        ),
        pred((box(200, 10), 0.7, PAP), (T3, 0.6, IRR)),
        pred((M2, 0.45, CUT), (box(10, 200), 0.2, ECT)),
        pred((box(300, 300), 0.4, PAP), (box(90, 300), 0.99, CALC)),
    ]
    return preds, targets


@pytest.fixture
def hand_metrics() -> DetectionMetrics:
    m = DetectionMetrics()
    m.update(*hand_built())
    return m


def test_froc_sensitivities_by_hand(hand_metrics):
    out = hand_metrics.compute()
    expected = {0.125: 0.25, 0.25: 0.25, 0.5: 0.5, 1: 0.75, 2: 0.75, 4: 0.75, 8: 0.75}
    for rate, sens in expected.items():
        assert out[f"froc_sens@{rate:g}"] == pytest.approx(sens), rate
    assert out["cpm"] == pytest.approx(4 / 7)
    assert out["sens@1fp"] == pytest.approx(0.75)
    assert out["threshold@1fp"] == pytest.approx(0.3)
    assert [f"froc_sens@{r:g}" for r in FP_RATES] == [
        "froc_sens@0.125", "froc_sens@0.25", "froc_sens@0.5", "froc_sens@1",
        "froc_sens@2", "froc_sens@4", "froc_sens@8",
    ]  # fmt: skip


def test_per_class_sensitivity_at_one_fp(hand_metrics):
    out = hand_metrics.compute()
    assert out["sens@1fp_papilloma"] == 1.0
    assert out["sens@1fp_cutoff"] == 1.0  # found by an 'irregularity' box at 0.3
    assert out["sens@1fp_irregularity"] == 1.0
    assert out["sens@1fp_ectasia"] == 0.0
    assert math.isnan(out["sens@1fp_extravasation"])


def test_mimic_false_positives_only_from_finding_classes(hand_metrics):
    out = hand_metrics.compute()
    # At the 1-FP threshold 0.3: the papilloma box on the bubble (0.8) and the cutoff box on
    # the calcification (0.45); the bubble-class box on the bubble does not count.
    assert out["mimic_fp_per_image"] == pytest.approx(2 / 4)
    assert out["mimic_fp_per_image@0.5"] == pytest.approx(1 / 4)


def test_image_auc_ignores_mimic_class_scores(hand_metrics):
    # Image scores 0.9, 0.7 (positives), 0.45, 0.4 (negatives): AUC 1. Counting the 0.99
    # calcification-class box in image 4 would make it 0.5.
    assert hand_metrics.compute()["auc"] == pytest.approx(1.0)


def test_froc_curve_points(hand_metrics):
    froc = hand_metrics.curves()["froc"]
    np.testing.assert_allclose(froc["fps_per_image"], [0, 0, 0.25, 0.5, 0.5, 0.75, 1, 1, 1.25])
    np.testing.assert_allclose(
        froc["sensitivity"], [0, 0.25, 0.25, 0.25, 0.5, 0.5, 0.5, 0.75, 0.75]
    )
    np.testing.assert_allclose(froc["sens_at_rates"], [0.25, 0.25, 0.5, 0.75, 0.75, 0.75, 0.75])


def test_ap_by_hand_101_point():
    # One class, two targets; scores 0.9 TP, 0.8 FP, 0.7 TP: precision 1 up to recall 0.5,
    # 2/3 up to recall 1. COCO's 101-point AP = (51 * 1 + 50 * 2/3) / 101.
    m = DetectionMetrics()
    m.update(
        [pred((T1, 0.9, PAP), (box(200, 200), 0.8, PAP), (T2, 0.7, PAP))],
        [target((T1, PAP), (T2, PAP))],
    )
    out = m.compute()
    assert out["ap@0.1_papilloma"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert out["map@0.1"] == pytest.approx(out["ap@0.1_papilloma"])  # only class with targets
    pr = m.curves()["pr"]["papilloma"]
    np.testing.assert_allclose(pr["precision"], [1, 0.5, 2 / 3])
    np.testing.assert_allclose(pr["recall"], [0.5, 0.5, 1])


def test_ap_is_class_aware_but_froc_is_not():
    m = DetectionMetrics()
    m.update([pred((T1, 0.9, CUT))], [target((T1, PAP))])
    out = m.compute()
    assert out["sens@1fp"] == 1.0
    assert out["ap@0.1_papilloma"] == 0.0
    assert out["ap@0.1_any"] == pytest.approx(1.0)


def test_perfect_detector():
    rng = np.random.default_rng(1)
    preds, targets = [], []
    for i in range(12):
        if i % 3 == 0:  # lesion-free images with no predictions
            preds.append(pred())
            targets.append(target())
            continue
        items = [(box(float(x), float(y), 8.0), int(c)) for x, y, c in zip(
            rng.uniform(0, 400, 2), rng.uniform(0, 400, 2), rng.integers(0, 5, 2)
        )]  # fmt: skip
        targets.append(target(*items, (box(450, 450), BUBBLE)))
        preds.append(pred(*[(b, 0.9, c) for b, c in items]))
    m = DetectionMetrics()
    m.update(preds, targets)
    out = m.compute()
    assert out["cpm"] == pytest.approx(1.0)
    assert out["auc"] == pytest.approx(1.0)
    assert out["map@0.1"] == pytest.approx(1.0)
    assert out["mimic_fp_per_image"] == 0.0


def test_random_scores_give_chance_auc():
    rng = np.random.default_rng(2)
    m = DetectionMetrics()
    for i in range(800):
        tgt = target((box(*rng.uniform(0, 400, 2)), PAP)) if i % 2 else target()
        n = int(rng.integers(1, 4))
        p = pred(*[(box(*rng.uniform(0, 400, 2)), float(s), PAP) for s in rng.random(n)])
        m.update([p], [tgt])
    assert m.compute()["auc"] == pytest.approx(0.5, abs=0.06)


def test_hit_rule_centre_in_box_or_iou():
    gt = np.array([[40.0, 40.0, 50.0, 50.0]])
    big_centred = [20.0, 20.0, 70.0, 70.0]  # IoU 0.04, centre (45, 45) inside: hit
    offset = [45.0, 45.0, 60.0, 60.0]  # IoU 25/300 = 0.083 and centre outside: miss
    overlap = [43.0, 43.0, 56.0, 56.0]  # IoU 49/220 = 0.22, centre (49.5, 49.5) inside: hit
    edge_iou = [46.0, 40.0, 56.0, 50.0]  # IoU 40/160 = 0.25, centre (51, 45) outside: hit
    hits, iou = hit_matrix(np.array([big_centred, offset, overlap, edge_iou]), gt)
    assert hits[:, 0].tolist() == [True, False, True, True]
    assert iou[1, 0] == pytest.approx(25 / 300, abs=1e-6)
    only_iou, _ = hit_matrix(np.array([big_centred]), gt, centre_in_box=False)
    assert not only_iou.any()


def test_a_box_covering_two_lesions_finds_only_its_best_match():
    m = DetectionMetrics()
    m.update([pred(([8.0, 8.0, 24.0, 22.0], 0.9, PAP))], [target((T1, PAP), (box(16, 10), PAP))])
    assert m.compute()["froc_sens@8"] == pytest.approx(0.5)


def test_no_targets_gives_nan_not_an_error():
    m = DetectionMetrics()
    m.update([pred((T1, 0.5, PAP))], [target()])
    out = m.compute()
    assert math.isnan(out["cpm"]) and math.isnan(out["auc"]) and math.isnan(out["map@0.1"])
    assert m.curves()["pr"] == {}


def test_state_merge_equals_single_pass():
    preds, targets = hand_built()
    single = DetectionMetrics()
    single.update(preds, targets)
    ranks = [DetectionMetrics(), DetectionMetrics()]
    for i, (p, t) in enumerate(zip(preds, targets)):
        ranks[i % 2].update([p], [t])
    merged = DetectionMetrics()
    merged.merge([r.state() for r in ranks])
    a, b = single.compute(), merged.compute()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], nan_ok=True), k
