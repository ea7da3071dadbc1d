"""Inference seconds and memory per view: ductai's Predictor against a naive baseline, one run.

    .venv/bin/python benchmarks/bench_inference.py [--bundle PATH] [--repeats 3] [--threads 2]
        [--setups ours-onnx,ours-eager,naive] [--tta]

The view is a simulated full-field galactogram (24 x 30 cm detector, 0.085 mm pitch:
about 3529 x 2824 px, 20 MB of 16-bit pixels) read from DICOM every repeat. Each setup runs in
its own process, so its peak memory (``resource.getrusage`` maxrss, the whole process: torch,
weights, activations) is its own; ``tracemalloc`` adds the peak of Python/numpy allocations
during one view. Seconds are the median over ``--repeats`` after one warm-up view (the
naive setup, minutes a view, runs once by default: ``--naive-repeats``).

Setups:
* ``ours-onnx`` / ``ours-eager``: ``Predictor`` (canonical 0.3 mm, crop to the breast, small
  U-Net by sliding window on ONNX Runtime or eager PyTorch, small RetinaNet on the crop);
* ``naive``: what a first MONAI pipeline does: the same segmentation net by sliding window
  over the whole image at full resolution (the DICOM grid, no resampling, no crop, eager),
  and the stock RetinaNet setup (``naive_detector``: ResNet-50 bottlenecks, FPN from stride 4,
  256-channel heads) on the whole canonical image.

Without ``--bundle`` the nets are the small_cpu configs' architectures with untrained weights:
speed depends on the architecture, not on the weights (post-processing sees fewer boxes).

Extending: ``EXTRA_STAGES`` maps a stage name to ``fn(prediction, out_dir)``; each runs after
``predict`` for the ``ours-*`` setups and is timed as its own stage (the writers plug in here).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from _common import add_summary_argument, figure, print_table, write_summary

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["read", "canonical", "crop", "segmentation", "detection", "postprocess"]
# name -> fn(ViewPrediction, out_dir): timed after predict. Localization and every writer, as
# `ductai infer` runs them, so the total is DICOM read to all outputs written.
from _end_to_end import end_to_end_stages  # noqa: E402

EXTRA_STAGES: dict[str, Callable] = end_to_end_stages()


# ---- inputs --------------------------------------------------------------------------------
def make_view(folder: Path, seed: int = 5) -> Path:
    """One simulated full-field CC view on a 0.085 mm, 24 x 30 cm detector."""
    from ductai.simulation.generate import generate_dataset, load_simulation_config

    config = load_simulation_config("default")
    config.imaging.vendors = [v for v in config.imaging.vendors if v.name == "siemens_like"]
    config.imaging.field_sizes_mm = [[240.0, 300.0]]
    summary = generate_dataset(folder, n_breasts=1, seed=seed, config=config)
    return next(p for p in sorted(summary.images) if "CC" in p.name)


def make_bundle(folder: Path) -> Path:
    """The small_cpu configs' nets, untrained, as a bundle."""
    from ductai.inference.bundle import write_bundle
    from ductai.models.checkpoint import save_checkpoint
    from ductai.models.registry import create_model
    from ductai.training.config import load_train_config

    torch.manual_seed(0)  # the same weights every run: the ONNX export cache (by sha256) hits
    paths = []
    for task in ("segmentation", "detection"):
        config = load_train_config(ROOT / f"configs/{task}/small_cpu.yaml")
        model = create_model(config.model.name, **config.model.kwargs)
        payload = {"model": model.state_dict(), "config": config.resolved(), "task": task}
        paths.append(save_checkpoint(folder / f"{task}.pt", payload))
    return write_bundle(folder / "bundle", *paths, name="small_cpu-untrained", version="bench")


# ---- setups (each in its own process) ------------------------------------------------------
def run_ours(view: Path, bundle: Path, args, backend: str) -> dict:
    from ductai.inference.predictor import Predictor

    out_dir = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    predictor = Predictor.from_path(
        bundle, backend=backend, num_threads=args.threads, device="cpu", tta=args.tta
    )
    rss_loaded = _maxrss_mb()

    def one() -> dict[str, float]:
        start = time.perf_counter()
        pred = predictor.predict(view)
        timings = {k: pred.timings.get(k, 0.0) for k in STAGES}
        for name, fn in EXTRA_STAGES.items():
            t = time.perf_counter()
            fn(pred, out_dir)
            timings[name] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - start
        timings["n_detections"] = len(pred.detections)
        timings["crop_fraction"] = _crop_fraction(pred)
        return timings

    return _measure(one, args.repeats, rss_loaded, {"backend": predictor.backend})


def run_naive(view: Path, bundle: Path, args) -> dict:
    from monai.inferers import SlidingWindowInferer

    from ductai.data.canonical import to_canonical
    from ductai.data.dicom_reader import read_galactogram
    from ductai.inference.bundle import load_bundle
    from ductai.models.detection import naive_detector
    from ductai.models.registry import create_model

    torch.set_num_threads(args.threads)
    b = load_bundle(bundle)
    seg_cfg = b.config("segmentation")
    seg = create_model(seg_cfg["model"]["name"], **seg_cfg["model"]["kwargs"]).eval()
    seg.load_state_dict(b.checkpoints["segmentation"]["model"])
    v = seg_cfg["validation"]
    inferer = SlidingWindowInferer(
        roi_size=v["roi_size"],
        sw_batch_size=v["sw_batch_size"],
        overlap=v["overlap"],
        mode="gaussian",
    )
    det = naive_detector(spacing_mm=b.spacing_mm).eval()
    rss_loaded = _maxrss_mb()

    def one() -> dict[str, float]:
        t: dict[str, float] = {}
        start = time.perf_counter()
        image = read_galactogram(view)
        t["read"] = time.perf_counter() - start
        mark = time.perf_counter()
        full = torch.from_numpy(image.pixels)[None, None]
        canonical, _ = to_canonical(image, b.spacing_mm)
        t["canonical"] = time.perf_counter() - mark
        with torch.inference_mode():
            mark = time.perf_counter()
            probs = torch.sigmoid(inferer(full, seg))
            t["segmentation"] = time.perf_counter() - mark
            mark = time.perf_counter()
            (found,) = det(torch.from_numpy(canonical)[None, None])
            t["detection"] = time.perf_counter() - mark
        del probs, found
        t["crop"] = t["postprocess"] = 0.0
        t["total"] = time.perf_counter() - start
        return t

    return _measure(one, args.repeats, rss_loaded, {"backend": "eager, full resolution"})


def _measure(one: Callable[[], dict], repeats: int, rss_loaded: float, info: dict) -> dict:
    """Median seconds over ``repeats``; the last run also traces Python/numpy allocations.

    A warm-up view first (lazy initialisation, ORT session, allocator) when ``repeats`` > 1;
    the naive setup takes minutes a view and runs once, cold.
    """
    if repeats > 1:
        one()
    runs = [one() for _ in range(repeats - 1)]
    tracemalloc.start()
    runs.append(one())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    keys = runs[0].keys()
    return {
        **info,
        "seconds": {k: statistics.median(r[k] for r in runs) for k in keys},
        "all_totals": [r["total"] for r in runs],
        "maxrss_mb": _maxrss_mb(),
        "maxrss_loaded_mb": rss_loaded,
        "tracemalloc_peak_mb": peak / 2**20,
    }


def _crop_fraction(pred) -> float:
    (r0, r1), (c0, c1) = pred.model["crop"]["rows"], pred.model["crop"]["cols"]
    h, w = pred.geometry.canonical_shape
    return (r1 - r0) * (c1 - c0) / (h * w)


def _maxrss_mb() -> float:
    # Linux reports kilobytes (macOS bytes; this benchmark targets Linux).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- driver --------------------------------------------------------------------------------
def child(args) -> None:
    view, bundle = Path(args.view), Path(args.bundle)
    if args.setup == "naive":
        result = run_naive(view, bundle, args)
    else:
        result = run_ours(view, bundle, args, backend=args.setup.removeprefix("ours-"))
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="a model bundle (default: untrained small_cpu nets)")
    parser.add_argument("--view", help="a DICOM view (default: a simulated full-field CC)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tta", action="store_true", help="flip TTA in the ours-* setups")
    parser.add_argument("--setups", default="ours-onnx,ours-eager,naive")
    parser.add_argument("--setup", help=argparse.SUPPRESS)  # child process mode
    add_summary_argument(parser)
    args = parser.parse_args()
    if args.setup:
        child(args)
        return

    work = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    view = Path(args.view) if args.view else make_view(work / "sim")
    bundle = Path(args.bundle) if args.bundle else make_bundle(work / "models")
    from ductai.data.dicom_reader import read_galactogram

    image = read_galactogram(view)
    print(
        f"view {view.name}: {image.rows} x {image.columns} px at "
        f"{image.pixel_spacing_mm[0]:.4f} mm; bundle {bundle}; {args.threads} threads"
    )
    if "ours-onnx" in args.setups:
        # Export once here (cached by the weights' hash): a one-off start-up cost that would
        # otherwise count in the child's peak memory.
        from ductai.inference.predictor import Predictor

        Predictor.from_path(bundle, backend="onnx", device="cpu")
    results = {}
    for setup in args.setups.split(","):
        repeats = args.naive_repeats if setup == "naive" else args.repeats
        cmd = [
            sys.executable, __file__, "--setup", setup, "--view", str(view),
            "--bundle", str(bundle), "--repeats", str(repeats), "--threads", str(args.threads),
        ]  # fmt: skip
        if args.tta:
            cmd.append("--tta")
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode or not line:
            print(f"{setup} failed:\n{done.stderr[-3000:]}")
            continue
        results[setup] = json.loads(line[-1][len("RESULT ") :])

    stages = [*STAGES, *EXTRA_STAGES, "total"]
    rows = [
        [name, r["backend"], *(r["seconds"].get(s, 0.0) for s in stages), r["maxrss_mb"],
         r["tracemalloc_peak_mb"]]
        for name, r in results.items()
    ]  # fmt: skip
    print_table(
        "Seconds per view (median) and peak memory (MB)",
        ["setup", "backend", *stages, "maxrss", "tracemalloc"],
        rows,
    )
    naive = results.get("naive")
    for name, r in results.items():
        if name != "naive" and naive:
            ratio = naive["seconds"]["total"] / r["seconds"]["total"]
            print(f"{name}: {ratio:.1f}x faster than naive end to end")
    if "ours-onnx" in results and "ours-eager" in results:
        e, o = results["ours-eager"]["seconds"], results["ours-onnx"]["seconds"]
        print(f"segmentation eager / ONNX Runtime: {e['segmentation'] / o['segmentation']:.2f}x")
    print("\nJSON " + json.dumps(results))
    figures = []
    area = f"inference ({args.threads} threads)"
    for name, r in results.items():
        compare = ""
        if name != "naive" and naive:
            compare = f"{naive['seconds']['total'] / r['seconds']['total']:.1f}x faster than naive"
        figures += [
            figure(
                area, f"{name}: seconds per full-field view", r["seconds"]["total"], "s", compare
            ),
            figure(area, f"{name}: peak memory", r["maxrss_mb"], "MB"),
        ]
    write_summary(args.summary, figures)


if __name__ == "__main__":
    main()
