"""3D ground-truth geometry of a scene: distances, duct path lengths, clock, quadrant, depth.

All points are in the breast frame of :mod:`ductai.simulation.scene` (mm, origin at the
nipple tip, x posterior, y medial, z superior).

Clock, quadrant and depth-third rules live in :mod:`ductai.data.breast_coords`, shared with
inference; this module feeds them the 3D point's (y, z) offsets and depth fraction.
"""

from __future__ import annotations

import math

import numpy as np

from ductai.data import breast_coords
from ductai.data.breast_coords import CENTRAL_RADIUS_MM
from ductai.simulation.scene import Branch, Breast, Scene


def distance_to_nipple(point) -> float:
    """Straight-line distance from the nipple tip (the frame's origin)."""
    return float(np.linalg.norm(np.asarray(point, dtype=float)))


def axis_offset(point) -> float:
    """Distance from the nipple axis in the coronal plane: how well a clock is defined."""
    return float(math.hypot(float(point[1]), float(point[2])))


def clock_hours(point, laterality: str) -> float:
    """Clock position in hours in [0, 12), unrounded (0 = 12:00)."""
    return breast_coords.clock_hours(float(point[1]), float(point[2]), laterality)


def clock_position(point, laterality: str) -> str:
    """``"H:MM"`` to the nearest half hour, as the surgeon facing the patient reads it."""
    return breast_coords.clock_position(float(point[1]), float(point[2]), laterality)


def quadrant(point, laterality: str = "R", central_radius_mm: float = CENTRAL_RADIUS_MM) -> str:
    """UOQ / UIQ / LOQ / LIQ, or ``"central"`` near the nipple axis."""
    return breast_coords.quadrant(float(point[1]), float(point[2]), laterality, central_radius_mm)


def depth_third(point, breast: Breast) -> str:
    """anterior / middle / posterior third of the nipple-to-chest-wall distance."""
    return breast_coords.depth_third(float(point[0]) / breast.depth)


def project_on_polyline(points: np.ndarray, point) -> tuple[float, float]:
    """(arc length of the closest polyline point, distance to it)."""
    p = np.asarray(point, dtype=float)
    a, b = points[:-1], points[1:]
    ab = b - a
    denom = np.maximum((ab * ab).sum(axis=1), 1e-12)
    t = np.clip(((p - a) * ab).sum(axis=1) / denom, 0.0, 1.0)
    closest = a + t[:, None] * ab
    dist = np.linalg.norm(closest - p, axis=1)
    k = int(np.argmin(dist))
    seg = np.linalg.norm(ab, axis=1)
    arc = float(seg[:k].sum() + t[k] * seg[k])
    return arc, float(dist[k])


def path_length(branches: list[Branch], branch: int, point) -> float:
    """Length along the ducts from the orifice to ``point`` (projected onto ``branch``)."""
    arc, _ = project_on_polyline(branches[branch].points, point)
    return branches[branch].path_length_start + arc


def nearest_branch(branches: list[Branch], point, filled_only: bool = False) -> tuple[int, float]:
    """(index, distance) of the branch whose centreline passes closest to ``point``."""
    best, best_d = -1, math.inf
    for b in branches:
        if filled_only and not b.filled:
            continue
        _, d = project_on_polyline(b.points, point)
        if d < best_d:
            best, best_d = b.index, d
    return best, best_d


def duct_path_length(branches: list[Branch], point) -> float:
    """Path length from the orifice to the duct point nearest to ``point``."""
    b, _ = nearest_branch(branches, point)
    return path_length(branches, b, point) if b >= 0 else float("nan")


def branch_generation(branches: list[Branch], branch: int) -> int:
    """Number of bifurcations between the orifice and ``branch`` (0 = main duct).

    Counted from the tree itself, so it also holds for hand-made trees; a branch that is
    only cut in two (a single child, e.g. at an obstruction) does not add a generation.
    """
    generation, b = 0, branch
    while branches[b].parent >= 0:
        parent = branches[branches[b].parent]
        generation += len(parent.children) >= 2
        b = parent.index
    return generation


def duct_summary(scene: Scene) -> dict:
    """Branch count, generations, total centreline length and the filled length fraction."""
    lengths = np.array(
        [np.linalg.norm(np.diff(b.points, axis=0), axis=1).sum() for b in scene.branches]
    )
    filled = np.array([b.filled for b in scene.branches])
    total = float(lengths.sum())
    return {
        "branches": len(scene.branches),
        "generations": 1 + max((b.generation for b in scene.branches), default=-1),
        "total_length_mm": round(total, 1),
        "filled_fraction": round(float(lengths[filled].sum() / total) if total else 0.0, 3),
    }
