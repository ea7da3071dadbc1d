"""Evaluate a checkpoint on a datalist split or on simulated views; results go to its run.

``ductai evaluate --checkpoint PATH [--datalist FILE --split test | --simulation PRESET]``
(neither: simulated views of the training preset mix, each preset in proportion): the
network and settings come from the checkpoint's resolved config; metrics are logged to the
checkpoint's MLflow run as ``eval/<name>/<metric>`` at the checkpoint's step, and the plots
(overlay grid, FROC and PR) as artifacts under ``evaluation/<name>/``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ductai.models.checkpoint import load_checkpoint
from ductai.models.registry import create_model
from ductai.training import detection_task, segmentation_task
from ductai.training import distributed as dist
from ductai.training.config import TrainConfig, config_from_dict
from ductai.training.loaders import val_loader
from ductai.training.tracking import RunTracker, resolve_tracking_uri

log = logging.getLogger(__name__)


def evaluation_dataset(
    config: TrainConfig,
    datalist: Path | None,
    split: str,
    simulation: str | None,
    n: int,
    seed: int | None,
):
    from ductai.data.transforms import build_val_transform

    tf = build_val_transform(config.task, config.augment)
    if datalist is not None:
        from ductai.data.datasets import datalist_dataset

        ds = datalist_dataset(datalist, split, config.data.spacing_mm, transform=tf)
        if len(ds) == 0:
            raise ValueError(f"{datalist}: the {split!r} list is empty")
        return ds, f"{Path(datalist).stem}-{split}"
    from ductai.data.datasets import SimulatedMix

    # One preset, or the training mix (each preset in proportion, SimulatedMix).
    presets = {simulation: 1.0} if simulation else config.data.simulation.presets
    # Default: a seed neither training nor validation used.
    seed = seed if seed is not None else config.trainer.seed + 104729
    ds = SimulatedMix(presets, config.data.spacing_mm, n, seed, tf)
    return ds, f"sim-{'_'.join(Path(p).stem for p in sorted(presets))}-seed{seed}"


def evaluate_checkpoint(
    checkpoint: str | Path,
    datalist: str | Path | None = None,
    split: str = "test",
    simulation: str | None = None,
    n: int = 16,
    seed: int | None = None,
    output_dir: str | Path | None = None,
    log_to_run: bool = True,
) -> dict[str, Any]:
    """Metrics of ``checkpoint`` (a dict with ``eval/<name>/...`` keys); logged to its run."""
    payload = load_checkpoint(checkpoint)
    config = config_from_dict(payload["config"], source=str(checkpoint))
    ctx = dist.setup(config.trainer.device)
    model = create_model(config.model.name, **config.model.kwargs)
    model.load_state_dict(payload["model"])
    model.to(ctx.device).eval()
    dataset, name = evaluation_dataset(
        config, Path(datalist) if datalist else None, split, simulation, n, seed
    )
    loader = val_loader(config, dataset, ctx)
    overlays = config.validation.overlay_images
    if config.task == "segmentation":
        result = segmentation_task.evaluate(model, loader, config, ctx, overlays=overlays)
    else:
        result = detection_task.evaluate(model, loader, config, ctx, overlays=overlays)
    metrics = {f"eval/{name}/{k}": float(v) for k, v in result.metrics.items()}
    out = Path(output_dir) if output_dir else Path(checkpoint).parent / "evaluation" / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plots = result.plots(out)
    run_id = payload.get("run_id")
    if log_to_run and ctx.is_main and run_id:
        uri = payload.get("tracking_uri") or resolve_tracking_uri(
            config.tracking.tracking_uri, config.output_dir
        )
        tracker = RunTracker(uri, config.tracking.experiment, None)
        tracker.run_id = run_id
        tracker.log_metrics(metrics, int(payload["global_step"]), flush=True)
        for path in [out / "metrics.json", *plots]:
            tracker.log_artifact(path, f"evaluation/{name}")
        log.info("logged %d metrics to MLflow run %s (%s)", len(metrics), run_id, uri)
    dist.teardown(ctx)
    return metrics
