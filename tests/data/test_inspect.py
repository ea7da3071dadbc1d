"""inspect_paths/format_inspection on a folder with good files and junk: report, never crash."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from ductai.cli import main
from ductai.data.inspect import format_inspection, inspect_paths


def _folder(tmp_path, dicom):
    folder = tmp_path / "study"
    (folder / "sub").mkdir(parents=True)
    dicom.write(dicom.make(laterality="R", view="CC"), folder / "good.dcm")
    dicom.write(dicom.make(laterality="L", view="MLO", modality="CR"), folder / "sub" / "cr.dcm")
    dicom.write(dicom.make(pixel_spacing=None), folder / "nospacing.dcm")
    (folder / "notes.txt").write_text("hello")
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "random.bin").write_bytes(np.random.default_rng(0).bytes(3000))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "shot.png")
    return folder


def test_each_file_is_reported(tmp_path, dicom):
    results = inspect_paths([_folder(tmp_path, dicom), tmp_path / "gone.dcm"])
    by_name = {r.path.rsplit("/", 1)[-1]: r for r in results}
    assert len(results) == 8
    good = by_name["good.dcm"]
    assert (good.error, good.rows, good.columns, good.laterality, good.view) == (
        None,
        60,
        48,
        "R",
        "CC",
    )
    assert good.pixel_spacing_mm == (0.1, 0.1) and good.patient_orientation == ("P", "L")
    assert by_name["cr.dcm"].error is None and "not 'MG'" in by_name["cr.dcm"].warnings[0]
    assert "--pixel-spacing" in by_name["nospacing.dcm"].error
    assert "not a DICOM file" in by_name["notes.txt"].error
    assert by_name["empty.dcm"].error and by_name["random.bin"].error
    assert "--pixel-spacing" in by_name["shot.png"].error
    assert "gone.dcm" in by_name["gone.dcm"].error


def test_given_spacing_rescues_files_without_one(tmp_path, dicom):
    results = inspect_paths([_folder(tmp_path, dicom)], pixel_spacing=0.07)
    by_name = {r.path.rsplit("/", 1)[-1]: r for r in results}
    assert by_name["nospacing.dcm"].spacing_source == "user"
    assert by_name["shot.png"].error is None


def test_table_and_json(tmp_path, dicom):
    results = inspect_paths([_folder(tmp_path, dicom)])
    table = format_inspection(results)
    assert "good.dcm" in table and "0.1x0.1 (PS)" in table and "P\\L" in table
    assert "Problems:" in table and "notes.txt: ERROR" in table
    assert table.endswith("7 file(s): 2 readable, 5 refused")
    parsed = json.loads(format_inspection(results, as_json=True))
    assert len(parsed) == 7 and parsed[0]["path"].endswith(".dcm")


def test_cli_inspect_exit_code(tmp_path, dicom, capsys):
    good = dicom.write(dicom.make(), tmp_path / "good.dcm")
    assert main(["inspect", str(good)]) == 0
    assert "1 readable" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    (tmp_path / "bad.dcm").write_text("x")
    assert main(["inspect", str(tmp_path)]) == 1
