"""Every benchmark of ductai in one table: simulator, loader, training, inference, server, and
the default model's accuracy.

    .venv/bin/python benchmarks/all.py                  # about 8 min on 2 cores
    .venv/bin/python benchmarks/all.py --quick          # shorter runs, noisier figures
    .venv/bin/python benchmarks/all.py --only inference,serve --out benchmarks/RESULTS.md

Each benchmark runs as its own process (its own table goes to the log file next to --out,
or to stderr) and writes its key figures with --summary; this script adds the accuracy of
the shipped default model (models/default/evaluation/*.json, written by `ductai evaluate`,
or re-measured with --evaluate N) and prints one Markdown table with the date, the machine
and the command. Ratios are taken against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_MODEL = ROOT / "models" / "default"

# name -> (script, normal arguments, --quick arguments)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "simulator": ("bench_simulator.py", ["--n", "6"], ["--n", "2"]),
    "loader": (
        "bench_loader.py",
        ["--samples", "64", "--repeats", "3", "--workers", "2"],
        ["--samples", "32", "--repeats", "2", "--workers", "2", "--breasts", "2"],
    ),
    "training": (
        "bench_training.py",
        ["--steps", "8", "--naive-steps", "2"],
        ["--steps", "3", "--naive-steps", "1"],
    ),
    "inference": (
        "bench_inference.py",
        ["--bundle", str(DEFAULT_MODEL), "--repeats", "3"],
        ["--bundle", str(DEFAULT_MODEL), "--repeats", "1", "--setups", "ours-onnx,naive"],
    ),
    "serve": (
        "bench_serve.py",
        ["--seconds", "60", "--clients", "4"],
        ["--seconds", "20", "--clients", "2"],
    ),
}

# (metric key, figure, target) of the accuracy rows (issue 6).
ACCURACY = [
    ("cpm", "lesion FROC CPM", ">= 0.85"),
    ("sens@1fp", "lesion sensitivity at 1 FP/image", ">= 0.9"),
    ("auc", "image-level AUC", ">= 0.9"),
    ("mimic_fp_per_image", "mimics marked per image at 1 FP/image", "<= 0.1"),
    ("dice_duct", "duct Dice", ">= 0.8"),
    ("cldice_duct", "duct clDice", ">= 0.85"),
    ("distance_error_mm_mean", "distance-to-nipple error, mean (mm)", "<= 5"),
    ("clock_accuracy", "clock within 1 h (lesions in both views)", ">= 0.8"),
    ("seconds_per_view", "seconds per view in the evaluation", "<= 2"),
]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs{mem}, {platform.system()} {platform.release()}"


def commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def run_bench(name: str, quick: bool, log) -> list[dict]:
    script, normal, short = BENCHES[name]
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "summary.json"
        cmd = [sys.executable, str(HERE / script), *(short if quick else normal)]
        cmd += ["--summary", str(summary)]
        print(f"running {name}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
        log.write(f"\n### {name}\n$ {shlex.join(cmd)}\n")
        log.flush()
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        if done.returncode or not summary.is_file():
            return [
                {"area": name, "figure": "FAILED (see the log)", "value": float("nan"),
                 "unit": "", "compare": f"exit {done.returncode}"}
            ]  # fmt: skip
        return json.loads(summary.read_text())


def evaluate(n: int, log) -> None:
    """Re-score the default model; its metrics go to models/default/evaluation/<preset>.json."""
    for preset, seed in (("default", 778), ("hard", 777)):
        out = Path(tempfile.gettempdir()) / f"ductai-eval-{preset}"
        cmd = [
            str(Path(sys.executable).parent / "ductai"), "evaluate", "--model", str(DEFAULT_MODEL),
            "--simulation", preset, "--n", str(n), "--seed", str(seed), "--out", str(out),
        ]  # fmt: skip
        log.write(f"\n### accuracy {preset}\n$ {shlex.join(cmd)}\n")
        log.flush()
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, check=True)
        target = DEFAULT_MODEL / "evaluation" / f"{preset}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text((out / "metrics.json").read_text())


def accuracy_rows() -> list[dict]:
    rows = []
    for path in sorted((DEFAULT_MODEL / "evaluation").glob("*.json")):
        doc = json.loads(path.read_text())
        metrics = doc.get("metrics", doc)
        n = int(metrics.get("n_views", 0))
        area = f"default model, {path.stem} preset ({n} views)"
        for key, name, target in ACCURACY:
            if metrics.get(key) is not None:
                rows.append(
                    {"area": area, "figure": name, "value": metrics[key], "unit": "",
                     "compare": f"target {target}"}
                )  # fmt: skip
    return rows


def markdown(rows: list[dict], command: str) -> str:
    lines = [
        f"Measured {dt.date.today().isoformat()} on {machine()}, commit {commit()}.",
        f"Command: `{command}`",
        "",
        "| area | figure | value | compared with |",
        "|---|---|---|---|",
    ]
    for r in rows:
        value = r["value"]
        text = "n/a" if value is None or value != value else f"{value:.3g}"
        unit = f" {r['unit']}" if r.get("unit") else ""
        lines.append(f"| {r['area']} | {r['figure']} | {text}{unit} | {r.get('compare', '')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated benchmarks")
    parser.add_argument(
        "--evaluate", type=int, default=0, metavar="N",
        help="re-measure the default model's accuracy on N simulated breasts per preset",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    args = parser.parse_args()
    command = "python benchmarks/all.py " + shlex.join(sys.argv[1:])
    log_path = args.out.with_suffix(".log") if args.out else None
    log = open(log_path, "w") if log_path else sys.stderr  # noqa: SIM115
    try:
        rows: list[dict] = []
        for name in args.only.split(","):
            if name not in BENCHES:
                parser.error(f"unknown benchmark {name!r}; known: {', '.join(BENCHES)}")
            rows += run_bench(name, args.quick, log)
        if args.evaluate:
            evaluate(args.evaluate, log)
        rows += accuracy_rows()
    finally:
        if log_path:
            log.close()
    table = markdown(rows, command.strip())
    print(table)
    if args.out:
        args.out.write_text(table)
        print(f"written {args.out} (each benchmark's own tables: {log_path})")


if __name__ == "__main__":
    main()
