"""One view: landmarks, duct graph, per-lesion measures and fill flags (ViewLocalization)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ductai.inference.localization.duct_graph import (
    DUCT_THRESHOLD,
    DuctGraph,
    build_duct_graph,
    duct_mask,
    empty_graph,
)
from ductai.inference.localization.fill import fill_flags
from ductai.inference.localization.measures import measure_lesion
from ductai.inference.localization.nipple import Landmarks, find_landmarks
from ductai.inference.types import ViewLocalization, ViewPrediction


@dataclass
class ViewParts:
    """The localization of a view with the intermediate results (for overlays, debugging)."""

    localization: ViewLocalization
    landmarks: Landmarks
    graph: DuctGraph


def localize_arrays(
    image: np.ndarray,
    duct_prob: np.ndarray | None,
    detections: list,
    spacing_mm: float,
    view: str,
    duct_threshold: float = DUCT_THRESHOLD,
) -> ViewParts:
    """Localization from canonical arrays; ``detections`` have ``.box``, ``.label``, ``.score``."""
    duct = None if duct_prob is None else duct_mask(duct_prob, spacing_mm, duct_threshold)
    landmarks = find_landmarks(image, duct, spacing_mm, fit_axis=view != "CC")
    if duct is None:
        graph = empty_graph(spacing_mm, image.shape)
    else:
        graph = build_duct_graph(
            duct_prob, landmarks.orifice, spacing_mm, duct_threshold, mask=duct
        )
    lesions = [measure_lesion(d.box, landmarks, graph, spacing_mm, view) for d in detections]
    flags = fill_flags(graph, landmarks, detections, spacing_mm)
    if duct_prob is None:
        flags = ["no_segmentation", *[f for f in flags if f != "no_opacified_duct"]]
    loc = ViewLocalization(
        nipple=landmarks.nipple,
        orifice=landmarks.orifice,
        duct=graph.summary(),
        lesions=lesions,
        fill_flags=flags,
        breast_depth_mm=landmarks.breast_depth_mm,
    )
    return ViewParts(loc, landmarks, graph)


def localize_view(pred: ViewPrediction, duct_threshold: float = DUCT_THRESHOLD) -> ViewParts:
    return localize_arrays(
        pred.canonical if pred.outline is None else pred.outline,
        pred.duct_prob,
        pred.detections,
        pred.geometry.spacing_mm,
        pred.image.view,
        duct_threshold,
    )
