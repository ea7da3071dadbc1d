"""Training orchestration: ``train(config, resume=None) -> TrainResult``.

The explicit parts live in ``segmentation_task`` / ``detection_task`` (``train_one_epoch``,
``evaluate``); this module wires data, model, optimisation, checkpoints, MLflow and ranks:

    for epoch: train_one_epoch -> (every val_every) evaluate -> best / early stopping
               -> log epoch metrics -> last.pt (and best.pt) -> plots
    end:       checkpoints, plots and the pyfunc model into the MLflow run

A checkpoint holds everything to continue (model, optimizer, scheduler, scaler, epoch, step
within the epoch, RNG states, resolved config, MLflow run id, best metric, history), so
``--resume`` continues the same run at the same step, and ``trainer.epochs`` may be raised.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

import ductai
from ductai.config import ConfigError
from ductai.models.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ductai.models.registry import create_model
from ductai.training import detection_task, segmentation_task
from ductai.training import distributed as dist
from ductai.training.config import TrainConfig
from ductai.training.engine import Engine
from ductai.training.loaders import (
    StepSampler,
    build_datasets,
    steps_per_epoch,
    train_loader,
    val_loader,
)
from ductai.training.reproducibility import seed_everything, set_deterministic
from ductai.training.tracking import (
    NullTracker,
    RunTracker,
    flatten,
    resolve_tracking_uri,
    run_tags,
)
from ductai.training.validation import Validation

log = logging.getLogger(__name__)

LAST, BEST = "last.pt", "best.pt"


@dataclass
class TrainResult:
    run_id: str | None
    tracking_uri: str | None
    output_dir: Path
    global_step: int
    epochs_done: int
    best_metric: str
    best_value: float | None
    last_checkpoint: Path
    best_checkpoint: Path | None
    metrics: dict[str, float]  # the last validation, "val/..." keys
    stopped_early: bool = False


def train(config: TrainConfig, resume: str | Path | None = None) -> TrainResult:
    """Train ``config``; ``resume`` = a checkpoint path, ``"auto"`` (output_dir/last.pt if
    present) or None (a new run; refused when output_dir already holds one)."""
    ctx = dist.setup(config.trainer.device)
    try:
        result = Trainer(config, ctx).run(resume)
        # Rank 0 finishes the MLflow run after the loop; a rank that tore the gloo group down
        # before it had sometimes aborted ("terminate called without an active exception").
        dist.barrier(ctx)
        return result
    finally:
        dist.teardown(ctx)


def find_resume(config: TrainConfig, resume: str | Path | None) -> Path | None:
    last = config.output_dir / LAST
    if resume is None:
        if last.exists():
            raise ConfigError(
                f"{config.output_dir} already holds a training ({last}); continue it with "
                "--resume auto, or choose another output_dir=..."
            )
        return None
    if str(resume) == "auto":
        return last if last.exists() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint to resume not found: {path}")
    return path


def init_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a checkpoint's model weights (same architecture) before a new run."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"model.init_from: checkpoint not found: {path}")
    state = load_checkpoint(path)["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(
            f"model.init_from: {path} does not fit model.name/model.kwargs of this config: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    log.info("initialised the model from %s", path)


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    o = config.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if o.name == "sgd":
        return torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True
        )
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, weight_decay=o.weight_decay)


def build_scheduler(optimizer, config: TrainConfig, total_steps: int):
    """Per-step warm-up + cosine; the lambda is rebuilt from the config, so raising
    trainer.epochs on resume stretches the schedule from the current step on."""
    s = config.scheduler

    def factor(step: int) -> float:
        if s.warmup_steps and step < s.warmup_steps:
            return (step + 1) / s.warmup_steps
        if s.name == "constant":
            return 1.0
        t = min(1.0, (step - s.warmup_steps) / max(1, total_steps - s.warmup_steps))
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(previous)


class Trainer:
    def __init__(self, config: TrainConfig, ctx: dist.DistContext) -> None:
        self.config, self.ctx = config, ctx
        self.out = config.output_dir
        self.task = segmentation_task if config.task == "segmentation" else detection_task
        self.best_metric = config.best_metric
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.bad_rounds = 0
        self.history: dict[str, list[list[float]]] = {}
        self.last_val: dict[str, float] = {}
        self.tracker: RunTracker | NullTracker = NullTracker()
        self.tracking_uri: str | None = None

    # -- set-up ------------------------------------------------------------------------------
    def run(self, resume: str | Path | None) -> TrainResult:
        c, ctx = self.config, self.ctx
        resume_path = find_resume(c, resume)
        if c.trainer.num_threads:
            torch.set_num_threads(c.trainer.num_threads)
        seed_everything(c.trainer.seed, ctx.rank)
        set_deterministic(c.trainer.deterministic, ctx.device.type == "cuda")
        self.train_set, self.val_set = build_datasets(c, ctx.world_size)
        self.steps = steps_per_epoch(c, len(self.train_set), ctx.world_size)
        self.sampler = StepSampler(
            len(self.train_set),
            c.data.batch_size,
            self.steps,
            c.trainer.seed,
            ctx.rank,
            ctx.world_size,
            shuffle=not hasattr(self.train_set, "set_epoch"),  # the endless source is new anyway
        )
        with quiet_root_logger():  # MONAI's detector reports its matcher set-up on the root logger
            model = create_model(c.model.name, **c.model.kwargs).to(ctx.device)
        if c.trainer.channels_last and ctx.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(model, c)
        scheduler = build_scheduler(optimizer, c, c.trainer.epochs * self.steps)
        self.engine = Engine(model, optimizer, scheduler, c, ctx, on_step=self.on_step)
        # Loaded on the CPU: load_state_dict copies weights and optimizer state to the model's
        # device, and the RNG states must stay CPU tensors.
        payload = load_checkpoint(resume_path) if resume_path else None
        if payload is not None:
            self._restore(payload, resume_path)
        elif c.model.init_from is not None:
            init_weights(model, c.model.init_from)
        self.engine.model = dist.wrap(model, ctx)
        self.criterion = segmentation_task.build_criterion(c) if c.task == "segmentation" else None
        if ctx.is_main:
            self._write_config()
            if c.tracking.enabled:
                self._start_tracking(payload)
        try:
            stopped = self._loop()
            self._finish()
        except BaseException as exc:
            # The run shows how it ended; its last.pt stays resumable (--resume auto).
            if self.tracker.run_id:
                self.tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        return TrainResult(
            run_id=self.tracker.run_id,
            tracking_uri=self.tracking_uri,
            output_dir=self.out,
            global_step=self.engine.global_step,
            epochs_done=self.engine.epoch,
            best_metric=self.best_metric,
            best_value=self.best_value,
            last_checkpoint=self.out / LAST,
            best_checkpoint=self.out / BEST if (self.out / BEST).exists() else None,
            metrics=self.last_val,
            stopped_early=stopped,
        )

    def _restore(self, payload: dict[str, Any], path: Path) -> None:
        dist.unwrap(self.engine.model).load_state_dict(payload["model"])
        self.engine.load_state_dict(payload)
        set_rng_state(payload["rng"])
        if self.ctx.rank:  # ranks draw distinct crops; rank 0's stream is the one restored
            seed_everything(self.config.trainer.seed + self.engine.global_step, self.ctx.rank)
        best = payload.get("best") or {}
        self.best_value, self.best_step = best.get("value"), best.get("step")
        self.bad_rounds = int(payload.get("bad_rounds", 0))
        self.history = payload.get("history", {})
        old_epochs = payload["config"]["trainer"]["epochs"]
        log.info(
            "resuming %s at step %d (epoch %d of %d, was %d)",
            path,
            self.engine.global_step,
            self.engine.epoch + 1,
            self.config.trainer.epochs,
            old_epochs,
        )

    def _write_config(self) -> None:
        # The resolved config, beside the checkpoints (updated on resume).
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "config.yaml"
        path.write_text(yaml.safe_dump(self.config.resolved(), sort_keys=False))

    def _start_tracking(self, payload: dict[str, Any] | None) -> None:
        c = self.config
        self.tracking_uri = resolve_tracking_uri(c.tracking.tracking_uri, self.out)
        local = self.tracking_uri.startswith("sqlite:") or "://" not in self.tracking_uri
        self.tracker = RunTracker(
            self.tracking_uri, c.tracking.experiment, self.out / "mlartifacts" if local else None
        )
        tags = run_tags(c, str(self.ctx.device), self.ctx.world_size)
        run_id = payload.get("run_id") if payload else None
        self.tracker.start(c.tracking.run_name or self.out.name, tags, run_id=run_id)
        if payload is None:
            self.tracker.log_params(flatten(c.resolved()))
        else:
            self.tracker.set_tags({"resumed_at_step": str(self.engine.global_step)})
        self.tracker.log_artifact(self.out / "config.yaml")
        log.info("MLflow run %s at %s", self.tracker.run_id, self.tracking_uri)

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self) -> bool:
        c, e = self.config, self.engine
        run_started, epoch_times = time.perf_counter(), []
        while e.epoch < c.trainer.epochs:
            started = time.perf_counter()
            if hasattr(self.train_set, "set_epoch"):
                self.train_set.set_epoch(e.epoch)  # the simulator: new breasts every epoch
            self.sampler.set_epoch(e.epoch, e.step_in_epoch)
            loader = train_loader(c, self.train_set, self.sampler, self.ctx, e.epoch)
            if self.config.task == "segmentation":
                self.task.train_one_epoch(e, self.criterion, loader, self.steps)
            else:
                self.task.train_one_epoch(e, c, loader, self.steps)
            epoch_metrics = {
                "epoch": e.epoch + 1,
                "train/epoch_time_s": time.perf_counter() - started,
            }
            out_of_time = self._out_of_time(run_started, epoch_times, started)
            validate = (
                (e.epoch + 1) % c.trainer.val_every == 0
                or e.epoch + 1 == c.trainer.epochs
                or out_of_time
            )
            improved = stop = False
            if validate:
                result = self.validate(overlays=c.validation.overlay_images)
                epoch_metrics.update(self.last_val)
                improved, stop = self._judge()
            e.epoch += 1
            e.step_in_epoch = 0
            self.tracker.log_metrics(epoch_metrics, e.global_step)
            self._save(best=improved)
            if validate and self.ctx.is_main:
                self._plots(result)
            self._log_epoch(epoch_metrics)
            epoch_times.append(time.perf_counter() - started)
            if out_of_time and e.epoch < c.trainer.epochs:
                log.info(
                    "stopping at step %d: another epoch would end past trainer.max_minutes=%g",
                    e.global_step,
                    c.trainer.max_minutes,
                )
                return True
            if stop:
                log.info(
                    "early stopping: %s did not improve for %d validations",
                    self.best_metric,
                    self.bad_rounds,
                )
                return True
        return False

    def _out_of_time(
        self, run_started: float, epoch_times: list[float], epoch_started: float
    ) -> bool:
        """Whether the epoch after this one would end past trainer.max_minutes.

        Judged from the longest epoch so far (validation included) and this one's training
        time; every rank computes it from its own clock, rank 0's verdict is everyone's.
        """
        budget = self.config.trainer.max_minutes
        if budget is None:
            return False
        this_epoch = time.perf_counter() - epoch_started
        expected = max([this_epoch, *epoch_times])
        late = time.perf_counter() - run_started + expected > 60 * budget
        return bool(dist.broadcast(late, self.ctx))

    def validate(self, overlays: int = 0) -> Validation:
        loader = val_loader(self.config, self.val_set, self.ctx)
        model = self.engine.model
        if self.config.task == "segmentation":
            result = self.task.evaluate(
                model,
                loader,
                self.config,
                self.ctx,
                self.criterion,
                overlays if self.ctx.is_main else 0,
            )
        else:
            result = self.task.evaluate(
                model, loader, self.config, self.ctx, overlays if self.ctx.is_main else 0
            )
        self.last_val = {f"val/{k}": float(v) for k, v in result.metrics.items()}
        for key in dict.fromkeys(self._curve_keys()):  # best_metric may be listed already
            if key in self.last_val and math.isfinite(self.last_val[key]):
                self.history.setdefault(key, []).append(
                    [self.engine.global_step, self.last_val[key]]
                )
        return result

    def _curve_keys(self) -> list[str]:
        if self.config.task == "segmentation":
            return [
                "val/loss",
                "val/dice_duct",
                "val/cldice_duct",
                "val/dice_lesion",
                self.best_metric,
            ]
        return ["val/cpm", "val/map@0.1", "val/auc", "val/mimic_fp_per_image", self.best_metric]

    def _judge(self) -> tuple[bool, bool]:
        """(improved, stop early) from the best metric; NaN never improves."""
        c = self.config.trainer
        value = self.last_val.get(self.best_metric)
        if value is None:
            raise ConfigError(
                f"trainer.best_metric {self.best_metric!r} is not a validation metric; "
                f"choose one of {sorted(self.last_val)}"
            )
        sign = 1 if c.mode == "max" else -1
        improved = math.isfinite(value) and (
            self.best_value is None or sign * (value - self.best_value) > c.early_stopping.min_delta
        )
        if improved:
            self.best_value, self.best_step, self.bad_rounds = value, self.engine.global_step, 0
        else:
            self.bad_rounds += 1
        patience = c.early_stopping.patience
        return improved, patience is not None and self.bad_rounds >= patience

    # -- per step ----------------------------------------------------------------------------
    def on_step(self, e: Engine) -> None:
        c = self.config.trainer
        if e.global_step % c.log_every == 0 or e.step_in_epoch == self.steps:
            stats = e.running()
            loss = dist.mean_across(e.window[-1][0] if e.window else math.nan, self.ctx)
            self.history.setdefault("train/loss", []).append([e.global_step, loss])
            self.tracker.log_metrics(
                {
                    "train/loss": loss,
                    "train/loss_running": stats["loss"],
                    "train/lr": e.lr,
                    "train/images_per_s": stats["images_per_s"],
                    "train/data_wait_fraction": stats["data_wait"],
                },
                e.global_step,
            )
        if c.checkpoint_every and e.global_step % c.checkpoint_every == 0:
            self._save(best=False)

    # -- files -------------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        return {
            "model": dist.unwrap(self.engine.model).state_dict(),
            **self.engine.state_dict(),
            "rng": rng_state(),
            "config": self.config.resolved(),
            "task": self.config.task,
            "steps_per_epoch": self.steps,
            "run_id": self.tracker.run_id,
            "tracking_uri": self.tracking_uri,
            "best": {"metric": self.best_metric, "value": self.best_value, "step": self.best_step},
            "bad_rounds": self.bad_rounds,
            "history": self.history,
            "last_val": self.last_val,
            "ductai_version": ductai.__version__,
        }

    def _save(self, best: bool) -> None:
        if not self.ctx.is_main:
            return
        # Metrics first: a kill between the two leaves steps in MLflow that a resume skips,
        # never steps that a resume would log twice.
        self.tracker.flush()
        payload = self._payload()
        save_checkpoint(self.out / LAST, payload)
        if best:
            save_checkpoint(self.out / BEST, payload)

    def _plots(self, result: Validation) -> None:
        from ductai.training.plots import plot_learning_curves

        folder = self.out / "plots"
        paths = result.plots(folder)
        paths.append(plot_learning_curves(self.history, folder / "learning_curves.png"))
        for path in paths:
            self.tracker.log_artifact(path, "plots")

    def _log_epoch(self, metrics: dict[str, float]) -> None:
        if not self.ctx.is_main:
            return
        shown = {k: v for k, v in metrics.items() if k in self._curve_keys() or k == "epoch"}
        text = "  ".join(f"{k}={v:.4g}" for k, v in shown.items())
        run = self.engine.running()
        log.info(
            "step %d  loss=%.4f  %.1f img/s  %s",
            self.engine.global_step,
            run["loss"],
            run["images_per_s"],
            text,
        )

    def _finish(self) -> None:
        if not self.ctx.is_main:
            return
        self.tracker.flush()
        best = self.out / BEST
        for path in (self.out / LAST, best):
            if path.exists():
                self.tracker.log_artifact(path, "checkpoints")
        if self.config.tracking.log_model:
            source = best if best.exists() else self.out / LAST
            self.tracker.log_model(source, self.config.tracking.register_model)
        if self.best_value is not None:
            self.tracker.set_tags(
                {
                    "best_metric": self.best_metric,
                    "best_value": f"{self.best_value:.6g}",
                    "best_step": str(self.best_step),
                }
            )
        self.tracker.end("FINISHED")
