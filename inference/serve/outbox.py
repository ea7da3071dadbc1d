"""The persistent outbox: result DICOM files waiting for a destination, and the sender.

```
outbox/<dest>/<analysis_id>/<SOPInstanceUID>.dcm        a result file to send (SEG, SR, SC)
outbox/<dest>/<analysis_id>/<SOPInstanceUID>.dcm.sent   written after the peer's success status
outbox/<dest>/<analysis_id>/<SOPInstanceUID>.dcm.failed given up (retry.forever false:
                                                        after a wait of max_s failed too)
```
`<dest>` names the destination (``AE_host_port``). A file with a `.sent` marker is never sent
again. A crash between the peer's success and the marker resends that one file; result UIDs
are deterministic, so the peer receives the same instance and a PACS stores it once.

`Sender` is one thread per destination: it sends every unsent file in one association, and
after a failure (peer down, association rejected, a failure status) waits with exponential
back-off (`initial_s`, doubling up to `max_s`) before it tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context

from ductai.data.atomic import atomic_write_bytes
from ductai.inference.writers.atomic import safe_name, safe_uid

__all__ = ["Destination", "Outbox", "RetryPolicy", "SendError", "Sender"]

log = logging.getLogger("ductai.serve.dicom")

SENT = ".sent"
FAILED = ".failed"
# Success and the warning statuses after which the peer holds the instance (PS3.4 B.2.3).
STORED = {0x0000, 0xB000, 0xB006, 0xB007}
MAX_CONTEXTS = 128  # an association proposes at most 128 presentation contexts
BATCH = 100  # files per association; the rest go in the next round


class SendError(RuntimeError):
    """The destination could not be reached or refused the association."""


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int

    @property
    def name(self) -> str:
        """The outbox folder name of this destination."""
        return safe_name(f"{self.ae_title}_{self.host}_{self.port}".replace(":", "_"))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float = 2.0
    max_s: float = 300.0
    forever: bool = True

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` consecutive failures (1, 2, ...)."""
        return min(self.initial_s * 2 ** max(failures - 1, 0), self.max_s)

    def gives_up(self, failures: int) -> bool:
        """Not forever: give up on the failure after the first wait of `max_s`."""
        return not self.forever and failures >= 2 and self.delay(failures - 1) >= self.max_s


class Outbox:
    """Result files per destination and analysis under `root`, with sent-markers."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, dest: str, analysis_id: str) -> Path:
        return self.root / safe_name(dest) / safe_name(analysis_id)

    def add(
        self,
        dest: str,
        analysis_id: str,
        files: list[Path],
        skip: set[str] | frozenset = frozenset(),
    ) -> list[Path]:
        """Copy result files in (durably); returns the outbox paths of this analysis.

        Idempotent: a file already in the outbox (perhaps sent) is left alone, so adding the
        same analysis again after a crash queues nothing twice. Instances whose
        SOPInstanceUID is in `skip` (already outboxed for the study) are left out.
        """
        folder = self.folder(dest, analysis_id)
        added = []
        for source in files:
            uid = str(dcmread(source, stop_before_pixels=True).SOPInstanceUID)
            target = folder / f"{safe_uid(uid)}.dcm"
            if target.stem in skip:
                continue
            if not target.exists():
                atomic_write_bytes(target, source.read_bytes())
            added.append(target)
        return added

    def sop_uids(self, dest: str, analysis_id: str) -> set[str]:
        """The instance UIDs (file stems) outboxed for one analysis."""
        return {p.stem for p in self.folder(dest, analysis_id).glob("*.dcm")}

    def pending(self, dest: str) -> list[Path]:
        """Files not yet sent nor given up, oldest analysis first."""
        folder = self.root / safe_name(dest)
        if not folder.is_dir():
            return []
        analyses = sorted(
            (p for p in folder.iterdir() if p.is_dir()), key=lambda p: (p.stat().st_mtime, p.name)
        )
        return [
            f
            for a in analyses
            for f in sorted(a.glob("*.dcm"))
            if not f.name.startswith(".") and not is_sent(f) and not is_failed(f)
        ]

    @staticmethod
    def mark_sent(path: Path) -> None:
        atomic_write_bytes(path.with_name(path.name + SENT), b"")

    @staticmethod
    def mark_failed(path: Path, error: str) -> None:
        atomic_write_bytes(path.with_name(path.name + FAILED), error.encode() + b"\n")


def is_sent(path: Path) -> bool:
    return path.with_name(path.name + SENT).exists()


def is_failed(path: Path) -> bool:
    return path.with_name(path.name + FAILED).exists()


def _contexts(datasets: list) -> list:
    """One context per (SOP class, stored transfer syntax), offering uncompressed too."""
    seen: dict[str, list[str]] = {}
    for ds in datasets:
        syntaxes = seen.setdefault(str(ds.SOPClassUID), [])
        ts = str(ds.file_meta.TransferSyntaxUID)
        if ts not in syntaxes:
            syntaxes.insert(0, ts)
    contexts = []
    for sop_class, syntaxes in seen.items():
        for extra in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if extra not in syntaxes:
                syntaxes.append(extra)
        contexts.append(build_context(sop_class, syntaxes))
    return contexts[:MAX_CONTEXTS]


def send_files(
    files: list[Path],
    destination: Destination,
    calling_ae: str,
    on_status: Callable[[Path, int | str], None],
    timeout: float = 30,
) -> None:
    """C-STORE `files` to `destination` in one association.

    `on_status(path, status)` is called right after each reply (an int status, or a short
    error string), so a marker can be written before the next file goes. Files left when
    the association breaks get no call. Raises SendError when no association is made.
    """
    headers = [dcmread(path, stop_before_pixels=True) for path in files]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.requested_contexts = _contexts(headers)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        if assoc.is_rejected:
            raise SendError(f"{destination} rejected the association (check its AE titles)")
        raise SendError(f"no association with {destination} (unreachable, or it aborted)")
    try:
        for path in files:
            if not assoc.is_established:
                break
            try:
                # A path is sent as stored (no decode and re-encode of the pixel data).
                status = assoc.send_c_store(path)
            except ValueError as exc:  # no accepted presentation context for this file
                on_status(path, f"not sent: {exc}")
                continue
            on_status(path, int(status.Status) if "Status" in status else "no response")
    finally:
        if assoc.is_established:
            assoc.release()


class Sender:
    """A thread that drains one destination's outbox, with back-off after failures."""

    def __init__(
        self,
        outbox: Outbox,
        destination: Destination,
        calling_ae: str,
        retry: RetryPolicy,
        poll_s: float = 1.0,
    ) -> None:
        self.outbox = outbox
        self.destination = destination
        self.calling_ae = calling_ae
        self.retry = retry
        self.poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0  # consecutive failed rounds (back-off)
        self._attempts: dict[Path, int] = {}  # per file, for retry.forever false

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dicom-sender", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ok = self.send_pending()
            except Exception as exc:  # keep the thread alive: the next round tries again
                log.exception(
                    "sending to %s failed unexpectedly",
                    self.destination,
                    extra={"event": "dicom.send", "outcome": "error", "error": str(exc)},
                )
                ok = False
            if ok:
                self._failures = 0
                self._wake.wait(self.poll_s)
                self._wake.clear()
            else:
                self._failures += 1
                delay = self.retry.delay(self._failures)
                log.info(
                    "retrying %s in %.1f s",
                    self.destination,
                    delay,
                    extra={"event": "dicom.send", "outcome": "retry", "in_s": delay},
                )
                self._stop.wait(delay)

    def send_pending(self) -> bool:
        """One round: send every pending file. False when something must be retried."""
        files = self.outbox.pending(self.destination.name)
        if not files:
            return True
        if len(files) > BATCH:
            self._wake.set()  # the next round follows at once
            files = files[:BATCH]
        sent: dict[str, int] = {}

        def on_status(path: Path, status: int | str) -> None:
            if isinstance(status, int) and status in STORED:
                self.outbox.mark_sent(path)
                self._attempts.pop(path, None)
                sent[path.parent.name] = sent.get(path.parent.name, 0) + 1
                return
            error = f"status 0x{status:04X}" if isinstance(status, int) else status
            log.warning(
                "%s refused %s of analysis %s: %s",
                self.destination,
                path.name,
                path.parent.name,
                error,
                extra={
                    "event": "dicom.send",
                    "outcome": "refused",
                    "destination": str(self.destination),
                    "analysis_id": path.parent.name,
                    "file": path.name,
                    "error": error,
                },
            )
            self._count_failure(path, error)

        try:
            send_files(files, self.destination, self.calling_ae, on_status)
        except (SendError, OSError) as exc:
            log.warning(
                "cannot send %d result files to %s: %s",
                len(files),
                self.destination,
                exc,
                extra={
                    "event": "dicom.send",
                    "outcome": "unreachable",
                    "destination": str(self.destination),
                    "pending": len(files),
                    "error": str(exc),
                },
            )
            for path in files:
                self._count_failure(path, str(exc))
            return False
        finally:
            for analysis_id, count in sent.items():
                log.info(
                    "sent %d result files of analysis %s to %s",
                    count,
                    analysis_id,
                    self.destination,
                    extra={
                        "event": "dicom.send",
                        "outcome": "sent",
                        "destination": str(self.destination),
                        "analysis_id": analysis_id,
                        "files": count,
                    },
                )
        return sum(sent.values()) == len(files)

    def _count_failure(self, path: Path, error: str) -> None:
        self._attempts[path] = attempts = self._attempts.get(path, 0) + 1
        if self.retry.gives_up(attempts):
            self.outbox.mark_failed(path, f"gave up after {attempts} attempts: {error}")
            self._attempts.pop(path, None)
            log.error(
                "gave up sending %s of analysis %s to %s after %d attempts: %s",
                path.name,
                path.parent.name,
                self.destination,
                attempts,
                error,
                extra={
                    "event": "dicom.send",
                    "outcome": "gave_up",
                    "destination": str(self.destination),
                    "analysis_id": path.parent.name,
                    "file": path.name,
                    "error": error,
                },
            )
