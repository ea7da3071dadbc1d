"""Lesions inserted into the duct tree, each with the exact primitives of its mask.

Lesions are placed only where contrast is (filled branches), so every lesion is visible as
what it is. Obstructing lesions (cut-offs, obstructing papillomas) go first: they unfill
everything distal, and later lesions are then placed only in what stays filled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ductai.simulation.anatomy_config import FindingsConfig, integer, log_uniform, uniform
from ductai.simulation.duct_tree import (
    DuctTree,
    arc_lengths,
    branch_length,
    insert_arcs,
    major_path,
    point_at,
    split_branch,
    subtree,
)
from ductai.simulation.scene import Blob, Breast, Tube


@dataclass
class FindingDraft:
    """A finding before tube indices exist: duct pieces ``(branch, s0, s1)`` form its mask."""

    label: str
    center: np.ndarray
    size_mm: float
    pieces: list[tuple[int, float, float]] = field(default_factory=list)
    blobs: list[Blob] = field(default_factory=list)
    tubes: list[Tube] = field(default_factory=list)  # own primitives (not duct lumen)
    branch: int = -1
    generation: int = -1
    path_length_mm: float = float("nan")
    obstructing: bool = False


@dataclass
class Site:
    branch: int
    s: float  # arc length along the branch
    point: np.ndarray
    radius: float
    direction: np.ndarray
    generation: int
    path_length: float


class Placement:
    """Picks duct sites for findings, keeping them apart from each other."""

    def __init__(self, tree: DuctTree, breast: Breast, rng: np.random.Generator, sep: float):
        self.tree, self.breast, self.rng, self.sep = tree, breast, rng, sep
        self.reserved: dict[int, list[tuple[float, float]]] = {}
        self.centers: list[tuple[np.ndarray, float]] = []
        root_arcs = arc_lengths(tree.branches[0].points)
        self.channel_end = float(root_arcs[2])  # the first 3 root points are the nipple channel

    def site(
        self,
        gen_range: tuple[int, int],
        path_range: list[float] | None,
        half_length: float,
        size: float,
        filled: bool = True,
        tries: int = 20,
        obstructing: bool = False,
        clearance: float = 0.0,
    ) -> Site | None:
        """A random duct point with ``half_length`` of branch on both sides, free of others.

        ``clearance``: the point lies at least that deep under the skin, so a finding that
        widens the duct around it stays inside the breast.
        """
        lo_gen, hi_gen = gen_range
        spans, weights = [], []
        for b in self.tree.branches:
            if (filled and not b.filled) or not lo_gen <= b.generation <= hi_gen:
                continue
            length = branch_length(b)
            s0 = half_length + (self.channel_end if b.index == 0 else 0.0)
            s1 = length - half_length
            if path_range is not None:
                s0 = max(s0, path_range[0] - b.path_length_start)
                s1 = min(s1, path_range[1] - b.path_length_start)
            if s1 > s0:
                spans.append((b.index, s0, s1))
                weights.append(s1 - s0)
        if not spans:
            return None
        p = np.array(weights) / np.sum(weights)
        for _ in range(tries):
            b, s0, s1 = spans[int(self.rng.choice(len(spans), p=p))]
            s = float(self.rng.uniform(s0, s1))
            point, radius, direction = point_at(self.tree.branches[b], s)
            if obstructing and self.has_findings_distal(b, s):
                continue  # it would unfill a finding already placed
            if clearance > 0 and not self.breast.contains(point[None], clearance)[0]:
                continue
            if self.is_free(b, s - half_length, s + half_length, point, size):
                branch = self.tree.branches[b]
                return Site(
                    b, s, point, radius, direction, branch.generation, branch.path_length_start + s
                )
        return None

    def overlaps_reserved(self, b: int, s0: float, s1: float) -> bool:
        return any(s0 < e1 and e0 < s1 for e0, e1 in self.reserved.get(b, []))

    def is_free(self, b: int, s0: float, s1: float, point: np.ndarray, size: float) -> bool:
        if self.overlaps_reserved(b, s0, s1):
            return False
        return all(
            np.linalg.norm(point - c) >= self.sep + 0.5 * (size + other)
            for c, other in self.centers
        )

    def has_findings_distal(self, b: int, s: float) -> bool:
        if any(e1 > s for _, e1 in self.reserved.get(b, [])):
            return True
        distal = [i for c in self.tree.branches[b].children for i in subtree(self.tree.branches, c)]
        return any(i in self.reserved for i in distal)

    def reserve(self, b: int, s0: float, s1: float, point=None, size: float = 0.0) -> None:
        self.reserved.setdefault(b, []).append((s0, s1))
        if point is not None:
            self.centers.append((np.asarray(point, dtype=float), size))


def insert_findings(place: Placement, cfg: FindingsConfig) -> list[FindingDraft]:
    """Sample how many lesions this breast has and of which classes, and insert them."""
    rng = place.rng
    counts = np.array(cfg.count_probabilities, dtype=float)
    n = int(rng.choice(len(counts), p=counts / counts.sum()))
    classes = sorted(cfg.class_weights)
    w = np.array([cfg.class_weights[c] for c in classes], dtype=float)
    if n == 0 or w.sum() <= 0:
        return []
    labels = [classes[int(i)] for i in rng.choice(len(classes), size=n, p=w / w.sum())]
    obstructing = [
        lab == "cutoff"
        or (lab == "papilloma" and rng.random() < cfg.papilloma.obstructing_probability)
        for lab in labels
    ]
    order = sorted(range(n), key=lambda i: not obstructing[i])  # obstructions first
    drafts = []
    for i in order:
        draft = _INSERT[labels[i]](place, cfg, obstructing[i])
        if draft is not None:
            drafts.append(draft)
    return drafts


def _unfill(tree: DuctTree, b: int) -> None:
    for i in subtree(tree.branches, b):
        tree.branches[i].filled = False


def _frame(direction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A rotation whose first column is ``direction`` (random roll about it)."""
    v = rng.normal(size=3)
    e1 = v - v.dot(direction) * direction
    e1 /= np.linalg.norm(e1)
    return np.stack([direction, e1, np.cross(direction, e1)], axis=1)


def _straighten(tree: DuctTree, b: int, s: float, half: float) -> None:
    """Make the centreline straight over arcs ``s +- half`` (a lesion's bed lies on one axis)."""
    branch = tree.branches[b]
    length = branch_length(branch)
    s0, s1 = max(s - half, 1e-3), min(s + half, length - 1e-3)
    insert_arcs(branch, [s0, s, s1])
    arcs = arc_lengths(branch.points)
    i0, i1 = int(np.argmin(np.abs(arcs - s0))), int(np.argmin(np.abs(arcs - s1)))
    if i1 - i0 < 2:
        return
    p0, p1 = branch.points[i0], branch.points[i1]
    f = (arcs[i0 + 1 : i1] - arcs[i0]) / (arcs[i1] - arcs[i0])
    branch.points[i0 + 1 : i1] = p0 + f[:, None] * (p1 - p0)


def _nearest_arc(branch, point: np.ndarray) -> float:
    """Arc length of the centreline point closest to ``point``."""
    a, b = branch.points[:-1], branch.points[1:]
    ab = b - a
    t = np.clip(np.einsum("ij,ij->i", point - a, ab) / np.maximum(np.sum(ab * ab, 1), 1e-12), 0, 1)
    d = np.linalg.norm(a + t[:, None] * ab - point, axis=1)
    k = int(np.argmin(d))
    return float(arc_lengths(branch.points)[k] + t[k] * np.linalg.norm(ab[k]))


def _wall_defect(
    branch,
    rng: np.random.Generator,
    arc_range: tuple[float, float],
    wall_offset: tuple[float, float],
    radius_fraction: list[float],
    max_elongation: float,
) -> Blob:
    """A small lucent blob at a random point of ``branch``, pushed towards its wall."""
    p, r, d = point_at(branch, rng.uniform(*arc_range))
    frame = _frame(d, rng)
    radius = uniform(rng, radius_fraction) * r
    return Blob(
        p + frame[:, 1] * r * rng.uniform(*wall_offset),
        np.array([radius * rng.uniform(1.0, max_elongation), radius, radius]),
        frame,
        "soft_tissue",
        -1,
        1.0,
        0.2,
        int(rng.integers(2**31)),
    )


def _papilloma(place: Placement, cfg: FindingsConfig, obstructing: bool) -> FindingDraft | None:
    """A lucent filling defect that the duct's lumen hugs with a thin rim of contrast.

    The papilloma is an ellipsoid (lobulated: clefts between its lobules fill with contrast)
    attached to one wall. Where it is wider than the duct, the duct is widened around it: an
    exact lumen ellipsoid (an iodine blob of the finding, part of the duct) leaves a rim of
    ``rim_mm`` on the free side and a fraction of that on the attached side, and a cap of
    contrast at both poles, so the defect reads clearly darker than the column in every
    view and the outline is a thin bright meniscus, crescent-shaped where the rims differ.
    An obstructing papilloma fills the lumen: the column ends in a cup around its near half
    (a lumen shifted towards the nipple, inside the papilloma beyond its equator), and
    nothing distal fills.
    """
    pc, rng, tree = cfg.papilloma, place.rng, place.tree
    d = (
        log_uniform(rng, pc.diameter_mm)
        if pc.diameter_log_uniform
        else uniform(rng, pc.diameter_mm)
    )
    elong = uniform(rng, pc.elongation)
    a, b = d / 2, d / 2 / elong  # semi-axes along and across the duct
    rim = uniform(rng, pc.rim_mm)  # contrast rim on the free side
    rim_attached = rim * uniform(rng, pc.attached_rim_fraction)
    path = pc.outlier_path_length_mm if rng.random() < pc.outlier_probability else pc.path_length_mm
    gens = (0, pc.max_generation)
    half = a + rim + 1.5
    # the widened lumen around it must stay under the skin (near the nipple base it is thin)
    clearance = _skin_clearance(place) + a + rim
    site = place.site(gens, path, half, d, obstructing=obstructing, clearance=clearance)
    if site is None:
        site = place.site(gens, None, half, d, obstructing=obstructing, clearance=clearance)
    if site is None:
        return None
    lobulation = uniform(rng, pc.lobulation) if rng.random() < pc.lobulated_probability else 0.0
    _straighten(tree, site.branch, site.s, half)
    branch = tree.branches[site.branch]
    s = _nearest_arc(branch, site.point)
    point, r, direction = point_at(branch, s)
    frame = _frame(direction, rng)  # frame[:, 1]: towards the wall the papilloma grows from
    c_across = b * rng.uniform(0.85, 1.0)
    # a narrow duct stretched over a papilloma keeps a rim thin for its calibre
    scale = min(1.0, pc.rim_max_duct_fraction * r / rim)
    rim, rim_attached = rim * scale, rim_attached * scale
    blobs = []
    if obstructing:
        # it fills the lumen: at least as wide as the duct, centred on its axis
        b = max(b, 1.15 * r)
        a, c_across = max(a, b), b
        gap = max(rim_attached, 0.05)
        lumen_axes = np.array([a + gap, b + gap, b + gap])
        # shift the lumen towards the nipple until, beyond the papilloma's equator, it lies
        # inside the papilloma: contrast cups the near half, nothing passes
        shift = 1.05 * lumen_axes[0] * math.sqrt(1.0 - (b / lumen_axes[1]) ** 2) + 0.1
        lumen_center = point - direction * shift
        center = point.copy()
    else:
        gap = 0.5 * (rim + rim_attached)
        if min(b, c_across) + gap > r:  # widened: the lumen hugs it, offset to the free side
            lumen_axes = np.array([a + rim, b + gap, c_across + gap])
            offset = 0.5 * (rim - rim_attached)
        else:  # a small papilloma in a wide duct sits on its wall
            lumen_axes = None
            offset = r - b - rim_attached
        offset = min(offset, 0.8 * r)  # its centre stays in the duct's own lumen
        center = point + frame[:, 1] * offset
        lumen_center = point
    papilloma = Blob(
        center=center,
        radii=np.array([a, b, c_across]),
        rotation=frame,
        material="soft_tissue",
        sign=-1,
        lobulation=-lobulation,  # lobules inside its outline: contrast fills the clefts
        seed=int(rng.integers(2**31)),
    )
    blobs.append(papilloma)
    if lumen_axes is not None:
        blobs.append(Blob(lumen_center, lumen_axes, frame, "iodine", 1, 1.0))
    place.reserve(site.branch, s - half, s + half, center, 2 * a)
    if obstructing:
        distal = split_branch(tree, site.branch, s)
        _unfill(tree, distal)
        center = tree.branches[site.branch].points[-1].copy()
        papilloma.center = center
    return FindingDraft(
        "papilloma",
        center,
        2 * a,
        blobs=blobs,
        branch=site.branch,
        generation=site.generation,
        path_length_mm=branch.path_length_start + s,
        obstructing=obstructing,
    )


def _skin_clearance(place: Placement) -> float:
    return place.breast.skin_thickness + 0.5


MASK_ONLY_CONCENTRATION = 1e-6  # invisible (a millionth of the contrast), yet a non-empty mask


def _mask_blob(center: np.ndarray, diameter: float) -> Blob:
    """A blob that only marks a mask around a cut end: it adds no visible material."""
    return Blob(
        center.copy(), np.full(3, diameter / 2), np.eye(3), "iodine", 1, MASK_ONLY_CONCENTRATION
    )


def _cutoff(place: Placement, cfg: FindingsConfig, obstructing: bool) -> FindingDraft | None:
    cc, rng, tree = cfg.cutoff, place.rng, place.tree
    size = uniform(rng, cc.mask_size_mm)
    gens = (cc.min_generation, cc.max_generation)
    site = place.site(gens, cc.path_length_mm, 3.0, size, obstructing=True)
    if site is None:
        return None
    distal = split_branch(tree, site.branch, site.s)
    _unfill(tree, distal)
    place.reserve(site.branch, site.s - 3.0, site.s + 3.0, site.point, size)
    return FindingDraft(
        "cutoff",
        site.point,
        size,
        blobs=[_mask_blob(site.point, size)],
        branch=site.branch,
        generation=site.generation,
        path_length_mm=site.path_length,
        obstructing=True,
    )


def _irregularity(place: Placement, cfg: FindingsConfig, obstructing: bool):
    """Moth-eaten, ragged lumen of a segment (DCIS): calibre alternating at irregular
    intervals with random depth, sometimes an abrupt narrowing (encasement), a wobbling
    centreline, small lucent notches bitten out of the margins and a few small defects."""
    ic, rng, tree = cfg.irregularity, place.rng, place.tree
    length = uniform(rng, ic.length_mm)
    site = None
    for shrink in (1.0, 0.7, 0.5):  # small trees: accept a shorter segment
        gens = (ic.min_generation, ic.max_generation)
        site = place.site(gens, None, 0.5 * length * shrink + 0.5, length * shrink)
        if site is not None:
            length *= shrink
            break
    if site is None:
        return None
    b, s0, s1 = site.branch, site.s - length / 2, site.s + length / 2
    branch = tree.branches[b]
    # knots at irregular intervals, each with its own depth of narrowing or widening
    knots = [s0]
    while knots[-1] < s1 - ic.pitch_mm[0]:
        knots.append(knots[-1] + uniform(rng, ic.pitch_mm))
    knots = np.array([*knots[:-1], s1]) if len(knots) > 2 else np.array([s0, site.s, s1])
    depth = rng.uniform(0.5, 1.0) * ic.variation
    factors = np.clip(np.exp(rng.normal(0.0, depth, knots.size)), *ic.radius_factor)
    factors[[0, -1]] = 1.0
    if rng.random() < ic.narrowing_probability and s1 - s0 > 4.0:
        # an abrupt narrowing over a short stretch: steep shoulders, a thin waist
        n_len = min(uniform(rng, ic.narrowing_length_mm), 0.3 * (s1 - s0))
        n0 = rng.uniform(s0 + 1.0, s1 - 1.0 - n_len)
        keep = (knots < n0 - 0.6) | (knots > n0 + n_len + 0.6)
        narrow = uniform(rng, ic.narrowing_factor)
        edge = np.array([n0 - 0.6, n0 - 0.3, n0, n0 + n_len, n0 + n_len + 0.3, n0 + n_len + 0.6])
        knots = np.concatenate([knots[keep], edge])
        factors = np.concatenate([factors[keep], [1.0, 1.0, narrow, narrow, 1.0, 1.0]])
        order = np.argsort(knots)
        knots, factors = knots[order], factors[order]
    step = 0.2  # fine polyline so the ragged profile survives the tubes' round caps
    insert_arcs(branch, np.concatenate([knots, np.arange(s0, s1, step)]))
    all_arcs = arc_lengths(branch.points)
    inside = (all_arcs > s0 + 1e-6) & (all_arcs < s1 - 1e-6)
    f = np.interp(all_arcs[inside], knots, factors)
    radius0 = float(np.median(branch.radii[inside])) if inside.any() else site.radius
    branch.radii[inside] = np.maximum(branch.radii[inside] * f, 0.06)
    # the centreline wobbles sideways (smoothly, zero at both ends)
    frame = _frame(site.direction, rng)
    wobble_knots = np.linspace(s0, s1, max(3, round((s1 - s0) / 1.5)) + 1)
    amp = uniform(rng, ic.wobble_fraction) * radius0
    offsets = rng.normal(0.0, amp, (wobble_knots.size, 2))
    offsets[[0, -1]] = 0.0
    shift = np.stack([np.interp(all_arcs[inside], wobble_knots, offsets[:, k]) for k in (0, 1)])
    branch.points[inside] += shift[0][:, None] * frame[:, 1] + shift[1][:, None] * frame[:, 2]
    s1 = s0 + (arc_lengths(branch.points)[inside].max() - s0 if inside.any() else s1 - s0)
    s1 = min(s1, branch_length(branch) - 1e-3)
    # notches: small lucent bites out of the margin (a blob centred near the wall)
    defects = [
        _wall_defect(branch, rng, (s0 + 0.3, s1 - 0.3), (0.85, 1.1), ic.notch_radius_fraction, 2.5)
        for _ in range(integer(rng, ic.notches))
    ]
    # a few small intraluminal defects
    defects += [
        _wall_defect(branch, rng, (s0 + 0.5, s1 - 0.5), (0.2, 0.6), ic.defect_radius_fraction, 2.0)
        for _ in range(integer(rng, ic.defects))
    ]
    place.reserve(b, s0 - 1.0, s1 + 1.0, site.point, length)
    return FindingDraft(
        "irregularity",
        site.point,
        length,
        pieces=[(b, s0, s1)],
        blobs=defects,
        branch=b,
        generation=site.generation,
        path_length_mm=site.path_length,
    )


def _ectasia(place: Placement, cfg: FindingsConfig, obstructing: bool) -> FindingDraft | None:
    ec, rng, tree = cfg.ectasia, place.rng, place.tree
    radius = uniform(rng, ec.diameter_mm) / 2
    length = uniform(rng, ec.length_mm)
    # Duct ectasia starts in the subareolar main duct and runs back into the first branches.
    site = place.site((0, min(1, ec.max_generation)), [0.0, 30.0], 1.0, length)
    if site is None:
        return None
    pieces = [
        (b, s0, s1)
        for b, s0, s1 in major_path(tree, site.branch, site.s, length)
        if tree.branches[b].filled and tree.branches[b].generation <= ec.max_generation
    ]
    # The pieces must be contiguous from the start and free of other findings.
    kept, total = [], 0.0
    for b, s0, s1 in pieces:
        if kept and b != tree.branches[kept[-1][0]].children[0]:
            break
        if not place.is_free(b, s0, s1, site.point, 0.0):
            break
        kept.append((b, s0, s1))
        total += s1 - s0
    if total < 3.0:
        return None
    ramp = min(2.0, total / 4)
    wave, phase = rng.uniform(1.5, 4.0), rng.uniform(0, 2 * np.pi)  # gently varying calibre
    walked, side_pieces = 0.0, []
    for b, s0, s1 in kept:
        branch = tree.branches[b]

        def stretch(arcs, old, start=walked, s0=s0):
            u = start + arcs - s0  # distance from the start of the ectatic stretch
            ramp_in = np.clip(np.minimum(u, total - u) / ramp, 0.0, 1.0)
            wide = radius * (1.0 - 0.3 * u / total) * (1 + 0.08 * np.sin(u / wave + phase))
            return old + (wide - old) * ramp_in

        _dilate(branch, s0, s1, stretch)
        place.reserve(b, s0, s1)
        walked += s1 - s0
        # Diffuse: side branches leaving the dilated stretch are dilated at their origin too.
        fully_dilated = walked < total - ramp and s1 >= branch_length(branch) - 1e-6
        if fully_dilated and len(branch.children) == 2:
            side = tree.branches[branch.children[1]]
            side_len = min(branch_length(side) - 0.5, rng.uniform(0.3, 0.7) * total)
            free = not place.overlaps_reserved(side.index, 0.0, side_len)
            if side.filled and side.generation <= ec.max_generation and side_len > 2 and free:
                r_side = 0.8 * radius

                def tapering(arcs, old, n=side_len, r=r_side):
                    return old + (r - old) * (1 - arcs / n)

                _dilate(side, 0.0, side_len, tapering)
                place.reserve(side.index, 0.0, side_len)
                side_pieces.append((side.index, 0.0, side_len))
    # The reported centre: the middle of the dilated stretch.
    walked, center, mid_b = 0.0, site.point, site.branch
    for b, s0, s1 in kept:
        if walked + (s1 - s0) >= total / 2:
            center, _, _ = point_at(tree.branches[b], s0 + total / 2 - walked)
            mid_b = b
            break
        walked += s1 - s0
    place.centers.append((center, total))
    mid = tree.branches[mid_b]
    return FindingDraft(
        "ectasia",
        center,
        total,
        pieces=kept + side_pieces,
        branch=mid_b,
        generation=mid.generation,
        path_length_mm=site.path_length + total / 2,
    )


def _dilate(branch, s0: float, s1: float, target) -> None:
    """Widen arcs [s0, s1] to at least ``target(arcs, old_radii)``."""
    insert_arcs(branch, np.linspace(s0, s1, max(1, math.ceil((s1 - s0) / 1.5)) + 1))
    arcs = arc_lengths(branch.points)
    inside = (arcs >= s0 - 1e-6) & (arcs <= s1 + 1e-6)
    old = branch.radii[inside]
    branch.radii[inside] = np.maximum(old, target(arcs[inside], old))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _extravasation(place: Placement, cfg: FindingsConfig, obstructing: bool):
    xc, rng, breast = cfg.extravasation, place.rng, place.breast
    extent = uniform(rng, xc.size_mm)
    site = place.site((0, xc.max_generation), None, 1.0, extent)
    if site is None:
        return None
    margin = breast.skin_thickness + 1.0
    frame = _frame(site.direction, rng)
    side = frame[:, 1]
    # Contrast leaks through the wall and spreads in the periductal tissue, mostly along the
    # duct: an amorphous cloud elongated along it, off to one side.
    center = site.point + side * (site.radius + extent * rng.uniform(0.1, 0.3))
    for _ in range(10):  # pull the cloud back inside a small breast
        if breast.contains(center[None], margin + extent / 2)[0]:
            break
        center = site.point + 0.7 * (center - site.point)
    blobs = []
    conc = uniform(rng, xc.concentration)
    # an amorphous blush: many small, overlapping puffs of varying strength, densest where it
    # leaked and thinning out along the duct, so its margin is soft and irregular
    spread = np.diag([extent / 4, extent / 7, extent / 7])
    offsets = [site.point + side * (site.radius + extent * 0.05)]  # where it leaked
    offsets += [
        center + frame @ spread @ rng.normal(size=3) for _ in range(integer(rng, xc.blobs) - 1)
    ]
    for k, c in enumerate(offsets):
        radii = extent * rng.uniform(0.1, 0.3, size=3) * (1.3 if k == 0 else 1.0)
        if not breast.contains(c[None], margin + radii.max())[0]:
            continue
        falloff = math.exp(-0.5 * float(np.sum((np.linalg.solve(spread, c - center)) ** 2)) / 4)
        blobs.append(
            Blob(
                c,
                radii,
                _random_rotation(rng),
                "iodine",
                1,
                conc * rng.uniform(0.5, 1.0) * (0.4 + 0.6 * falloff),
                uniform(rng, xc.lobulation),
                int(rng.integers(2**31)),
                softness=rng.uniform(0.5, 1.5),
            )
        )
    if not blobs:
        return None
    tubes = []
    if rng.random() < xc.intravasation_probability:
        # venous or lymphatic intravasation: contrast enters a vessel and shows as thin,
        # smooth lines running away from the cloud (lymphatics towards the axilla)
        line_conc = uniform(rng, xc.intravasation_concentration)
        for line in range(integer(rng, xc.intravasation_lines)):
            start = blobs[int(rng.integers(len(blobs)))].center
            tubes += _vessel_line(start, xc, breast, rng, line_conc, line)
    reach = max(np.linalg.norm(b.center - center) + b.radii.max() for b in blobs)
    size = float(min(2 * reach, 1.3 * extent))
    place.reserve(site.branch, site.s - 1.0, site.s + 1.0, center, size)
    return FindingDraft(
        "extravasation",
        center,
        size,
        blobs=blobs,
        tubes=tubes,
        branch=site.branch,
        generation=site.generation,
        path_length_mm=site.path_length,
    )


def _vessel_line(start, xc, breast: Breast, rng, conc: float, chain: int) -> list[Tube]:
    """Intravasation: a thin vessel filled from the cloud, gently winding, mostly heading
    towards the axilla (posterior, superior, lateral), narrowing slightly as it goes."""
    radius = uniform(rng, xc.intravasation_radius_mm)
    length = uniform(rng, xc.intravasation_length_mm)
    n = max(4, int(length / 2.0))
    axilla = np.array([0.6, -0.5, 0.6])
    d = axilla / np.linalg.norm(axilla) + rng.normal(size=3) * 0.8
    d /= np.linalg.norm(d)
    p, tubes, r = np.asarray(start, dtype=float), [], radius
    for _ in range(n):
        d = d + rng.normal(size=3) * 0.25
        d /= np.linalg.norm(d)
        q = p + d * length / n
        if not breast.contains(q[None], breast.skin_thickness + 1.0)[0]:
            break
        r_next = max(r * rng.uniform(0.93, 1.02), 0.08)
        tubes.append(Tube(p, q, r, r_next, -1, chain, "iodine", conc))
        p, r = q, r_next
    return tubes


_INSERT = {
    "papilloma": _papilloma,
    "cutoff": _cutoff,
    "irregularity": _irregularity,
    "ectasia": _ectasia,
    "extravasation": _extravasation,
}
