"""Kill-and-resume: a training SIGKILLed after a checkpoint continues the same MLflow run at
the same step, with no duplicated or missing metric steps, and can be extended."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ductai.models.checkpoint import CheckpointError, load_checkpoint
from ductai.training.config import load_train_config
from ductai.training.trainer import train

CONFIG = Path(__file__).resolve().parents[2] / "configs/segmentation/small_cpu.yaml"
STEPS = 8


@pytest.fixture
def overrides(tiny):
    def make(out: Path, epochs: int) -> list[str]:
        return tiny.overrides(
            out,
            "trainer.val_every=1",
            f"trainer.steps_per_epoch={STEPS}",
            "trainer.checkpoint_every=2",
            f"trainer.epochs={epochs}",
            "validation.overlay_images=0",
            "tracking.log_model=false",
        )

    return make


def _wait_for_checkpoint(path: Path, proc: subprocess.Popen, timeout: float = 240) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be killed (rc {proc.returncode})")
        if path.exists():
            try:
                return int(load_checkpoint(path)["global_step"])
            except (CheckpointError, FileNotFoundError):
                pass  # replaced while being read: try again
        time.sleep(0.05)
    pytest.fail("no checkpoint appeared")


@pytest.mark.slow
def test_kill_and_resume_continues_the_run(tmp_path, overrides):
    out = tmp_path / "run"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ductai.cli", "train", str(CONFIG), *overrides(out, 2)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        step_at_kill = _wait_for_checkpoint(out / "last.pt", proc)
    finally:
        proc.kill()  # SIGKILL: no clean-up code runs
        proc.wait()
    assert 2 <= step_at_kill < 2 * STEPS
    killed = load_checkpoint(out / "last.pt")
    run_id = killed["run_id"]
    assert run_id

    result = train(load_train_config(CONFIG, overrides(out, 2)), resume="auto")
    assert result.run_id == run_id
    assert result.global_step == 2 * STEPS
    client = MlflowClient(result.tracking_uri)
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert steps == list(range(1, 2 * STEPS + 1)), steps  # each step exactly once
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert int(run.data.tags["resumed_at_step"]) >= step_at_kill
    assert len(client.search_runs([run.info.experiment_id])) == 1

    # Extending past the original epochs continues the same run.
    longer = train(load_train_config(CONFIG, overrides(out, 3)), resume="auto")
    assert longer.run_id == run_id and longer.global_step == 3 * STEPS
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert steps == list(range(1, 3 * STEPS + 1))
    epochs = [m.value for m in client.get_metric_history(run_id, "epoch")]
    assert epochs == [1, 2, 3]
    payload = load_checkpoint(longer.last_checkpoint)
    assert payload["epoch"] == 3 and payload["step_in_epoch"] == 0
    assert payload["config"]["trainer"]["epochs"] == 3


def test_resume_from_a_missing_checkpoint_is_clear(tmp_path, overrides):
    config = load_train_config(CONFIG, overrides(tmp_path / "run", 1))
    with pytest.raises(FileNotFoundError, match="checkpoint to resume not found"):
        train(config, resume=tmp_path / "nope.pt")


def test_default_store_stays_in_output_dir(tmp_path, monkeypatch, overrides):
    """A run with the default store writes only under output_dir (no ./mlruns, ./mlflow.db)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    train(load_train_config(CONFIG, [*overrides(out, 1), "trainer.steps_per_epoch=1"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    shutil.rmtree(out)
