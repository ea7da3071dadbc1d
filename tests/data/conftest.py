"""DICOM test files built with pydicom: small MG images with known anatomy and orientation."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

ROWS, COLS = 60, 48
AIR, TISSUE, ROW_MARK, NIPPLE = 100, 1500, 2500, 3500  # 12-bit values, contrast/markers bright

# The standard hanging (docs/conventions.md): R nipple to the image's left, L to the right.
STANDARD_ORIENTATION = {
    ("R", "CC"): ("P", "L"),
    ("L", "CC"): ("A", "R"),
    ("R", "MLO"): ("P", "F"),
    ("L", "MLO"): ("A", "F"),
    ("R", "ML"): ("P", "F"),
    ("L", "ML"): ("A", "F"),
    ("R", "XCCL"): ("P", "L"),
    ("L", "XCCL"): ("A", "R"),
}
MEDIAL = {"R": "L", "L": "R"}


def canonical_phantom() -> np.ndarray:
    """Breast against the chest wall (column 0), nipple marker at the right tip, and a marker
    in the bottom rows (medial for CC, feet for ML/MLO): how canonical space must look."""
    image = np.full((ROWS, COLS), AIR, dtype=np.uint16)
    r, c = np.mgrid[:ROWS, :COLS]
    inside = ((r - ROWS / 2) / (ROWS / 2)) ** 2 + (c / (COLS - 4)) ** 2 <= 1
    image[inside] = TISSUE
    image[ROWS // 2 - 2 : ROWS // 2 + 2, COLS - 6 : COLS - 3] = NIPPLE
    image[ROWS - 12 : ROWS - 8, 4:10] = ROW_MARK
    return image


def stored_phantom(laterality: str, view: str, orientation: tuple[str, str]) -> np.ndarray:
    """The phantom as stored under `orientation`, derived from the DICOM definition only:
    the first value is where columns increase towards, the second where rows increase."""
    image = canonical_phantom()
    if "P" in orientation[0]:  # columns run to posterior: nipple on the left
        image = image[:, ::-1]
    lateral_view = view in ("MLO", "ML")
    marker_down = "F" in orientation[1] if lateral_view else MEDIAL[laterality] in orientation[1]
    if not marker_down:
        image = image[::-1, :]
    return np.ascontiguousarray(image)


def make_dataset(
    pixels: np.ndarray | None = None,
    *,
    laterality: str | None = "R",
    view: str | None = "CC",
    orientation: tuple[str, str] | str | None = "standard",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = (1800.0, 3600.0),
    voi_lut: np.ndarray | None = None,
    pixel_spacing: tuple[float, float] | None = (0.1, 0.1),
    imager_spacing: tuple[float, float] | None = None,
    magnification: float | None = None,
    modality: str = "MG",
) -> FileDataset:
    """A single-frame MG image; `orientation="standard"` uses STANDARD_ORIENTATION."""
    if orientation == "standard":
        orientation = STANDARD_ORIENTATION[(laterality, view)]
    if pixels is None:
        pixels = (
            stored_phantom(laterality or "R", view or "CC", orientation)
            if orientation
            else canonical_phantom()
        )
        if photometric == "MONOCHROME1":
            pixels = (2**bits_stored - 1 - pixels).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "P001"
    ds.Modality = modality
    if laterality:
        ds.ImageLaterality = laterality
    if view:
        ds.ViewPosition = view
    if orientation:
        ds.PatientOrientation = list(orientation)
    if pixel_spacing:
        ds.PixelSpacing = list(pixel_spacing)
    if imager_spacing:
        ds.ImagerPixelSpacing = list(imager_spacing)
    if magnification:
        ds.EstimatedRadiographicMagnificationFactor = magnification
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "US"
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut), 0, 16]
        item.add_new("LUTData", "US", [int(v) for v in voi_lut])
        ds.VOILUTSequence = Sequence([item])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def compress(ds: Dataset, transfer_syntax) -> Dataset:
    """Encode with pydicom's encoders (openjpeg for J2K, pyjpegls for JPEG-LS, RLE)."""
    plugin = {JPEG2000Lossless: "pylibjpeg", JPEGLSLossless: "pyjpegls", RLELossless: "pydicom"}
    ds.compress(transfer_syntax, encoding_plugin=plugin[transfer_syntax])
    return ds


def dcmtk_jpeg_lossless(src: Path, dst: Path) -> Path:
    """JPEG lossless SV1 (process 14) via dcmtk, an independent encoder."""
    subprocess.run(["dcmcjpeg", "+e1", str(src), str(dst)], check=True, capture_output=True)
    return dst


@pytest.fixture
def need_dcmcjpeg():
    if shutil.which("dcmcjpeg") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("dcmcjpeg (dcmtk) must be installed in CI")
        pytest.skip("dcmcjpeg (dcmtk) not installed")


@pytest.fixture
def dicom():
    """The builders above, as a fixture (test modules cannot import a conftest reliably)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        make=make_dataset,
        write=write,
        compress=compress,
        jpeg_lossless=dcmtk_jpeg_lossless,
        phantom=canonical_phantom,
        stored_phantom=stored_phantom,
        standard=STANDARD_ORIENTATION,
        values=SimpleNamespace(air=AIR, tissue=TISSUE, row_mark=ROW_MARK, nipple=NIPPLE),
    )
