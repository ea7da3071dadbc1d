"""`ductai simulate` end to end: files, truth, datalist, reproducibility, conformance."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from ductai.cli import main
from ductai.data.datalist import load_datalist
from ductai.data.dicom_reader import read_galactogram
from ductai.data.inspect import inspect_paths

N_BREASTS = 2
SEED = 11


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    assert main(["simulate", "--out", str(out), "--n", str(N_BREASTS), "--seed", str(SEED)]) == 0
    return out


def _truths(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "labels").glob("*.json"))]


def test_writes_two_views_per_breast_with_labels(simulated):
    images = sorted((simulated / "images").glob("*.dcm"))
    assert len(images) == 2 * N_BREASTS
    for truth in _truths(simulated):
        image_id = truth["image_id"]
        ds = pydicom.dcmread(simulated / "images" / f"{image_id}.dcm", stop_before_pixels=True)
        assert ds.SOPInstanceUID == truth["sop_instance_uid"]
        assert ds.Modality == "MG"
        for suffix in ("duct", "centerline", "instances"):
            mask = Image.open(simulated / "labels" / f"{image_id}_{suffix}.png")
            assert mask.size == (ds.Columns, ds.Rows), suffix
        assert (simulated / "previews" / f"{image_id}.png").is_file()
        assert np.asarray(Image.open(simulated / "labels" / f"{image_id}_duct.png")).any()


def test_views_of_one_breast_share_study_and_3d_truth(simulated):
    by_patient: dict[str, list[dict]] = {}
    for truth in _truths(simulated):
        by_patient.setdefault(truth["patient_id"], []).append(truth)
    assert len(by_patient) == N_BREASTS
    for views in by_patient.values():
        assert {v["view"] for v in views} & {"CC"} and len(views) == 2
        assert len({v["study_instance_uid"] for v in views}) == 1
        assert len({v["laterality"] for v in views}) == 1
        first, second = (
            {(o["label"], tuple(o["center_3d_mm"])): o for o in v["objects"]} for v in views
        )
        # A finding seen in both views carries the same 3D truth in both.
        for key in first.keys() & second.keys():
            for field in ("distance_to_nipple_mm", "clock", "quadrant", "depth"):
                assert first[key][field] == second[key][field]


def test_object_boxes_hold_their_instance_pixels(simulated):
    for truth in _truths(simulated):
        instances = np.asarray(
            Image.open(simulated / "labels" / f"{truth['image_id']}_instances.png")
        )
        for obj in truth["objects"]:
            rows, cols = np.nonzero(instances == obj["instance"])
            if rows.size == 0:
                continue  # hidden by an overlapping object in this view
            x0, y0, x1, y1 = obj["bbox_px"]
            assert x0 <= cols.min() and cols.max() + 1 <= x1 + 1e-6
            assert y0 <= rows.min() and rows.max() + 1 <= y1 + 1e-6
            cx, cy = obj["center_px"]
            assert x0 <= cx <= x1 and y0 <= cy <= y1


def test_datalist_is_valid_and_split_by_patient(simulated):
    splits = load_datalist(simulated / "datalist.json", check=True)
    entries = [e for split in splits.values() for e in split]
    assert len(entries) == 2 * N_BREASTS
    patients = [{e.patient_id for e in split} for split in splits.values()]
    for i, a in enumerate(patients):
        for b in patients[i + 1 :]:
            assert not a & b


def test_inspect_describes_what_was_written(simulated):
    results = inspect_paths([simulated / "images"])
    truths = {t["sop_instance_uid"]: t for t in _truths(simulated)}
    assert len(results) == len(truths)
    for result in results:
        assert result.error is None
        image = read_galactogram(result.path)
        truth = truths[image.sop_instance_uid]
        assert (image.laterality, image.view) == (truth["laterality"], truth["view"])
        assert image.pixel_spacing_mm == pytest.approx(tuple(truth["pixel_spacing_mm"]), rel=1e-6)
        assert (image.rows, image.columns) == (truth["rows"], truth["columns"])
        assert not image.warnings


def test_same_seed_same_files_other_seed_differs(simulated, tmp_path):
    again = tmp_path / "again"
    assert main(["simulate", "--out", str(again), "--n", "1", "--seed", str(SEED)]) == 0
    for path in sorted((again / "images").glob("*.dcm")):
        assert path.read_bytes() == (simulated / "images" / path.name).read_bytes()
    other = tmp_path / "other"
    assert main(["simulate", "--out", str(other), "--n", "1", "--seed", str(SEED + 1)]) == 0
    a = pydicom.dcmread(next((other / "images").glob("*CC.dcm"))).pixel_array
    b = pydicom.dcmread(next((again / "images").glob("*CC.dcm"))).pixel_array
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_bad_arguments_are_one_clear_message(tmp_path, capsys):
    assert main(["simulate", "--out", str(tmp_path), "--n", "0"]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path), "--preset", "nonexistent"]) == 2
    assert "unknown simulation preset 'nonexistent'" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path), "anatomy.no_such_key=1"]) == 2
    assert "anatomy.no_such_key: unknown key" in capsys.readouterr().err


def _tool_or_skip(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (Debian packages dcmtk/dicom3tools)")
        pytest.skip(f"{name} not installed")
    return path


@pytest.mark.dicom_tools
def test_dcmdump_and_dciodvfy_accept_every_file(simulated):
    dcmdump, dciodvfy = _tool_or_skip("dcmdump"), _tool_or_skip("dciodvfy")
    for path in sorted((simulated / "images").glob("*.dcm")):
        dump = subprocess.run([dcmdump, str(path)], capture_output=True, text=True)
        assert dump.returncode == 0 and "W:" not in dump.stderr and "E:" not in dump.stderr
        check = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
        errors = [line for line in check.stderr.splitlines() if line.startswith("Error")]
        assert not errors, errors
