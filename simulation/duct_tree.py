"""One cannulated duct system growing into its lobe, and polyline helpers on its branches.

Growth is space-colonisation style: the lobe (a cone from the first branch point towards the
chest wall) is filled with attractor points; every branch owns a territory of them, consumes
the ones it passes close to, and at its end splits the rest in two, one half per child. The
children therefore head into unoccupied parts of the lobe and away from each other, and every
terminal branch ends where ducts are still missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ductai.simulation.anatomy_config import DuctConfig, integer, uniform
from ductai.simulation.scene import Blob, Branch, Breast


@dataclass
class DuctTree:
    """The branches being built, with the chain id of each (merged seamlessly when imaged)."""

    branches: list[Branch]
    chains: list[int]
    lobe_axis: np.ndarray
    n_chains: int = 1
    lobules: list[tuple[int, Blob]] = field(default_factory=list)  # (branch, blob)

    def new_chain(self) -> int:
        self.n_chains += 1
        return self.n_chains - 1


# ----------------------------------------------------------------------------- polylines


def arc_lengths(points: np.ndarray) -> np.ndarray:
    """Cumulative length along a polyline, starting at 0."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(seg)])


def branch_length(branch: Branch) -> float:
    return float(arc_lengths(branch.points)[-1])


def point_at(branch: Branch, s: float) -> tuple[np.ndarray, float, np.ndarray]:
    """Centre point, lumen radius and unit direction at arc length ``s`` along a branch."""
    arcs = arc_lengths(branch.points)
    s = float(np.clip(s, 0.0, arcs[-1]))
    k = int(np.clip(np.searchsorted(arcs, s, side="right") - 1, 0, len(arcs) - 2))
    seg = arcs[k + 1] - arcs[k]
    t = 0.0 if seg <= 0 else (s - arcs[k]) / seg
    p = branch.points[k] + t * (branch.points[k + 1] - branch.points[k])
    r = branch.radii[k] + t * (branch.radii[k + 1] - branch.radii[k])
    d = branch.points[k + 1] - branch.points[k]
    return p, float(r), d / max(np.linalg.norm(d), 1e-9)


def insert_arcs(branch: Branch, positions: list[float] | np.ndarray) -> None:
    """Add polyline points at these arc lengths (geometry unchanged, radii interpolated)."""
    arcs = arc_lengths(branch.points)
    new = np.asarray(positions, dtype=float)
    new = new[(new > 1e-6) & (new < arcs[-1] - 1e-6)]
    if new.size == 0:
        return
    close = np.min(np.abs(new[:, None] - arcs[None, :]), axis=1) < 1e-4
    new = np.unique(new[~close])
    if new.size == 0:
        return
    all_arcs = np.sort(np.concatenate([arcs, new]))
    pts = np.stack([np.interp(all_arcs, arcs, branch.points[:, i]) for i in range(3)], axis=1)
    branch.radii = np.interp(all_arcs, arcs, branch.radii)
    branch.points = pts


def subtree(branches: list[Branch], root: int) -> list[int]:
    """``root`` and all its descendants."""
    out, stack = [], [root]
    while stack:
        b = stack.pop()
        out.append(b)
        stack.extend(branches[b].children)
    return out


def split_branch(tree: DuctTree, b: int, s: float) -> int:
    """Cut branch ``b`` at arc ``s``; the distal piece becomes a new branch (same generation)."""
    branch = tree.branches[b]
    insert_arcs(branch, [s])
    arcs = arc_lengths(branch.points)
    k = int(np.argmin(np.abs(arcs - s)))
    k = int(np.clip(k, 1, len(arcs) - 2))
    j = len(tree.branches)
    distal = Branch(
        index=j,
        parent=b,
        generation=branch.generation,
        points=branch.points[k:].copy(),
        radii=branch.radii[k:].copy(),
        filled=branch.filled,
        path_length_start=branch.path_length_start + float(arcs[k]),
        children=list(branch.children),
    )
    for c in distal.children:
        tree.branches[c].parent = j
    branch.points = branch.points[: k + 1].copy()
    branch.radii = branch.radii[: k + 1].copy()
    branch.children = [j]
    tree.branches.append(distal)
    tree.chains.append(tree.chains[b])
    return j


def major_path(tree: DuctTree, b: int, s: float, length: float) -> list[tuple[int, float, float]]:
    """Pieces ``(branch, s0, s1)`` following the larger child from arc ``s`` of ``b``."""
    pieces = []
    while length > 1e-6 and b >= 0:
        total = branch_length(tree.branches[b])
        s1 = min(total, s + length)
        if s1 > s:
            pieces.append((b, s, s1))
        length -= s1 - s
        children = tree.branches[b].children
        b, s = (children[0], 0.0) if children else (-1, 0.0)
    return pieces


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 1e-12 else v


def _perpendicular(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return _unit(v - v.dot(d) * d)


# ----------------------------------------------------------------------------- growth


class _Space:
    """Fast scalar inside-test of the region ducts may occupy."""

    def __init__(self, breast: Breast, cfg: DuctConfig) -> None:
        m = cfg.margin_mm + breast.skin_thickness
        self.a = max(breast.depth - breast.nipple_length - m, 1.0)
        self.b = max(breast.half_width - m, 1.0)
        self.c = max(breast.half_height - m, 1.0)
        self.depth = breast.depth
        self.x_max = breast.depth - cfg.chest_wall_margin_mm

    def inside(self, p: np.ndarray) -> bool:
        x, y, z = float(p[0]), float(p[1]), float(p[2])
        f = ((self.depth - x) / self.a) ** 2 + (y / self.b) ** 2 + (z / self.c) ** 2
        return f <= 1.0 and x <= self.x_max

    def inside_many(self, p: np.ndarray) -> np.ndarray:
        f = ((self.depth - p[:, 0]) / self.a) ** 2 + (p[:, 1] / self.b) ** 2
        f = f + (p[:, 2] / self.c) ** 2
        return (f <= 1.0) & (p[:, 0] <= self.x_max)

    def inward(self, p: np.ndarray) -> np.ndarray:
        g = np.array(
            [(p[0] - self.depth) / self.a**2, p[1] / self.b**2, p[2] / self.c**2], dtype=float
        )
        if p[0] > self.x_max - 2.0:
            g[0] += 1.0
        return _unit(-g)


def _lobe(space: _Space, apex: np.ndarray, cfg: DuctConfig, rng: np.random.Generator):
    """Axis and attractor points of the lobe this duct system drains."""
    # Aim at a random point of the posterior breast: lobes radiate in every direction.
    for _ in range(50):
        q = np.array(
            [
                rng.uniform(0.45, 0.95) * space.x_max,
                rng.uniform(-space.b, space.b),
                rng.uniform(-space.c, space.c),
            ]
        )
        if space.inside(q) and q[0] > apex[0] + 10.0:
            break
    axis = _unit(q - apex)
    # Reach: how far the cone axis runs inside the breast.
    t = np.arange(1.0, 250.0, 1.0)
    inside = space.inside_many(apex[None, :] + t[:, None] * axis[None, :])
    reach = float(t[np.argmin(inside)] if not inside.all() else t[-1])
    reach = max(reach * uniform(rng, cfg.lobe_reach_fraction), 15.0)
    half_angle = math.radians(uniform(rng, cfg.lobe_half_angle_deg))
    n = cfg.attractors * 3
    cos_t = rng.uniform(math.cos(half_angle), 1.0, size=n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    phi = rng.uniform(0.0, 2 * math.pi, size=n)
    e1 = _perpendicular(axis, rng)
    e2 = np.cross(axis, e1)
    dirs = (
        cos_t[:, None] * axis
        + (sin_t * np.cos(phi))[:, None] * e1
        + (sin_t * np.sin(phi))[:, None] * e2
    )
    # Radial density ~ r^2 (uniform in volume), starting a few mm beyond the apex.
    r = reach * rng.uniform((4.0 / reach) ** 3, 1.0, size=n) ** (1.0 / 3.0)
    pts = apex + dirs * r[:, None]
    pts = pts[space.inside_many(pts)][: cfg.attractors]
    return axis, reach, pts


def _root(breast: Breast, orifice: np.ndarray, axis_hint, cfg: DuctConfig, rng) -> Branch:
    """Generation 0: nipple channel, lactiferous sinus (spindle) and main duct."""
    r_channel = uniform(rng, cfg.channel_radius_mm)
    # The narrow channel runs through the whole nipple; the sinus lies behind its base.
    radial = np.array([0.0, orifice[1], orifice[2]])
    d0 = _unit(np.array([1.0, 0.0, 0.0]) - 0.3 * radial / max(breast.nipple_radius, 1.0))
    through = (breast.nipple_length - float(orifice[0])) / max(float(d0[0]), 0.5)
    l_channel = max(through, 0.0) + uniform(rng, cfg.channel_length_mm)
    ectatic = rng.random() < cfg.ectatic_sinus_probability
    r_sinus = uniform(rng, cfg.ectatic_sinus_radius_mm if ectatic else cfg.sinus_radius_mm)
    l_sinus = uniform(rng, cfg.sinus_length_mm)
    dilated = rng.random() < cfg.dilated_probability  # mild dilatation, common with discharge
    r_main = uniform(rng, cfg.dilated_main_radius_mm if dilated else cfg.main_radius_mm)
    r_main = min(r_main, r_sinus * 0.8)
    l_main = max(uniform(rng, cfg.first_branch_mm) - l_sinus, 2.0)

    # The channel runs from the off-centre orifice back towards the nipple axis.
    s_channel = np.linspace(0.0, l_channel, 3)
    s_sinus = l_channel + l_sinus * np.array([0.15, 0.35, 0.5, 0.65, 0.85, 1.0])
    n_main = max(2, round(l_main / 2.5))
    s_main = l_channel + l_sinus + l_main * np.arange(1, n_main + 1) / n_main
    arcs = np.concatenate([s_channel, s_sinus, s_main])
    total = arcs[-1]
    # Straight through the nipple, then the direction turns smoothly towards the lobe.
    pts = [orifice.astype(float)]
    for k in range(1, len(arcs)):
        t = min(1.0, max(arcs[k - 1] - l_channel, 0.0) / (total - l_channel)) ** 1.5
        d = _unit((1 - t) * d0 + t * axis_hint + 0.05 * rng.normal(size=3) * t)
        pts.append(pts[-1] + d * (arcs[k] - arcs[k - 1]))
    pts = np.array(pts)

    radii = np.empty_like(arcs)
    radii[arcs <= l_channel] = r_channel
    t = (s_sinus - l_channel) / l_sinus
    base = r_channel + (r_main - r_channel) * t
    radii[3 : 3 + len(s_sinus)] = (
        base + (r_sinus - base) * np.clip(np.sin(np.pi * t), 0.0, 1.0) ** 0.8
    )
    taper = uniform(rng, cfg.taper)
    tm = (s_main - l_channel - l_sinus) / l_main
    radii[3 + len(s_sinus) :] = r_main * (1 - (1 - taper) * tm)
    return Branch(0, -1, 0, pts, radii, True, 0.0)


def _polyline(space, start, direction, length, target, cfg, rng) -> np.ndarray:
    """A gently bending centreline from ``start``, steered towards ``target``."""
    seg = uniform(rng, cfg.segment_length_mm)
    n = int(np.clip(round(length / seg), 2, 8))
    step = length / n
    bend = math.radians(uniform(rng, cfg.bend_deg))
    steer = uniform(rng, cfg.steer)
    noise = rng.normal(size=(n, 3)) * bend
    pts = [start]
    d = direction
    wobble = np.zeros(3)
    for k in range(n):
        p = pts[-1]
        if k > 0:
            wobble = 0.5 * wobble + noise[k]
            to_target = _unit(target - p)
            pull = steer * (to_target - d) if to_target.dot(direction) > 0.0 else 0.0
            d = _unit(d + pull + wobble - wobble.dot(d) * d)
        q = p + step * d
        if not space.inside(q):
            d = _unit(d + 1.5 * space.inward(p))
            q = p + step * d
            if not space.inside(q):
                break
        pts.append(q)
    return np.array(pts)


def _split(territory, end, d, f_major, rng):
    """Halves of a territory either side of a plane through the parent axis."""
    v = territory - end
    v_perp = v - np.outer(v @ d, d)
    if len(territory) >= 2:
        w, vecs = np.linalg.eigh(v_perp.T @ v_perp)
        axis = vecs[:, -1]
        axis = _unit(axis - axis.dot(d) * d)
        if w[-1] < 1e-6 or np.linalg.norm(axis) < 0.5:
            axis = _perpendicular(d, rng)
    else:
        axis = _perpendicular(d, rng)
    if rng.random() < 0.5:
        axis = -axis
    order = np.argsort(-(v_perp @ axis))
    k = int(np.clip(round(f_major * len(territory)), 0, len(territory)))
    return axis, territory[order[:k]], territory[order[k:]]


def grow_duct_tree(
    breast: Breast, orifice: np.ndarray, cfg: DuctConfig, rng: np.random.Generator
) -> DuctTree:
    space = _Space(breast, cfg)
    # Provisional apex (first branch point) to aim the lobe; the root then bends towards it.
    apex_guess = np.array([breast.nipple_length + 8.0, 0.0, 0.0])
    axis, reach, attractors = _lobe(space, apex_guess, cfg, rng)
    root = _root(breast, orifice, axis, cfg, rng)
    tree = DuctTree([root], [0], axis)

    queue = []  # (parent, generation, length, territory)
    l_first = reach * uniform(rng, cfg.first_length_fraction)
    queue.append((0, 1, l_first, attractors))
    while queue:
        parent_idx, gen, length, territory = queue.pop(0)
        parent = tree.branches[parent_idx]
        end = parent.points[-1]
        d = _unit(parent.points[-1] - parent.points[-2])
        if len(territory):
            near = np.linalg.norm(parent.points[None, :, :] - territory[:, None, :], axis=2)
            ahead = (territory - end) @ d > -5.0
            territory = territory[(near.min(axis=1) > cfg.kill_distance_mm) & ahead]
        if len(territory) < 2:
            continue
        r_end = parent.radii[-1]
        ratios = np.sort(rng.uniform(*cfg.child_radius_ratio, size=2))[::-1]
        if ratios[0] - ratios[1] < cfg.min_radius_difference:
            lo = cfg.child_radius_ratio[0]
            ratios[1] = max(lo, ratios[0] - cfg.min_radius_difference)
            ratios[0] = max(ratios[0], ratios[1] + cfg.min_radius_difference)
            ratios[0] = min(ratios[0], cfg.child_radius_ratio[1])
        radii = np.maximum(ratios * r_end, cfg.min_radius_mm)
        flow = radii**3  # Murray: flow ~ r^3, so the larger child drains more of the lobe
        f_major = float(flow[0] / flow.sum())
        split_axis, terr_major, terr_minor = _split(territory, end, d, f_major, rng)
        total = math.radians(uniform(rng, cfg.branch_angle_deg))
        w = radii**2
        deviations = (total * w[1] / w.sum(), total * w[0] / w.sum())
        for c, (r0, terr, dev, sign) in enumerate(
            zip(radii, (terr_major, terr_minor), deviations, (1.0, -1.0))
        ):
            direction = _unit(math.cos(dev) * d + sign * math.sin(dev) * split_axis)
            target = terr.mean(axis=0) if len(terr) else end + 10.0 * direction
            child_len = max(cfg.min_branch_length_mm, length * uniform(rng, cfg.child_length_ratio))
            if c == 0 and gen == 1:
                child_len = length
            pts = _polyline(space, end, direction, child_len, target, cfg, rng)
            if len(pts) < 2:
                continue
            arcs = arc_lengths(pts)
            taper = uniform(rng, cfg.taper)
            rr = np.maximum(r0 * (1 - (1 - taper) * arcs / max(arcs[-1], 1e-6)), cfg.min_radius_mm)
            idx = len(tree.branches)
            branch = Branch(
                idx,
                parent_idx,
                gen,
                pts,
                rr,
                True,
                parent.path_length_start + branch_length(parent),
            )
            tree.branches.append(branch)
            tree.chains.append(tree.chains[parent_idx] if c == 0 else tree.new_chain())
            parent.children.append(idx)
            stop = gen >= 3 and rng.random() < cfg.stop_probability
            if gen < cfg.max_generation and not stop and len(pts) > 2:
                queue.append((idx, gen + 1, arcs[-1], terr))
    _narrow_terminal_ducts(tree, cfg, rng)
    return tree


def _narrow_terminal_ducts(tree: DuctTree, cfg: DuctConfig, rng: np.random.Generator) -> None:
    """Terminal ducts narrow towards their lobule, mostly over their distal part."""
    for b in tree.branches:
        if b.children or b.generation < 1:
            continue
        u = arc_lengths(b.points) / max(branch_length(b), 1e-6)
        factor = 1.0 - (1.0 - uniform(rng, cfg.terminal_taper)) * u**1.5
        b.radii = np.maximum(b.radii * factor, np.minimum(b.radii, cfg.min_radius_mm))


def add_lobules(tree: DuctTree, breast: Breast, cfg: DuctConfig, rng: np.random.Generator):
    """Acinar blush: a few small contrast blobs at the end of each filled terminal duct."""
    space = _Space(breast, cfg)
    for b in tree.branches:
        if b.children or not b.filled or b.generation < 2 or rng.random() > cfg.lobule_probability:
            continue
        end = b.points[-1]
        d = _unit(b.points[-1] - b.points[-2])
        for _ in range(integer(rng, cfg.lobule_blobs)):
            r = uniform(rng, cfg.lobule_radius_mm)
            center = end + d * r * rng.uniform(0.3, 1.2) + rng.normal(size=3) * 0.6 * r
            if not space.inside(center):
                continue
            blob = Blob(
                center=center,
                radii=np.full(3, r),
                rotation=np.eye(3),
                material="iodine",
                sign=1,
                concentration=uniform(rng, cfg.lobule_concentration),
                seed=int(rng.integers(2**31)),
            )
            tree.lobules.append((b.index, blob))
