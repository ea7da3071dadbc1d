"""The DICOM node's spool: every received instance on disk, per study, and each study's state.

```
spool/<StudyInstanceUID>/<SOPInstanceUID>.dcm   one DICOM Part 10 file per received instance
spool/<StudyInstanceUID>/state.json             when the last instance came, which analyses ran
```
Folder and file names go through `safe_uid`: a well-formed UID names itself, anything else
(``../../etc``, a 10 kB string) becomes a stable hash, so no received value becomes a path.

A study is *settled* once no instance arrived for `settle_seconds`. Its analysis id is a hash
of the StudyInstanceUID and the sorted SOPInstanceUIDs, so a restart that finds the same files
submits the same id (the service treats it as the existing analysis), and a study that gets
more instances after it was analysed gets a new id for the larger set.

`state.json`: ``{"study_instance_uid", "last_received", "analysis_id", "outboxed",
"analyses": [{"id", "sop_uids", "state", "outboxed", "error"}, ...]}``; `analysis_id` and
`outboxed` mirror the newest entry of `analyses`. An entry's `state` is ``submitted``,
``done``, ``failed`` or ``superseded`` (a newer analysis of the study replaced it before
it was sent).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ductai.data.atomic import atomic_write_bytes, atomic_write_text
from ductai.inference.writers.atomic import safe_uid

__all__ = ["STATE_FILE", "Spool", "StudySnapshot", "analysis_id_for"]

STATE_FILE = "state.json"


def analysis_id_for(study_uid: str, sop_uids: Iterable[str]) -> str:
    """``dicom-`` + 16 hex digits of sha1(study UID and the sorted instance UIDs)."""
    text = "\n".join([study_uid, *sorted(sop_uids)])
    return "dicom-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class StudySnapshot:
    """One consistent look at a spooled study (taken under the spool's lock)."""

    study_uid: str  # the folder name (the UID itself, or its hash when the UID was unsafe)
    files: list[Path]
    last_received: float  # seconds since the epoch
    state: dict[str, Any]

    @property
    def sop_uids(self) -> list[str]:
        return [p.stem for p in self.files]

    @property
    def analysis_id(self) -> str:
        return analysis_id_for(self.study_uid, self.sop_uids)

    @property
    def current(self) -> dict[str, Any] | None:
        """The newest analysis entry, or None before the first submission."""
        analyses = self.state.get("analyses") or []
        return analyses[-1] if analyses else None

    def settled(self, settle_seconds: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return bool(self.files) and now - self.last_received >= settle_seconds


class Spool:
    """Received instances under `root`, one folder per study; thread-safe."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def study_dir(self, study_uid: str) -> Path:
        folder = self.root / safe_uid(study_uid)
        # safe_uid already forbids separators; this guards against a future change of it.
        if folder.resolve().parent != self.root.resolve():
            raise ValueError(f"study folder {folder} would lie outside the spool {self.root}")
        return folder

    def store(self, study_uid: str, sop_uid: str, data: bytes, now: float | None = None) -> Path:
        """Write one received instance (Part 10 bytes) durably; returns its path.

        Raises OSError when the disk refuses (the SCP then answers 'out of resources').
        """
        folder = self.study_dir(study_uid)
        path = folder / f"{safe_uid(sop_uid)}.dcm"
        atomic_write_bytes(path, data)
        received = time.time() if now is None else now
        with self._lock:
            state = self._read_state(folder)
            state.setdefault("study_instance_uid", folder.name)
            state["last_received"] = max(float(state.get("last_received") or 0), received)
            self._write_state(folder, state)
        return path

    def studies(self) -> list[str]:
        """Folder names of the spooled studies, oldest activity first."""
        folders = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return [p.name for p in sorted(folders, key=lambda p: (p.stat().st_mtime, p.name))]

    def snapshot(self, study_uid: str) -> StudySnapshot:
        folder = self.study_dir(study_uid)
        with self._lock:
            files = sorted(p for p in folder.glob("*.dcm") if not p.name.startswith("."))
            state = self._read_state(folder)
        last = state.get("last_received")
        if last is None:
            # state.json lost (e.g. a crash before its first write): the files' times serve.
            last = max((p.stat().st_mtime for p in files), default=0.0)
        return StudySnapshot(folder.name, files, float(last), state)

    def update_state(
        self, study_uid: str, change: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Read-modify-write `state.json` under the lock; returns the new state."""
        folder = self.study_dir(study_uid)
        with self._lock:
            state = self._read_state(folder)
            state.setdefault("study_instance_uid", folder.name)
            change(state)
            current = (state.get("analyses") or [None])[-1]
            state["analysis_id"] = current["id"] if current else None
            state["outboxed"] = bool(current and current.get("outboxed"))
            self._write_state(folder, state)
            return state

    @staticmethod
    def _read_state(folder: Path) -> dict[str, Any]:
        path = folder / STATE_FILE
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"unreadable spool state {path}: {exc}") from exc

    @staticmethod
    def _write_state(folder: Path, state: dict[str, Any]) -> None:
        atomic_write_text(folder / STATE_FILE, json.dumps(state, indent=1, sort_keys=True))
