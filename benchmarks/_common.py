"""Small helpers shared by the benchmark scripts: pinning to one core, timing, tables."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable


def pin_single_core() -> None:
    """Measure per-core speed: one BLAS/OpenMP thread and, where possible, one CPU."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[0]})


def timed(func: Callable, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return time.perf_counter() - start, result


def summarize(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"median": statistics.median(ordered), "p90": p90, "n": len(ordered)}


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    cells = [header] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def add_summary_argument(parser) -> None:
    parser.add_argument(
        "--summary", help="also write the key figures as JSON here (benchmarks/all.py reads it)"
    )


def write_summary(path: str | None, rows: list[dict]) -> None:
    """Key figures for the gathered table: dicts with area, figure, value, unit, compare."""
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)


def figure(area: str, name: str, value: float, unit: str, compare: str = "") -> dict:
    return {"area": area, "figure": name, "value": value, "unit": unit, "compare": compare}


def parse_simulated_sets(text: str) -> list[tuple[str, int, int]]:
    """``PRESET:BREASTS:SEED,...`` -> [(preset, breasts, seed)]."""
    sets = []
    for item in text.split(","):
        preset, n, seed = item.split(":")
        sets.append((preset, int(n), int(seed)))
    return sets


def reports_by_image(folder) -> dict[str, dict]:
    """The view reports a ``ductai evaluate --out FOLDER`` run left, keyed by ``image_key`` of
    their source image (as the scorer looks predictions up)."""
    from pathlib import Path

    from ductai.training.inference_scoring import image_key

    reports = {}
    for path in (Path(folder) / "inference").glob("*/report.json"):
        report = json.loads(path.read_text())
        reports[image_key(report["image"]["source_path"])] = report
    return reports
