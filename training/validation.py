"""What a task's ``evaluate`` returns, and how the trainer writes it as plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class Validation:
    metrics: dict[str, float] = field(default_factory=dict)  # keys without the "val/" prefix
    per_image: list[dict[str, Any]] = field(default_factory=list)
    # (image [1, H, W], prediction dict, truth dict) for the overlay grid
    overlays: list[tuple[torch.Tensor, dict, dict]] = field(default_factory=list)
    curves: dict[str, Any] | None = None  # detection: DetectionMetrics.curves()

    def plots(self, folder: Path) -> list[Path]:
        """Overlay grid, and FROC + PR curves for detection, as PNG files in ``folder``."""
        from ductai.training.plots import overlay_grid, plot_froc, plot_pr

        paths = []
        if self.overlays:
            images, preds, truths = zip(*self.overlays)
            paths.append(
                overlay_grid(
                    list(images),
                    list(preds),
                    list(truths),
                    folder / "val_overlays.png",
                    max_items=len(images),
                )
            )
        if self.curves is not None:
            paths.append(plot_froc(self.curves, folder / "froc.png"))
            paths.append(plot_pr(self.curves, folder / "pr.png"))
        return paths
