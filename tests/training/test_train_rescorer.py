"""The candidate rescorer: recording candidates of simulated views, learning, the CLI."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ductai.inference.candidates import FEATURES
from ductai.inference.rescoring import blend_scores
from ductai.training.inference_scoring import ViewTruth
from ductai.training.rescorer_data import CandidateSet, score_ordering
from ductai.training.rescorer_sets import parse_sets
from ductai.training.rescorer_train import RescorerSettings, fit

ROOT = Path(__file__).resolve().parents[2]


def _synthetic_set(n_views: int, seed: int) -> CandidateSet:
    """Views of 8 candidates, one a lesion: a bright disc at the centre of the lesion channel;
    the others the same disc off centre. First-stage scores and features carry no signal."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    rows = {k: [] for k in ("patches", "features", "scores", "labels", "boxes", "target", "view")}
    truths = []
    for v in range(n_views):
        for k in range(8):
            centre = (
                (16, 16) if k == 0 else tuple(rng.integers(4, 10, 2) * rng.choice([-1, 1], 2) + 16)
            )
            patch = rng.normal(0, 0.1, (6, 32, 32)).astype(np.float32)
            patch[1] += ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < 16) * 0.8
            rows["patches"].append(patch.astype(np.float16))
            rows["features"].append(rng.random(len(FEATURES)).astype(np.float32))
            rows["scores"].append(rng.uniform(0.5, 0.99))
            rows["labels"].append(0)
            rows["boxes"].append([k * 40.0, 0, k * 40 + 20, 20])
            rows["target"].append(int(k == 0))
            rows["view"].append(v)
        truths.append(
            ViewTruth(
                key=f"view{v}",
                breast=f"b{v}",
                laterality="L",
                boxes=np.array([[0.0, 0, 20, 20]]),
                labels=["papilloma"],
            )
        )
    return CandidateSet(**{k: np.asarray(val) for k, val in rows.items()}, truths=truths)


def test_fit_learns_what_the_first_stage_scores_miss():
    train, val = _synthetic_set(40, seed=0), _synthetic_set(12, seed=1)
    untrained = score_ordering(val, val.scores)["cpm"]
    net, history = fit(
        train,
        val,
        RescorerSettings(epochs=4, batch_size=32, lr=3e-3, channels=(8, 8, 16, 16), num_threads=2),
    )
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    best = max(h["val_cpm"] for h in history)
    from ductai.training.rescorer_train import _logits

    kept = score_ordering(val, blend_scores(val.scores, _logits(net, val), 1.0))["cpm"]
    assert kept == pytest.approx(best)  # the best epoch's weights are the ones returned
    assert untrained < 0.5 and kept > untrained + 0.3


def test_candidate_sets_round_trip_and_concatenate(tmp_path):
    a, b = _synthetic_set(2, seed=0), _synthetic_set(3, seed=1)
    a.save(tmp_path / "a.npz")
    loaded = CandidateSet.load(tmp_path / "a.npz")
    np.testing.assert_array_equal(loaded.patches, a.patches)
    assert [t.key for t in loaded.truths] == ["view0", "view1"]
    both = CandidateSet.concatenate([loaded, b])
    assert len(both) == len(a) + len(b) and len(both.truths) == 5
    assert both.view.max() == 4 and both.truths[both.view[-1]].key == "view2"


def test_parse_sets_names_the_bad_item(tmp_path):
    (tmp_path / "views.json").write_text("{}")
    hard, default, views = parse_sets(f"hard:12:900, default:20:901,{tmp_path / 'views.json'}@val")
    assert parse_sets(str(tmp_path / "views.json"))[0].split == "training"
    assert (hard.preset, hard.breasts, hard.seed, hard.name) == ("hard", 12, 900, "hard-12-900")
    assert default.label == "default 901"
    assert views.datalist == tmp_path / "views.json" and views.split == "validation"
    with pytest.raises(ValueError, match=r"'hard:12'.*PRESET:BREASTS:SEED"):
        parse_sets("hard:12")
    with pytest.raises(ValueError, match=r"datalist .*gone\.json not found"):
        parse_sets(f"{tmp_path / 'gone.json'}@training")
    with pytest.raises(ValueError, match=r"no split 'tune'; a datalist has"):
        parse_sets(f"{tmp_path / 'views.json'}@tune")


@pytest.mark.slow
def test_train_rescorer_command_end_to_end(tmp_path):
    """The shipped first stage on simulated breasts: record, train, choose, add to a bundle,
    and the bundle then rescores what it reports."""
    from ductai.cli import main
    from ductai.inference.bundle import load_bundle, set_rescorer
    from ductai.inference.predictor import Predictor
    from ductai.inference.rescoring import Rescorer
    from ductai.simulation.generate import generate_dataset, load_simulation_config
    from ductai.training.rescorer_data import record_candidates

    bundle = tmp_path / "bundle"
    shutil.copytree(ROOT / "models" / "default", bundle, ignore=shutil.ignore_patterns("eval*"))
    set_rescorer(bundle, None)  # the first stage alone, as a user's bundle starts
    # the selection views come as a hospital's would: a datalist split
    hospital = tmp_path / "hospital"
    generate_dataset(hospital, n_breasts=2, seed=22, config=load_simulation_config("hard"))
    splits = json.loads((hospital / "datalist.json").read_text())
    split = next(k for k in ("validation", "test", "training") if splits.get(k))
    out = tmp_path / "rescorer"
    model = str(ROOT / "models" / "default")
    argv = ["train-rescorer", "--model", model, "--out", str(out), "--train", "default:2:21"]
    argv += ["--select", f"{hospital / 'datalist.json'}@{split}", "--epochs", "2"]
    argv += ["--workers", "1", "--threads", "2", "--into", str(bundle)]
    assert main(argv) == 0
    report = (out / "report.md").read_text()
    assert "| blend |" in report and "(chosen)" in report
    (path,) = (out / "sets").glob("default-2-21-*.npz")
    recorded = CandidateSet.load(path)
    assert recorded.patches.shape[1:] == (6, 64, 64) and recorded.target.sum() > 0
    assert len(recorded.truths) == 4 and set(recorded.view) <= set(range(4))
    assert len(list((out / "sets").glob(f"datalist-{split}-*.npz"))) == 1
    assert (out / "mlflow.db").is_file()

    blend = Rescorer.load(out / "rescorer.pt").blend
    if blend == 0:  # no gain on the selection set: the bundle is left as it was
        assert load_bundle(bundle).rescorer_file is None
        set_rescorer(bundle, out / "rescorer.pt")
    loaded = load_bundle(bundle)
    assert loaded.rescorer_file is not None and loaded.operating_threshold is None
    predictor = Predictor.from_path(bundle, num_threads=2, score_threshold=0.05)
    prediction = predictor.predict(sorted((hospital / "images").glob("*.dcm"))[0])
    assert prediction.model["sha256"]["rescorer.pt"] == loaded.sha256["rescorer.pt"]
    # the rescorer reorders the candidates the first stage proposes, it adds none
    first = record_candidates(Predictor.from_path(bundle, num_threads=2, rescore=False), hospital)
    assert len(prediction.detections) <= int((first.view == 0).sum())


def test_choose_blend_keeps_the_first_stage_when_the_rescorer_adds_nothing():
    from ductai.models.rescorer import CandidateClassifier
    from ductai.training.rescorer_train import choose_blend

    views = _synthetic_set(6, seed=2)
    untrained = CandidateClassifier(channels=(4, 4, 8, 8)).eval()  # ranks as the first stage
    blend, table = choose_blend(untrained, {"a": views})
    assert blend == 0.0
    assert len({round(r["mean cpm"], 9) for r in table}) == 1


def test_the_ranking_benchmark_reads_the_recorded_features():
    """benchmarks/bench_candidate_ranking.py scores orderings of recorded candidates."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_candidate_ranking", ROOT / "benchmarks" / "bench_candidate_ranking.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    views = _synthetic_set(4, seed=3)
    for name, ordering in bench.ORDERINGS.items():
        scores = ordering(views)
        assert scores.shape == (len(views),) and np.all((scores >= 0) & (scores <= 1)), name
    assert bench.ceiling(views) == {"papilloma": "4/4"}
