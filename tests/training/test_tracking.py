"""MLflow tracking: URI resolution, params flattening, tags, and a real ``mlflow server``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` in its own process group (its workers outlive the PID)."""
    port = _free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "server-artifacts"),
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()}"
                )
            time.sleep(0.5)
        yield url, tmp_path / "server-artifacts"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.slow
def test_training_logs_to_a_tracking_server(tmp_path, mlflow_server):
    from ductai.training.trainer import train

    url, artifacts = mlflow_server
    config = load_train_config(
        CONFIG,
        [
            "data.spacing_mm=2.0",
            "augment.patch_size=64",
            "validation.roi_size=[64,64]",
            "model.kwargs.features=[4,4,8,8,16,4]",
            "data.num_workers=0",
            "data.batch_size=2",
            "data.simulation.val_length=1",
            "trainer.epochs=1",
            "trainer.steps_per_epoch=1",
            "trainer.progress=false",
            "validation.overlay_images=1",
            f"tracking.tracking_uri={url}",
            "tracking.experiment=server-test",
            f"output_dir={tmp_path / 'out'}",
        ],
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
