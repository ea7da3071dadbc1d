"""One simulated breast: its 3D scene and its rendered views with their ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ductai.simulation import truth
from ductai.simulation.anatomy import build_scene
from ductai.simulation.config import SimulationConfig
from ductai.simulation.render import RenderedView, render_view
from ductai.simulation.scene import Scene

# Stable per-view stream ids so a view's noise does not depend on which other views exist.
_VIEW_STREAM = {"CC": 1, "MLO": 2, "ML": 3}


@dataclass
class SimulatedView:
    scene: Scene
    rendered: RenderedView

    def truth_dict(self, identity=None) -> dict:
        """The truth of this view in the stored pixel grid (docs/simulated-dataset.md)."""
        r = self.rendered
        breast = self.scene.breast
        objects = []
        spacing = float(np.mean(r.pixel_spacing_mm))
        for obj in r.objects:
            finding = self.scene.findings[obj["finding"]]
            center = np.asarray(finding.center, dtype=float)
            objects.append(
                {
                    "instance": int(obj["instance"]),
                    "label": finding.label,
                    "is_mimic": bool(finding.is_mimic),
                    "bbox_px": [round(float(v), 2) for v in obj["bbox_px"]],
                    "center_px": [round(float(v), 2) for v in obj["center_px"]],
                    "diameter_mm": round(float(finding.size_mm), 2),
                    "center_3d_mm": [round(float(v), 2) for v in center],
                    "distance_to_nipple_mm": round(truth.distance_to_nipple(center), 2),
                    # what this (compressed, projected) view shows: the surgeon's measure
                    "image_distance_to_nipple_mm": round(
                        float(np.hypot(*np.subtract(obj["center_px"], r.nipple_px))) * spacing, 2
                    ),
                    "axis_offset_mm": round(truth.axis_offset(center), 2),
                    "duct_path_length_mm": _rounded(finding.path_length_mm),
                    "branch_generation": int(finding.generation),
                    "clock": truth.clock_position(center, breast.laterality),
                    "quadrant": truth.quadrant(center, breast.laterality),
                    "depth": truth.depth_third(center, breast),
                    "obstructing": bool(finding.obstructing),
                }
            )
        filled = [b for b in self.scene.branches if b.filled]
        lengths = [_polyline_length(b.points) for b in self.scene.branches]
        result = {
            "laterality": r.laterality,
            "view": r.view,
            "rows": int(r.pixels.shape[0]),
            "columns": int(r.pixels.shape[1]),
            "pixel_spacing_mm": [float(v) for v in r.pixel_spacing_mm],
            "nipple_px": [round(float(v), 2) for v in r.nipple_px],
            "orifice_px": [round(float(v), 2) for v in r.orifice_px],
            "objects": objects,
            # burnt-in letters and text: no finding, but what a reader sees in the image
            "markers": [[round(float(v), 1) for v in box] for box in r.marker_boxes],
            "duct": {
                "branches": len(self.scene.branches),
                "generations": 1 + max((b.generation for b in self.scene.branches), default=-1),
                "total_length_mm": round(float(sum(lengths)), 1),
                "filled_fraction": round(len(filled) / max(1, len(self.scene.branches)), 3),
            },
            "physics": {k: _jsonable(v) for k, v in r.physics.items()},
        }
        if identity is not None:
            result = {
                "image_id": identity.image_id,
                "patient_id": identity.patient_id,
                "study_instance_uid": identity.study_instance_uid,
                "series_instance_uid": identity.series_instance_uid,
                "sop_instance_uid": identity.sop_instance_uid,
                **result,
            }
        return result


def breast_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index, stream]))


def simulate_breast(
    config: SimulationConfig,
    seed: int,
    index: int,
    spacing_mm: float | None = None,
    slots: tuple[int, ...] = (0, 1),
) -> list[SimulatedView]:
    """Scene of breast ``index`` and its views: slot 0 is the CC, slot 1 the ML or MLO.

    ``spacing_mm`` renders directly on that coarser grid. A view is the same whichever
    other slots are asked for.
    """
    rng = breast_rng(seed, index)
    laterality = "L" if rng.random() < 0.5 else "R"
    second = "MLO" if rng.random() < config.mlo_probability else "ML"
    scene = build_scene(config.anatomy, rng, laterality)
    views = [("CC", second)[slot] for slot in slots]
    return [
        SimulatedView(
            scene,
            render_view(
                scene,
                view,
                config.imaging,
                breast_rng(seed, index, _VIEW_STREAM[view]),
                spacing_mm=spacing_mm,
            ),
        )
        for view in views
    ]


def _polyline_length(points: np.ndarray) -> float:
    points = np.asarray(points, dtype=float)
    if len(points) < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())


def _rounded(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 2)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value
