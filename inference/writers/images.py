"""PNG outputs: duct mask, heatmap, overlay (per view) and the surgical map (per breast).

Encodings (also in report.schema.json):
* duct_mask.png: 8-bit grey, the DICOM's rows x columns, 255 = duct, 0 = not.
* heatmap.png: 8-bit grey, the DICOM's size, lesion probability p stored as round(255 p):
  lossless data a program can threshold. heatmap_color.png: the same map coloured (inferno)
  for people; a colour map cannot be read back into numbers reliably, hence two files. It is
  stored as an 8-bit palette PNG whose 256 entries are the colour map: every viewer shows the
  same RGB as a true-colour file, written in a fifth of the time (no per-row filter search
  over three channels) and a third of the size.
* overlay.png: the image as hung (original orientation), downsampled to at most
  OVERLAY_MAX_SIDE pixels, with the duct outline, the heatmap, numbered marks and a legend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ductai.inference.types import ViewPrediction
from ductai.inference.writers.grid import DUCT_THRESHOLD

__all__ = [
    "OVERLAY_MAX_SIDE",
    "colour_heatmap",
    "heatmap_palette",
    "overlay_image",
    "surgical_map_image",
    "write_palette_png",
    "write_png",
]

OVERLAY_MAX_SIDE = 1200
OVERLAY_MIN_SIDE = 900  # coarse canonical grids are enlarged so marks and text stay legible
DUCT_COLOUR = (0, 220, 255)
MARK_COLOUR = (255, 230, 0)
FLAG_COLOUR = (255, 80, 80)


def write_png(path: str | Path, array: np.ndarray) -> Path:
    # Level 1: a full-field mask or heatmap compresses nearly as well at a third of the time.
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG", compress_level=1)
    return Path(path)


def write_palette_png(path: str | Path, indices: np.ndarray, palette: np.ndarray) -> Path:
    """uint8 ``indices`` shown through ``palette`` ((256, 3) uint8 RGB) as a palette PNG."""
    indices = np.ascontiguousarray(indices, dtype=np.uint8)
    image = Image.frombytes("P", (indices.shape[1], indices.shape[0]), indices.tobytes())
    image.putpalette(np.asarray(palette, dtype=np.uint8).ravel().tolist())
    image.save(path, format="PNG", compress_level=1)
    return Path(path)


def heatmap_palette() -> np.ndarray:
    """(256, 3) uint8 RGB: the colour of each stored probability value (inferno)."""
    return colour_heatmap(np.arange(256, dtype=np.uint8)[None, :])[0]


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def colour_heatmap(prob_u8: np.ndarray) -> np.ndarray:
    """uint8 probability -> RGB uint8 (inferno: dark = 0, yellow = 1)."""
    bgr = cv2.applyColorMap(prob_u8, cv2.COLORMAP_INFERNO)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _as_hung(prediction: ViewPrediction, array: np.ndarray) -> np.ndarray:
    """Undo the canonical flips: the overlay shows the image as the reading station hangs it."""
    g = prediction.geometry
    if g.flip_cols:
        array = array[:, ::-1]
    if g.flip_rows:
        array = array[::-1, :]
    return np.ascontiguousarray(array)


def _display_shape(prediction: ViewPrediction) -> tuple[int, int]:
    h, w = prediction.canonical.shape  # isotropic, so the aspect ratio is the breast's in mm
    scale = min(OVERLAY_MAX_SIDE, max(OVERLAY_MIN_SIDE, max(h, w))) / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def overlay_image(prediction: ViewPrediction, report: dict[str, Any]) -> np.ndarray:
    """RGB uint8 picture of one view, readable at a glance; marks numbered as in the report."""
    dh, dw = _display_shape(prediction)
    grey = cv2.resize(_as_hung(prediction, prediction.canonical), (dw, dh), cv2.INTER_AREA)
    rgb = np.repeat((np.clip(grey, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)

    prob = cv2.resize(_as_hung(prediction, prediction.lesion_prob), (dw, dh), cv2.INTER_LINEAR)
    prob = np.clip(prob, 0.0, 1.0)
    alpha = (0.6 * np.clip((prob - 0.1) / 0.9, 0.0, 1.0))[..., None]  # faint below 0.1: no fog
    heat = colour_heatmap((prob * 255).astype(np.uint8)).astype(np.float32)
    rgb = (rgb * (1 - alpha) + heat * alpha).astype(np.uint8)

    if prediction.duct_prob is not None:
        duct = (_as_hung(prediction, prediction.duct_prob) >= DUCT_THRESHOLD).astype(np.uint8)
        duct = cv2.resize(duct, (dw, dh), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(duct, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(rgb, contours, -1, DUCT_COLOUR, thickness=1, lineType=cv2.LINE_AA)

    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    sx = dw / report["image"]["columns"]
    sy = dh / report["image"]["rows"]
    size = max(12, dw // 60)
    font = _font(size)
    if report.get("nipple_px"):
        nx, ny = report["nipple_px"][0] * sx, report["nipple_px"][1] * sy
        r = max(4, size // 2)
        draw.ellipse([nx - r, ny - r, nx + r, ny + r], outline=(0, 255, 0), width=2)
        draw.text((nx + r + 2, ny - r), "N", fill=(0, 255, 0), font=font)
    taken: list[tuple[float, float, float, float]] = []
    for lesion in report["lesions"]:
        x0, y0, x1, y1 = lesion["bbox_px"]
        box = (x0 * sx - 3, y0 * sy - 3, x1 * sx + 3, y1 * sy + 3)
        draw.rectangle(box, outline=MARK_COLOUR, width=2)
        taken.append(box)
    for lesion in report["lesions"]:
        x0, y0, x1, y1 = lesion["bbox_px"]
        box = (x0 * sx - 3, y0 * sy - 3, x1 * sx + 3, y1 * sy + 3)
        text = f"{lesion['id']} {lesion['label']} {lesion['score']:.2f}"
        label = _place_label(draw, text, font, box, taken, (dw, dh))
        taken.append(label)
        draw.rectangle(label, fill=(0, 0, 0))
        draw.text(label[:2], text, fill=MARK_COLOUR, font=font)
    return _with_legend(np.asarray(img), report, size)


def _place_label(draw, text, font, box, taken, shape) -> tuple[float, float, float, float]:
    """A label rectangle beside its box that covers no other mark or label (else the first)."""
    w = draw.textlength(text, font=font) + 4
    h = font.size + 6
    candidates = [
        (box[2] + 4, box[1] - h + 4),
        (box[2] + 4, box[3] - 4),
        (box[0] - w - 4, box[1] - h + 4),
        (box[0] - w - 4, box[3] - 4),
    ]
    candidates += [(box[2] + 4, box[1] + k * h) for k in range(-6, 7)]
    rects = []
    for x, y in candidates:
        x = min(max(0.0, x), shape[0] - w)
        y = min(max(0.0, y), shape[1] - h)
        rect = (x, y, x + w, y + h)
        if not any(_overlap(rect, other) for other in taken):
            return rect
        rects.append(rect)
    return rects[0]


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _with_legend(rgb: np.ndarray, report: dict[str, Any], size: int) -> np.ndarray:
    img = report["image"]
    lines = [
        (
            f"{img['laterality']}{img['view']}  ductai {report.get('ductai_version', '')}  "
            f"model {report['model']['name']} {report['model']['version']}",
            (255, 255, 255),
        ),
        ("cyan: duct outline   heat: lesion probability", (220, 220, 220)),
        ("yellow: lesion number, label, score   green N: nipple", (220, 220, 220)),
        (
            f"{len(report['lesions'])} lesion(s) reported"
            if report["lesions"]
            else "no lesion reported",
            MARK_COLOUR,
        ),
    ]
    lines += [(f"! {m}", FLAG_COLOUR) for m in report["messages"][: len(report["flags"])]]
    font = _font(size)
    height = (size + 6) * len(lines) + 8
    legend = Image.new("RGB", (rgb.shape[1], height), (0, 0, 0))
    draw = ImageDraw.Draw(legend)
    for i, (text, colour) in enumerate(lines):
        draw.text((6, 4 + i * (size + 6)), text, fill=colour, font=font)
    return np.concatenate([rgb, np.asarray(legend)], axis=0)


def clock_hours(clock: str) -> float:
    """'10:30' -> 10.5 (12:00 -> 0)."""
    hours, minutes = clock.split(":")
    return (int(hours) % 12) + int(minutes) / 60


def surgical_map_image(
    laterality: str, lesions: Sequence[dict[str, Any]], title: str = "", size: int = 900
) -> np.ndarray:
    """RGB clock face of one breast, as the surgeon faces the patient (12 up, 3 to the right).

    Each lesion sits at its clock position at a radius equal to its distance from the nipple
    (rings every 10 mm); lesions without a clock position or distance are listed below.
    """
    side = {"R": "Right", "L": "Left"}.get(laterality, "Unknown")
    placed = [les for les in lesions if les.get("clock") and les.get("distance_to_nipple_mm")]
    far = max([les["distance_to_nipple_mm"] for les in placed] + [40.0])
    rings = math.ceil((far + 5) / 10)
    table = list(lesions)
    height = size + 40 + 26 * (len(table) + 2)
    img = Image.new("RGB", (size, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    big, small = _font(26), _font(18)
    cx, cy, radius = size / 2, size / 2 + 30, size / 2 - 80
    mm = radius / (rings * 10)
    draw.text((20, 10), title or f"{side} breast: surgical map", fill=(0, 0, 0), font=big)
    draw.text(
        (20, 44),
        "as seen facing the patient: 12:00 superior, 6:00 inferior",
        fill=(60, 60, 60),
        font=small,
    )
    for ring in range(1, rings + 1):
        r = ring * 10 * mm
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(190, 190, 190), width=1)
        draw.text((cx + 3, cy - r - 1), f"{ring} cm", fill=(140, 140, 140), font=_font(13))
    for hour in range(1, 13):
        angle = hour / 12 * 2 * math.pi
        x, y = cx + (radius + 28) * math.sin(angle), cy - (radius + 28) * math.cos(angle)
        draw.text((x, y), str(hour), fill=(0, 0, 0), font=big, anchor="mm")
        x1, y1 = cx + radius * math.sin(angle), cy - radius * math.cos(angle)
        draw.line([(cx, cy), (x1, y1)], fill=(225, 225, 225), width=1)
    # 3:00 is the patient's left: medial for the right breast, lateral for the left breast.
    right_side, left_side = ("medial", "lateral") if laterality == "R" else ("lateral", "medial")
    if laterality in ("R", "L"):
        draw.text((size - 10, cy + 30), right_side, fill=(0, 0, 160), font=small, anchor="rm")
        draw.text((10, cy + 30), left_side, fill=(0, 0, 160), font=small, anchor="lm")
    draw.ellipse([cx - 6, cy - 6, cx + 6, cy + 6], fill=(0, 0, 0))
    draw.text((cx + 8, cy + 8), "nipple", fill=(0, 0, 0), font=small)
    for les in placed:
        angle = clock_hours(les["clock"]) / 12 * 2 * math.pi
        r = les["distance_to_nipple_mm"] * mm
        x, y = cx + r * math.sin(angle), cy - r * math.cos(angle)
        draw.ellipse([x - 14, y - 14, x + 14, y + 14], fill=(220, 30, 30), outline=(0, 0, 0))
        draw.text((x, y), str(les["id"]), fill=(255, 255, 255), font=small, anchor="mm")
    y = size + 30
    for les in table:
        where = (
            f"{les['clock']}, {les['distance_to_nipple_mm']:.0f} mm from the nipple"
            if les in placed
            else "not placed: clock or distance unknown"
        )
        extra = ", ".join(str(les[k]) for k in ("quadrant", "depth") if les.get(k))
        path = les.get("duct_path_length_mm")
        text = (
            f"#{les['id']} {les['label']} ({les['score']:.2f}): {where}"
            + (f", duct path {path:.0f} mm" if path else "")
            + (f", {extra}" if extra else "")
        )
        draw.text((20, y), text, fill=(0, 0, 0), font=small)
        y += 26
    if not table:
        draw.text((20, y), "no lesion reported", fill=(0, 0, 0), font=small)
    return np.asarray(img)
