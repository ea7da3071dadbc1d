"""Second-stage rescoring: candidate features, patches, the rescorer checkpoint, bundles."""

import json

import numpy as np
import pytest
import torch
from scipy.special import expit, logit

from ductai.data.labels import CLASSES
from ductai.inference.bundle import load_bundle, set_operating_point, set_rescorer, write_bundle
from ductai.inference.candidates import FEATURES, candidate_table
from ductai.inference.postprocess import RawDetections
from ductai.inference.rescoring import Rescorer, RescorerError, candidate_patches
from ductai.models.checkpoint import save_checkpoint
from ductai.models.rescorer import CandidateClassifier


def _dets(boxes, scores, labels) -> RawDetections:
    return RawDetections(
        np.asarray(boxes, float).reshape(-1, 4),
        np.asarray(scores, float),
        np.asarray([CLASSES.index(c) for c in labels], np.int64),
    )


def test_candidate_table_features_describe_each_candidate():
    lesion = np.zeros((100, 100), np.float32)
    lesion[10:20, 30:40] = 0.3
    lesion[14, 35] = 0.9  # component: 100 px, peak 0.9
    findings = _dets([[31, 11, 39, 19], [80, 80, 90, 96]], [0.7, 0.4], ["ectasia", "cutoff"])
    mimics = _dets([[32, 12, 38, 18]], [0.6], ["air_bubble"])
    table = candidate_table(findings, lesion, 0.1, 4, 0.5, mimics=mimics)
    f = {name: table.features[:, i] for i, name in enumerate(FEATURES)}
    np.testing.assert_allclose(f["component"], [1, 0])
    np.testing.assert_allclose(f["peak_logit"], logit([0.9, 1e-6]), rtol=1e-5)
    np.testing.assert_allclose(f["mean_logit"], logit([(99 * 0.3 + 0.9) / 100, 1e-6]), rtol=1e-5)
    np.testing.assert_allclose(f["log_area"], np.log([100, 10 * 16]), rtol=1e-6)
    np.testing.assert_allclose(f["detector_logit"], logit([0.7, 0.4]), rtol=1e-5)
    np.testing.assert_allclose(f["mimic"], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(f["log_width"], np.log([10, 10]), rtol=1e-6)
    np.testing.assert_allclose(f["log_height"], np.log([10, 16]), rtol=1e-6)
    np.testing.assert_allclose(table.detections.scores, [0.9, 0.2])
    # the penalty lowers only the candidate a mimic box hits
    penalized = table.penalized_scores(2.0)
    assert penalized[0] < 0.9 and penalized[1] == pytest.approx(0.2)


def test_candidate_table_of_an_empty_image_is_empty():
    table = candidate_table(RawDetections.empty(), np.zeros((20, 20), np.float32))
    assert table.features.shape == (0, len(FEATURES)) and len(table.detections) == 0


def test_patches_are_centred_on_the_box_at_every_scale():
    maps = np.zeros((3, 200, 300), np.float32)
    maps[0, 100:103, 150:153] = 1.0  # a 3 x 3 dot
    maps[1] = 0.5
    box = np.array([[146.0, 96.0, 157.0, 107.0]])  # centre (151.5, 101.5): floor -> (151, 101)
    patches = candidate_patches(maps, box, size=16, scales=(1, 3))
    assert patches.shape == (1, 6, 16, 16) and patches.dtype == np.float32
    fine, coarse = patches[0, 0], patches[0, 3]
    assert fine[7:10, 7:10].sum() == pytest.approx(9.0)  # the dot lands on pixels 7-9 of 16
    assert coarse.sum() == pytest.approx(1.0)  # 9 pixels averaged over 3 x 3 blocks
    assert np.unravel_index(coarse.argmax(), coarse.shape) == (8, 8)
    np.testing.assert_allclose(patches[0, 1], 0.5)
    # near the border the outside is zero, not wrapped or clamped
    corner = candidate_patches(maps, np.array([[0.0, 0.0, 2.0, 2.0]]), size=16, scales=(1,))
    assert corner[0, 1, :7, :].sum() == 0 and corner[0, 1, 8:, 8:].min() == 0.5
    assert candidate_patches(maps, np.zeros((0, 4))).shape == (0, 6, 64, 64)


def _rescorer_checkpoint(path, blend=0.5, task="rescoring", features=FEATURES, seed=0):
    torch.manual_seed(seed)
    kwargs = {"in_channels": 6, "n_features": len(FEATURES), "channels": [4, 8, 8, 16]}
    net = CandidateClassifier(**kwargs)
    net.feature_norm.running_mean.fill_(0.5)  # not the initial statistics: saved and loaded
    torch.nn.init.normal_(net.head[-1].weight, std=1.0)  # a correction that is not zero
    save_checkpoint(
        path,
        {
            "model": net.state_dict(),
            "task": task,
            "config": {
                "model": {"name": "candidate_classifier", "kwargs": kwargs},
                "features": list(features),
                "patch": {"size": 32, "scales": [1, 3]},
                "blend": blend,
            },
        },
    )
    return path


def _maps_and_candidates():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 120, 120)).astype(np.float32)
    boxes = np.array([[10.0, 10, 20, 20], [60, 50, 80, 64], [100, 100, 118, 119]])
    features = rng.random((3, len(FEATURES))).astype(np.float32)
    return maps, boxes, features, np.array([0.99, 0.5, 0.2])


def test_rescorer_blends_its_logit_with_the_first_stage_score(tmp_path):
    rescorer = Rescorer.load(_rescorer_checkpoint(tmp_path / "r.pt", blend=0.5))
    assert rescorer.size == 32 and rescorer.scales == (1, 3) and rescorer.blend == 0.5
    assert float(rescorer.model.feature_norm.running_mean[0]) == 0.5
    maps, boxes, features, scores = _maps_and_candidates()
    logits = rescorer.logits(maps, boxes, features, scores)
    assert logits.shape == (3,) and np.isfinite(logits).all()
    assert not np.allclose(logits, logit(scores), atol=1e-3)
    rescorer.blend = 1.0
    np.testing.assert_allclose(rescorer.rescore(scores, maps, boxes, features), expit(logits))
    rescorer.blend = 0.0
    np.testing.assert_allclose(rescorer.rescore(scores, maps, boxes, features), scores, atol=1e-9)
    assert len(rescorer.rescore(np.zeros(0), maps, np.zeros((0, 4)), np.zeros((0, 8)))) == 0


def test_an_untrained_classifier_ranks_as_the_first_stage():
    maps, boxes, features, scores = _maps_and_candidates()
    rescorer = Rescorer(model=CandidateClassifier(channels=(4, 8, 8, 16)).eval(), blend=1.0)
    np.testing.assert_allclose(
        rescorer.logits(maps, boxes, features, scores), logit(scores), rtol=1e-5
    )


def test_rescorer_checkpoint_errors_name_the_file(tmp_path):
    wrong_task = _rescorer_checkpoint(tmp_path / "seg.pt", task="segmentation")
    with pytest.raises(RescorerError, match=r"seg\.pt.*not a rescorer"):
        Rescorer.load(wrong_task)
    old = _rescorer_checkpoint(tmp_path / "old.pt", features=FEATURES[:-1])
    with pytest.raises(RescorerError, match=r"old\.pt: trained on features"):
        Rescorer.load(old)
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RescorerError, match=r"cut\.pt"):
        Rescorer.load(tmp_path / "cut.pt")


def test_a_bundle_carries_its_rescorer_and_the_predictor_uses_it(
    tmp_path, tiny_seg_run, tiny_det_run, simulated_study
):
    from ductai.inference.predictor import Predictor

    checkpoint = _rescorer_checkpoint(tmp_path / "rescorer.pt", blend=1.0)
    folder = write_bundle(
        tmp_path / "bundle",
        tiny_seg_run.last_checkpoint,
        tiny_det_run.last_checkpoint,
        name="with-rescorer",
        version="1",
        rescorer=checkpoint,
    )
    bundle = load_bundle(folder)
    assert bundle.rescorer_file == folder / "rescorer.pt"
    assert set(bundle.sha256) == {"seg.pt", "det.pt", "rescorer.pt"}
    assert bundle.identity()["files"]["rescoring"] == "rescorer.pt"

    options = {"device": "cpu", "backend": "eager", "score_threshold": 0.0, "crop_to_breast": True}
    with_it = Predictor.from_path(folder, **options)
    without = Predictor.from_path(folder, rescore=False, **options)
    assert with_it.rescorer is not None and without.rescorer is None
    image = simulated_study.images[0]
    a, b = with_it.predict(image), without.predict(image)
    assert a.model["sha256"]["rescorer.pt"] == bundle.sha256["rescorer.pt"]
    boxes_a = sorted(tuple(d.box) for d in a.detections)
    assert boxes_a == sorted(tuple(d.box) for d in b.detections)  # same candidates
    assert a.detections  # threshold 0: every candidate is reported
    # rescored: the classifier's probabilities, not the first stage's
    scores = np.array([d.score for d in a.detections])
    assert not np.allclose(sorted(scores), sorted(d.score for d in b.detections))

    # a new rescorer invalidates the calibrated threshold; removing it restores the nets alone
    set_operating_point(folder, 0.9, {"set": "x"})
    set_rescorer(folder, _rescorer_checkpoint(tmp_path / "other.pt", seed=1))
    entry = json.loads((folder / "bundle.json").read_text())
    assert entry["rescorer"] == "rescorer.pt" and "operating_threshold" not in entry
    set_rescorer(folder, None)
    assert load_bundle(folder).rescorer_file is None


def test_a_bundle_refuses_a_missing_or_foreign_rescorer(tmp_path, tiny_seg_run, tiny_det_run):
    from ductai.inference.bundle import BundleError

    folder = write_bundle(
        tmp_path / "b", tiny_seg_run.last_checkpoint, None, name="seg-only", version="1"
    )
    with pytest.raises(BundleError, match="not a rescorer"):
        set_rescorer(folder, tiny_seg_run.last_checkpoint)
    entry = json.loads((folder / "bundle.json").read_text())
    entry["rescorer"] = "gone.pt"
    (folder / "bundle.json").write_text(json.dumps(entry))
    with pytest.raises(BundleError, match=r"rescorer 'gone\.pt' not found"):
        load_bundle(folder)
