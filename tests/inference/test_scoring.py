"""Inference scoring (`ductai evaluate --model`): the scorer, the oracle, the whole command."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from ductai.data.datalist import datalist_from_simulation
from ductai.training.inference_scoring import (
    clock_error_hours,
    score_inference,
    truth_as_prediction,
    truth_from_datalist_entry,
)

sys.path.insert(0, str(Path(__file__).parent))
from oracle_predictor import OraclePredictor


@pytest.fixture(scope="module")
def truths(simulated_study):
    return [truth_from_datalist_entry(e) for e in datalist_from_simulation(simulated_study.root)]


def _oracle(truths):
    return {t.key: truth_as_prediction(t) for t in truths}


def test_clock_error_wraps_around_twelve():
    assert clock_error_hours("12:00", 11.5) == pytest.approx(0.5)
    assert clock_error_hours("1:00", 11.0) == pytest.approx(2.0)
    assert clock_error_hours("6:30", 6.5) == pytest.approx(0.0)
    assert clock_error_hours("3:00", 9.0) == pytest.approx(6.0)


def test_truth_as_prediction_scores_perfectly(truths):
    assert any(lb == "papilloma" for t in truths for lb in t.labels)
    assert any(lb in ("air_bubble", "calcification") for t in truths for lb in t.labels)
    metrics, curves = score_inference(_oracle(truths), truths)
    assert metrics["n_views"] == len(truths) == 2
    for key in ("cpm", "sens@1fp", "ap@0.1_any", "dice_duct", "cldice_duct"):
        assert metrics[key] == pytest.approx(1.0), key
    assert metrics["mimic_fp_per_image"] == 0
    assert metrics["distance_error_mm_mean"] == pytest.approx(0.0)
    assert metrics["n_matched_lesion_views"] >= 2
    assert metrics["n_clock_lesions"] >= 1  # the papilloma is in both views
    for key in ("clock_accuracy", "quadrant_accuracy", "depth_accuracy"):
        assert metrics[key] == pytest.approx(1.0), key
    assert len(curves["froc"]["sensitivity"]) > 0


def test_nothing_reported_scores_zero(truths):
    metrics, _ = score_inference({}, truths)
    assert metrics["cpm"] == 0 and metrics["sens@1fp"] == 0
    assert metrics["dice_duct"] == 0 and metrics["cldice_duct"] == 0
    assert metrics["clock_accuracy"] == 0
    assert math.isnan(metrics["clock_accuracy_given"])  # no lesion was given a clock
    assert math.isnan(metrics["distance_error_mm_mean"])


def test_localization_errors_are_measured(truths):
    predicted = copy.deepcopy(_oracle(truths))
    for pred in predicted.values():
        for lesion in pred["lesions"]:
            lesion["distance_to_nipple_mm"] += 5.0
            hour, minute = (int(v) for v in lesion["clock"].split(":"))
            lesion["clock"] = f"{(hour + 1) % 12 + 1}:{minute:02d}"  # two hours later
            lesion["quadrant"] = "central" if lesion["quadrant"] != "central" else "UOQ"
    metrics, _ = score_inference(predicted, truths)
    assert metrics["distance_error_mm_mean"] == pytest.approx(5.0)
    assert metrics["clock_accuracy"] == 0 and metrics["quadrant_accuracy"] == 0
    assert metrics["depth_accuracy"] == 1
    assert metrics["cpm"] == 1  # localization does not change detection


def test_a_finding_on_a_mimic_is_a_mimic_false_positive(truths):
    predicted = copy.deepcopy(_oracle(truths))
    truth = next(t for t in truths if any(lb not in ("papilloma",) for lb in t.labels))
    j = next(j for j, lb in enumerate(truth.labels) if lb in ("air_bubble", "calcification"))
    predicted[truth.key]["lesions"].append(
        {"bbox_px": list(truth.boxes[j]), "score": 0.95, "label": "papilloma"}
    )
    metrics, _ = score_inference(predicted, truths)
    assert metrics["mimic_fp_per_image@0.5"] == pytest.approx(1 / len(truths))
    assert metrics["sens@1fp"] == 1  # one FP in two images is within 1 FP/image


def test_duct_mask_on_another_grid_is_refused(truths):
    predicted = _oracle(truths)
    key = truths[0].key
    predicted[key]["duct_mask"] = np.zeros((3, 3), bool)
    with pytest.raises(ValueError, match="grid"):
        score_inference(predicted, truths)


@pytest.mark.slow
def test_pipeline_with_oracle_predictor_scores_about_perfectly(tmp_path):
    """Truth through the whole pipeline (canonical, writers, files read back) stays truth."""
    from ductai.training.evaluate_inference import evaluate_inference

    result = evaluate_inference(
        None,
        simulation="default",
        n=1,
        seed=11,
        out_dir=tmp_path,
        predictor=OraclePredictor(spacing_mm=0.25),
    )
    m = result.metrics
    assert m["n_views"] == 2 and m["n_failed_views"] == 0
    assert m["cpm"] == pytest.approx(1.0) and m["mimic_fp_per_image"] == 0
    # 0.25 mm canonical pixels and back: thin ducts lose a little, nothing more.
    assert m["dice_duct"] > 0.8 and m["cldice_duct"] > 0.8
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["metrics"]["cpm"] == pytest.approx(1.0)
    for name in ("metrics.md", "froc.png", "pr.png"):
        assert (tmp_path / name).is_file(), name
    assert "FROC CPM" in (tmp_path / "metrics.md").read_text()
    # The simulated set is reused on a second call with the same settings.
    stamp = (tmp_path / "simulated" / "simulation.yaml").stat().st_mtime_ns
    evaluate_inference(
        None, simulation="default", n=1, seed=11, out_dir=tmp_path, predictor=OraclePredictor()
    )
    assert (tmp_path / "simulated" / "simulation.yaml").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_evaluate_command_with_a_bundle(tmp_path, tiny_bundle, capsys):
    from ductai.cli import main

    out = tmp_path / "eval"
    code = main(
        ["evaluate", "--model", str(tiny_bundle), "--simulation", "hard", "--n", "1",
         "--seed", "777", "--out", str(out), "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "FROC CPM" in printed and "clock within 1 h" in printed
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["n_views"] == 2
    assert (out / "froc.png").is_file() and (out / "metrics.md").is_file()
    assert len(list((out / "inference").glob("*/report.json"))) == 2


@pytest.mark.slow
def test_checkpoint_evaluation_still_works(tmp_path, tiny_seg_run, capsys):
    from ductai.cli import main

    code = main(
        ["evaluate", "--checkpoint", str(tiny_seg_run.last_checkpoint), "--n", "1",
         "--seed", "5", "--out", str(tmp_path), "--no-log"]
    )  # fmt: skip
    assert code == 0
    assert (tmp_path / "metrics.json").is_file()
    assert "dice" in capsys.readouterr().out


@pytest.mark.slow
def test_datalist_split_is_scored(simulated_study, tmp_path):
    """`--datalist F --split S`: the split's views, truth from their boxes and truth JSON."""
    from ductai.training.evaluate_inference import evaluate_inference

    doc = json.loads((simulated_study.root / "datalist.json").read_text())
    split = next(s for s in ("training", "validation", "test") if doc.get(s))
    result = evaluate_inference(
        None,
        datalist=simulated_study.root / "datalist.json",
        split=split,
        out_dir=tmp_path,
        predictor=OraclePredictor(spacing_mm=0.5),
    )
    assert result.name == f"datalist-{split}"
    assert result.metrics["n_views"] == len(doc[split])
    assert result.metrics["cpm"] == pytest.approx(1.0)
    assert result.metrics["mimic_fp_per_image"] == 0
