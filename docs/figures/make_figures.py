"""Regenerate the README figures from the simulator (run from the repository root).

    .venv/bin/python docs/figures/make_figures.py

simulated_pair.png: one breast, CC and ML/MLO as read, then with the ground truth drawn in.
simulated_grid.png: the realism check, plain CC/ML pairs from both presets.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ductai.simulation.config import load_simulation_config
from ductai.simulation.preview import render_preview
from ductai.simulation.sample import simulate_breast

HERE = Path(__file__).resolve().parent
SEED = 2026


def pair_picture(preset: str, index: int, height: int, with_truth: bool) -> Image.Image:
    config = load_simulation_config(preset)
    views = simulate_breast(config, SEED, index)
    pictures = [render_preview(v.rendered, None, max_height=height) for v in views]
    if with_truth:
        pictures += [render_preview(v.rendered, v.truth_dict(), max_height=height) for v in views]
    width = sum(p.width for p in pictures) + 4 * (len(pictures) - 1)
    pair = Image.new("RGB", (width, height))
    x = 0
    for picture in pictures:
        pair.paste(picture, (x, 0))
        x += picture.width + 4
    draw = ImageDraw.Draw(pair)
    draw.text(
        (6, height - 22),
        f"{preset} preset",
        fill=(255, 255, 255),
        font=ImageFont.load_default(size=14),
    )
    return pair


def grid(pairs: list[Image.Image], columns: int) -> Image.Image:
    rows = [pairs[i : i + columns] for i in range(0, len(pairs), columns)]
    width = max(sum(p.width for p in row) + 6 * (len(row) - 1) for row in rows)
    height = sum(max(p.height for p in row) for row in rows) + 6 * (len(rows) - 1)
    canvas = Image.new("RGB", (width, height), (40, 40, 40))
    y = 0
    for row in rows:
        x = 0
        for picture in row:
            canvas.paste(picture, (x, y))
            x += picture.width + 6
        y += max(p.height for p in row) + 6
    return canvas


def main() -> None:
    pair_picture("default", 4, 360, with_truth=True).save(
        HERE / "simulated_pair.png", optimize=True
    )
    # Breasts chosen to show a papilloma, extravasation, ectasia and the hard preset.
    chosen = [("default", 1), ("default", 6), ("default", 7), ("hard", 0), ("hard", 1), ("hard", 2)]
    pairs = [pair_picture(p, i, 360, with_truth=False) for p, i in chosen]
    grid(pairs, columns=3).save(HERE / "simulated_grid.png", optimize=True)


if __name__ == "__main__":
    main()
