"""Read one DICOM galactogram: pixels, spacing, laterality, view, orientation; tolerant, clear."""

from __future__ import annotations

import logging
import re
import warnings as pywarnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ductai.data.errors import (
    ImageReadError,
    MissingSpacingError,
    NoPixelDataError,
    NotDicomError,
    TruncatedFileError,
    UnsupportedImageError,
    UnsupportedTransferSyntaxError,
)
from ductai.data.galactogram import Galactogram, spacing_pair
from ductai.data.intensity import IntensityParams
from ductai.data.labels import UNKNOWN, VIEWS

log = logging.getLogger(__name__)

SPACING_HINT = "give it with --pixel-spacing MM, or pixel_spacing=MM in Python"

# Python packages that decode each family of compressed transfer syntaxes.
_PLUGINS = {
    "1.2.840.10008.1.2.4.5": "pylibjpeg pylibjpeg-libjpeg",  # JPEG baseline/extended/lossless
    "1.2.840.10008.1.2.4.8": "pyjpegls (or pylibjpeg pylibjpeg-libjpeg)",  # JPEG-LS
    "1.2.840.10008.1.2.4.9": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.20": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",  # RLE
}

# ViewCodeSequence (CID 4014); pydicom's Code compares SRT codes equal to their SCT successors.
_VIEW_CODES: list[tuple[Code, str]] = [
    (codes.SCT.CranioCaudal, "CC"),
    (codes.SCT.MedioLateralObliqueProjection, "MLO"),
    (codes.SCT.MedioLateralProjection, "ML"),
    (codes.SCT.LateroMedial, "LM"),
    (codes.SCT.LateroMedialOblique, "LMO"),
    (codes.SCT.CranioCaudalExaggeratedLaterally, "XCCL"),
    (codes.SCT.CranioCaudalExaggeratedMedially, "XCCM"),
    (codes.SCT.CaudoCranial, "FB"),
    (codes.SCT.SuperolateralToInferomedialOblique, "SIO"),
    (codes.SCT.AxillaryTail, "AT"),
    (codes.SCT.Cleavage, "CV"),
]
_VIEW_ALIASES = {"LATERAL": "ML", "MEDIOLATERAL": "ML", "OBLIQUE": "MLO", "CRANIOCAUDAL": "CC"}
# Free-text fields that often name the view when the coded attributes are missing ("R MLO",
# "LCC", "Right CC"); read last, with a warning.
_DESCRIPTIONS = ("SeriesDescription", "ProtocolName", "ImageComments")
_VIEW_IN_TEXT = re.compile(r"(?<![A-Z])(RIGHT|LEFT|R|L)?[ _-]?(XCCL|XCCM|MLO|CC|ML)(?![A-Z])")
_SIDE_IN_TEXT = re.compile(r"(?<![A-Z])(RIGHT|LEFT)(?![A-Z])")


def _from_description(ds: Dataset) -> tuple[str | None, str | None, str]:
    """(laterality, view, "Keyword 'text'") named by the first free-text field that names any."""
    for keyword in _DESCRIPTIONS:
        text = str(ds.get(keyword, "") or "").upper()
        found = _VIEW_IN_TEXT.search(text)
        side = found.group(1) if found and found.group(1) else None
        if side is None and (word := _SIDE_IN_TEXT.search(text)):
            side = word.group(1)
        view = found.group(2) if found else None
        if side or view:
            return (side[:1] if side else None), view, f"{keyword} {text.strip()!r}"
    return None, None, ""


def read_galactogram(
    path: str | Path, pixel_spacing: float | tuple[float, float] | None = None
) -> Galactogram:
    """Read a single-frame greyscale DICOM image (MG, or any modality with a warning).

    `pixel_spacing` (mm, one number or row/column) is used only when the file carries none.
    Raises an `ImageReadError` subclass naming the file when pixels or geometry are unknowable.
    """
    path = Path(path)
    warnings: list[str] = []
    with _collect_pydicom_warnings(warnings):
        ds = _read_dataset(path)
        _check_image_kind(ds, path)
        _repair_pixel_description(ds, warnings)
        transfer_syntax = _transfer_syntax(ds, path, warnings)
        stored = _decode(ds, path, transfer_syntax)
    spacing, source = _spacing(ds, path, pixel_spacing, warnings)
    modality = str(ds.get("Modality", "") or "")
    if modality != "MG":
        warnings.append(f"Modality is {modality or 'missing'!r}, not 'MG' (mammography)")
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not ds.get(keyword):
            warnings.append(f"{keyword} is missing")
    image = Galactogram(
        path=path,
        stored=stored,
        intensity=IntensityParams.from_dataset(ds, warnings),
        pixel_spacing_mm=spacing,
        spacing_source=source,
        laterality=_laterality(ds, warnings),
        view=_view(ds, warnings),
        patient_orientation=_patient_orientation(ds, warnings),
        modality=modality,
        transfer_syntax=transfer_syntax.name if transfer_syntax else "",
        sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        patient_id=str(ds.get("PatientID", "") or ""),
        warnings=warnings,
    )
    for warning in warnings:
        log.debug("%s: %s", path, warning)
    return image


@contextmanager
def _collect_pydicom_warnings(warnings: list[str]):
    """pydicom warns on small standard breaks; keep them with the image instead of on stderr."""
    with pywarnings.catch_warnings(record=True) as caught:
        pywarnings.simplefilter("always")
        try:
            yield
        finally:
            for item in caught:
                text = f"pydicom: {item.message}"
                if text not in warnings:
                    warnings.append(text)


def _read_dataset(path: Path) -> Dataset:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        pass  # maybe a DICOM stream without the 128-byte preamble: retry below
    except (EOFError, OSError) as exc:
        raise TruncatedFileError(path, f"the file ends inside its DICOM header ({exc})") from exc
    except Exception as exc:  # pydicom raises many kinds on corrupt headers
        raise ImageReadError(path, f"unreadable DICOM header: {exc}") from exc
    try:
        ds = pydicom.dcmread(path, force=True)
        has_image_module = "PixelData" in ds or "SOPClassUID" in ds or "Rows" in ds
    except Exception:
        has_image_module = False
    if not has_image_module:
        raise NotDicomError(path, "not a DICOM file", "no 'DICM' marker and no DICOM elements")
    return ds


def _check_image_kind(ds: Dataset, path: Path) -> None:
    if "PixelData" not in ds:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        what = f"only {other[0]}" if other else "no PixelData"
        sop = ds.get("SOPClassUID")
        if ("Rows" in ds or (sop and "Image Storage" in sop.name)) and not other:
            raise TruncatedFileError(
                path, "an image header without pixel data: the file is truncated or stripped"
            )
        kind = f" (SOP class: {sop.name})" if sop else ""
        raise NoPixelDataError(path, f"{what}: not an image{kind}")
    samples = int(ds.get("SamplesPerPixel") or 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2", ""):
        raise UnsupportedImageError(
            path,
            f"colour image (SamplesPerPixel={samples}, PhotometricInterpretation={photometric})",
            "ductai reads greyscale mammograms (MONOCHROME1/MONOCHROME2) only",
        )
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise UnsupportedImageError(
            path,
            f"{frames} frames: tomosynthesis/multi-frame is not supported yet",
            "export a single 2D view (e.g. the synthetic 2D or a projection) as its own file",
        )
    for keyword in ("Rows", "Columns", "BitsAllocated"):
        if not ds.get(keyword):
            raise ImageReadError(path, f"{keyword} is missing, so the pixels cannot be decoded")


def _repair_pixel_description(ds: Dataset, warnings: list[str]) -> None:
    """Fill missing Type 1 pixel attributes that have one sensible value, with a warning."""
    defaults = {
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "BitsStored": int(ds.BitsAllocated),
        "PixelRepresentation": 0,
    }
    for keyword, value in defaults.items():
        if ds.get(keyword) in (None, ""):
            setattr(ds, keyword, value)
            warnings.append(f"{keyword} is missing; assumed {value}")
    if ds.get("HighBit") in (None, ""):
        ds.HighBit = int(ds.BitsStored) - 1


def _transfer_syntax(ds: Dataset, path: Path, warnings: list[str]):
    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if uid is None:
        warnings.append("no TransferSyntaxUID in the file meta; guessed from the data set")
        return None
    if not uid.is_compressed:
        return uid
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise UnsupportedTransferSyntaxError(
            path, f"transfer syntax {uid.name} ({uid}) cannot be decoded by pydicom"
        ) from exc
    if not decoder.is_available:
        plugin = next((v for k, v in _PLUGINS.items() if str(uid).startswith(k)), "a decoder")
        raise UnsupportedTransferSyntaxError(
            path,
            f"no decoder installed for {uid.name} ({uid})",
            f"pip install {plugin}",
        )
    return uid


def _decode(ds: Dataset, path: Path, transfer_syntax) -> np.ndarray:
    expected = int(ds.Rows) * int(ds.Columns) * ((int(ds.BitsAllocated) + 7) // 8)
    native = transfer_syntax is not None and not transfer_syntax.is_compressed
    if native and len(ds.PixelData) < expected:
        raise TruncatedFileError(
            path,
            f"pixel data is {len(ds.PixelData)} bytes, {ds.Rows}x{ds.Columns} pixels need "
            f"{expected}: the file is truncated",
        )
    try:
        stored = ds.pixel_array
    except Exception as exc:
        text = str(exc).lower()
        if any(word in text for word in ("truncat", "length", "end of", "too short", "less than")):
            raise TruncatedFileError(path, f"pixel data is incomplete: {exc}") from exc
        name = transfer_syntax.name if transfer_syntax else "unknown transfer syntax"
        raise ImageReadError(path, f"pixel data could not be decoded ({name}): {exc}") from exc
    if stored.ndim != 2:
        raise UnsupportedImageError(path, f"decoded pixels have shape {stored.shape}, not 2D")
    return stored


def _spacing(ds: Dataset, path: Path, user, warnings: list[str]):
    """(row, column) spacing in mm and its source; PixelSpacing is preferred (calibrated)."""
    found = _valid_pair(ds, "PixelSpacing", warnings)
    source = "PixelSpacing"
    if found is None:
        found = _valid_pair(ds, "ImagerPixelSpacing", warnings)
        source = "ImagerPixelSpacing"
        magnification = ds.get("EstimatedRadiographicMagnificationFactor")
        if found is not None and magnification:
            factor = float(magnification)
            if factor > 0:
                # ImagerPixelSpacing is at the detector; the object is smaller by this factor.
                found = (found[0] / factor, found[1] / factor)
                source = "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
    if found is not None:
        if user is not None and spacing_pair(user) != found:
            warnings.append(f"the file's {source} {found} is used, not the given {user}")
        return found, source
    if user is not None:
        return spacing_pair(user), "user"
    raise MissingSpacingError(
        path, "no PixelSpacing or ImagerPixelSpacing: pixel size unknown", SPACING_HINT
    )


def _valid_pair(ds: Dataset, keyword: str, warnings: list[str]) -> tuple[float, float] | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return spacing_pair(list(value))
    except (TypeError, ValueError):
        warnings.append(f"{keyword} {value!r} is not a valid pair of positive numbers; ignored")
        return None


def _laterality(ds: Dataset, warnings: list[str]) -> str:
    value = _side(ds.get("ImageLaterality"))
    if value:
        return value
    warnings.append("ImageLaterality is missing")
    value = _side(ds.get("Laterality"))
    if value:
        warnings.append("laterality taken from the series' Laterality")
        return value
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for item in ds.get(group) or []:
            for anatomy in item.get("FrameAnatomySequence") or []:
                value = _side(anatomy.get("FrameLaterality"))
                if value:
                    warnings.append("laterality taken from FrameLaterality")
                    return value
    side, _, source = _from_description(ds)
    if side:
        warnings.append(f"laterality {side} taken from the {source}")
        return side
    warnings.append("laterality unknown (no ImageLaterality, Laterality or FrameLaterality)")
    return UNKNOWN


def _side(value) -> str | None:
    text = str(value or "").strip().upper()
    return text if text in ("L", "R") else None


def _view(ds: Dataset, warnings: list[str]) -> str:
    position = str(ds.get("ViewPosition", "") or "").strip().upper().replace(" ", "")
    position = _VIEW_ALIASES.get(position, position)
    if position[:1] in ("L", "R") and position[1:] in VIEWS and position not in VIEWS:
        position = position[1:]  # "RCC", "LMLO": laterality written into the view
    if position in VIEWS:
        return position
    for item in ds.get("ViewCodeSequence") or []:
        try:
            code = Code(str(item.CodeValue), str(item.CodingSchemeDesignator), "")
        except Exception:
            continue
        for known, name in _VIEW_CODES:
            if code == known:
                return name
        warnings.append(f"unknown view code {item.get('CodeValue')} ({item.get('CodeMeaning')})")
    _, view, source = _from_description(ds)
    if view in VIEWS:
        warnings.append(f"view {view} taken from the {source}")
        return view
    if position:
        warnings.append(f"unknown ViewPosition {position!r}")
    else:
        warnings.append("view unknown (no ViewPosition or ViewCodeSequence)")
    return UNKNOWN


def _patient_orientation(ds: Dataset, warnings: list[str]) -> tuple[str, str] | None:
    value = ds.get("PatientOrientation")
    parts = [str(v).strip().upper() for v in (value or [])]
    if not parts:
        warnings.append("PatientOrientation is missing")
        return None
    if len(parts) != 2 or not all(p and set(p) <= set("APRLHF") for p in parts):
        warnings.append(f"PatientOrientation {parts} is not valid; ignored")
        return None
    return (parts[0], parts[1])


def read_identity(path: str | Path) -> dict[str, str] | None:
    """Patient, study, laterality and view from a DICOM header (no pixels); None if not DICOM."""
    try:
        with pywarnings.catch_warnings():
            pywarnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return None
    ignored: list[str] = []
    return {
        "patient_id": str(ds.get("PatientID", "") or ""),
        "study_instance_uid": str(ds.get("StudyInstanceUID", "") or ""),
        "laterality": _laterality(ds, ignored),
        "view": _view(ds, ignored),
    }
