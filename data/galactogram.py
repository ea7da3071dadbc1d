"""`Galactogram`: one image as read from disk, in its original orientation and pixel grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ductai.data.intensity import IntensityParams, normalize_intensity, outline_intensity
from ductai.data.labels import UNKNOWN


@dataclass(eq=False)
class Galactogram:
    """Stored pixels plus what ductai needs to know about them.

    `stored` holds the decoded stored values (BitsStored applied, no LUTs) on the original
    grid; `pixels` is the same grid in the canonical intensity rule (float32 in [0, 1],
    contrast bright), computed on first use. Orientation and size are untouched; use
    `ductai.data.canonical.to_canonical` for the model's space.
    """

    path: Path
    stored: np.ndarray
    intensity: IntensityParams
    pixel_spacing_mm: tuple[float, float]  # (row spacing, column spacing)
    spacing_source: str  # PixelSpacing, ImagerPixelSpacing[/magnification], user
    laterality: str = UNKNOWN  # "L", "R" or "unknown"
    view: str = UNKNOWN  # CC, MLO, ML, XCCL, ... or "unknown"
    patient_orientation: tuple[str, str] | None = None  # (column direction, row direction)
    modality: str = ""
    transfer_syntax: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    patient_id: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return int(self.stored.shape[0])

    @property
    def columns(self) -> int:
        return int(self.stored.shape[1])

    @property
    def photometric(self) -> str:
        return self.intensity.photometric

    @property
    def window(self) -> tuple[float, float] | None:
        """(center, width) of the first VOI window, if any."""
        if self.intensity.window_center is None or self.intensity.window_width is None:
            return None
        return (self.intensity.window_center, self.intensity.window_width)

    @cached_property
    def pixels(self) -> np.ndarray:
        return normalize_intensity(self.stored, self.intensity)

    @cached_property
    def outline_pixels(self) -> np.ndarray:
        """The modality values scaled linearly to [0, 1], contrast bright, with no window.

        For finding the skin line: a narrow VOI window (or the percentile window) can clip
        fat and the nipple to the air level, while the stored values still tell them apart.
        """
        return outline_intensity(self.stored, self.intensity)

    def metadata(self) -> dict[str, Any]:
        """JSON-able description, without pixels."""
        return {
            "path": str(self.path),
            "rows": self.rows,
            "columns": self.columns,
            "pixel_spacing_mm": list(self.pixel_spacing_mm),
            "spacing_source": self.spacing_source,
            "laterality": self.laterality,
            "view": self.view,
            "patient_orientation": list(self.patient_orientation)
            if self.patient_orientation
            else None,
            "photometric": self.photometric,
            "window": list(self.window) if self.window else None,
            "modality": self.modality,
            "transfer_syntax": self.transfer_syntax,
            "sop_instance_uid": self.sop_instance_uid,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "patient_id": self.patient_id,
            "warnings": list(self.warnings),
        }


def spacing_pair(spacing: float | tuple[float, float] | list[float]) -> tuple[float, float]:
    """A user's spacing (one number or row, column) as a validated (row, column) pair in mm."""
    values = [float(spacing)] * 2 if np.isscalar(spacing) else [float(v) for v in spacing]
    if len(values) != 2 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(
            f"pixel spacing must be one or two positive numbers in mm, not {spacing!r}"
        )
    return (values[0], values[1])
