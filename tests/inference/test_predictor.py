"""Predictor on simulated views with tiny trained nets: shapes, ranges, labels, bundles, MLflow."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from ductai.data.canonical import to_canonical
from ductai.data.dicom_reader import read_galactogram
from ductai.data.labels import FINDINGS, MIMICS
from ductai.inference.bundle import BundleError, load_bundle, write_bundle
from ductai.inference.crop import BreastRegion
from ductai.inference.lesions import lesion_records
from ductai.inference.predictor import Predictor, PredictorOptions
from ductai.inference.types import ViewPrediction

STAGES = ("read", "canonical", "crop", "segmentation", "detection", "postprocess", "total")


def _check_prediction(pred: ViewPrediction) -> None:
    shape = pred.geometry.canonical_shape
    assert pred.canonical.shape == shape and pred.canonical.dtype == np.float32
    for heat in (pred.duct_prob, pred.lesion_prob):
        assert heat.shape == shape and heat.dtype == np.float32
        assert heat.min() >= 0.0 and heat.max() <= 1.0
    for det in pred.detections + pred.mimics:
        x0, y0, x1, y1 = det.box
        assert 0 <= x0 < x1 <= shape[1] and 0 <= y0 < y1 <= shape[0]
    assert all(d.label in FINDINGS for d in pred.detections)
    assert all(d.label in MIMICS for d in pred.mimics)
    scores = [d.score for d in pred.detections]
    assert scores == sorted(scores, reverse=True)


def test_predict_view_maps_and_detections(tiny_predictor, simulated_study):
    for path in simulated_study.images:
        pred = tiny_predictor.predict(path)
        truth = simulated_study.truth_for(path)
        assert pred.image.sop_instance_uid == truth["sop_instance_uid"]
        assert pred.geometry.original_shape == (truth["rows"], truth["columns"])
        _check_prediction(pred)
        assert set(STAGES) <= set(pred.timings)
        assert pred.model["name"] == "ductai-tiny" and pred.model["missing"] == []
        assert set(pred.model["sha256"]) == {"seg.pt", "det.pt"}
        # The cached full-resolution float image is dropped (memory across a batch).
        assert "pixels" not in pred.image.__dict__


def test_candidates_at_zero_threshold_keep_mimics_apart(tiny_bundle, simulated_study):
    # An untrained detector scores everything low: keep every candidate to exercise labels.
    predictor = Predictor.from_path(
        tiny_bundle,
        backend="eager",
        detector_score_threshold=0.0,
        score_threshold=0.0,
        mimic_threshold=0.0,
    )
    pred = predictor.predict(simulated_study.images[0])
    assert len(pred.detections) + len(pred.mimics) > 0
    _check_prediction(pred)
    records = lesion_records(pred)
    assert [r.id for r in records] == list(range(1, len(records) + 1))
    for record, det in zip(records, pred.detections):
        assert record.label == det.label and record.diameter_mm > 0


def test_predict_many_and_galactogram_input(tiny_predictor, simulated_study):
    images = [read_galactogram(p) for p in simulated_study.images]
    preds = tiny_predictor.predict_many(images)
    assert [p.image.sop_instance_uid for p in preds] == [i.sop_instance_uid for i in images]
    assert preds[0].timings["read"] < 1e-3  # already read
    again = tiny_predictor.predict(simulated_study.images[0])
    np.testing.assert_array_equal(again.duct_prob, preds[0].duct_prob)


def test_tta_and_no_crop_run(tiny_bundle, simulated_study):
    path = simulated_study.images[1]
    plain = Predictor.from_path(tiny_bundle, backend="eager", crop_to_breast=False).predict(path)
    tta = Predictor.from_path(tiny_bundle, backend="eager", tta=True).predict(path)
    _check_prediction(tta)
    assert plain.model["crop"]["rows"] == [0, plain.geometry.canonical_shape[0]]
    # Cropping only removes air: the duct map agrees where the breast is (tiling differs).
    inside = tta.canonical > 0.1
    assert np.abs(plain.duct_prob - tta.duct_prob)[inside].mean() < 0.05


def test_breast_gate_keeps_maps_and_boxes_off_a_burnt_in_marker(tiny_bundle, simulated_study):
    """A saturated block in the air, where lead letters sit: ungated, the nets' maps reach
    it; gated, nothing is there, and the breast's maps are the same."""
    options = dict(
        backend="eager",
        crop_to_breast=False,
        detector_score_threshold=0.0,
        score_threshold=0.0,
        mimic_threshold=0.0,
        heatmap_gaussians=False,
    )
    gated = Predictor.from_path(tiny_bundle, **options)
    ungated = Predictor.from_path(tiny_bundle, **options, breast_gate_mm=None)
    image = read_galactogram(simulated_study.images[0])
    canonical, _ = to_canonical(image, gated.spacing_mm)
    w = canonical.shape[1]
    marker = (slice(4, 20), slice(w - 48, w - 6))  # the corner beside the nipple: air
    assert not BreastRegion.of(canonical).gate()[marker].any()
    canonical = canonical.copy()
    canonical[marker] = 1.0
    duct, lesion, (found, mimics) = gated.predict_canonical(canonical)
    duct_u, lesion_u, _ = ungated.predict_canonical(canonical)
    assert lesion_u[marker].max() > 0 and duct_u[marker].max() > 0
    assert lesion[marker].max() == 0 and duct[marker].max() == 0
    for det in found + mimics:
        cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
        assert not (
            marker[0].start <= cy < marker[0].stop and marker[1].start <= cx < marker[1].stop
        )
    breast = BreastRegion.of(canonical).gate(grow_px=0)
    np.testing.assert_array_equal(duct[breast], duct_u[breast])


def test_single_checkpoint_reports_missing_task(tiny_seg_run, tiny_det_run, simulated_study):
    seg_only = Predictor.from_path(tiny_seg_run.last_checkpoint, backend="eager")
    pred = seg_only.predict(simulated_study.images[0])
    assert pred.model["missing"] == ["detection"] and pred.detections == []
    assert pred.duct_prob is not None
    np.testing.assert_array_equal(pred.lesion_prob, np.clip(pred.lesion_prob, 0, 1))

    det_only = Predictor.from_path(tiny_det_run.last_checkpoint)
    pred = det_only.predict(simulated_study.images[0])
    assert pred.model["missing"] == ["segmentation"] and pred.duct_prob is None
    assert pred.lesion_prob.shape == pred.geometry.canonical_shape


def test_mlflow_run_uri(tiny_seg_run, tiny_tracking_uri, simulated_study):
    uri = f"runs:/{tiny_seg_run.run_id}/model"
    bundle = load_bundle(uri, tracking_uri=tiny_tracking_uri)
    assert bundle.missing == ["detection"] and bundle.source == uri
    # The logged artifact is the run's best checkpoint, else its last one (same weights).
    local = load_bundle(tiny_seg_run.best_checkpoint or tiny_seg_run.last_checkpoint)
    for key, value in local.checkpoints["segmentation"]["model"].items():
        torch.testing.assert_close(bundle.checkpoints["segmentation"]["model"][key], value)
    predictor = Predictor(bundle, PredictorOptions(backend="eager"))
    assert predictor.predict(simulated_study.images[0]).duct_prob is not None


def test_bundle_errors_name_the_path(tmp_path, tiny_seg_run, tiny_det_run, tiny_bundle):
    missing = tmp_path / "nowhere"
    with pytest.raises(BundleError, match="nowhere"):
        load_bundle(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError, match=r"empty.*bundle\.json"):
        load_bundle(empty)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(BundleError, match=r"corrupt\.pt"):
        load_bundle(corrupt)
    with pytest.raises(BundleError, match="'detection' checkpoint where a 'segmentation'"):
        write_bundle(tmp_path / "swapped", tiny_det_run.last_checkpoint, None, "x", "1")
    with pytest.raises(BundleError, match="needs a segmentation or a detection"):
        write_bundle(tmp_path / "none", None, None, "x", "1")

    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    (broken / "det.pt").unlink()
    with pytest.raises(BundleError, match=r"broken/det\.pt"):
        load_bundle(broken)
    entry = json.loads((tiny_bundle / "bundle.json").read_text())
    (broken / "bundle.json").write_text(json.dumps({**entry, "detection": None, "spacing_mm": 9}))
    with pytest.raises(BundleError, match="spacing_mm 9"):
        load_bundle(broken)
    (broken / "bundle.json").write_text("{")
    with pytest.raises(BundleError, match="unreadable"):
        load_bundle(broken)
    with pytest.raises(BundleError, match="runs:/0123/model"):
        load_bundle("runs:/0123/model", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")


def test_bundle_identity_and_slim_weights(tiny_bundle, tiny_seg_run):
    bundle = load_bundle(tiny_bundle)
    assert (bundle.name, bundle.version, bundle.spacing_mm) == ("ductai-tiny", "0.0.1", 1.0)
    assert all(len(h) == 64 for h in bundle.sha256.values())
    # Optimizer state and RNG are not carried into the bundle.
    assert "optimizer" not in bundle.checkpoints["segmentation"]
    assert (tiny_bundle / "seg.pt").stat().st_size < tiny_seg_run.last_checkpoint.stat().st_size


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(tiny_bundle, simulated_study):
    path = simulated_study.images[0]
    cpu = Predictor.from_path(tiny_bundle, device="cpu", backend="eager").predict(path)
    gpu = Predictor.from_path(tiny_bundle, device="cuda").predict(path)
    np.testing.assert_allclose(gpu.duct_prob, cpu.duct_prob, atol=1e-3)


def test_tta_modes_and_their_thresholds_resolve_against_the_bundle(
    tmp_path, tiny_bundle, simulated_study
):
    import json
    import shutil

    import pytest

    from ductai.cli import TTA_CHOICES
    from ductai.inference.bundle import TTA_MODES, BundleError, load_bundle, set_operating_point
    from ductai.inference.predictor import tta_mode

    assert TTA_CHOICES == TTA_MODES
    assert [tta_mode(v, "segmentation") for v in (None, True, False, "none")] == [
        "segmentation",
        "all",
        "none",
        "none",
    ]
    with pytest.raises(ValueError, match="tta 'both'"):
        tta_mode("both")

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    assert load_bundle(bundle).tta == "none"
    set_operating_point(bundle, 0.7, {"set": "plain"})
    set_operating_point(bundle, 0.4, {"set": "flipped"}, tta="segmentation")
    entry = json.loads((bundle / "bundle.json").read_text())
    assert entry["operating_threshold"] == 0.7 and "tta" not in entry
    assert entry["tta_operating_points"]["segmentation"]["threshold"] == 0.4
    # each mode reports from its own calibrated threshold; an uncalibrated one from the default's
    options = dict(backend="eager", detector_score_threshold=0.0)
    assert Predictor.from_path(bundle, **options).report_threshold == 0.7
    assert Predictor.from_path(bundle, tta="segmentation", **options).report_threshold == 0.4
    assert Predictor.from_path(bundle, tta="all", **options).report_threshold == 0.7

    # a bundle whose own mode is the segmenter's flip runs with it unless told otherwise
    entry["tta"] = "segmentation"
    (bundle / "bundle.json").write_text(json.dumps(entry))
    path = simulated_study.images[0]
    predictions, detector_passes = {}, {}
    for tta in (None, "none", True):
        predictor = Predictor.from_path(bundle, score_threshold=0.0, tta=tta, **options)
        calls = []
        detector = predictor.detector
        predictor.detector = lambda x, detector=detector, calls=calls: (
            calls.append(1) or detector(x)
        )
        predictions[predictor.tta] = predictor.predict(path)
        detector_passes[predictor.tta] = len(calls)
    assert list(predictions) == ["segmentation", "none", "all"]
    assert predictions["segmentation"].model["tta"] == "segmentation"
    # the segmenter's maps change with the flip; the detector runs twice only in "all" mode
    assert detector_passes == {"segmentation": 1, "none": 1, "all": 2}
    seg_only, plain, both = predictions["segmentation"], predictions["none"], predictions["all"]
    assert not np.array_equal(seg_only.duct_prob, plain.duct_prob)
    np.testing.assert_allclose(seg_only.duct_prob, both.duct_prob, atol=1e-6)

    entry["tta"] = "sometimes"
    (bundle / "bundle.json").write_text(json.dumps(entry))
    with pytest.raises(BundleError, match="tta 'sometimes'"):
        load_bundle(bundle)
