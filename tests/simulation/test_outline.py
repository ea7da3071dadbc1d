"""Breast outline per view: MLO oblique with an axillary tail, drooping ML, varied CC; every
duct and lesion inside the skin line; off-profile nipples projected over the breast."""

import numpy as np
import pytest
from pydantic import ValidationError

from ductai.simulation.anatomy import build_scene
from ductai.simulation.config import load_simulation_config
from ductai.simulation.imaging_config import ViewOutline
from ductai.simulation.render import render_view
from ductai.simulation.tissue_maps import _coarse_coords, edge_distance


def _canonical(r, a):
    return a[:, ::-1] if r.laterality == "R" else a


@pytest.mark.parametrize("preset", ["default", "hard"])
@pytest.mark.parametrize("view", ["CC", "MLO", "ML"])
def test_ducts_and_findings_lie_inside_the_outline(preset, view):
    config = load_simulation_config(preset)
    imaging = config.imaging.model_copy(update={"nipple_off_profile_probability": 0.5})
    for seed in range(4):
        rng = np.random.default_rng([seed, 7])
        scene = build_scene(config.anatomy, rng, "LR"[seed % 2])
        r = render_view(scene, view, imaging, rng, spacing_mm=0.5)
        g = r.geometry
        ys, xs = np.nonzero(_canonical(r, r.duct_mask | (r.instances > 0)))
        u, v = (xs + 0.5) * g.spacing_mm, (ys + 0.5) * g.spacing_mm
        rho = g.outline_rho(u, v)
        # the orifice channel crosses the nipple, which protrudes past the outline in profile
        a = g.nipple_axis
        du, dv = u - g.nipple_uv[0], v - g.nipple_uv[1]
        behind, across = -(du * a[0] + dv * a[1]), np.abs(du * a[1] - dv * a[0])
        # the 3D nipple reaches 1 mm into the mound (Breast.contains), scaled by the view's
        # spreading; a pixel centre may sit half a pixel diagonal beyond the geometry
        slack = g.spacing_mm * np.sqrt(0.5)
        length = g.scales[0] * (scene.breast.nipple_length + 1.0)
        nipple = (behind > -1.0 - slack) & (behind < length + slack)
        nipple &= across < scene.breast.nipple_radius + 1.0
        assert xs.size > 0 and (rho[~nipple] < 1.0).all(), (seed, float(rho[~nipple].max()))
        # and the tissue maps agree: the skin line lies outside every opacified pixel
        u, v, _ = _coarse_coords(g)
        edge = edge_distance(g, u, v)
        ys, xs = ys[~nipple], xs[~nipple]
        cy = np.minimum((ys * g.spacing_mm / (v[1, 0] - v[0, 0])).astype(int), edge.shape[0] - 1)
        cx = np.minimum((xs * g.spacing_mm / (u[0, 1] - u[0, 0])).astype(int), edge.shape[1] - 1)
        assert (edge[cy, cx] > -0.5).all()


def test_mlo_is_oblique_with_an_axillary_tail_and_a_low_nipple():
    config = load_simulation_config("default")
    for seed in range(6):
        rng = np.random.default_rng(seed)
        scene = build_scene(config.anatomy, rng, "L")
        r = render_view(scene, "MLO", config.imaging, rng, spacing_mm=0.5)
        g = r.geometry
        rows, _ = r.pixels.shape
        assert g.droop > 0.1  # the nipple axis drops towards the nipple
        assert 0.4 * rows < r.nipple_px[1] < 0.85 * rows  # nipple at mid-height or lower
        u, v, _ = _coarse_coords(g)
        inside = edge_distance(g, u, v) > 0
        assert inside[0, 0]  # tissue (axilla, muscle) reaches the top edge at the chest wall
        top = u[0, inside[0]].max()  # the skin line at the top edge
        assert top < 0.8 * g.nipple_uv[0]  # the upper contour runs obliquely to the axilla


def test_cc_and_ml_outlines_vary():
    config = load_simulation_config("default")
    shapes = {"CC": [], "ML": []}
    for seed in range(8):
        rng = np.random.default_rng(seed)
        scene = build_scene(config.anatomy, rng, "R")
        for view in shapes:
            g = render_view(scene, view, config.imaging, rng, spacing_mm=0.6).geometry
            shapes[view].append((g.droop, g.half_height_up / g.half_height_down, g.squareness))
    cc, ml = np.array(shapes["CC"]), np.array(shapes["ML"])
    assert cc[:, 0].std() > 0.02 and cc[:, 1].std() > 0.03 and cc[:, 2].std() > 0.05
    assert (ml[:, 0] > 0).all()  # the lateral view droops


def test_off_profile_nipple_projects_over_the_breast_with_exact_truth():
    config = load_simulation_config("default")
    for probability in (0.0, 1.0):
        imaging = config.imaging.model_copy(update={"nipple_off_profile_probability": probability})
        for seed in range(4):
            rng = np.random.default_rng(seed)
            scene = build_scene(config.anatomy, rng, "LR"[seed % 2])
            for view in ("CC", "MLO"):
                r = render_view(scene, view, imaging, rng, spacing_mm=0.4)
                g = r.geometry
                assert g.nipple_in_profile == (probability == 0.0)
                nipple = g.to_canonical_px(np.zeros(3))[0] * g.spacing_mm
                rho = float(g.outline_rho(np.float32(nipple[0]), np.float32(nipple[1])))
                assert (rho < 0.99) == (probability == 1.0)  # inside the skin line or beyond
                np.testing.assert_allclose(r.orifice_px, g.project(scene.orifice)[0])
                np.testing.assert_allclose(r.nipple_px, g.project(np.zeros(3))[0])


def test_outline_factors_must_enclose_the_breast():
    with pytest.raises(ValidationError):
        ViewOutline(half_height_up=[0.9, 1.2])
    with pytest.raises(ValidationError):
        ViewOutline(squareness=[1.5, 2.5])
