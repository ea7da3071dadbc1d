"""Attenuation, Beer-Lambert, noise and presentation processing."""

import itertools

import numpy as np
import pytest

from ductai.simulation import physics
from ductai.simulation.imaging_config import VendorLook
from ductai.simulation.presentation import Processing, present, tone_curve

TISSUES = ("adipose", "glandular", "skin", "muscle")


@pytest.mark.parametrize("material", [*TISSUES, "calcium", "metal", "plastic", "iodine"])
def test_attenuation_falls_with_energy(material):
    mus = [physics.attenuation(material, e, 300.0) for e in np.linspace(15, 33, 19)]
    assert all(a > b for a, b in itertools.pairwise(mus))


@pytest.mark.parametrize("energy", [20.0, 25.0, 30.0])
def test_iodine_far_more_attenuating_than_tissue(energy):
    iodine = physics.attenuation("iodine", energy, 300.0) * 10  # 1/cm
    for tissue in TISSUES:
        mu = physics.attenuation(tissue, energy) * 10
        assert 0.2 < mu < 0.95
        assert iodine > 4 * mu
    assert physics.attenuation("glandular", energy) > physics.attenuation("adipose", energy)
    assert physics.attenuation("calcium", energy) > physics.attenuation("glandular", energy)


def test_iodine_near_published_range_at_300_mg_per_ml():
    assert 2.5 < 10 * physics.attenuation("iodine", 30.0, 300.0) < 4.5
    assert 6.0 < 10 * physics.attenuation("iodine", 20.0, 300.0) < 9.0
    assert physics.excess_attenuation("iodine", 25.0, 0.0) < 0.01  # plain water ~ tissue


def test_beer_lambert_is_monotonic():
    integral = np.linspace(0, 8, 50, dtype=np.float32)
    quanta = physics.expected_quanta(integral, 1000.0)
    assert quanta[0] == pytest.approx(1000.0)
    assert np.all(np.diff(quanta) < 0)
    assert quanta[10] == pytest.approx(1000.0 * np.exp(-integral[10]), rel=1e-5)


def test_quantum_noise_variance_equals_mean():
    rng = np.random.default_rng(0)
    quanta = np.full((400, 400), 500.0, np.float32)
    noisy = physics.add_noise(quanta.copy(), rng, electronic_std=0.0)
    assert noisy.mean() == pytest.approx(500.0, rel=0.01)
    assert noisy.var() == pytest.approx(500.0, rel=0.05)


def test_detector_blur_keeps_signal_and_smooths():
    image = np.zeros((101, 101), np.float32)
    image[50, 50] = 1000.0
    blurred = physics.detector_blur(image, 1.5, 0.1)
    assert blurred.sum() == pytest.approx(1000.0, rel=0.02)
    assert blurred.max() < 200


@pytest.mark.parametrize("tone", ["sigmoid", "gamma", "log"])
def test_tone_curves_are_monotonic(tone):
    x = np.linspace(-0.5, 2.0, 100, dtype=np.float32)
    y = tone_curve(x, tone, 4.0 if tone != "gamma" else 0.9)
    assert np.all(np.diff(y) >= -1e-6)
    assert y.min() >= 0 and y.max() <= 1.0001


def test_presentation_air_dark_contrast_white():
    rng = np.random.default_rng(1)
    signal = np.zeros((300, 300), np.float32)
    breast = np.zeros((300, 300), np.uint8)
    breast[:, 100:] = 1
    signal[:, 100:] = 2.0 + 0.2 * rng.standard_normal((300, 200)).astype(np.float32)
    duct = np.zeros_like(breast)
    duct[140:160, 150:280] = 1
    signal[duct > 0] += 1.0
    look = VendorLook(name="test", pixel_spacing_mm=[0.1])
    proc = Processing.sample(look, rng)
    pixels, centre, width = present(signal, breast, duct, 0.3, proc, 12)
    assert pixels.dtype == np.uint16 and pixels.max() <= 4095
    air, tissue, contrast = (
        pixels[:, :90].mean(),
        pixels[:, 120:][duct[:, 120:] == 0].mean(),
        pixels[duct > 0].mean(),
    )
    assert air < 0.1 * 4095
    assert air < tissue < contrast
    assert 0 < centre < 4095 and width > 0
