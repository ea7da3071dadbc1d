"""Fine-tuning from a checkpoint's weights (model.init_from) and the training thread count."""

from __future__ import annotations

import pytest
import torch

from ductai.config import ConfigError
from ductai.models.checkpoint import load_checkpoint
from ductai.training.trainer import train


def test_init_from_starts_from_the_given_weights(tmp_path, tiny):
    first = train(tiny.config(tmp_path / "a", "trainer.epochs=1", "trainer.steps_per_epoch=2"))
    start = load_checkpoint(first.last_checkpoint)["model"]
    # a vanishing lr: the weights barely move, so the new run ends where init_from began
    config = tiny.config(
        tmp_path / "b", f"model.init_from={first.last_checkpoint}", "optim.lr=1e-12", "optim.weight_decay=0",
        "scheduler.warmup_steps=0", "trainer.epochs=1", "trainer.steps_per_epoch=2",
    )  # fmt: skip
    result = train(config)
    tuned = load_checkpoint(result.last_checkpoint)
    assert tuned["global_step"] == result.global_step  # a new run, counted from zero
    for key, value in start.items():
        assert torch.allclose(tuned["model"][key].float(), value.float(), atol=1e-6), key


def test_init_from_a_different_architecture_names_the_file(tmp_path, tiny):
    first = train(tiny.config(tmp_path / "a", "trainer.epochs=1", "trainer.steps_per_epoch=2"))
    config = tiny.config(
        tmp_path / "b", f"model.init_from={first.last_checkpoint}",
        "model.kwargs.features=[8,8,16,16,32,8]",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="does not fit"):
        train(config)


def test_num_threads_sets_torch_threads(tmp_path, tiny):
    before = torch.get_num_threads()
    try:
        train(
            tiny.config(
                tmp_path / "a",
                "trainer.epochs=1",
                "trainer.steps_per_epoch=2",
                "trainer.num_threads=1",
            )
        )
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
