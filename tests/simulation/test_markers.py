"""Burnt-in laterality/view markers: saturated letters in the air that change nothing else."""

import numpy as np
import pytest
from imaging_scenes import small_scene

from ductai.simulation.imaging_config import ImagingConfig
from ductai.simulation.render import render_view

ALWAYS = dict(
    marker_probability=1.0, marker_over_tissue_probability=0.0, marker_text_probability=1.0
)


def _render_pair(config: ImagingConfig, laterality: str, seed: int):
    """CC then MLO from one generator, as simulate_breast renders them."""
    rng = np.random.default_rng(seed)
    scene = small_scene(laterality)
    return [render_view(scene, view, config, rng, spacing_mm=0.3) for view in ("CC", "MLO")]


def _inside(boxes, shape) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        mask[int(y0) : int(y1), int(x0) : int(x1)] = True
    return mask


@pytest.mark.parametrize("laterality", ["R", "L"])
def test_markers_change_only_their_own_pixels(laterality):
    marked = _render_pair(ImagingConfig(**ALWAYS), laterality, seed=4)
    plain = _render_pair(ImagingConfig(marker_probability=0.0), laterality, seed=4)
    for m, p in zip(marked, plain):
        assert m.marker_boxes, m.view  # the small scene leaves room in the air
        assert m.physics["markers"] == len(m.marker_boxes)
        assert p.marker_boxes == [] and p.physics["markers"] == 0
        changed = m.pixels != p.pixels
        assert changed.any()
        # nothing outside the marker boxes moves, in this view or in the next one
        assert not (changed & ~_inside(m.marker_boxes, m.pixels.shape)).any()
        assert {k: v for k, v in m.physics.items() if k != "markers"} == {
            k: v for k, v in p.physics.items() if k != "markers"
        }


def test_letters_are_saturated_and_in_the_air():
    config = ImagingConfig(**ALWAYS, monochrome1_probability=0.0, marker_holder_probability=0.0)
    for seed in range(3):
        cc, mlo = _render_pair(config, "R", seed)
        for r in (cc, mlo):
            white = 2**r.bits_stored - 1
            x0, y0, x1, y1 = (int(v) for v in r.marker_boxes[0])
            letters = r.pixels[y0:y1, x0:x1]
            assert letters.max() >= 0.9 * white
            # the box is in the air: its darkest pixels are air, far below the breast
            assert np.percentile(letters, 10) < 0.1 * white


def test_monochrome1_markers_are_dark_in_stored_values():
    config = ImagingConfig(**ALWAYS, monochrome1_probability=1.0, marker_holder_probability=0.0)
    cc, _ = _render_pair(config, "L", seed=2)
    x0, y0, x1, y1 = (int(v) for v in cc.marker_boxes[0])
    assert cc.pixels[y0:y1, x0:x1].min() <= 0.1 * (2**cc.bits_stored - 1)
