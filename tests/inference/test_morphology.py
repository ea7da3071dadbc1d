"""The fast morphology helpers give scipy.ndimage's answers on random masks, borders included."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import disk

from ductai.inference.localization import morphology


def _masks(n: int = 60):
    rng = np.random.default_rng(7)
    for t in range(n):
        h, w = (int(v) for v in rng.integers(6, 70, 2))
        seeds = rng.random((h, w)) < rng.uniform(0.01, 0.25)
        mask = ndi.binary_dilation(seeds, iterations=int(rng.integers(0, 4)))
        if t % 3 == 0:
            mask[:, 0] = True  # touching the image edge, like the chest wall
        if t % 4 == 0:
            mask[-1, :] = True
        yield rng, mask


@pytest.mark.parametrize("radius", [1, 3, 5])
def test_dilation_closing_opening_match_scipy(radius):
    for _, mask in _masks():
        structure = disk(radius)
        assert np.array_equal(
            morphology.dilation(mask, radius), ndi.binary_dilation(mask, structure=structure)
        )
        assert np.array_equal(
            morphology.closing(mask, radius), ndi.binary_closing(mask, structure=structure)
        )
        for border in (0, 1):
            expected = ndi.binary_opening(mask, structure=structure, border_value=border)
            assert np.array_equal(morphology.opening(mask, radius, border=border), expected)


def test_inside_distance_matches_the_full_transform():
    for _, mask in _masks():
        if mask.all():
            continue
        np.testing.assert_allclose(
            morphology.inside_distance(mask), ndi.distance_transform_edt(mask)
        )
    assert not morphology.inside_distance(np.zeros((5, 5), bool)).any()


def test_point_distances_match_the_full_transforms():
    for rng, mask in _masks():
        if mask.all() or not mask.any():
            continue
        r, c = int(rng.integers(0, mask.shape[0])), int(rng.integers(0, mask.shape[1]))
        limit = float(rng.uniform(1.0, 30.0))
        inside = ndi.distance_transform_edt(mask)[r, c]
        got = morphology.distance_to_outside(mask, r, c, limit)
        assert (got == pytest.approx(inside)) if inside <= limit else (got == np.inf)

        dist = ndi.distance_transform_edt(~mask)
        nearest = morphology.nearest_true(mask, r, c, limit)
        if dist[r, c] > limit:
            assert nearest is None
        else:  # ties may pick another pixel at the same distance
            assert nearest is not None and mask[nearest]
            assert np.hypot(nearest[0] - r, nearest[1] - c) == pytest.approx(dist[r, c])
