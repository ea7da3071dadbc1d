"""Training loader throughput (samples/s): simulator on the fly vs a cached datalist.

    .venv/bin/python benchmarks/bench_loader.py [--patch 256] [--spacing 0.3] [--samples 64]
        [--batch 8] [--repeats 3] [--workers 0 2] [--breasts 4] [--threads 1]
        [--crops 4]

For each source, task (segmentation, detection train transform) and worker count: a fresh
DataLoader per repeat, timed from its creation (worker start-up included) to the last
batch; median and p90 of samples/s over the repeats. Also the train transform alone per
sample (ms). The simulator is measured rendering one view per sample, and reusing each view
for ``--crops`` samples (``crops_per_view``). The datalist is simulated into a temporary
folder and its persistent cache filled before timing: the cached path (every epoch after
the first).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_summary_argument, figure, print_table, summarize, write_summary

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch
from torch.utils.data import DataLoader

from ductai.data.datalist import load_datalist
from ductai.data.datasets import DatalistDataset, simulated_dataset
from ductai.data.transforms import (
    AugmentConfig,
    build_train_transform,
    detection_collate,
)
from ductai.simulation.generate import generate_dataset

TASKS = ("segmentation", "detection")


def loader_rate(dataset, task: str, batch: int, workers: int, repeats: int) -> list[float]:
    collate = detection_collate if task == "detection" else None
    rates = []
    for _ in range(repeats):
        loader = DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=collate)
        # Worker start-up included: each epoch pays it (workers do not persist, see
        # ductai.data.datasets.SimulatedEpochs).
        start, count = time.perf_counter(), 0
        for item in loader:
            count += len(item["image"])
        rates.append(count / (time.perf_counter() - start))
    return rates


def transform_ms(dataset, transform, n: int = 40) -> float:
    samples = [dataset[i % len(dataset)] for i in range(min(n, 8))]
    start = time.perf_counter()
    for i in range(n):
        transform(samples[i % len(samples)])
    return 1000 * (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--spacing", type=float, default=0.3)
    parser.add_argument("--samples", type=int, default=64, help="samples per repeat")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--breasts", type=int, default=4, help="simulated breasts in the datalist")
    parser.add_argument("--crops", type=int, default=4, help="crops per simulated view (row 2)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads in the main process (workers always use 1)",
    )
    add_summary_argument(parser)
    args = parser.parse_args()
    # On a busy machine, torch's OpenMP threads spin against other processes: measured here,
    # torch.stack of a 8x2x256x256 batch took 96 ms with 2 threads under load, 0.08 ms with 1.
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = AugmentConfig(patch_size=args.patch)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(Path(tmp) / "sim", n_breasts=args.breasts, seed=0)
        entries = load_datalist(Path(tmp) / "sim" / "datalist.json")
        entries = [e for split in entries.values() for e in split]
        cache = Path(tmp) / "cache"
        start = time.perf_counter()
        for _ in DatalistDataset(entries, args.spacing, cache_dir=cache):
            pass
        fill = (time.perf_counter() - start) / len(entries)
        print(f"cache fill: {fill:.2f} s per image ({len(entries)} images, read + canonical)")
        for task in TASKS:
            transform = build_train_transform(task, cfg)
            repeat = -(-args.samples // len(entries))
            steps = args.samples // args.batch
            sources = {
                "simulator": simulated_dataset(
                    steps, args.batch, spacing_mm=args.spacing, transform=transform
                ),
                f"simulator, {args.crops} crops/view": simulated_dataset(
                    steps,
                    args.batch,
                    spacing_mm=args.spacing,
                    transform=transform,
                    crops_per_view=args.crops,
                ),
                "cached datalist": DatalistDataset(
                    (entries * repeat)[: args.samples],
                    args.spacing,
                    cache_dir=cache,
                    transform=transform,
                ),
            }
            raw_datalist = DatalistDataset(entries, args.spacing, cache_dir=cache)
            for name, dataset in sources.items():
                is_sim = name.startswith("simulator")
                ms = transform_ms(dataset.simulator if is_sim else raw_datalist, transform)
                for workers in args.workers:
                    stats = summarize(loader_rate(dataset, task, args.batch, workers, args.repeats))
                    rows.append([name, task, workers, stats["median"], stats["p90"], ms])
    print_table(
        f"Loader throughput, {args.patch}x{args.patch} patches at {args.spacing} mm, "
        f"batch {args.batch}, {os.cpu_count()} CPUs, {args.threads} torch thread(s)",
        ["source", "task", "workers", "samples/s (median)", "p90", "transform ms/sample"],
        rows,
    )
    most = max(args.workers)
    write_summary(
        args.summary,
        [
            figure("loader", f"{r[0]}, {r[1]}, {r[2]} workers", r[3], "samples/s")
            for r in rows
            if r[2] == most
        ],
    )


if __name__ == "__main__":
    main()
