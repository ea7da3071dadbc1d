"""The stages after `predict` in bench_inference.py, so its total is end to end.

They are the very calls `ductai infer` makes (ductai.inference.stages): localization of the
view, the breast step (one view here), then every per-view output (report.json, PNGs, DICOM
SEG/SR/SC) and the breast's study_report.json and surgical map, each folder atomic.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ductai.inference import stages


class EndToEnd:
    def __init__(self) -> None:
        self.localization = None
        self.study = None

    def localize(self, prediction, out_dir: Path) -> None:
        self.localization = stages.localize_view(prediction)
        self.study = stages.localize_breast([prediction], [self.localization])

    def write(self, prediction, out_dir: Path) -> None:
        image = prediction.image
        folder = stages.study_folder(image.study_instance_uid, image.laterality)
        lesions = self.study.lesions
        stages.write_view(out_dir, prediction, self.localization, lesions, study_folder=folder)
        stages.write_breast(
            out_dir,
            image.study_instance_uid,
            image.laterality,
            [prediction],
            [self.localization],
            lesions,
            flags=self.study.fill_flags,
            notes=self.study.notes,
        )


def end_to_end_stages() -> dict[str, Callable]:
    steps = EndToEnd()
    return {"localize": steps.localize, "write": steps.write}
