"""DICOM results: SEG, SR and SC are valid (dciodvfy, dcmdump), read back with pydicom and
highdicom, sit in new series of the source study and hold the report's values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.sr.codedict import codes

from ductai.inference.writers import write_view_outputs
from ductai.inference.writers.dicom import FINDING_CODES, clock_code
from ductai.inference.writers.grid import lesion_mask_px

sys.path.insert(0, str(Path(__file__).parent))
from writers_fixtures import simulated_case

IN_CI = os.environ.get("CI", "").lower() == "true"
KINDS = ("seg", "sr", "sc")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("writers_dicom")
    case = simulated_case(root, seed=0, breast=0)
    out = root / "out"
    views = [
        write_view_outputs(out, p, loc, case.study_lesions)
        for p, loc in zip(case.predictions, case.localizations)
    ]
    # A view without lesions: an SR with no measurement group and an empty lesion segment.
    empty = type(case.predictions[0])(**{**vars(case.predictions[0]), "detections": []})
    loc = type(case.localizations[0])(**{**vars(case.localizations[0]), "lesions": []})
    views.append(write_view_outputs(root / "empty", empty, loc, ()))
    return case, views


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is required under CI=true")
        pytest.skip(f"{name} not installed")
    return path


@pytest.mark.dicom_tools
def test_dciodvfy_finds_no_errors(written):
    dciodvfy = _tool("dciodvfy")
    for folder in written[1]:
        for kind in KINDS:
            assert (folder / f"{kind}.dcm").is_file(), folder / "report.json"
            result = subprocess.run(
                [dciodvfy, str(folder / f"{kind}.dcm")], capture_output=True, text=True, timeout=120
            )
            text = result.stdout + result.stderr
            errors = [line for line in text.splitlines() if line.startswith("Error")]
            assert not errors, f"{folder.name}/{kind}.dcm:\n{text}"


@pytest.mark.dicom_tools
def test_dcmdump_reads_without_warnings(written):
    dcmdump = _tool("dcmdump")
    for folder in written[1]:
        for kind in KINDS:
            result = subprocess.run(
                [dcmdump, "-q", str(folder / f"{kind}.dcm")],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 0, result.stderr
            bad = [
                ln
                for ln in (result.stdout + result.stderr).splitlines()
                if ln.startswith(("W:", "E:", "F:"))
            ]
            assert not bad and not result.stderr.strip(), f"{kind}: {result.stderr}"


def test_new_series_of_the_source_study(written):
    case, folders = written
    series = {}
    for path, folder in zip(case.paths, folders):
        source = pydicom.dcmread(path, stop_before_pixels=True)
        for kind in KINDS:
            ds = pydicom.dcmread(folder / f"{kind}.dcm")
            assert ds.StudyInstanceUID == source.StudyInstanceUID
            assert ds.PatientID == source.PatientID and ds.PatientName == source.PatientName
            assert ds.SeriesInstanceUID != source.SeriesInstanceUID
            assert ds.SOPInstanceUID != source.SOPInstanceUID
            assert ds.Manufacturer == "ductai" and ds.SoftwareVersions
            series.setdefault(kind, set()).add(ds.SeriesInstanceUID)
        seg = pydicom.dcmread(folder / "seg.dcm")
        ref = seg.ReferencedSeriesSequence[0]
        assert ref.SeriesInstanceUID == source.SeriesInstanceUID
        assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        sr = pydicom.dcmread(folder / "sr.dcm")
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
        assert evidence.StudyInstanceUID == source.StudyInstanceUID
        item = evidence.ReferencedSeriesSequence[0]
        assert item.SeriesInstanceUID == source.SeriesInstanceUID
        assert item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    # one new series per kind for the study; three kinds, three different series
    assert all(len(uids) == 1 for uids in series.values())
    assert len({next(iter(uids)) for uids in series.values()}) == 3


def test_seg_frames_decode_back_to_the_masks(written):
    _, folders = written
    for folder in folders:
        report = json.loads((folder / "report.json").read_text())
        # Decoded with pydicom: highdicom 0.28's reader wants SliceThickness in the Pixel
        # Measures of a 2D projection SEG, which its own writer (rightly) leaves out.
        seg = pydicom.dcmread(folder / "seg.dcm")
        assert seg.SegmentationType == "BINARY"
        labels = {item.SegmentNumber: item.SegmentLabel for item in seg.SegmentSequence}
        assert labels == {1: "duct", 2: "lesion"}
        frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
        by_segment = {}
        for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
            number = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
            source = item.DerivationImageSequence[0].SourceImageSequence[0]
            assert source.ReferencedSOPInstanceUID == report["image"]["sop_instance_uid"]
            by_segment[number] = frame
        pixels = np.stack([by_segment[1], by_segment[2]], axis=-1)
        duct = np.asarray(Image.open(folder / "duct_mask.png")) > 0
        np.testing.assert_array_equal(pixels[..., 0] > 0, duct)
        shape = (report["image"]["rows"], report["image"]["columns"])
        lesions = lesion_mask_px(shape, [les["bbox_px"] for les in report["lesions"]]) > 0
        np.testing.assert_array_equal(pixels[..., 1] > 0, lesions)
        assert lesions.any() == bool(report["lesions"])


def _measurement(group, code) -> float | None:
    found = group.get_measurements(name=code)
    return float(found[0].value) if found else None


def test_sr_has_one_entry_per_lesion_with_the_report_values(written):
    _, folders = written
    for folder in folders:
        report = json.loads((folder / "report.json").read_text())
        sr = hd.sr.srread(folder / "sr.dcm")
        groups = sr.content.get_planar_roi_measurement_groups()
        assert len(groups) == len(report["lesions"])
        for group, lesion in zip(groups, report["lesions"]):
            assert group.tracking_identifier.startswith(f"Lesion {lesion['id']}: ")
            assert group.finding_type == FINDING_CODES[lesion["label"]]
            assert _measurement(group, codes.DCM.Probability) == pytest.approx(lesion["score"])
            assert _measurement(group, codes.DCM.DistanceFromNipple) == pytest.approx(
                lesion["distance_to_nipple_mm"]
            )
            assert _measurement(group, codes.DCM.PathLength) == pytest.approx(
                lesion["duct_path_length_mm"]
            )
            x0, y0, x1, y1 = lesion["bbox_px"]
            np.testing.assert_allclose(
                group.roi.value, [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], atol=1e-3
            )
            evaluations = {e.name.value: e.value for e in group.get_qualitative_evaluations()}
            assert evaluations[codes.DCM.ClockfaceOrRegion.value] == clock_code(lesion["clock"])


def test_sc_shows_the_overlay(written):
    _, folders = written
    for folder in folders:
        ds = pydicom.dcmread(folder / "sc.dcm")
        overlay = np.asarray(Image.open(folder / "overlay.png").convert("RGB"))
        assert ds.PhotometricInterpretation == "RGB" and ds.BurnedInAnnotation == "YES"
        np.testing.assert_array_equal(ds.pixel_array, overlay)


def test_uids_are_deterministic_unless_asked(written, tmp_path):
    case, folders = written
    again = write_view_outputs(
        tmp_path / "a", case.predictions[0], case.localizations[0], case.study_lesions
    )
    fresh = write_view_outputs(
        tmp_path / "b",
        case.predictions[0],
        case.localizations[0],
        case.study_lesions,
        uids="random",
    )
    for kind in KINDS:
        first = pydicom.dcmread(folders[0] / f"{kind}.dcm").SOPInstanceUID
        assert pydicom.dcmread(again / f"{kind}.dcm").SOPInstanceUID == first
        assert pydicom.dcmread(fresh / f"{kind}.dcm").SOPInstanceUID != first


def test_clock_codes_round_half_hours_up():
    assert clock_code("3:00").value == codes.SCT._3OClockPosition.value
    assert clock_code("10:30").value == codes.SCT._11OClockPosition.value
    assert clock_code("12:30").value == codes.SCT._1OClockPosition.value
