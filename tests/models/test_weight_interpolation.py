"""Weight interpolation of two checkpoints: exact arithmetic, a loadable result, clear refusals."""

from __future__ import annotations

import pytest
import torch

from ductai.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ductai.models.registry import create_model
from ductai.models.weight_interpolation import interpolate_checkpoints

KWARGS = {"features": [4, 4, 8, 8, 16, 4]}


def _checkpoint(path, seed: int, kwargs=KWARGS):
    torch.manual_seed(seed)
    net = create_model("basic_unet", **kwargs)
    config = {"task": "segmentation", "model": {"name": "basic_unet", "kwargs": kwargs}}
    save_checkpoint(path, {"model": net.state_dict(), "config": config, "task": "segmentation"})
    return net.state_dict()


def test_interpolation_is_the_weighted_mean_and_loads(tmp_path):
    a = _checkpoint(tmp_path / "a.pt", 0)
    b = _checkpoint(tmp_path / "b.pt", 1)
    out = interpolate_checkpoints(tmp_path / "a.pt", tmp_path / "b.pt", 0.25, tmp_path / "m.pt")

    mixed = load_checkpoint(out)
    assert mixed["interpolation"]["weight"] == 0.25 and mixed["task"] == "segmentation"
    name = next(k for k, v in a.items() if v.is_floating_point() and not torch.equal(v, b[k]))
    torch.testing.assert_close(mixed["model"][name], 0.75 * a[name] + 0.25 * b[name])
    net = create_model("basic_unet", **KWARGS)
    net.load_state_dict(mixed["model"])  # every name and shape in place
    ends = [
        interpolate_checkpoints(tmp_path / "a.pt", tmp_path / "b.pt", w, tmp_path / f"{w}.pt")
        for w in (0.0, 1.0)
    ]
    for end, source in zip(ends, (a, b)):
        assert all(torch.equal(load_checkpoint(end)["model"][k], source[k]) for k in source)


def test_different_networks_are_refused(tmp_path):
    _checkpoint(tmp_path / "a.pt", 0)
    _checkpoint(tmp_path / "c.pt", 0, kwargs={"features": [4, 4, 8, 8, 32, 4]})
    with pytest.raises(CheckpointError, match="different networks"):
        interpolate_checkpoints(tmp_path / "a.pt", tmp_path / "c.pt", 0.5, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="weight"):
        interpolate_checkpoints(tmp_path / "a.pt", tmp_path / "a.pt", 1.5, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
