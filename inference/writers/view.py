"""All outputs of one view, written atomically into DIR/<SOPInstanceUID>/."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from ductai.inference.types import StudyLesion, ViewLocalization, ViewPrediction
from ductai.inference.writers.atomic import atomic_folder, safe_uid
from ductai.inference.writers.dicom import DicomUids, write_sc, write_seg, write_sr
from ductai.inference.writers.grid import duct_mask_px, lesion_mask_px, probability_px
from ductai.inference.writers.images import (
    heatmap_palette,
    overlay_image,
    write_palette_png,
    write_png,
)
from ductai.inference.writers.report import build_report
from ductai.inference.writers.schema import validate_report

__all__ = ["FILES", "view_folder", "write_view_outputs"]

log = logging.getLogger(__name__)

FILES = {
    "duct_mask": "duct_mask.png",
    "heatmap": "heatmap.png",
    "heatmap_color": "heatmap_color.png",
    "overlay": "overlay.png",
    "seg": "seg.dcm",
    "sr": "sr.dcm",
    "sc": "sc.dcm",
}


def view_folder(out_dir: str | Path, sop_instance_uid: str) -> Path:
    return Path(out_dir) / safe_uid(sop_instance_uid)


def write_view_outputs(
    out_dir: str | Path,
    prediction: ViewPrediction,
    localization: ViewLocalization | None,
    study_lesions: Sequence[StudyLesion] = (),
    source: Dataset | None = None,
    dicom: bool = True,
    uids: str = "deterministic",
    study_folder: str | None = None,
) -> Path:
    """Write report.json, PNGs and (with `dicom`) SEG/SR/SC; returns the view's folder.

    `source` is the source image's dataset (read from prediction.image.path when None; the
    pixels are not needed). A DICOM failure is reported in the report's flags, not raised:
    the JSON and PNG results stay useful without it.
    """
    start = time.perf_counter()
    geometry = prediction.geometry
    final = view_folder(out_dir, prediction.image.sop_instance_uid)
    outputs = {k: FILES[k] for k in ("duct_mask", "heatmap", "heatmap_color", "overlay")}
    if study_folder:
        outputs["study_report"] = f"../{study_folder}/study_report.json"
    with atomic_folder(final) as tmp:
        duct = duct_mask_px(geometry, prediction.duct_prob)
        write_png(tmp / FILES["duct_mask"], duct)
        prob = probability_px(geometry, prediction.lesion_prob)
        write_png(tmp / FILES["heatmap"], prob)
        write_palette_png(tmp / FILES["heatmap_color"], prob, heatmap_palette())
        del prob
        report = build_report(prediction, localization, study_lesions, outputs)
        write_png(tmp / FILES["overlay"], overlay_image(prediction, report))
        if dicom:
            written, problem = _write_dicom(tmp, prediction, source, duct, report, uids)
            report["outputs"].update(written)
            if problem:
                report["flags"].append("dicom_outputs_failed")
                report["messages"].append(problem)
        report["timings"]["write_s"] = round(time.perf_counter() - start, 4)
        validate_report(report)
        # The report goes last: its presence means the other files are complete.
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return final


def _write_dicom(tmp: Path, prediction, source, duct, report, uids) -> tuple[dict, str]:
    try:
        if source is None:
            source = pydicom.dcmread(prediction.image.path, stop_before_pixels=True)
        ids = DicomUids(source, prediction.model, uids)
        lesion = lesion_mask_px(duct.shape, [les["bbox_px"] for les in report["lesions"]])
        write_seg(tmp / FILES["seg"], source, duct, lesion, prediction.model, ids)
        write_sr(tmp / FILES["sr"], source, report["lesions"], prediction.model, ids)
        overlay = _read_rgb(tmp / FILES["overlay"])
        write_sc(tmp / FILES["sc"], source, overlay, ids)
    except Exception as exc:  # one bad source must not cost the JSON/PNG results
        log.warning("%s: DICOM outputs not written: %s", prediction.image.path, exc)
        for key in ("seg", "sr", "sc"):
            (tmp / FILES[key]).unlink(missing_ok=True)
        return {}, f"DICOM SEG/SR/SC not written: {type(exc).__name__}: {exc}"
    return {k: FILES[k] for k in ("seg", "sr", "sc")}, ""


def _read_rgb(path: Path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))
