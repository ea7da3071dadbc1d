"""Tiny segmentation trainings on simulated data: checkpoint, MLflow run, pyfunc, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from ductai.models.checkpoint import load_checkpoint
from ductai.training.trainer import train


def test_tiny_segmentation_run(tmp_path, tiny):
    config = tiny.config(
        tmp_path / "seg",
        "trainer.epochs=1",
        "trainer.steps_per_epoch=3",
        "tracking.register_model=ductai-seg-test",
    )
    result = train(config)

    assert result.global_step == 3 and result.epochs_done == 1
    ckpt = load_checkpoint(result.last_checkpoint)
    for key in ("model", "optimizer", "scheduler", "scaler", "rng", "config", "history"):
        assert key in ckpt
    assert ckpt["global_step"] == 3 and ckpt["run_id"] == result.run_id
    assert ckpt["config"]["task"] == "segmentation"
    assert result.best_checkpoint is not None  # the first validation is the best so far

    client = MlflowClient(result.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert result.tracking_uri == f"sqlite:///{(tmp_path / 'seg' / 'mlflow.db').resolve()}"
    params = run.data.params
    assert params["model.name"] == "basic_unet"
    assert params["trainer.steps_per_epoch"] == "3"
    assert params["data.spacing_mm"] == "2.0"
    tags = run.data.tags
    for tag in ("mlflow.source.git.commit", "data.fingerprint", "version.torch", "device"):
        assert tags[tag]
    assert tags["device"] == "cpu"
    losses = client.get_metric_history(result.run_id, "train/loss")
    assert [m.step for m in losses] == [1, 2, 3]
    for key in ("train/lr", "train/images_per_s", "val/dice_duct", "val/cldice_duct"):
        assert client.get_metric_history(result.run_id, key), key
    assert "val/hd95_duct_mm" in run.data.metrics

    artifacts = _artifact_paths(client, result.run_id)
    for expected in (
        "config.yaml",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "plots/learning_curves.png",
        "plots/val_overlays.png",
    ):
        assert expected in artifacts, expected
    # Artifacts live beside the store, never in the working directory.
    assert run.info.artifact_uri.startswith((tmp_path / "seg").resolve().as_uri())
    assert client.get_registered_model("ductai-seg-test").latest_versions

    # The logged model: canonical [H, W] float32 in, duct + lesion probabilities out.
    import mlflow.pyfunc

    (logged,) = client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id='{result.run_id}'"
    )
    assert logged.artifact_location.startswith((tmp_path / "seg").resolve().as_uri())
    model = mlflow.pyfunc.load_model(logged.artifact_location)
    assert model.metadata.signature is not None
    image = np.random.default_rng(0).random((70, 90), dtype=np.float32)
    out = model.predict(image)
    assert out["probabilities"].shape == (2, 70, 90)
    assert out["probabilities"].dtype == np.float32


def test_evaluate_logs_to_the_same_run(tmp_path, tiny):
    from ductai.training.evaluate import evaluate_checkpoint

    config = tiny.config(
        tmp_path / "seg",
        "trainer.epochs=1",
        "trainer.steps_per_epoch=1",
        "tracking.log_model=false",
    )
    result = train(config)
    metrics = evaluate_checkpoint(result.last_checkpoint, n=2, seed=99)
    key = "eval/sim-default_hard-seed99/dice_duct"  # the training mix by default
    assert key in metrics
    client = MlflowClient(result.tracking_uri)
    logged = client.get_metric_history(result.run_id, key)
    assert [m.step for m in logged] == [1]
    artifacts = _artifact_paths(client, result.run_id)
    assert "evaluation/sim-default_hard-seed99/metrics.json" in artifacts

    # The checkpoint alone rebuilds the network (what the pyfunc model does).
    from ductai.inference.pyfunc import model_from_checkpoint

    payload = load_checkpoint(result.last_checkpoint)
    model = model_from_checkpoint(payload, torch.device("cpu"))
    for name, value in model.state_dict().items():
        assert torch.equal(value, payload["model"][name])


def test_one_seed_controls_the_run(tmp_path, tiny):
    """The same seed twice: the same data, augmentation, weights and losses."""

    def run(name: str) -> dict:
        cfg = tiny.config(
            tmp_path / name,
            "trainer.epochs=1",
            "trainer.steps_per_epoch=2",
            "trainer.seed=3",
            "tracking.log_model=false",
            "trainer.deterministic=true",
            "validation.overlay_images=0",
        )
        return load_checkpoint(train(cfg).last_checkpoint)

    first, again = run("a"), run("b")
    assert first["history"]["train/loss"] == again["history"]["train/loss"]
    for name, value in first["model"].items():
        assert torch.equal(value, again["model"][name]), name


def test_early_stopping_and_best_metric(tmp_path, tiny):
    from mlflow import MlflowClient as Client

    from ductai.config import ConfigError

    # val/n_images never changes: the first validation is the best, the next one is not.
    config = tiny.config(
        tmp_path / "stop",
        "trainer.epochs=5",
        "trainer.steps_per_epoch=1",
        "trainer.val_every=1",
        "trainer.best_metric=val/n_images",
        "trainer.early_stopping.patience=1",
        "validation.overlay_images=0",
        "tracking.log_model=false",
    )
    result = train(config)
    assert result.stopped_early and result.epochs_done == 2
    assert load_checkpoint(result.best_checkpoint)["global_step"] == 1
    assert Client(result.tracking_uri).get_run(result.run_id).data.tags["best_step"] == "1"

    bad = tiny.config(
        tmp_path / "bad",
        "trainer.epochs=1",
        "trainer.steps_per_epoch=1",
        "trainer.best_metric=val/dice",
        "tracking.log_model=false",
    )
    with pytest.raises(ConfigError, match="'val/dice' is not a validation metric"):
        train(bad)
    client = Client(f"sqlite:///{tmp_path / 'bad' / 'mlflow.db'}")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("ductai-segmentation").experiment_id]
    )
    assert run.info.status == "FAILED"


@pytest.mark.slow
def test_segmentation_overfits_a_handful_of_images(tmp_path, tiny, no_augment):
    """Four fixed views, validated on themselves: the loss falls and the duct Dice rises."""
    config = tiny.config(
        tmp_path / "overfit",
        *no_augment,
        "data.spacing_mm=1.2",
        "augment.patch_size=96",
        "validation.roi_size=[96,96]",
        "model.kwargs.features=[8,8,16,16,32,8]",
        "data.batch_size=4",
        "data.cache=memory",
        "data.simulation.train_length=4",
        "data.simulation.val_length=4",
        "data.simulation.val_seed=0",
        "trainer.epochs=3",
        "trainer.steps_per_epoch=10",
        "trainer.val_every=1",
        "trainer.early_stopping.patience=null",
        "optim.lr=0.01",
        "scheduler.name=constant",
        "validation.overlay_images=0",
        "tracking.log_model=false",
    )
    result = train(config)
    history = load_checkpoint(result.last_checkpoint)["history"]
    loss = [v for _, v in history["train/loss"]]
    dice = [v for _, v in history["val/dice_duct"]]
    assert np.mean(loss[-5:]) < np.mean(loss[:5]) - 0.1, loss
    assert dice[-1] > dice[0] + 0.05, dice
    assert result.best_value == pytest.approx(max(dice))


def _artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found |= _artifact_paths(client, run_id, item.path)
        else:
            found.add(item.path)
    return found
