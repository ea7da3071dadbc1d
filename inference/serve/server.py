"""`run_server(config)`: the service, its HTTP API and its DICOM node in one process.

Order: lock the data folder (one server per folder), serve HTTP and, beside it, load the
model, recover unfinished work and start the DICOM node; serve until SIGTERM/SIGINT
(uvicorn's handlers); then stop in reverse: HTTP, DICOM node, workers. A worker still busy at the end leaves its
analysis ``running`` on disk, and the next start redoes it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ductai.config import ConfigError
from ductai.inference.serve.config import ServeConfig
from ductai.inference.serve.service import AnalysisService

__all__ = ["DataDirLocked", "check_exposure", "run_server"]

log = logging.getLogger(__name__)


class DataDirLocked(RuntimeError):
    """Another server uses this data folder."""


def check_exposure(config: ServeConfig) -> None:
    """No tokens is only acceptable on a loopback address (one machine, one user)."""
    if not config.tokens and not config.is_loopback:
        raise ConfigError(
            f"host={config.host} is reachable from other machines, and no tokens are set: "
            "refusing to serve patient images without authentication. Set tokens (config "
            "'tokens: [...]' or DUCTAI_SERVE_TOKENS=a,b), or use host=127.0.0.1."
        )


@contextmanager
def data_dir_lock(data_dir: Path):
    """An exclusive lock on DATA_DIR/.lock for the process' life (released by the kernel
    when the process dies, so a SIGKILL leaves no stale lock)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / ".lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise DataDirLocked(
                f"{data_dir} is used by another ductai serve (pid {f.read().strip() or '?'}); "
                "give each server its own data_dir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def _quiet_signals():
    """uvicorn handles SIGTERM/SIGINT while it runs and re-raises them once it stopped; with
    no-op handlers underneath, that re-raise lets the shutdown below finish (exit status 0)
    instead of killing the process (SIGTERM's default) before the workers are stopped."""
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _dicom_node(config: ServeConfig, service: AnalysisService) -> Any | None:
    if not config.dicom.enabled:
        return None
    from ductai.inference.serve.dicom_node import DicomNode

    return DicomNode(config, service)


def run_server(config: ServeConfig, predictor: Any | None = None) -> None:
    """Serve until SIGTERM/SIGINT. Raises ConfigError/DataDirLocked before serving, and the
    model's load error (after HTTP stopped) when the model cannot be loaded.

    HTTP listens first and the model loads beside it: /healthz answers at once, /readyz says
    503 until the model is loaded, recovered work is queued and the DICOM node listens.
    """
    import uvicorn

    from ductai.inference.serve.http_api import create_app

    check_exposure(config)
    data_dir = Path(config.data_dir).resolve()
    with data_dir_lock(data_dir):
        service = AnalysisService(config, predictor=predictor)
        app = create_app(service, config)  # before start(): its metrics hear every analysis
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=config.host,
                port=config.port,
                log_config=None,  # logs.setup_json_logging configured everything
                access_log=False,
                timeout_graceful_shutdown=10,
                server_header=False,
            )
        )
        nodes: list[Any] = []
        failure: list[BaseException] = []
        app.state.booted = False  # /readyz waits for the DICOM node too, not only the model

        def boot() -> None:
            try:
                service.start()
                node = _dicom_node(config, service)
                if node is not None:
                    node.start()
                    nodes.append(node)
                app.state.booted = True
                log.info("ready", extra={"event": "ready"})
            except BaseException as exc:  # reported after HTTP stopped, by the caller
                log.error("cannot start the service: %s", exc)
                failure.append(exc)
                server.should_exit = True

        log.info(
            "serving on http://%s:%d (viewer: /viewer/, API docs: /docs), data in %s",
            config.host,
            config.port,
            data_dir,
            extra={"event": "started", "pid": os.getpid()},
        )
        booting = threading.Thread(target=boot, name="ductai-boot", daemon=True)
        booting.start()
        try:
            with _quiet_signals():
                server.run()
        finally:
            booting.join()  # a stop during the model load waits for it, then stops cleanly
            for node in nodes:
                node.stop()
            service.stop()
            log.info("stopped", extra={"event": "stopped"})
        if failure:
            raise failure[0]
