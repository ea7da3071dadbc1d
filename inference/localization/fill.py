"""Fill checks of one view: flags for a failed or incomplete galactogram instead of a normal
study (no opacified duct, contrast that stops early, extravasation).

"Stops early" compares the cannulated tree with what a complete fill shows: a duct system
that reaches well back into the breast (a third of the nipple-to-chest-wall depth and more),
branches over several generations and adds up to tens of centimetres of duct. The limits are
far below every complete fill of the simulator (see tests/inference/test_localization.py).
"""

from __future__ import annotations

from ductai.inference.localization.duct_graph import DuctGraph
from ductai.inference.localization.measures import axis_offsets
from ductai.inference.localization.nipple import Landmarks

MIN_DUCT_AREA_MM2 = 3.0  # less opacified lumen than a 2 mm duct 1.5 mm long: no fill
MIN_REACH_FRACTION = 0.2  # of the breast depth
MIN_GENERATIONS = 3
MIN_TOTAL_LENGTH_MM = 40.0
EXTRAVASATION_SCORE = 0.5


def fill_flags(graph: DuctGraph, landmarks: Landmarks, detections, spacing_mm: float):
    flags = []
    if not graph.found or graph.area_mm2 < MIN_DUCT_AREA_MM2:
        flags.append("no_opacified_duct")
    elif _stops_early(graph, landmarks, spacing_mm):
        flags.append("contrast_stops_early")
    if any(d.label == "extravasation" and d.score >= EXTRAVASATION_SCORE for d in detections):
        flags.append("extravasation")
    return flags


def reach_fraction(graph: DuctGraph, landmarks: Landmarks, spacing_mm: float) -> float | None:
    """Deepest duct point behind the nipple, as a fraction of the breast depth."""
    if landmarks.nipple is None or not landmarks.breast_depth_mm or not graph.found:
        return None
    depth = max(axis_offsets(p, landmarks, spacing_mm)[0] for p in graph.points[::4])
    return depth / landmarks.breast_depth_mm


def _stops_early(graph: DuctGraph, landmarks: Landmarks, spacing_mm: float) -> bool:
    summary = graph.summary()
    reach = reach_fraction(graph, landmarks, spacing_mm)
    return bool(
        summary["generations"] < MIN_GENERATIONS
        or summary["total_length_mm"] < MIN_TOTAL_LENGTH_MM
        or (reach is not None and reach < MIN_REACH_FRACTION)
    )
