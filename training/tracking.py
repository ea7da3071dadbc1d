"""MLflow tracking for one training run: params, tags, metrics, artifacts and the final model.

Uses ``MlflowClient`` with an explicit URI rather than the fluent API's global state, so
several trainings in one process (tests, notebooks) never write into each other's runs.
The default store is ``sqlite:///<output_dir>/mlflow.db`` with artifacts under
``<output_dir>/mlartifacts``: nothing lands in the working directory (MLflow's own default
is ``./mlflow.db`` with ``./mlruns``), and no server is needed.

Step metrics are buffered and flushed just before each checkpoint is written; a resumed run
drops records at or below the last step already in the store, so a kill-and-resume leaves
neither gaps nor duplicated steps.

The final model (``ductai.inference.pyfunc``) serves over HTTP in ductai's environment:
``mlflow models serve -m <model uri> --env-manager local -h 127.0.0.1 -p 5001``, then POST
``{"inputs": <[H, W] canonical image as nested lists>}`` (detection: optional
``"params": {"include_mimics": true}``) to ``/invocations``. MLflow starts ``uvicorn`` from
the PATH, so the environment's ``bin`` must be on it (an activated venv). Start-up takes
about 15 s on 2 CPU cores (tested, ``tests/training/test_tracking.py``). The other env
managers (``virtualenv``, ``uv``, ``conda``) build a fresh environment from the logged
requirements, which pin ``ductai`` itself, so they need ductai installable from a package
index (not tested).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ductai

log = logging.getLogger(__name__)

LOSS_KEY = "train/loss"  # the step metric used to find where a resumed run left off
_BATCH = 900  # MLflow accepts at most 1000 metrics (100 params) per log_batch call


def resolve_tracking_uri(configured: str | None, output_dir: Path) -> str:
    """Config value, else env MLFLOW_TRACKING_URI, else a sqlite file inside output_dir."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(Path(output_dir).resolve() / 'mlflow.db').as_posix()}"


def metric_name(key: str) -> str:
    """MLflow allows only alphanumerics and ``_-. :/`` in names: ``sens@1fp`` -> ``sens_at_1fp``."""
    return key.replace("@", "_at_")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``: config sections as MLflow params."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            flat[name] = text[:6000]  # MLflow's param value limit
    return flat


class RunTracker:
    """One MLflow run. Created on rank 0 only; other ranks get a ``NullTracker``."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None) -> None:
        self.tracking_uri = tracking_uri
        # A new sqlite store announces its table creation at INFO on every first use.
        for name in ("mlflow.store.db.utils", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # Imported here: a run with tracking.enabled=false needs no MLflow installed.
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.experiment_id = self._experiment(experiment, artifact_root)
        self.run_id: str | None = None
        self._buffer: list[Any] = []  # mlflow.entities.Metric
        self._skip_through = -1  # steps already in the store (resumed runs)

    def _experiment(self, name: str, artifact_root: Path | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        # A local store keeps its artifacts beside it; a server decides for itself.
        location = artifact_root.resolve().as_uri() if artifact_root is not None else None
        return self.client.create_experiment(name, artifact_location=location)

    def start(self, run_name: str | None, tags: dict[str, str], run_id: str | None = None) -> str:
        """A new run, or the run ``run_id`` reopened (resume, evaluate)."""
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
            self.run_id = run.info.run_id
        else:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            history = self.client.get_metric_history(run_id, LOSS_KEY)
            self._skip_through = max((m.step for m in history), default=-1)
            self.set_tags(tags)
        return self.run_id

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int, flush: bool = False) -> None:
        if step <= self._skip_through:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in metrics.items():
            value = float(value)
            if math.isfinite(value):  # NaN (e.g. no lesion in any image) is "not measured"
                self._buffer.append(Metric(metric_name(key), value, now, int(step)))
        if flush:
            self.flush()

    def flush(self) -> None:
        for i in range(0, len(self._buffer), _BATCH):
            self.client.log_batch(self.run_id, metrics=self._buffer[i : i + _BATCH])
        self._buffer = []

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, content: dict[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, content, artifact_file)

    def log_model(self, checkpoint: Path, registered_name: str | None) -> None:
        """The checkpoint as an MLflow pyfunc model (``ductai.inference.pyfunc``)."""
        from ductai.inference.pyfunc import log_pyfunc_model

        with self._active_run():
            log_pyfunc_model(checkpoint, registered_model_name=registered_name)

    @contextlib.contextmanager
    def _active_run(self) -> Iterator[None]:
        # Model logging exists only in the fluent API: point it at this run, then restore
        # both the global URI and the environment variable that set_tracking_uri also writes.
        import mlflow
        from mlflow.tracking._tracking_service import utils

        previous, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            with mlflow.start_run(run_id=self.run_id):
                yield
        finally:
            mlflow.set_tracking_uri(previous)
            if env is not None:
                os.environ["MLFLOW_TRACKING_URI"] = env

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)


class NullTracker:
    """What non-zero ranks and runs with ``tracking.enabled=false`` get: every call is a no-op."""

    run_id: str | None = None
    tracking_uri: str | None = None

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


# --- tags -------------------------------------------------------------------------------


def git_commit() -> str:
    """Commit of the ductai source tree (``+dirty`` when it has local changes)."""
    root = Path(ductai.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("+dirty" if dirty else "")) if sha else "unknown"


def data_fingerprint(data_cfg: Any, seed: int) -> str:
    """sha256 of what defines the data: the datalist file, or presets + seeds + spacing."""
    h = hashlib.sha256()
    h.update(f"spacing={data_cfg.spacing_mm}".encode())
    if data_cfg.source == "datalist":
        h.update(Path(data_cfg.datalist).read_bytes())
    else:
        from ductai.simulation.config import load_simulation_config

        sim = data_cfg.simulation
        total = sum(sim.presets.values())
        presets = {
            name: [
                weight / total,
                load_simulation_config(name, sim.train_overrides).model_dump(mode="json"),
            ]
            for name, weight in sim.presets.items()
        }
        h.update(json.dumps(presets, sort_keys=True).encode())
        seeds = (sim.train_seed, sim.val_seed, sim.train_length, sim.val_length, seed)
        h.update(repr(seeds).encode())
    return h.hexdigest()[:16]


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "monai", "mlflow", "albumentations", "numpy", "pydicom"):
        try:
            out[f"version.{name}"] = version(name)
        except PackageNotFoundError:
            out[f"version.{name}"] = "absent"
    return out


def run_tags(config: Any, device: str, world_size: int) -> dict[str, str]:
    return {
        "mlflow.source.git.commit": git_commit(),
        "ductai.version": ductai.__version__,
        "ductai.task": config.task,
        "ductai.model": config.model.name,
        "data.fingerprint": data_fingerprint(config.data, config.trainer.seed),
        "data.source": config.data.source,
        "device": device,
        "world_size": str(world_size),
        **package_versions(),
    }
