"""The ``ductai`` command: thin entry points, the work lives in the packages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ductai import __version__
from ductai.config import ConfigError
from ductai.logging import setup_logging

TTA_CHOICES = ("none", "segmentation", "all")  # inference.bundle.TTA_MODES, without its imports


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
        description="Simulate N breasts (CC + ML/MLO each) into OUT/studies, then run "
        "`ductai infer` on them with the default model (models/default/) into OUT/results.",
    )
    p.add_argument("--out", type=Path, default=Path("demo"), help="output folder")
    p.add_argument("--n", type=int, default=3, help="number of simulated breasts")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--model", default=None, help="model instead of the default bundle")
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from ductai.inference.run import ModelNotFoundError, resolve_model, run_inference
    from ductai.simulation.generate import generate_dataset, load_simulation_config

    config = load_simulation_config("default", [])
    summary = generate_dataset(
        args.out / "studies", n_breasts=args.n, seed=args.seed, config=config
    )
    print(summary.describe())
    try:
        model = resolve_model(args.model)
    except ModelNotFoundError as exc:
        # The simulation part stands on its own: explain, and still succeed.
        print(f"\nNo analysis: {exc}")
        return 0
    print(f"\nAnalysing {summary.out_dir / 'images'} with {model} ...")
    run = run_inference(
        [summary.out_dir / "images"], args.out / "results", model=model, device=args.device
    )
    print(run.summary())
    return 0


def _add_infer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "infer",
        help="analyse galactograms: duct masks, lesions, heatmaps, surgical localization",
        description="Analyse DICOM galactograms (files or folders, recursive). Views of one "
        "study and breast are grouped; results go to OUT/<SOPInstanceUID>/ per view and "
        "OUT/study_<StudyUID>_<L|R>/ per breast; unreadable files are listed in "
        "OUT/errors.json. Exit status 0: all analysed, 1: some files failed.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="DICOM files/folders")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--model",
        default=None,
        help="bundle folder, checkpoint or MLflow URI (runs:/..., models:/...); "
        "default: the bundle in models/default/",
    )
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    p.add_argument(
        "--tta", nargs="?", const="all", default=None, choices=TTA_CHOICES,
        help="flip test-time augmentation: none, segmentation, all (--tta alone); "
        "default: the bundle's (bundle.json tta, the mode its operating point was set with)",
    )  # fmt: skip
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        metavar="SCORE",
        help="report findings scoring at least SCORE (default: the model's calibrated "
        "operating point, 1 false positive per image on held-out views)",
    )
    p.add_argument(
        "--pixel-spacing",
        type=float,
        default=None,
        metavar="MM",
        help="pixel spacing in mm for files that carry none",
    )
    p.set_defaults(func=_run_infer)


def _run_infer(args: argparse.Namespace) -> int:
    from ductai.inference.run import run_inference

    run = run_inference(
        args.inputs,
        args.out,
        model=args.model,
        device=args.device,
        tta=args.tta,
        pixel_spacing=args.pixel_spacing,
        score_threshold=args.threshold,
    )
    print(run.summary())
    return 1 if run.errors else 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a segmentation or detection network from a YAML config (MLflow-tracked)",
        description="Train from CONFIG with key=value overrides (e.g. trainer.epochs=20). "
        "Under torchrun the same command trains with DistributedDataParallel.",
    )
    p.add_argument(
        "config", type=Path, help="YAML config, e.g. configs/segmentation/small_cpu.yaml"
    )
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="PATH|auto",
        help="continue from a checkpoint (auto: OUTPUT_DIR/last.pt when present), same MLflow run",
    )
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from ductai.training.config import load_train_config
    from ductai.training.trainer import train

    overrides = list(args.overrides)
    if args.resume and "=" in args.resume and not Path(args.resume).exists():
        # `--resume key=value`: argparse took an override for the optional PATH.
        overrides.insert(0, args.resume)
        args.resume = "auto"
    config = load_train_config(args.config, overrides)
    result = train(config, resume=args.resume)
    best = f"{result.best_value:.4f}" if result.best_value is not None else "n/a"
    print(
        f"trained {result.global_step} steps ({result.epochs_done} epochs); "
        f"best {result.best_metric} = {best}\n"
        f"checkpoints: {result.last_checkpoint}"
        + (f", {result.best_checkpoint}" if result.best_checkpoint else "")
        + (f"\nMLflow run {result.run_id} at {result.tracking_uri}" if result.run_id else "")
    )
    return 0


def _add_train_rescorer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-rescorer",
        help="train a bundle's second-stage candidate classifier on simulated views",
        description="Records the bundle's lesion candidates on simulated sets or datalist "
        "splits, trains the classifier that rescores them, chooses how much it weighs on the "
        "--select sets "
        "(training/rescorer_train.py). --into adds it to a bundle; recalibrate that bundle "
        "afterwards (ductai evaluate --model BUNDLE --calibrate).",
    )
    p.add_argument("--model", default=None, help="first-stage bundle (default: the default model)")
    p.add_argument("--out", type=Path, required=True, help="output folder (sets are cached there)")
    p.add_argument(
        "--train",
        default="hard:120:3100,default:130:3101",
        help="training sets, comma-separated: PRESET:BREASTS:SEED (simulated) or "
        "DATALIST.json@SPLIT (default: %(default)s)",
    )
    p.add_argument(
        "--select",
        default="hard:12:900,default:20:901",
        help="sets that choose the blend, never the test seeds (default: %(default)s)",
    )
    p.add_argument("--epochs", type=int, default=6, help="training epochs (default: 6)")
    p.add_argument("--workers", type=int, default=2, help="processes recording the sets")
    p.add_argument("--threads", type=int, default=2, help="torch threads while training")
    p.add_argument("--into", type=Path, help="bundle folder to add the trained rescorer to")
    p.set_defaults(func=_run_train_rescorer)


def _run_train_rescorer(args: argparse.Namespace) -> int:
    from ductai.inference.bundle import set_rescorer
    from ductai.inference.run import resolve_model
    from ductai.training.rescorer_sets import parse_sets
    from ductai.training.rescorer_train import RescorerSettings, train_rescorer

    model = resolve_model(args.model)
    settings = RescorerSettings(epochs=args.epochs, num_threads=args.threads)
    path, blend = train_rescorer(
        model,
        args.out,
        parse_sets(args.train),
        parse_sets(args.select),
        settings=settings,
        workers=args.workers,
    )
    print((args.out / "report.md").read_text())
    print(f"rescorer: {path}")
    if args.into and blend == 0:
        print(f"not added to {args.into}: no blend beat the first stage on the --select sets")
    elif args.into:
        set_rescorer(args.into, path)
        print(f"added to {args.into}; recalibrate: ductai evaluate --model {args.into} --calibrate")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint (network metrics, logged to its run) or a whole model "
        "bundle through `ductai infer` (lesions, ducts, localization)",
        description="--checkpoint: the network alone on canonical views (logged to its MLflow "
        "run). --model: the whole inference pipeline on held-out views, scored on the "
        "original DICOM grid (FROC/CPM, AUC, mimic FPs, duct Dice/clDice, distance to the "
        "nipple, clock, quadrant); a table, metrics.json/.md and FROC/PR plots in --out.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", type=Path, help="a best.pt / last.pt")
    what.add_argument(
        "--model", help="bundle folder, checkpoint or MLflow URI: score the whole pipeline"
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--datalist", type=Path, help="datalist JSON (default: simulated views)")
    src.add_argument(
        "--simulation",
        metavar="PRESET",
        help="simulation preset (default: the training one; with --model: hard)",
    )
    p.add_argument("--split", default="test", help="datalist split (default: test)")
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help="simulated views (default 16); with --model: simulated breasts, 2 views each "
        "(default 50)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="simulation seed (default: unseen; with --model: 777)",
    )
    p.add_argument("--out", type=Path, default=None, help="folder for metrics.json and plots")
    p.add_argument("--no-log", action="store_true", help="do not log to the MLflow run")
    p.add_argument("--device", default=None, help="with --model: cpu, cuda (default: auto)")
    p.add_argument(
        "--tta", nargs="?", const="all", default=None, choices=TTA_CHOICES,
        help="with --model: flip test-time augmentation (none, segmentation, all); "
        "default: the bundle's",
    )  # fmt: skip
    p.add_argument("--workers", type=int, default=1, help="with --model: simulation workers")
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="with --model BUNDLE_FOLDER: write this set's 1-FP/image score threshold into "
        "the bundle as its reporting threshold (use a validation seed, not the test seed)",
    )
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    if args.model is not None:
        return _run_evaluate_inference(args)
    from ductai.training.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        args.checkpoint,
        datalist=args.datalist,
        split=args.split,
        simulation=args.simulation,
        n=args.n if args.n is not None else 16,
        seed=args.seed,
        output_dir=args.out,
        log_to_run=not args.no_log,
    )
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        print(f"{key.ljust(width)}  {value:.4f}")
    return 0


def _run_evaluate_inference(args: argparse.Namespace) -> int:
    from ductai.training.evaluate_inference import evaluate_inference

    result = evaluate_inference(
        args.model,
        simulation=args.simulation,
        n=args.n if args.n is not None else 50,
        seed=args.seed if args.seed is not None else 777,
        datalist=args.datalist,
        split=args.split,
        out_dir=args.out,
        device=args.device,
        tta=args.tta,
        workers=args.workers,
        calibrate=args.calibrate,
    )
    print(f"Inference evaluation {result.name}:")
    print(result.table())
    print(f"Written: {', '.join(str(f) for f in result.files)}")
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the service: HTTP API, DICOM node and web viewer (docs/serving.md)",
        description="Serve analyses over HTTP (API at /v1, viewer at /viewer/, OpenAPI at "
        "/docs) and DICOM (C-STORE in, results out). Config: --config FILE (default "
        "configs/serve.yaml), then key=value overrides (e.g. port=9000 dicom.enabled=false); "
        "tokens also from DUCTAI_SERVE_TOKENS=a,b. Stops cleanly on SIGTERM/SIGINT.",
    )
    p.add_argument(
        "--config", type=Path, default=None, help="YAML config (default: configs/serve.yaml)"
    )
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from ductai.inference.serve.config import load_serve_config
    from ductai.inference.serve.logs import setup_json_logging
    from ductai.inference.serve.server import DataDirLocked, run_server

    config = load_serve_config(args.config, args.overrides)
    setup_json_logging(verbose=args.verbose)  # one JSON object per line from here on
    try:
        run_server(config)
    except DataDirLocked as exc:
        print(f"ductai serve: error: {exc}", file=sys.stderr)
        return 2
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
    _add_infer(sub)
    _add_train(sub)
    _add_train_rescorer(sub)
    _add_evaluate(sub)
    _add_serve(sub)
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
