"""Preview pictures: the for-presentation image with its ground truth drawn in."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ductai.data.intensity import normalize_intensity

CLASS_COLORS = {
    "papilloma": (255, 64, 64),
    "cutoff": (255, 160, 0),
    "irregularity": (255, 0, 200),
    "ectasia": (160, 255, 0),
    "extravasation": (255, 255, 0),
    "air_bubble": (80, 160, 255),
    "calcification": (150, 150, 255),
}
DUCT_COLOR = (0, 220, 220)
NIPPLE_COLOR = (0, 255, 0)


def render_preview(rendered, truth: dict | None, max_height: int = 900) -> Image.Image:
    """RGB picture at most ``max_height`` tall: duct outline, boxes with class names, nipple.

    With ``truth=None`` the plain image, as a reader would see it.
    """
    display = normalize_intensity(
        rendered.pixels,
        {
            "photometric": rendered.photometric,
            "bits_stored": rendered.bits_stored,
            "window_center": rendered.window_center,
            "window_width": rendered.window_width,
        },
    )
    scale = min(1.0, max_height / display.shape[0])
    size = (max(1, round(display.shape[1] * scale)), max(1, round(display.shape[0] * scale)))
    grey = (cv2.resize(display, size, interpolation=cv2.INTER_AREA) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    font = ImageFont.load_default(size=max(10, round(14 * max_height / 900)))
    if truth is None:
        picture = Image.fromarray(rgb)
        ImageDraw.Draw(picture).text(
            (6, 4), f"{rendered.laterality}{rendered.view}", fill=(255, 255, 255), font=font
        )
        return picture
    duct = cv2.resize(rendered.duct_mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(duct, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(rgb, contours, -1, DUCT_COLOR, 1)
    picture = Image.fromarray(rgb)
    draw = ImageDraw.Draw(picture)
    for obj in truth["objects"]:
        x0, y0, x1, y1 = (v * scale for v in obj["bbox_px"])
        color = CLASS_COLORS.get(obj["label"], (255, 255, 255))
        pad = 2
        draw.rectangle([x0 - pad, y0 - pad, x1 + pad, y1 + pad], outline=color, width=2)
        text = obj["label"] if obj["is_mimic"] else f"{obj['label']} {obj['diameter_mm']:.0f}mm"
        draw.text((x1 + 4, y0 - 2), text, fill=color, font=font)
    nx, ny = (v * scale for v in truth["nipple_px"])
    draw.ellipse([nx - 4, ny - 4, nx + 4, ny + 4], outline=NIPPLE_COLOR, width=2)
    draw.text(
        (6, 4),
        f"{truth['laterality']}{truth['view']}  {rendered.vendor}",
        fill=(255, 255, 255),
        font=font,
    )
    return picture
