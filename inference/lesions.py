"""Detections -> lesion records: class, score, box and centre (canonical and DICOM), size in mm.

Sizes are measured on the ORIGINAL grid (box mapped back, times the DICOM's row and column
spacing): the canonical resampling rounds the image shape, so canonical pixels are a hair off
``spacing_mm``; the original spacing is the physical truth. ``diameter_mm`` is the longer box
side (the simulator's truth diameter is the lesion's largest extent).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ductai.data.canonical import CanonicalGeometry
from ductai.inference.types import Detection, ViewPrediction

__all__ = ["LesionRecord", "box_center", "box_size_mm", "lesion_record", "lesion_records"]


@dataclass
class LesionRecord:
    id: int  # 1-based, in the order of ViewPrediction.detections (highest score first)
    label: str
    score: float
    box_canonical: list[float]  # [x0, y0, x1, y1] canonical pixels
    center_canonical: list[float]  # [x, y]
    bbox_px: list[float]  # [x0, y0, x1, y1] original DICOM pixels
    center_px: list[float]  # [col, row] original DICOM pixels
    width_mm: float  # along the DICOM's columns
    height_mm: float  # along its rows
    diameter_mm: float  # max(width_mm, height_mm)

    def to_dict(self) -> dict:
        return asdict(self)


def box_center(box: np.ndarray) -> np.ndarray:
    """[x, y] centre of ``[x0, y0, x1, y1]`` (continuous pixel coordinates)."""
    b = np.asarray(box, dtype=np.float64).reshape(4)
    return np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])


def box_size_mm(box_px: np.ndarray, spacing_mm: tuple[float, float]) -> tuple[float, float]:
    """(width, height) in mm of an original-grid box; ``spacing_mm`` is (row, column)."""
    b = np.asarray(box_px, dtype=np.float64).reshape(4)
    return float((b[2] - b[0]) * spacing_mm[1]), float((b[3] - b[1]) * spacing_mm[0])


def lesion_record(detection: Detection, geometry: CanonicalGeometry, id: int = 1) -> LesionRecord:
    box_px = geometry.boxes_to_original(detection.box)[0]
    center_px = geometry.points_to_original(box_center(detection.box))[0]
    width, height = box_size_mm(box_px, geometry.original_spacing_mm)
    return LesionRecord(
        id=id,
        label=detection.label,
        score=float(detection.score),
        box_canonical=[float(v) for v in detection.box],
        center_canonical=[float(v) for v in box_center(detection.box)],
        bbox_px=[float(v) for v in box_px],
        center_px=[float(v) for v in center_px],
        width_mm=width,
        height_mm=height,
        diameter_mm=max(width, height),
    )


def lesion_records(prediction: ViewPrediction, mimics: bool = False) -> list[LesionRecord]:
    """Records of a view's findings (or of its suppressed mimics), ids from 1."""
    dets = prediction.mimics if mimics else prediction.detections
    return [lesion_record(d, prediction.geometry, i) for i, d in enumerate(dets, start=1)]
