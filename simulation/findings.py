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
    ) -> Site | None:
        """A random duct point with ``half_length`` of branch on both sides, free of others."""
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


def _widen(tree: DuctTree, b: int, s: float, profile, half: float, n: int = 13) -> None:
    """Raise lumen radii around arc ``s`` to at least ``profile(t)``, t = arc - s."""
    branch = tree.branches[b]
    insert_arcs(branch, s + np.linspace(-half, half, n))
    t = arc_lengths(branch.points) - s
    near = np.abs(t) <= half + 1e-6
    branch.radii[near] = np.maximum(branch.radii[near], profile(t[near]))


def _papilloma(place: Placement, cfg: FindingsConfig, obstructing: bool) -> FindingDraft | None:
    pc, rng, tree = cfg.papilloma, place.rng, place.tree
    d = (
        log_uniform(rng, pc.diameter_mm)
        if pc.diameter_log_uniform
        else uniform(rng, pc.diameter_mm)
    )
    elong = uniform(rng, pc.elongation)
    a, b = d / 2, d / 2 / elong  # semi-axes along and across the duct
    rim = uniform(rng, pc.rim_mm)
    path = pc.outlier_path_length_mm if rng.random() < pc.outlier_probability else pc.path_length_mm
    gens = (0, pc.max_generation)
    site = place.site(gens, path, a + rim + 1.0, d, obstructing=obstructing)
    if site is None:
        site = place.site(gens, None, a + rim + 1.0, d, obstructing=obstructing)
    if site is None:
        return None
    c_across = b * rng.uniform(0.8, 1.0)
    lobulation = uniform(rng, pc.lobulation) if rng.random() < pc.lobulated_probability else 0.0
    blob = Blob(
        center=site.point.copy(),
        radii=np.array([a, b, c_across]),
        rotation=_frame(site.direction, rng),
        material="soft_tissue",
        sign=-1,
        lobulation=lobulation,
        seed=int(rng.integers(2**31)),
    )
    # The duct is widest at the papilloma: a lumen hugging it, a thin rim of contrast around.
    # Obstructing: the lumen is just the papilloma's size, so no contrast passes it.
    gap = 0.05 if obstructing else rim
    ax, cross = a + gap + 0.3, b * (1 + 0.5 * lobulation) + gap

    def lumen(t):
        return cross * np.sqrt(np.clip(1.0 - (t / ax) ** 2, 0.0, 1.0))

    half = ax + 0.3
    _widen(tree, site.branch, site.s, lumen, half)
    place.reserve(site.branch, site.s - half, site.s + half, site.point, d)
    if obstructing:
        distal = split_branch(tree, site.branch, site.s)
        _unfill(tree, distal)
    return FindingDraft(
        "papilloma",
        site.point,
        d,
        blobs=[blob],
        branch=site.branch,
        generation=site.generation,
        path_length_mm=site.path_length,
        obstructing=obstructing,
    )


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
    pitch = uniform(rng, ic.pitch_mm)
    n = max(3, round(length / pitch))
    arcs = np.linspace(s0, s1, n + 1)
    insert_arcs(branch, arcs)
    # Beaded, moth-eaten lumen: random radius factors at a fine pitch, normal at both ends.
    factors = rng.uniform(*ic.radius_factor, size=n + 1)
    factors[[0, -1]] = 1.0
    all_arcs = arc_lengths(branch.points)
    inside = (all_arcs >= s0 - 1e-6) & (all_arcs <= s1 + 1e-6)
    f = np.interp(all_arcs[inside], arcs, factors)
    branch.radii[inside] = np.maximum(branch.radii[inside] * f, 0.06)
    defects = []
    for _ in range(integer(rng, ic.defects)):
        p, r, d = point_at(branch, rng.uniform(s0 + 0.5, s1 - 0.5))
        frame = _frame(d, rng)
        radius = uniform(rng, ic.defect_radius_fraction) * r
        center = p + frame[:, 1] * r * rng.uniform(0.3, 0.8)
        defects.append(
            Blob(
                center,
                np.array([radius * rng.uniform(1.0, 2.0), radius, radius]),
                frame,
                "soft_tissue",
                -1,
                1.0,
                0.2,
                int(rng.integers(2**31)),
            )
        )
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
