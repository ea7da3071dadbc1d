"""The DICOM node: a C-ECHO/C-STORE SCP that spools studies, analyses them, sends results back.

Flow (docs/serving-dicom.md):
1. SCP (pynetdicom): an association is accepted only when the called AE title is ours and the
   calling AE title is allowed (empty allow-list = any). Each C-STORE is checked (decodable,
   has Pixel Data and the UIDs) and written durably to the spool *before* the success status;
   a write failure answers 0xA700, bad data a failure status with an ErrorComment.
2. Watcher thread: a study with no new instance for `settle_seconds` is submitted to the
   `AnalysisService` under an id derived from its instances (spool.analysis_id_for), then
   recorded in the study's state.json.
3. When the analysis is done, every view's seg.dcm, sr.dcm and sc.dcm goes into the outbox
   of the configured destination, and the state says ``outboxed``; the sender thread
   (outbox.Sender) C-STOREs them with retries.
Every step is decided from what is on disk, so after a crash `start()` simply resumes:
settled studies not yet submitted are submitted (same id: the service knows it), done ones
not outboxed are outboxed, unsent files are sent.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
    Verification,
)

from ductai.inference.serve.outbox import Destination, Outbox, RetryPolicy, Sender
from ductai.inference.serve.service import NotReadyError, QueueFull
from ductai.inference.serve.spool import Spool, StudySnapshot
from ductai.inference.writers.dicom import MANUFACTURER

__all__ = ["RESULT_FILES", "STORAGE_CLASSES", "TRANSFER_SYNTAXES", "DicomNode", "result_files"]

log = logging.getLogger("ductai.serve.dicom")

STORAGE_CLASSES = [
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ComputedRadiographyImageStorage,
    SecondaryCaptureImageStorage,
]
# Stored as received: the data layer decodes JPEG, JPEG-LS, JPEG 2000 and RLE (pylibjpeg).
TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEG2000Lossless,
    JPEG2000,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    RLELossless,
]
RESULT_FILES = ("seg.dcm", "sr.dcm", "sc.dcm")  # per view, in results/<SOPInstanceUID>/

# C-STORE statuses (PS3.4 B.2.3; 0xA7xx out of resources, 0xA9xx data set does not match the
# SOP class, 0xCxxx cannot understand).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
NOT_AN_IMAGE = 0xA900
CANNOT_UNDERSTAND = 0xC000


def _event(level: int, message: str, event: str, **fields: Any) -> None:
    """One structured line: a readable message plus the fields (logs.JsonFormatter)."""
    log.log(level, message, extra={"event": event, **fields})


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]  # LO: at most 64 characters
    return status


class DicomNode:
    """SCP + study watcher + sender around one `AnalysisService`; `start()` does not block."""

    def __init__(self, config: Any, service: Any, poll_s: float = 0.5) -> None:
        self.dicom = config.dicom
        self.host = self.dicom.host or config.host
        self.service = service
        self.poll_s = poll_s
        data_dir = Path(config.data_dir)
        self.spool = Spool(data_dir / "spool")
        self.outbox = Outbox(data_dir / "outbox")
        dest = self.dicom.destination
        self.destination = Destination(dest.ae_title, dest.host, dest.port) if dest else None
        self.sender = None
        if self.destination is not None:
            retry = self.dicom.retry
            policy = RetryPolicy(retry.initial_s, retry.max_s, retry.forever)
            self.sender = Sender(self.outbox, self.destination, self.dicom.ae_title, policy)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._counts: dict[int, list[int]] = {}  # id(association) -> [stored, refused]
        self._counts_lock = threading.Lock()
        self._told_no_destination = False
        # Studies the watcher looks at: all at start, then those in progress or just received.
        self._active: set[str] | None = None
        self._touched: set[str] = set()
        self._active_lock = threading.Lock()

    # ---- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the SCP (in its own threads), the study watcher and the sender."""
        ae = AE(ae_title=self.dicom.ae_title)
        ae.require_called_aet = True
        if self.dicom.allowed_calling_aes:
            ae.require_calling_aet = list(self.dicom.allowed_calling_aes)
        ae.add_supported_context(Verification)
        for sop_class in STORAGE_CLASSES:
            ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
        handlers = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_closed),
            (evt.EVT_ABORTED, self._on_closed),
        ]
        self._server = ae.start_server(
            (self.host, self.dicom.port), block=False, evt_handlers=handlers
        )
        self._stop.clear()
        self.service.add_listener(lambda analysis: self._wake.set())
        self._thread = threading.Thread(target=self._watch, name="dicom-watcher", daemon=True)
        self._thread.start()
        if self.sender is not None:
            self.sender.start()
        _event(
            logging.INFO,
            f"DICOM node {self.dicom.ae_title} listening on {self.host}:{self.port}",
            "dicom.started",
            ae_title=self.dicom.ae_title,
            host=self.host,
            dicom_port=self.port,
            destination=str(self.destination) if self.destination else None,
            allowed_calling_aes=list(self.dicom.allowed_calling_aes),
        )

    @property
    def port(self) -> int:
        """The port the SCP listens on (the config's, or the one picked for port 0)."""
        return int(self._server.server_address[1]) if self._server else int(self.dicom.port)

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout)
        if self.sender is not None:
            self.sender.stop(timeout)
        _event(logging.INFO, "DICOM node stopped", "dicom.stopped")

    # ---- SCP ------------------------------------------------------------------------------
    def _on_echo(self, event: Any) -> int:
        return SUCCESS

    def _on_accepted(self, event: Any) -> None:
        with self._counts_lock:
            self._counts[id(event.assoc)] = [0, 0]
        requestor = event.assoc.requestor
        _event(
            logging.INFO,
            f"association from {requestor.ae_title} accepted",
            "dicom.association",
            outcome="accepted",
            calling_ae=requestor.ae_title,
            peer=f"{requestor.address}:{requestor.port}",
        )

    def _on_rejected(self, event: Any) -> None:
        requestor = event.assoc.requestor
        request = requestor.primitive
        called = str(getattr(request, "called_ae_title", "") or "").strip()
        calling = str(requestor.ae_title).strip()
        allowed = list(self.dicom.allowed_calling_aes)
        if called != self.dicom.ae_title:
            reason = f"called AE title {called!r} is not this node's ({self.dicom.ae_title!r})"
        elif allowed and calling not in allowed:
            reason = f"calling AE title {calling!r} is not in dicom.allowed_calling_aes"
        else:
            reason = "refused by the association negotiation"
        _event(
            logging.WARNING,
            f"association from {calling} rejected: {reason}",
            "dicom.association",
            outcome="rejected",
            calling_ae=calling,
            called_ae=called,
            peer=f"{requestor.address}:{requestor.port}",
            reason=reason,
        )

    def _on_closed(self, event: Any) -> None:
        with self._counts_lock:
            stored, refused = self._counts.pop(id(event.assoc), [0, 0])
        outcome = "released" if event.event is evt.EVT_RELEASED else "aborted"
        requestor = event.assoc.requestor
        _event(
            logging.INFO,
            f"association from {requestor.ae_title} {outcome}: {stored} stored, {refused} refused",
            "dicom.association",
            outcome=outcome,
            calling_ae=requestor.ae_title,
            stored=stored,
            refused=refused,
        )

    def _count(self, event: Any, index: int) -> None:
        with self._counts_lock:
            counts = self._counts.get(id(event.assoc))
            if counts is not None:
                counts[index] += 1

    def _refuse(self, event: Any, code: int, reason: str, **fields: Any) -> Dataset:
        self._count(event, 1)
        calling = event.assoc.requestor.ae_title
        _event(
            logging.WARNING,
            f"instance from {calling} refused (0x{code:04X}): {reason}",
            "dicom.refused",
            calling_ae=calling,
            status=f"0x{code:04X}",
            reason=reason,
            **fields,
        )
        return _status(code, reason)

    def _on_store(self, event: Any) -> int | Dataset:
        try:
            ds = event.dataset
        except Exception as exc:  # whatever pydicom raises on a malformed data set
            return self._refuse(event, CANNOT_UNDERSTAND, f"cannot decode the data set: {exc}")
        try:
            study_uid = str(ds.get("StudyInstanceUID", "") or "")
            sop_uid = str(ds.get("SOPInstanceUID", "") or "")
            has_pixels = "PixelData" in ds
            ours = str(ds.get("Manufacturer", "") or "") == MANUFACTURER
        except Exception as exc:
            return self._refuse(event, CANNOT_UNDERSTAND, f"cannot read the data set: {exc}")
        missing = [
            k for k, v in (("StudyInstanceUID", study_uid), ("SOPInstanceUID", sop_uid)) if not v
        ]
        if missing:
            return self._refuse(event, NOT_AN_IMAGE, f"missing {' and '.join(missing)}")
        if not has_pixels:
            return self._refuse(
                event,
                NOT_AN_IMAGE,
                "no Pixel Data: not an image",
                study_uid=study_uid,
                sop_uid=sop_uid,
            )
        if ours:
            # ductai's own result (e.g. a PACS forwarding our SC back): never analyse it.
            self._count(event, 0)
            _event(
                logging.INFO,
                "ignored an instance written by ductai",
                "dicom.ignored",
                study_uid=study_uid,
                sop_uid=sop_uid,
            )
            return SUCCESS
        try:
            path = self.spool.store(study_uid, sop_uid, event.encoded_dataset(include_meta=True))
        except OSError as exc:
            return self._refuse(
                event, OUT_OF_RESOURCES, f"cannot write to the spool: {exc.strerror or exc}"
            )
        with self._active_lock:
            if self._active is not None:
                self._active.add(path.parent.name)
            self._touched.add(path.parent.name)
        self._count(event, 0)
        log.debug("stored %s", path, extra={"event": "dicom.stored", "study_uid": study_uid})
        return SUCCESS

    # ---- studies: settle, submit, outbox --------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.is_set():
            self.scan()
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def scan(self, everything: bool = False) -> None:
        """Advance the studies one step: every spooled study (at start, which is what resumes
        the work after a crash), then only those still in progress or newly received."""
        with self._active_lock:
            if everything or self._active is None:
                self._active = set(self.spool.studies())
            studies = sorted(self._active)
        for study in studies:
            if self._stop.is_set():
                return
            try:
                busy = self._advance(self.spool.snapshot(study))
            except Exception:  # one broken study must not stop the others
                log.exception(
                    "study %s: cannot advance", study, extra={"event": "dicom.study_error"}
                )
                continue
            if not busy:
                with self._active_lock:
                    # Unless an instance arrived meanwhile (its store re-adds the study).
                    if study not in self._touched:
                        self._active.discard(study)
                    self._touched.discard(study)

    def _advance(self, snap: StudySnapshot) -> bool:
        """One step for one study; False when nothing is left to do until new instances."""
        if not snap.files:
            return False
        current = snap.current
        if current is None or sorted(current["sop_uids"]) != snap.sop_uids:
            if snap.settled(self.dicom.settle_seconds):
                self._submit(snap)
            return True
        if current.get("outboxed") or current["state"] in ("failed", "superseded"):
            return False
        if current["state"] == "done" and self.destination is None:
            return False
        analysis = self.service.get(current["id"])
        if analysis is None:  # the analysis folder is gone: submit the same id again
            self._submit(snap)
        elif analysis.state == "done":
            self._finish(snap, current["id"], analysis)
        elif analysis.state == "failed":
            self._set(snap.study_uid, current["id"], state="failed", error=analysis.error)
            _event(
                logging.ERROR,
                f"study {snap.study_uid}: analysis {current['id']} failed: {analysis.error}",
                "dicom.study",
                outcome="failed",
                study_uid=snap.study_uid,
                analysis_id=current["id"],
                error=analysis.error,
            )
        return True

    def _submit(self, snap: StudySnapshot) -> None:
        analysis_id = snap.analysis_id
        try:
            self.service.submit(
                list(snap.files), source="dicom", analysis_id=analysis_id, move=False
            )
        except (QueueFull, NotReadyError, OSError) as exc:
            # Not lost: the study stays settled and unsubmitted; the next scan tries again.
            log.debug("study %s: submit later (%s)", snap.study_uid, exc)
            return
        except ValueError as exc:
            self._record(snap, analysis_id, state="failed", error=str(exc))
            _event(
                logging.ERROR,
                f"study {snap.study_uid}: cannot submit: {exc}",
                "dicom.study",
                outcome="failed",
                study_uid=snap.study_uid,
                analysis_id=analysis_id,
                error=str(exc),
            )
            return
        self._record(snap, analysis_id, state="submitted")
        _event(
            logging.INFO,
            f"study {snap.study_uid} settled: {len(snap.files)} instances, analysis {analysis_id}",
            "dicom.study",
            outcome="submitted",
            study_uid=snap.study_uid,
            analysis_id=analysis_id,
            instances=len(snap.files),
        )

    def _record(self, snap: StudySnapshot, analysis_id: str, **fields: Any) -> None:
        """Append the analysis to the study's state (once); older unsent ones are superseded."""

        def change(state: dict[str, Any]) -> None:
            analyses = state.setdefault("analyses", [])
            if analyses and analyses[-1]["id"] == analysis_id:
                analyses[-1].update(fields)
                return
            for old in analyses:
                if old["state"] in ("submitted", "done") and not old.get("outboxed"):
                    old["state"] = "superseded"
            analyses.append(
                {
                    "id": analysis_id,
                    "sop_uids": snap.sop_uids,
                    "submitted": time.time(),
                    "outboxed": False,
                    "error": None,
                    **fields,
                }
            )

        self.spool.update_state(snap.study_uid, change)

    def _set(self, study_uid: str, analysis_id: str, **fields: Any) -> None:
        def change(state: dict[str, Any]) -> None:
            for entry in state.get("analyses", []):
                if entry["id"] == analysis_id:
                    entry.update(fields)

        self.spool.update_state(study_uid, change)

    def _finish(self, snap: StudySnapshot, analysis_id: str, analysis: Any) -> None:
        """Put a done analysis's result DICOMs in the outbox, then record `outboxed`."""
        if self.destination is None:
            self._set(snap.study_uid, analysis_id, state="done")
            if not self._told_no_destination:
                self._told_no_destination = True
                _event(
                    logging.WARNING,
                    "no dicom.destination configured: results stay in the analyses folder",
                    "dicom.no_destination",
                )
            return
        results = self.service.results_dir(analysis_id)
        files = result_files(results)
        # A re-analysis (more instances came) sends only instances not sent for this study.
        earlier = [
            a["id"]
            for a in snap.state.get("analyses", [])
            if a["id"] != analysis_id and a.get("outboxed")
        ]
        skip = set().union(*(self.outbox.sop_uids(self.destination.name, a) for a in earlier))
        added = self.outbox.add(self.destination.name, analysis_id, files, skip)
        self._set(snap.study_uid, analysis_id, state="done", outboxed=True, error=analysis.error)
        self.sender.wake()
        _event(
            logging.INFO,
            f"study {snap.study_uid}: analysis {analysis_id} done, {len(added)} result files "
            f"queued for {self.destination}",
            "dicom.study",
            outcome="outboxed",
            study_uid=snap.study_uid,
            analysis_id=analysis_id,
            files=len(added),
            skipped=len(files) - len(added),
            destination=str(self.destination),
            file_errors=analysis.error,
        )


def result_files(results_dir: Path) -> list[Path]:
    """Every view's result DICOMs under an analysis's results folder."""
    return sorted(p for name in RESULT_FILES for p in results_dir.glob(f"*/{name}"))
