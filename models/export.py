"""Export segmentation networks to TorchScript and ONNX (optional dependencies: onnx, onnxscript).

Both exports check the exported model against eager on the example input, so a silently wrong
trace (a shape branch frozen for another size) fails here rather than at the reading station.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike,
    example_shape: Sequence[int] = (1, 1, 256, 256),
    atol: float = 1e-4,
) -> Path:
    """Script ``model`` (tracing when it is not scriptable), check it, save it to ``path``.

    A traced model is valid for inputs whose H and W are multiples of the network's total
    stride (the shape branches MONAI's U-Nets take are frozen at trace time).
    """
    model = model.eval()
    example = torch.rand(*example_shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # torch deprecates TorchScript for torch.export; libtorch (C++) consumers still load
        # TorchScript, so keep the format and keep the log free of that warning.
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*", category=DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            exported = torch.jit.script(model)
        except Exception:
            exported = torch.jit.trace(model, example)
        _check_close(model, exported, example, atol, "TorchScript")
        torch.jit.save(exported, str(path))
    return path


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    example_shape: Sequence[int] = (1, 1, 256, 256),
    dynamic: bool = True,
    atol: float = 1e-3,
) -> Path:
    """Export ``model`` with ``torch.onnx.export(dynamo=True)``; batch, H and W dynamic by default.

    Needs the pip packages ``onnx`` and ``onnxscript``; ``onnxruntime``, when installed, is
    used to check the exported graph against eager.
    """
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"ONNX export needs the pip package(s) {', '.join(missing)}: "
            f"pip install {' '.join(missing)}"
        )
    model = model.eval()
    example = torch.rand(*example_shape)
    dynamic_shapes = None
    if dynamic:
        auto = torch.export.Dim.AUTO
        dynamic_shapes = ({0: auto, 2: auto, 3: auto},)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        dynamic_shapes=dynamic_shapes,
        input_names=["image"],
        output_names=["logits"],
    )
    program.save(str(path))
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"image": example.numpy()})
        _check_close(model, lambda _x: torch.from_numpy(got), example, atol, "ONNX")
    return path


def _check_close(model: nn.Module, exported, example: torch.Tensor, atol: float, what: str):
    with torch.no_grad():
        expected = model(example)
        got = exported(example)
    err = (expected - got).abs().max().item()
    if err > atol:
        raise RuntimeError(f"{what} export differs from the eager model by {err:.3g} > {atol}")
