"""`run_inference`: DICOM files in, every result folder out (what `ductai infer` calls).

Flow per breast (docs/inference-design.md): read each view with the data layer, predict (one
Predictor, loaded once), localize each view, match lesions across the views, then write each
view's folder and the breast's folder, each all-or-nothing. A file that cannot be read or
processed becomes an entry in `DIR/errors.json` (and a line on stderr) and the batch goes on.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ductai.data.dicom_reader import read_galactogram
from ductai.data.errors import ImageReadError
from ductai.inference import stages
from ductai.inference.grouping import BreastGroup, collect_files, group_by_breast
from ductai.inference.types import StudyLesion, ViewLocalization, ViewPrediction

__all__ = [
    "DEFAULT_MODEL_DIR",
    "BreastResult",
    "FileError",
    "InferenceRun",
    "ModelNotFoundError",
    "ViewResult",
    "resolve_model",
    "run_inference",
]

log = logging.getLogger(__name__)

# Shipped next to the network code (ductai.models), so an installed package finds it too.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"
ERRORS_FILE = "errors.json"
RUN_FILE = "run.json"


class ModelNotFoundError(FileNotFoundError):
    """No model given and no default bundle installed."""


@dataclass
class FileError:
    path: str
    stage: str  # read, predict, localize, write
    error: str  # one line naming the file and the problem
    kind: str  # the exception's class name


@dataclass
class ViewResult:
    path: str
    sop_instance_uid: str
    laterality: str
    view: str
    folder: Path
    report: dict[str, Any]
    prediction: ViewPrediction | None = None  # kept only with keep_predictions=True
    localization: ViewLocalization | None = None


@dataclass
class BreastResult:
    study_instance_uid: str
    laterality: str
    folder: Path | None
    report: dict[str, Any] | None
    views: list[ViewResult] = field(default_factory=list)
    lesions: list[StudyLesion] = field(default_factory=list)


@dataclass
class InferenceRun:
    out_dir: Path
    model: str
    breasts: list[BreastResult] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def views(self) -> list[ViewResult]:
        return [v for b in self.breasts for v in b.views]

    def index(self) -> dict[str, Any]:
        """run.json: what was written where (folders relative to out_dir)."""
        return {
            "model": self.model,
            "seconds": round(self.seconds, 3),
            "views": [
                {
                    "path": v.path,
                    "sop_instance_uid": v.sop_instance_uid,
                    "folder": v.folder.name,
                    "lesions": len(v.report.get("lesions", [])),
                }
                for v in self.views
            ],
            "breasts": [
                {
                    "study_instance_uid": b.study_instance_uid,
                    "laterality": b.laterality,
                    "folder": b.folder.name if b.folder else None,
                    "views": [v.sop_instance_uid for v in b.views],
                }
                for b in self.breasts
            ],
            "errors": len(self.errors),
        }

    def summary(self) -> str:
        """The short table `ductai infer` prints: one line per lesion (or per clean view)."""
        from ductai.inference.summary import format_run

        return format_run(self)


def resolve_model(model: str | Path | None) -> str:
    """The model to load: the one given, else the default bundle, else a clear error."""
    if model is not None and str(model) != "":
        return str(model)
    if (DEFAULT_MODEL_DIR / "bundle.json").is_file():
        return str(DEFAULT_MODEL_DIR)
    raise ModelNotFoundError(
        f"no model given and no default bundle at {DEFAULT_MODEL_DIR}.\n"
        "  Pass --model PATH_OR_MLFLOW_URI: a bundle folder (bundle.json), one training "
        "checkpoint (.../best.pt), or an MLflow model (runs:/<run_id>/model, models:/...).\n"
        "  Or train one and bundle it as the default:\n"
        "    ductai train configs/segmentation/small_cpu.yaml output_dir=outputs/seg\n"
        "    ductai train configs/detection/small_cpu.yaml output_dir=outputs/det\n"
        '    python -c "from ductai.inference.bundle import write_bundle; write_bundle('
        f"'{DEFAULT_MODEL_DIR}', 'outputs/seg/best.pt', 'outputs/det/best.pt', "
        "name='ductai', version='local')\""
    )


def run_inference(
    paths: list[str | Path] | str | Path,
    out_dir: str | Path,
    model: str | Path | None = None,
    *,
    device: str | None = None,
    tta: bool | str | None = None,
    pixel_spacing: float | None = None,
    predictor: Any | None = None,
    keep_predictions: bool = False,
    score_threshold: float | None = None,
    pair_threshold: float | None = None,
) -> InferenceRun:
    """Analyse every DICOM under `paths`; results under `out_dir` (see module docstring).

    `predictor`: an already loaded Predictor (then `model`, `device`, `tta` and
    `score_threshold` are ignored), so a caller that runs many batches loads the networks once.
    `score_threshold`: report findings from this score (default: the bundle's operating point).
    `pair_threshold`: pair across views only the findings from this score (default: all
    reported ones); an evaluation that reports down to a low score pairs at the operating point.
    """
    start = time.perf_counter()
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out_dir = Path(out_dir)
    files = collect_files(paths)
    if not files:
        raise FileNotFoundError(f"no files found under {', '.join(map(str, paths))}")
    if predictor is None:
        predictor = stages.load_predictor(
            resolve_model(model), device=device, tta=tta, score_threshold=score_threshold
        )
    run = InferenceRun(out_dir=out_dir, model=stages.model_name(predictor))
    out_dir.mkdir(parents=True, exist_ok=True)
    for group in group_by_breast(files):
        breast = _run_breast(
            group, predictor, out_dir, pixel_spacing, run.errors, keep_predictions, pair_threshold
        )
        if breast is not None:
            run.breasts.append(breast)
        # Rewritten after every breast: a batch killed midway still lists its failures.
        stages.write_json_atomic(out_dir / ERRORS_FILE, [asdict(e) for e in run.errors])
    run.seconds = time.perf_counter() - start
    # Written last: its presence says the batch ran to the end.
    stages.write_json_atomic(out_dir / RUN_FILE, run.index())
    return run


def _error(errors: list[FileError], path: Path | str, stage: str, exc: BaseException) -> None:
    text = str(exc)
    if str(path) not in text:  # data-layer errors already start with the path
        text = f"{path}: {stage} failed: {type(exc).__name__}: {text}"
    errors.append(FileError(str(path), stage, text, type(exc).__name__))
    log.error("%s", text)
    log.debug("traceback of the error above", exc_info=exc)


def _run_breast(
    group: BreastGroup,
    predictor: Any,
    out_dir: Path,
    pixel_spacing: float | None,
    errors: list[FileError],
    keep: bool,
    pair_threshold: float | None = None,
) -> BreastResult | None:
    predictions: list[ViewPrediction] = []
    seen: set[str] = set()
    for path in group.files:
        try:
            image = read_galactogram(path, pixel_spacing=pixel_spacing)
        except (ImageReadError, OSError, ValueError) as exc:
            _error(errors, path, "read", exc)
            continue
        except Exception as exc:  # one odd file never stops the batch
            _error(errors, path, "read", exc)
            continue
        if image.sop_instance_uid and image.sop_instance_uid in seen:
            log.warning("%s: the same SOPInstanceUID was read before; skipped", path)
            continue
        seen.add(image.sop_instance_uid)
        try:
            prediction = predictor.predict(image)
        except Exception as exc:
            _error(errors, path, "predict", exc)
            continue
        predictions.append(prediction)
    if not predictions:
        return None
    localizations = [_localize(p, errors) for p in predictions]
    study = _cross_view(predictions, localizations, errors, pair_threshold)
    lesions = study.lesions if study is not None else []
    # Views of one group share the study and laterality the reader found (the header scan
    # that grouped them used the same rules).
    first = predictions[0].image
    breast = BreastResult(first.study_instance_uid, first.laterality, None, None, lesions=lesions)
    study_name = stages.study_folder(breast.study_instance_uid, breast.laterality)
    for prediction, localization in zip(predictions, localizations):
        path = prediction.image.path
        try:
            folder, report = stages.write_view(
                out_dir, prediction, localization, lesions, study_folder=study_name
            )
        except Exception as exc:
            _error(errors, path, "write", exc)
            continue
        breast.views.append(
            ViewResult(
                path=str(path),
                sop_instance_uid=prediction.image.sop_instance_uid,
                laterality=prediction.image.laterality,
                view=prediction.image.view,
                folder=folder,
                report=report,
                prediction=prediction if keep else None,
                localization=localization if keep else None,
            )
        )
    written = {v.sop_instance_uid for v in breast.views}
    kept = [
        (p, loc)
        for p, loc in zip(predictions, localizations)
        if p.image.sop_instance_uid in written
    ]
    if kept:
        try:
            breast.folder, breast.report = stages.write_breast(
                out_dir,
                breast.study_instance_uid,
                breast.laterality,
                [p for p, _ in kept],
                [loc for _, loc in kept],
                lesions,
                flags=study.fill_flags if study is not None else [],
                notes=study.notes if study is not None else [],
            )
        except Exception as exc:
            _error(errors, group.key, "write", exc)
    return breast


def _localize(prediction: ViewPrediction, errors: list[FileError]) -> ViewLocalization | None:
    try:
        return stages.localize_view(prediction)
    except Exception as exc:  # the view is still reported, without its localization
        _error(errors, prediction.image.path, "localize", exc)
        return None


def _cross_view(
    predictions: list[ViewPrediction],
    localizations: list[ViewLocalization | None],
    errors: list[FileError],
    pair_threshold: float | None = None,
):
    """The breast's StudyLocalization, over the views that were localized; None on failure."""
    pairs = [(p, loc) for p, loc in zip(predictions, localizations) if loc is not None]
    if not pairs:
        return None
    try:
        views = [p for p, _ in pairs]
        return stages.localize_breast(views, [loc for _, loc in pairs], pair_threshold)
    except Exception as exc:
        _error(errors, predictions[0].image.path, "localize", exc)
        return None


def load_errors(out_dir: str | Path) -> list[dict[str, Any]]:
    return json.loads((Path(out_dir) / ERRORS_FILE).read_text())
