"""Burnt-in markers: the radiopaque laterality and view letters ("L MLO") that every
mammogram carries, sometimes a plastic holder around them and a line of burnt-in text.

Lead letters stop the beam, so they show as saturated white (after presentation, before any
MONOCHROME1 inversion). They are placed where the technologist puts them: in the air beside
the breast, now and then over its edge. They carry no contrast and no finding; the nets must
learn to ignore them, and inference keeps findings on the breast (inference/crop.py).

Drawn on the stored orientation, so the text reads as it would on the detector.
"""

from __future__ import annotations

import cv2
import numpy as np

from .imaging_config import ImagingConfig, sample

FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX)
AIR_GAP_MM = 4.0  # a marker in the air keeps at least this far from the skin
EDGE_MM = 3.0  # and from the image border
TEXT_LINES = ("{kv} kV {mas} mAs", "{angle} deg", "{mm} mm {n} N")


def _text_image(text: str, height_px: float, font: int, thickness_frac: float) -> np.ndarray:
    """uint8 mask of ``text`` whose capital letters are about ``height_px`` tall."""
    scale = height_px / 22.0  # Hershey capitals are ~22 px tall at scale 1
    thickness = max(1, round(thickness_frac * height_px))
    (w, h), base = cv2.getTextSize(text, font, scale, thickness)
    pad = thickness + 1
    canvas = np.zeros((h + base + 2 * pad, w + 2 * pad), np.uint8)
    cv2.putText(canvas, text, (pad, pad + h), font, scale, 255, thickness, cv2.LINE_AA)
    return canvas


def _place(
    block: tuple[int, int],
    allowed: np.ndarray,
    rng: np.random.Generator,
    tries: int = 200,
) -> tuple[int, int] | None:
    """Top-left corner of a ``block`` (rows, cols) lying wholly in ``allowed``, or None."""
    bh, bw = block
    h, w = allowed.shape
    if bh >= h or bw >= w:
        return None
    # an integral image answers "is this window all allowed?" in O(1)
    integral = cv2.integral(allowed.astype(np.uint8))
    for _ in range(tries):
        r, c = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        inside = (
            integral[r + bh, c + bw] - integral[r, c + bw] - integral[r + bh, c] + integral[r, c]
        )
        if inside == bh * bw:
            return r, c
    return None


def burn_in_markers(
    pixels: np.ndarray,
    support: np.ndarray,
    spacing_mm: float,
    label: str,
    white: int,
    config: ImagingConfig,
    rng: np.random.Generator,
) -> list[list[float]]:
    """Burn ``label`` (e.g. "L MLO") and maybe a text line into ``pixels`` (uint, stored
    orientation, modified in place); ``support`` is the breast (bool, same grid), ``white``
    the saturated display value. Returns the boxes drawn ``[x0, y0, x1, y1]`` (none when no
    place fits)."""
    boxes: list[list[float]] = []
    if rng.random() >= config.marker_probability:
        return boxes
    h, w = pixels.shape
    edge = max(1, round(EDGE_MM / spacing_mm))
    gap = max(1, round(AIR_GAP_MM / spacing_mm))
    air = ~cv2.dilate(support.astype(np.uint8), np.ones((2 * gap + 1,) * 2, np.uint8)).astype(bool)
    air[:edge], air[-edge:], air[:, :edge], air[:, -edge:] = False, False, False, False
    over_tissue = rng.random() < config.marker_over_tissue_probability
    anywhere = np.zeros((h, w), bool)  # over the breast as well: inside the border only
    anywhere[edge:-edge, edge:-edge] = True

    font = FONTS[int(rng.integers(len(FONTS)))]
    text = label if rng.random() < 0.5 else label.replace(" ", "")
    letters = _text_image(
        text, sample(rng, config.marker_height_mm) / spacing_mm, font, rng.uniform(0.1, 0.2)
    )
    holder = rng.random() < config.marker_holder_probability
    if holder:  # a faint plastic block around the letters
        pad = round(rng.uniform(1.0, 3.0) / spacing_mm)
        letters = cv2.copyMakeBorder(letters, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    spot = _place(letters.shape, anywhere if over_tissue else air, rng)
    if spot is not None:
        lift = rng.uniform(0.05, 0.15) * white if holder else 0.0
        boxes.append(_burn(pixels, letters, spot, rng.uniform(0.9, 1.0) * white, white, lift))

    if rng.random() < config.marker_text_probability:
        template = TEXT_LINES[int(rng.integers(len(TEXT_LINES)))]
        line = template.format(
            kv=int(rng.integers(26, 34)),
            mas=int(rng.integers(40, 160)),
            angle=int(rng.integers(40, 61)),
            mm=int(rng.integers(30, 75)),
            n=int(rng.integers(60, 160)),
        )
        small = _text_image(
            line, rng.uniform(2.0, 4.0) / spacing_mm, cv2.FONT_HERSHEY_SIMPLEX, 0.12
        )
        spot = _place(small.shape, air, rng)
        if spot is not None:
            boxes.append(_burn(pixels, small, spot, rng.uniform(0.6, 1.0) * white, white))
    return boxes


def _burn(
    pixels: np.ndarray,
    glyphs: np.ndarray,
    spot: tuple[int, int],
    level: float,
    white: int,
    lift: float = 0.0,
) -> list[float]:
    """Blend the uint8 ``glyphs`` mask in at ``level`` with its top-left at ``spot`` (in
    place), the block first raised by ``lift`` (a holder); the box ``[x0, y0, x1, y1]``."""
    r, c = spot
    gh, gw = glyphs.shape
    window = pixels[r : r + gh, c : c + gw]
    base = window.astype(np.float32) + np.float32(lift)
    weight = glyphs.astype(np.float32) / 255.0
    blended = base * (1 - weight) + np.float32(level) * weight
    window[...] = np.clip(blended, 0, white).astype(pixels.dtype)
    return [float(c), float(r), float(c + gw), float(r + gh)]
