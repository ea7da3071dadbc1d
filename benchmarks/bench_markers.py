"""Burnt-in markers: what the "L MLO" letters do to the findings, with and without the breast gate.

    .venv/bin/python benchmarks/bench_markers.py [--model models/default]
        [--sets hard:10:910,default:10:911] [--out outputs/bench-markers]

Each set is simulated twice from the same seed, with the preset's markers and with
``marker_probability: 0``: markers come from their own random stream
(simulation/markers.py), so the two differ only by the marker pixels. Both go through the
whole pipeline and ``ductai evaluate``'s scorer, with the breast gate
(``PredictorOptions.breast_gate_mm``, the default) and without it. Prints a Markdown table:
findings reported per view at the model's operating threshold, FROC CPM, sensitivity at
1 FP/image, image AUC and duct Dice. Seeds are not the test seeds (777, 778).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from ductai.inference.predictor import Predictor
from ductai.simulation.config import PRESET_DIR
from ductai.training.evaluate_inference import SCORING_THRESHOLD, evaluate_inference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse_simulated_sets

GATES = {"on": 2.0, "off": None}


def marker_free_preset(preset: str, folder: Path) -> Path:
    """The preset with ``imaging.marker_probability: 0``, written to ``folder``."""
    config = yaml.safe_load((PRESET_DIR / f"{preset}.yaml").read_text())
    config.setdefault("imaging", {})["marker_probability"] = 0.0
    path = folder / f"{preset}-no-markers.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def findings_per_view(inference_dir: Path, threshold: float) -> float:
    """Findings a reading station would see: report lesions at the operating threshold."""
    reports = list(inference_dir.glob("*/report.json"))
    count = sum(
        sum(lesion["score"] >= threshold for lesion in json.loads(r.read_text())["lesions"])
        for r in reports
    )
    return count / max(len(reports), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--sets", default="hard:10:910,default:10:911", help="PRESET:N:SEED,...")
    parser.add_argument("--out", default="outputs/bench-markers")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    header = ["set", "views", "markers", "gate", "findings/view", "CPM", "sens@1FP", "AUC", "Dice"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for preset, n, seed in parse_simulated_sets(args.sets):
        root = Path(args.out) / f"{preset}-{seed}"
        variants = {"with": preset, "without": str(marker_free_preset(preset, root))}
        for markers, simulation in variants.items():
            simulated = root / f"simulated-{markers}"
            for gate, grow_mm in GATES.items():
                predictor = Predictor.from_path(
                    args.model, breast_gate_mm=grow_mm, score_threshold=SCORING_THRESHOLD
                )
                operating = predictor.bundle.operating_threshold or 0.5
                out = root / f"{markers}-markers-gate-{gate}"
                out.mkdir(parents=True, exist_ok=True)
                if not (out / "simulated").exists():
                    simulated.mkdir(parents=True, exist_ok=True)
                    (out / "simulated").symlink_to(simulated.resolve())
                m = evaluate_inference(
                    args.model,
                    simulation=simulation,
                    n=n,
                    seed=seed,
                    out_dir=out,
                    predictor=predictor,
                ).metrics
                row = [f"{preset} {seed}", f"{m['n_views']:.0f}", markers, gate]
                row += [f"{findings_per_view(out / 'inference', operating):.2f}"]
                row += [f"{m[k]:.3f}" for k in ("cpm", "sens@1fp", "auc", "dice_duct")]
                print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
