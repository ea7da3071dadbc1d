"""Typed config of the X-ray imaging stage: every random quantity is a ``[lo, hi]`` range.

The ``imaging:`` section of ``configs/simulation/*.yaml`` validates into :class:`ImagingConfig`.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


def _ordered(value: list[float]) -> list[float]:
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"expected a range [lo, hi] with lo <= hi, got {value}")
    return value


Range = Annotated[list[float], AfterValidator(_ordered)]


def sample(rng: np.random.Generator, value: list[float]) -> float:
    """Uniform draw from a ``[lo, hi]`` range (a degenerate range returns lo)."""
    lo, hi = value
    return float(lo if lo == hi else rng.uniform(lo, hi))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VendorLook(_Strict):
    """One family of detectors and "for presentation" processing; looks differ on purpose."""

    name: str
    weight: float = Field(1.0, gt=0)
    pixel_spacing_mm: list[float] = Field(min_length=1)  # detector pitch choices
    tone: str = Field("sigmoid", pattern="^(sigmoid|gamma|log)$")
    tone_slope: Range = [3.0, 5.0]  # sigmoid slope or gamma exponent, per tone
    equalization: Range = [0.5, 0.8]  # thickness equalisation strength, 0..1
    equalization_mm: Range = [4.0, 8.0]  # scale above which the range is compressed
    tissue_top: Range = [0.5, 0.65]  # tone input of the densest tissue; contrast goes above
    unsharp_amount: Range = [0.3, 0.8]
    unsharp_sigma_mm: Range = [1.0, 3.0]
    background_level: Range = [0.0, 0.03]  # air as a fraction of full scale
    window_scale: Range = [0.9, 1.1]  # window width relative to the breast's value range

    @model_validator(mode="after")
    def _detector_pitch(self) -> VendorLook:
        if any(not 0.05 <= s <= 0.2 for s in self.pixel_spacing_mm):
            raise ValueError(
                f"pixel_spacing_mm must lie in [0.05, 0.2], got {self.pixel_spacing_mm}"
            )
        return self


class ViewOutline(_Strict):
    """Breast outline of one view family. Every factor only enlarges the projected 3D
    half-ellipsoid (never shrinks it), so ducts and lesions stay inside the skin line."""

    droop: Range = [-0.1, 0.1]  # nipple-axis slope: v (down) per mm of u towards the nipple
    half_height_up: Range = [1.0, 1.25]  # outline above the axis / projected breast's (>= 1)
    half_height_down: Range = [1.0, 1.15]  # below the axis (>= 1: a fuller lower pole)
    squareness: Range = [2.0, 2.5]  # superellipse exponent (2: ellipse; >= 2)
    nipple_height_fraction: Range = [0.5, 0.5]  # nipple row / image height (before the offset)

    @model_validator(mode="after")
    def _encloses_the_breast(self) -> ViewOutline:
        if min(self.half_height_up[0], self.half_height_down[0]) < 1.0:
            raise ValueError("outline half-height factors must be >= 1 (ducts stay inside)")
        if self.squareness[0] < 2.0:
            raise ValueError("outline squareness must be >= 2 (ducts stay inside)")
        if not 0.0 < self.nipple_height_fraction[0] <= self.nipple_height_fraction[1] < 1.0:
            raise ValueError("nipple_height_fraction must lie in (0, 1)")
        return self


def _default_vendors() -> list[VendorLook]:
    return [
        VendorLook(name="hologic_like", pixel_spacing_mm=[0.07], tone="sigmoid"),
        VendorLook(
            name="ge_like",
            pixel_spacing_mm=[0.1],
            tone="gamma",
            tone_slope=[0.7, 1.1],
            equalization=[0.6, 0.9],
        ),
        VendorLook(
            name="siemens_like",
            pixel_spacing_mm=[0.085],
            tone="log",
            tone_slope=[2.0, 6.0],
            unsharp_amount=[0.6, 1.2],
        ),
    ]


class ImagingConfig(_Strict):
    """Ranges of the acquisition physics, view geometry and presentation processing."""

    # beam and patient dose
    effective_energy_kev: Range = [20.0, 30.0]
    quanta_per_mm2: Range = [1.0e5, 3.0e5]  # absorbed quanta under the breast (AEC target)
    electronic_noise: Range = [2.0, 8.0]  # std in quanta per pixel
    contrast_scale: Range = [0.8, 1.0]  # dilution of the injected contrast in the ducts
    # compression and view geometry
    compressed_thickness_mm: Range = [30.0, 75.0]
    compression_fraction: Range = [0.3, 0.55]  # thickness / uncompressed extent (mean ~54 mm)
    spreading_exponent: Range = [0.3, 0.5]  # in-plane stretch = compression ** -exponent
    mlo_angle_deg: Range = [40.0, 60.0]
    magnification: Range = [1.0, 1.08]  # breast plane to detector (contact geometry)
    chest_wall_offset_mm: Range = [-12.0, 3.0]  # image edge behind (+) or in front of the wall
    vertical_offset_fraction: Range = [-0.08, 0.08]  # breast centre shift, fraction of height
    # outline per view family: CC semicircular-ish; ML droops; MLO oblique (long upper
    # contour to the axilla, nipple at mid-height or lower, lower pole curving to the fold)
    outline_cc: ViewOutline = Field(default_factory=ViewOutline)
    outline_ml: ViewOutline = Field(
        default_factory=lambda: ViewOutline(
            droop=[0.05, 0.3],
            half_height_up=[1.0, 1.4],
            half_height_down=[1.0, 1.3],
            squareness=[2.0, 2.4],
            nipple_height_fraction=[0.5, 0.62],
        )
    )
    outline_mlo: ViewOutline = Field(
        default_factory=lambda: ViewOutline(
            droop=[0.2, 0.5],
            half_height_up=[1.0, 1.2],
            half_height_down=[1.0, 1.35],
            squareness=[2.0, 2.4],
            nipple_height_fraction=[0.52, 0.68],
        )
    )
    axilla_width_fraction: Range = [0.3, 0.6]  # MLO: skin line at the top edge, of the depth
    abdomen_probability: float = Field(0.5, ge=0, le=1)  # MLO: skin fold below the IMF
    abdomen_size_mm: Range = [10.0, 35.0]  # its depth from the image edge
    nipple_off_profile_probability: float = Field(0.2, ge=0, le=1)  # projected over the breast
    nipple_off_profile_mm: Range = [3.0, 12.0]  # how far the outline reaches past its tip
    nipple_tilt_deg: Range = [30.0, 70.0]  # out-of-plane turn of the nipple and cannula
    pectoral_on_cc_probability: float = Field(0.15, ge=0, le=1)
    pectoral_on_cc_width_mm: Range = [4.0, 12.0]  # the sliver's depth at the posterior edge
    pectoral_on_cc_strength: Range = [0.15, 0.4]  # muscle fraction of the path at its core
    pectoral_width_fraction: Range = [0.25, 0.45]  # MLO muscle triangle, of the breast depth
    pectoral_height_fraction: Range = [0.45, 0.8]  # MLO muscle triangle, of the image height
    field_sizes_mm: list[list[float]] = [[180.0, 240.0], [240.0, 300.0]]  # cols x rows
    # detector
    blur_sigma_mm: Range = [0.05, 0.12]  # Gaussian core of the PSF
    blur_tail: Range = [0.0, 0.12]  # weight of a wide (Lorentzian-like) tail
    bits_stored: Range = [12, 14]
    monochrome1_probability: float = Field(0.25, ge=0, le=1)
    # burnt-in laterality/view letters (simulation/markers.py)
    marker_probability: float = Field(0.8, ge=0, le=1)
    marker_height_mm: Range = [6.0, 14.0]  # capital letter height
    marker_over_tissue_probability: float = Field(0.1, ge=0, le=1)  # else in the air
    marker_holder_probability: float = Field(0.3, ge=0, le=1)  # a faint plastic block
    marker_text_probability: float = Field(0.3, ge=0, le=1)  # a line of burnt-in text
    # anatomy texture
    texture_beta: Range = [1.5, 3.5]
    texture_beta_mode: float = 2.8
    texture_contrast: Range = [0.8, 1.2]  # steepness of the gland/fat boundary
    ligament_strength: Range = [0.05, 0.25]
    dense_mottle: Range = [0.2, 0.4]  # dense tissue varies by this fraction (no plateaus)
    fine_texture_strength: Range = [0.05, 0.15]  # sub-mm trabecular detail, glandular units
    fine_texture_beta: Range = [2.3, 2.9]  # its power-law exponent (lower: finer)
    vendors: list[VendorLook] = Field(default_factory=_default_vendors, min_length=1)

    def outline(self, view: str) -> ViewOutline:
        return {"CC": self.outline_cc, "ML": self.outline_ml, "MLO": self.outline_mlo}[view]

    @model_validator(mode="after")
    def _physical(self) -> ImagingConfig:
        lo, hi = self.effective_energy_kev
        if lo < 15 or hi > 40:
            raise ValueError("effective_energy_kev must lie in [15, 40] keV")
        if self.bits_stored[0] < 8 or self.bits_stored[1] > 16:
            raise ValueError("bits_stored must lie in [8, 16]")
        lo_b, hi_b = self.texture_beta
        if not lo_b <= self.texture_beta_mode <= hi_b:
            raise ValueError("texture_beta_mode must lie inside texture_beta")
        return self
