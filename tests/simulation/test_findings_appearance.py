"""How findings read in projection: lucent papillomas, ragged irregularity, smooth bubbles.

Measured on the iodine thickness maps of both views (what contrast the beam crosses), not
on the processed images, so the checks hold whatever the noise and the vendor look.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ductai.configs import config_path
from ductai.simulation.anatomy import build_scene
from ductai.simulation.config import load_simulation_config
from ductai.simulation.duct_tree import arc_lengths, point_at
from ductai.simulation.projection import project_primitives
from ductai.simulation.views import make_view_geometry

ONLY = {"papilloma": 0, "cutoff": 0, "irregularity": 0, "ectasia": 0, "extravasation": 0}


def _config(label: str | None, **papilloma):
    config = load_simulation_config(config_path("simulation/default.yaml"))
    findings = config.anatomy.findings
    if label is not None:
        findings.count_probabilities = [0, 1]
        findings.class_weights = {**ONLY, label: 1.0}
    for key, value in papilloma.items():
        setattr(findings.papilloma, key, value)
    config.anatomy.mimics.bubbles.probability = 0.0
    config.anatomy.mimics.calcifications.secretory_probability = 0.0
    config.anatomy.mimics.calcifications.punctate_probability = 0.0
    return config


def _views(scene, config, seed: int):
    for k, view in enumerate(("CC", "MLO")):
        rng = np.random.default_rng([seed, k])
        geom = make_view_geometry(scene, view, config.imaging, rng, 0.1, 1.0, 0.1)
        yield geom, project_primitives(scene, geom).iodine


def _disk_mean(image, geom, point, radius_mm: float) -> float:
    cx, cy = geom.to_canonical_px(np.asarray(point)[None])[0]
    r = max(radius_mm / geom.spacing_mm, 1.0)
    x0, x1 = int(cx - r - 1), int(cx + r + 2)
    y0, y1 = int(cy - r - 1), int(cy + r + 2)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r
    return float(image[y0:y1, x0:x1][inside].mean())


def _beside(scene, finding, blob, side: int = -1):
    """A duct point just proximal (-1) or distal (+1) to the lesion's widened bed, and its
    lumen radius."""
    branch = scene.branches[finding.branch]
    arcs = arc_lengths(branch.points)
    k = int(np.argmin(np.linalg.norm(branch.points - blob.center, axis=1)))
    point, radius, _ = point_at(branch, arcs[k] + side * (blob.radii[0] + 2.5))
    return point, radius


def _column(iodine, geom, scene, finding, blob) -> float:
    """Contrast in the column next to the lesion: the wider of the duct before and after it
    (before a papilloma in the sinus lies the narrow nipple channel). A papilloma smaller
    than its duct does not widen it: there, the column at its own site without it."""
    widened = any(scene.blobs[b].material == "iodine" for b in finding.blobs)
    if not widened:
        gone = dataclasses.replace(blob, radii=blob.radii * 1e-3)
        blobs = [gone if b is blob else b for b in scene.blobs]
        empty = project_primitives(dataclasses.replace(scene, blobs=blobs), geom).iodine
        return _disk_mean(empty, geom, blob.center, 0.3 * blob.radii[1:].min())
    values = []
    for side in (-1, 1):
        point, radius = _beside(scene, finding, blob, side)
        values.append(_disk_mean(iodine, geom, point, 0.3 * radius))
    return max(values)


@pytest.mark.parametrize("diameter", [[2.0, 2.5], [3.5, 4.5], [7.0, 9.0]])
def test_papilloma_is_a_lucent_defect_in_both_views(diameter):
    """Over a papilloma's centre the beam crosses far less contrast than in the duct just
    next to it: a filling defect, not a bright widened oval."""
    config = _config("papilloma", obstructing_probability=0.0, diameter_mm=diameter)
    ratios = []
    for seed in range(6):
        scene = build_scene(config.anatomy, np.random.default_rng(seed), "LR"[seed % 2])
        (f,) = scene.lesions
        blob = next(scene.blobs[b] for b in f.blobs if scene.blobs[b].sign < 0)
        for geom, iodine in _views(scene, config, seed):
            centre = _disk_mean(iodine, geom, blob.center, 0.3 * blob.radii[1:].min())
            duct = _column(iodine, geom, scene, f, blob)
            assert duct > 0.3, "the duct next to the papilloma is opacified"
            ratios.append(centre / duct)
    assert max(ratios) < 0.6, ratios
    assert np.mean(ratios) < 0.4, ratios


def test_obstructing_papilloma_ends_the_column_in_a_cup():
    """The column ends at the papilloma: contrast only on its near side, none beyond."""
    config = _config("papilloma", obstructing_probability=1.0)
    for seed in range(4):
        scene = build_scene(config.anatomy, np.random.default_rng(seed), "L")
        (f,) = scene.lesions
        assert f.obstructing
        blob = next(scene.blobs[b] for b in f.blobs if scene.blobs[b].sign < 0)
        axis = blob.rotation[:, 0]
        prox, r_prox = _beside(scene, f, blob)
        if axis.dot(blob.center - prox) < 0:
            axis = -axis  # pointing away from the nipple
        # the same scene without this duct: what crossing ducts add in projection
        tubes = [
            dataclasses.replace(t, concentration=0.0) if t.branch == f.branch else t
            for t in scene.tubes
        ]
        others = dataclasses.replace(scene, tubes=tubes)
        far = blob.center + 0.6 * blob.radii[0] * axis
        for geom, iodine in _views(scene, config, seed):
            duct = _disk_mean(iodine, geom, prox, 0.3 * r_prox)
            centre = _disk_mean(iodine, geom, blob.center, 0.3 * blob.radii[1:].min())
            crossing = project_primitives(others, geom).iodine
            centre -= _disk_mean(crossing, geom, blob.center, 0.3 * blob.radii[1:].min())
            beyond = _disk_mean(iodine, geom, far, 0.2) - _disk_mean(crossing, geom, far, 0.2)
            assert centre < 0.3 * duct
            assert beyond < 0.02 * duct + 1e-3


def test_irregularity_is_ragged_not_regular_beads():
    """Calibre knots at irregular intervals and depths, notches bitten out of the margin."""
    config = _config("irregularity")
    ic = config.anatomy.findings.irregularity
    spacings, notched = [], 0
    for seed in range(8):
        scene = build_scene(config.anatomy, np.random.default_rng(seed), "L")
        (f,) = scene.lesions
        branch = scene.branches[f.branch]
        radii = np.array([scene.tubes[t].r0 for t in f.tubes])
        assert radii.max() > 1.15 * np.median(radii) or radii.min() < 0.85 * np.median(radii)
        # local extrema of the calibre: their spacing varies (no fixed pitch)
        arcs = arc_lengths(branch.points)
        extrema = np.flatnonzero(np.diff(np.sign(np.diff(branch.radii))) != 0)
        spacings += list(np.diff(arcs[extrema + 1]))
        lucent = [scene.blobs[b] for b in f.blobs if scene.blobs[b].sign < 0]
        assert ic.notches[0] + ic.defects[0] <= len(lucent)
        for blob in lucent:  # notches sit at the wall: centre near or beyond the margin
            points = branch.points
            d = np.linalg.norm(points - blob.center, axis=1)
            k = int(np.argmin(d))
            if d[k] >= 0.8 * branch.radii[k]:
                notched += 1
    spacings = np.array(spacings)
    assert spacings.std() > 0.3 * spacings.mean()
    assert notched >= 8 * ic.notches[0] * 0.5


def test_air_bubbles_are_smooth_spheres_filling_an_unwidened_lumen():
    config = _config(None)
    config.anatomy.findings.count_probabilities = [1]
    config.anatomy.mimics.bubbles.probability = 1.0
    bc = config.anatomy.mimics.bubbles
    n = 0
    for seed in range(10):
        scene = build_scene(config.anatomy, np.random.default_rng(seed), "L")
        for f in scene.mimics:
            if f.label != "air_bubble":
                continue
            (blob,) = [scene.blobs[b] for b in f.blobs]
            assert blob.material == "air" and blob.sign == -1 and blob.lobulation == 0
            assert np.allclose(blob.radii, blob.radii[0])  # a sphere
            branch = scene.branches[f.branch]
            s = f.path_length_mm - branch.path_length_start  # its centre's arc
            np.testing.assert_allclose(point_at(branch, s)[0], blob.center, atol=1e-6)
            lumen = [point_at(branch, s + k)[1] for k in np.linspace(-1, 1, 5) * blob.radii[0]]
            assert blob.radii[0] <= min(lumen) + 1e-6  # fits the duct: no widening
            assert blob.radii[0] >= 0.85 * bc.radius_fraction[0] * max(lumen)  # fills it
            n += 1
    assert n >= 10
