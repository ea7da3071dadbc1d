"""Service fixtures: real `ductai serve` processes on loopback, on the tiny bundle.

* ``serve_process(**config)``: a factory (function scope) that writes a serve YAML (the
  test defaults below, updated by ``config``; nested sections merge), starts
  ``python -m ductai.cli serve --config FILE`` in its own process group, waits for
  ``/readyz`` and returns a :class:`ServerProcess` (``base_url``, ``token``, ``data_dir``,
  ``dicom_port``, ``client()``, ``restart()``, ``kill()``, ``log_records()``). Every process
  group it started is killed at teardown.
* ``http_server``: one such server shared by a test module (module scope).
* ``TOKEN``: the bearer token every test server accepts.

Test defaults: the tiny bundle, CPU, 1 thread, eager backend, free ports, the DICOM node off
(``dicom={"enabled": True}`` turns it on, on a free port, settling after 1 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

TOKEN = "test-token-3f9c"
READY_TIMEOUT_S = 180.0  # a cold start imports torch; the machine may be busy


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class ServerProcess:
    """One `ductai serve` subprocess (own process group), restartable on the same data."""

    def __init__(self, config: dict[str, Any], folder: Path) -> None:
        self.config = config
        self.folder = folder
        self.config_path = folder / "serve.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen | None = None
        self.runs = 0  # how many times started; each run logs to its own file

    # ---- what tests use -------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.config['port']}"

    @property
    def token(self) -> str:
        return self.config["tokens"][0] if self.config.get("tokens") else ""

    @property
    def data_dir(self) -> Path:
        return Path(self.config["data_dir"])

    @property
    def dicom_port(self) -> int:
        return int(self.config["dicom"]["port"])

    @property
    def ae_title(self) -> str:
        return str(self.config["dicom"].get("ae_title", "DUCTAI"))

    @property
    def log_path(self) -> Path:
        return self.folder / f"server-{self.runs}.log"

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client on base_url sending the token (``token=""`` sends none)."""
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.base_url, headers=headers, timeout=kwargs.pop("timeout", 120), **kwargs
        )

    def log_records(self, run: int | None = None) -> list[dict[str, Any]]:
        """The JSON log lines of every run (or of one run, counted from 1)."""
        runs = [run] if run is not None else range(1, self.runs + 1)
        records = []
        for r in runs:
            path = self.folder / f"server-{r}.log"
            if path.is_file():
                for line in path.read_text().splitlines():
                    # A line cut by SIGKILL is not JSON: skipped.
                    if line.startswith("{"):
                        with contextlib.suppress(json.JSONDecodeError):
                            records.append(json.loads(line))
        return records

    def log_text(self) -> str:
        return "\n".join(
            (self.folder / f"server-{r}.log").read_text()
            for r in range(1, self.runs + 1)
            if (self.folder / f"server-{r}.log").is_file()
        )

    # ---- life cycle -----------------------------------------------------------------------
    def start(self, timeout: float = READY_TIMEOUT_S) -> ServerProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        env = dict(os.environ)
        env.update(
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            MLFLOW_DISABLE_TELEMETRY="true",
            NO_ALBUMENTATIONS_UPDATE="1",
            DUCTAI_CACHE=str(self.folder / "cache"),
            PYTHONUNBUFFERED="1",
        )
        env.pop("DUCTAI_SERVE_TOKENS", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ductai.cli", "serve", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as a whole
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"ductai serve exited with {self.proc.returncode}:\n"
                    + self.log_path.read_text()[-4000:]
                )
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.kill()
        raise TimeoutError(
            f"ductai serve not ready after {timeout:.0f} s:\n" + self.log_path.read_text()[-4000:]
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process group and wait for the process to end."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> int | None:
        """Graceful stop (SIGTERM); the exit status."""
        self.kill(signal.SIGTERM)
        return self.proc.returncode if self.proc is not None else None

    def restart(self, timeout: float = READY_TIMEOUT_S) -> ServerProcess:
        """Start again on the same config, ports and data folder (after kill/stop)."""
        self.kill()
        return self.start(timeout)


def _test_config(folder: Path, bundle: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    base = {
        "host": "127.0.0.1",
        "port": free_port(),
        "model": str(bundle),
        "device": "cpu",
        "threads": 1,
        "backend": "eager",
        "data_dir": str(folder / "data"),
        "workers": 1,
        "queue_size": 8,
        "max_request_mb": 64,
        "sync_timeout_s": 120,
        "max_attempts": 3,
        "tokens": [TOKEN],
        "metrics_auth": False,
        "dicom": {
            "enabled": False,
            "ae_title": "DUCTAI",
            "port": free_port(),
            "allowed_calling_aes": [],
            "settle_seconds": 1,
            "destination": None,
        },
    }
    return _merge(base, overrides)


class _Factory:
    def __init__(self, make_folder: Callable[[], Path], bundle: Path) -> None:
        self.make_folder = make_folder
        self.bundle = bundle
        self.started: list[ServerProcess] = []

    def __call__(self, start: bool = True, **overrides: Any) -> ServerProcess:
        folder = self.make_folder()
        server = ServerProcess(_test_config(folder, self.bundle, overrides), folder)
        self.started.append(server)
        return server.start() if start else server

    def close(self) -> None:
        for server in self.started:
            server.kill()


@pytest.fixture
def serve_process(tiny_bundle, tmp_path_factory) -> Iterator[_Factory]:
    factory = _Factory(lambda: tmp_path_factory.mktemp("serve"), tiny_bundle)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def http_server(tiny_bundle, tmp_path_factory) -> Iterator[ServerProcess]:
    factory = _Factory(lambda: tmp_path_factory.mktemp("serve"), tiny_bundle)
    yield factory(max_request_mb=40)
    factory.close()


def wait_state(
    client: httpx.Client, analysis_id: str, states=("done", "failed"), timeout: float = 180
) -> dict[str, Any]:
    """Poll GET /v1/analyses/{id} until its state is in ``states``."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/analyses/{analysis_id}")
        response.raise_for_status()
        document = response.json()
        if document["state"] in states:
            return document
        if time.monotonic() > deadline:
            raise TimeoutError(f"analysis {analysis_id} still {document['state']}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def wait_analysis() -> Callable[..., dict[str, Any]]:
    """``wait_analysis(client, id, states=("done", "failed"), timeout=180)``."""
    return wait_state
