"""Chord-length rasterisation: volumes, seamless chains, lucent defects, masks."""

import itertools

import numpy as np
import pytest
from imaging_scenes import flat_geometry, small_scene

from ductai.simulation.projection import (
    blob_box,
    blob_chord,
    project_blob,
    project_primitives,
    project_tube,
    tube_box,
    tube_chord,
)
from ductai.simulation.scene import Blob, Branch, Scene, Tube


def _volume(chords: np.ndarray, spacing: float) -> float:
    return float(chords.sum(dtype=np.float64)) * spacing**2


@pytest.mark.parametrize("tilt_mm", [0.0, 6.0])
def test_tube_chord_integral_matches_volume(tilt_mm):
    geom = flat_geometry(spacing=0.05)
    r0, r1 = 1.0, 0.6
    tube = Tube(np.array([-8.0, -3.0, 0.0]), np.array([8.0, 2.0, tilt_mm]), r0, r1, 0, 0)
    proj = project_tube(tube, geom)
    chords = tube_chord(proj, tube_box(proj, geom.shape))
    length = float(np.linalg.norm(tube.p1 - tube.p0))
    cone = np.pi / 3 * length * (r0 * r0 + r0 * r1 + r1 * r1)
    caps = 2 / 3 * np.pi * (r0**3 + r1**3)
    assert _volume(chords, 0.05) == pytest.approx(cone + caps, rel=0.03)


def test_blob_chord_integral_matches_ellipsoid_volume():
    geom = flat_geometry(spacing=0.05)
    angle = 0.7
    rotation = np.array(
        [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    )
    blob = Blob(np.zeros(3), np.array([3.0, 1.5, 1.0]), rotation, "calcium")
    proj = project_blob(blob, geom)
    chords = blob_chord(proj, blob_box(proj, geom.shape))
    assert _volume(chords, 0.05) == pytest.approx(4 / 3 * np.pi * 3.0 * 1.5 * 1.0, rel=0.02)
    # the thickest chord of a rotated ellipsoid is along the beam through its centre
    assert chords.max() <= 2 * 3.0


def test_soft_blob_thins_towards_its_surface_with_the_same_footprint():
    geom = flat_geometry(spacing=0.05)
    hard = Blob(np.zeros(3), np.array([3.0, 2.0, 1.5]), np.eye(3), "iodine")
    soft = Blob(np.zeros(3), np.array([3.0, 2.0, 1.5]), np.eye(3), "iodine", softness=1.0)
    p_hard, p_soft = project_blob(hard, geom), project_blob(soft, geom)
    box = blob_box(p_hard, geom.shape)
    c_hard, c_soft = blob_chord(p_hard, box), blob_chord(p_soft, box)
    np.testing.assert_array_equal(c_hard > 0, c_soft > 0)
    assert c_soft.max() == pytest.approx(c_hard.max(), rel=1e-3)
    assert (c_soft <= c_hard + 1e-6).all()
    # profile (1 - rho^2) ** 1.5: the projected volume is 2/5 of the ellipsoid's (vs 2/3 * 1)
    assert _volume(c_soft, 0.05) == pytest.approx(0.6 * _volume(c_hard, 0.05), rel=0.03)


def _scene_with(tubes, blobs=()) -> Scene:
    scene = small_scene("L")
    branch = Branch(0, -1, 0, np.array([[0.0, 0, 0], [1.0, 0, 0]]), np.array([1.0, 1.0]), True, 0)
    return Scene(scene.breast, [branch], list(tubes), list(blobs), [], scene.orifice, [], 300.0, 0)


def test_chain_of_tubes_has_seamless_joints():
    geom = flat_geometry(spacing=0.05)
    xs = np.linspace(-10.0, 10.0, 6)
    chain = [
        Tube(np.array([a, 0, 0]), np.array([b, 0, 0]), 0.8, 0.8, 0, 0)
        for a, b in itertools.pairwise(xs)
    ]
    iodine = project_primitives(_scene_with(chain), geom).iodine
    row = iodine[geom.shape[0] // 2]  # the axis runs along this row
    cols = np.arange(row.size) * 0.05 + 0.025 - geom.offset[0]
    interior = row[(cols > -9) & (cols < 9)]
    assert interior.max() == pytest.approx(interior.min(), rel=0.01)
    assert interior.mean() == pytest.approx(1.6, rel=0.02)  # the diameter


def test_crossing_chains_add_up():
    geom = flat_geometry(spacing=0.05)
    a = Tube(np.array([-5.0, 0, 0]), np.array([5.0, 0, 0]), 0.5, 0.5, 0, 0)
    b = Tube(np.array([0.0, -5, 0]), np.array([0.0, 5, 0]), 0.5, 0.5, 1, 1)
    iodine = project_primitives(_scene_with([a, b]), geom).iodine
    assert iodine.max() == pytest.approx(2.0, rel=0.02)


def test_lucent_blob_reduces_iodine_never_below_zero():
    geom = flat_geometry(spacing=0.05)
    tube = Tube(np.array([-8.0, 0, 0]), np.array([8.0, 0, 0]), 0.8, 0.8, 0, 0)
    defect = Blob(np.zeros(3), np.array([2.0, 2.0, 2.0]), np.eye(3), "soft_tissue", sign=-1)
    maps = project_primitives(_scene_with([tube], [defect]), geom)
    plain = project_primitives(_scene_with([tube]), geom)
    assert maps.iodine.min() >= 0.0
    cy, cx = (np.array(geom.shape) // 2).tolist()
    assert maps.iodine[cy, cx] < 0.05 * plain.iodine[cy, cx]  # fully displaced at the centre
    assert maps.iodine[cy, cx - 120] == pytest.approx(plain.iodine[cy, cx - 120])  # 6 mm away
    assert maps.materials["soft_tissue"].max() > 0  # the papilloma's own tissue
    # the lumen mask still shows the duct through the defect
    assert maps.duct_mask[cy, cx] == 1


def test_masks_and_footprints():
    geom = flat_geometry(shape=(1400, 1400), spacing=0.1)
    maps = project_primitives(small_scene("L"), geom)
    assert maps.duct_mask.sum() > 100
    assert maps.centerline.sum() > 100
    assert not np.any(maps.centerline & ~maps.duct_mask.astype(bool)) or (
        (maps.centerline & maps.duct_mask).sum() > 0.9 * maps.centerline.sum()
    )
    assert set(maps.footprints) == {0, 1}
    (x0, y0, x1, y1), mask = maps.footprints[0]
    assert mask.any() and mask.shape == (y1 - y0, x1 - x0)
