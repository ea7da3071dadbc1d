"""A trained ductai checkpoint as an MLflow pyfunc model (``mlflow models serve``, ``ductai infer``).

Input: one canonical-space image, float32 [H, W] in [0, 1] (contrast bright, resampled to the
training spacing: ``ductai.data.canonical.to_canonical``). Output, a dict of arrays:

* segmentation: ``probabilities`` float32 [2, H, W] (channel 0 duct lumen, 1 lesion), from
  whole-image sliding-window inference with Gaussian blending;
* detection: ``boxes`` float32 [N, 4] ``[x0, y0, x1, y1]`` (x = column), ``scores`` float32
  [N], ``labels`` int64 [N] indexing ``ductai.data.labels.CLASSES``. Mimics (air bubbles,
  calcifications) are learned but never reported unless ``params={"include_mimics": True}``.

The model is rebuilt from the checkpoint alone (its resolved config names the network), so
this module needs ``ductai.models`` but never ``ductai.training``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

with warnings.catch_warnings():
    # MLflow 3 warns about its own built-in type hints ("Any type hint ...") on first import.
    warnings.simplefilter("ignore", UserWarning)
    import mlflow.pyfunc

from ductai.data.labels import FINDINGS
from ductai.models.checkpoint import load_checkpoint
from ductai.models.registry import create_model

ARTIFACT = "checkpoint"


def model_from_checkpoint(payload: dict[str, Any], device: torch.device) -> torch.nn.Module:
    cfg = payload["config"]["model"]
    model = create_model(cfg["name"], **cfg.get("kwargs", {}))
    model.load_state_dict(payload["model"])
    return model.to(device).eval()


class DuctaiModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        payload = load_checkpoint(context.artifacts[ARTIFACT])
        self.config = payload["config"]
        self.task = self.config["task"]
        self.model = model_from_checkpoint(payload, self.device)
        if self.task == "segmentation":
            from monai.inferers import SlidingWindowInferer

            v = self.config["validation"]
            self.inferer = SlidingWindowInferer(
                roi_size=tuple(v["roi_size"]),
                sw_batch_size=v["sw_batch_size"],
                overlap=v["overlap"],
                mode="gaussian",
            )

    # np.ndarray: MLflow then neither infers a schema from the hint nor asks for one (the
    # signature is explicit, see ``signature``).
    def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None):
        image = np.asarray(model_input, dtype=np.float32)
        if image.ndim == 3 and image.shape[0] == 1:
            image = image[0]
        if image.ndim != 2:
            raise ValueError(f"expected one canonical image [H, W], got shape {image.shape}")
        x = torch.from_numpy(np.ascontiguousarray(image))[None, None].to(self.device)
        with torch.inference_mode():
            if self.task == "segmentation":
                probs = torch.sigmoid(self.inferer(x, self.model))[0]
                return {"probabilities": probs.float().cpu().numpy()}
            (det,) = self.model(x)
        keep = np.ones(len(det["labels"]), bool)
        if not (params or {}).get("include_mimics", False):
            keep = det["labels"].cpu().numpy() < len(FINDINGS)
        return {
            "boxes": det["boxes"].float().cpu().numpy()[keep].reshape(-1, 4),
            "scores": det["scores"].float().cpu().numpy()[keep],
            "labels": det["labels"].cpu().numpy().astype(np.int64)[keep],
        }


def signature(task: str) -> ModelSignature:
    # One unnamed tensor: predict() receives the [H, W] array itself.
    image = Schema([TensorSpec(np.dtype(np.float32), (-1, -1))])
    if task == "segmentation":
        outputs = Schema([TensorSpec(np.dtype(np.float32), (2, -1, -1), "probabilities")])
        return ModelSignature(inputs=image, outputs=outputs)
    outputs = Schema(
        [
            TensorSpec(np.dtype(np.float32), (-1, 4), "boxes"),
            TensorSpec(np.dtype(np.float32), (-1,), "scores"),
            TensorSpec(np.dtype(np.int64), (-1,), "labels"),
        ]
    )
    params = ParamSchema([ParamSpec("include_mimics", "boolean", False)])
    return ModelSignature(inputs=image, outputs=outputs, params=params)


def requirements() -> list[str]:
    # Given explicitly: MLflow's inference imports the model in a subprocess (slow) and
    # would miss that ductai itself is needed.
    from importlib.metadata import version

    import ductai

    pins = [f"{p}=={version(p)}" for p in ("torch", "monai", "numpy", "pydicom", "mlflow")]
    return [*pins, f"ductai=={ductai.__version__}"]


def log_pyfunc_model(
    checkpoint: str | Path, registered_model_name: str | None = None, name: str = "model"
):
    """Log ``checkpoint`` as a pyfunc model in the active MLflow run (optionally registered)."""
    task = load_checkpoint(checkpoint)["config"]["task"]
    with _quiet_mlflow():
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=DuctaiModel(),
            artifacts={ARTIFACT: str(checkpoint)},
            signature=signature(task),
            pip_requirements=requirements(),
            registered_model_name=registered_model_name,
        )


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """Hide log_model's advice that does not apply here: the signature is explicit (no type
    hints or input example needed), the class is importable from ductai (pickled by
    reference), and the artifact copy needs no progress bar."""
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    pyfunc_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for advice in ("Add type hints", "An input example was not provided"):
                warnings.filterwarnings("ignore", message=f".*{advice}", category=UserWarning)
            yield
    finally:
        pyfunc_log.setLevel(level)
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar
