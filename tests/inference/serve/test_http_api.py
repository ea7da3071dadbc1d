"""The HTTP API against a real `ductai serve` process (tiny bundle) and real clients: uploads
(multipart and application/dicom), every result file, the sync route, auth, probes, metrics,
logs, and 503 + Retry-After from a full queue (in-process server with a blocked predictor)."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image

from ductai.inference.serve.http_api import STATIC_DIR
from ductai.inference.writers.schema import validate_report, validate_study_report

pytestmark = pytest.mark.slow

TOKEN = "in-process-token"
PNG = "image/png"
DICOM = "application/dicom"


def _multipart(paths):
    return [("files", (p.name, p.read_bytes(), DICOM)) for p in paths]


def test_multipart_upload_and_every_output(http_server, simulated_study, wait_analysis):
    with http_server.client() as client:
        response = client.post("/v1/analyses", files=_multipart(simulated_study.images))
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["state"] == "queued"
        assert body["links"]["self"] == f"/v1/analyses/{body['id']}"
        assert response.headers["location"] == body["links"]["self"]

        done = wait_analysis(client, body["id"])
        assert done["state"] == "done", done
        assert done["files"] == 2 and done["attempts"] == 1 and done["error"] is None
        assert len(done["study_uids"]) == 1
        assert {v["sop_instance_uid"] for v in done["views"]} == set(simulated_study.truths)
        assert len(done["studies"]) == 1

        for view in done["views"]:
            assert view["laterality"] in ("L", "R") and view["view"] in ("CC", "MLO", "ML")
            files = view["files"]
            assert set(files) >= {
                "report.json",
                "heatmap.png",
                "heatmap_color.png",
                "overlay.png",
                "duct_mask.png",
                "seg.dcm",
                "sr.dcm",
                "sc.dcm",
                "image.png",
            }
            report = client.get(files["report.json"])
            assert report.status_code == 200
            assert report.headers["content-type"] == "application/json"
            validate_report(report.json())
            assert report.json()["image"]["sop_instance_uid"] == view["sop_instance_uid"]
            for name in ("heatmap.png", "heatmap_color.png", "overlay.png", "duct_mask.png"):
                r = client.get(files[name])
                assert r.status_code == 200 and r.headers["content-type"] == PNG, name
                size = Image.open(io.BytesIO(r.content)).size
                if name != "overlay.png":  # the overlay is a downsampled picture for people
                    assert size == (view["columns"], view["rows"]), name
            for name in ("seg.dcm", "sr.dcm", "sc.dcm"):
                r = client.get(files[name])
                assert r.status_code == 200 and r.headers["content-type"] == DICOM, name
                pydicom.dcmread(io.BytesIO(r.content))
            # The source image, 8-bit, on its original grid; also reachable by SOP UID.
            by_uid = f"/v1/analyses/{body['id']}/views/{view['sop_instance_uid']}/image.png"
            for url in (files["image.png"], by_uid):
                r = client.get(url)
                assert r.status_code == 200 and r.headers["content-type"] == PNG
                image = Image.open(io.BytesIO(r.content))
                assert image.mode == "L"
                assert image.size == (view["columns"], view["rows"])
                assert np.asarray(image).std() > 0  # an image, not a blank

        study = done["studies"][0]
        r = client.get(study["files"]["study_report.json"])
        assert r.status_code == 200
        validate_study_report(r.json())
        r = client.get(study["files"]["surgical_map.png"])
        assert r.status_code == 200 and r.headers["content-type"] == PNG

        listed = client.get("/v1/analyses").json()
        assert body["id"] in [a["id"] for a in listed]
        assert client.get("/v1/analyses", params={"limit": 1}).json()[0]["id"] == listed[0]["id"]

        # Unknown things: 404, not 500.
        base = f"/v1/analyses/{body['id']}"
        assert client.get("/v1/analyses/20000101T000000000000-deadbeef").status_code == 404
        assert client.get(f"{base}/views/1.2.3.4/report.json").status_code == 404
        assert client.get(f"{base}/views/{view['folder']}/secret.txt").status_code == 404
        assert client.get(f"{base}/studies/{study['folder']}/status.json").status_code == 404
        assert client.get(f"{base}/studies/study_1.2.3_L/study_report.json").status_code == 404


def test_application_dicom_and_sync(http_server, simulated_study, wait_analysis):
    image = simulated_study.images[0]
    with http_server.client() as client:
        r = client.post("/v1/analyses", content=image.read_bytes(), headers={"Content-Type": DICOM})
        assert r.status_code == 202, r.text
        analysis_id = r.json()["id"]
        done = wait_analysis(client, analysis_id)
        assert done["state"] == "done" and len(done["views"]) == 1

        r = client.post(
            "/v1/analyses/sync", content=image.read_bytes(), headers={"Content-Type": DICOM}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["state"] == "done"
        assert len(body["reports"]) == 1 and len(body["study_reports"]) == 1
        validate_report(body["reports"][0])
        validate_study_report(body["study_reports"][0])
        assert (
            body["reports"][0]["image"]["sop_instance_uid"] == done["views"][0]["sop_instance_uid"]
        )
        # Multipart works on the sync route too; more than one image does not.
        r = client.post("/v1/analyses/sync", files=_multipart([image]))
        assert r.status_code == 200 and r.json()["state"] == "done"
        r = client.post("/v1/analyses/sync", files=_multipart(simulated_study.images))
        assert r.status_code == 400 and "exactly one" in r.json()["detail"]

    # Metrics after these analyses: request counts by route template, finished analyses.
    text = httpx.get(f"{http_server.base_url}/metrics").text
    assert 'route="/v1/analyses/sync"' in text
    assert 'route="/v1/analyses/{analysis_id}"' in text
    assert "ductai_http_request_duration_seconds_bucket" in text
    assert "ductai_queue_length 0.0" in text
    assert 'ductai_analyses_finished_total{source="http",state="done"}' in text
    assert 'ductai_analyses_finished_total{source="http-sync",state="done"}' in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_auth(http_server):
    url = http_server.base_url
    token = http_server.token
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"}):
        r = httpx.get(f"{url}/v1/analyses", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "token" in r.json()["detail"]
        r = httpx.post(f"{url}/v1/analyses", headers=headers, content=b"x")
        assert r.status_code == 401
    r = httpx.get(f"{url}/v1/analyses", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    # Probes, metrics (metrics_auth: false), docs and the viewer need no token.
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert httpx.get(f"{url}{path}").status_code == 200, path


def test_probes_docs_viewer_and_logs(http_server, simulated_study):
    url = http_server.base_url
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["ready"] is True and ready["workers"] == 1 and ready["queue_size"] == 8
    spec = httpx.get(f"{url}/openapi.json").json()
    for path in (
        "/v1/analyses",
        "/v1/analyses/sync",
        "/v1/analyses/{analysis_id}",
        "/v1/analyses/{analysis_id}/views/{sop_uid}/{name}",
        "/v1/analyses/{analysis_id}/studies/{study_folder}/{name}",
    ):
        assert path in spec["paths"], path
    assert "multipart/form-data" in spec["paths"]["/v1/analyses"]["post"]["requestBody"]["content"]
    root = httpx.get(f"{url}/", follow_redirects=False)
    assert root.status_code in (302, 307) and root.headers["location"].endswith("/viewer/")
    if (STATIC_DIR / "index.html").is_file():  # the viewer's own tests check its content
        viewer = httpx.get(f"{url}/viewer/")
        assert viewer.status_code == 200 and viewer.headers["content-type"].startswith("text/html")

    # One JSON line per request with the route template; no patient identity anywhere.
    records = http_server.log_records()
    requests = [r for r in records if r.get("event") == "request"]
    assert requests and all({"method", "route", "status", "ms"} <= set(r) for r in requests)
    assert any(r["route"] == "/readyz" for r in requests)
    posts = [r for r in requests if r["route"] == "/v1/analyses" and r["status"] == 202]
    assert posts and all(r["analysis_id"] for r in posts)  # the new id, in the POST's line
    finished = [r for r in records if r.get("event") == "analysis_finished"]
    assert finished and all(r["state"] in ("done", "failed") for r in finished)
    text = http_server.log_text()
    for image in simulated_study.images:
        ds = pydicom.dcmread(image, stop_before_pixels=True)
        for value in (str(ds.PatientName), str(ds.PatientID)):
            assert value and value not in text, value


# ---- a full queue: in-process server, a predictor that waits until released ------------------
class _BlockedPredictor:
    def __init__(self) -> None:
        self.release = threading.Event()

    def predict(self, image):
        self.release.wait(60)
        raise RuntimeError("released by the test")


@contextlib.contextmanager
def _in_process_server(service, config):
    """uvicorn on loopback in a thread around ``create_app(service, config)``."""
    import uvicorn

    from ductai.inference.serve.http_api import create_app

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service, config), host="127.0.0.1", port=config.port, log_config=None
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _config(tmp_path, **kwargs):
    from ductai.inference.serve.config import ServeConfig

    return ServeConfig(port=_free_port(), data_dir=tmp_path / "data", tokens=[TOKEN], **kwargs)


@pytest.fixture
def blocked_server(tmp_path):
    from ductai.inference.serve.service import AnalysisService

    config = _config(tmp_path, queue_size=1)
    predictor = _BlockedPredictor()
    service = AnalysisService(config, predictor=predictor)
    service.start()
    try:
        with _in_process_server(service, config) as url:
            yield url, service, predictor
            predictor.release.set()
    finally:
        predictor.release.set()
        service.stop(10)


def test_not_ready_until_started(tmp_path, simulated_study):
    """HTTP answers while the model loads: alive, not ready, submissions get 503."""
    from ductai.inference.serve.service import AnalysisService

    config = _config(tmp_path)
    predictor = _BlockedPredictor()
    service = AnalysisService(config, predictor=predictor)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": DICOM}
    body = simulated_study.images[0].read_bytes()
    with _in_process_server(service, config) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        r = httpx.post(f"{url}/v1/analyses", content=body, headers=headers)
        assert r.status_code == 503 and "retry-after" in r.headers
        assert "not ready" in r.json()["detail"]
        service.start()
        try:
            assert httpx.get(f"{url}/readyz").status_code == 200
            r = httpx.post(f"{url}/v1/analyses", content=body, headers=headers)
            assert r.status_code == 202
        finally:
            predictor.release.set()
            service.stop(10)
        assert httpx.get(f"{url}/readyz").status_code == 503  # stopped: not ready again


def test_full_queue_answers_503_with_retry_after(blocked_server, simulated_study):
    url, service, predictor = blocked_server
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": DICOM}
    body = simulated_study.images[0].read_bytes()
    first = httpx.post(f"{url}/v1/analyses", content=body, headers=headers)
    assert first.status_code == 202
    deadline = time.monotonic() + 30
    while service.workers_busy < 1 and time.monotonic() < deadline:
        time.sleep(0.02)  # the worker took the first one; the queue is empty again
    second = httpx.post(f"{url}/v1/analyses", content=body, headers=headers)
    assert second.status_code == 202
    third = httpx.post(f"{url}/v1/analyses", content=body, headers=headers)
    assert third.status_code == 503
    assert int(third.headers["retry-after"]) >= 1
    assert "queue is full" in third.json()["detail"]
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["queue_length"] == 1 and ready["workers_busy"] == 1
    metrics = httpx.get(f"{url}/metrics").text
    assert 'ductai_http_requests_total{method="POST",route="/v1/analyses",status="503"} 1.0' in (
        metrics
    )
    # Released: both end (the blocked predictor raises, so they fail with its message).
    predictor.release.set()
    for response in (first, second):
        analysis = service.wait(response.json()["id"], 60)
        assert analysis.state == "failed" and "released by the test" in analysis.error
    status = json.loads((service.store.folder(first.json()["id"]) / "status.json").read_text())
    assert status["state"] == "failed"
    assert httpx.post(f"{url}/v1/analyses", content=body, headers=headers).status_code == 202
