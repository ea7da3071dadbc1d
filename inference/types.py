"""What inference produces, per view and per study (the contract: docs/inference-design.md).

Everything predicted lives in CANONICAL space (docs/conventions.md) together with the image's
``CanonicalGeometry``; only the writers map it to the original DICOM pixel grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ductai.data.canonical import CanonicalGeometry
from ductai.data.galactogram import Galactogram

__all__ = [
    "Detection",
    "LesionLocation",
    "StudyLesion",
    "ViewLocalization",
    "ViewPrediction",
]


@dataclass
class Detection:
    box: np.ndarray  # (4,) x0, y0, x1, y1 canonical pixels (continuous coordinates)
    score: float
    label: str  # a FINDINGS class in ViewPrediction.detections, a MIMICS class in .mimics


@dataclass
class ViewPrediction:
    image: Galactogram  # metadata (UIDs, laterality, view, spacing); pixels may be dropped
    geometry: CanonicalGeometry
    canonical: np.ndarray  # float32 [H, W] the model input
    duct_prob: np.ndarray | None  # float32 [H, W] in [0, 1]; None without a segmentation net
    lesion_prob: np.ndarray  # float32 [H, W] heatmap in [0, 1] (from whichever nets there are)
    detections: list[Detection]
    mimics: list[Detection]  # suppressed mimic detections, kept for overlays/debugging
    timings: dict[str, float]  # seconds per stage
    model: dict  # name, version, sha256 {file: hex}, missing: tasks without a net
    # float32 [H, W] canonical image without the presentation window, for the skin line;
    # None: use ``canonical``
    outline: np.ndarray | None = None


@dataclass
class LesionLocation:
    distance_to_nipple_mm: float | None
    duct_path_length_mm: float | None
    branch_generation: int | None
    duct_path: list[tuple[float, float]]  # canonical points from the orifice to the lesion
    side: str | None  # CC: "lateral"/"medial"; ML/MLO: "superior"/"inferior"
    offset_mm: float | None  # signed offset from the nipple axis in that view


@dataclass
class ViewLocalization:
    nipple: tuple[float, float] | None  # canonical [x, y]
    orifice: tuple[float, float] | None
    duct: dict  # found, area_mm2, branches, generations, total_length_mm
    lesions: list[LesionLocation]  # parallel to ViewPrediction.detections
    fill_flags: list[str]  # "no_opacified_duct", "contrast_stops_early", "extravasation", ...
    breast_depth_mm: float | None  # nipple to chest wall (posterior nipple line)


@dataclass
class StudyLesion:
    """One lesion of a breast, matched across views when possible."""

    id: int
    views: dict[str, int]  # SOPInstanceUID -> index in that view's detections
    label: str
    score: float
    clock: str | None  # "H:MM" (docs/conventions.md), None with one view
    quadrant: str | None  # UOQ/UIQ/LOQ/LIQ/central or None
    depth: str | None  # anterior/middle/posterior or None
