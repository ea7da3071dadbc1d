"""A Predictor stand-in that "predicts" the simulator's truth, for pipeline-level tests.

The tiny test networks find nothing useful, so tests of the runner and the scorer that need
lesions (cross-view matching, clocks, scores that must come out perfect) use this instead:
findings at the truth boxes (score 0.9), the truth duct mask as duct probability. It is read
from `<images>/../labels/<stem>.json` and `<stem>_duct.png`, the layout of `ductai simulate`;
an image without truth gets an empty prediction.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ductai.data.canonical import to_canonical
from ductai.data.galactogram import Galactogram
from ductai.data.labels import FINDINGS
from ductai.inference.types import Detection, ViewPrediction

MODEL = {"name": "oracle", "version": "0", "sha256": {}, "missing": []}


class OraclePredictor:
    def __init__(self, spacing_mm: float = 0.25, score: float = 0.9) -> None:
        self.spacing_mm = spacing_mm
        self.score = score

    @staticmethod
    def truth_paths(image: Path) -> tuple[Path, Path]:
        labels = Path(image).resolve().parent.parent / "labels"
        return labels / f"{Path(image).stem}.json", labels / f"{Path(image).stem}_duct.png"

    def predict(self, image: Galactogram) -> ViewPrediction:
        canonical, geometry = to_canonical(image, self.spacing_mm)
        truth_json, duct_png = self.truth_paths(image.path)
        detections: list[Detection] = []
        duct = np.zeros(canonical.shape, np.float32)
        lesion = np.zeros(canonical.shape, np.float32)
        if truth_json.is_file():
            truth = json.loads(truth_json.read_text())
            for obj in truth["objects"]:
                if obj["label"] not in FINDINGS:
                    continue
                box = geometry.boxes_to_canonical(np.asarray(obj["bbox_px"], float))[0]
                detections.append(Detection(box=box, score=self.score, label=obj["label"]))
                x0, y0, x1, y1 = (round(float(v)) for v in box)
                lesion[max(y0, 0) : y1, max(x0, 0) : x1] = self.score
            mask = np.asarray(Image.open(duct_png)) > 0
            # Area-averaged coverage: >= 0.5 maps back to about the truth mask.
            duct = geometry.image_to_canonical(mask.astype(np.float32), "area")
        return ViewPrediction(
            image=image,
            geometry=geometry,
            canonical=canonical,
            duct_prob=np.clip(duct, 0, 1).astype(np.float32),
            lesion_prob=lesion,
            detections=detections,
            mimics=[],
            timings={"predict": 0.0},
            model=dict(MODEL),
        )
