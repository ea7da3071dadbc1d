"""Read PNG/TIFF research images (8/16-bit grey); the user supplies spacing and, if known, side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from ductai.data.errors import (
    ImageReadError,
    MissingSpacingError,
    NotDicomError,
    UnsupportedImageError,
)
from ductai.data.galactogram import Galactogram, spacing_pair
from ductai.data.intensity import IntensityParams
from ductai.data.labels import UNKNOWN, VIEWS

IMAGE_SUFFIXES = frozenset({".png", ".tif", ".tiff"})


def read_image_file(
    path: str | Path,
    pixel_spacing: float | tuple[float, float] | None = None,
    laterality: str = UNKNOWN,
    view: str = UNKNOWN,
    photometric: str = "MONOCHROME2",
) -> Galactogram:
    """A grey PNG/TIFF as a Galactogram; these files carry no spacing, so it must be given.

    Intensity follows the canonical rule without a window (percentile window of the breast);
    `photometric="MONOCHROME1"` for images stored with contrast dark.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if pixel_spacing is None:
        raise MissingSpacingError(
            path,
            "PNG/TIFF files carry no pixel spacing",
            "give it with --pixel-spacing MM, or pixel_spacing=MM in Python",
        )
    stored = _load(path)
    if stored.ndim == 3 and stored.shape[-1] in (3, 4):
        channels = stored[..., :3]
        if not (
            np.array_equal(channels[..., 0], channels[..., 1])
            and np.array_equal(channels[..., 0], channels[..., 2])
        ):
            raise UnsupportedImageError(
                path, f"colour image (shape {stored.shape})", "save it as greyscale"
            )
        stored = channels[..., 0]
    if stored.ndim != 2:
        raise UnsupportedImageError(
            path, f"image of shape {stored.shape}: one 2D grey image expected (no stacks)"
        )
    if stored.dtype not in (np.uint8, np.uint16):
        raise UnsupportedImageError(path, f"pixel type {stored.dtype}: 8- or 16-bit grey expected")
    laterality = laterality.upper() if laterality.upper() in ("L", "R") else UNKNOWN
    view = view.upper() if view.upper() in VIEWS else UNKNOWN
    warnings = ["no orientation information: nipple side guessed from laterality or content"]
    return Galactogram(
        path=path,
        stored=stored,
        intensity=IntensityParams(photometric=photometric, bits_stored=stored.dtype.itemsize * 8),
        pixel_spacing_mm=spacing_pair(pixel_spacing),
        spacing_source="user",
        laterality=laterality,
        view=view,
        transfer_syntax=path.suffix.lower().lstrip("."),
        warnings=warnings,
    )


def _load(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            return np.asarray(tifffile.imread(path))
        with Image.open(path) as image:
            if image.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(image).astype(np.uint16)
            if image.mode == "I":
                array = np.asarray(image)
                return array.astype(np.uint16) if array.max(initial=0) < 65536 else array
            return np.asarray(image)
    except (UnidentifiedImageError, tifffile.TiffFileError) as exc:
        raise NotDicomError(path, f"not a readable PNG/TIFF image: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"image could not be read (truncated?): {exc}") from exc
