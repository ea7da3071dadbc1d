"""Vendor-like "for presentation" processing: log, thickness equalisation, unsharp masking,
a tone curve and quantisation into 12-14 bit stored values (air dark, contrast white)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .imaging_config import VendorLook, sample
from .physics import smooth


@dataclass(frozen=True)
class Processing:
    """Sampled processing parameters of one image."""

    tone: str
    tone_slope: float
    equalization: float
    equalization_mm: float
    tissue_top: float
    unsharp_amount: float
    unsharp_sigma_mm: float
    background_level: float
    window_scale: float

    @classmethod
    def sample(cls, look: VendorLook, rng: np.random.Generator) -> Processing:
        return cls(
            tone=look.tone,
            tone_slope=sample(rng, look.tone_slope),
            equalization=sample(rng, look.equalization),
            equalization_mm=sample(rng, look.equalization_mm),
            tissue_top=sample(rng, look.tissue_top),
            unsharp_amount=sample(rng, look.unsharp_amount),
            unsharp_sigma_mm=sample(rng, look.unsharp_sigma_mm),
            background_level=sample(rng, look.background_level),
            window_scale=sample(rng, look.window_scale),
        )


def masked_smooth(image: np.ndarray, weight: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian low-pass of ``image`` over the pixels where ``weight`` > 0 (normalised
    convolution), on a decimated grid for wide kernels; float32, zero where no weight."""
    num = image * weight
    factor = int(sigma_px // 2) if sigma_px > 4.0 else 1
    rows, cols = image.shape
    if factor > 1:
        size = (max(cols // factor, 1), max(rows // factor, 1))
        num = cv2.resize(num, size, interpolation=cv2.INTER_AREA)
        den = cv2.resize(weight, size, interpolation=cv2.INTER_AREA)
    else:
        den = weight
    num = smooth(num, sigma_px / factor)
    den = smooth(den, sigma_px / factor)
    num /= np.maximum(den, np.float32(1e-3))
    if factor > 1:
        num = cv2.resize(num, (cols, rows), interpolation=cv2.INTER_LINEAR)
    return num


def tone_curve(x: np.ndarray, tone: str, slope: float) -> np.ndarray:
    """Map normalised log signal (tissue ~0..1, contrast above) to display 0..1, float32."""
    if tone == "sigmoid":
        centre = np.float32(0.5)
        y = 1.0 / (1.0 + np.exp(-np.float32(slope) * (x - centre)))
        floor = 1.0 / (1.0 + np.exp(slope * centre))
        return np.maximum((y - floor) / np.float32(1.0 - floor), 0.0).astype(np.float32)
    if tone == "gamma":
        return np.tanh(np.float32(1.4) * np.power(np.maximum(x, 0.0), np.float32(slope)))
    if tone == "log":
        return np.minimum(
            np.log1p(np.float32(slope) * np.maximum(x, 0.0)) / np.log1p(1.7 * slope), 1.0
        )
    raise ValueError(f"unknown tone curve {tone!r}")


def present(
    log_signal: np.ndarray,
    breast: np.ndarray,
    contrast: np.ndarray,
    spacing_mm: float,
    proc: Processing,
    bits_stored: int,
    thickness: np.ndarray | None = None,
) -> tuple[np.ndarray, float, float]:
    """Process the log signal (line integral, float32) into stored values (MONOCHROME2).

    ``breast`` marks the tissue (uint8), ``contrast`` the opacified ducts (excluded from the
    tissue statistics so that dense contrast never darkens the parenchyma). ``thickness`` is
    the line integral of the breast's shape alone (no texture, no ducts), as a vendor's
    thickness estimate for peripheral equalisation.
    Returns (uint16 pixels, window centre, window width).
    """
    signal = log_signal
    step = max(1, round(1.0 / spacing_mm))  # ~1 mm sampling for statistics
    tissue = (breast[::step, ::step] > 0) & (contrast[::step, ::step] == 0)
    # thickness equalisation: compress the large-scale range (peripheral thinning, dense
    # regions) while small structures (ducts, trabeculae) keep their full contrast. The
    # low-pass ignores the contrast (normalised convolution over the tissue), so the
    # equalisation never flattens a wide, bright sinus or leaves a dark halo around it.
    weight = ((breast > 0) & (contrast == 0)).astype(np.float32)
    if thickness is not None:
        # peripheral equalisation follows the vendor's thickness estimate at full resolution
        # (nearly completely, as vendors do): the thin rim and the nipple are lifted to the
        # level of the breast without halos; the slab's large-scale density is then
        # compressed as usual
        thick = thickness[::step, ::step][tissue]
        level = np.float32(np.median(thick)) if thick.size else np.float32(0.0)
        strength = np.float32(0.85 + 0.15 * proc.equalization)
        signal = signal - (thickness - level) * (strength * breast)
    low = masked_smooth(signal, weight, proc.equalization_mm / spacing_mm)
    low_tissue = low[::step, ::step][tissue]
    reference = np.float32(np.median(low_tissue)) if tissue.any() else np.float32(1.0)
    low -= reference
    low *= breast
    signal = signal - low * np.float32(proc.equalization)
    # unsharp masking sharpens ducts and trabeculae
    support = (breast > 0).astype(np.float32)  # air takes no part: no glowing skin line
    detail = masked_smooth(signal, support, proc.unsharp_sigma_mm / spacing_mm)
    np.subtract(signal, detail, out=detail)
    detail *= support
    # undershoots are soft-limited: no dark moats beside the skin line, the nipple base or a
    # bright contrast column (vendors suppress such halos); overshoots keep their full gain
    knee = np.float32(0.06)
    low_side = np.minimum(detail, 0.0)
    detail -= low_side
    low_side *= knee / (knee - low_side)  # soft limit: -knee at most
    detail += low_side
    signal += detail * np.float32(proc.unsharp_amount)
    sample_tissue = signal[::step, ::step][tissue] if tissue.any() else signal[::step, ::step]
    lo, hi = np.percentile(sample_tissue, [0.5, 99.5])
    # tissue spans [0, tissue_top]; contrast-filled ducts lie above and render white
    x = (signal - np.float32(lo)) * np.float32(proc.tissue_top / max(hi - lo, 1e-6))
    y = tone_curve(x, proc.tone, proc.tone_slope)
    # air stays dark: outside the breast the signal is zero before processing
    y *= np.float32(1.0 - proc.background_level)
    y += np.float32(proc.background_level)
    top = float(2**bits_stored - 1)
    np.clip(y, 0.0, 1.0, out=y)
    y *= np.float32(top)
    pixels = (y + np.float32(0.5)).astype(np.uint16)
    shown = pixels[::step, ::step][breast[::step, ::step] > 0]
    if shown.size == 0:
        shown = pixels[::step, ::step].ravel()
    p_lo, p_hi = np.percentile(shown, [0.5, 99.9])
    ducts = pixels[contrast > 0]
    if ducts.size:  # the window reaches the contrast so ducts stay distinct from dense tissue
        p_hi = max(p_hi, float(np.percentile(ducts, 95)))
    width = max((p_hi - p_lo) * proc.window_scale, 16.0)
    centre = (p_lo + p_hi) / 2.0
    if width < p_hi - p_lo:  # a narrow window gives up the dark end (fat, skin), never the
        centre = p_hi - width / 2.0  # dense tissue or the contrast
    return pixels, float(round(centre)), float(round(width))
