"""Writers: reports and their schemas, PNG sizes, geometry back to the DICOM grid, the
project's check-reports tool, safe paths and atomic folders (DICOM objects:
test_writers_dicom.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pydicom
import pytest
from PIL import Image

from ductai.inference.writers import (
    atomic_folder,
    build_report,
    safe_name,
    safe_uid,
    study_folder_name,
    validate_report,
    validate_study_report,
    write_study_outputs,
    write_view_outputs,
)
from ductai.inference.writers import view as view_module
from ductai.inference.writers.images import clock_hours, colour_heatmap

sys.path.insert(0, str(Path(__file__).parent))
from writers_fixtures import simulated_case

ROOT = Path(__file__).resolve().parents[2]
CHECK_REPORTS = ROOT.parent / "shared" / "tools" / "check-reports"
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("writers")
    case = simulated_case(root, seed=0, breast=0)
    out = root / "out"
    folder = study_folder_name(case.study_instance_uid, case.laterality)
    views = [
        write_view_outputs(out, p, loc, case.study_lesions, study_folder=folder)
        for p, loc in zip(case.predictions, case.localizations)
    ]
    study = write_study_outputs(
        out,
        case.study_instance_uid,
        case.laterality,
        case.predictions,
        case.localizations,
        case.study_lesions,
    )
    return case, out, views, study


def _report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def test_reports_validate_against_the_published_schemas(written):
    case, _, views, study = written
    assert all(p.detections for p in case.predictions), "the case must have lesions"
    for folder in views:
        report = _report(folder)
        validate_report(report)
        assert report["lesions"] and report["duct"]["found"] is True
        assert report["model"]["name"] == "tiny-test"
        assert all(
            (folder / name).is_file()
            for name in report["outputs"].values()
            if not name.startswith("..")
        )
    validate_study_report(json.loads((study / "study_report.json").read_text()))
    assert (study / "surgical_map.png").is_file()


def test_schema_rejects_a_bad_report(written):
    report = _report(written[2][0])
    report["lesions"][0]["clock"] = "13:00"
    with pytest.raises(jsonschema.ValidationError, match="clock"):
        validate_report(report)
    del report["image"]
    with pytest.raises(jsonschema.ValidationError):
        validate_report(report)


def test_check_reports_tool_passes(written):
    case, out, _, _ = written
    if not CHECK_REPORTS.is_file():
        if IN_CI:
            pytest.fail(f"{CHECK_REPORTS} missing under CI=true")
        pytest.skip(f"{CHECK_REPORTS} not found")
    result = subprocess.run(
        [sys.executable, str(CHECK_REPORTS), str(out), str(case.paths[0].parent)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_pngs_have_the_dicom_size(written):
    case, _, views, _ = written
    for path, folder in zip(case.paths, views):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for name in ("duct_mask.png", "heatmap.png", "heatmap_color.png"):
            with Image.open(folder / name) as image:
                assert image.size == (ds.Columns, ds.Rows), name
        mask = np.asarray(Image.open(folder / "duct_mask.png"))
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255} and mask.any()
        heat = np.asarray(Image.open(folder / "heatmap.png"))
        assert heat.ndim == 2 and heat.max() > 200  # probability 0.95 at the lesion centres
        # the colour file is the same values through the inferno palette
        with Image.open(folder / "heatmap_color.png") as image:
            assert image.mode == "P"
            assert np.array_equal(np.asarray(image), heat)
            assert np.array_equal(np.asarray(image.convert("RGB")), colour_heatmap(heat))
        overlay = np.asarray(Image.open(folder / "overlay.png"))
        assert overlay.ndim == 3 and max(overlay.shape[:2]) >= 900


def test_duct_mask_matches_the_truth_on_the_original_grid(written, tmp_path):
    # The prediction's duct is the truth mask resampled; back on the original grid most
    # truth pixels must be found again (thin branches may vanish at the coarser spacing).
    _, _, views, _ = written
    from writers_fixtures import RENDER_SPACING_MM

    from ductai.simulation.config import load_simulation_config
    from ductai.simulation.sample import simulate_breast

    sim = simulate_breast(load_simulation_config("default"), 0, 0, RENDER_SPACING_MM)
    mask = np.asarray(Image.open(views[0] / "duct_mask.png")) > 0
    truth = sim[0].rendered.duct_mask > 0
    overlap = (mask & truth).sum() / truth.sum()
    assert overlap > 0.6


def test_boxes_centres_and_nipple_map_to_the_truth(written):
    case, _, views, _ = written
    for truth, folder in zip(case.truths, views):
        report = _report(folder)
        boxes = [o for o in truth["objects"] if not o["is_mimic"]]
        assert len(report["lesions"]) == len(boxes)
        for lesion, obj in zip(report["lesions"], boxes):
            np.testing.assert_allclose(lesion["bbox_px"], obj["bbox_px"], atol=1.0)
            box = np.array(obj["bbox_px"])
            centre = [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]
            np.testing.assert_allclose(lesion["center_px"], centre, atol=1.0)
            assert lesion["clock"] == obj["clock"] and lesion["quadrant"] == obj["quadrant"]
            assert lesion["distance_to_nipple_mm"] == pytest.approx(obj["distance_to_nipple_mm"])
            assert lesion["duct_path_px"][0] == pytest.approx(truth["nipple_px"], abs=1.0)
        np.testing.assert_allclose(report["nipple_px"], truth["nipple_px"], atol=1.0)
        assert report["image"]["rows"] == truth["rows"]
        assert report["image"]["columns"] == truth["columns"]


def test_lesion_numbers_agree_between_views_and_study(written):
    _, _, views, study = written
    study_report = json.loads((study / "study_report.json").read_text())
    ids = {les["id"]: les for les in study_report["lesions"]}
    for folder in views:
        for lesion in _report(folder)["lesions"]:
            assert lesion["id"] in ids
            assert ids[lesion["id"]]["label"] == lesion["label"]
            assert ids[lesion["id"]]["clock"] == lesion["clock"]
    assert {v["folder"] for v in study_report["views"]} == {f"../{v.name}" for v in views}


def test_report_without_localization_or_segmentation_says_so(written):
    case = written[0]
    pred = dataclasses.replace(
        case.predictions[0],
        duct_prob=None,
        model={**case.predictions[0].model, "missing": ["segmentation"]},
    )
    report = build_report(pred, None, (), {"duct_mask": "duct_mask.png"})
    validate_report(report)
    assert report["nipple_px"] is None and report["duct"]["found"] is False
    assert "no_segmentation_model" in report["flags"] and report["messages"]
    assert all(
        les["clock"] is None and les["distance_to_nipple_mm"] is None for les in report["lesions"]
    )
    ids = [les["id"] for les in report["lesions"]]
    assert len(set(ids)) == len(ids)


def test_fill_flags_reach_the_report(written, tmp_path):
    case = written[0]
    loc = dataclasses.replace(case.localizations[0], fill_flags=["contrast_stops_early"])
    folder = write_view_outputs(tmp_path, case.predictions[0], loc, case.study_lesions, dicom=False)
    report = _report(folder)
    assert report["flags"] == ["contrast_stops_early"]
    assert "incomplete fill" in report["messages"][0].lower()
    assert "seg" not in report["outputs"]


def test_unreadable_source_flags_the_dicom_outputs_and_keeps_the_rest(written, tmp_path):
    case = written[0]
    image = dataclasses.replace(case.predictions[0].image, path=tmp_path / "gone.dcm")
    pred = dataclasses.replace(case.predictions[0], image=image)
    folder = write_view_outputs(tmp_path / "out", pred, case.localizations[0])
    report = _report(folder)
    validate_report(report)
    assert "dicom_outputs_failed" in report["flags"]
    assert not any((folder / n).exists() for n in ("seg.dcm", "sr.dcm", "sc.dcm"))
    assert (folder / "overlay.png").is_file()


def test_surgical_map_clock_reading():
    assert clock_hours("12:00") == 0 and clock_hours("3:00") == 3 and clock_hours("10:30") == 10.5


# ---- safe paths and atomic folders ----


@pytest.mark.parametrize(
    "uid",
    [
        "../../etc/passwd",
        "/abs/path",
        "1.2.3/../..",
        "..",
        "1.2.3\x00",
        "1" * 65,
        "",
        "1..2",
        "1.2.3 ",
        "C:\\win",
    ],
)
def test_crafted_uids_become_hashes(uid):
    name = safe_uid(uid)
    assert name.startswith("h") and len(name) == 33 and name.isalnum()
    assert safe_uid(uid) == name  # stable


def test_good_uids_and_names_pass():
    assert safe_uid("1.2.840.10008.5.1.4.1.1.1.2") == "1.2.840.10008.5.1.4.1.1.1.2"
    assert safe_name("study_1.2.3_L") == "study_1.2.3_L"
    assert safe_name("../x").startswith("h") and safe_name(".hidden").startswith("h")


def test_crafted_sop_uid_stays_inside_the_output_folder(written, tmp_path):
    case = written[0]
    image = dataclasses.replace(case.predictions[0].image, sop_instance_uid="../../escaped")
    pred = dataclasses.replace(case.predictions[0], image=image)
    out = tmp_path / "a" / "b" / "out"
    folder = write_view_outputs(out, pred, case.localizations[0], dicom=False)
    assert folder.parent == out and (folder / "report.json").is_file()
    assert sorted(p.name for p in tmp_path.rglob("report.json")) == ["report.json"]
    assert _report(folder)["image"]["sop_instance_uid"] == "../../escaped"


def test_crash_mid_write_leaves_no_folder(written, tmp_path, monkeypatch):
    case = written[0]

    def boom(*args, **kwargs):
        raise RuntimeError("crash while drawing the overlay")

    monkeypatch.setattr(view_module, "overlay_image", boom)
    with pytest.raises(RuntimeError, match="crash"):
        write_view_outputs(tmp_path, case.predictions[0], case.localizations[0])
    assert list(tmp_path.iterdir()) == []


def test_crash_during_a_rewrite_keeps_the_previous_result(written, tmp_path, monkeypatch):
    case = written[0]
    folder = write_view_outputs(tmp_path, case.predictions[0], case.localizations[0], dicom=False)
    before = (folder / "report.json").read_text()
    monkeypatch.setattr(view_module, "validate_report", lambda r: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_view_outputs(tmp_path, case.predictions[0], case.localizations[0], dicom=False)
    assert (folder / "report.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


def test_atomic_folder_replaces_and_cleans_up(tmp_path):
    final = tmp_path / "x"
    for text in ("one", "two"):
        with atomic_folder(final) as tmp:
            (tmp / "f.txt").write_text(text)
            assert not final.joinpath("f.txt").exists() or text == "two"
    assert (final / "f.txt").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["x"]
    with pytest.raises(FileExistsError), atomic_folder(final, replace=False) as tmp:
        (tmp / "f.txt").write_text("three")
    assert (final / "f.txt").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["x"]
