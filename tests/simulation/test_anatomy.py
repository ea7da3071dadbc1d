"""Invariants of simulated breasts and duct trees over many seeds and both presets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pydantic import ValidationError

from ductai.configs import config_path
from ductai.simulation import truth
from ductai.simulation.anatomy import build_scene
from ductai.simulation.anatomy_config import AnatomyConfig, load_anatomy_config
from ductai.simulation.scene import Scene

SEEDS = range(24)
IN_LUMEN = ("papilloma", "cutoff", "irregularity", "ectasia", "air_bubble")


def _config(preset: str) -> AnatomyConfig:
    return load_anatomy_config(str(config_path(f"simulation/{preset}.yaml")))


@pytest.fixture(scope="module", params=["default", "hard"])
def preset(request):
    config = _config(request.param)
    scenes = [build_scene(config, np.random.default_rng(seed), "LR"[seed % 2]) for seed in SEEDS]
    return request.param, config, scenes


def _segment_distance(p, a, b):
    """Distance from p to segment ab and the segment parameter of the closest point."""
    ab = b - a
    t = float(np.clip((p - a).dot(ab) / max(ab.dot(ab), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(a + t * ab - p)), t


def _lumen_depth(scene: Scene, point) -> float:
    """How far ``point`` lies inside the nearest filled lumen (> 0 inside)."""
    best = -np.inf
    for tube in scene.tubes:
        if tube.branch < 0 or tube.concentration <= 0:
            continue
        d, t = _segment_distance(point, tube.p0, tube.p1)
        best = max(best, tube.r0 + t * (tube.r1 - tube.r0) - d)
    return best


def test_tree_is_connected_and_rooted_at_the_orifice(preset):
    _, _, scenes = preset
    for scene in scenes:
        branches = scene.branches
        assert branches[0].parent == -1
        np.testing.assert_allclose(branches[0].points[0], scene.orifice)
        for i, b in enumerate(branches):
            assert b.index == i
            assert len(b.points) == len(b.radii) >= 2
            for c in b.children:
                assert branches[c].parent == i
                np.testing.assert_allclose(branches[c].points[0], b.points[-1], atol=1e-9)
        reached = truth_subtree(branches, 0)
        assert sorted(reached) == list(range(len(branches)))
        assert all(b.parent >= 0 for b in branches[1:])


def truth_subtree(branches, root):
    out, stack = [], [root]
    while stack:
        b = stack.pop()
        out.append(b)
        stack.extend(branches[b].children)
    return out


def test_generations_bounded_and_counted_from_bifurcations(preset):
    _, config, scenes = preset
    deepest = 0
    for scene in scenes:
        for b in scene.branches:
            assert 0 <= b.generation <= config.duct.max_generation
            assert truth.branch_generation(scene.branches, b.index) == b.generation
            assert len(b.children) in (0, 1, 2)
        deepest = max(deepest, max(b.generation for b in scene.branches))
    assert deepest == config.duct.max_generation


def test_child_radius_ratios_and_unequal_children(preset):
    _, config, scenes = preset
    lo, hi = config.duct.child_radius_ratio
    checked = 0
    for scene in scenes:
        # Findings (ectasia, papilloma widening) change radii on purpose: skip those branches.
        touched = {scene.tubes[t].branch for f in scene.findings for t in f.tubes}
        touched |= {f.branch for f in scene.findings}
        for b in scene.branches:
            if len(b.children) != 2 or b.index in touched:
                continue
            kids = [scene.branches[c] for c in b.children]
            if any(k.index in touched for k in kids):
                continue
            r_end = b.radii[-1]
            for k in kids:
                at_floor = abs(k.radii[0] - config.duct.min_radius_mm) < 1e-9
                assert at_floor or lo - 1e-9 <= k.radii[0] / r_end <= hi + 1e-9
            if kids[0].radii[0] > config.duct.min_radius_mm + 1e-9:
                assert kids[0].radii[0] > kids[1].radii[0]  # the larger child comes first
            checked += 1
    assert checked > 100


def test_radii_taper_to_terminal_ducts(preset):
    _, _, scenes = preset
    for scene in scenes:
        terminal = [b.radii[-1] for b in scene.branches if not b.children and b.generation >= 5]
        if terminal:
            assert np.median(terminal) < 0.2
        if not any(f.label in ("ectasia", "papilloma") for f in scene.lesions):
            main = scene.branches[0].radii
            assert 0.4 <= main[-1] <= 1.0  # main duct 1-2 mm diameter


def test_calibre_stays_visible_over_generations(preset):
    """Gentle taper within branches: 0.5-2 mm ducts reach generation 4, the finest
    (~0.2 mm) ones only the periphery (generations 6-7)."""
    _, config, scenes = preset
    starts: dict[int, list[float]] = {}
    for scene in scenes:
        for b in scene.branches:
            starts.setdefault(b.generation, []).append(b.radii[0])
    mean = {g: float(np.mean(r)) for g, r in starts.items()}
    assert mean[1] >= 0.55 and mean[2] >= 0.4 and mean[3] >= 0.3 and mean[4] >= 0.24
    assert mean[5] >= 0.18 and mean[6] >= 0.14
    deepest = config.duct.max_generation
    assert mean[deepest] <= 0.2
    terminal = [b.radii[-1] for s in scenes for b in s.branches if not b.children]
    assert np.median(terminal) <= 0.12
    wide = [sum(b.filled and b.radii.mean() >= 0.25 for b in s.branches) for s in scenes]
    assert np.mean(wide) >= 15  # many branches of >= 0.5 mm calibre per tree


def test_extravasation_is_a_conspicuous_cloud(preset):
    """Extravasated contrast amounts to tens of mm^3 of full-strength contrast (a reader sees
    it), spread over many soft, overlapping puffs; vessel lines fill nearly undiluted."""
    name, config, _ = preset
    config = config.model_copy(deep=True)
    config.findings.count_probabilities = [0, 1]
    config.findings.class_weights = {"extravasation": 1.0}
    config.findings.extravasation.intravasation_probability = 1.0
    amounts, lines = [], 0
    for seed in range(12):
        scene = build_scene(config, np.random.default_rng(seed), "L")
        for f in scene.lesions:
            blobs = [scene.blobs[b] for b in f.blobs]
            assert len(blobs) >= 3 and all(b.softness > 0 for b in blobs)
            # a soft blob's profile (1 - rho^2) ** (0.5 + s) holds 1 / (1 + s) of its volume
            amounts.append(
                sum(
                    b.concentration * 4 / 3 * np.pi * np.prod(b.radii) / (1 + b.softness)
                    for b in blobs
                )
            )
            for t in (scene.tubes[i] for i in f.tubes):
                lo, _ = config.findings.extravasation.intravasation_concentration
                assert t.concentration >= lo and t.material == "iodine"
                lines += 1
    assert len(amounts) >= 10 and lines > 0
    assert np.median(amounts) >= (30.0 if name == "default" else 15.0)


def test_everything_inside_the_breast(preset):
    _, config, scenes = preset
    for scene in scenes:
        breast = scene.breast
        pts = np.concatenate([b.points for b in scene.branches])
        assert breast.contains(pts, margin=-1e-6).all()
        assert (pts[:, 0] <= breast.depth - config.duct.chest_wall_margin_mm + 1e-6).all()
        ends = np.array([p for t in scene.tubes for p in (t.p0, t.p1)])
        assert breast.contains(ends, margin=-1e-6).all()
        centers = np.array([b.center for b in scene.blobs]).reshape(-1, 3)
        assert breast.contains(centers).all()
        for tube in scene.cannula:
            assert tube.material in ("metal", "plastic")
        if scene.cannula:
            assert scene.cannula[0].p1[0] < 0  # the hub sits in front of the nipple


def test_lesions_lie_in_filled_lumen(preset):
    _, _, scenes = preset
    n = 0
    for scene in scenes:
        for f in scene.findings:
            if f.label in IN_LUMEN:
                assert _lumen_depth(scene, f.center) >= -1e-6, (f.label, f.center)
                assert scene.branches[f.branch].filled
                n += 1
    assert n > 5


def test_obstruction_unfills_everything_distal(preset):
    _, _, scenes = preset
    n = 0
    for scene in scenes:
        for f in scene.lesions:
            if not f.obstructing:
                continue
            b = scene.branches[f.branch]
            assert b.filled
            np.testing.assert_allclose(b.points[-1], f.center, atol=1e-6)
            distal = [i for c in b.children for i in truth_subtree(scene.branches, c)]
            assert distal and not any(scene.branches[i].filled for i in distal)
            assert all(t.concentration == 0 for t in scene.tubes if t.branch in distal)
            n += 1
    # papillomas obstruct only sometimes; cut-offs always
    assert n >= 1


def _ellipsoid_level(blob, points):
    """|q| of points in a blob's normalised frame (<= 1 inside)."""
    q = (np.atleast_2d(points) - blob.center) @ blob.rotation / blob.radii
    return np.linalg.norm(q, axis=1)


def _sphere(n: int = 400, seed: int = 0):
    u = np.random.default_rng(seed).normal(size=(n, 3))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def test_papilloma_is_hugged_by_its_lumen_unless_obstructing():
    """The lumen wraps the papilloma with a thin rim, thinner on the wall it grows from."""
    config = _config("default")
    config.findings.count_probabilities = [0, 1]
    config.findings.class_weights = {"papilloma": 1.0}
    config.findings.papilloma.obstructing_probability = 0.0
    pc = config.findings.papilloma
    widened = 0
    for seed in range(16):
        scene = build_scene(config, np.random.default_rng(seed), "R")
        (f,) = scene.lesions
        assert not f.obstructing and f.label == "papilloma"
        assert 2.0 <= f.size_mm <= 10.0
        (pap,) = [scene.blobs[b] for b in f.blobs if scene.blobs[b].sign < 0]
        lumens = [scene.blobs[b] for b in f.blobs if scene.blobs[b].sign > 0]
        assert pap.material == "soft_tissue" and pap.lobulation <= 0  # clefts, no bulges
        surface = pap.center + (_sphere() * pap.radii) @ pap.rotation.T
        if lumens:
            (lumen,) = lumens
            widened += 1
            assert lumen.material == "iodine"
            # every point of the papilloma lies inside its lumen ...
            assert (_ellipsoid_level(lumen, surface) <= 1 + 1e-9).all()
            # ... which is no wider than the papilloma plus its rims
            e1, e2 = pap.rotation[:, 1], pap.rotation[:, 2]
            offset = (pap.center - lumen.center).dot(e1)
            attached = lumen.radii[1] - pap.radii[1] - offset
            free = lumen.radii[1] - pap.radii[1] + offset
            assert -1e-9 <= attached <= free <= pc.rim_mm[1] + 1e-9
            assert lumen.radii[2] - pap.radii[2] <= pc.rim_mm[1] + 1e-9
            assert abs((pap.center - lumen.center).dot(e2)) < 1e-9
        else:  # a small papilloma on the wall of a wider duct
            assert min(_lumen_depth(scene, p) for p in surface) >= -1e-6
        assert _lumen_depth(scene, f.center) > 0
    assert widened >= 8


def test_obstructing_papilloma_fills_its_duct_and_is_cupped():
    config = _config("default")
    config.findings.count_probabilities = [0, 1]
    config.findings.class_weights = {"papilloma": 1.0}
    config.findings.papilloma.obstructing_probability = 1.0
    for seed in range(8):
        scene = build_scene(config, np.random.default_rng(seed), "L")
        (f,) = scene.lesions
        assert f.obstructing
        (pap,) = [scene.blobs[b] for b in f.blobs if scene.blobs[b].sign < 0]
        (lumen,) = [scene.blobs[b] for b in f.blobs if scene.blobs[b].sign > 0]
        branch = scene.branches[f.branch]
        assert pap.radii[1:].min() > branch.radii[-1]  # wider than the duct it blocks
        towards_nipple = branch.points[-2] - branch.points[-1]
        axis = pap.rotation[:, 0] * np.sign(pap.rotation[:, 0].dot(towards_nipple))
        inside = (
            lumen.center
            + (_sphere(2000) * np.random.default_rng(1).random((2000, 1)))
            * (lumen.radii)
            @ lumen.rotation.T
        )
        beyond = inside[(inside - pap.center) @ axis < 0]  # past the papilloma's equator
        assert beyond.size and (_ellipsoid_level(pap, beyond) <= 1 + 1e-9).all()
        assert (lumen.center - pap.center).dot(axis) > 0  # the cup faces the nipple


def test_findings_have_exact_primitives(preset):
    _, _, scenes = preset
    for scene in scenes:
        assert len(scene.lesions) <= 3
        for i, f in enumerate(scene.findings):
            assert f.index == i
            assert f.tubes or f.blobs
            assert all(0 <= t < len(scene.tubes) for t in f.tubes)
            assert all(0 <= b < len(scene.blobs) for b in f.blobs)
            assert f.size_mm > 0
            if f.label == "air_bubble":
                (b,) = f.blobs
                blob = scene.blobs[b]
                assert blob.material == "air" and blob.sign == -1
                assert np.allclose(blob.radii, blob.radii[0]) and blob.lobulation == 0
            if f.label == "calcification":
                assert all(scene.tubes[t].material == "calcium" for t in f.tubes)
                assert all(scene.blobs[b].material == "calcium" for b in f.blobs)
            if f.label == "cutoff":  # a mask around the cut end that adds no visible material
                (b,) = f.blobs
                assert 0 < scene.blobs[b].concentration < 1e-3 and f.obstructing
            if f.label in ("irregularity", "ectasia"):
                assert f.tubes and all(scene.tubes[t].branch >= 0 for t in f.tubes)
            if f.label in IN_LUMEN and f.branch >= 0:
                expected = truth.path_length(scene.branches, f.branch, f.center)
                assert abs(f.path_length_mm - expected) < 0.5, f.label


def test_about_a_quarter_of_breasts_have_no_lesion():
    config = _config("default")
    none = [
        not build_scene(config, np.random.default_rng(seed), "R").lesions for seed in range(160)
    ]
    assert 0.13 <= np.mean(none) <= 0.38


def test_hard_preset_has_many_mimics():
    default, hard = _config("default"), _config("hard")
    counts = {}
    for name, config in (("default", default), ("hard", hard)):
        scenes = [build_scene(config, np.random.default_rng(s), "L") for s in range(20)]
        counts[name] = [len(s.mimics) for s in scenes]
        if name == "hard":
            assert np.mean([c > 0 for c in counts[name]]) >= 0.8
            assert np.mean([s.breast.density_category in "cd" for s in scenes]) >= 0.6
    assert np.mean(counts["hard"]) > 2 * np.mean(counts["default"])


def _equal(a, b) -> bool:
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and all(
            _equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, float) and np.isnan(a):
        return isinstance(b, float) and np.isnan(b)
    return a == b


def test_same_seed_same_scene_and_different_seed_different_scene():
    config = _config("hard")
    first = build_scene(config, np.random.default_rng(7), "L")
    again = build_scene(config, np.random.default_rng(7), "L")
    other = build_scene(config, np.random.default_rng(8), "L")
    assert _equal(first, again)
    assert not _equal(first, other)


def test_lobes_point_in_every_direction():
    config = _config("default")
    clocks = set()
    for seed in range(40):
        scene = build_scene(config, np.random.default_rng(seed), "R")
        tips = np.concatenate([b.points[-1:] for b in scene.branches if not b.children])
        clocks.add(truth.clock_position(tips.mean(axis=0), "R").split(":")[0])
    assert len(clocks) >= 9


def test_config_validation_rejects_bad_values():
    with pytest.raises(ValidationError):
        AnatomyConfig.model_validate({"breast": {"depth_mm": [140, 60]}})
    with pytest.raises(ValidationError):
        AnatomyConfig.model_validate({"fill": {"incomplete_probability": 1.5}})
    with pytest.raises(ValidationError):
        AnatomyConfig.model_validate({"duct": {"no_such_key": 1}})
    with pytest.raises(ValidationError):
        AnatomyConfig.model_validate({"findings": {"class_weights": {"tumour": 1.0}}})
    with pytest.raises(ValueError):
        build_scene(AnatomyConfig(), np.random.default_rng(0), "X")
