"""Small hand-made scenes for the imaging tests (independent of the anatomy generator)."""

from __future__ import annotations

import numpy as np

from ductai.simulation.scene import Blob, Branch, Breast, Finding, Scene, Tube
from ductai.simulation.views import ViewGeometry


def breast(laterality: str = "R") -> Breast:
    return Breast(
        laterality=laterality,
        depth=100.0,
        half_width=70.0,
        half_height=60.0,
        glandular_fraction=0.25,
        density_category="b",
        skin_thickness=1.5,
        nipple_length=8.0,
        nipple_radius=5.0,
    )


def _polyline_tubes(points, radii, branch, chain):
    return [
        Tube(points[i], points[i + 1], radii[i], radii[i + 1], branch, chain)
        for i in range(len(points) - 1)
    ]


def small_scene(laterality: str = "R") -> Scene:
    """A main duct that forks in two, a papilloma (lucent blob) and a calcification."""
    main = np.array([[0.5, 0.0, 0.0], [8.0, 0.5, 0.0], [20.0, 1.0, 0.5]])
    upper = np.array([[20.0, 1.0, 0.5], [35.0, 6.0, 6.0], [55.0, 10.0, 14.0]])
    lower = np.array([[20.0, 1.0, 0.5], [38.0, -6.0, -6.0], [60.0, -12.0, -15.0]])
    branches = [
        Branch(0, -1, 0, main, np.array([1.2, 1.5, 1.2]), True, 0.0, [1, 2]),
        Branch(1, 0, 1, upper, np.array([0.9, 0.8, 0.5]), True, 20.0),
        Branch(2, 0, 1, lower, np.array([0.9, 0.7, 0.4]), True, 20.0),
    ]
    tubes = []
    for b in branches:
        tubes += _polyline_tubes(b.points, b.radii, b.index, b.index)
    papilloma = Blob(
        center=np.array([35.0, 6.0, 6.0]),
        radii=np.array([2.0, 1.2, 1.2]),
        rotation=np.eye(3),
        material="soft_tissue",
        sign=-1,
        lobulation=0.2,
        seed=7,
    )
    calcification = Blob(
        center=np.array([60.0, 25.0, -10.0]),
        radii=np.array([2.0, 0.4, 0.4]),
        rotation=np.eye(3),
        material="calcium",
    )
    findings = [
        Finding(0, "papilloma", papilloma.center, 4.0, blobs=[0], branch=1, generation=1),
        Finding(1, "calcification", calcification.center, 4.0, blobs=[1]),
    ]
    return Scene(
        breast=breast(laterality),
        branches=branches,
        tubes=tubes,
        blobs=[papilloma, calcification],
        findings=findings,
        orifice=np.array([0.5, 0.0, 0.0]),
        cannula=[],
        contrast_mg_per_ml=300.0,
        seed=1,
    )


def flat_geometry(shape=(600, 600), spacing=0.1) -> ViewGeometry:
    """An uncompressed 'view' looking along z: u = x, v = y (for exact chord tests)."""
    return ViewGeometry(
        view="CC",
        laterality="L",
        matrix=np.eye(3),
        offset=np.array([shape[1] * spacing / 2, shape[0] * spacing / 2, 0.0]),
        spacing_mm=spacing,
        shape=shape,
        thickness_mm=50.0,
        scales=(1.0, 1.0, 1.0),
        chest_wall_u=0.0,
        body_depth=50.0,
        centre_v=shape[0] * spacing / 2,
        half_height_down=30.0,
        half_height_up=30.0,
        obliquity_deg=90.0,
    )
