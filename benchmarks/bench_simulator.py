"""Simulator speed on ONE core: seconds per full-resolution view and per training-size image.

    .venv/bin/python benchmarks/bench_simulator.py [--n 8] [--preset default] [--spacing 0.3]

Prints median and p90 over N breasts (two views each) for each stage.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    add_summary_argument,
    figure,
    pin_single_core,
    print_table,
    summarize,
    timed,
    write_summary,
)

pin_single_core()  # before numpy is imported by ductai

import numpy as np  # noqa: E402

from ductai.simulation.anatomy import build_scene  # noqa: E402
from ductai.simulation.config import load_simulation_config  # noqa: E402
from ductai.simulation.dicom_writer import write_mg_dicom  # noqa: E402
from ductai.simulation.identity import study_identities  # noqa: E402
from ductai.simulation.render import render_view  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="breasts (two views each)")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--spacing", type=float, default=0.3, help="training spacing in mm")
    parser.add_argument("--seed", type=int, default=123)
    add_summary_argument(parser)
    args = parser.parse_args()

    config = load_simulation_config(args.preset)
    stages: dict[str, list[float]] = {k: [] for k in ("scene", "full", "write", "train")}
    sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.n):
            rng = np.random.default_rng([args.seed, index])
            laterality = "LR"[index % 2]
            t, scene = timed(build_scene, config.anatomy, rng, laterality)
            stages["scene"].append(t)
            for view in ("CC", "MLO"):
                t, rendered = timed(render_view, scene, view, config.imaging, rng)
                stages["full"].append(t)
                sizes.append(rendered.pixels.shape)
                ident = study_identities(args.seed, index).for_view(laterality, view)
                t, _ = timed(write_mg_dicom, Path(tmp) / f"{index}{view}.dcm", rendered, ident)
                stages["write"].append(t)
                t, _ = timed(render_view, scene, view, config.imaging, rng, spacing_mm=args.spacing)
                stages["train"].append(t)
    labels = {
        "scene": "3D scene (breast, ducts, findings)",
        "full": "render one full-resolution view",
        "write": "write one DICOM",
        "train": f"render one view at {args.spacing} mm",
    }
    rows = [[labels[k], *summarize(v).values()] for k, v in stages.items()]
    per_view = [
        s / 2 + f + w
        for s, f, w in zip(np.repeat(stages["scene"], 2), stages["full"], stages["write"])
    ]
    rows.append(["full-resolution view end to end", *summarize(per_view).values()])
    mp = np.median([h * w for h, w in sizes]) / 1e6
    print_table(
        f"Simulator, one core, preset {args.preset!r}, median view {mp:.1f} MP",
        ["stage", "median s", "p90 s", "n"],
        rows,
    )
    area = f"simulator ({args.preset}, 1 core)"
    write_summary(
        args.summary,
        [
            figure(area, "full-resolution view, end to end", summarize(per_view)["median"], "s",
                   f"{mp:.1f} MP median view"),
            figure(area, f"view at {args.spacing} mm (training)",
                   summarize(stages["train"])["median"], "s"),
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
