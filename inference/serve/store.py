"""Analyses on disk: one folder per analysis with its ``status.json`` (docs/serve-design.md).

``analyses/<id>/`` appears only whole: inputs and the first status are assembled in a hidden
sibling and renamed into place, so a crash during a submission leaves nothing half-made
(hidden leftovers are removed at start). Results go to ``results.tmp/`` and are renamed to
``results/`` when complete. Every JSON file is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from ductai.data.atomic import atomic_write_text
from ductai.inference.serve.security import safe_id

__all__ = ["STATES", "Analysis", "AnalysisStore", "new_analysis_id", "utc_now"]

log = logging.getLogger(__name__)

State = Literal["queued", "running", "done", "failed"]
STATES = ("queued", "running", "done", "failed")
STATUS_FILE = "status.json"
INPUT_DIR = "input"
RESULTS_DIR = "results"
RESULTS_TMP = "results.tmp"
RUN_FILE = "run.json"  # run_inference's index, written last
NAMES_FILE = "names.json"  # input file name -> the client's name for it


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_analysis_id() -> str:
    """Sortable by creation time, unique, and a safe path component."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Analysis:
    """One analysis as ``status.json`` says, plus ``results`` (run.json) once done."""

    id: str
    state: State
    source: str  # http, http-sync, dicom:<calling AE>, ...
    created: str
    started: str | None = None
    finished: str | None = None
    error: str | None = None
    files: int = 0
    study_uids: list[str] = field(default_factory=list)
    attempts: int = 0  # times a worker started it (a crash mid-run leaves it running)
    results: dict[str, Any] | None = None

    def status(self) -> dict[str, Any]:
        """The ``status.json`` document (without results)."""
        document = asdict(self)
        document.pop("results")
        return document

    def evolve(self, **changes: Any) -> Analysis:
        return replace(self, **changes)


class AnalysisStore:
    """``DATA_DIR/analyses/<id>/{status.json, input/, results/}``."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.root = self.data_dir / "analyses"
        self.root.mkdir(parents=True, exist_ok=True)

    # ---- paths ----------------------------------------------------------------------------
    def folder(self, analysis_id: str) -> Path:
        """The analysis folder; raises ValueError for an id that is not a safe name."""
        path = self.root / safe_id(analysis_id)
        # safe_id already forbids separators and "..": this guards against a future change.
        if path.resolve().parent != self.root:
            raise ValueError(f"analysis id {analysis_id!r} resolves outside {self.root}")
        return path

    def input_dir(self, analysis_id: str) -> Path:
        return self.folder(analysis_id) / INPUT_DIR

    def results_dir(self, analysis_id: str) -> Path:
        return self.folder(analysis_id) / RESULTS_DIR

    def results_tmp_dir(self, analysis_id: str) -> Path:
        return self.folder(analysis_id) / RESULTS_TMP

    def exists(self, analysis_id: str) -> bool:
        return (self.folder(analysis_id) / STATUS_FILE).is_file()

    # ---- create, read, write --------------------------------------------------------------
    def create(
        self,
        analysis_id: str,
        files: list[Path],
        *,
        source: str,
        study_uids: list[str],
        move: bool = False,
        names: list[str] | None = None,
    ) -> Analysis:
        """A new ``queued`` analysis holding ``files`` (copied, or moved with ``move``) as
        ``input/<sha1 of bytes>.dcm``; the same bytes twice are kept once. ``names``: what
        the client called each file, kept in ``names.json`` for messages."""
        final = self.folder(analysis_id)
        if final.exists():
            raise FileExistsError(f"analysis {analysis_id} exists already at {final}")
        staging = self.root / f".{analysis_id}.incoming"
        shutil.rmtree(staging, ignore_errors=True)
        inputs = staging / INPUT_DIR
        inputs.mkdir(parents=True)
        try:
            stored: dict[str, str] = {}
            for i, src in enumerate(files):
                name = f"{_sha1(src)}.dcm"
                if name in stored:
                    continue
                stored[name] = names[i] if names and i < len(names) else name
                if move:
                    shutil.move(str(src), inputs / name)
                else:
                    shutil.copyfile(src, inputs / name)
            analysis = Analysis(
                id=analysis_id,
                state="queued",
                source=source,
                created=utc_now(),
                files=len(stored),
                study_uids=sorted(set(study_uids)),
            )
            atomic_write_text(staging / NAMES_FILE, json.dumps(stored, indent=1))
            self._write_status(staging, analysis)
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return analysis

    def read(self, analysis_id: str, results: bool = True) -> Analysis | None:
        """The analysis, or None for an unknown (or unsafe) id; ``results=False`` skips
        parsing run.json (listings)."""
        try:
            folder = self.folder(analysis_id)
        except ValueError:
            return None
        try:
            document = json.loads((folder / STATUS_FILE).read_text())
        except FileNotFoundError:
            return None
        index = None
        if results and document.get("state") == "done":
            run = folder / RESULTS_DIR / RUN_FILE
            if run.is_file():
                index = json.loads(run.read_text())
        known = {k: v for k, v in document.items() if k in Analysis.__dataclass_fields__}
        return Analysis(**known, results=index)

    def write(self, analysis: Analysis) -> None:
        self._write_status(self.folder(analysis.id), analysis)

    def readable(self, analysis_id: str, text: str) -> str:
        """``text`` with this analysis' input paths replaced by the clients' file names
        (messages name what the client sent, never the server's folders)."""
        folder = self.folder(analysis_id)
        try:
            names = json.loads((folder / NAMES_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            names = {}
        for stored, name in names.items():
            text = text.replace(str(folder / INPUT_DIR / stored), name)
        return text.replace(str(folder) + "/", "")

    def ids(self) -> list[str]:
        """Every analysis id, oldest first (ids sort by creation time)."""
        return sorted(
            p.name
            for p in self.root.iterdir()
            if not p.name.startswith(".") and (p / STATUS_FILE).is_file()
        )

    def clean_staging(self) -> None:
        """Remove submissions that a crash interrupted before they were complete."""
        for path in self.root.glob(".*.incoming"):
            log.warning("removing an incomplete submission left by a crash: %s", path)
            shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def _write_status(folder: Path, analysis: Analysis) -> None:
        atomic_write_text(folder / STATUS_FILE, json.dumps(analysis.status(), indent=1))


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
