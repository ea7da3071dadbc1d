"""`ductai infer` and `run_inference`: outputs per view and breast, bad inputs, atomicity.

The tiny test networks check the real path (CLI, bundle, Predictor); tests that need lesions
(clock positions, atomic writes) use the oracle predictor (tests/inference/oracle_predictor.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from ductai.cli import main
from ductai.inference.run import run_inference
from ductai.inference.writers import validate_report, validate_study_report

sys.path.insert(0, str(Path(__file__).parent))
from oracle_predictor import OraclePredictor

ROOT = Path(__file__).resolve().parents[2]
CHECK_REPORTS = ROOT.parent / "shared" / "tools" / "check-reports"
VIEW_FILES = ("report.json", "duct_mask.png", "heatmap.png", "overlay.png", "seg.dcm", "sr.dcm",
              "sc.dcm")  # fmt: skip
# What differs between two runs of the same inputs: wall-clock times.
VOLATILE = ("timings",)


def _views(out: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in out.glob("*/report.json")}


def _studies(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("study_*/study_report.json"))


def _stable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in VOLATILE}


def _check_reports(out: Path, dicom_dir: Path) -> None:
    if not CHECK_REPORTS.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHECK_REPORTS} is missing")
        pytest.skip(f"{CHECK_REPORTS} is missing")
    done = subprocess.run(
        [sys.executable, str(CHECK_REPORTS), str(out), str(dicom_dir)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, simulated_study, tiny_bundle):
    out = tmp_path_factory.mktemp("infer") / "out"
    images = simulated_study.images[0].parent
    code = main(["infer", str(images), "--out", str(out), "--model", str(tiny_bundle),
                 "--device", "cpu"])  # fmt: skip
    return code, out


@pytest.mark.slow
def test_cli_writes_every_output_per_view_and_breast(cli_run, simulated_study):
    code, out = cli_run
    assert code == 0
    views = _views(out)
    assert set(views) == set(simulated_study.truths)  # one folder per SOPInstanceUID
    for folder in views.values():
        for name in VIEW_FILES:
            assert (folder / name).is_file(), f"{folder.name}/{name}"
        report = json.loads((folder / "report.json").read_text())
        validate_report(report)
        for name in report["outputs"].values():
            assert (folder / name).resolve().is_file(), name
        assert (
            pydicom.dcmread(folder / "seg.dcm").StudyInstanceUID
            == (report["image"]["study_instance_uid"])
        )
    (study,) = _studies(out)
    assert (study / "surgical_map.png").is_file()
    study_report = json.loads((study / "study_report.json").read_text())
    validate_study_report(study_report)
    assert {v["sop_instance_uid"] for v in study_report["views"]} == set(views)
    assert json.loads((out / "errors.json").read_text()) == []
    index = json.loads((out / "run.json").read_text())  # written last: the batch finished
    assert {v["folder"] for v in index["views"]} == set(views) and index["errors"] == 0
    assert index["breasts"][0]["folder"] == study.name
    _check_reports(out, simulated_study.images[0].parent)


@pytest.mark.slow
def test_cli_and_python_api_give_the_same_results(cli_run, simulated_study, tiny_bundle, tmp_path):
    _, cli_out = cli_run
    run = run_inference(simulated_study.images, tmp_path, model=tiny_bundle, device="cpu")
    assert {v.sop_instance_uid for v in run.views} == set(_views(cli_out))
    for view in run.views:
        from_cli = json.loads((cli_out / view.folder.name / "report.json").read_text())
        assert _stable(view.report) == _stable(from_cli)
        from_api = np.asarray(Image.open(view.folder / "duct_mask.png"))
        from_cli_mask = np.asarray(Image.open(cli_out / view.folder.name / "duct_mask.png"))
        np.testing.assert_array_equal(from_api, from_cli_mask)
    (breast,) = run.breasts
    cli_study = json.loads((_studies(cli_out)[0] / "study_report.json").read_text())
    assert breast.report == cli_study


def _rgb_copy(source: Path, target: Path) -> Path:
    ds = pydicom.dcmread(source)
    rows, cols = int(ds.Rows), int(ds.Columns)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = np.zeros((rows, cols, 3), np.uint8).tobytes()
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(target)
    return target


@pytest.fixture
def bad_batch(tmp_path, simulated_study) -> Path:
    """One good view, a truncated DICOM, a text file and an RGB DICOM, in nested folders."""
    batch = tmp_path / "batch"
    (batch / "sub").mkdir(parents=True)
    good = shutil.copy(simulated_study.images[0], batch / "good.dcm")
    data = Path(good).read_bytes()
    (batch / "sub" / "truncated.dcm").write_bytes(data[: len(data) // 2])
    (batch / "sub" / "notes.txt").write_text("not an image\n")
    _rgb_copy(Path(good), batch / "rgb.dcm")
    return batch


@pytest.mark.slow
def test_bad_files_are_named_and_the_good_one_is_analysed(bad_batch, tiny_bundle, tmp_path,
                                                          capsys):  # fmt: skip
    out = tmp_path / "out"
    code = main(["infer", str(bad_batch), "--out", str(out), "--model", str(tiny_bundle),
                 "--device", "cpu"])  # fmt: skip
    assert code == 1  # some files failed
    errors = json.loads((out / "errors.json").read_text())
    named = {Path(e["path"]).name: e for e in errors}
    assert set(named) == {"truncated.dcm", "notes.txt", "rgb.dcm"}
    assert "truncated" in named["truncated.dcm"]["error"]
    assert "not a DICOM" in named["notes.txt"]["error"]
    assert "colour" in named["rgb.dcm"]["error"]
    assert all(e["stage"] == "read" for e in errors)
    captured = capsys.readouterr()
    for name in named:
        assert name in captured.err + captured.out
    (folder,) = _views(out).values()
    report = json.loads((folder / "report.json").read_text())
    assert Path(report["image"]["source_path"]).name == "good.dcm"
    assert (
        "single_view" in json.loads((_studies(out)[0] / "study_report.json").read_text())["flags"]
    )


@pytest.fixture(scope="module")
def oracle_case(tmp_path_factory):
    """A simulated breast with a papilloma (default preset) and the oracle's predictor."""
    from ductai.simulation.generate import generate_dataset

    root = tmp_path_factory.mktemp("oracle_study")
    summary = generate_dataset(root, n_breasts=1, seed=5)
    assert summary.n_lesions >= 1
    return sorted(summary.images), OraclePredictor(spacing_mm=0.5)


@pytest.mark.slow
def test_both_views_give_a_clock_and_one_view_leaves_it_unknown(oracle_case, tmp_path):
    images, predictor = oracle_case
    both = run_inference(images, tmp_path / "both", predictor=predictor)
    clocks = [les["clock"] for v in both.views for les in v.report["lesions"]]
    assert clocks and all(c is not None for c in clocks)
    assert "clock" in both.summary() and "papilloma" in both.summary()

    one = run_inference(images[:1], tmp_path / "one", predictor=predictor)
    (view,) = one.views
    assert view.report["lesions"], "the oracle reports the truth's lesion"
    for lesion in view.report["lesions"]:
        assert lesion["clock"] is None and lesion["quadrant"] is None
        assert lesion["distance_to_nipple_mm"] is not None  # one view still measures it
    (breast,) = one.breasts
    assert "single_view" in breast.report["flags"]
    assert any("one view" in m.lower() for m in breast.report["messages"])


@pytest.mark.slow
def test_a_writer_crash_leaves_no_half_folder(oracle_case, tmp_path, monkeypatch):
    import ductai.inference.writers.view as view_writer

    images, predictor = oracle_case
    real = view_writer.overlay_image
    calls = {"n": 0}

    def crash_on_second_view(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(view_writer, "overlay_image", crash_on_second_view)
    out = tmp_path / "out"
    run = run_inference(images, out, predictor=predictor)
    assert len(run.views) == 1
    (error,) = run.errors
    assert error.stage == "write" and "disk full" in error.error
    assert Path(error.path).name == Path(images[1]).name
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary folder left behind
    folders = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith("study_")]
    assert len(folders) == 1 and (folders[0] / "report.json").is_file()
    assert json.loads((out / "errors.json").read_text())[0]["path"] == str(images[1])


@pytest.mark.slow
def test_non_mammogram_without_contrast_says_so(oracle_case, tmp_path):
    """A CT-labelled image with no truth: the oracle finds no duct, the report says why."""
    images, predictor = oracle_case
    folder = tmp_path / "other" / "images"
    folder.mkdir(parents=True)
    ds = pydicom.dcmread(images[0])
    ds.Modality = "CT"
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "ct.dcm")
    run = run_inference([folder], tmp_path / "out", predictor=predictor)
    (view,) = run.views
    text = " ".join(view.report["messages"])
    assert "not 'MG'" in text
    assert "no_opacified_duct" in view.report["flags"]
    assert "no opacified duct" in text.lower()


def test_missing_default_model_explains_what_to_do(tmp_path, monkeypatch, capsys,
                                                   simulated_study):  # fmt: skip
    import ductai.inference.run as run_module

    monkeypatch.setattr(run_module, "DEFAULT_MODEL_DIR", tmp_path / "no-model")
    code = main(["infer", str(simulated_study.images[0]), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--model" in err and "ductai train" in err
    assert not (tmp_path / "out").exists()


def test_no_input_files_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["infer", str(tmp_path / "empty"), "--out", str(tmp_path / "out"),
                 "--model", str(tmp_path)])  # fmt: skip
    assert code == 2
    assert "no files" in capsys.readouterr().err


def test_demo_without_a_model_simulates_and_explains(tmp_path, monkeypatch, capsys):
    import ductai.inference.run as run_module

    monkeypatch.setattr(run_module, "DEFAULT_MODEL_DIR", tmp_path / "no-model")
    code = main(["demo", "--out", str(tmp_path / "demo"), "--n", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Simulated 1 breasts" in printed and "No analysis" in printed
    assert len(list((tmp_path / "demo" / "studies" / "images").glob("*.dcm"))) == 2


@pytest.mark.slow
def test_demo_with_a_model_analyses_the_simulated_studies(tmp_path, tiny_bundle, capsys):
    code = main(["demo", "--out", str(tmp_path / "demo"), "--n", "1", "--model",
                 str(tiny_bundle), "--device", "cpu"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "Per view" in printed and "Per breast" in printed
    assert len(_views(tmp_path / "demo" / "results")) == 2
    assert len(_studies(tmp_path / "demo" / "results")) == 1
