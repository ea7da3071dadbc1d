"""The ``ductai`` command: thin entry points, the work lives in the packages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ductai import __version__
from ductai.config import ConfigError
from ductai.logging import setup_logging


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="write simulated galactograms (DICOM + ground truth + datalist)",
        description="Simulate N breasts, each imaged in CC and ML/MLO views, as DICOM with exact truth.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--n", type=int, default=10, help="number of breasts (2 views each)")
    p.add_argument("--seed", type=int, default=0, help="seed; the same seed gives the same files")
    p.add_argument(
        "--preset",
        default="default",
        help="simulation preset: a name under configs/simulation/ (default, hard) or a YAML path",
    )
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    p.set_defaults(func=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    from ductai.simulation.generate import generate_dataset, load_simulation_config

    config = load_simulation_config(args.preset, args.overrides)
    summary = generate_dataset(
        args.out, n_breasts=args.n, seed=args.seed, config=config, workers=args.workers
    )
    print(summary.describe())
    return 0


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="print what ductai understands of each image (size, spacing, view, problems)",
    )
    p.add_argument("paths", nargs="+", type=Path, help="DICOM/PNG/TIFF files or folders")
    p.add_argument(
        "--pixel-spacing",
        type=float,
        default=None,
        help="pixel spacing in mm for files that carry none (PNG/TIFF, anonymised DICOM)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run_inspect)


def _run_inspect(args: argparse.Namespace) -> int:
    from ductai.data.inspect import format_inspection, inspect_paths

    results = inspect_paths(args.paths, pixel_spacing=args.pixel_spacing)
    print(format_inspection(results, as_json=args.json))
    return 1 if any(r.error for r in results) else 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job on the embedded default: simulate a small study set and analyse it",
    )
    p.add_argument("--out", type=Path, default=Path("demo"), help="output folder")
    p.add_argument("--n", type=int, default=3, help="number of simulated breasts")
    p.add_argument("--seed", type=int, default=2026)
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from ductai.simulation.generate import generate_dataset, load_simulation_config

    config = load_simulation_config("default", [])
    summary = generate_dataset(
        args.out / "studies", n_breasts=args.n, seed=args.seed, config=config
    )
    print(summary.describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ductai", description="Deep learning for galactography (ductography)."
    )
    parser.add_argument("--version", action="version", version=f"ductai {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_simulate(sub)
    _add_inspect(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        # Known user errors: one clear line, no traceback.
        print(f"ductai {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
