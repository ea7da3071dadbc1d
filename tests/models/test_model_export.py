"""Export: TorchScript always; ONNX only where onnx/onnxscript are installed."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from ductai.models import export as export_mod
from ductai.models.export import export_onnx, export_torchscript
from ductai.models.registry import create_model


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:DeprecationWarning")
def test_torchscript_round_trip(tmp_path):
    model = create_model("unet", channels=(8, 16, 32), strides=(2, 2)).eval()
    path = export_torchscript(model, tmp_path / "unet.ts", example_shape=(1, 1, 64, 64))
    loaded = torch.jit.load(str(path))
    x = torch.rand(2, 1, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-4, rtol=1e-4)


def test_onnx_missing_package_is_named(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        export_mod.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxscript" else real(name, *a),
    )
    with pytest.raises(ImportError, match=r"pip install .*onnxscript"):
        export_onnx(create_model("unet"), tmp_path / "m.onnx")


@pytest.mark.skipif(
    importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxscript") is None,
    reason="onnx/onnxscript not installed",
)
def test_onnx_export(tmp_path):
    model = create_model("basic_unet", features=(8, 8, 16, 32, 64, 8))
    path = export_onnx(model, tmp_path / "m.onnx", example_shape=(1, 1, 64, 64))
    assert path.stat().st_size > 0
