"""The trainer under ``torchrun --nproc_per_node 2`` on CPU (gloo): one run, rank 0 writes,
validation metrics merged over both ranks' images."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ductai.models.checkpoint import load_checkpoint


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path, tiny):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        torchrun = shutil.which("torchrun")
    out = tmp_path / "ddp"
    cmd = [
        str(torchrun), "--standalone", "--nproc_per_node", "2",
        "-m", "ductai.cli", "train", str(tiny.path()),
        *tiny.overrides(
            out,
            "data.simulation.val_length=3",  # 2 images on rank 0, 1 on rank 1
            "trainer.epochs=1",
            "trainer.steps_per_epoch=2",
            "validation.overlay_images=0",
            "tracking.log_model=false",
        ),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    payload = load_checkpoint(out / "last.pt")
    assert payload["global_step"] == 2
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1  # only rank 0 logs
    run = runs[0]
    assert run.info.run_id == payload["run_id"]
    assert run.data.tags["world_size"] == "2"
    # Both ranks' validation images are in the metrics (merged with state()/merge()).
    assert run.data.metrics["val/n_images"] == 3
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]
