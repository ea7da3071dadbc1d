"""The HTTP API: ``create_app(service, config)`` (routes in docs/serve-design.md).

Uploads are streamed to disk under ``DATA_DIR/uploads/`` with the size limit enforced on
Content-Length and while reading (413), each file is checked (``security.check_dicom``:
415 not DICOM, 422 unusable, naming the file and the tag), and the files are then moved
into a new analysis. Blocking work (parsing, copying, waiting) runs in the thread pool so
the event loop keeps answering /healthz and /metrics while a big upload is checked.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ductai import __version__
from ductai.data.atomic import atomic_write
from ductai.inference.serve.config import ServeConfig
from ductai.inference.serve.logs import log_request
from ductai.inference.serve.metrics import CONTENT_TYPE_LATEST, ServiceMetrics
from ductai.inference.serve.security import (
    UploadError,
    check_dicom,
    inside,
    safe_id,
    token_ok,
)
from ductai.inference.serve.service import AnalysisService, NotReadyError, QueueFull
from ductai.inference.serve.store import Analysis

__all__ = ["STATIC_DIR", "create_app"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
VIEW_FILES = {
    "report.json": "application/json",
    "heatmap.png": "image/png",
    "heatmap_color.png": "image/png",
    "overlay.png": "image/png",
    "duct_mask.png": "image/png",
    "seg.dcm": "application/dicom",
    "sr.dcm": "application/dicom",
    "sc.dcm": "application/dicom",
    "image.png": "image/png",  # rendered from the submitted DICOM on request
}
STUDY_FILES = {"study_report.json": "application/json", "surgical_map.png": "image/png"}
MAX_FILES = 64  # per request: two views per breast, a few breasts
CHUNK = 1 << 20

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        }
                    },
                    "required": ["files"],
                }
            },
            "application/dicom": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


class RequestTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def _too_large_detail(limit: int) -> str:
    return f"request body larger than max_request_mb ({limit / 1024 / 1024:g} MB)"


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``: on Content-Length before reading, and while
    streaming (a chunked body or a lying Content-Length) by raising in ``receive``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = JSONResponse(
                    {"detail": _too_large_detail(self.max_bytes)},
                    status_code=413,
                    headers={"Connection": "close"},
                )
                await response(scope, receive, send)
                return
        total = 0

        async def limited() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_bytes:
                    raise RequestTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


class ObserveMiddleware:
    """One JSON log line and Prometheus counts per request, labelled by route template."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            analysis_id = (scope.get("path_params") or {}).get("analysis_id") or (
                scope.get("state") or {}
            ).get("analysis_id")
            self.metrics.observe_request(route, scope["method"], status, seconds)
            log_request(scope["method"], route, status, seconds * 1000, analysis_id)


def create_app(service: AnalysisService, config: ServeConfig) -> FastAPI:
    app = FastAPI(
        title="ductai",
        version=__version__,
        description="Galactography analysis: submit DICOM galactograms, fetch duct masks, "
        "lesion reports, heatmaps and DICOM SEG/SR/SC results (docs/serving.md).",
    )
    metrics = ServiceMetrics(service)
    app.state.service = service
    app.state.config = config
    app.state.metrics = metrics
    uploads_root = Path(config.data_dir).resolve() / "uploads"
    shutil.rmtree(uploads_root, ignore_errors=True)  # what a killed process left mid-upload
    uploads_root.mkdir(parents=True, exist_ok=True)
    bearer = HTTPBearer(auto_error=False, description="a token from the service's config")

    def require_token(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        if not config.tokens:
            return  # loopback without tokens: server.py refuses this on any other host
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(
                401,
                "missing token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not token_ok(credentials.credentials, config.tokens):
            raise HTTPException(
                401, "wrong token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )

    auth = [Depends(require_token)]

    @app.exception_handler(RequestTooLarge)
    async def _too_large(request: Request, exc: RequestTooLarge) -> JSONResponse:
        metrics.uploads_rejected.labels(status="413").inc()
        return JSONResponse(
            {"detail": _too_large_detail(exc.limit)},
            status_code=413,
            headers={"Connection": "close"},
        )

    # ---- probes and metrics ---------------------------------------------------------------
    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        """The process is alive (not necessarily ready)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"])
    def readyz() -> JSONResponse:
        """200 when the model is loaded, workers run and the DICOM node listens, else 503."""
        ready = service.ready and getattr(app.state, "booted", True)
        body = {
            "ready": ready,
            "queue_length": service.queue_length,
            "queue_size": config.queue_size,
            "workers": config.workers,
            "workers_busy": service.workers_busy,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        tags=["service"],
        dependencies=auth if config.metrics_auth else [],
        response_class=Response,
    )
    def prometheus() -> Response:
        """Prometheus text format."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/viewer/")

    # ---- submitting -----------------------------------------------------------------------
    @app.post(
        "/v1/analyses",
        status_code=202,
        dependencies=auth,
        tags=["analyses"],
        openapi_extra=_UPLOAD_BODY,
    )
    async def submit(request: Request) -> JSONResponse:
        """Submit DICOM images (multipart field ``files``, or one ``application/dicom`` body);
        202 with the analysis id and links to poll."""
        folder = await _receive_upload(request, uploads_root)
        try:
            analysis = await run_in_threadpool(_check_and_submit, folder, service, metrics, "http")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        request.state.analysis_id = analysis.id
        body = {"id": analysis.id, "state": analysis.state, "links": _links(analysis.id)}
        return JSONResponse(
            body, status_code=202, headers={"Location": _links(analysis.id)["self"]}
        )

    @app.post("/v1/analyses/sync", dependencies=auth, tags=["analyses"], openapi_extra=_UPLOAD_BODY)
    async def submit_sync(request: Request) -> JSONResponse:
        """Analyse one image and wait (up to ``sync_timeout_s``): 200 with its reports, or
        202 with the id and links when it takes longer."""
        folder = await _receive_upload(request, uploads_root)
        try:
            if len(list(folder.glob("*.dcm"))) != 1:
                raise HTTPException(400, "the sync route takes exactly one image")
            analysis = await run_in_threadpool(
                _check_and_submit, folder, service, metrics, "http-sync"
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        request.state.analysis_id = analysis.id
        analysis = await run_in_threadpool(service.wait, analysis.id, config.sync_timeout_s)
        links = _links(analysis.id)
        if analysis.state not in ("done", "failed"):
            return JSONResponse(
                {"id": analysis.id, "state": analysis.state, "links": links},
                status_code=202,
                headers={"Location": links["self"]},
            )
        reports, study_reports = await run_in_threadpool(_reports, service, analysis)
        body = {
            "id": analysis.id,
            "state": analysis.state,
            "error": analysis.error,
            "reports": reports,
            "study_reports": study_reports,
            "links": links,
        }
        return JSONResponse(body, status_code=200)

    # ---- reading --------------------------------------------------------------------------
    @app.get("/v1/analyses", dependencies=auth, tags=["analyses"])
    def list_analyses(limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
        """The newest analyses first."""
        return [{**a.status(), "links": _links(a.id)} for a in service.list(limit)]

    @app.get("/v1/analyses/{analysis_id}", dependencies=auth, tags=["analyses"])
    def get_analysis(analysis_id: str) -> dict[str, Any]:
        """Status, and once done the views (SOP UID, laterality, view, lesions, files) and
        the per-breast study folders."""
        analysis = _analysis(service, analysis_id)
        return _describe(service, analysis)

    @app.get(
        "/v1/analyses/{analysis_id}/views/{sop_uid}/{name}", dependencies=auth, tags=["results"]
    )
    def get_view_file(analysis_id: str, sop_uid: str, name: str) -> Response:
        """A view's output file; ``image.png`` is the submitted image as 8-bit PNG."""
        analysis = _analysis(service, analysis_id)
        if name not in VIEW_FILES:
            raise HTTPException(404, f"no view file {name!r}; known: {', '.join(VIEW_FILES)}")
        results = _results(service, analysis)
        folder = _view_folder(results, analysis, sop_uid)
        if name == "image.png":
            path = _rendered_image(service, analysis, folder)
        else:
            path = _existing(results, folder / name, f"{name} of view {sop_uid}")
        return FileResponse(path, media_type=VIEW_FILES[name])

    @app.get(
        "/v1/analyses/{analysis_id}/studies/{study_folder}/{name}",
        dependencies=auth,
        tags=["results"],
    )
    def get_study_file(analysis_id: str, study_folder: str, name: str) -> Response:
        """A breast's ``study_report.json`` or ``surgical_map.png``."""
        analysis = _analysis(service, analysis_id)
        if name not in STUDY_FILES:
            raise HTTPException(404, f"no study file {name!r}; known: {', '.join(STUDY_FILES)}")
        results = _results(service, analysis)
        folder = results / _safe(study_folder, "study folder")
        path = _existing(results, folder / name, f"{name} of {study_folder}")
        return FileResponse(path, media_type=STUDY_FILES[name])

    app.mount(
        "/viewer", StaticFiles(directory=STATIC_DIR, html=True, check_dir=False), name="viewer"
    )
    # Outermost first: limits apply before anything reads the body; observe sees every answer.
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_request_bytes)
    app.add_middleware(ObserveMiddleware, metrics=metrics)
    return app


# ---- uploads ----------------------------------------------------------------------------------
async def _receive_upload(request: Request, uploads_root: Path) -> Path:
    """The request's files, written under a fresh folder in ``uploads/`` (one file each,
    named ``NNN.dcm``, the client's name kept in ``NNN.name`` for messages)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    folder = Path(tempfile.mkdtemp(dir=uploads_root, prefix="upload-"))
    try:
        if content_type == "multipart/form-data":
            await _receive_multipart(request, folder)
        elif content_type == "application/dicom":
            await _receive_body(request, folder)
        else:
            raise HTTPException(
                415,
                f"Content-Type {content_type or '(none)'!r}: send multipart/form-data with "
                "one or more 'files' parts, or a single application/dicom body",
            )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if not any(folder.glob("*.dcm")):
        shutil.rmtree(folder, ignore_errors=True)
        raise HTTPException(400, "no files in the request: send one or more 'files' parts")
    return folder


async def _receive_multipart(request: Request, folder: Path) -> None:
    async with request.form(max_files=MAX_FILES, max_fields=16) as form:
        parts = form.getlist("files")
        if not parts:
            other = ", ".join(sorted(set(form.keys()))) or "none"
            raise HTTPException(400, f"multipart body without a 'files' part (parts: {other})")
        for index, part in enumerate(parts):
            if not isinstance(part, UploadFile):
                raise HTTPException(400, f"'files' part {index} is text, not a file")
            target = folder / f"{index:03d}.dcm"
            # The form parser spooled the part already; copy it off the event loop.
            await run_in_threadpool(_copy_part, part, target)
            (folder / f"{index:03d}.name").write_text(_display_name(part.filename, index))


def _copy_part(part: UploadFile, target: Path) -> None:
    part.file.seek(0)
    with open(target, "wb") as out:
        shutil.copyfileobj(part.file, out, CHUNK)


async def _receive_body(request: Request, folder: Path) -> None:
    target = folder / "000.dcm"
    with open(target, "wb") as out:
        async for chunk in request.stream():
            out.write(chunk)
    name = request.headers.get("content-disposition", "")
    filename = name.split("filename=", 1)[1].strip('"; ') if "filename=" in name else None
    (folder / "000.name").write_text(_display_name(filename, 0, default="request body"))


def _display_name(filename: str | None, index: int, default: str | None = None) -> str:
    """The client's file name for messages: printable, short, never a path."""
    name = Path(str(filename or "")).name
    name = "".join(c for c in name if c.isprintable())[:120]
    return repr(name) if name else (default or f"file #{index + 1}")


def _check_and_submit(
    folder: Path, service: AnalysisService, metrics: ServiceMetrics, source: str
) -> Analysis:
    """Check every file (all problems in one answer), then hand them to the service."""
    problems: list[UploadError] = []
    files: list[Path] = []
    names: list[str] = []
    study_uids: list[str] = []
    for path in sorted(folder.glob("*.dcm")):
        name = path.with_suffix(".name").read_text()
        try:
            info = check_dicom(path, name)
        except UploadError as exc:
            problems.append(exc)
            continue
        files.append(path)
        names.append(name)
        if info.study_instance_uid:
            study_uids.append(info.study_instance_uid)
    if problems:
        status = max(p.status for p in problems)  # 422 (usable DICOM header) outranks 415
        for problem in problems:
            metrics.uploads_rejected.labels(status=str(problem.status)).inc()
        raise HTTPException(status, "; ".join(str(p) for p in problems))
    try:
        return service.submit(files, source=source, move=True, study_uids=study_uids, names=names)
    except QueueFull as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    except NotReadyError as exc:
        raise HTTPException(503, f"{exc}; retry later", headers={"Retry-After": "5"}) from None


# ---- reading results --------------------------------------------------------------------------
def _safe(value: str, what: str) -> str:
    try:
        return safe_id(value, what)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def _links(analysis_id: str) -> dict[str, str]:
    return {"self": f"/v1/analyses/{analysis_id}", "viewer": f"/viewer/#{analysis_id}"}


def _analysis(service: AnalysisService, analysis_id: str) -> Analysis:
    analysis = service.get(_safe(analysis_id, "analysis id"))
    if analysis is None:
        raise HTTPException(404, f"no analysis {analysis_id!r}")
    return analysis


def _results(service: AnalysisService, analysis: Analysis) -> Path:
    """The results folder; 409 while the analysis is queued or running."""
    results = service.results_dir(analysis.id)
    if analysis.state in ("queued", "running") or not results.is_dir():
        raise HTTPException(
            409, f"analysis {analysis.id} is {analysis.state}: results are not ready"
        )
    return results


def _run_index(results: Path) -> dict[str, Any]:
    try:
        return json.loads((results / "run.json").read_text())
    except FileNotFoundError:
        return {"views": [], "breasts": []}


def _view_folder(results: Path, analysis: Analysis, sop_uid: str) -> Path:
    """A view's folder by SOPInstanceUID or by folder name (a crafted UID has a hashed one)."""
    for view in _run_index(results).get("views", []):
        if sop_uid in (view.get("sop_instance_uid"), view.get("folder")):
            return results / _safe(view["folder"], "view folder")
    raise HTTPException(404, f"analysis {analysis.id} has no view {sop_uid[:80]!r}")


def _existing(results: Path, path: Path, what: str) -> Path:
    try:
        resolved = inside(results, path)
    except ValueError:
        raise HTTPException(400, f"{what}: not inside the analysis' results") from None
    if not resolved.is_file():
        raise HTTPException(404, f"{what} does not exist")
    return resolved


def _rendered_image(service: AnalysisService, analysis: Analysis, folder: Path) -> Path:
    """The submitted image on its original grid as 8-bit PNG (cached next to the results),
    with the data layer's intensity rule (contrast bright), for the viewer's window/level."""
    out = service.store.folder(analysis.id) / "images" / f"{folder.name}.png"
    if out.is_file():
        return out
    report = json.loads(_existing(folder.parent, folder / "report.json", "report.json").read_text())
    source_name = Path(str(report.get("image", {}).get("source_path", ""))).name
    inputs = service.store.input_dir(analysis.id)
    source = _existing(inputs, inputs / _safe(source_name, "source file"), "the source image")

    from PIL import Image

    from ductai.data.dicom_reader import read_galactogram

    image = read_galactogram(source)
    pixels = np.clip(np.rint(image.pixels * 255.0), 0, 255).astype(np.uint8)
    atomic_write(out, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))
    return out


def _describe(service: AnalysisService, analysis: Analysis) -> dict[str, Any]:
    document: dict[str, Any] = {**analysis.status(), "links": _links(analysis.id)}
    results = service.results_dir(analysis.id)
    if analysis.state in ("queued", "running") or not results.is_dir():
        return document
    base = f"/v1/analyses/{analysis.id}"
    index = _run_index(results)
    views = []
    for view in index.get("views", []):
        folder = results / view["folder"]
        report = _read_json(folder / "report.json") or {}
        image = report.get("image", {})
        names = sorted(p.name for p in folder.iterdir() if p.name in VIEW_FILES)
        names.append("image.png")
        views.append(
            {
                "sop_instance_uid": view["sop_instance_uid"],
                "folder": view["folder"],
                "study_instance_uid": image.get("study_instance_uid"),
                "laterality": image.get("laterality"),
                "view": image.get("view"),
                "rows": image.get("rows"),
                "columns": image.get("columns"),
                "lesions": view.get("lesions", 0),
                "files": {n: f"{base}/views/{view['folder']}/{n}" for n in names},
            }
        )
    studies = []
    for breast in index.get("breasts", []):
        if not breast.get("folder"):
            continue
        folder = results / breast["folder"]
        names = sorted(p.name for p in folder.iterdir() if p.name in STUDY_FILES)
        studies.append(
            {
                "folder": breast["folder"],
                "study_instance_uid": breast["study_instance_uid"],
                "laterality": breast["laterality"],
                "views": breast["views"],
                "files": {n: f"{base}/studies/{breast['folder']}/{n}" for n in names},
            }
        )
    errors = _read_json(results / "errors.json") or []
    document.update(
        model=index.get("model"),
        seconds=index.get("seconds"),
        views=views,
        studies=studies,
        file_errors=[
            {
                "stage": e.get("stage"),
                "error": service.store.readable(analysis.id, e.get("error", "")),
            }
            for e in errors
        ],
    )
    return document


def _reports(service: AnalysisService, analysis: Analysis) -> tuple[list[dict], list[dict]]:
    results = service.results_dir(analysis.id)
    if not results.is_dir():
        return [], []
    index = _run_index(results)
    reports = [_read_json(results / v["folder"] / "report.json") for v in index.get("views", [])]
    studies = [
        _read_json(results / b["folder"] / "study_report.json")
        for b in index.get("breasts", [])
        if b.get("folder")
    ]
    return [r for r in reports if r is not None], [s for s in studies if s is not None]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
