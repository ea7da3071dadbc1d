"""The DICOM node in-process: SCP checks (echo, AE titles, bad instances), spool -> settle ->
submit -> outbox -> C-STORE to a real receiver (dcmtk storescp), re-sent and grown studies,
a full queue, resuming after a stop. A fake AnalysisService stands in for the model here; the
end-to-end tests with the real service and the real server process are at the end."""

from __future__ import annotations

import json
import logging
import subprocess
import time

import pydicom
import pytest
from dicom_helpers import (
    HAVE_DCMTK,
    FakeService,
    StoreSCP,
    free_port,
    image_dataset,
    send_with_pynetdicom,
    serve_config,
    wait_for,
)
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from ductai.inference.serve.dicom_node import DicomNode

needs_dcmtk = pytest.mark.skipif(not HAVE_DCMTK, reason="dcmtk (storescu/storescp) not installed")


@pytest.fixture
def make_node(tmp_path):
    """Start DicomNodes on data_dir tmp_path/data (several in turn = restarts); all stopped."""
    nodes = []

    def make(service=None, dest_port=None, **dicom):
        config = serve_config(tmp_path / "data", dest_port, **dicom)
        service = service if service is not None else FakeService(tmp_path / "analyses")
        node = DicomNode(config, service, poll_s=0.1)
        node.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


@pytest.fixture
def receiver(tmp_path):
    scp = StoreSCP(tmp_path / "received", free_port())
    yield scp
    scp.stop()


def storescu(port: int, files, calling="MODALITY", called="DUCTAI"):
    return subprocess.run(
        ["storescu", "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def echoscu(port: int, calling="MODALITY", called="DUCTAI"):
    return subprocess.run(
        ["echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def spooled(node) -> list:
    return sorted(p.name for p in node.spool.root.rglob("*.dcm"))


def save(ds, path):
    ds.save_as(path, enforce_file_format=True)
    return path


# ---- the SCP ------------------------------------------------------------------------------
@pytest.mark.dicom_tools
@needs_dcmtk
def test_echo_and_ae_title_checks(make_node):
    node = make_node(allowed_calling_aes=["MODALITY", "WS1"])
    assert echoscu(node.port).returncode == 0
    assert echoscu(node.port, calling="WS1").returncode == 0
    refused = echoscu(node.port, calling="INTRUDER")
    assert refused.returncode != 0 and "reject" in (refused.stdout + refused.stderr).lower()
    assert echoscu(node.port, called="OTHER").returncode != 0


def test_calling_and_called_ae_titles(make_node, caplog):
    node = make_node()
    assert send_with_pynetdicom([image_dataset()], node.port, calling="ANYONE") == [0]
    node.stop()
    node = make_node(allowed_calling_aes=["MODALITY"])
    with caplog.at_level(logging.INFO, logger="ductai.serve.dicom"):
        assert send_with_pynetdicom([image_dataset()], node.port, called="WRONG") == "rejected"
        assert send_with_pynetdicom([image_dataset()], node.port, calling="ANYONE") == "rejected"
        assert send_with_pynetdicom([image_dataset()], node.port) == [0]
    reasons = [r.reason for r in caplog.records if getattr(r, "outcome", "") == "rejected"]
    assert reasons == [
        "called AE title 'WRONG' is not this node's ('DUCTAI')",
        "calling AE title 'ANYONE' is not in dicom.allowed_calling_aes",
    ]


def test_bad_instances_are_refused_and_not_spooled(make_node, caplog):
    node = make_node()
    no_pixels = image_dataset(pixels=False)
    no_study = image_dataset()
    del no_study.StudyInstanceUID
    with caplog.at_level(logging.INFO, logger="ductai.serve.dicom"):
        statuses = send_with_pynetdicom([no_pixels, no_study], node.port)
    assert statuses == [0xA900, 0xA900]
    assert spooled(node) == []
    refused = [r for r in caplog.records if getattr(r, "event", "") == "dicom.refused"]
    assert [r.reason for r in refused] == [
        "no Pixel Data: not an image",
        "missing StudyInstanceUID",
    ]
    # Patient identity never reaches the log, only UIDs.
    assert "SECRET" not in caplog.text
    assert all("SECRET" not in json.dumps(r.__dict__, default=str) for r in caplog.records)


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless, RLELossless])
def test_compressed_instances_are_stored_as_received(make_node, syntax):
    node = make_node(settle_seconds=60)
    ds = image_dataset()
    ds.compress(syntax)
    assert send_with_pynetdicom([ds], node.port) == [0]
    [path] = list(node.spool.root.rglob("*.dcm"))
    stored = pydicom.dcmread(path)
    assert stored.file_meta.TransferSyntaxUID == syntax
    assert (stored.pixel_array == image_dataset().pixel_array).all()


def test_crafted_uids_stay_inside_the_spool(make_node, tmp_path):
    node = make_node(settle_seconds=60)
    ds = image_dataset(study_uid="../../../outside", sop_uid="../../x")
    assert send_with_pynetdicom([ds], node.port) == [0]
    [path] = list(node.spool.root.rglob("*.dcm"))
    assert path.resolve().is_relative_to(node.spool.root.resolve())
    assert not list(tmp_path.glob("outside*")) and not (tmp_path / "x.dcm").exists()


def test_a_write_failure_is_never_acknowledged(make_node, monkeypatch):
    node = make_node()

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(node.spool, "store", full)
    assert send_with_pynetdicom([image_dataset()], node.port) == [0xA700]


def test_ductai_results_sent_back_to_the_node_are_ignored(make_node):
    node = make_node()
    ds = image_dataset()
    ds.Manufacturer = "ductai"
    assert send_with_pynetdicom([ds], node.port) == [0]
    assert spooled(node) == []


# ---- studies: settle, submit, outbox, send --------------------------------------------------
@pytest.mark.dicom_tools
@needs_dcmtk
def test_storescu_study_results_reach_storescp_once(make_node, receiver, simulated_study):
    receiver.start()
    service = FakeService(receiver.folder.parent / "analyses")
    node = make_node(service, dest_port=receiver.port)
    sent = storescu(node.port, simulated_study.images)
    assert sent.returncode == 0, sent.stderr
    assert len(spooled(node)) == len(simulated_study.images)

    expected = 3 * len(simulated_study.images)  # seg, sr, sc per view
    wait_for(lambda: len(list(node.outbox.root.rglob("*.sent"))) == expected, 30, "the results")
    received = receiver.received()
    assert set(received.values()) == {1} and len(received) == expected
    [(analysis_id, files)] = service.submitted
    assert len(files) == len(simulated_study.images)
    study = node.spool.snapshot(node.spool.studies()[0])
    assert study.state["analysis_id"] == analysis_id and study.state["outboxed"] is True

    # The same study again (a PACS re-sends it): same instances, nothing new to analyse.
    assert storescu(node.port, simulated_study.images).returncode == 0
    node.scan()
    assert len(service.submitted) == 1


def test_more_instances_make_a_new_analysis_that_sends_only_new_results(
    make_node, receiver, tmp_path
):
    receiver.start()
    service = FakeService(tmp_path / "analyses")
    node = make_node(service, dest_port=receiver.port)
    first = [image_dataset("1.2.826.0.1.7"), image_dataset("1.2.826.0.1.7")]
    assert send_with_pynetdicom(first, node.port) == [0, 0]
    wait_for(lambda: sum(receiver.received().values()) == 6, 30, "the first results")

    assert send_with_pynetdicom([image_dataset("1.2.826.0.1.7")], node.port) == [0]
    wait_for(lambda: sum(receiver.received().values()) == 9, 30, "the new view's results")
    assert set(receiver.received().values()) == {1}
    assert len(service.submitted) == 2 and len(service.submitted[1][1]) == 3
    state = node.spool.snapshot("1.2.826.0.1.7").state
    assert [a["state"] for a in state["analyses"]] == ["done", "done"]


def test_a_full_queue_is_retried_and_a_failure_recorded(make_node, tmp_path):
    service = FakeService(tmp_path / "analyses", auto=False, full=True)
    node = make_node(service)
    assert send_with_pynetdicom([image_dataset("1.2.826.0.1.8")], node.port) == [0]
    wait_for(lambda: node.spool.snapshot("1.2.826.0.1.8").settled(0.5), 5, "settle")
    node.scan()
    assert service.submitted == [] and node.spool.snapshot("1.2.826.0.1.8").current is None
    service.full = False
    wait_for(lambda: service.submitted, 5, "the submission after the queue emptied")
    [(analysis_id, _)] = service.submitted
    service.finish(analysis_id, fail=True)
    wait_for(
        lambda: node.spool.snapshot("1.2.826.0.1.8").current["state"] == "failed",
        5,
        "the failure recorded",
    )
    assert node.spool.snapshot("1.2.826.0.1.8").current["error"] == "broken"


def test_a_restarted_node_resumes_where_the_last_one_stopped(make_node, receiver, tmp_path):
    # Results ready while no destination listens, then the node stops (as in a crash: the
    # next one knows only the disk); the new node sends them once the receiver is up.
    service = FakeService(tmp_path / "analyses", auto=False)
    node = make_node(service, dest_port=receiver.port)
    assert send_with_pynetdicom([image_dataset("1.2.826.0.1.9")], node.port) == [0]
    wait_for(lambda: service.submitted, 10, "the submission")
    node.stop()
    [(analysis_id, _)] = service.submitted
    service.listeners.clear()
    service.finish(analysis_id)

    node = make_node(service, dest_port=receiver.port)
    wait_for(lambda: node.spool.snapshot("1.2.826.0.1.9").state.get("outboxed"), 10, "outbox")
    receiver.start()
    wait_for(lambda: sum(receiver.received().values()) == 3, 30, "the results")
    assert len(service.submitted) == 1
    node.stop()
    node = make_node(service, dest_port=receiver.port)
    node.scan()
    assert node.sender.send_pending() is True
    assert set(receiver.received().values()) == {1}
    assert all(pydicom.dcmread(p).Modality == "OT" for p in receiver.folder.iterdir())


# ---- the real server process (`ductai serve`, tiny model) ----------------------------------
def dicom_settings(dest_port: int) -> dict:
    return {
        "enabled": True,
        "settle_seconds": 1,
        "destination": {"ae_title": "DEST", "host": "127.0.0.1", "port": dest_port},
        "retry": {"initial_s": 0.5, "max_s": 2},
    }


def check_results(receiver, study) -> None:
    """Each view's SEG, SR and SC arrived exactly once, readable, in the source study."""
    received = receiver.received()
    assert len(received) == 3 * len(study.images) and set(received.values()) == {1}, received
    source = pydicom.dcmread(study.images[0], stop_before_pixels=True)
    modalities = []
    for path in sorted(receiver.folder.iterdir()):
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID  # a new series of the study
        modalities.append(ds.Modality)
        dump = subprocess.run(["dcmdump", str(path)], capture_output=True, text=True, timeout=60)
        assert dump.returncode == 0 and "E: " not in dump.stderr, dump.stderr
    assert sorted(set(modalities)) == ["OT", "SEG", "SR"]


def dicom_events(server, outcome: str) -> list[dict]:
    return [
        r
        for r in server.log_records()
        if str(r.get("event", "")).startswith("dicom.") and r.get("outcome") == outcome
    ]


@pytest.mark.slow
@pytest.mark.dicom_tools
@needs_dcmtk
def test_server_sends_a_study_results_to_storescp(serve_process, receiver, simulated_study):
    receiver.start()
    server = serve_process(dicom=dicom_settings(receiver.port))
    sent = storescu(server.dicom_port, simulated_study.images)
    assert sent.returncode == 0, sent.stderr
    wait_for(
        lambda: sum(receiver.received().values()) >= 3 * len(simulated_study.images),
        180,
        "the results at storescp",
    )
    check_results(receiver, simulated_study)
    assert dicom_events(server, "accepted") and dicom_events(server, "outboxed")
    patient = pydicom.dcmread(simulated_study.images[0], stop_before_pixels=True)
    text = server.log_text()
    assert str(patient.PatientID) not in text and str(patient.PatientName) not in text


@pytest.mark.slow
@pytest.mark.dicom_tools
@needs_dcmtk
def test_server_killed_mid_study_with_the_destination_down_sends_results_once(
    serve_process, receiver, simulated_study
):
    # SIGKILL while the study is analysed; the restarted server finishes it, finds no
    # destination (nothing listens yet), retries, and sends once the receiver is up.
    server = serve_process(dicom=dicom_settings(receiver.port))
    assert storescu(server.dicom_port, simulated_study.images).returncode == 0
    spool = server.data_dir / "spool"

    def submitted_status():
        for state in spool.glob("*/state.json"):
            analysis_id = json.loads(state.read_text()).get("analysis_id")
            status = server.data_dir / "analyses" / str(analysis_id) / "status.json"
            if analysis_id and status.is_file():
                return json.loads(status.read_text())
        return None

    status = wait_for(submitted_status, 60, "the study's analysis")
    server.kill()  # SIGKILL to the process group
    assert status["state"] in ("queued", "running", "done")

    server.restart()
    wait_for(lambda: dicom_events(server, "unreachable"), 180, "a failed send (receiver down)")
    assert sum(1 for p in (server.data_dir / "outbox").rglob("*.sent")) == 0
    receiver.start()
    expected = 3 * len(simulated_study.images)
    wait_for(lambda: sum(receiver.received().values()) >= expected, 60, "the results")
    wait_for(
        lambda: len(list((server.data_dir / "outbox").rglob("*.sent"))) == expected, 30, "markers"
    )

    # Killed and restarted once more: everything is on disk as sent, nothing goes twice.
    server.kill()
    server.restart()
    time.sleep(3)  # settle (1 s) and a sender round (poll 1 s) have passed
    check_results(receiver, simulated_study)
    [state] = [json.loads(p.read_text()) for p in spool.glob("*/state.json")]
    assert state["outboxed"] is True and len(state["analyses"]) == 1
