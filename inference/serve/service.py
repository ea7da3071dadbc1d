"""`AnalysisService`: one model, one bounded queue, N worker threads, state on disk first.

Every client (HTTP, DICOM node) submits through here. A submission is a folder on disk
before it is queued; a worker marks it ``running`` (``attempts`` + 1) before it starts,
writes results to ``results.tmp/`` and renames them to ``results/`` before it says ``done``.
So after a crash, ``start()`` finds every unfinished analysis on disk and queues it again,
and gives up (``failed``) on one that has already been started ``max_attempts`` times: a
file that kills the process cannot crash-loop the server.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ductai.inference.serve.config import ServeConfig
from ductai.inference.serve.store import Analysis, AnalysisStore, new_analysis_id, utc_now

__all__ = ["AnalysisService", "NotReadyError", "QueueFull"]

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The queue holds ``queue_size`` analyses already; HTTP answers 503 + Retry-After."""

    def __init__(self, size: int, retry_after: int) -> None:
        super().__init__(f"the analysis queue is full ({size} waiting); retry later")
        self.retry_after = retry_after


class NotReadyError(RuntimeError):
    """Submitted before ``start()`` finished (model not loaded) or after ``stop()``."""


def load_predictor(config: ServeConfig) -> Any:
    """The Predictor for ``config.model`` (default bundle when None), loaded once."""
    from ductai.inference import stages
    from ductai.inference.run import resolve_model

    return stages.load_predictor(
        resolve_model(config.model),
        device=config.device,
        num_threads=config.threads,
        backend=config.backend,
    )


class AnalysisService:
    def __init__(self, config: ServeConfig, predictor: Any | None = None) -> None:
        self.config = config
        self.store = AnalysisStore(config.data_dir)
        self._predictor = predictor
        self._pending: deque[str] = deque()
        self._queued: set[str] = set()  # ids in _pending, for idempotent submissions
        self._cond = threading.Condition()
        self._listeners: list[Callable[[Analysis], None]] = []
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._reserved = 0  # queue slots held by submissions being stored
        self._finishing: set[str] = set()  # ended on disk, listeners not yet called
        self._ready = False
        self._stopping = False
        self._seconds: deque[float] = deque(maxlen=20)  # recent run times, for Retry-After

    # ---- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Load the model (unless injected), recover unfinished work, start the workers."""
        if self._predictor is None:
            started = time.perf_counter()
            self._predictor = load_predictor(self.config)
            log.info("model loaded in %.1f s", time.perf_counter() - started)
        self.store.clean_staging()
        self._recover()
        self._stopping = False
        for i in range(self.config.workers):
            thread = threading.Thread(target=self._work, name=f"ductai-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._ready = True

    def stop(self, timeout: float = 30) -> None:
        """Stop taking work and wait up to ``timeout`` s for running analyses. One still
        running stays ``running`` on disk and is redone at the next start."""
        with self._cond:
            self._ready = False
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads:
            log.warning("%d analyses still running at stop; redone at next start", self._busy)

    @property
    def ready(self) -> bool:
        return self._ready and any(t.is_alive() for t in self._threads)

    @property
    def predictor(self) -> Any:
        return self._predictor

    @property
    def queue_length(self) -> int:
        return len(self._pending)

    @property
    def workers_busy(self) -> int:
        return self._busy

    def add_listener(self, fn: Callable[[Analysis], None]) -> None:
        """``fn(analysis)`` after an analysis becomes done or failed (from a worker thread)."""
        self._listeners.append(fn)

    # ---- submitting -----------------------------------------------------------------------
    def submit(
        self,
        files: list[Path],
        *,
        source: str,
        analysis_id: str | None = None,
        move: bool = False,
        study_uids: list[str] | None = None,
        names: list[str] | None = None,
    ) -> Analysis:
        """Store ``files`` as a new analysis and queue it; QueueFull when the queue is full.

        With an ``analysis_id`` that exists already, nothing is stored again: the existing
        analysis is returned (a DICOM study re-submitted after a crash is analysed once).
        ``study_uids`` (else read from the files) and ``names`` (the client's file names, for
        messages) are optional.
        """
        if not files:
            raise ValueError("no files to analyse")
        with self._cond:
            if self._stopping or not self._ready:
                raise NotReadyError("the service is not ready (model loading) or stopping")
            if analysis_id is not None:
                existing = self.store.read(analysis_id)
                if existing is not None:
                    return existing
            if len(self._pending) + self._reserved >= self.config.queue_size:
                raise QueueFull(len(self._pending), self.retry_after())
            self._reserved += 1  # the slot is held while the files are copied, unlocked
        try:
            analysis_id = analysis_id or new_analysis_id()
            if study_uids is None:
                study_uids = [uid for f in files if (uid := _study_uid(f))]
            analysis = self.store.create(
                analysis_id, files, source=source, study_uids=study_uids, move=move, names=names
            )
        except FileExistsError:  # the same id submitted twice at once: one analysis
            existing = self.store.read(analysis_id)
            if existing is None:
                raise
            return existing
        finally:
            with self._cond:
                self._reserved -= 1
        with self._cond:
            self._enqueue(analysis.id)
        log.info("analysis %s queued (%d files, from %s)", analysis.id, analysis.files, source)
        return analysis

    def run_sync(self, files: list[Path], timeout: float, *, source: str = "sync") -> Analysis:
        """Submit through the same queue and wait up to ``timeout`` s; the analysis as it is
        then (still queued/running when the time ran out)."""
        analysis = self.submit(files, source=source)
        return self.wait(analysis.id, timeout)

    def retry_after(self) -> int:
        """Seconds a client should wait before retrying a full queue (recent run times)."""
        per = sum(self._seconds) / len(self._seconds) if self._seconds else 10.0
        return max(1, round(per))

    # ---- reading --------------------------------------------------------------------------
    def get(self, analysis_id: str) -> Analysis | None:
        return self.store.read(analysis_id)

    def list(self, limit: int = 100) -> list[Analysis]:
        """The newest ``limit`` analyses, newest first."""
        ids = self.store.ids()[::-1][: max(0, limit)]
        return [a for i in ids if (a := self.store.read(i, results=False)) is not None]

    def wait(self, analysis_id: str, timeout: float) -> Analysis:
        """The analysis once done/failed, or as it is when ``timeout`` s have passed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                analysis = self.store.read(analysis_id)
                if analysis is None:
                    raise KeyError(f"no analysis {analysis_id!r}")
                left = deadline - time.monotonic()
                ended = analysis.state in ("done", "failed") and analysis_id not in self._finishing
                if ended or left <= 0:
                    return analysis
                # Woken on every state change; the timeout also covers another process.
                self._cond.wait(min(left, 1.0))

    def results_dir(self, analysis_id: str) -> Path:
        return self.store.results_dir(analysis_id)

    # ---- internals ------------------------------------------------------------------------
    def _enqueue(self, analysis_id: str) -> None:
        self._pending.append(analysis_id)
        self._queued.add(analysis_id)
        self._cond.notify_all()

    def _recover(self) -> None:
        """Queue again what a previous process left queued or running (oldest first)."""
        for analysis_id in self.store.ids():
            analysis = self.store.read(analysis_id)
            if analysis is None or analysis.state in ("done", "failed"):
                continue
            if analysis_id in self._queued:
                continue
            if analysis.state == "running" and analysis.attempts >= self.config.max_attempts:
                failed = analysis.evolve(
                    state="failed",
                    finished=utc_now(),
                    error=f"the service stopped during this analysis {analysis.attempts} times "
                    f"(max_attempts={self.config.max_attempts}); last error: "
                    f"{analysis.error or 'the process was killed while it ran'}",
                )
                self.store.write(failed)
                log.error("analysis %s: %s", analysis_id, failed.error)
                self._notify(failed)
                continue
            if analysis.state == "running":
                analysis = analysis.evolve(
                    state="queued",
                    error=f"interrupted during attempt {analysis.attempts}; queued again",
                )
                self.store.write(analysis)
            log.info("recovered analysis %s (attempts so far: %d)", analysis_id, analysis.attempts)
            with self._cond:
                self._enqueue(analysis_id)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                analysis_id = self._pending.popleft()
                self._queued.discard(analysis_id)
                self._busy += 1
            try:
                self._run(analysis_id)
            except Exception:  # a bug here must not kill the worker; the state says failed
                log.exception("analysis %s: unexpected error in the worker", analysis_id)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _run(self, analysis_id: str) -> None:
        from ductai.inference.run import run_inference

        analysis = self.store.read(analysis_id)
        if analysis is None or analysis.state in ("done", "failed"):
            return
        running = analysis.evolve(
            state="running", started=utc_now(), attempts=analysis.attempts + 1
        )
        self._set(running)
        tmp = self.store.results_tmp_dir(analysis_id)
        final = self.store.results_dir(analysis_id)
        shutil.rmtree(tmp, ignore_errors=True)  # what an interrupted attempt left
        started = time.perf_counter()
        try:
            run = run_inference([self.store.input_dir(analysis_id)], tmp, predictor=self._predictor)
        except Exception as exc:
            log.debug("analysis %s traceback", analysis_id, exc_info=exc)
            error = self.store.readable(analysis_id, f"{type(exc).__name__}: {exc}")
            self._finish(running, "failed", error, None)
            return
        finally:
            self._seconds.append(time.perf_counter() - started)
        if final.exists():  # a previous attempt renamed but crashed before saying done
            shutil.rmtree(final)
        os.replace(tmp, final)
        error = None
        if run.errors:
            error = "; ".join(e.error for e in run.errors[:5])
            error = self.store.readable(analysis_id, error.replace(str(tmp), str(final)))
        state = "done" if run.views else "failed"
        if state == "failed" and error is None:
            error = "no view could be analysed"
        self._finish(running, state, error, run)

    def _finish(self, running: Analysis, state: str, error: str | None, run: Any) -> None:
        finished = running.evolve(state=state, finished=utc_now(), error=error)
        with self._cond:
            self._finishing.add(finished.id)  # wait() returns after the listeners ran
        try:
            self._set(finished)
            self._announce(finished, state, run)
        finally:
            with self._cond:
                self._finishing.discard(finished.id)
                self._cond.notify_all()

    def _announce(self, finished: Analysis, state: str, run: Any) -> None:
        finished = self.store.read(finished.id) or finished  # with results (run.json)
        log.info(
            "analysis %s %s",
            finished.id,
            state,
            extra={
                "event": "analysis_finished",
                "analysis_id": finished.id,
                "state": state,
                "source": finished.source,
                "files": finished.files,
                "views": len(run.views) if run is not None else 0,
                "file_errors": len(run.errors) if run is not None else 0,
                "attempts": finished.attempts,
                "seconds": round(run.seconds, 3) if run is not None else None,
            },
        )
        self._notify(finished)

    def _set(self, analysis: Analysis) -> None:
        with self._cond:
            self.store.write(analysis)
            self._cond.notify_all()

    def _notify(self, analysis: Analysis) -> None:
        for fn in list(self._listeners):
            try:
                fn(analysis)
            except Exception:  # a listener's bug is logged, never the worker's end
                log.exception("listener %r failed on analysis %s", fn, analysis.id)


def _study_uid(path: Path) -> str | None:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        return str(ds.get("StudyInstanceUID", "") or "") or None
    except Exception:  # unreadable files are reported by the analysis itself
        return None
