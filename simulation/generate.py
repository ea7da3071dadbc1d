"""Write a simulated study set to disk: DICOM, label images, truth JSON, previews, datalist."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from ductai import __version__
from ductai.data.atomic import atomic_write, atomic_write_text
from ductai.simulation.config import SimulationConfig, load_simulation_config
from ductai.simulation.identity import study_identities
from ductai.simulation.preview import render_preview
from ductai.simulation.sample import SimulatedView, simulate_breast

__all__ = ["DatasetSummary", "generate_dataset", "load_simulation_config"]

log = logging.getLogger(__name__)


@dataclass
class DatasetSummary:
    out_dir: Path
    datalist: Path
    images: list[Path] = field(default_factory=list)
    previews: list[Path] = field(default_factory=list)
    n_breasts: int = 0
    n_lesions: int = 0
    n_mimics: int = 0
    lesions_by_class: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        classes = ", ".join(f"{k} {v}" for k, v in sorted(self.lesions_by_class.items())) or "none"
        return "\n".join(
            [
                f"Simulated {self.n_breasts} breasts, {len(self.images)} views "
                f"({self.n_lesions} lesions: {classes}; {self.n_mimics} mimics).",
                f"  DICOM files : {self.out_dir / 'images'}",
                f"  ground truth: {self.out_dir / 'labels'}",
                f"  previews    : {self.out_dir / 'previews'}",
                f"  datalist    : {self.datalist}",
            ]
        )


def generate_dataset(
    out_dir: str | Path,
    n_breasts: int,
    seed: int,
    config: SimulationConfig | None = None,
    workers: int = 1,
) -> DatasetSummary:
    """Simulate ``n_breasts`` breasts (two views each) into ``out_dir``; reproducible from ``seed``."""
    from ductai.data.datalist import write_simulation_datalist

    if n_breasts < 1:
        raise ValueError(f"--n must be at least 1, got {n_breasts}")
    config = config or load_simulation_config("default")
    out_dir = Path(out_dir)
    for sub in ("images", "labels", "previews"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out_dir / "simulation.yaml",
        yaml.safe_dump(
            {
                "seed": seed,
                "n_breasts": n_breasts,
                "ductai_version": __version__,
                "config": config.model_dump(mode="json"),
            },
            sort_keys=False,
        ),
    )
    summary = DatasetSummary(out_dir=out_dir, datalist=out_dir / "datalist.json")
    jobs = [(out_dir, config, seed, index) for index in range(n_breasts)]
    for written in _map(_write_breast, jobs, workers):
        summary.n_breasts += 1
        for image_path, preview_path, objects in written:
            summary.images.append(image_path)
            summary.previews.append(preview_path)
            for obj in objects:
                if obj["is_mimic"]:
                    summary.n_mimics += 1
                else:
                    summary.n_lesions += 1
                    summary.lesions_by_class[obj["label"]] = (
                        summary.lesions_by_class.get(obj["label"], 0) + 1
                    )
    summary.datalist = write_simulation_datalist(out_dir, seed=seed)
    # Lesions are counted once per view above; report them per breast.
    summary.n_lesions //= 2
    summary.n_mimics //= 2
    summary.lesions_by_class = {k: v // 2 for k, v in summary.lesions_by_class.items()}
    return summary


def _map(func, jobs: list, workers: int) -> Iterator:
    if workers <= 1:
        yield from map(func, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(func, jobs)


def _write_breast(job) -> list[tuple[Path, Path, list[dict]]]:
    out_dir, config, seed, index = job
    identities = study_identities(seed, index)
    views = simulate_breast(config, seed, index)
    written = []
    for sim_view in views:
        identity = identities.for_view(sim_view.rendered.laterality, sim_view.rendered.view)
        written.append(_write_view(out_dir, sim_view, identity))
    return written


def _write_view(out_dir: Path, sim_view: SimulatedView, identity) -> tuple[Path, Path, list]:
    from ductai.simulation.dicom_writer import write_mg_dicom

    rendered = sim_view.rendered
    image_id = identity.image_id
    image_path = out_dir / "images" / f"{image_id}.dcm"
    labels = out_dir / "labels"
    _atomic_write_png(labels / f"{image_id}_duct.png", rendered.duct_mask.astype(np.uint8))
    _atomic_write_png(labels / f"{image_id}_centerline.png", rendered.centerline.astype(np.uint8))
    _atomic_write_png(labels / f"{image_id}_instances.png", rendered.instances.astype(np.uint16))
    truth = sim_view.truth_dict(identity)
    atomic_write_text(labels / f"{image_id}.json", json.dumps(truth, indent=1))
    preview_path = out_dir / "previews" / f"{image_id}.png"
    _atomic_save_image(render_preview(rendered, truth), preview_path)
    # The DICOM goes last: a datalist is built only from views whose image exists.
    atomic_write(image_path, lambda tmp: write_mg_dicom(tmp, rendered, identity))
    return image_path, preview_path, truth["objects"]


def _atomic_write_png(path: Path, array: np.ndarray) -> None:
    _atomic_save_image(Image.fromarray(array), path)


def _atomic_save_image(image: Image.Image, path: Path) -> None:
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
