"""normalize_intensity with plain parameters (the simulator's path) and with a Dataset."""

from __future__ import annotations

import numpy as np
import pytest

from ductai.data.intensity import IntensityParams, normalize_intensity, outline_intensity


def test_linear_window_with_plain_parameters():
    stored = np.array([[0, 1000, 1999, 2000, 4095]], dtype=np.uint16)
    out = normalize_intensity(
        stored, {"window_center": 1000.5, "window_width": 2000, "bits_stored": 12}, "MONOCHROME2"
    )
    np.testing.assert_allclose(out, [[0.0, 0.5, 1.0, 1.0, 1.0]], atol=1e-3)


def test_monochrome1_is_inverted_and_photometric_argument_overrides():
    stored = np.array([[0, 4095]], dtype=np.uint16)
    params = IntensityParams(window_center=2048, window_width=4096, bits_stored=12)
    np.testing.assert_allclose(normalize_intensity(stored, params), [[0, 1]], atol=1e-3)
    np.testing.assert_allclose(
        normalize_intensity(stored, params, "MONOCHROME1"), [[1, 0]], atol=1e-3
    )


def test_rescale_then_window():
    stored = np.array([[0, 100, 200]], dtype=np.uint16)
    params = {
        "rescale_slope": 10.0,
        "rescale_intercept": -1000.0,
        "window_center": 0.5,
        "window_width": 2001,
    }
    np.testing.assert_allclose(normalize_intensity(stored, params), [[0.0, 0.5, 1.0]], atol=1e-3)


def test_sigmoid_window_stays_in_range():
    stored = np.linspace(0, 4095, 50).astype(np.uint16)[None]
    params = {"window_center": 2048, "window_width": 1000, "voi_lut_function": "SIGMOID"}
    out = normalize_intensity(stored, params)
    assert out[0, 0] < 0.01 and out[0, -1] > 0.99 and np.all(np.diff(out[0]) >= 0)


def test_percentile_window_ignores_the_air():
    rng = np.random.default_rng(0)
    image = np.full((100, 100), 50.0)
    image[:, :60] = rng.normal(1000, 100, size=(100, 60))
    out = normalize_intensity(image.astype(np.uint16), {"bits_stored": 16})
    assert np.median(out[:, :60]) == pytest.approx(0.5, abs=0.1)
    assert out[:, 60:].max() == 0.0


def test_colour_photometric_is_refused():
    with pytest.raises(ValueError, match="MONOCHROME"):
        normalize_intensity(np.zeros((2, 2)), {}, "RGB")


def test_large_windowed_images_use_a_table_with_the_same_result():
    from ductai.data.intensity import IntensityParams, normalize_intensity

    rng = np.random.default_rng(0)
    image = rng.integers(0, 4096, size=(600, 500)).astype(np.uint16)  # above the table size
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        params = IntensityParams(
            photometric=photometric, bits_stored=12, window_center=2000.0, window_width=3000.0
        )
        whole = normalize_intensity(image, params)
        rows = [normalize_intensity(image[i : i + 100], params) for i in range(0, 600, 100)]
        assert whole.dtype == np.float32
        np.testing.assert_array_equal(whole, np.concatenate(rows))


def test_outline_keeps_what_a_narrow_window_clips_to_air():
    # MONOCHROME1 as the simulator's hard preset writes it: air saturated at 7605, fat just
    # below, dense tissue and contrast lower; the window clips fat to the air level
    stored = np.array([[7605, 7470, 6200, 4000, 1900]], dtype=np.uint16)
    params = IntensityParams(
        photometric="MONOCHROME1", window_center=4018, window_width=4254, bits_stored=13
    )
    shown = normalize_intensity(stored, params)
    assert shown[0, 0] == shown[0, 1] == shown[0, 2] == 0.0  # fat looks like air
    outline = outline_intensity(stored, params)
    np.testing.assert_allclose(outline[0, [0, -1]], [0.0, 1.0])
    assert np.all(np.diff(outline[0]) > 0)  # every tissue stays above air, in order
