"""render_view: orientation, masks, cross-view consistency and determinism at 0.3 mm.

Its speed is measured by benchmarks/bench_simulator.py, not here.
"""

import numpy as np
import pytest
from imaging_scenes import small_scene

from ductai.simulation.imaging_config import ImagingConfig
from ductai.simulation.render import render_view

CONFIG = ImagingConfig()


def _render(scene, view, seed=3, spacing=0.3, config=CONFIG):
    return render_view(scene, view, config, np.random.default_rng(seed), spacing_mm=spacing)


@pytest.mark.parametrize("laterality", ["R", "L"])
@pytest.mark.parametrize("view", ["CC", "MLO", "ML"])
def test_render_outputs_and_orientation(laterality, view):
    r = _render(small_scene(laterality), view)
    rows, cols = r.pixels.shape
    assert r.pixels.dtype == np.uint16 and r.pixels.max() < 2**r.bits_stored
    assert 12 <= r.bits_stored <= 14
    assert r.duct_mask.shape == r.centerline.shape == r.instances.shape == (rows, cols)
    assert r.duct_mask.sum() > 20 and r.centerline.sum() > 20
    assert r.pixel_spacing_mm == (0.3, 0.3)
    # standard orientation: right breast nipple on the image's left, left breast on the right
    assert (r.nipple_px[0] < cols / 2) == (laterality == "R")
    expected = {"CC": ("P", "L") if laterality == "R" else ("A", "R")}.get(view)
    assert r.patient_orientation == (expected or ("P" if laterality == "R" else "A", "F"))
    assert r.instances.max() == len(r.objects)


@pytest.mark.parametrize("laterality", ["R", "L"])
def test_finding_centre_projects_into_its_box_in_both_views(laterality):
    scene = small_scene(laterality)
    for view in ("CC", "MLO"):
        r = _render(scene, view, spacing=0.2)
        assert len(r.objects) == len(scene.findings)
        for obj in r.objects:
            finding = scene.findings[obj["finding"]]
            x, y = r.project(finding.center)[0]
            x0, y0, x1, y1 = obj["bbox_px"]
            assert x0 <= x <= x1 and y0 <= y <= y1, (view, obj)
            # its instance pixels lie inside the breast and inside its box
            ys, xs = np.nonzero(r.instances == obj["instance"])
            assert xs.size > 0
            assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1


def test_contrast_is_white_and_air_dark():
    config = ImagingConfig(monochrome1_probability=0.0)
    r = _render(small_scene("R"), "CC", config=config, spacing=0.2)
    duct = r.pixels[r.duct_mask > 0].astype(float)
    air = r.pixels[:, : r.pixels.shape[1] // 10].astype(float)  # right breast: air on the left
    breast_rows = r.pixels[r.pixels > np.percentile(r.pixels, 60)]
    assert np.median(duct) > np.median(breast_rows)
    assert air.mean() < 0.1 * (2**r.bits_stored - 1)


def test_monochrome1_inverts():
    config = ImagingConfig(monochrome1_probability=1.0)
    r = _render(small_scene("R"), "CC", config=config)
    assert r.photometric == "MONOCHROME1"
    air = r.pixels[:, : r.pixels.shape[1] // 10].astype(float)
    assert air.mean() > 0.9 * (2**r.bits_stored - 1)


def test_same_seed_same_image():
    scene = small_scene("L")
    a, b = _render(scene, "MLO", seed=11), _render(scene, "MLO", seed=11)
    assert np.array_equal(a.pixels, b.pixels) and a.physics == b.physics
    assert not np.array_equal(a.pixels, _render(scene, "MLO", seed=12).pixels)


def test_native_spacing_within_detector_range():
    r = render_view(small_scene("L"), "CC", CONFIG, np.random.default_rng(5), spacing_mm=None)
    detector = r.imager_pixel_spacing_mm[0]
    assert 0.07 <= detector <= 0.1
    assert r.pixel_spacing_mm[0] == pytest.approx(detector / r.magnification)


@pytest.mark.parametrize("preset", ["default", "hard"])
def test_compressed_thickness_is_typical(preset):
    """Compressed thickness 30-75 mm with a mean near 50-55 mm, rarely at the ceiling."""
    from ductai.simulation.anatomy import build_scene
    from ductai.simulation.config import load_simulation_config
    from ductai.simulation.views import make_view_geometry

    config = load_simulation_config(preset)
    rng = np.random.default_rng(0)
    thickness = []
    for seed in range(60):
        scene = build_scene(config.anatomy, np.random.default_rng(seed), "LR"[seed % 2])
        for view in ("CC", "MLO"):
            geom = make_view_geometry(scene, view, config.imaging, rng, 0.1, 1.0, spacing_mm=1.0)
            thickness.append(geom.thickness_mm)
    thickness = np.array(thickness)
    lo, hi = config.imaging.compressed_thickness_mm
    assert (thickness >= lo - 1e-6).all() and (thickness <= hi + 1e-6).all()
    assert 47.0 <= thickness.mean() <= 60.0
    assert (thickness >= hi - 0.1).mean() < 0.15


def test_dense_tissue_has_no_flat_plateaus():
    """Extremely dense breasts keep texture (hard preset: the steepest gland/fat contrast):
    the projected glandular fraction rarely saturates, and it varies inside the dense parts."""
    from dataclasses import replace

    from ductai.simulation.config import load_simulation_config
    from ductai.simulation.tissue_maps import coarse_tissue
    from ductai.simulation.views import make_view_geometry

    config = load_simulation_config("hard").imaging
    scene = small_scene("L")
    breast = replace(scene.breast, glandular_fraction=0.6, density_category="d")
    scene = replace(scene, breast=breast)
    for seed in range(8):
        rng = np.random.default_rng(seed)
        geom = make_view_geometry(scene, "MLO", config, rng, 0.1, 1.0, spacing_mm=0.5)
        tissue, _ = coarse_tissue(geom, breast, config, rng)
        glands = tissue.glandular[tissue.edge_mm > 5]
        dense = glands[glands > 0.5]
        assert dense.size > 0.3 * glands.size
        assert (glands > 0.9).mean() < 0.06
        assert dense.std() > 0.05


def test_pectoral_on_cc_is_a_soft_partial_sliver():
    """On CC the muscle, when present, is a faint lens at the posterior edge that fades in
    (no flat bright patch)."""
    from ductai.simulation.tissue_maps import _coarse_coords, pectoral_fraction
    from ductai.simulation.views import make_view_geometry

    config = CONFIG.model_copy(update={"pectoral_on_cc_probability": 1.0})
    scene = small_scene("L")
    for seed in range(6):
        rng = np.random.default_rng(seed)
        geom = make_view_geometry(scene, "CC", config, rng, 0.1, 1.0, spacing_mm=0.5)
        u, v, _ = _coarse_coords(geom)
        muscle = pectoral_fraction(geom, config, rng, u, v)
        assert 0 < muscle.max() <= config.pectoral_on_cc_strength[1] + 1e-6
        depth = config.pectoral_on_cc_width_mm[1] + max(geom.chest_wall_u, 0.0)
        assert not muscle[:, u[0] > depth].any()  # only at the posterior edge
        core = muscle[muscle > 0]
        assert (core > 0.9 * muscle.max()).mean() < 0.3  # a soft margin, not a plateau
