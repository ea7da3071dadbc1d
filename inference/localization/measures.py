"""Per-lesion measurements in one view: distance to the nipple, path along the duct, side.

All distances are in the image plane of the (compressed) view, in mm, as a radiologist
measures them on the galactogram; compression spreads the breast, so they run longer than
in the uncompressed breast. Offsets are signed across the nipple axis: positive medial (CC,
canonical rows run medial) or superior (ML/MLO, rows run towards the feet).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ductai.inference.localization.duct_graph import DuctGraph
from ductai.inference.localization.nipple import Landmarks
from ductai.inference.types import LesionLocation

ON_DUCT_MM = 5.0  # a lesion centre farther than this (beyond its own radius) is off the tree
SMOOTH_MM = 1.0  # pixel staircases overstate a curve's length; smooth the path first
NIPPLE_DUCT_GAP_MM = 2.0  # an orifice farther than this from the nipple tip: the duct faded
VIEW_SIDES = {"CC": ("medial", "lateral")}  # (positive, negative) offset; other views below
LATERAL_SIDES = ("superior", "inferior")


def box_centre(box) -> np.ndarray:
    box = np.asarray(box, dtype=float)
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def axis_offsets(point, landmarks: Landmarks, spacing_mm: float) -> tuple[float, float]:
    """(depth behind the nipple along the axis, offset across it towards higher rows) in mm."""
    d = (np.asarray(point, dtype=float) - np.asarray(landmarks.nipple)) * spacing_mm
    ax, ay = landmarks.axis
    return float(-(d[0] * ax + d[1] * ay)), float(d[1] * ax - d[0] * ay)


def signed_offset(point, landmarks: Landmarks, spacing_mm: float, view: str):
    """(side, offset mm): positive medial on CC, superior on ML/MLO (module docstring)."""
    _, across = axis_offsets(point, landmarks, spacing_mm)
    positive, negative = VIEW_SIDES.get(view, LATERAL_SIDES)
    offset = across if view == "CC" else -across
    return (positive if offset >= 0 else negative), offset


def polyline_length(points: np.ndarray, spacing_mm: float) -> float:
    """Length in mm of a pixel path, smoothed so that 8-neighbour steps do not add up."""
    if len(points) < 2:
        return 0.0
    sigma = SMOOTH_MM / spacing_mm
    if len(points) > 4 * sigma:
        points = gaussian_filter1d(points.astype(float), sigma, axis=0, mode="nearest")
    return float(np.hypot(*np.diff(points, axis=0).T).sum() * spacing_mm)


def measure_lesion(
    box, landmarks: Landmarks, graph: DuctGraph, spacing_mm: float, view: str
) -> LesionLocation:
    centre = box_centre(box)
    location = LesionLocation(None, None, None, [], None, None)
    if landmarks.nipple is None:
        return location
    location.distance_to_nipple_mm = float(
        np.hypot(*(centre - np.asarray(landmarks.nipple))) * spacing_mm
    )
    location.side, location.offset_mm = signed_offset(centre, landmarks, spacing_mm, view)
    if not graph.found:
        return location
    k, off = graph.nearest(centre)
    half_diagonal = 0.5 * np.hypot(box[2] - box[0], box[3] - box[1]) * spacing_mm
    if off > ON_DUCT_MM + half_diagonal:
        return location  # not on the cannulated tree: no path along it
    path = graph.path_to(k)
    lead = np.empty((0, 2))  # straight part before the skeleton, outside the smoothing
    if landmarks.orifice is not None:
        lead = np.asarray(landmarks.orifice, float)[None]
        gap = np.hypot(*np.subtract(landmarks.nipple, landmarks.orifice)) * spacing_mm
        if landmarks.in_profile and gap > NIPPLE_DUCT_GAP_MM:
            # the column faded inside the nipple: the path starts at its tip
            lead = np.vstack([np.asarray(landmarks.nipple, float)[None], lead])
        lead = np.vstack([lead, path[:1]])
    # a lesion at the end of the column (an obstruction) lies just beyond the skeleton
    location.duct_path_length_mm = (
        float(np.hypot(*np.diff(lead, axis=0).T).sum() * spacing_mm)
        + polyline_length(path, spacing_mm)
        + off
    )
    location.branch_generation = int(graph.generation[k])
    location.duct_path = [
        (float(x), float(y)) for x, y in np.vstack([lead[:-1], path, centre[None]])
    ]
    return location
