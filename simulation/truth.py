"""3D ground-truth geometry of a scene: distances, duct path lengths, clock, quadrant, depth.

All points are in the breast frame of :mod:`ductai.simulation.scene` (mm, origin at the
nipple tip, x posterior, y medial, z superior).

Rules (docs/conventions.md):

* Clock: the surgeon faces the patient, 12:00 superior, 6:00 inferior, 3:00 towards the
  patient's left. For the right breast 3:00 is medial (+y), for the left breast lateral
  (-y). Rounded to the nearest half hour, written ``"H:MM"`` without a leading zero
  (``"3:00"``, ``"10:30"``, ``"12:00"``). A point on the nipple axis reads ``"12:00"``.
* Quadrant: ``"central"`` (retro-areolar) when the point lies within ``CENTRAL_RADIUS_MM``
  (15 mm) of the nipple axis in the coronal (y, z) plane; otherwise upper when z >= 0,
  inner when y >= 0 (medial), giving UOQ, UIQ, LOQ, LIQ for either laterality.
* Depth third: anterior / middle / posterior third of the nipple-to-chest-wall distance
  (``breast.depth``) by the point's x.
"""

from __future__ import annotations

import math

import numpy as np

from ductai.simulation.scene import Branch, Breast, Scene

CENTRAL_RADIUS_MM = 15.0


def distance_to_nipple(point) -> float:
    """Straight-line distance from the nipple tip (the frame's origin)."""
    return float(np.linalg.norm(np.asarray(point, dtype=float)))


def clock_hours(point, laterality: str) -> float:
    """Clock position in hours in [0, 12), unrounded (0 = 12:00)."""
    _check_laterality(laterality)
    y, z = float(point[1]), float(point[2])
    towards_three = y if laterality == "R" else -y  # the patient's left
    angle = math.atan2(towards_three, z)  # clockwise from 12:00
    return (angle / (2 * math.pi) * 12.0) % 12.0


def clock_position(point, laterality: str) -> str:
    """``"H:MM"`` to the nearest half hour, as the surgeon facing the patient reads it."""
    halves = round(clock_hours(point, laterality) * 2) % 24
    hour, minute = divmod(halves, 2)
    return f"{hour or 12}:{30 * minute:02d}"


def quadrant(point, laterality: str = "R", central_radius_mm: float = CENTRAL_RADIUS_MM) -> str:
    """UOQ / UIQ / LOQ / LIQ, or ``"central"`` near the nipple axis (module docstring)."""
    _check_laterality(laterality)
    y, z = float(point[1]), float(point[2])
    if math.hypot(y, z) < central_radius_mm:
        return "central"
    return ("U" if z >= 0 else "L") + ("I" if y >= 0 else "O") + "Q"


def depth_third(point, breast: Breast) -> str:
    """anterior / middle / posterior third of the nipple-to-chest-wall distance."""
    fraction = float(point[0]) / breast.depth
    if fraction < 1 / 3:
        return "anterior"
    return "middle" if fraction < 2 / 3 else "posterior"


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


def _check_laterality(laterality: str) -> None:
    if laterality not in ("L", "R"):
        raise ValueError(f"laterality must be 'L' or 'R', got {laterality!r}")
