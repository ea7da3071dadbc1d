"""Localization checked against the simulator's truth, with oracle inputs.

The TRUE duct mask stands in for duct_prob and the TRUE lesion boxes for the detections, so
these tests measure localization alone, not the nets. Distances are compared with the truth
projected into the same (compressed) view: a radiologist's ruler on the image, which is what
the localization reports (inference/localization/measures.py).

Run ``.venv/bin/python tests/inference/test_localization.py`` for the accuracy table.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from functools import cache

import numpy as np

from ductai.data import breast_coords
from ductai.inference.localization.study import StudyView, combine_views
from ductai.inference.localization.view import localize_arrays
from ductai.inference.types import Detection
from ductai.simulation import truth
from ductai.simulation.config import load_simulation_config
from ductai.simulation.dataset import canonical_sample
from ductai.simulation.sample import simulate_breast

SPACING = 0.3
SEED = 11
N_BREASTS = 20


@dataclass
class OracleView:
    view: str
    laterality: str
    obliquity_deg: float
    sample: dict
    parts: object  # ViewParts
    findings: list  # scene findings, parallel to the detections
    true_nipple: np.ndarray
    true_distance: list[float]  # image-plane mm
    true_path: list[float]  # image-plane mm along the projected duct centreline
    to_px: object  # breast frame -> canonical px
    breast: object  # scene.breast


def projected_duct_path(scene, finding, to_px) -> float:
    """Length in the image plane of the duct centreline from the orifice to the finding."""
    chain, b = [], finding.branch
    while b >= 0:
        chain.append(scene.branches[b])
        b = scene.branches[b].parent
    chain = chain[::-1]
    points = []
    for br in chain[:-1]:
        points.append(br.points)
    last = chain[-1]
    arc = finding.path_length_mm - last.path_length_start
    seg = np.linalg.norm(np.diff(last.points, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    k = int(np.searchsorted(cum, arc))
    points.append(last.points[: max(k, 1)])
    pts = np.vstack([scene.orifice[None], *points])
    px = to_px(pts)
    return float(np.linalg.norm(np.diff(px, axis=0), axis=1).sum() * SPACING)


def oracle_view(sim_view) -> OracleView:
    s = canonical_sample(sim_view, SPACING)
    r, scene = sim_view.rendered, sim_view.scene
    geom = r.geometry
    keep = [k for k, o in enumerate(r.objects) if not o["is_mimic"]]
    findings = [scene.findings[r.objects[k]["finding"]] for k in keep]
    detections = [Detection(s["boxes"][k], 1.0, f.label) for k, f in zip(keep, findings)]
    duct = s["duct"][0].astype(np.float32)
    parts = localize_arrays(s["image"][0], duct, detections, SPACING, r.view)

    def to_px(points):  # the canonical grid is the rendered grid (same spacing, flip only)
        return geom.to_canonical_px(points) * (geom.spacing_mm / SPACING)

    nipple = to_px(np.zeros(3))[0]
    distance = [float(np.linalg.norm(to_px(f.center)[0] - nipple) * SPACING) for f in findings]
    paths = [projected_duct_path(scene, f, to_px) for f in findings]
    return OracleView(
        r.view,
        r.laterality,
        geom.obliquity_deg,
        s,
        parts,
        findings,
        nipple,
        distance,
        paths,
        to_px,
        scene.breast,
    )


@cache
def oracle_breast(index: int, seed: int = SEED) -> list[OracleView]:
    config = load_simulation_config("default")
    return [oracle_view(v) for v in simulate_breast(config, seed, index, spacing_mm=SPACING)]


def study_of(views: list[OracleView], use_obliquity: bool = True):
    study_views = [
        StudyView(
            uid=f"{k}",
            view=v.view,
            obliquity_deg=(v.obliquity_deg if use_obliquity else 45.0) if v.view == "MLO" else 0,
            localization=v.parts.localization,
            labels=[f.label for f in v.findings],
            scores=[1.0] * len(v.findings),
        )
        for k, v in enumerate(views)
    ]
    return combine_views(study_views, views[0].laterality)


def measure(n_breasts: int = N_BREASTS, seed: int = SEED) -> dict:
    """Accuracy of the oracle localization over ``n_breasts`` simulated breasts."""
    nipple, dist, path_rel, clock, quad, depth, matched, pairs, gens = ([] for _ in range(9))
    for index in range(n_breasts):
        views = oracle_breast(index, seed)
        for v in views:
            loc = v.parts.localization
            nipple.append(np.linalg.norm(np.asarray(loc.nipple) - v.true_nipple) * SPACING)
            for lesion, td, tp, f in zip(loc.lesions, v.true_distance, v.true_path, v.findings):
                dist.append(abs(lesion.distance_to_nipple_mm - td))
                if lesion.duct_path_length_mm is not None and tp > 5:
                    path_rel.append(abs(lesion.duct_path_length_mm - tp) / tp)
                if lesion.branch_generation is not None:
                    gens.append(abs(lesion.branch_generation - f.generation))
        study = study_of(views)
        cc, side = views
        for lesion in study.lesions:
            if len(lesion.views) != 2:
                continue
            i, j = lesion.views["0"], lesion.views["1"]
            matched.append(cc.findings[i].index == side.findings[j].index)
            f = cc.findings[i]
            clock.append(
                breast_coords.clock_difference_hours(
                    lesion.clock, truth.clock_position(f.center, cc.laterality)
                )
            )
            quad.append(lesion.quadrant == truth.quadrant(f.center, cc.laterality))
            depth.append(lesion.depth == truth.depth_third(f.center, cc.breast))
        both = {f.index for f in cc.findings} & {f.index for f in side.findings}
        pairs.append(len(both))
    clock = np.asarray(clock)
    return {
        "views": len(nipple),
        "nipple_error_mm_mean": float(np.mean(nipple)),
        "nipple_error_mm_max": float(np.max(nipple)),
        "lesions": len(dist),
        "distance_error_mm_mean": float(np.mean(dist)),
        "path_relative_error_median": float(np.median(path_rel)),
        "path_within_15pct": float(np.mean(np.asarray(path_rel) <= 0.15)),
        "generation_exact": float(np.mean(np.asarray(gens) == 0)),
        "lesions_in_both_views": int(sum(pairs)),
        "matched_pairs": len(matched),
        "matches_correct": float(np.mean(matched)) if matched else math.nan,
        "clock_within_1h": float(np.mean(clock <= 1.0)) if clock.size else math.nan,
        "clock_exact_half_hour": float(np.mean(clock <= 0.5)) if clock.size else math.nan,
        "quadrant_agreement": float(np.mean(quad)) if quad else math.nan,
        "depth_agreement": float(np.mean(depth)) if depth else math.nan,
    }


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else N_BREASTS
    for key, value in measure(n).items():
        print(f"{key:28s} {value:.3f}" if isinstance(value, float) else f"{key:28s} {value}")
