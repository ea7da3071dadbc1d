"""The one intensity rule of canonical space (docs/conventions.md), usable with or without DICOM.

Rule: modality LUT (rescale or LUT), then the first VOI window or VOI LUT, else a 0.5-99.8
percentile window of the breast; mapped to [0, 1]; MONOCHROME1 inverted, so contrast is bright.
The LUT maths is pydicom's; plain parameters are wrapped in a minimal Dataset for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence
from skimage.filters import threshold_otsu

PERCENTILE_WINDOW = (0.5, 99.8)
_LUT_ATTRIBUTES = ("ModalityLUTSequence", "VOILUTSequence")


@dataclass(frozen=True)
class IntensityParams:
    """What the intensity rule needs; `voi_lut`/`modality_lut` hold DICOM LUT sequences if any."""

    photometric: str = "MONOCHROME2"
    bits_stored: int = 16
    pixel_signed: bool = False
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    window_center: float | None = None
    window_width: float | None = None
    voi_lut_function: str = "LINEAR"
    modality_lut: Sequence | None = None
    voi_lut: Sequence | None = None

    @property
    def has_voi(self) -> bool:
        return bool(self.voi_lut) or (
            self.window_center is not None and self.window_width is not None
        )

    @classmethod
    def from_dataset(cls, ds: Dataset, warnings: list[str] | None = None) -> IntensityParams:
        """Read the parameters from a DICOM dataset; invalid windows are dropped with a warning."""
        warnings = warnings if warnings is not None else []
        center = _first(ds.get("WindowCenter"))
        width = _first(ds.get("WindowWidth"))
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            warnings.append(f"unknown VOILUTFunction {function!r}; using LINEAR")
            function = "LINEAR"
        if (center is None) != (width is None):
            warnings.append("WindowCenter without WindowWidth (or the reverse); window ignored")
            center = width = None
        elif width is not None and width < (1 if function == "LINEAR" else 1e-9):
            warnings.append(f"WindowWidth {width} is not valid; window ignored")
            center = width = None
        slope = ds.get("RescaleSlope")
        intercept = ds.get("RescaleIntercept")
        return cls(
            photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper(),
            bits_stored=int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16),
            pixel_signed=int(ds.get("PixelRepresentation") or 0) == 1,
            rescale_slope=None if slope is None else float(slope),
            rescale_intercept=None if intercept is None else float(intercept),
            window_center=center,
            window_width=width,
            voi_lut_function=function,
            modality_lut=ds.get("ModalityLUTSequence") or None,
            voi_lut=ds.get("VOILUTSequence") or None,
        )

    def to_dataset(self) -> Dataset:
        """A minimal Dataset carrying these parameters, for pydicom's LUT functions."""
        ds = Dataset()
        ds.PhotometricInterpretation = self.photometric
        ds.BitsStored = self.bits_stored
        ds.PixelRepresentation = int(self.pixel_signed)
        if self.rescale_slope is not None or self.rescale_intercept is not None:
            ds.RescaleSlope = 1.0 if self.rescale_slope is None else self.rescale_slope
            ds.RescaleIntercept = 0.0 if self.rescale_intercept is None else self.rescale_intercept
        if self.modality_lut:
            ds.ModalityLUTSequence = self.modality_lut
        if self.voi_lut:
            ds.VOILUTSequence = self.voi_lut
        elif self.window_center is not None and self.window_width is not None:
            ds.WindowCenter = self.window_center
            ds.WindowWidth = self.window_width
            ds.VOILUTFunction = self.voi_lut_function
        return ds

    def summary(self) -> dict[str, Any]:
        """JSON-able description (LUT sequences reduced to a flag)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["modality_lut"] = bool(self.modality_lut)
        out["voi_lut"] = bool(self.voi_lut)
        return out


def _first(value: Any) -> float | None:
    """First value of a possibly multi-valued DS element (the default window)."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    return None if value is None else float(value)


def _as_params(
    params: IntensityParams | Dataset | Mapping[str, Any], photometric: str | None
) -> IntensityParams:
    if isinstance(params, Dataset):
        params = IntensityParams.from_dataset(params)
    elif not isinstance(params, IntensityParams):
        params = IntensityParams(**dict(params))
    if photometric is not None:
        params = replace(params, photometric=photometric.strip().upper())
    if params.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(
            f"photometric must be MONOCHROME1 or MONOCHROME2, not {params.photometric!r}"
        )
    return params


def _voi_output_range(ds: Dataset, lut_input_dtype: np.dtype) -> tuple[float, float]:
    """Output range of the VOI step, found by probing pydicom's function far outside the window."""
    if ds.get("VOILUTSequence"):
        info = np.iinfo(np.int32)
        probe = np.array([info.min, info.max], dtype=np.int64).astype(lut_input_dtype, copy=False)
    else:
        center, width = float(ds.WindowCenter), float(ds.WindowWidth)
        reach = 50.0 * (abs(width) + 1.0)  # saturates LINEAR; SIGMOID within exp(-200)
        probe = np.array([center - reach, center + reach])
    low, high = apply_voi_lut(probe, ds, prefer_lut=True).astype(np.float64)
    return float(low), float(high)


def _breast_percentile_window(display: np.ndarray) -> tuple[float, float]:
    """0.5-99.8 percentile of the breast; air found by Otsu on a subsample (fast, robust)."""
    step = max(1, int(np.sqrt(display.size / 250_000)))
    sample = display[::step, ::step].astype(np.float64).ravel()
    breast = sample
    if np.ptp(sample) > 0:
        inside = sample[sample > threshold_otsu(sample)]
        # Otsu splits air from tissue only when both exist; otherwise use every pixel.
        if 0.05 * sample.size <= inside.size <= 0.99 * sample.size:
            breast = inside
    low, high = np.percentile(breast, PERCENTILE_WINDOW)
    return float(low), float(high)


def _worth_a_table(stored: np.ndarray) -> bool:
    if not np.issubdtype(stored.dtype, np.integer) or stored.size < 1 << 18:
        return False
    return int(stored.max()) - int(stored.min()) < 1 << 17


def normalize_intensity(
    stored: np.ndarray,
    params: IntensityParams | Dataset | Mapping[str, Any],
    photometric: str | None = None,
) -> np.ndarray:
    """Stored pixel values -> float32 in [0, 1], contrast bright (the canonical intensity rule).

    `params` is an IntensityParams, a pydicom Dataset, or a mapping of IntensityParams fields
    (window_center, window_width, rescale_slope, rescale_intercept, bits_stored, ...);
    `photometric` overrides the one in `params`.
    """
    p = _as_params(params, photometric)
    stored = np.asarray(stored)
    if p.has_voi and _worth_a_table(stored):
        # With a fixed window the rule is a function of the stored value alone: evaluate it
        # once per possible value and look the image up (a full-field view: ~10x faster, and
        # no float64 copies of 10 MP).
        low = int(stored.min())
        table = normalize_intensity(np.arange(low, int(stored.max()) + 1), p)
        return table[stored.astype(np.int32) - low]
    ds = p.to_dataset()
    values = apply_modality_lut(stored, ds)
    if p.has_voi:
        if p.voi_lut and not np.issubdtype(values.dtype, np.integer):
            values = np.rint(values).astype(np.int64)  # a VOI LUT is indexed by integers
        low, high = _voi_output_range(ds, values.dtype)
        shown = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float64)
        scaled = (shown - low) / (high - low) if high != low else np.zeros_like(shown)
        if p.photometric == "MONOCHROME1":
            scaled = 1.0 - scaled
    else:
        # Percentiles are taken on the displayed sense so 99.8 % is always the bright end.
        display = -values.astype(np.float64) if p.photometric == "MONOCHROME1" else values
        low, high = _breast_percentile_window(display)
        scaled = (display - low) / (high - low) if high > low else np.zeros(display.shape)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def outline_intensity(
    stored: np.ndarray,
    params: IntensityParams | Dataset | Mapping[str, Any],
    photometric: str | None = None,
) -> np.ndarray:
    """Modality values scaled linearly from their minimum to their maximum, contrast bright.

    No window: the skin line and the nipple keep whatever they differ from air by, which a
    narrow presentation window (or the breast percentile window) clips away.
    """
    p = _as_params(params, photometric)
    values = apply_modality_lut(np.asarray(stored), p.to_dataset()).astype(np.float32)
    if p.photometric == "MONOCHROME1":
        values = -values
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.float32)
    values -= low
    values *= 1.0 / (high - low)
    return values
