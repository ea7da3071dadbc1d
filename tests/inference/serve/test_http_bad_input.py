"""Bad input against a real `ductai serve` process: every bad upload gets a clear 4xx naming
the file and the problem (never a 500), identifiers cannot reach outside the data folder,
and the server keeps serving after each."""

from __future__ import annotations

import copy
import io

import httpx
import pydicom
import pytest
from pydicom.config import settings as pydicom_settings

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning"),
]

DICOM = "application/dicom"


@pytest.fixture(scope="module")
def source(simulated_study) -> pydicom.Dataset:
    return pydicom.dcmread(simulated_study.images[0])


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    old = pydicom_settings.writing_validation_mode
    pydicom_settings.writing_validation_mode = 0  # IGNORE: the tests write invalid values
    try:
        ds.save_as(buffer, enforce_file_format=True)
    finally:
        pydicom_settings.writing_validation_mode = old
    return buffer.getvalue()


def _variant(source: pydicom.Dataset, change) -> bytes:
    ds = copy.deepcopy(source)  # Dataset.copy() is shallow: changes would leak
    change(ds)
    return _bytes(ds)


def _still_serving(server) -> None:
    assert httpx.get(f"{server.base_url}/healthz").status_code == 200
    assert httpx.get(f"{server.base_url}/readyz").status_code == 200


def _post_file(client: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return client.post("/v1/analyses", files=[("files", (name, data, DICOM))])


def test_uploads_that_are_not_dicom_get_415(http_server, simulated_study):
    good = simulated_study.images[0].read_bytes()
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 400
    with http_server.client() as client:
        cases = {
            "empty.dcm": (b"", "empty file"),
            "notes.txt": (b"hello, this is not an image\n" * 50, "not a DICOM file"),
            "picture.png": (png, "not a DICOM file"),
            "stub.dcm": (good[:100], "not a DICOM file"),  # cut inside the preamble
        }
        for name, (data, words) in cases.items():
            r = _post_file(client, name, data)
            assert r.status_code == 415, (name, r.text)
            assert name in r.json()["detail"] and words in r.json()["detail"], r.text
            _still_serving(http_server)
        # The raw-body route says the same.
        r = client.post("/v1/analyses", content=b"", headers={"Content-Type": DICOM})
        assert r.status_code == 415 and "empty file" in r.json()["detail"]
        r = client.post("/v1/analyses", content=good, headers={"Content-Type": "image/png"})
        assert r.status_code == 415 and "Content-Type" in r.json()["detail"]
        r = client.post("/v1/analyses", content=good)  # no Content-Type at all
        assert r.status_code == 415
        # A good file and a bad one: refused together, the bad one named.
        r = client.post(
            "/v1/analyses",
            files=[("files", ("good.dcm", good, DICOM)), ("files", ("bad.txt", b"x" * 300, DICOM))],
        )
        assert r.status_code == 415 and "bad.txt" in r.json()["detail"]
        assert "good.dcm" not in r.json()["detail"]
    _still_serving(http_server)


def test_unusable_dicom_gets_422_naming_the_tag(http_server, source, simulated_study):
    good = simulated_study.images[0].read_bytes()

    def modality(ds):
        ds.Modality = "CT"

    def no_pixels(ds):
        del ds.PixelData

    def no_rows(ds):
        del ds.Rows

    cases = {
        "ct.dcm": (_variant(source, modality), "Modality (0008,0060)"),
        "nopixels.dcm": (_variant(source, no_pixels), "PixelData (7FE0,0010)"),
        "norows.dcm": (_variant(source, no_rows), "Rows (0028,0010)"),
        "header-only.dcm": (good[:1500], "PixelData (7FE0,0010)"),
        "cut.dcm": (good[: len(good) - 5000], "truncated"),
    }
    with http_server.client() as client:
        for name, (data, words) in cases.items():
            r = _post_file(client, name, data)
            assert r.status_code == 422, (name, r.text)
            detail = r.json()["detail"]
            assert name in detail and words in detail, detail
            _still_serving(http_server)
        # The sync route checks the same way.
        r = client.post(
            "/v1/analyses/sync", content=cases["ct.dcm"][0], headers={"Content-Type": DICOM}
        )
        assert r.status_code == 422 and "Modality" in r.json()["detail"]
        # Multipart without a 'files' part, or with a text field only.
        r = client.post("/v1/analyses", files=[("image", ("a.dcm", good, DICOM))])
        assert r.status_code == 400 and "'files'" in r.json()["detail"]
        r = client.post("/v1/analyses", files=[("files", (None, b"not a file"))])
        assert r.status_code == 400 and "text, not a file" in r.json()["detail"]
        r = client.post("/v1/analyses", data={"files": "x"})  # urlencoded form
        assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    metrics = httpx.get(f"{http_server.base_url}/metrics").text
    assert 'ductai_uploads_rejected_total{status="422"}' in metrics
    _still_serving(http_server)


def test_too_large_gets_413(http_server):
    limit = int(http_server.config["max_request_mb"] * 1024 * 1024)
    big = b"\0" * (limit + 1024)
    with http_server.client() as client:
        # Refused on Content-Length, before the body is read.
        r = client.post("/v1/analyses", content=big, headers={"Content-Type": DICOM})
        assert r.status_code == 413 and "max_request_mb" in r.json()["detail"]

        # Chunked (no Content-Length): refused while streaming.
        def chunks():
            for start in range(0, len(big), 1 << 20):
                yield big[start : start + (1 << 20)]

        try:
            r = client.post("/v1/analyses", content=chunks(), headers={"Content-Type": DICOM})
            assert r.status_code == 413 and "max_request_mb" in r.json()["detail"]
        except httpx.TransportError:
            pass  # the server may close the connection before the client finished sending
    _still_serving(http_server)
    uploads = http_server.data_dir / "uploads"
    assert not any(uploads.iterdir()), "a refused upload left files behind"


def test_identifiers_cannot_leave_the_data_folder(http_server):
    with http_server.client() as client:
        bad_ids = ["..", "a..b", "x" * 200, "%2E%2E", "a%20b", "..%2F..%2Fetc%2Fpasswd"]
        for bad in bad_ids:
            r = client.get(f"/v1/analyses/{bad}")
            assert r.status_code in (400, 404), (bad, r.status_code)
            assert "root:" not in r.text
        r = client.get("/v1/analyses/..")  # httpx normalises this one away: list route
        assert r.status_code in (200, 400, 404)
        assert client.get("/v1/analyses/%2E%2E").status_code == 400
        r = client.get("/v1/analyses/a..b")
        assert r.status_code == 400 and "not allowed" in r.json()["detail"]
        listed = client.get("/v1/analyses").json()
        if listed:
            base = f"/v1/analyses/{listed[0]['id']}"
            for path in (
                f"{base}/views/%2E%2E/status.json",
                f"{base}/views/..%2F..%2F/report.json",
                f"{base}/views/x/..%2Fstatus.json",
                f"{base}/studies/%2E%2E/study_report.json",
                f"{base}/studies/..%2Finput/study_report.json",
            ):
                r = client.get(path)
                assert r.status_code in (400, 404, 409), (path, r.status_code)
    _still_serving(http_server)


def test_crafted_uids_stay_inside(http_server, source, wait_analysis, tmp_path):
    """A SOPInstanceUID/StudyInstanceUID made of path pieces is analysed and written under a
    hashed folder name inside the analysis; nothing appears outside."""

    def crafted(ds):
        ds.SOPInstanceUID = "../../../../evil-sop"
        ds.file_meta.MediaStorageSOPInstanceUID = "../../../../evil-sop"
        ds.StudyInstanceUID = "../../evil-study"

    data = _variant(source, crafted)
    with http_server.client() as client:
        r = _post_file(client, "crafted.dcm", data)
        assert r.status_code == 202, r.text
        done = wait_analysis(client, r.json()["id"])
        assert done["state"] == "done", done
        view = done["views"][0]
        assert view["sop_instance_uid"] == "../../../../evil-sop"
        assert "/" not in view["folder"] and ".." not in view["folder"]
        r = client.get(view["files"]["report.json"])
        assert r.status_code == 200 and r.json()["image"]["sop_instance_uid"].endswith("evil-sop")
        for study in done["studies"]:
            assert "/" not in study["folder"] and ".." not in study["folder"]
    root = http_server.folder.parent
    assert not [p for p in root.rglob("evil*")], "a crafted UID became a path"
    _still_serving(http_server)


def test_a_file_the_reader_refuses_fails_the_analysis_clearly(http_server, source, wait_analysis):
    """No pixel spacing anywhere: the upload is a valid image, the analysis says why not."""

    def no_spacing(ds):
        for keyword in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
            if keyword in ds:
                delattr(ds, keyword)

    with http_server.client() as client:
        r = _post_file(client, "nospacing.dcm", _variant(source, no_spacing))
        assert r.status_code == 202
        done = wait_analysis(client, r.json()["id"])
        assert done["state"] == "failed"
        assert "spacing" in done["error"].lower()
        assert "nospacing.dcm" in done["error"]  # the client's name for the file
        assert str(http_server.data_dir) not in done["error"]  # no server paths
        assert "nospacing.dcm" in done["file_errors"][0]["error"]
        assert done["file_errors"] and done["file_errors"][0]["stage"] == "read"
        view_url = f"/v1/analyses/{done['id']}/views/x/report.json"
        assert client.get(view_url).status_code == 404
        # And a good image after all of the above is analysed.
        good = _bytes(source)
        r = client.post("/v1/analyses/sync", content=good, headers={"Content-Type": DICOM})
        assert r.status_code == 200 and r.json()["state"] == "done"
