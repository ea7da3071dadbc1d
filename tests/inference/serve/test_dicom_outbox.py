"""The outbox: idempotent adds, sent-markers, back-off, and a sender that waits for a
destination that is down (a real dcmtk storescp started later)."""

from __future__ import annotations

import pydicom
import pytest
from dicom_helpers import HAVE_DCMTK, StoreSCP, free_port, image_dataset, result_dataset, wait_for
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt

from ductai.inference.serve.outbox import Destination, Outbox, RetryPolicy, Sender

needs_dcmtk = pytest.mark.skipif(not HAVE_DCMTK, reason="dcmtk (storescp) not installed")


@pytest.fixture
def results(tmp_path):
    """Three stand-in result files (seg, sr, sc) of one source image."""
    source = image_dataset("1.2.826.0.1.3")
    folder = tmp_path / "results" / str(source.SOPInstanceUID)
    folder.mkdir(parents=True)
    paths = []
    for kind in ("seg", "sr", "sc"):
        path = folder / f"{kind}.dcm"
        result_dataset(source, kind).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def receiver(tmp_path):
    scp = StoreSCP(tmp_path / "received", free_port())
    yield scp
    scp.stop()


def test_back_off_doubles_up_to_max_and_gives_up_only_when_not_forever():
    policy = RetryPolicy(initial_s=2, max_s=10, forever=True)
    assert [policy.delay(n) for n in range(1, 6)] == [2, 4, 8, 10, 10]
    assert not any(policy.gives_up(n) for n in range(1, 50))
    once = RetryPolicy(initial_s=2, max_s=10, forever=False)
    # Waits 2, 4, 8, 10 after failures 1-4; the failure after the 10 s wait gives up.
    assert [once.gives_up(n) for n in range(1, 7)] == [False] * 4 + [True, True]


def test_add_is_idempotent_and_skips_instances_sent_before(tmp_path, results):
    outbox = Outbox(tmp_path / "outbox")
    added = outbox.add("DEST_h_1", "dicom-a", results)
    uids = [str(pydicom.dcmread(p).SOPInstanceUID) for p in results]
    assert [p.stem for p in added] == uids
    assert outbox.pending("DEST_h_1") == sorted(added)
    Outbox.mark_sent(added[0])
    assert outbox.add("DEST_h_1", "dicom-a", results) == added  # nothing copied again
    assert added[0] not in outbox.pending("DEST_h_1")
    assert outbox.sop_uids("DEST_h_1", "dicom-a") == set(uids)
    # A later analysis of the study leaves out what the earlier one outboxed.
    assert outbox.add("DEST_h_1", "dicom-b", results, skip={uids[0]}) == [
        outbox.folder("DEST_h_1", "dicom-b") / f"{u}.dcm" for u in uids[1:]
    ]
    assert Destination("PACS", "10.0.0.1", 104).name == "PACS_10.0.0.1_104"


@pytest.mark.dicom_tools
@needs_dcmtk
def test_a_destination_that_is_down_gets_the_files_when_it_comes_back(tmp_path, results, receiver):
    outbox = Outbox(tmp_path / "outbox")
    destination = Destination("DEST", "127.0.0.1", receiver.port)
    outbox.add(destination.name, "dicom-a", results)
    sender = Sender(outbox, destination, "DUCTAI", RetryPolicy(0.2, 0.5), poll_s=0.2)
    assert sender.send_pending() is False  # nothing listens yet
    sender.start()
    try:
        receiver.start()
        wait_for(lambda: not outbox.pending(destination.name), 30, "the files sent")
    finally:
        sender.stop()
    received = receiver.received()
    assert len(received) == 3 and set(received.values()) == {1}
    # Markers: a second round sends nothing again.
    assert sender.send_pending() is True
    assert sum(receiver.received().values()) == 3


@pytest.fixture
def refusing_scp():
    """A pynetdicom SCP that answers every C-STORE with 0xA700 (out of resources)."""
    ae = AE(ae_title="FULL")
    for context in StoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    calls = []

    def refuse(event):
        calls.append(event.request.AffectedSOPInstanceUID)
        return 0xA700

    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, refuse)]
    )
    server.calls = calls
    yield server
    server.shutdown()


def test_refused_files_are_retried_then_given_up_when_not_forever(tmp_path, results, refusing_scp):
    outbox = Outbox(tmp_path / "outbox")
    destination = Destination("FULL", "127.0.0.1", refusing_scp.server_address[1])
    outbox.add(destination.name, "dicom-a", results)
    # Waits 0.1, 0.2 (= max_s) after failures 1 and 2; failure 3 gives up.
    sender = Sender(outbox, destination, "DUCTAI", RetryPolicy(0.1, 0.2, forever=False))
    assert [sender.send_pending() for _ in range(3)] == [False, False, False]
    assert len(refusing_scp.calls) == 9  # each file tried three times
    assert outbox.pending(destination.name) == []
    failed = list(outbox.root.rglob("*.failed"))
    assert len(failed) == 3 and "0xA700" in failed[0].read_text()
    assert sender.send_pending() is True  # nothing left to try
