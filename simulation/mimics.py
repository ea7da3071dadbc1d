"""Mimics: air bubbles in the contrast column and calcifications, with exact masks.

They are labelled (``is_mimic``) so detectors can learn them as hard negatives.
"""

from __future__ import annotations

import numpy as np

from ductai.simulation.anatomy_config import MimicsConfig, integer, uniform
from ductai.simulation.duct_tree import DuctTree, arc_lengths, branch_length, point_at
from ductai.simulation.findings import FindingDraft, Placement
from ductai.simulation.scene import Blob, Breast, Tube


def insert_mimics(place: Placement, cfg: MimicsConfig) -> list[FindingDraft]:
    """Bubbles (in filled ducts, clear of lesions) and calcifications (anywhere)."""
    tree, breast, rng = place.tree, place.breast, place.rng
    drafts: list[FindingDraft] = []
    if rng.random() < cfg.bubbles.probability:
        drafts += _bubble_row(place, cfg, rng)
    cc = cfg.calcifications
    if rng.random() < cc.secretory_probability:
        for _ in range(integer(rng, cc.secretory_count)):
            draft = _secretory(tree, breast, cc, rng)
            if draft is not None:
                drafts.append(draft)
    if rng.random() < cc.punctate_probability:
        drafts += [_punctate(breast, cc, rng) for _ in range(integer(rng, cc.punctate_count))]
    return drafts


def _bubble_row(place: Placement, cfg: MimicsConfig, rng) -> list[FindingDraft]:
    """Perfectly round air bubbles, slightly smaller than the lumen, one behind the other."""
    bc, tree = cfg.bubbles, place.tree
    gen_hi = 0 if rng.random() < bc.main_duct_probability else bc.max_generation
    site = place.site((0, gen_hi), None, 1.0, 0.0)
    if site is None:
        return []
    branch = tree.branches[site.branch]
    length = branch_length(branch)
    s, drafts = site.s, []
    for _ in range(integer(rng, bc.count)):
        _, r, _ = point_at(branch, s)
        radius = uniform(rng, bc.radius_fraction) * r
        # The bubble must fit the narrowest lumen along its own length, and fill most of
        # it (shaped by the duct): where the calibre changes under it (the sinus opening
        # out of the channel), it moves on to where the duct is even.
        for _ in range(12):
            lumens = [point_at(branch, s + k * radius)[1] for k in (0.0, 0.5, 1.0, 1.5, 2.0)]
            radius = min(radius, uniform(rng, bc.radius_fraction) * min(lumens))
            if radius >= bc.radius_fraction[0] * 0.9 * max(lumens) or s + 2 * radius > length:
                break
            s += 0.5
            radius = uniform(rng, bc.radius_fraction) * point_at(branch, s)[1]
        center_s = s + radius
        if center_s + radius > length or radius < 0.05:
            break
        if place.overlaps_reserved(branch.index, s, center_s + radius):
            break
        center, _, _ = point_at(branch, center_s)
        drafts.append(
            FindingDraft(
                "air_bubble",
                center,
                2 * radius,
                blobs=[Blob(center, np.full(3, radius), np.eye(3), "air", -1, 1.0)],
                branch=branch.index,
                generation=branch.generation,
                path_length_mm=branch.path_length_start + center_s,
            )
        )
        s = center_s + radius + uniform(rng, bc.gap_mm)
    place.reserve(branch.index, site.s, s)
    return drafts


def _secretory(tree: DuctTree, breast: Breast, cc, rng) -> FindingDraft | None:
    """A dense rod along a duct line: in a duct of this tree, or of another lobe."""
    radius = uniform(rng, cc.rod_diameter_mm) / 2
    length = uniform(rng, cc.rod_length_mm)
    candidates = [b for b in tree.branches if b.generation >= 1 and branch_length(b) > length]
    if candidates and rng.random() < 0.5:
        branch = candidates[int(rng.integers(len(candidates)))]
        arcs = arc_lengths(branch.points)
        s0 = float(rng.uniform(0.0, arcs[-1] - length))
        s = np.concatenate([[s0], arcs[(arcs > s0) & (arcs < s0 + length)], [s0 + length]])
        pts = np.stack([point_at(branch, v)[0] for v in s])
        info = (branch.index, branch.generation, branch.path_length_start + s0 + length / 2)
    else:
        # Another lobe's duct: a straight rod pointing at the nipple.
        c = _random_inside(breast, rng, margin=breast.skin_thickness + 2.0)
        if c is None:
            return None
        d = c / max(np.linalg.norm(c), 1e-6)
        pts = np.stack([c - d * length / 2, c + d * length / 2])
        info = (-1, -1, float("nan"))
    tubes = [
        Tube(pts[k], pts[k + 1], radius, radius, -1, -1, "calcium", 1.0)
        for k in range(len(pts) - 1)
    ]
    center = 0.5 * (pts[0] + pts[-1])
    return FindingDraft(
        "calcification",
        center,
        max(length, 2 * radius),
        tubes=tubes,
        branch=info[0],
        generation=info[1],
        path_length_mm=info[2],
    )


def _punctate(breast: Breast, cc, rng) -> FindingDraft:
    """A fine punctate calcification anywhere in the gland."""
    radius = uniform(rng, cc.punctate_radius_mm)
    c = _random_inside(breast, rng, margin=breast.skin_thickness + 1.0)
    if c is None:
        c = np.array([breast.depth / 2, 0.0, 0.0])
    radii = radius * rng.uniform(0.8, 1.2, size=3)
    blob = Blob(c, radii, np.eye(3), "calcium", 1, 1.0, 0.0, int(rng.integers(2**31)))
    return FindingDraft("calcification", c, 2 * float(radii.max()), blobs=[blob])


def _random_inside(breast: Breast, rng, margin: float) -> np.ndarray | None:
    """A uniform point in the breast mound (behind the nipple), ``margin`` under the skin."""
    lo = np.array([breast.nipple_length, -breast.half_width, -breast.half_height])
    hi = np.array([breast.depth - 5.0, breast.half_width, breast.half_height])
    pts = rng.uniform(lo, hi, size=(32, 3))
    ok = breast.contains(pts, margin)
    return pts[int(np.argmax(ok))] if ok.any() else None
