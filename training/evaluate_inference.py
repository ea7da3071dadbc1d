"""`ductai evaluate --model BUNDLE`: score the whole inference pipeline on held-out views.

The views are a simulated set (`--simulation PRESET --n BREASTS --seed S`, written to
OUT/simulated and reused when it is already there with the same settings) or a datalist split.
`run_inference` analyses them exactly as `ductai infer` would (outputs in OUT/inference), and
`inference_scoring.score_inference` compares what it reported with the truth, on the original
DICOM grid. Results: OUT/metrics.json, OUT/metrics.md, OUT/froc.png and OUT/pr.png.

This module may import both training (the metrics) and inference; inference never imports it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from ductai.training.inference_scoring import (
    ViewTruth,
    image_key,
    score_inference,
    truth_from_datalist_entry,
)

log = logging.getLogger(__name__)

# Reported findings down to this fused score take part in the FROC curve.
SCORING_THRESHOLD = 0.05

__all__ = ["InferenceEvaluation", "evaluate_inference", "format_metrics"]

# (key, label, format) of the table; the JSON holds every metric.
TABLE: list[tuple[str, str, str]] = [
    ("n_views", "views scored", "{:.0f}"),
    ("n_failed_views", "views that failed (scored as empty)", "{:.0f}"),
    ("cpm", "FROC CPM (mean sens. at 1/8..8 FP/image)", "{:.3f}"),
    ("sens@1fp", "lesion sensitivity at 1 FP/image", "{:.3f}"),
    ("froc_sens@0.25", "lesion sensitivity at 1/4 FP/image", "{:.3f}"),
    ("auc", "image-level AUC (lesion present)", "{:.3f}"),
    ("ap@0.1_any", "AP at IoU 0.1, class-agnostic", "{:.3f}"),
    ("mimic_fp_per_image", "mimic false positives/image at the 1-FP point", "{:.3f}"),
    ("mimic_fp_per_image@0.5", "mimic false positives/image at score 0.5", "{:.3f}"),
    ("dice_duct", "duct Dice (original grid)", "{:.3f}"),
    ("cldice_duct", "duct clDice (original grid)", "{:.3f}"),
    ("localization_threshold", "score threshold of the lesions localized", "{:.3f}"),
    ("distance_error_mm_median", "distance-to-nipple error on the view, median (mm)", "{:.1f}"),
    ("distance_error_mm_mean", "distance-to-nipple error on the view, mean (mm)", "{:.1f}"),
    ("distance_3d_error_mm_mean", "same against the uncompressed 3D distance (mm)", "{:.1f}"),
    ("n_matched_lesion_views", "lesion views matched for distance", "{:.0f}"),
    ("clock_accuracy", "clock within 1 h (lesions in both views)", "{:.3f}"),
    ("clock_accuracy_given", "clock within 1 h, of those given a clock", "{:.3f}"),
    ("clock_off_axis_accuracy", "clock within 1 h, lesions >= 10 mm off the nipple axis", "{:.3f}"),
    ("n_clock_off_axis_lesions", "of which >= 10 mm off axis", "{:.0f}"),
    ("quadrant_accuracy", "quadrant correct (lesions in both views)", "{:.3f}"),
    ("depth_accuracy", "depth third correct (lesions in both views)", "{:.3f}"),
    ("n_clock_lesions", "lesions in both views", "{:.0f}"),
    ("seconds_per_view", "seconds per view, end to end", "{:.2f}"),
]


@dataclass
class InferenceEvaluation:
    name: str
    out_dir: Path
    metrics: dict[str, float]
    files: list[Path] = field(default_factory=list)

    def table(self) -> str:
        return format_metrics(self.metrics)


def _simulated_entries(out: Path, preset: str, n: int, seed: int, workers: int) -> list:
    """Views of a simulated held-out set, generated once per (preset, n, seed)."""
    from ductai.data.datalist import datalist_from_simulation
    from ductai.simulation.generate import generate_dataset, load_simulation_config

    config = load_simulation_config(preset, [])
    settings = out / "simulation.yaml"
    if settings.is_file():
        saved = yaml.safe_load(settings.read_text())
        same = (
            saved.get("seed") == seed
            and saved.get("n_breasts") == n
            and saved.get("config") == config.model_dump(mode="json")
            and len(list((out / "images").glob("*.dcm"))) == 2 * n
        )
        if same:
            log.info("reusing the simulated set in %s", out)
            return datalist_from_simulation(out)
    generate_dataset(out, n_breasts=n, seed=seed, config=config, workers=workers)
    return datalist_from_simulation(out)


def _datalist_entries(datalist: Path, split: str) -> list:
    from ductai.data.datalist import load_datalist, resolve_split

    try:
        split = resolve_split(split)
    except ValueError as e:
        raise ValueError(f"{datalist}: {e}") from None
    entries = load_datalist(datalist)[split]
    if not entries:
        raise ValueError(f"{datalist}: the {split!r} list is empty")
    return entries


def _predictions(run) -> dict[str, dict[str, Any]]:
    """What the pipeline delivered, read back from its files: the report and duct_mask.png."""
    out: dict[str, dict[str, Any]] = {}
    for view in run.views:
        mask_name = (view.report.get("outputs") or {}).get("duct_mask")
        mask_path = view.folder / mask_name if mask_name else None
        mask = (
            np.asarray(Image.open(mask_path)) > 0
            if mask_path is not None and mask_path.is_file()
            else None
        )
        out[image_key(view.path)] = {"lesions": view.report.get("lesions", []), "duct_mask": mask}
    return out


def evaluate_inference(
    model: str | Path | None,
    *,
    simulation: str | None = "hard",
    n: int = 50,
    seed: int = 777,
    datalist: str | Path | None = None,
    split: str = "test",
    out_dir: str | Path | None = None,
    device: str | None = None,
    tta: bool | str | None = None,
    workers: int = 1,
    predictor: Any | None = None,
    calibrate: bool = False,
) -> InferenceEvaluation:
    """Run and score the pipeline (module docstring); `predictor` skips loading `model`.

    Findings are reported down to ``SCORING_THRESHOLD`` so that the FROC curve is complete;
    localization is scored at the bundle's operating threshold (else this set's 1-FP point).
    ``calibrate``: write this set's 1-FP/image threshold into the bundle as its operating
    point (use a validation set, not the test set).
    """
    from ductai.inference import stages
    from ductai.inference.bundle import set_operating_point
    from ductai.inference.run import resolve_model, run_inference

    if datalist is not None:
        name = f"{Path(datalist).stem}-{split}"
    else:
        simulation = simulation or "hard"
        name = f"sim-{Path(simulation).stem}-n{n}-seed{seed}"
    out = Path(out_dir) if out_dir else Path("outputs") / "evaluation" / f"inference-{name}"
    out.mkdir(parents=True, exist_ok=True)
    if datalist is not None:
        entries = _datalist_entries(Path(datalist), split)
    else:
        entries = _simulated_entries(out / "simulated", simulation, n, seed, workers)
    truths: list[ViewTruth] = [truth_from_datalist_entry(e) for e in entries]
    if predictor is None:
        predictor = stages.load_predictor(
            resolve_model(model), device=device, tta=tta, score_threshold=SCORING_THRESHOLD
        )
    bundle = getattr(predictor, "bundle", None)  # test doubles may have none
    operating = None
    if bundle is not None and not calibrate:  # the one of the predictor's TTA mode
        operating = getattr(predictor, "operating_threshold", bundle.operating_threshold)
    # pair across views at the operating point, as a default run does (inference/localization/
    # study.py: pairing among every low-scoring candidate would cost true lesions their clock)
    run = run_inference(
        [e.image for e in entries],
        out / "inference",
        model=model,
        predictor=predictor,
        pair_threshold=operating,
    )
    predicted = _predictions(run)
    metrics, curves = score_inference(predicted, truths, localization_threshold=operating)
    metrics["n_failed_views"] = float(sum(t.key not in predicted for t in truths))
    metrics["seconds_per_view"] = run.seconds / max(len(run.views), 1)
    if calibrate:
        if bundle is None:
            raise ValueError("--calibrate needs a model bundle folder")
        folder = Path(bundle.source)
        threshold = metrics.get("threshold@1fp", math.nan)
        if not math.isfinite(threshold):
            raise ValueError(f"{name}: no finite 1-FP/image threshold to calibrate with")
        point = {
            "fp_per_image": 1.0,
            "sensitivity": round(metrics["sens@1fp"], 4),
            "set": name,
            "views": int(metrics["n_views"]),
        }
        set_operating_point(folder, threshold, point, tta=getattr(predictor, "tta", None))
        log.info("operating threshold %.4f written to %s", threshold, folder)
    files = _write(out, name, run.model, metrics, curves)
    return InferenceEvaluation(name=name, out_dir=out, metrics=metrics, files=files)


def _fmt(value: float, pattern: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else pattern.format(value)


def format_metrics(metrics: dict[str, float]) -> str:
    rows = [(label, _fmt(metrics.get(key, math.nan), fmt)) for key, label, fmt in TABLE]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def _markdown(name: str, model: str, metrics: dict[str, float]) -> str:
    lines = [
        f"# Inference evaluation: {name}",
        "",
        f"Model: {model}",
        "",
        "| metric | key | value |",
        "|---|---|---|",
    ]
    for key, label, fmt in TABLE:
        lines.append(f"| {label} | `{key}` | {_fmt(metrics.get(key, math.nan), fmt)} |")
    lines += ["", "All metrics: metrics.json. Definitions: training/inference_scoring.py.", ""]
    return "\n".join(lines)


def _write(
    out: Path, name: str, model: str, metrics: dict[str, float], curves: dict[str, Any]
) -> list[Path]:
    from ductai.training.plots import plot_froc, plot_pr

    def clean(v: float) -> float | None:  # JSON has no NaN
        return float(v) if math.isfinite(v) else None

    doc = {"name": name, "model": model, "metrics": {k: clean(v) for k, v in metrics.items()}}
    files = [out / "metrics.json", out / "metrics.md"]
    files[0].write_text(json.dumps(doc, indent=1) + "\n")
    files[1].write_text(_markdown(name, model, metrics))
    files.append(plot_froc(curves, out / "froc.png"))
    if curves.get("pr"):
        files.append(plot_pr(curves, out / "pr.png"))
    return files
