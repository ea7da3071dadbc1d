"""Runs for a rented GPU: a wall-clock budget (trainer.max_minutes) and no MLflow at all
(tracking.enabled=false, on a machine where MLflow is not installed)."""

from __future__ import annotations

import subprocess
import sys

from ductai.models.checkpoint import load_checkpoint
from ductai.training.trainer import train


def test_budget_stops_validated_at_an_epoch_boundary(tmp_path, tiny):
    # A budget spent by the first epoch: the run stops there, validated although val_every
    # would not validate it, and saved.
    config = tiny.config(
        tmp_path / "run",
        "trainer.epochs=50",
        "trainer.steps_per_epoch=2",
        "trainer.val_every=100",
        "trainer.max_minutes=0.0001",
        "validation.overlay_images=0",
        "tracking.log_model=false",
    )
    result = train(config)

    assert result.stopped_early
    assert result.epochs_done == 1 and result.global_step == 2
    assert "val/dice_duct" in result.metrics
    assert result.best_checkpoint is not None
    assert load_checkpoint(result.last_checkpoint)["global_step"] == 2


def test_untracked_run_needs_no_mlflow(tmp_path, tiny):
    out = tmp_path / "run"
    overrides = tiny.overrides(
        out,
        "trainer.epochs=1",
        "trainer.steps_per_epoch=2",
        "validation.overlay_images=0",
        "tracking.enabled=false",
        store=False,
    )
    # None in sys.modules makes every import of mlflow fail, as on a machine without it.
    code = (
        "import sys; sys.modules['mlflow'] = None; from ductai.cli import main; "
        f"sys.exit(main(['train', {str(tiny.path())!r}, *{overrides!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (out / "mlflow.db").exists() and not (out / "mlartifacts").exists()
    assert (out / "config.yaml").exists()
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["run_id"] is None and ckpt["global_step"] == 2
    assert "val/dice_duct" in ckpt["history"]
