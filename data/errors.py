"""Errors raised while reading images and datalists: each names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class ImageReadError(ValueError):
    """An image file that ductai cannot turn into pixels with a known geometry."""

    def __init__(self, path: str | Path, problem: str, hint: str | None = None):
        self.path = Path(path)
        self.problem = problem
        self.hint = hint
        message = f"{self.path}: {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class NotDicomError(ImageReadError):
    """The file is not DICOM (or not a supported image format)."""


class NoPixelDataError(ImageReadError):
    """A DICOM object without an image, e.g. a structured report."""


class UnsupportedImageError(ImageReadError):
    """Pixels of a kind ductai does not handle: colour, multi-frame, odd bit depths."""


class MissingSpacingError(ImageReadError):
    """No usable pixel spacing in the file and none given by the user."""


class UnsupportedTransferSyntaxError(ImageReadError):
    """Compressed pixel data for which no decoder (plugin) is installed."""


class TruncatedFileError(ImageReadError):
    """The file ends before its pixel data does."""


class DatalistError(ValueError):
    """One error listing every problem found in a datalist, so all can be fixed at once."""

    def __init__(self, source: str | Path, problems: list[str]):
        self.source = Path(source)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{self.source}: {len(self.problems)} problem(s):\n{lines}")
