"""Training speed of the small configs on this CPU, and of the naive detector, in one run.

    .venv/bin/python benchmarks/bench_training.py [--steps 6] [--naive-steps 2] [--workers N]

For each config in configs/{segmentation,detection}/small_cpu.yaml: seconds per training
step (forward, loss, backward, optimizer; batches already in memory) and images/s, the
loader's images/s with the config's workers (simulator + crop + augmentation), and their
ratio (above 1: the loader keeps up). Then the same step for the naive detection setup
(``ductai.models.detection.naive_detector``: ResNet-50-style bottlenecks, FPN from stride 4
plus a pooled level, 256-channel heads) at the same patch and batch, and its slowdown.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from _common import add_summary_argument, figure, print_table, summarize, write_summary

from ductai.models.registry import create_model
from ductai.training import detection_task, segmentation_task
from ductai.training.config import TrainConfig, load_train_config
from ductai.training.distributed import DistContext
from ductai.training.engine import Engine
from ductai.training.loaders import StepSampler, build_datasets, train_loader
from ductai.training.trainer import build_optimizer, build_scheduler, quiet_root_logger

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "configs/segmentation/small_cpu.yaml", ROOT / "configs/detection/small_cpu.yaml"]


def loader_batches(config: TrainConfig, n: int) -> tuple[list[dict], float]:
    """``n`` batches from the config's training loader, and the loader's images/s."""
    ctx = DistContext()
    train_set, _ = build_datasets(config)
    shuffle = not hasattr(train_set, "set_epoch")
    sampler = StepSampler(len(train_set), config.data.batch_size, n + 1, 0, shuffle=shuffle)
    loader = iter(train_loader(config, train_set, sampler, ctx, epoch=0))
    batches = [next(loader)]  # workers start and the first batch pays the start-up
    start = time.perf_counter()
    batches += [next(loader) for _ in range(n)]
    seconds = time.perf_counter() - start
    return batches, n * config.data.batch_size / seconds


def step_times(config: TrainConfig, batches: list[dict], warmup: int) -> tuple[list[float], int]:
    """Seconds of each training step on the given batches (after ``warmup`` steps)."""
    ctx = DistContext()
    with quiet_root_logger():
        model = create_model(config.model.name, **config.model.kwargs)
    optimizer = build_optimizer(model, config)
    engine = Engine(model, optimizer, build_scheduler(optimizer, config, 1000), config, ctx)
    if config.task == "segmentation":
        criterion = segmentation_task.build_criterion(config)
        segmentation_task.train_one_epoch(engine, criterion, batches, len(batches))
    else:
        detection_task.train_one_epoch(engine, config, batches, len(batches))
    seconds = [w[2] for w in engine.window[warmup:]]
    return seconds, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per small config")
    parser.add_argument("--naive-steps", type=int, default=2, help="timed naive-detector steps")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None, help="override data.num_workers")
    add_summary_argument(parser)
    args = parser.parse_args()
    common = ["trainer.progress=false"]
    if args.workers is not None:
        common.append(f"data.num_workers={args.workers}")

    rows, small_det = [], None
    for path in CONFIGS:
        config = load_train_config(path, common)
        batches, loader_ips = loader_batches(config, args.warmup + args.steps)
        seconds, params = step_times(config, batches, args.warmup)
        s = summarize(seconds)
        step_ips = config.data.batch_size / s["median"]
        name = f"{config.task}/{path.name}"
        rows.append(_row(name, config, params, s, step_ips, loader_ips))
        if config.task == "detection":
            small_det = (config, batches, s["median"])

    config, batches, small_median = small_det
    naive = load_train_config(
        CONFIGS[1], [*common, "model.name=retinanet_naive", "model.kwargs={}"]
    )
    seconds, params = step_times(naive, batches[: args.warmup + args.naive_steps], args.warmup)
    s = summarize(seconds)
    rows.append(
        _row(
            "detection/naive (same data)",
            naive,
            params,
            s,
            naive.data.batch_size / s["median"],
            None,
        )
    )
    threads = torch.get_num_threads()
    print_table(
        f"Training speed on this CPU ({threads} torch threads; patch and batch of each config)",
        [
            "config",
            "model",
            "params (M)",
            "patch",
            "batch",
            "s/step",
            "p90",
            "img/s step",
            "img/s loader",
            "loader/step",
        ],
        rows,
    )
    ratio = s["median"] / small_median
    print(f"\nnaive / small detector seconds per step: {ratio:.1f}x")
    figures = [
        figure("training (2 cores)", f"{r[0]} step", r[5], "s", f"{r[7]:.0f} img/s")
        for r in rows[:-1]
    ]
    figures.append(
        figure("training (2 cores)", "naive detector step", s["median"], "s",
               f"{ratio:.0f}x the small detector's")
    )  # fmt: skip
    write_summary(args.summary, figures)


def _row(name, config, params, s, step_ips, loader_ips) -> list:
    patch = "x".join(str(v) for v in config.augment.patch_size)
    return [
        name, config.model.name, params / 1e6, patch, config.data.batch_size, s["median"],
        s["p90"], step_ips,
        loader_ips if loader_ips is not None else "-",
        loader_ips / step_ips if loader_ips is not None else "-",
    ]  # fmt: skip


if __name__ == "__main__":
    main()
