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
from ductai.data.labels import FINDINGS
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
def test_pipeline_with_oracle_predictor_scores_about_perfectly(tmp_path, monkeypatch):
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

    # benchmarks/bench_image_scores.py reads the same folder: the truth tops every lesion view;
    # with one view's findings taken out of its truth, its reported finding is a false one.
    import importlib.util

    benchmarks = Path(__file__).resolve().parents[2] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))
    spec = importlib.util.spec_from_file_location(
        "bench_image_scores", benchmarks / "bench_image_scores.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    summary = bench.summarise(tmp_path)
    assert summary["views"] == "2 / 0" and summary["top hits a finding"] == "1.00"
    truth_json = sorted((tmp_path / "simulated" / "labels").glob("*CC.json"))[0]
    truth = json.loads(truth_json.read_text())
    found = [o for o in truth["objects"] if o["label"] in FINDINGS]
    assert found
    truth["objects"] = [o for o in truth["objects"] if o["label"] not in FINDINGS]
    truth_json.write_text(json.dumps(truth))
    summary = bench.summarise(tmp_path)
    assert summary["views"] == "1 / 1"
    label, count = summary["lesion-free top: label"].rsplit(" ", 1)
    assert label in {o["label"] for o in found} and count == "1"
    assert summary["lesion-free top: on"] in ("duct 1", "elsewhere 1")


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


def test_datalist_split_names_short_forms_and_mistakes(simulated_study):
    from ductai.training.evaluate_inference import _datalist_entries

    datalist = simulated_study.root / "datalist.json"
    doc = json.loads(datalist.read_text())
    for short, full in (("train", "training"), ("val", "validation")):
        if doc.get(full):
            assert len(_datalist_entries(datalist, short)) == len(doc[full])
    with pytest.raises(ValueError, match=r"no split 'tune'; a datalist has training, valid"):
        _datalist_entries(datalist, "tune")


def test_distance_truth_is_the_views_own_projected_distance(simulated_study, truths):
    raw = [
        json.loads(p.read_text()) for p in sorted((simulated_study.root / "labels").glob("*.json"))
    ]
    findings = [(t, o) for t in raw for o in t["objects"] if not o["is_mimic"]]
    assert findings
    for view, obj in findings:
        dx, dy = np.subtract(obj["center_px"], view["nipple_px"])
        expected = math.hypot(dx, dy) * view["pixel_spacing_mm"][0]
        assert obj["image_distance_to_nipple_mm"] == pytest.approx(expected, abs=0.02)
        assert obj["axis_offset_mm"] == pytest.approx(
            math.hypot(*obj["center_3d_mm"][1:]), abs=0.02
        )
    # a report that gives the uncompressed 3D distance is off by the compression
    predicted = copy.deepcopy(_oracle(truths))
    for truth in truths:
        for lesion, obj in zip(
            predicted[truth.key]["lesions"],
            [
                o
                for lb, o in zip(truth.labels, truth.objects)
                if lb not in ("air_bubble", "calcification")
            ],
        ):
            lesion["distance_to_nipple_mm"] = obj["distance_to_nipple_mm"]
    metrics, _ = score_inference(predicted, truths)
    assert metrics["distance_3d_error_mm_mean"] == pytest.approx(0.0)
    assert metrics["distance_error_mm_mean"] > 0.0


def test_localization_counts_only_findings_at_the_threshold(truths):
    predicted = copy.deepcopy(_oracle(truths))
    for pred in predicted.values():
        for lesion in pred["lesions"]:
            lesion["score"] = 0.2
    metrics, _ = score_inference(predicted, truths, localization_threshold=0.5)
    assert metrics["localization_threshold"] == 0.5
    assert metrics["n_matched_lesion_views"] == 0 and metrics["clock_accuracy"] == 0
    assert metrics["cpm"] == 1  # detection is scored over every score
    metrics, _ = score_inference(predicted, truths, localization_threshold=0.1)
    assert metrics["n_matched_lesion_views"] >= 2


def test_calibrate_writes_the_operating_point_and_infer_reports_from_it(
    tmp_path, tiny_bundle, simulated_study
):
    import shutil

    from ductai.cli import main
    from ductai.inference.bundle import load_bundle
    from ductai.inference.predictor import Predictor
    from ductai.training.evaluate_inference import evaluate_inference

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    assert Predictor.from_path(bundle, backend="eager").report_threshold == 0.05
    # The oracle reports the truth with score 1: the 1-FP point is a finite threshold.
    oracle = OraclePredictor(spacing_mm=0.5)
    oracle.bundle = load_bundle(bundle)
    result = evaluate_inference(
        None, simulation="default", n=1, seed=11, out_dir=tmp_path / "eval",
        predictor=oracle, calibrate=True,
    )  # fmt: skip
    loaded = load_bundle(bundle)
    assert loaded.operating_threshold == pytest.approx(result.metrics["threshold@1fp"], abs=1e-4)
    assert loaded.operating_point["fp_per_image"] == 1.0
    assert loaded.operating_point["set"] == "sim-default-n1-seed11"
    assert (
        Predictor.from_path(bundle, backend="eager").report_threshold == loaded.operating_threshold
    )
    # an explicit threshold wins: 1.01 reports nothing
    out = tmp_path / "infer"
    main(["infer", *map(str, simulated_study.images), "--out", str(out), "--model", str(bundle),
          "--device", "cpu", "--threshold", "1.01"])  # fmt: skip
    reports = [json.loads(p.read_text()) for p in out.glob("*/report.json")]
    assert reports and all(r["lesions"] == [] for r in reports)
    assert all(r["model"]["operating_threshold"] == loaded.operating_threshold for r in reports)
    assert all(r["model"]["report_threshold"] == 1.01 for r in reports)


def test_oracle_localization_through_the_pipeline(tmp_path):
    """Truth boxes through the real nipple finder and measures: the localization floor."""
    from ductai.training.evaluate_inference import evaluate_inference

    m = evaluate_inference(
        None, simulation="default", n=3, seed=5, out_dir=tmp_path,
        predictor=OraclePredictor(spacing_mm=0.5),
    ).metrics  # fmt: skip
    print({k: round(v, 3) for k, v in m.items() if "distance" in k or "clock" in k})
    assert m["distance_error_mm_mean"] < 5.0
