"""The uncompressed 3D breast and its one cannulated duct system, as a :class:`Scene`.

Order matters: grow the tree, decide which parts contrast reaches, insert findings and
mimics (which may cut or widen branches), then emit tubes so every mask is exact.
"""

from __future__ import annotations

import math

import numpy as np

from ductai.simulation.anatomy_config import (
    AnatomyConfig,
    BreastConfig,
    CannulaConfig,
    FillConfig,
    integer,
    uniform,
)
from ductai.simulation.duct_tree import (
    DuctTree,
    add_lobules,
    arc_lengths,
    grow_duct_tree,
    subtree,
)
from ductai.simulation.findings import FindingDraft, Placement, insert_findings
from ductai.simulation.mimics import insert_mimics
from ductai.simulation.scene import Blob, Breast, Finding, Scene, Tube


def build_scene(config: AnatomyConfig, rng: np.random.Generator, laterality: str) -> Scene:
    """One breast with its contrast-filled duct system, findings, mimics and cannula."""
    if laterality not in ("L", "R"):
        raise ValueError(f"laterality must be 'L' or 'R', got {laterality!r}")
    seed = int(rng.integers(2**31))
    breast = sample_breast(config.breast, rng, laterality)
    orifice = _orifice(breast, config.duct.orifice_offset_fraction, rng)
    tree = grow_duct_tree(breast, orifice, config.duct, rng)
    _incomplete_fill(tree, config.fill, rng)
    place = Placement(tree, breast, rng, config.findings.min_separation_mm)
    drafts = insert_findings(place, config.findings)
    drafts += insert_mimics(place, config.mimics)
    add_lobules(tree, breast, config.duct, rng)
    fade = _fade(tree, config.fill, rng)
    cannula = _cannula(tree, config.cannula, rng)  # before the tubes: it may widen the channel

    tubes = _tree_tubes(tree, fade)
    blobs = [blob for _, blob in tree.lobules]
    for b, blob in tree.lobules:
        blob.concentration *= fade(_end_path_length(tree.branches[b]))
    findings = [_finding(i, d, tree, tubes, blobs) for i, d in enumerate(drafts)]
    return Scene(
        breast=breast,
        branches=tree.branches,
        tubes=tubes,
        blobs=blobs,
        findings=findings,
        orifice=orifice,
        cannula=cannula,
        contrast_mg_per_ml=uniform(rng, config.fill.contrast_mg_per_ml),
        seed=seed,
    )


def sample_breast(cfg: BreastConfig, rng: np.random.Generator, laterality: str) -> Breast:
    # Axes share a size factor: big breasts are big in every direction.
    size = rng.random()

    def axis(bounds: list[float]) -> float:
        t = cfg.size_correlation * size + (1 - cfg.size_correlation) * rng.random()
        return bounds[0] + t * (bounds[1] - bounds[0])

    categories = sorted(cfg.density_probabilities)
    p = np.array([cfg.density_probabilities[c] for c in categories], dtype=float)
    category = categories[int(rng.choice(len(categories), p=p / p.sum()))]
    return Breast(
        laterality=laterality,
        depth=axis(cfg.depth_mm),
        half_width=axis(cfg.half_width_mm),
        half_height=axis(cfg.half_height_mm),
        glandular_fraction=uniform(rng, cfg.glandular_fraction[category]),
        density_category=category,
        skin_thickness=uniform(rng, cfg.skin_thickness_mm),
        nipple_length=uniform(rng, cfg.nipple_length_mm),
        nipple_radius=uniform(rng, cfg.nipple_radius_mm),
    )


def _orifice(breast: Breast, offset_fraction, rng) -> np.ndarray:
    """A point on the domed nipple tip, slightly off its centre."""
    rho = uniform(rng, offset_fraction) * breast.nipple_radius
    psi = rng.uniform(0, 2 * math.pi)
    x = breast.nipple_dome * (rho / breast.nipple_radius) ** 2
    return np.array([x, rho * math.cos(psi), rho * math.sin(psi)])


def _incomplete_fill(tree: DuctTree, cfg: FillConfig, rng) -> None:
    """Some subtrees are not reached by contrast (air, debris, too little volume)."""
    if rng.random() >= cfg.incomplete_probability:
        return
    for _ in range(integer(rng, cfg.unfilled_subtrees)):
        candidates = [
            b.index
            for b in tree.branches
            if b.filled and b.generation >= cfg.unfilled_min_generation
        ]
        if not candidates:
            return
        for i in subtree(tree.branches, int(rng.choice(candidates))):
            tree.branches[i].filled = False


def _fade(tree: DuctTree, cfg: FillConfig, rng):
    """Concentration factor by path length: contrast thins out towards the periphery."""
    if rng.random() >= cfg.fade_probability:
        return lambda s: 1.0
    ends = [b.path_length_start + arc_lengths(b.points)[-1] for b in tree.branches]
    s_max = max(ends)
    s0 = s_max * rng.uniform(0.2, 0.5)
    floor = uniform(rng, cfg.fade_to)
    return lambda s: float(1.0 - (1.0 - floor) * np.clip((s - s0) / (s_max - s0), 0.0, 1.0))


def _end_path_length(branch) -> float:
    return branch.path_length_start + float(arc_lengths(branch.points)[-1])


def _tree_tubes(tree: DuctTree, fade) -> list[Tube]:
    tubes = []
    for b in tree.branches:
        arcs = b.path_length_start + arc_lengths(b.points)
        for k in range(len(b.points) - 1):
            conc = fade(0.5 * (arcs[k] + arcs[k + 1])) if b.filled else 0.0
            tubes.append(
                Tube(
                    p0=b.points[k],
                    p1=b.points[k + 1],
                    r0=float(b.radii[k]),
                    r1=float(b.radii[k + 1]),
                    branch=b.index,
                    chain=tree.chains[b.index],
                    concentration=conc,
                )
            )
    return tubes


def _finding(index, draft: FindingDraft, tree, tubes: list[Tube], blobs: list[Blob]) -> Finding:
    """Resolve a draft's duct pieces to tube indices and append its own primitives."""
    tube_ids = []
    for b, s0, s1 in draft.pieces:
        arcs = arc_lengths(tree.branches[b].points)
        mids = 0.5 * (arcs[:-1] + arcs[1:])
        first = next(i for i, t in enumerate(tubes) if t.branch == b)
        for k in np.nonzero((mids >= s0) & (mids <= s1))[0]:
            tube_ids.append(first + int(k))
    chains: dict[int, int] = {}  # a draft's own chain ids -> scene-wide ones
    for tube in draft.tubes:
        if tube.chain not in chains:
            chains[tube.chain] = tree.new_chain()
        tube.chain = chains[tube.chain]
        tube_ids.append(len(tubes))
        tubes.append(tube)
    blob_ids = []
    for blob in draft.blobs:
        blob_ids.append(len(blobs))
        blobs.append(blob)
    return Finding(
        index=index,
        label=draft.label,
        center=np.asarray(draft.center, dtype=float),
        size_mm=float(draft.size_mm),
        tubes=tube_ids,
        blobs=blob_ids,
        branch=draft.branch,
        generation=draft.generation,
        path_length_mm=draft.path_length_mm,
        obstructing=draft.obstructing,
    )


def _cannula(tree: DuctTree, cfg: CannulaConfig, rng) -> list[Tube]:
    """A blunt cannula in the orifice and, sometimes, the tubing it hangs from."""
    if rng.random() >= cfg.probability:
        return []
    root = tree.branches[0]
    channel_dir = root.points[1] - root.points[0]
    channel_dir /= np.linalg.norm(channel_dir)
    tilt = math.radians(uniform(rng, cfg.tilt_deg))
    side = rng.normal(size=3)
    side -= side.dot(channel_dir) * channel_dir
    side /= np.linalg.norm(side)
    outward = -(math.cos(tilt) * channel_dir + math.sin(tilt) * side)
    radius = uniform(rng, cfg.radius_mm)
    # A cannula wider than the channel stretches it.
    root.radii[:3] = np.maximum(root.radii[:3], radius + 0.05)
    material = "metal" if rng.random() < cfg.metal_probability else "plastic"
    tip = root.points[0] + channel_dir * uniform(rng, cfg.insertion_mm)
    hub = root.points[0] + outward * uniform(rng, cfg.outside_mm)
    tubes = [Tube(tip, hub, radius, radius, -1, tree.new_chain(), material, 0.0)]
    if rng.random() < cfg.tubing_probability:
        r_tube = uniform(rng, cfg.tubing_radius_mm)
        length = uniform(rng, cfg.tubing_length_mm)
        n = max(2, int(length / 5.0))
        d = outward.copy()
        p = hub
        chain = tree.new_chain()
        for _ in range(n):
            d = d + rng.normal(size=3) * 0.15
            d /= np.linalg.norm(d)
            q = p + d * length / n
            tubes.append(Tube(p, q, r_tube, r_tube, -1, chain, "plastic", 0.0))
            p = q
    return tubes
