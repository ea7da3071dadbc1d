"""MLflow tracking: URI resolution, params flattening, tags, a real ``mlflow server``, and
the logged model served by ``mlflow models serve``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from ductai.training.config import load_train_config
from ductai.training.tracking import (
    NullTracker,
    data_fingerprint,
    flatten,
    metric_name,
    resolve_tracking_uri,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs/segmentation/small_cpu.yaml"


def test_uri_from_config_then_env_then_output_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://env:5000"
    assert resolve_tracking_uri("http://cfg:5000", tmp_path) == "http://cfg:5000"


def test_flatten_and_metric_names():
    flat = flatten({"a": {"b": 1, "c": [1, 2], "d": {}}, "e": None, "f": "x"})
    assert flat == {"a.b": "1", "a.c": "[1, 2]", "a.d": "{}", "e": "None", "f": "x"}
    assert metric_name("val/froc_sens@0.125") == "val/froc_sens_at_0.125"
    assert metric_name("val/dice_duct") == "val/dice_duct"


def test_data_fingerprint_follows_what_defines_the_data(tmp_path):
    base = load_train_config(CONFIG)
    other_seed = load_train_config(CONFIG, ["trainer.seed=1"])
    assert data_fingerprint(base.data, 0) == data_fingerprint(base.data, 0)
    assert data_fingerprint(base.data, 0) != data_fingerprint(other_seed.data, 1)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": []}))
    from_file = base.data.model_copy(update={"source": "datalist", "datalist": datalist})
    first = data_fingerprint(from_file, 0)
    datalist.write_text(json.dumps({"training": [], "validation": []}))
    assert data_fingerprint(from_file, 0) != first


def test_null_tracker_is_silent():
    tracker = NullTracker()
    assert tracker.log_metrics({"a": 1.0}, 3) is None
    assert tracker.run_id is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serving(cmd: list[str], health: str, log_path: Path, env: dict[str, str]):
    """Run ``cmd`` in its own process group (its workers outlive the PID) until ``health``
    answers 200; stop the whole group on exit."""
    log = open(log_path, "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(health, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{cmd[2:4]} did not start:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` with its own sqlite store and artifact folder."""
    port = _free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "server-artifacts"),
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    url = f"http://127.0.0.1:{port}"
    with _serving(cmd, f"{url}/health", tmp_path / "server.log", env):
        yield url, tmp_path / "server-artifacts"


@pytest.mark.slow
def test_training_logs_to_a_tracking_server(tmp_path, mlflow_server, tiny):
    from ductai.training.trainer import train

    url, artifacts = mlflow_server
    config = tiny.config(
        tmp_path / "out",
        "data.simulation.val_length=1",
        "trainer.epochs=1",
        "trainer.steps_per_epoch=1",
        "validation.overlay_images=1",
        f"tracking.tracking_uri={url}",
        "tracking.experiment=server-test",
        store=False,  # the run goes to the server: no store in output_dir
    )
    result = train(config)
    assert result.tracking_uri == url
    client = MlflowClient(url)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.name"] == "basic_unet"
    assert client.get_metric_history(result.run_id, "train/loss")
    names = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "checkpoints", "plots"} <= names
    # Artifacts went through the server into its store, not next to the output_dir.
    assert any(p.name == "last.pt" for p in artifacts.rglob("*.pt"))
    assert not (tmp_path / "out" / "mlflow.db").exists()
    (model,) = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert model.source_run_id == result.run_id


@pytest.mark.slow
@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_logged_model_serves_over_http(tmp_path, tiny, task):
    """``mlflow models serve --env-manager local`` serves the logged pyfunc model: one
    canonical image as JSON in, the model's outputs out (about 15 s to start on 2 cores)."""
    from ductai.training.trainer import train

    result = train(
        tiny.config(
            tmp_path / "run",
            "data.simulation.val_length=1",
            "trainer.epochs=1",
            "trainer.steps_per_epoch=1",
            "validation.overlay_images=0",
            task=task,
        )
    )
    client = MlflowClient(result.tracking_uri)
    experiment = client.get_run(result.run_id).info.experiment_id
    (logged,) = client.search_logged_models(experiment_ids=[experiment])
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)  # mlflow runs `uvicorn` from the PATH
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    cmd = [
        sys.executable, "-m", "mlflow", "models", "serve",
        "-m", logged.artifact_location, "--env-manager", "local",
        "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    image = np.random.default_rng(0).random((70, 90), dtype=np.float32)
    body = {"inputs": image.tolist()}
    if task == "detection":
        body["params"] = {"include_mimics": True}
    with _serving(cmd, f"{url}/ping", tmp_path / "serve.log", env):
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            predictions = json.loads(r.read())["predictions"]
    if task == "segmentation":
        assert np.asarray(predictions["probabilities"]).shape == (2, 70, 90)
    else:
        assert set(predictions) == {"boxes", "scores", "labels"}
        assert len(predictions["boxes"]) == len(predictions["scores"])
