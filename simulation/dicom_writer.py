"""Write a rendered view as a Digital Mammography X-Ray Image - For Presentation DICOM file.

The file passes ``dciodvfy`` without errors: every mandatory module of the IOD is present
(Patient, General Study, General/DX/Mammography Series, General Equipment, General Image,
Image Pixel, Contrast/Bolus, DX Anatomy Imaged, DX Image, DX Detector, Mammography Image,
VOI LUT, Acquisition Context, SOP Common). Codes are SNOMED CT (SCT).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from ductai import __version__

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
VIEW_CODES = {  # SCT code, meaning
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
    "ML": ("399260004", "medial-lateral"),
}
BREAST_CODE = ("76752008", "Breast")
IODINATED_CONTRAST_CODE = ("96388005", "Nonionic iodinated contrast media")
DUCTOGRAM_CODE = ("18102001", "Mammary ductogram")


@dataclass(frozen=True)
class DicomIdentity:
    """Who and what the file belongs to; any object with these attributes works too."""

    patient_id: str
    patient_name: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    accession_number: str = ""
    study_date: str = "20260101"
    study_time: str = "100000"
    instance_number: int = 1
    image_id: str = ""

    @classmethod
    def generate(cls, patient_id: str = "DUCTAI-SIM-0", seed: str = "0") -> DicomIdentity:
        """Deterministic UIDs from ``seed`` (same seed, same identity)."""

        def uid(part: str) -> str:
            return generate_uid(entropy_srcs=["ductai", patient_id, seed, part])

        return cls(
            patient_id=patient_id,
            patient_name="SIMULATED^BREAST",
            study_instance_uid=uid("study"),
            series_instance_uid=uid("series"),
            sop_instance_uid=uid("image"),
            accession_number="SIM0001",
        )


def _code(value: str, meaning: str, scheme: str = "SCT") -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _ds_string(value: float) -> str:
    """A decimal string of at most 16 characters."""
    return f"{value:.10g}"[:16]


def build_dataset(view, ids) -> Dataset:
    """The full dataset (without file meta) of one rendered view."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = ids.sop_instance_uid
    ds.InstanceCreationDate = ids.study_date
    ds.InstanceCreationTime = ids.study_time
    # Patient
    ds.PatientName = ids.patient_name
    ds.PatientID = ids.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    # General Study
    ds.StudyInstanceUID = ids.study_instance_uid
    ds.StudyDate = ids.study_date
    ds.StudyTime = ids.study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = (ids.accession_number or "1")[:16]
    ds.AccessionNumber = ids.accession_number[:16]
    ds.StudyDescription = "Galactography (simulated)"
    ds.ProcedureCodeSequence = [_code(*DUCTOGRAM_CODE)]
    # General / DX / Mammography Series
    ds.Modality = "MG"
    ds.SeriesInstanceUID = ids.series_instance_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = f"{view.laterality}{view.view} galactogram"
    ds.BodyPartExamined = "BREAST"
    ds.PresentationIntentType = "FOR PRESENTATION"
    # General Equipment
    ds.Manufacturer = "ductai simulator"
    ds.ManufacturerModelName = f"simulated {view.vendor or 'detector'}"[:64]
    ds.SoftwareVersions = __version__
    ds.InstitutionName = "SIMULATED"
    # General Image
    ds.InstanceNumber = int(ids.instance_number)
    ds.PatientOrientation = list(view.patient_orientation)
    ds.ContentDate = ids.study_date
    ds.ContentTime = ids.study_time
    ds.AcquisitionDate = ids.study_date
    ds.AcquisitionTime = ids.study_time
    ds.ImageType = ["DERIVED", "PRIMARY", "", ""]
    ds.DerivationDescription = "Simulated by ductai from a 3D breast model"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.QualityControlImage = "NO"
    # Contrast/Bolus: iodinated contrast injected into one duct
    contrast = float(view.physics.get("contrast_mg_per_ml", 300.0))
    ds.ContrastBolusAgent = "Iodinated contrast"
    ds.ContrastBolusAgentSequence = [_code(*IODINATED_CONTRAST_CODE)]
    ds.ContrastBolusIngredient = "IODINE"
    ds.ContrastBolusIngredientConcentration = _ds_string(contrast)
    # DX Anatomy Imaged / Mammography Image
    ds.ImageLaterality = view.laterality
    ds.AnatomicRegionSequence = [_code(*BREAST_CODE)]
    view_item = _code(*VIEW_CODES[view.view])
    view_item.ViewModifierCodeSequence = []
    ds.ViewCodeSequence = [view_item]
    ds.ViewPosition = view.view
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.OrganExposed = "BREAST"
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    thickness = view.physics.get("compressed_thickness_mm")
    if thickness is not None:
        ds.BodyPartThickness = _ds_string(float(thickness))
    obliquity = float(view.physics.get("obliquity_deg", 0.0))
    if view.view != "CC":
        ds.PositionerPrimaryAngle = _ds_string(obliquity if view.laterality == "R" else -obliquity)
    # DX Detector: spacing at the detector and calibrated to the breast plane
    ds.DetectorType = "DIRECT"
    ds.ImagerPixelSpacing = [_ds_string(v) for v in view.imager_pixel_spacing_mm]
    ds.PixelSpacing = [_ds_string(v) for v in view.pixel_spacing_mm]
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.PixelSpacingCalibrationDescription = "Magnification-corrected to the breast midplane"
    ds.EstimatedRadiographicMagnificationFactor = _ds_string(view.magnification)
    # a 25-35 kVp spectrum after the breast has a mean energy of roughly kVp - 5 keV
    ds.KVP = _ds_string(round(float(view.physics.get("kvp_effective_kev", 25.0)) + 5.0, 1))
    # DX Image / Image Pixel
    pixels = np.ascontiguousarray(view.pixels, dtype=np.uint16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = view.photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = int(view.bits_stored)
    ds.HighBit = int(view.bits_stored) - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LOG"
    # MONOCHROME2: high values = strong attenuation = less X-ray intensity
    ds.PixelIntensityRelationshipSign = -1 if view.photometric == "MONOCHROME2" else 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY" if view.photometric == "MONOCHROME2" else "INVERSE"
    # VOI LUT
    ds.WindowCenter = _ds_string(view.window_center)
    ds.WindowWidth = _ds_string(view.window_width)
    ds.WindowCenterWidthExplanation = "SIMULATED"
    ds.VOILUTFunction = "LINEAR"
    # Acquisition Context
    ds.AcquisitionContextSequence = []
    ds.PixelData = pixels.tobytes()
    return ds


def write_mg_dicom(path: str | Path, view, ids) -> Path:
    """Write ``view`` (a RenderedView) as explicit VR little endian MG For Presentation."""
    ds = build_dataset(view, ids)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = ids.sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"DUCTAI_{__version__}"[:16]
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return Path(path)
