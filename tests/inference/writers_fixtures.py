"""A simulated breast written as DICOM, with hand-built predictions from the simulator's truth.

The writers' tests need ViewPrediction/ViewLocalization/StudyLesion with known answers and no
network: detections are the truth boxes mapped to canonical space, the duct probability is the
truth duct mask, the heatmap a blob per lesion, localization the truth values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ductai.data.canonical import to_canonical
from ductai.data.dicom_reader import read_galactogram
from ductai.data.labels import FINDINGS
from ductai.inference.types import (
    Detection,
    LesionLocation,
    StudyLesion,
    ViewLocalization,
    ViewPrediction,
)
from ductai.simulation.config import load_simulation_config
from ductai.simulation.dicom_writer import DicomIdentity, write_mg_dicom
from ductai.simulation.sample import simulate_breast

RENDER_SPACING_MM = 0.5  # original grid of the simulated DICOM (small and fast)
CANONICAL_SPACING_MM = 0.7  # != the original: the writers must really resample
MODEL = {"name": "tiny-test", "version": "0.0.1", "sha256": {"seg.pt": "ab" * 32}, "missing": []}


@dataclass
class SimulatedCase:
    paths: list[Path]
    truths: list[dict]  # SimulatedView.truth_dict per view (original grid)
    predictions: list[ViewPrediction]
    localizations: list[ViewLocalization]
    study_lesions: list[StudyLesion]
    laterality: str
    study_instance_uid: str


def _blob(shape, box) -> np.ndarray:
    """A Gaussian probability blob centred in a canonical box."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    sx, sy = max((box[2] - box[0]) / 2, 1.0), max((box[3] - box[1]) / 2, 1.0)
    return np.exp(-(((cols - cx) / sx) ** 2 + ((rows - cy) / sy) ** 2))


def simulated_case(root: Path, seed: int = 0, breast: int = 0) -> SimulatedCase:
    """Both views of one simulated breast, written to root/dicom; findings only (no mimics)."""
    config = load_simulation_config("default")
    views = simulate_breast(config, seed, breast, spacing_mm=RENDER_SPACING_MM)
    (root / "dicom").mkdir(parents=True, exist_ok=True)
    base = DicomIdentity.generate(patient_id=f"WRITERS-{seed}-{breast}", seed=str(seed))
    paths, truths, preds, locs = [], [], [], []
    lesion_ids: dict[int, int] = {}  # finding index -> lesion id (matched across views)
    study_views: dict[int, dict[str, int]] = {}
    for slot, view in enumerate(views):
        ids = DicomIdentity(
            patient_id=base.patient_id,
            patient_name=base.patient_name,
            study_instance_uid=base.study_instance_uid,
            series_instance_uid=base.series_instance_uid,
            sop_instance_uid=DicomIdentity.generate(
                base.patient_id, f"{seed}-{slot}"
            ).sop_instance_uid,
            accession_number=base.accession_number,
            instance_number=slot + 1,
        )
        path = write_mg_dicom(root / "dicom" / f"view{slot}.dcm", view.rendered, ids)
        truth = view.truth_dict(ids)
        image = read_galactogram(path)
        canonical, geometry = to_canonical(image, CANONICAL_SPACING_MM)
        duct = geometry.image_to_canonical(view.rendered.duct_mask, "nearest").astype(np.float32)
        detections, locations = [], []
        heat = np.zeros(geometry.canonical_shape, dtype=np.float32)
        for obj, raw in zip(truth["objects"], view.rendered.objects):
            if obj["label"] not in FINDINGS:
                continue
            box = geometry.boxes_to_canonical(np.array(obj["bbox_px"]))[0]
            index = len(detections)
            detections.append(Detection(box=box, score=0.9 - 0.1 * index, label=obj["label"]))
            heat = np.maximum(heat, 0.95 * _blob(heat.shape, box))
            centre = geometry.points_to_canonical(np.array(obj["center_px"]))[0]
            nipple = geometry.points_to_canonical(np.array(truth["nipple_px"]))[0]
            locations.append(
                LesionLocation(
                    distance_to_nipple_mm=obj["distance_to_nipple_mm"],
                    duct_path_length_mm=obj["duct_path_length_mm"],
                    branch_generation=obj["branch_generation"],
                    duct_path=[tuple(nipple), tuple(centre)],
                    side="medial" if view.rendered.view == "CC" else "superior",
                    offset_mm=5.0,
                )
            )
            finding = raw["finding"]
            lesion_ids.setdefault(finding, len(lesion_ids) + 1)
            study_views.setdefault(finding, {})[ids.sop_instance_uid] = index
        image.stored = image.stored[:1, :1]  # the contract: pixels may be dropped
        preds.append(
            ViewPrediction(
                image=image,
                geometry=geometry,
                canonical=canonical,
                duct_prob=duct,
                lesion_prob=heat,
                detections=detections,
                mimics=[],
                timings={"predict_s": 0.1},
                model=dict(MODEL),
            )
        )
        locs.append(
            ViewLocalization(
                nipple=tuple(geometry.points_to_canonical(np.array(truth["nipple_px"]))[0]),
                orifice=tuple(geometry.points_to_canonical(np.array(truth["orifice_px"]))[0]),
                duct={
                    "found": True,
                    "area_mm2": float(duct.sum()) * CANONICAL_SPACING_MM**2,
                    "branches": truth["duct"]["branches"],
                    "generations": truth["duct"]["generations"],
                    "total_length_mm": truth["duct"]["total_length_mm"],
                },
                lesions=locations,
                fill_flags=[],
                breast_depth_mm=80.0,
            )
        )
        paths.append(path)
        truths.append(truth)
    finding_truth = {}
    for truth, view in zip(truths, views):
        for obj, raw in zip(truth["objects"], view.rendered.objects):
            finding_truth[raw["finding"]] = obj
    study_lesions = [
        StudyLesion(
            id=lesion_id,
            views=study_views[finding],
            label=finding_truth[finding]["label"],
            score=0.9,
            clock=finding_truth[finding]["clock"],
            quadrant=finding_truth[finding]["quadrant"],
            depth=finding_truth[finding]["depth"],
        )
        for finding, lesion_id in lesion_ids.items()
    ]
    return SimulatedCase(
        paths,
        truths,
        preds,
        locs,
        study_lesions,
        views[0].rendered.laterality,
        base.study_instance_uid,
    )
