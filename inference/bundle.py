"""Model bundle: the segmentation and detection checkpoints that inference runs, with identity.

A bundle is a folder with ``bundle.json`` ``{"name", "version", "segmentation": "seg.pt",
"detection": "det.pt", "spacing_mm"}`` (docs/inference-design.md); either task may be null.
``load_bundle`` also takes a single ductai checkpoint (one task; the other is reported missing),
an MLflow pyfunc model folder, or an MLflow URI (``runs:/<id>/model``, ``models:/<name>/<v>``,
``models:/<model_id>``), whose pyfunc holds the checkpoint as an artifact (inference/pyfunc.py).

The model's identity in every report: name, version and the sha256 of each weight file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ductai.data.atomic import atomic_write_text
from ductai.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = [
    "BUNDLE_FILE",
    "DEFAULT_REPORT_THRESHOLD",
    "BundleError",
    "ModelBundle",
    "load_bundle",
    "set_operating_point",
    "set_rescorer",
    "write_bundle",
]

BUNDLE_FILE = "bundle.json"
# Reported-finding score threshold of a bundle that carries no calibrated operating point.
DEFAULT_REPORT_THRESHOLD = 0.05
TASKS = ("segmentation", "detection")
RESCORER_TASK = "rescoring"  # the optional second stage's checkpoint (inference/rescoring.py)
RESCORER_FILE = "rescorer.pt"
TTA_MODES = ("none", "segmentation", "all")  # vertical-flip test-time augmentation
# What inference needs from a training checkpoint; the optimizer, RNG and history are dropped.
_KEEP = ("model", "config", "task", "run_id", "best", "ductai_version", "interpolation")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/")  # runs:/, models:/, s3://, ... (not C:\)


class BundleError(ValueError):
    """A path or URI that is not a usable model bundle; the message names it."""


@dataclass
class ModelBundle:
    name: str
    version: str
    spacing_mm: float
    source: str  # the path or URI it was loaded from
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> payload
    files: dict[str, Path] = field(default_factory=dict)  # task -> weight file
    sha256: dict[str, str] = field(default_factory=dict)  # weight file name -> hex digest
    # The fused score at which findings are reported, calibrated on held-out views
    # (set_operating_point); None = not calibrated (DEFAULT_REPORT_THRESHOLD is used).
    operating_threshold: float | None = None
    operating_point: dict[str, Any] = field(default_factory=dict)
    # Optional second-stage candidate classifier (inference/rescoring.py), "rescorer" in
    # bundle.json; its sha256 is part of the identity like the nets'.
    rescorer_file: Path | None = None
    # Test-time augmentation the operating point was calibrated with ("none", "segmentation",
    # "all"; bundle.json "tta"): the Predictor's default. Thresholds calibrated for the other
    # modes: bundle.json "tta_operating_points" {mode: {"threshold", "point"}}.
    tta: str = "none"
    tta_operating_points: dict[str, dict[str, Any]] = field(default_factory=dict)

    def threshold_for(self, tta: str) -> float | None:
        """The calibrated reporting threshold of TTA mode ``tta``, None when it has none."""
        if tta == self.tta:
            return self.operating_threshold
        point = self.tta_operating_points.get(tta)
        return None if point is None else float(point["threshold"])

    @property
    def missing(self) -> list[str]:
        return [t for t in TASKS if t not in self.checkpoints]

    def config(self, task: str) -> dict[str, Any]:
        """The resolved training config of ``task``'s checkpoint."""
        return self.checkpoints[task]["config"]

    def identity(self) -> dict[str, Any]:
        """``ViewPrediction.model``: name, version, sha256 per weight file, missing tasks."""
        return {
            "name": self.name,
            "version": self.version,
            "sha256": dict(self.sha256),
            "files": {
                **{t: p.name for t, p in self.files.items()},
                **({"rescoring": self.rescorer_file.name} if self.rescorer_file else {}),
            },
            "spacing_mm": self.spacing_mm,
            "missing": self.missing,
            "operating_threshold": self.operating_threshold,
        }


def load_bundle(path_or_uri: str | os.PathLike, tracking_uri: str | None = None) -> ModelBundle:
    """A bundle folder, a single checkpoint, an MLflow model folder or an MLflow URI."""
    text = str(path_or_uri)
    if _URI.match(text) and not Path(text).exists():
        return _load_mlflow(text, tracking_uri)
    path = Path(text)
    if not path.exists():
        raise BundleError(f"model not found: {path} (a bundle folder, checkpoint or MLflow URI)")
    if path.is_file():
        return _from_checkpoints({None: path}, path, name=None, version=None, spacing=None)
    if (path / BUNDLE_FILE).is_file():
        return _load_folder(path)
    if (path / "MLmodel").is_file():
        return _load_pyfunc_folder(path, source=text)
    raise BundleError(
        f"{path}: a folder without {BUNDLE_FILE} or MLmodel; expected a model bundle "
        "(ductai.inference.bundle.write_bundle), an MLflow model or a checkpoint file"
    )


def write_bundle(
    folder: str | os.PathLike,
    seg_ckpt: str | os.PathLike | None,
    det_ckpt: str | os.PathLike | None,
    name: str,
    version: str,
    rescorer: str | os.PathLike | None = None,
) -> Path:
    """Write a bundle of the given training checkpoints (either may be None); returns folder.

    Only the weights and the resolved config are kept (a training checkpoint also holds the
    optimizer state, several times the weights). The spacing is checked to agree.
    ``rescorer``: a candidate classifier checkpoint (``ductai train-rescorer``), copied as is.
    """
    folder = Path(folder)
    sources = {"segmentation": seg_ckpt, "detection": det_ckpt}
    if all(v is None for v in sources.values()):
        raise BundleError(f"{folder}: a bundle needs a segmentation or a detection checkpoint")
    folder.mkdir(parents=True, exist_ok=True)
    entry: dict[str, Any] = {"name": name, "version": version}
    spacings = {}
    for task, src in sources.items():
        entry[task] = None
        if src is None:
            continue
        payload = _read(Path(src))
        _check_task(payload, task, Path(src))
        spacings[task] = float(payload["config"]["data"]["spacing_mm"])
        slim = {k: payload[k] for k in _KEEP if k in payload}
        file = "seg.pt" if task == "segmentation" else "det.pt"
        save_checkpoint(folder / file, slim)
        entry[task] = file
    _check_spacings(spacings, folder)
    entry["spacing_mm"] = next(iter(spacings.values()))
    if rescorer is not None:
        entry["rescorer"] = _copy_rescorer(Path(rescorer), folder)
    # the descriptor last: a bundle is whole or absent
    atomic_write_text(folder / BUNDLE_FILE, json.dumps(entry, indent=1) + "\n")
    return folder


# ---- loaders ---------------------------------------------------------------------------------
def _load_folder(folder: Path) -> ModelBundle:
    descriptor = folder / BUNDLE_FILE
    try:
        entry = json.loads(descriptor.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{descriptor}: unreadable bundle descriptor ({e})") from e
    missing_keys = [k for k in ("name", "version", *TASKS) if k not in entry]
    if missing_keys:
        raise BundleError(f"{descriptor}: missing key(s) {', '.join(missing_keys)}")
    files = {t: folder / entry[t] for t in TASKS if entry.get(t)}
    if not files:
        raise BundleError(f"{descriptor}: neither a segmentation nor a detection checkpoint")
    bundle = _from_checkpoints(
        files,
        folder,
        name=str(entry["name"]),
        version=str(entry["version"]),
        spacing=entry.get("spacing_mm"),
    )
    if entry.get("rescorer"):
        rescorer = folder / str(entry["rescorer"])
        if not rescorer.is_file():
            raise BundleError(f"{descriptor}: rescorer {entry['rescorer']!r} not found in {folder}")
        bundle.rescorer_file = rescorer
        bundle.sha256[rescorer.name] = sha256_file(rescorer)
    threshold = entry.get("operating_threshold")
    if threshold is not None:
        if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise BundleError(f"{descriptor}: operating_threshold must be a score in [0, 1]")
        bundle.operating_threshold = float(threshold)
        bundle.operating_point = dict(entry.get("operating_point") or {})
    tta = entry.get("tta", "none")
    points = entry.get("tta_operating_points") or {}
    for mode in (tta, *points):
        if mode not in TTA_MODES:
            raise BundleError(f"{descriptor}: tta {mode!r} must be one of {', '.join(TTA_MODES)}")
    for mode, point in points.items():
        threshold = point.get("threshold") if isinstance(point, dict) else None
        if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise BundleError(f"{descriptor}: tta_operating_points[{mode!r}] needs a threshold")
    bundle.tta = tta
    bundle.tta_operating_points = {m: dict(p) for m, p in points.items()}
    return bundle


def set_operating_point(
    folder: str | os.PathLike,
    threshold: float,
    details: dict[str, Any] | None = None,
    tta: str | None = None,
) -> Path:
    """Record the reporting threshold (and how it was chosen) in a bundle's bundle.json;
    ``tta``: the test-time augmentation it was measured with. For the bundle's own mode
    (bundle.json "tta", "none" when absent) it is the operating threshold; for another mode it
    goes to "tta_operating_points", used when inference runs with that mode."""
    descriptor = Path(folder) / BUNDLE_FILE
    if not descriptor.is_file():
        raise BundleError(f"{folder}: not a bundle folder (no {BUNDLE_FILE})")
    if not 0.0 <= float(threshold) <= 1.0:
        raise BundleError(f"operating threshold must be a score in [0, 1], got {threshold}")
    entry = json.loads(descriptor.read_text())
    if tta is not None and tta not in TTA_MODES:
        raise BundleError(f"tta {tta!r} must be one of {', '.join(TTA_MODES)}")
    if tta is None or tta == entry.get("tta", "none"):
        entry["operating_threshold"] = round(float(threshold), 4)
        entry["operating_point"] = details or {}
    else:
        points = entry.setdefault("tta_operating_points", {})
        points[tta] = {"threshold": round(float(threshold), 4), "point": details or {}}
    atomic_write_text(descriptor, json.dumps(entry, indent=1) + "\n")
    return descriptor


def set_rescorer(folder: str | os.PathLike, checkpoint: str | os.PathLike | None) -> Path:
    """Add a candidate classifier to a bundle (None removes it); the operating threshold is
    dropped, since it was calibrated on the other scores: recalibrate with
    ``ductai evaluate --model FOLDER --calibrate``."""
    folder = Path(folder)
    descriptor = folder / BUNDLE_FILE
    if not descriptor.is_file():
        raise BundleError(f"{folder}: not a bundle folder (no {BUNDLE_FILE})")
    entry = json.loads(descriptor.read_text())
    if checkpoint is None:
        entry.pop("rescorer", None)
    else:
        entry["rescorer"] = _copy_rescorer(Path(checkpoint), folder)
    entry.pop("operating_threshold", None)
    entry.pop("operating_point", None)
    atomic_write_text(descriptor, json.dumps(entry, indent=1) + "\n")
    return descriptor


def _load_pyfunc_folder(folder: Path, source: str) -> ModelBundle:
    """An MLflow pyfunc model logged by training: its checkpoint artifact, or a whole bundle."""
    if (folder / "artifacts" / BUNDLE_FILE).is_file():
        return _load_folder(folder / "artifacts")
    try:
        mlmodel = yaml.safe_load((folder / "MLmodel").read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise BundleError(f"{folder / 'MLmodel'}: unreadable MLflow model file ({e})") from e
    artifacts = (mlmodel.get("flavors", {}).get("python_function", {}) or {}).get("artifacts")
    checkpoint = None
    if isinstance(artifacts, dict) and "checkpoint" in artifacts:
        checkpoint = folder / artifacts["checkpoint"]["path"]
    else:
        found = sorted((folder / "artifacts").glob("*.pt"))
        checkpoint = found[0] if len(found) == 1 else None
    if checkpoint is None or not checkpoint.is_file():
        raise BundleError(f"{source}: an MLflow model without a ductai checkpoint artifact")
    name = str(mlmodel.get("model_id") or mlmodel.get("run_id") or "")
    bundle = _from_checkpoints(
        {None: checkpoint}, folder, name=name or None, version=None, spacing=None
    )
    bundle.source = source
    return bundle


def _load_mlflow(uri: str, tracking_uri: str | None) -> ModelBundle:
    try:
        local = _download(uri, tracking_uri)
    except Exception as e:  # MLflow raises many kinds (missing run, no store, bad URI)
        raise BundleError(f"{uri}: cannot download the MLflow model ({e})") from e
    path = Path(local)
    if path.is_file():
        return _from_checkpoints({None: path}, path, name=None, version=None, spacing=None)
    bundle = (
        _load_folder(path) if (path / BUNDLE_FILE).is_file() else _load_pyfunc_folder(path, uri)
    )
    bundle.source = uri
    if uri.startswith("models:/"):
        parts = uri[len("models:/") :].split("/")
        bundle.name = parts[0]
        if len(parts) > 1:
            bundle.version = parts[1]
    return bundle


def _download(uri: str, tracking_uri: str | None) -> str:
    """Local copy of an MLflow model. MLflow 3 logs models as LoggedModels: a ``runs:/<id>/model``
    URI resolves through the helper pyfunc.load_model uses; the public download_artifacts only
    sees the run's own artifact folder and fails on it."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    try:
        from mlflow.tracking.artifact_utils import _download_artifact_from_uri as download
    except ImportError:  # a future MLflow without the helper

        def download(u: str) -> str:
            return mlflow.artifacts.download_artifacts(artifact_uri=u)

    previous, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        return download(uri)
    finally:
        if tracking_uri:
            mlflow.set_tracking_uri(previous)
        for key, value in (
            ("MLFLOW_TRACKING_URI", env),
            ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", bar),
        ):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _from_checkpoints(
    files: dict[str | None, Path],
    source: Path,
    name: str | None,
    version: str | None,
    spacing: float | None,
) -> ModelBundle:
    """``files`` maps task -> checkpoint; the key None means "whatever task it holds"."""
    checkpoints, paths = {}, {}
    for task, path in files.items():
        payload = _read(path)
        if task is None:
            task = payload.get("task") or payload.get("config", {}).get("task")
        _check_task(payload, task, path)
        checkpoints[task], paths[task] = payload, path
    spacings = {t: float(p["config"]["data"]["spacing_mm"]) for t, p in checkpoints.items()}
    _check_spacings(spacings, source)
    trained = next(iter(spacings.values()))
    if spacing is not None and abs(float(spacing) - trained) > 1e-9:
        raise BundleError(
            f"{source}: bundle spacing_mm {spacing} differs from the checkpoints' {trained}"
        )
    first = next(iter(checkpoints.values()))
    return ModelBundle(
        name=name or str(first["config"]["model"]["name"]),
        version=version or str(first.get("ductai_version") or "unversioned"),
        spacing_mm=trained,
        source=str(source),
        checkpoints=checkpoints,
        files=paths,
        sha256={p.name: sha256_file(p) for p in paths.values()},
    )


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BundleError(f"checkpoint not found: {path}")
    try:
        payload = load_checkpoint(path)
    except CheckpointError as e:
        raise BundleError(str(e)) from e
    if "model" not in payload or "config" not in payload:
        raise BundleError(f"{path}: a ductai checkpoint without model weights and config")
    return payload


def _check_task(payload: dict[str, Any], task: str | None, path: Path) -> None:
    held = payload.get("task") or payload["config"].get("task")
    if task not in TASKS or held != task:
        raise BundleError(f"{path}: a {held!r} checkpoint where a {task!r} one was expected")


def _copy_rescorer(checkpoint: Path, folder: Path) -> str:
    """A rescorer checkpoint copied into a bundle folder; its file name there."""
    payload = _read(checkpoint)
    if payload.get("task") != RESCORER_TASK:
        raise BundleError(f"{checkpoint}: a {payload.get('task')!r} checkpoint, not a rescorer")
    save_checkpoint(folder / RESCORER_FILE, payload)
    return RESCORER_FILE


def _check_spacings(spacings: dict[str, float], where: Path) -> None:
    if len(set(spacings.values())) > 1:
        raise BundleError(
            f"{where}: the checkpoints were trained at different spacings {spacings}; "
            "one canonical space per bundle"
        )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
