"""X-ray physics of a mammogram: attenuation, exposure, quantum noise and detector blur.

Monoenergetic at an effective energy (20-30 keV covers Mo/Rh/W spectra); linear attenuation
coefficients are interpolated log-log between tabulated energies (values after Johns & Yaffe
1987 and NIST XCOM; iodine from its mass attenuation, so any concentration works).
"""

from __future__ import annotations

import cv2
import numpy as np

ENERGIES_KEV = np.array([15.0, 20.0, 25.0, 30.0, 33.0])  # all below iodine's K edge (33.17)
# linear attenuation coefficients, 1/cm
MU_PER_CM = {
    "adipose": [0.80, 0.456, 0.322, 0.264, 0.245],
    "glandular": [1.59, 0.802, 0.506, 0.378, 0.335],
    "skin": [1.72, 0.87, 0.55, 0.405, 0.36],
    "muscle": [1.77, 0.86, 0.545, 0.39, 0.345],
    "water": [1.64, 0.81, 0.51, 0.376, 0.33],
    "calcium": [63.0, 28.0, 15.2, 9.0, 7.0],  # hydroxyapatite, 3.0 g/cm3
    "metal": [570.0, 204.0, 107.0, 64.0, 49.0],  # stainless steel cannula
    "plastic": [1.54, 0.79, 0.50, 0.38, 0.34],  # PMMA / catheter tubing
    "air": [0.0016, 0.0009, 0.0006, 0.0004, 0.0004],
}
IODINE_MASS_ATTENUATION = [60.0, 25.5, 13.9, 8.5, 6.6]  # cm2/g, below the K edge


def _loglog(energy: float, values: list[float]) -> float:
    return float(np.exp(np.interp(np.log(energy), np.log(ENERGIES_KEV), np.log(values))))


def attenuation(material: str, energy_kev: float, iodine_mg_per_ml: float = 0.0) -> float:
    """Linear attenuation coefficient in 1/mm.

    ``iodine`` is the contrast solution: water plus ``iodine_mg_per_ml`` of iodine;
    ``soft_tissue`` (a papilloma) attenuates like glandular tissue.
    """
    if not 10.0 <= energy_kev <= 33.0:
        raise ValueError(f"effective energy {energy_kev} keV is outside 10-33 keV")
    if material == "iodine":
        mu = iodine_mg_per_ml / 1000.0 * _loglog(energy_kev, IODINE_MASS_ATTENUATION)
        return 0.1 * (mu + _loglog(energy_kev, MU_PER_CM["water"]))
    if material == "soft_tissue":
        material = "glandular"
    return 0.1 * _loglog(energy_kev, MU_PER_CM[material])


def excess_attenuation(material: str, energy_kev: float, iodine_mg_per_ml: float) -> float:
    """Attenuation of a material over the glandular tissue it replaces (1/mm)."""
    return attenuation(material, energy_kev, iodine_mg_per_ml) - attenuation(
        "glandular", energy_kev
    )


def expected_quanta(
    line_integral: np.ndarray, quanta_per_pixel_air: float, out: np.ndarray | None = None
) -> np.ndarray:
    """Beer-Lambert: expected absorbed quanta per pixel, float32."""
    out = np.negative(line_integral, out=out)
    np.exp(out, out=out)
    out *= np.float32(quanta_per_pixel_air)
    return out


def _gaussian(image: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px < 0.25:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigma_px, borderType=cv2.BORDER_REFLECT)


def smooth(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian low-pass; wide kernels run on a decimated copy (cost independent of sigma)."""
    if sigma_px <= 4.0:
        return _gaussian(image, sigma_px)
    factor = int(sigma_px // 2)
    small = cv2.resize(
        image,
        (max(image.shape[1] // factor, 1), max(image.shape[0] // factor, 1)),
        interpolation=cv2.INTER_AREA,
    )
    small = _gaussian(small, sigma_px / factor)
    return cv2.resize(small, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)


def detector_blur(quanta: np.ndarray, sigma_px: float, tail: float) -> np.ndarray:
    """PSF: a Gaussian core of ~1-2 px plus a weak wide tail (light spread, scatter)."""
    blurred = _gaussian(quanta, sigma_px)
    if tail > 0:
        wide = smooth(quanta, max(10.0 * sigma_px, 5.0))
        blurred = blurred * np.float32(1.0 - tail) + wide * np.float32(tail)
    return blurred


def add_noise(quanta: np.ndarray, rng: np.random.Generator, electronic_std: float) -> np.ndarray:
    """Quantum (Poisson, Gaussian approximation) plus electronic noise, in place."""
    noise = rng.standard_normal(quanta.shape, dtype=np.float32)
    std = np.maximum(quanta, 0.0) + np.float32(electronic_std**2)
    np.sqrt(std, out=std)
    noise *= std
    quanta += noise
    return quanta
