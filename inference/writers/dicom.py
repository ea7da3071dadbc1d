"""DICOM results beside the source images: Segmentation, measurement SR, Secondary Capture.

* SEG (highdicom): binary, segment 1 "duct" (the opacified lumen: contrast agent in the
  breast), segment 2 "lesion" (the ellipses inscribed in the reported boxes); one frame per
  segment on the source image's own pixel grid, referencing the source image.
* SR (highdicom TID 1500 Measurement Report in a Comprehensive 3D SR): one measurement group
  per lesion. The Mammography CAD SR (TID 4000) would fit mammography CAD marks too, but
  highdicom does not build it, viewers show TID 1500 far more widely, and TID 1500 carries
  everything needed: finding type, a SCOORD polyline of the box in image coordinates,
  probability, diameter, distance from the nipple, duct path length, and coded clock
  position, quadrant and depth (the same codes the CAD SR uses: CID 6018, CID 6020).
* SC (highdicom SCImage): the overlay picture, so a PACS without SEG/SR support shows it.

Each kind goes in its own new series of the source study (a series has one Modality: SEG,
SR, OT), numbered 9001-9003. UIDs are deterministic by default: derived from the source
UIDs, the output kind and the model identity, so re-running the same model on the same study
re-creates the same objects (a PACS updates them instead of piling up duplicates) while a new
model version gives new ones. `uids="random"` gives fresh UIDs every time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from ductai import __version__

__all__ = ["SERIES_NUMBERS", "DicomUids", "write_sc", "write_seg", "write_sr"]

MANUFACTURER = "ductai"
MODEL_NAME = "ductai galactography"
SERIES_NUMBERS = {"seg": 9001, "sr": 9002, "sc": 9003}
SERIES_DESCRIPTIONS = {
    "seg": "ductai ducts and lesions (SEG)",
    "sr": "ductai lesion report (SR)",
    "sc": "ductai overlay (SC)",
}
ALGORITHM_FAMILY = codes.DCM.ArtificialIntelligence

# Galactography findings: DCM CID 6055 codes where they exist, SNOMED CT otherwise.
FINDING_CODES = {
    "papilloma": codes.SCT.IntraductalPapilloma,
    "cutoff": codes.DCM.AbruptDuctTermination,
    "irregularity": codes.DCM.MultipleFillingDefect,
    "ectasia": codes.SCT.MammaryDuctEctasia,
    "extravasation": codes.DCM.Extravasation,
}
QUADRANT_CODES = {
    "UOQ": codes.SCT.UpperOuterQuadrantOfBreast,
    "UIQ": codes.SCT.UpperInnerQuadrantOfBreast,
    "LOQ": codes.SCT.LowerOuterQuadrantOfBreast,
    "LIQ": codes.SCT.LowerInnerQuadrantOfBreast,
    "central": codes.SCT.CentralRegionOfBreast,
}
DEPTH_CODES = {
    "anterior": codes.SCT.Anterior,
    "middle": hd.sr.CodedConcept("255562008", "SCT", "Middle"),
    "posterior": codes.SCT.Posterior,
}
LATERALITY_CODES = {"R": codes.SCT.Right, "L": codes.SCT.Left}


def clock_code(clock: str) -> hd.sr.CodedConcept:
    """The SCT 'N o'clock position' code; half hours (coded positions are whole) round up."""
    hours, minutes = (int(v) for v in clock.split(":"))
    hour = (hours + (1 if minutes >= 30 else 0) - 1) % 12 + 1
    code = getattr(codes.SCT, f"_{hour}OClockPosition")
    return hd.sr.CodedConcept(code.value, code.scheme_designator, code.meaning)


class DicomUids:
    """Series and instance UIDs of one model's results for one source image."""

    def __init__(self, source: Dataset, model: dict, mode: str = "deterministic") -> None:
        if mode not in ("deterministic", "random"):
            raise ValueError(f"uids must be 'deterministic' or 'random', not {mode!r}")
        self.source = source
        self.mode = mode
        sha = model.get("sha256") or {}
        self.model_key = json.dumps(
            [model.get("name"), model.get("version"), sha, __version__],
            sort_keys=True,
            default=str,
        )

    def _uid(self, *parts: str) -> str:
        if self.mode == "random":
            return generate_uid()
        return generate_uid(entropy_srcs=["ductai", self.model_key, *parts])

    def series(self, kind: str) -> str:
        # One series per study and kind: every view's SEG of this run shares it.
        return self._uid(str(self.source.StudyInstanceUID), kind, "series")

    def instance(self, kind: str) -> str:
        return self._uid(str(self.source.SOPInstanceUID), kind, "instance")


def _common(source: Dataset, uids: DicomUids, kind: str) -> dict[str, Any]:
    return {
        "series_instance_uid": uids.series(kind),
        "series_number": SERIES_NUMBERS[kind],
        "sop_instance_uid": uids.instance(kind),
        "instance_number": int(source.get("InstanceNumber", 1) or 1),
        "manufacturer": MANUFACTURER,
    }


def _finish(dataset: Dataset, source: Dataset, kind: str, path: Path) -> Path:
    dataset.SeriesDescription = SERIES_DESCRIPTIONS[kind]
    dataset.SoftwareVersions = __version__
    if "ManufacturerModelName" not in dataset:
        dataset.ManufacturerModelName = MODEL_NAME
    for keyword in ("AccessionNumber", "StudyID", "StudyDescription"):
        if keyword in source and keyword not in dataset:
            setattr(dataset, keyword, source.data_element(keyword).value)
    dataset.save_as(path, enforce_file_format=True)
    return path


def write_seg(
    path: str | Path,
    source: Dataset,
    duct_mask: np.ndarray,
    lesion_mask: np.ndarray,
    model: dict,
    uids: DicomUids,
) -> Path:
    """Binary SEG of the duct and lesion masks (original grid, nonzero = inside)."""
    rows, cols = int(source.Rows), int(source.Columns)
    if duct_mask.shape != (rows, cols) or lesion_mask.shape != (rows, cols):
        raise ValueError(f"masks must be {rows}x{cols} like the source image")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=str(model.get("name") or "ductai"),
        version=str(model.get("version") or __version__),
        family=ALGORITHM_FAMILY,
    )
    region = hd.sr.CodedConcept(
        codes.SCT.Breast.value, codes.SCT.Breast.scheme_designator, codes.SCT.Breast.meaning
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=1,
            segment_label="duct",
            segmented_property_category=codes.SCT.Substance,
            segmented_property_type=codes.SCT.ContrastAgent,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[region],
        ),
        hd.seg.SegmentDescription(
            segment_number=2,
            segment_label="lesion",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[region],
        ),
    ]
    # (1, rows, cols, 2) as a view of two stacked planes: highdicom sums over the segment axis
    # to test for overlap, 4.5x faster when each segment is one contiguous plane
    pixels = np.stack([duct_mask > 0, lesion_mask > 0])[None].transpose(0, 2, 3, 1)
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        manufacturer_model_name=MODEL_NAME,
        software_versions=__version__,
        device_serial_number="none",
        omit_empty_frames=False,  # both segments always present: readers find them by number
        content_label="DUCTAI",
        content_description="ductai duct and lesion segmentation",
        **_common(source, uids, "seg"),
    )
    # General Image needs PatientOrientation (Type 2C) when there is no plane orientation,
    # as for a projection mammogram; the SEG shares the source's grid, so its orientation too.
    seg.PatientOrientation = source.get("PatientOrientation", "")
    return _finish(seg, source, "seg", Path(path))


def _summary_group(
    source: Dataset, laterality: str, found: bool
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """Image-level group: 'with findings' or 'without findings' (the CAD SR's summary codes),
    so an SR with no lesion still says the image was read and nothing was found."""
    summary = (
        codes.DCM.AllAlgorithmsSucceededWithFindings
        if found
        else codes.DCM.AllAlgorithmsSucceededWithoutFindings
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            identifier="ductai image summary",
            uid=generate_uid(entropy_srcs=[str(source.SOPInstanceUID), "summary"]),
        ),
        finding_sites=_sites(laterality),
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=codes.DCM.CADProcessingAndFindingsSummary, value=summary
            )
        ],
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(
                referenced_sop_class_uid=source.SOPClassUID,
                referenced_sop_instance_uid=source.SOPInstanceUID,
            )
        ],
    )


def _sites(laterality: str) -> list[hd.sr.FindingSite] | None:
    if laterality not in LATERALITY_CODES:
        return None
    return [
        hd.sr.FindingSite(
            anatomic_location=codes.SCT.Breast, laterality=LATERALITY_CODES[laterality]
        )
    ]


def _lesion_group(
    lesion: dict[str, Any], source: Dataset, laterality: str
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    x0, y0, x1, y1 = lesion["bbox_px"]
    # SCOORD image coordinates share our continuous convention (0,0 = corner of first pixel).
    polyline = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=float)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=polyline,
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=source.SOPClassUID,
            referenced_sop_instance_uid=source.SOPInstanceUID,
        ),
    )
    mm = codes.UCUM.Millimeter
    measurements = [
        hd.sr.Measurement(
            name=codes.DCM.Probability, value=float(lesion["score"]), unit=codes.UCUM.NoUnits
        ),
    ]
    for key, name in (
        ("diameter_mm", codes.SCT.Diameter),
        ("distance_to_nipple_mm", codes.DCM.DistanceFromNipple),
        ("duct_path_length_mm", codes.DCM.PathLength),
    ):
        if lesion.get(key) is not None:
            measurements.append(hd.sr.Measurement(name=name, value=float(lesion[key]), unit=mm))
    evaluations = []
    if lesion.get("clock"):
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                name=codes.DCM.ClockfaceOrRegion, value=clock_code(lesion["clock"])
            )
        )
    if lesion.get("quadrant") in QUADRANT_CODES:
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                name=codes.DCM.QuadrantLocation, value=QUADRANT_CODES[lesion["quadrant"]]
            )
        )
    if lesion.get("depth") in DEPTH_CODES:
        evaluations.append(
            hd.sr.QualitativeEvaluation(name=codes.SCT.Depth, value=DEPTH_CODES[lesion["depth"]])
        )
    clock = f", {lesion['clock']} o'clock" if lesion.get("clock") else ""
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            identifier=f"Lesion {lesion['id']}: {lesion['label']}{clock}"[:64],
            uid=generate_uid(
                entropy_srcs=[str(source.SOPInstanceUID), "lesion", str(lesion["id"])]
            ),
        ),
        referenced_region=region,
        finding_type=FINDING_CODES[lesion["label"]],
        finding_sites=_sites(laterality),
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
    )


def write_sr(
    path: str | Path,
    source: Dataset,
    lesions: Sequence[dict[str, Any]],
    model: dict,
    uids: DicomUids,
) -> Path:
    """TID 1500 measurement report: one Planar ROI group per lesion (report.json values)."""
    laterality = str(source.get("ImageLaterality", ""))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["ductai", uids.model_key]),
            name=str(model.get("name") or "ductai"),
            manufacturer_name=MANUFACTURER,
            model_name=f"{model.get('name', '')} {model.get('version', '')}".strip()[:64]
            or MODEL_NAME,
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.MammaryDuctogram,
        imaging_measurements=[
            _summary_group(source, laterality, bool(lesions)),
            *(_lesion_group(les, source, laterality) for les in lesions),
        ],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source],
        content=report,
        is_complete=True,
        is_final=False,  # machine output, not verified by a reader
        is_verified=False,
        **_common(source, uids, "sr"),
    )
    return _finish(sr, source, "sr", Path(path))


def write_sc(path: str | Path, source: Dataset, overlay_rgb: np.ndarray, uids: DicomUids) -> Path:
    """Secondary Capture of the overlay picture (RGB, burned-in marks and legend)."""
    orientation = source.get("PatientOrientation")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.ascontiguousarray(overlay_rgb, dtype=np.uint8),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        patient_orientation=tuple(orientation) if orientation else ("", ""),
        laterality=str(source.get("ImageLaterality", "")) or None,
        **_common(source, uids, "sc"),
    )
    sc.BurnedInAnnotation = "YES"  # marks, scores and legend are part of the pixels
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = "ductai overlay: duct outline, lesion heatmap and marks"
    return _finish(sc, source, "sc", Path(path))
