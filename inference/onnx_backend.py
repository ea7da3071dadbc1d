"""ONNX Runtime backend for the segmentation net (CPU): a drop-in callable for the inferer.

The net is exported once per weight file (``ductai.models.export.export_onnx``, dynamic batch,
height and width; checked against eager there) and cached under ``cache_dir`` by the weights'
sha256, so a Predictor start costs a file read after the first time. Optional: needs the pip
packages onnx, onnxscript and onnxruntime; ``OnnxSegmenter.create`` raises ImportError without
them and the Predictor falls back to eager.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path(os.environ.get("DUCTAI_CACHE", Path.home() / ".cache" / "ductai")) / "onnx"


def onnx_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


class OnnxSegmenter:
    """``__call__(tensor [B, 1, h, w]) -> logits tensor [B, C, h, w]`` on ONNX Runtime."""

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    @classmethod
    def create(
        cls,
        model: nn.Module,
        key: str,
        roi_size: tuple[int, int],
        batch_size: int = 1,
        cache_dir: str | os.PathLike | None = None,
        num_threads: int | None = None,
    ) -> OnnxSegmenter:
        """Export ``model`` (or reuse ``cache_dir/<key>.onnx``) and open a session on it."""
        if not onnx_available():
            raise ImportError("the ONNX backend needs: pip install onnx onnxscript onnxruntime")
        from ductai.models.export import export_onnx

        folder = Path(cache_dir) if cache_dir else DEFAULT_CACHE
        path = folder / f"{key}.onnx"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{key}.{os.getpid()}.onnx"
            # Export on the CPU copy: ORT runs here on the CPU whatever device eager used.
            cpu_model = model.to("cpu").eval()
            try:
                export_onnx(cpu_model, tmp, example_shape=(batch_size, 1, *roi_size))
                os.replace(tmp, path)  # atomic: concurrent starts never read half a file
            finally:
                tmp.unlink(missing_ok=True)
            log.info("exported the segmentation net to %s", path)
        return cls(path, num_threads=num_threads)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        (out,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(out).to(x.device)
