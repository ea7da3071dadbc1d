"""Where findings come from: the lesion channel's components against the detector's fused boxes.

    .venv/bin/python benchmarks/bench_lesion_source.py [--model models/default]
        [--sets hard:12:900,default:20:901] [--out outputs/bench-lesion-source] [--tta]

Both rules run on the same views with the same nets (``PredictorOptions.lesion_source``,
docs/inference-design.md), through the whole pipeline and ``ductai evaluate``'s scorer; the
simulated sets are generated once per (preset, breasts, seed) under ``--out`` and reused.
The defaults are the selection sets the rule was chosen on, never the test seeds (777, 778).
Prints a Markdown table: FROC CPM, sensitivity at 1 FP/image, image AUC, mimic false
positives at the 1-FP point, and sensitivity per lesion class.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ductai.data.labels import FINDINGS
from ductai.inference.predictor import Predictor
from ductai.training.evaluate_inference import SCORING_THRESHOLD, evaluate_inference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse_simulated_sets

SOURCES = ("detector", "segmentation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--sets", default="hard:12:900,default:20:901", help="PRESET:N:SEED,...")
    parser.add_argument("--out", default="outputs/bench-lesion-source")
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    header = ["set", "views", "findings from", "CPM", "sens@1FP", "AUC", "mimic FP/img"]
    header += [f"sens {c}" for c in FINDINGS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for preset, n, seed in parse_simulated_sets(args.sets):
        for source in SOURCES:
            predictor = Predictor.from_path(
                args.model, lesion_source=source, tta=args.tta, score_threshold=SCORING_THRESHOLD
            )
            out = Path(args.out) / f"{preset}-{seed}" / source
            simulated = Path(args.out) / f"{preset}-{seed}" / "simulated"
            out.mkdir(parents=True, exist_ok=True)
            if not (out / "simulated").exists():
                simulated.mkdir(parents=True, exist_ok=True)
                (out / "simulated").symlink_to(simulated.resolve())
            m = evaluate_inference(
                args.model, simulation=preset, n=n, seed=seed, out_dir=out, predictor=predictor
            ).metrics
            row = [f"{preset} {seed}", f"{m['n_views']:.0f}", source]
            row += [f"{m[k]:.3f}" for k in ("cpm", "sens@1fp", "auc")]
            row += [f"{m['mimic_fp_per_image']:.2f}"]
            row += [f"{m.get(f'sens@1fp_{c}', float('nan')):.2f}" for c in FINDINGS]
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
