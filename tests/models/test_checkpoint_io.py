"""Checkpoints: atomic writes, full round trip (model, optimizer, RNG), clear refusals."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ductai.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _draws() -> tuple:
    return (
        random.random(),
        random.gauss(0, 1),
        np.random.rand(3).tolist(),  # noqa: NPY002 (the legacy global generator is the point)
        torch.rand(3).tolist(),
    )


def _trained_pair(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for _ in range(3):
        loss = model(torch.randn(5, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model, opt, sched


def test_round_trip_model_optimizer_rng(tmp_path):
    model, opt, sched = _trained_pair()
    random.seed(1)
    np.random.seed(2)  # noqa: NPY002
    torch.manual_seed(3)
    payload = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": 3,
        "step": 15,
        "config": {"name": "tiny", "lr": 1e-2, "tags": ["a", "b"]},
        "rng": rng_state(),
    }
    path = save_checkpoint(tmp_path / "ckpt" / "last.pt", payload)
    expected = _draws()

    loaded = load_checkpoint(path)
    model2, opt2, sched2 = _trained_pair(seed=99)
    model2.load_state_dict(loaded["model"])
    opt2.load_state_dict(loaded["optimizer"])
    sched2.load_state_dict(loaded["scheduler"])
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        torch.testing.assert_close(a, b)
    exp_avg = opt.state_dict()["state"][0]["exp_avg"]
    torch.testing.assert_close(opt2.state_dict()["state"][0]["exp_avg"], exp_avg)
    assert sched2.last_epoch == sched.last_epoch
    assert (loaded["epoch"], loaded["step"], loaded["config"]) == (3, 15, payload["config"])

    random.seed(123)
    np.random.seed(456)  # noqa: NPY002
    torch.manual_seed(789)
    set_rng_state(loaded["rng"])
    assert _draws() == expected


def test_crash_during_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(1000)})
    real_save = torch.save

    def crash_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes of a zip")
        raise KeyboardInterrupt  # what a Ctrl-C or a kill looks like to the writer

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(1000)})
    monkeypatch.setattr(torch, "save", real_save)

    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # temp file removed


def test_hard_kill_during_write_keeps_the_old_file(tmp_path):
    # os._exit skips every cleanup handler: as close to a power cut as a test gets.
    path = tmp_path / "last.pt"
    code = textwrap.dedent(
        f"""
        import os
        import torch
        from ductai.models.checkpoint import save_checkpoint

        save_checkpoint({str(path)!r}, {{"step": 1}})

        def die(obj, f, *args, **kwargs):
            f.write(b"PK partial")
            f.flush()
            os._exit(3)

        torch.save = die
        save_checkpoint({str(path)!r}, {{"step": 2}})
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert proc.returncode == 3, proc.stderr.decode()[-2000:]
    assert load_checkpoint(path) == {"step": 1}


def test_overwrite_replaces(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"step": 1})
    save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path) == {"step": 2}


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p, good: p.write_bytes(good[: len(good) // 2]), id="truncated"),
        pytest.param(
            lambda p, good: p.write_bytes(b"\x00" * 64 + b"not a checkpoint"), id="garbage"
        ),
        pytest.param(lambda p, good: p.write_bytes(b""), id="empty"),
        pytest.param(lambda p, good: torch.save({"model": torch.ones(2)}, p), id="foreign-torch"),
        pytest.param(lambda p, good: torch.save({"f": pickle.dumps}, p), id="unsafe-pickle"),
    ],
)
def test_refuses_bad_files_naming_them(tmp_path, make):
    good_path = save_checkpoint(tmp_path / "good.pt", {"w": torch.arange(10000.0)})
    bad = tmp_path / "bad.pt"
    make(bad, good_path.read_bytes())
    with pytest.raises(CheckpointError, match=r"bad\.pt"):
        load_checkpoint(bad)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_unsafe_payload_is_refused_before_writing(tmp_path):
    path = tmp_path / "x.pt"
    with pytest.raises(CheckpointError, match=r"payload\['metrics'\]\['dice'\].*numpy"):
        save_checkpoint(path, {"metrics": {"dice": np.float64(0.5)}})
    with pytest.raises(CheckpointError, match=r"PosixPath|WindowsPath"):
        save_checkpoint(path, {"out": tmp_path})
    assert not list(tmp_path.iterdir())
