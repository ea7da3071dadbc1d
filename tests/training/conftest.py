"""Tiny trainings: the small CPU configs shrunk to seconds, and an initialised MLflow store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "segmentation": ROOT / "configs/segmentation/small_cpu.yaml",
    "detection": ROOT / "configs/detection/small_cpu.yaml",
}
_COMMON = [
    "data.num_workers=0",
    "data.batch_size=2",
    "data.simulation.val_length=2",
    "trainer.progress=false",
    "trainer.log_every=1",
]
TINY = {
    # 64-130 px views (2 mm/px), 64 px patches, a net of a few thousand weights.
    "segmentation": [
        "data.spacing_mm=2.0",
        "augment.patch_size=64",
        "validation.roi_size=[64,64]",
        "model.kwargs.features=[4,4,8,8,16,4]",
        *_COMMON,
    ],
    "detection": [
        "data.spacing_mm=1.0",  # 170-240 px views; lesions of 2-10 mm are 2-10 px
        "augment.patch_size=64",
        "model.kwargs.sliding_window_roi=[128,128]",
        *_COMMON,
    ],
}


class Tiny:
    """``overrides(out, *extra)``: the ``key=value`` list of a tiny run writing to ``out``
    (later overrides win), for ``load_train_config`` or a ``ductai train`` subprocess;
    ``config(out, *extra)``: the loaded ``TrainConfig``. With ``store=True`` (default),
    ``out`` starts with a copy of an initialised MLflow sqlite store unless it has one:
    creating the tables (alembic migrations) costs seconds, a copy costs nothing."""

    def __init__(self, db: Path) -> None:
        self.db = db

    @staticmethod
    def path(task: str = "segmentation") -> Path:
        return CONFIGS[task]

    def overrides(
        self, out: Path, *extra: str, task: str = "segmentation", store: bool = True
    ) -> list[str]:
        if store:
            out.mkdir(parents=True, exist_ok=True)
            if not (out / "mlflow.db").exists():
                shutil.copy(self.db, out / "mlflow.db")
        return [*TINY[task], f"output_dir={out}", *extra]

    def config(self, out: Path, *extra: str, task: str = "segmentation", store: bool = True):
        from ductai.training.config import load_train_config

        overrides = self.overrides(out, *extra, task=task, store=store)
        return load_train_config(CONFIGS[task], overrides)


@pytest.fixture(scope="session")
def mlflow_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tiny(mlflow_db) -> Tiny:
    return Tiny(mlflow_db)


@pytest.fixture(scope="session")
def no_augment() -> list[str]:
    """Every augmentation off (probability 0): overfit tests see the same crops' content."""
    from ductai.data.transforms import AugmentConfig

    return [f"augment.{k}=0" for k in AugmentConfig.model_fields if k.endswith("_p")]
