"""Simulated galactograms generated on the fly in canonical space: an endless training source.

Item ``i`` is view ``i % 2`` (CC, then ML/MLO) of breast ``i // 2`` of the seed, rendered
directly at the training spacing, so nothing touches the disk and every item is
reproducible. The sample goes through the same intensity rule and canonical flips as a DICOM
read from disk (``ductai.data``), so training and inference see one image space.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ductai.data.canonical import CanonicalGeometry, decide_flips
from ductai.data.intensity import normalize_intensity
from ductai.data.labels import CLASSES, MIMICS
from ductai.simulation.config import SimulationConfig, load_simulation_config
from ductai.simulation.sample import SimulatedView, simulate_breast


class SimulatedGalactograms(Dataset):
    """Map-style dataset of ``length`` simulated views at ``spacing_mm``.

    Each item is a dict (MONAI dictionary-transform friendly): ``image`` float32 [1, H, W] in
    [0, 1]; ``duct``, ``centerline`` uint8 [1, H, W]; ``instances`` int32 [1, H, W];
    ``boxes`` float32 [N, 4] (x0, y0, x1, y1 in canonical pixels); ``labels`` int64 [N]
    (index into ``ductai.data.labels.CLASSES``); ``is_mimic`` bool [N]; ``nipple`` float32
    [2]; ``meta`` with laterality, view, breast index and the canonical geometry. Mimics are
    included so detection can sample them as hard negatives. ``overrides`` (``key=value``)
    change a preset given by name or path (a ready ``SimulationConfig`` takes none).
    """

    def __init__(
        self,
        config: SimulationConfig | str = "default",
        spacing_mm: float = 0.3,
        length: int = 1000,
        seed: int = 0,
        transform=None,
        overrides: list[str] | None = None,
    ) -> None:
        if length < 1:
            raise ValueError(f"length must be at least 1, got {length}")
        if isinstance(config, str):
            config = load_simulation_config(config, overrides)
        elif overrides:
            raise ValueError("overrides apply to a preset name or path, not a SimulationConfig")
        self.config = config
        self.spacing_mm = float(spacing_mm)
        self.length = int(length)
        self.seed = int(seed)
        self.transform = transform

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        breast, slot = divmod(int(index), 2)
        (view,) = simulate_breast(
            self.config, self.seed, breast, spacing_mm=self.spacing_mm, slots=(slot,)
        )
        sample = canonical_sample(view, self.spacing_mm)
        sample["meta"].update(seed=self.seed, breast=breast, index=int(index))
        return self.transform(sample) if self.transform is not None else sample


def canonical_sample(sim_view: SimulatedView, spacing_mm: float) -> dict[str, Any]:
    """One rendered view as a canonical-space training sample."""
    r = sim_view.rendered
    flip_cols, flip_rows, reason = decide_flips(r.laterality, r.view, r.patient_orientation)
    geometry = CanonicalGeometry.create(
        r.pixels.shape, r.pixel_spacing_mm, spacing_mm, flip_cols, flip_rows, reason
    )
    image = normalize_intensity(
        r.pixels,
        {
            "photometric": r.photometric,
            "bits_stored": r.bits_stored,
            "window_center": r.window_center,
            "window_width": r.window_width,
        },
    )
    boxes = np.array([o["bbox_px"] for o in r.objects], dtype=np.float32).reshape(-1, 4)
    labels = [sim_view.scene.findings[o["finding"]].label for o in r.objects]
    return {
        "image": geometry.image_to_canonical(image, "area")[None].astype(np.float32),
        "duct": geometry.image_to_canonical(r.duct_mask, "nearest")[None],
        "centerline": geometry.image_to_canonical(r.centerline, "nearest")[None],
        "instances": geometry.image_to_canonical(r.instances, "nearest")[None].astype(np.int32),
        "boxes": geometry.boxes_to_canonical(boxes).astype(np.float32),
        "labels": np.array([CLASSES.index(name) for name in labels], dtype=np.int64),
        "is_mimic": np.array([name in MIMICS for name in labels], dtype=bool),
        # burnt-in letters: no target, but hard negatives for the crop sampler
        "markers": geometry.boxes_to_canonical(
            np.array(r.marker_boxes, dtype=np.float32).reshape(-1, 4)
        ).astype(np.float32),
        "nipple": geometry.points_to_canonical(np.array([r.nipple_px]))[0].astype(np.float32),
        "meta": {
            "laterality": r.laterality,
            "view": r.view,
            "vendor": r.vendor,
            "geometry": geometry.to_dict(),
        },
    }
