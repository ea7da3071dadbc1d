"""The training config: one typed, validated object per run (``ductai train CONFIG k=v ...``).

Every section forbids unknown keys, so a typo is one clear message naming the dotted key
(``ductai.config.validate``). ``resolved()`` is what gets saved with the run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ductai.config import ConfigError, load_config
from ductai.data.transforms import AugmentConfig
from ductai.training.losses import SegmentationLossConfig

Task = Literal["segmentation", "detection"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SimulationSource(_Section):
    """On-the-fly simulated galactograms (``ductai.simulation``): nothing on disk.

    Training draws ``trainer.steps_per_epoch * data.batch_size`` new breasts' views per epoch
    (per rank) from an endless stream, or cycles a fixed set of ``train_length`` views;
    validation is a fixed set of ``val_length`` views. ``data.cache: memory`` renders a fixed
    set once.

    ``presets`` mixes simulation presets (a name under configs/simulation/ or a YAML path ->
    a positive weight, normalised): each breast is rendered with one preset chosen from
    (seed, breast index) alone (``ductai.data.datasets.SimulatedMix``), so the data stay
    reproducible and a resume sees the same breasts. The endless training stream draws each
    breast's preset independently with these probabilities; the fixed sets (validation,
    ``train_length``) hold each preset in proportion, every preset at least once when there
    are enough breasts. ``preset: NAME`` is shorthand for ``presets: {NAME: 1}``.

    ``train_overrides`` (``key=value`` into the preset's YAML) change every preset of
    the training views only, e.g. ``[anatomy.findings.class_weights.cutoff=0.3]`` to show the
    net more of a rare finding; validation keeps the presets as they are, so it still
    measures the data the model will meet.
    """

    presets: dict[str, float] = {"default": 1.0}
    # None derives both from trainer.seed, so one seed controls the simulator too.
    train_seed: int | None = None
    val_seed: int | None = None
    train_length: int | None = Field(None, ge=1)  # None: endless, new breasts every epoch
    # Endless source: crops cut from each rendered view (rendering costs more than a crop).
    crops_per_view: int = Field(1, ge=1)
    val_length: int = Field(16, ge=1)
    train_overrides: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def _preset_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "preset" in data:
            data = dict(data)
            preset = data.pop("preset")
            if "presets" in data:
                raise ValueError(
                    "give either preset (one) or presets (a mix), not both; "
                    f"e.g. presets={{{preset}: 1}}"
                )
            data["presets"] = {preset: 1.0} if isinstance(preset, str) else preset
        return data

    @field_validator("presets")
    @classmethod
    def _known_presets(cls, presets: dict[str, float]) -> dict[str, float]:
        from ductai.simulation.config import preset_names

        if not presets:
            raise ValueError("give at least one preset, e.g. {default: 0.7, hard: 0.3}")
        known = preset_names()
        problems = []
        for name, weight in presets.items():
            path = Path(name)
            if path.suffix and not path.is_file():
                problems.append(f"{name!r}: no such simulation config file")
            elif not path.suffix and name not in known:
                problems.append(f"{name!r}: unknown preset (known: {', '.join(known)})")
            if not (math.isfinite(weight) and weight > 0):
                problems.append(f"{name!r}: the weight must be a positive number, not {weight}")
        if problems:
            raise ValueError("; ".join(problems))
        return presets

    @model_validator(mode="after")
    def _overrides_apply(self) -> SimulationSource:
        """Fail at load time, naming the preset, rather than in a loader worker."""
        if not self.train_overrides:
            return self
        from ductai.simulation.config import load_simulation_config

        for name in self.presets:
            try:
                load_simulation_config(name, self.train_overrides)
            except ConfigError as e:  # an unknown key or a value the preset rejects
                detail = "; ".join(line.strip() for line in str(e).splitlines()[1:]) or str(e)
                raise ValueError(
                    f"train_overrides do not apply to preset {name!r}: {detail}"
                ) from None
        return self


class DataConfig(_Section):
    source: Literal["simulation", "datalist"] = "simulation"
    simulation: SimulationSource = SimulationSource()
    datalist: Path | None = None
    train_split: str = "training"
    val_split: str = "validation"
    # Canonical pixel spacing: the one space the model sees (DESIGN.md).
    spacing_mm: float = Field(0.3, gt=0)
    batch_size: int = Field(4, ge=1)
    num_workers: int = Field(2, ge=0)
    # Cache decoded canonical images: none, memory (MONAI CacheDataset) or disk (Persistent).
    cache: Literal["none", "memory", "disk"] = "none"
    cache_dir: Path | None = None

    @model_validator(mode="after")
    def _datalist_given(self) -> DataConfig:
        if self.source == "datalist" and self.datalist is None:
            raise ValueError("data.source is 'datalist' but data.datalist (a path) is not set")
        return self


class ModelConfig(_Section):
    """``ductai.models.registry.create_model(name, **kwargs)``."""

    name: str
    kwargs: dict[str, Any] = {}
    # Start from these weights (a ductai checkpoint, e.g. models/default/seg.pt) with a fresh
    # optimizer and schedule: fine-tuning on a hospital's data. Ignored on --resume.
    init_from: Path | None = None


class LossConfig(SegmentationLossConfig):
    """Segmentation loss settings plus the detector's loss weights (each task reads its own)."""

    classification_weight: float = Field(1.0, ge=0)
    box_regression_weight: float = Field(1.0, ge=0)


class OptimConfig(_Section):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0)  # sgd only


class SchedulerConfig(_Section):
    # Stepped once per training step: linear warm-up, then cosine to min_lr_ratio * lr.
    name: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)


class EarlyStopping(_Section):
    # Validation rounds without improvement of trainer.best_metric; None = off.
    patience: int | None = Field(None, ge=1)
    min_delta: float = Field(0.0, ge=0)


class TrainerConfig(_Section):
    epochs: int = Field(10, ge=1)
    # None = one pass over the training set; set it for the (endless) simulator.
    steps_per_epoch: int | None = Field(None, ge=1)
    val_every: int = Field(1, ge=1)  # epochs
    checkpoint_every: int | None = Field(None, ge=1)  # steps; last.pt is written each epoch too
    log_every: int = Field(10, ge=1)  # steps between per-step metric records
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # CUDA only: float16 autocast + GradScaler; ignored on CPU
    channels_last: bool = True  # CUDA only
    deterministic: bool = False
    # torch intra-op threads of the training process (None: torch's default, all cores).
    # Two runs sharing a CPU: 1 each. Oversubscribed OpenMP threads spin at their barriers;
    # measured here, two concurrent CPU runs went from 1.4 to 16 img/s (detection).
    num_threads: int | None = Field(None, ge=1)
    seed: int = 0
    grad_clip: float | None = Field(None, gt=0)  # max gradient L2 norm
    best_metric: str | None = None  # e.g. val/dice_duct; None = the task's default
    mode: Literal["max", "min"] = "max"
    early_stopping: EarlyStopping = EarlyStopping()
    # Wall-clock budget of the run (a lease on a rented GPU): it stops, validated and saved,
    # after the last epoch that ends inside it; counted from this process's first epoch (a
    # resumed run gets it again). None = no limit.
    max_minutes: float | None = Field(None, gt=0)
    progress: bool = True  # tqdm bars on rank 0


class ValidationConfig(_Section):
    # Whole-image sliding-window inference (segmentation; the detector has its own).
    roi_size: tuple[int, int] = (256, 256)
    overlap: float = Field(0.25, ge=0, lt=1)
    sw_batch_size: int = Field(4, ge=1)
    threshold: float = Field(0.5, gt=0, lt=1)
    overlay_images: int = Field(8, ge=0)  # validation images in the overlay grid


class TrackingConfig(_Section):
    # False: no MLflow run (a training box without MLflow installed); metrics stay in the
    # checkpoints' history and the log.
    enabled: bool = True
    # None: env MLFLOW_TRACKING_URI, else sqlite:///<output_dir>/mlflow.db (no server needed).
    tracking_uri: str | None = None
    experiment: str = "ductai"
    run_name: str | None = None
    register_model: str | None = None  # registered model name for the final pyfunc model
    log_model: bool = True


class TrainConfig(_Section):
    task: Task
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    trainer: TrainerConfig = TrainerConfig()
    validation: ValidationConfig = ValidationConfig()
    tracking: TrackingConfig = TrackingConfig()
    output_dir: Path = Path("outputs/run")

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        from ductai.models.registry import available_models

        names = available_models(self.task)
        if self.model.name not in names:
            raise ValueError(f"model.name {self.model.name!r} is not a {self.task} model: {names}")
        if self.data.source == "simulation" and self.trainer.steps_per_epoch is None:
            raise ValueError(
                "trainer.steps_per_epoch must be set for the endless simulation source"
            )
        if self.task == "detection":
            # Anchors are sized in mm through the spacing: it must be the data's spacing.
            given = self.model.kwargs.setdefault("spacing_mm", self.data.spacing_mm)
            if abs(float(given) - self.data.spacing_mm) > 1e-9:
                raise ValueError(
                    f"model.kwargs.spacing_mm ({given}) differs from data.spacing_mm "
                    f"({self.data.spacing_mm}); leave it out to use the data's"
                )
        return self

    @property
    def best_metric(self) -> str:
        if self.trainer.best_metric:
            return self.trainer.best_metric
        return "val/dice_duct" if self.task == "segmentation" else "val/cpm"

    def resolved(self) -> dict[str, Any]:
        """Plain JSON-able dict (the config saved with the run and in the checkpoint)."""
        return self.model_dump(mode="json")


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML config with ``key=value`` overrides; raises ConfigError with one message."""
    return load_config(TrainConfig, path, overrides)


def config_from_dict(content: dict[str, Any], source: str = "checkpoint") -> TrainConfig:
    from ductai.config import validate

    return validate(TrainConfig, content, source=source)


__all__ = ["ConfigError", "TrainConfig", "config_from_dict", "load_train_config"]
