"""Shared inference fixtures: tiny trained nets, their bundle, a simulated study (session scope).

Every inference test may use them:

* ``simulated_study``: one simulated breast (CC + MLO DICOMs with truth JSON), a
  ``SimulatedStudy`` with ``images``, ``truths`` (by SOPInstanceUID) and ``truth_for(path)``;
* ``tiny_seg_run`` / ``tiny_det_run``: ``TrainResult`` of a few training steps (MLflow run in
  ``tiny_tracking_uri``; the segmentation run also logged its pyfunc model);
* ``tiny_bundle``: a bundle folder of both checkpoints (``write_bundle``);
* ``tiny_predictor``: a ``Predictor`` on that bundle, eager backend, CPU, 2 threads.

The nets are trained at 1 mm per pixel (views of about 170-240 px) for a handful of steps:
they give outputs of the right shapes and types, not useful findings; accuracy checks use
the simulator's truth through the predictor's post-processing (test_predictor_geometry.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

ROOT = Path(__file__).resolve().parents[2]
SPACING_MM = 1.0
STUDY_SEED = 3  # one left breast: a papilloma and 5 mimics (calcifications, bubbles)

COMMON = [
    f"data.spacing_mm={SPACING_MM}",
    "augment.patch_size=64",
    "data.num_workers=0",
    "data.batch_size=2",
    "data.simulation.val_length=1",
    "trainer.progress=false",
    "trainer.epochs=1",
    "trainer.log_every=1",
    "trainer.device=cpu",
]
SEG = [
    "validation.roi_size=[64,64]",
    "validation.sw_batch_size=2",
    "model.kwargs.features=[4,4,8,8,16,4]",
    "trainer.steps_per_epoch=3",
]
DET = [
    "model.kwargs.sliding_window_roi=[128,128]",
    "trainer.steps_per_epoch=2",
    "tracking.log_model=false",
]


@dataclass
class SimulatedStudy:
    root: Path
    images: list[Path]
    truths: dict[str, dict] = field(default_factory=dict)  # SOPInstanceUID -> truth JSON

    def truth_for(self, image: Path) -> dict:
        return json.loads((self.root / "labels" / f"{Path(image).stem}.json").read_text())


@pytest.fixture(scope="session")
def simulated_study(tmp_path_factory) -> SimulatedStudy:
    from ductai.simulation.generate import generate_dataset

    root = tmp_path_factory.mktemp("simulated_study")
    summary = generate_dataset(root, n_breasts=1, seed=STUDY_SEED)
    study = SimulatedStudy(root=root, images=sorted(summary.images))
    for image in study.images:
        truth = study.truth_for(image)
        study.truths[truth["sop_instance_uid"]] = truth
    return study


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def tiny_tracking_uri(tiny_models_dir) -> str:
    # One sqlite store for both runs: creating its tables costs seconds, once.
    return f"sqlite:///{tiny_models_dir / 'mlflow.db'}"


def _train(config_path: Path, out: Path, tracking_uri: str, overrides: list[str]):
    from ductai.training.config import load_train_config
    from ductai.training.trainer import train

    config = load_train_config(
        config_path,
        [*COMMON, *overrides, f"output_dir={out}", f"tracking.tracking_uri={tracking_uri}"],
    )
    return train(config)


@pytest.fixture(scope="session")
def tiny_seg_run(tiny_models_dir, tiny_tracking_uri):
    return _train(
        ROOT / "configs/segmentation/small_cpu.yaml",
        tiny_models_dir / "seg",
        tiny_tracking_uri,
        SEG,
    )


@pytest.fixture(scope="session")
def tiny_det_run(tiny_models_dir, tiny_tracking_uri):
    return _train(
        ROOT / "configs/detection/small_cpu.yaml",
        tiny_models_dir / "det",
        tiny_tracking_uri,
        DET,
    )


@pytest.fixture(scope="session")
def tiny_bundle(tiny_models_dir, tiny_seg_run, tiny_det_run) -> Path:
    from ductai.inference.bundle import write_bundle

    return write_bundle(
        tiny_models_dir / "bundle",
        tiny_seg_run.last_checkpoint,
        tiny_det_run.last_checkpoint,
        name="ductai-tiny",
        version="0.0.1",
    )


@pytest.fixture(scope="session")
def tiny_predictor(tiny_bundle):
    from ductai.inference.predictor import Predictor

    return Predictor.from_path(tiny_bundle, device="cpu", backend="eager", num_threads=2)
