"""What the service trusts: bearer tokens, safe identifiers, and uploaded files.

Everything a client sends is checked here before it touches the disk layout or the queue:
identifiers that become path components (``safe_id``), paths that must stay inside the data
folder (``inside``), and uploaded files that must be usable DICOM images (``check_dicom``).
"""

from __future__ import annotations

import re
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

__all__ = [
    "IMAGE_MODALITIES",
    "DicomInfo",
    "NotDicomError",
    "UnusableDicomError",
    "UploadError",
    "check_dicom",
    "inside",
    "safe_id",
    "token_ok",
]

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
IMAGE_MODALITIES = ("MG", "DX", "CR")  # projection X-ray images a galactogram can be


def safe_id(value: str, what: str = "identifier") -> str:
    """``value`` when it can be one path component (``^[A-Za-z0-9._-]{1,128}$``, not ``.``/
    ``..``, no ``..`` inside); otherwise ValueError naming ``what``."""
    value = str(value)
    if not _SAFE_ID.match(value) or ".." in value or value in (".", ".."):
        raise ValueError(
            f"{what} {value[:80]!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', "
            "without '..'"
        )
    return value


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved, when it lies inside ``root`` (symlinks followed); else ValueError."""
    root = root.resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise ValueError(f"{path} lies outside {root}")
    return resolved


def token_ok(given: str | None, tokens: list[str]) -> bool:
    """Constant-time comparison against every configured token."""
    if not given:
        return False
    given_bytes = given.encode()
    # Compare with all of them (no early exit), so timing says nothing about which matched.
    matches = [secrets.compare_digest(given_bytes, t.encode()) for t in tokens]
    return any(matches)


class UploadError(ValueError):
    """An uploaded file the service cannot use; ``status`` is the HTTP answer."""

    status = 400

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


class NotDicomError(UploadError):
    status = 415


class UnusableDicomError(UploadError):
    status = 422


@dataclass(frozen=True)
class DicomInfo:
    sop_instance_uid: str
    study_instance_uid: str
    modality: str
    rows: int
    columns: int


def check_dicom(path: Path, name: str) -> DicomInfo:
    """Parse ``path`` (uploaded as ``name``) and check that it is a DICOM image ductai can
    analyse; raise NotDicomError (415) or UnusableDicomError (422) naming the file and tag.

    Pixels are not decoded here (the worker does that); a native (uncompressed) PixelData
    shorter than Rows x Columns x BitsAllocated says the file was cut.
    """
    size = path.stat().st_size
    if size == 0:
        raise NotDicomError(name, "empty file (0 bytes), expected a DICOM file")
    with open(path, "rb") as f:
        head = f.read(132)
    has_preamble = len(head) == 132 and head[128:132] == b"DICM"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # vendors' small standard breaks are tolerated
            ds = pydicom.dcmread(path, force=not has_preamble)
    except InvalidDicomError as exc:
        raise NotDicomError(name, f"not a DICOM file ({exc})") from None
    except Exception as exc:  # pydicom raises many kinds on corrupt or cut headers
        if has_preamble:
            raise UnusableDicomError(
                name, f"DICOM header cannot be read, the file may be truncated: {exc}"
            ) from None
        raise NotDicomError(name, "not a DICOM file (no 'DICM' marker, not parseable)") from None
    if not has_preamble and not any(k in ds for k in ("SOPClassUID", "PixelData", "Rows")):
        raise NotDicomError(name, "not a DICOM file (no 'DICM' marker and no DICOM elements)")

    if "PixelData" not in ds:
        raise UnusableDicomError(
            name, "no PixelData (7FE0,0010): the file holds no image (truncated or stripped)"
        )
    modality = str(ds.get("Modality", "") or "").strip()
    if modality not in IMAGE_MODALITIES:
        raise UnusableDicomError(
            name,
            f"Modality (0008,0060) is {modality or 'missing'!r}; expected one of "
            f"{', '.join(IMAGE_MODALITIES)} (a mammography/radiography image)",
        )
    for keyword, tag in (("Rows", "(0028,0010)"), ("Columns", "(0028,0011)")):
        if not ds.get(keyword):
            raise UnusableDicomError(name, f"{keyword} {tag} is missing or zero")
    _check_native_length(ds, name)
    return DicomInfo(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
        modality=modality,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
    )


def _check_native_length(ds: pydicom.Dataset, name: str) -> None:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        return  # encapsulated frames: the decoder in the worker checks them
    bits = int(ds.get("BitsAllocated") or 16)
    frames = int(ds.get("NumberOfFrames") or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    expected = int(ds.Rows) * int(ds.Columns) * frames * samples * bits // 8
    actual = len(ds.PixelData)
    if actual < expected:
        raise UnusableDicomError(
            name,
            f"PixelData (7FE0,0010) has {actual} bytes, expected {expected} "
            f"(Rows x Columns x BitsAllocated/8): the file is truncated",
        )
