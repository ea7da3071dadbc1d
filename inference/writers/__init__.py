"""Writers: report.json, PNGs and DICOM SEG/SR/SC per view; study_report.json and the
surgical map per breast. Results come in canonical space (inference/types.py) and are mapped
to the original DICOM pixel grid here (writers/grid.py)."""

from ductai.inference.writers.atomic import atomic_folder, safe_name, safe_uid
from ductai.inference.writers.report import build_report, build_study_report
from ductai.inference.writers.schema import load_schema, validate_report, validate_study_report
from ductai.inference.writers.study import study_folder_name, write_study_outputs
from ductai.inference.writers.view import FILES, view_folder, write_view_outputs

__all__ = [
    "FILES",
    "atomic_folder",
    "build_report",
    "build_study_report",
    "load_schema",
    "safe_name",
    "safe_uid",
    "study_folder_name",
    "validate_report",
    "validate_study_report",
    "view_folder",
    "write_study_outputs",
    "write_view_outputs",
]
