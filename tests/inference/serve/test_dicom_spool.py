"""The spool: durable Part 10 files per study, safe names, settle time, deterministic ids."""

from __future__ import annotations

import json
from io import BytesIO

import pydicom
import pytest
from dicom_helpers import image_dataset

from ductai.inference.serve.spool import Spool, analysis_id_for


def part10(ds) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_store_writes_a_part10_file_and_the_state(tmp_path):
    spool = Spool(tmp_path / "spool")
    ds = image_dataset("1.2.3", "1.2.3.4")
    path = spool.store("1.2.3", "1.2.3.4", part10(ds), now=100.0)

    assert path == tmp_path / "spool" / "1.2.3" / "1.2.3.4.dcm"
    data = path.read_bytes()
    assert data[128:132] == b"DICM"  # preamble + prefix, then file meta
    read = pydicom.dcmread(path)
    assert read.SOPInstanceUID == "1.2.3.4" and read.file_meta.TransferSyntaxUID
    state = json.loads((path.parent / "state.json").read_text())
    assert state["last_received"] == 100.0 and state["study_instance_uid"] == "1.2.3"
    assert not list(path.parent.glob(".*"))  # no temporary files left


@pytest.mark.parametrize(
    "crafted", ["../../escape", "/etc/passwd", "..", "a/b", "x" * 300, "1.2\x00"]
)
def test_crafted_uids_never_escape_the_spool(tmp_path, crafted):
    spool = Spool(tmp_path / "spool")
    path = spool.store(crafted, crafted, part10(image_dataset()))
    assert path.resolve().is_relative_to((tmp_path / "spool").resolve())
    assert path.parent.parent == tmp_path / "spool"
    assert path.name.startswith("h") and path.parent.name.startswith("h")  # hashed names
    assert spool.studies() == [path.parent.name]


def test_settled_after_quiet_time_and_ids_follow_the_instances(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.store("1.2.3", "1.2.3.5", part10(image_dataset()), now=100.0)
    spool.store("1.2.3", "1.2.3.4", part10(image_dataset()), now=103.0)
    snap = spool.snapshot("1.2.3")
    assert snap.sop_uids == ["1.2.3.4", "1.2.3.5"] and snap.last_received == 103.0
    assert not snap.settled(5, now=107.0)
    assert snap.settled(5, now=108.0)
    # The id depends on the set of instances, not on the order they came in.
    assert snap.analysis_id == analysis_id_for("1.2.3", ["1.2.3.5", "1.2.3.4"])
    assert snap.analysis_id.startswith("dicom-") and len(snap.analysis_id) == 6 + 16
    spool.store("1.2.3", "1.2.3.6", part10(image_dataset()), now=104.0)
    assert spool.snapshot("1.2.3").analysis_id != snap.analysis_id


def test_state_updates_mirror_the_newest_analysis(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.store("1.2.3", "1.2.3.4", part10(image_dataset()))
    state = spool.update_state(
        "1.2.3", lambda s: s.setdefault("analyses", []).append({"id": "dicom-a", "outboxed": True})
    )
    assert state["analysis_id"] == "dicom-a" and state["outboxed"] is True
    assert spool.snapshot("1.2.3").current["id"] == "dicom-a"


def test_lost_state_falls_back_to_file_times(tmp_path):
    spool = Spool(tmp_path / "spool")
    path = spool.store("1.2.3", "1.2.3.4", part10(image_dataset()))
    (path.parent / "state.json").unlink()
    snap = spool.snapshot("1.2.3")
    assert snap.last_received == pytest.approx(path.stat().st_mtime)
    assert snap.current is None
