"""Helpers of the DICOM node tests: free ports, a dcmtk storescp receiver, small data sets and a
fake AnalysisService (results without a model, for the fast tests)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from ductai.inference.serve.config import (
    DicomConfig,
    DicomDestination,
    RetryConfig,
    ServeConfig,
)

HAVE_DCMTK = all(shutil.which(tool) for tool in ("storescu", "storescp", "echoscu", "dcmdump"))
MG = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage, For Presentation


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def serve_config(data_dir: Path, dest_port: int | None = None, **dicom) -> ServeConfig:
    """A ServeConfig for tests: loopback, port 0 (any free port), fast settle and retries."""
    destination = (
        DicomDestination(ae_title="DEST", host="127.0.0.1", port=dest_port) if dest_port else None
    )
    values = {
        "port": 0,
        "settle_seconds": 0.5,
        "destination": destination,
        "retry": RetryConfig(initial_s=0.2, max_s=1.0),
        **dicom,
    }
    return ServeConfig(data_dir=data_dir, dicom=DicomConfig(**values))


def image_dataset(study_uid: str | None = None, sop_uid: str | None = None, pixels=True):
    """A small MG image (or the same without Pixel Data) with its file meta."""
    ds = Dataset()
    ds.SOPClassUID = MG
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MG"
    ds.PatientName = "SECRET^NAME"
    ds.PatientID = "SECRET-ID-42"
    if pixels:
        ds.Rows = ds.Columns = 64  # JPEG 2000 needs room for its resolution levels
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = (np.arange(64 * 64, dtype=np.uint16) % 4096).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def result_dataset(source: Dataset, kind: str) -> Dataset:
    """A stand-in for a result file (a tiny Secondary Capture in the source's study)."""
    ds = image_dataset(str(source.StudyInstanceUID), pixels=True)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(source.SOPInstanceUID), kind])
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "OT"
    ds.Manufacturer = "ductai"
    del ds.PatientName, ds.PatientID
    return ds


@dataclass
class FakeAnalysis:
    id: str
    state: str
    error: str | None = None


@dataclass
class FakeService:
    """submit/get/results_dir/add_listener as AnalysisService has them; 'analyses' finish when
    `finish()` is called (or at once with auto=True), writing one stand-in result per kind."""

    root: Path
    auto: bool = True
    submitted: list[tuple[str, list[Path]]] = field(default_factory=list)
    analyses: dict[str, FakeAnalysis] = field(default_factory=dict)
    listeners: list = field(default_factory=list)
    full: bool = False  # raise QueueFull on submit

    def add_listener(self, fn) -> None:
        self.listeners.append(fn)

    def submit(self, files, *, source, analysis_id=None, move=False):
        from ductai.inference.serve.service import QueueFull

        if analysis_id in self.analyses:
            return self.analyses[analysis_id]
        if self.full:
            raise QueueFull(8, 1)
        assert source == "dicom" and not move
        self.submitted.append((analysis_id, [Path(f) for f in files]))
        analysis = self.analyses[analysis_id] = FakeAnalysis(analysis_id, "queued")
        if self.auto:
            self.finish(analysis_id)
        return analysis

    def finish(self, analysis_id: str, fail: bool = False) -> None:
        files = dict(self.submitted)[analysis_id]
        if fail:
            self.analyses[analysis_id] = FakeAnalysis(analysis_id, "failed", "broken")
        else:
            for f in files:
                source = pydicom.dcmread(f, stop_before_pixels=True)
                for kind in ("seg", "sr", "sc"):
                    path = self.results_dir(analysis_id) / str(source.SOPInstanceUID)
                    path.mkdir(parents=True, exist_ok=True)
                    result_dataset(source, kind).save_as(
                        path / f"{kind}.dcm", enforce_file_format=True
                    )
            self.analyses[analysis_id] = FakeAnalysis(analysis_id, "done")
        for fn in self.listeners:
            fn(self.analyses[analysis_id])

    def get(self, analysis_id):
        return self.analyses.get(analysis_id)

    def results_dir(self, analysis_id) -> Path:
        return self.root / analysis_id / "results"


class StoreSCP:
    """dcmtk's storescp on a loopback port, in its own process group; files in `folder`."""

    def __init__(self, folder: Path, port: int, ae_title: str = "DEST") -> None:
        self.folder = folder
        self.port = port
        self.ae_title = ae_title
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> StoreSCP:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._log = open(self.folder.parent / f"storescp-{self.port}.log", "ab")  # noqa: SIM115 (closed in stop)
        # +uf: a duplicate instance becomes a second file, so "exactly once" is countable.
        self.proc = subprocess.Popen(
            [
                "storescp",
                "-aet",
                self.ae_title,
                "-od",
                str(self.folder),
                "+uf",
                "+xa",
                "-dhl",
                str(self.port),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._listening, 10, f"storescp on port {self.port}")
        return self

    def _listening(self) -> bool:
        assert self.proc.poll() is None, f"storescp exited with {self.proc.returncode}"
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()

    def received(self) -> Counter:
        """SOPInstanceUID -> number of files the receiver wrote for it."""
        return Counter(
            str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in self.folder.iterdir()
            if p.is_file()
        )


def send_with_pynetdicom(datasets, port: int, called="DUCTAI", calling="MODALITY"):
    """C-STORE `datasets` with pynetdicom; returns the statuses (int) or 'rejected'."""
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    for sop, ts in {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}:
        ae.add_requested_context(sop, ts)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return "rejected"
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()
