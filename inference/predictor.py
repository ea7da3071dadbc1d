"""``Predictor``: a model bundle loaded once, run on galactograms, results in canonical space.

    predictor = Predictor.from_path("bundle/")          # or a checkpoint, or runs:/.../model
    prediction = predictor.predict("view.dcm")           # -> ViewPrediction
    predictions = predictor.predict_many(paths)

Per view: read -> canonical (the bundle's spacing) -> crop to the breast -> segmentation
(MONAI SlidingWindowInferer, Gaussian blending, batched tiles, the training roi) and detection
(the LesionDetector on the whole crop, its own sliding window for big images) -> optional
vertical-flip TTA (horizontal flips would break the canonical orientation) -> post-processing
(inference/postprocess.py: TTA merge, NMS across classes, mimics set apart; findings from
the lesion channel's components labelled by the detector, inference/candidates.py; heatmap) -> everything shifted back from the crop into the full canonical grid.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer

from ductai.data.canonical import to_canonical
from ductai.data.dicom_reader import read_galactogram
from ductai.data.galactogram import Galactogram
from ductai.inference.bundle import (
    DEFAULT_REPORT_THRESHOLD,
    TTA_MODES,
    ModelBundle,
    load_bundle,
)
from ductai.inference.candidates import CandidateTable, candidate_table
from ductai.inference.crop import BreastRegion, Crop
from ductai.inference.postprocess import (
    RawDetections,
    detection_heatmap,
    flip_rows_boxes,
    fuse_scores,
    label_name,
    merge_tta,
    nms_across_classes,
    split_mimics,
)
from ductai.inference.types import Detection, ViewPrediction
from ductai.models.registry import create_model

__all__ = ["Predictor", "PredictorOptions"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictorOptions:
    device: str = "auto"  # auto (cuda when available), cpu, cuda, cuda:1
    num_threads: int | None = None  # torch (and ORT) intra-op threads; None keeps torch's
    backend: str = "auto"  # segmentation: eager, onnx, auto (onnx on CPU when installed)
    onnx_cache: str | None = None  # where exported nets are kept (onnx_backend.DEFAULT_CACHE)
    # Vertical-flip test-time augmentation: "segmentation" (the segmenter's maps averaged),
    # "all" (also the detector's boxes, inverted and merged), "none"; True = "all", False =
    # "none"; None = the bundle's setting (bundle.json "tta", the mode its operating point was
    # calibrated with).
    tta: bool | str | None = None
    crop_to_breast: bool = True
    crop_margin_px: int = 16
    # Findings and ducts only on the breast (crop.BreastRegion.gate), grown by this much: no lesion
    # on a burnt-in marker in the air. None turns the gate off.
    breast_gate_mm: float | None = 2.0
    # Segmentation sliding window; None = the training config's validation section.
    roi_size: tuple[int, int] | None = None
    overlap: float | None = None
    sw_batch_size: int | None = None
    # Detector's own sliding window. Whole crops in one pass up to 1024 px (31 cm at 0.3 mm):
    # no window-border blending of head outputs, and fewer pixels than overlapping 512 px
    # windows (validation's setting). None keeps the checkpoint's setting.
    detector_roi: tuple[int, int] | None = (1024, 1024)
    # Detector candidates kept before fusion; None keeps the checkpoint's (0.02 by default).
    detector_score_threshold: float | None = None
    nms_iou: float = 0.3  # across classes
    tta_iou: float = 0.5
    # Where findings come from with both nets: "segmentation" (inference/candidates.py: lesion
    # channel components, labelled by the detector) or "detector" (its boxes, scores fused).
    lesion_source: str = "segmentation"
    component_threshold: float = 0.1  # candidates.candidate_table
    min_component_px: int = 4
    detector_weight: float = 0.5  # detector findings no component explains
    # logit penalty per unit score of a detector mimic box hitting a candidate (segmentation source)
    mimic_penalty: float = 2.0
    # the bundle's second-stage candidate classifier (inference/rescoring.py), when it has one
    rescore: bool = True
    fusion_weight: float = 0.5  # postprocess.fuse_scores (lesion_source "detector")
    # Final (fused) score of a reported finding; None = the bundle's calibrated operating
    # threshold (bundle.json), else bundle.DEFAULT_REPORT_THRESHOLD. Scoring (FROC) passes a low one.
    score_threshold: float | None = None
    mimic_threshold: float = 0.05
    heatmap_gaussians: bool = True  # heatmap = max(lesion channel, detection Gaussians)
    keep_full_pixels: bool = False  # drop the Galactogram's cached float image after use


class Predictor:
    """Segmentation and/or detection nets of one bundle, ready to run; reuse it across views."""

    def __init__(self, bundle: ModelBundle, options: PredictorOptions | None = None) -> None:
        self.bundle = bundle
        self.options = options = options or PredictorOptions()
        if options.num_threads:
            torch.set_num_threads(int(options.num_threads))
        self.device = _device(options.device)
        self.spacing_mm = bundle.spacing_mm
        self.tta = tta_mode(options.tta, bundle.tta)
        # the calibrated threshold of this TTA mode (None: not calibrated), and the one that
        # reports use: the given score threshold, else that one
        self.operating_threshold = self._operating_threshold()
        self.report_threshold = (
            options.score_threshold
            if options.score_threshold is not None
            else self.operating_threshold
            if self.operating_threshold is not None
            else DEFAULT_REPORT_THRESHOLD
        )
        self.segmenter: torch.nn.Module | None = None
        self.seg_forward = None  # the callable the inferer runs (eager module or ORT)
        self.backend = "none"
        if options.lesion_source not in ("segmentation", "detector"):
            raise ValueError(
                f"lesion_source {options.lesion_source!r}: expected 'segmentation' or 'detector'"
            )
        self.inferer: SlidingWindowInferer | None = None
        self.detector: torch.nn.Module | None = None
        self.rescorer = None
        if bundle.rescorer_file is not None and options.rescore:
            from ductai.inference.rescoring import Rescorer

            self.rescorer = Rescorer.load(bundle.rescorer_file)
            self.rescorer.model.to(self.device)
        if "segmentation" in bundle.checkpoints:
            self._load_segmentation()
        if "detection" in bundle.checkpoints:
            self.detector = _build(bundle.checkpoints["detection"], self.device)
            if options.detector_roi is not None:
                self.detector.set_sliding_window(tuple(options.detector_roi))
            if options.detector_score_threshold is not None:
                self.detector.detector.box_selector.score_thresh = options.detector_score_threshold

    def _operating_threshold(self) -> float | None:
        """The bundle's threshold calibrated with this TTA mode, else its own (with a warning:
        the flip changes every score)."""
        calibrated = self.bundle.threshold_for(self.tta)
        if calibrated is None and self.bundle.operating_threshold is not None:
            log.warning(
                "%s: no operating threshold calibrated with tta=%s; the one of tta=%s is used "
                "(ductai evaluate --calibrate --tta %s sets one)",
                self.bundle.source, self.tta, self.bundle.tta, self.tta,
            )  # fmt: skip
            return self.bundle.operating_threshold
        return calibrated

    @classmethod
    def from_path(
        cls,
        path_or_uri: str | os.PathLike,
        options: PredictorOptions | None = None,
        tracking_uri: str | None = None,
        **overrides: Any,
    ) -> Predictor:
        """A bundle folder, a checkpoint, an MLflow model folder or URI; ``overrides`` set
        ``PredictorOptions`` fields (``Predictor.from_path(p, tta=True, device="cpu")``)."""
        options = replace(options or PredictorOptions(), **overrides)
        return cls(load_bundle(path_or_uri, tracking_uri=tracking_uri), options)

    # ---- set-up -------------------------------------------------------------------------------
    def _load_segmentation(self) -> None:
        payload = self.bundle.checkpoints["segmentation"]
        v = payload["config"].get("validation", {})
        o = self.options
        roi = tuple(o.roi_size or v.get("roi_size", (256, 256)))
        batch = int(o.sw_batch_size or v.get("sw_batch_size", 4))
        self.inferer = SlidingWindowInferer(
            roi_size=roi,
            sw_batch_size=batch,
            overlap=float(o.overlap if o.overlap is not None else v.get("overlap", 0.25)),
            mode="gaussian",
        )
        self.segmenter = _build(payload, self.device)
        self.seg_forward, self.backend = self.segmenter, "eager"
        want_onnx = o.backend == "onnx" or (o.backend == "auto" and self.device.type == "cpu")
        if o.backend not in ("auto", "eager", "onnx"):
            raise ValueError(f"backend must be auto, eager or onnx, not {o.backend!r}")
        if want_onnx:
            self._try_onnx(roi, batch)

    def _try_onnx(self, roi: tuple[int, int], batch: int) -> None:
        from ductai.inference.onnx_backend import OnnxSegmenter, onnx_available

        if not onnx_available():
            if self.options.backend == "onnx":
                raise ImportError("backend='onnx' needs: pip install onnx onnxscript onnxruntime")
            return
        key = self.bundle.sha256[self.bundle.files["segmentation"].name]
        try:
            self.seg_forward = OnnxSegmenter.create(
                self.segmenter,
                key=f"seg-{key[:32]}-{roi[0]}x{roi[1]}",
                roi_size=roi,
                batch_size=batch,
                cache_dir=self.options.onnx_cache,
                num_threads=self.options.num_threads or torch.get_num_threads(),
            )
            self.backend = "onnx"
        except Exception as e:  # export or session failure: eager still works
            if self.options.backend == "onnx":
                raise
            log.warning("ONNX Runtime backend unavailable (%s); using eager PyTorch", e)
        finally:
            self.segmenter.to(self.device)

    # ---- prediction ---------------------------------------------------------------------------
    def predict(
        self, image: Galactogram | str | os.PathLike, pixel_spacing: float | None = None
    ) -> ViewPrediction:
        """One view: a read ``Galactogram`` or a DICOM path (``pixel_spacing`` when it has none)."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        with _timer(timings, "read"):
            if not isinstance(image, Galactogram):
                image = read_galactogram(image, pixel_spacing=pixel_spacing)
        with _timer(timings, "canonical"):
            canonical, geometry = to_canonical(image, self.spacing_mm)
            outline = geometry.image_to_canonical(image.outline_pixels, interpolation="area")
            if not self.options.keep_full_pixels:
                for name in ("pixels", "outline_pixels"):  # cached_property: recomputed on demand
                    image.__dict__.pop(name, None)
        with _timer(timings, "crop"):
            crop = self.crop(canonical)
        duct, lesion, dets = self.predict_canonical(canonical, crop, timings)
        timings["total"] = time.perf_counter() - start
        findings, mimics = dets
        return ViewPrediction(
            image=image,
            geometry=geometry,
            canonical=canonical,
            duct_prob=duct,
            lesion_prob=lesion,
            detections=findings,
            mimics=mimics,
            timings=timings,
            outline=outline.astype(np.float32, copy=False),
            model={
                **self.bundle.identity(),
                "backend": self.backend,
                "crop": crop.to_dict(),
                "tta": self.tta,
                "report_threshold": self.report_threshold,
            },
        )

    def predict_many(
        self, images: Iterable[Galactogram | str | os.PathLike]
    ) -> list[ViewPrediction]:
        """Views one after the other with the same loaded nets."""
        return [self.predict(image) for image in images]

    def crop(self, canonical: np.ndarray) -> Crop:
        """The part of a canonical image the nets see (the breast, or all of it), with the
        breast gate on its grid (``breast_gate_mm``); one tissue labelling for both."""
        o = self.options
        if not o.crop_to_breast and o.breast_gate_mm is None:
            return Crop.whole(canonical.shape)
        region = BreastRegion.of(canonical)
        crop = region.crop(o.crop_margin_px) if o.crop_to_breast else Crop.whole(region.shape)
        if o.breast_gate_mm is not None:
            gate = region.gate(grow_px=round(o.breast_gate_mm / self.spacing_mm))
            crop = replace(crop, gate=crop.apply(gate))
        return crop

    def run_nets(
        self, canonical: np.ndarray, crop: Crop, timings: dict | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, RawDetections]:
        """(crop pixels, segmentation probabilities [2, h, w] or None, raw detector boxes),
        all on the crop's grid, zero or dropped off the crop's breast gate when it has one."""
        timings = {} if timings is None else timings
        pixels = np.ascontiguousarray(crop.apply(canonical), dtype=np.float32)
        x = torch.from_numpy(pixels)[None, None].to(self.device)
        with torch.inference_mode():
            with _timer(timings, "segmentation"):
                probs = self._segment(x) if self.inferer is not None else None
            with _timer(timings, "detection"):
                raw = self._detect(x) if self.detector is not None else RawDetections.empty()
        if crop.gate is not None:
            if probs is not None:
                probs = probs * crop.gate
            raw = raw.centred_in(crop.gate)
        return pixels, probs, raw

    def predict_canonical(
        self, canonical: np.ndarray, crop: Crop | None = None, timings: dict | None = None
    ) -> tuple[np.ndarray | None, np.ndarray, tuple[list[Detection], list[Detection]]]:
        """(duct_prob, lesion_prob, (findings, mimics)) of a canonical image, full grid;
        without ``crop``, the one ``Predictor.crop`` gives."""
        timings = {} if timings is None else timings
        crop = crop or self.crop(canonical)
        pixels, probs, raw = self.run_nets(canonical, crop, timings)
        with _timer(timings, "postprocess"):
            return self.postprocess(probs, raw, crop, pixels)

    def postprocess(
        self,
        probs: np.ndarray | None,
        raw: RawDetections,
        crop: Crop,
        image: np.ndarray | None = None,
    ) -> tuple[np.ndarray | None, np.ndarray, tuple[list[Detection], list[Detection]]]:
        """Crop-grid net outputs -> full canonical grid maps and reported detections.

        ``probs`` [2, h, w] (duct, lesion) or None; ``raw`` detector boxes in the crop grid;
        ``image`` the crop the nets saw (the rescorer's patches; without it, no rescoring).
        """
        o = self.options
        found, mimic = self.findings_and_mimics(raw)
        lesion_crop = probs[1] if probs is not None else None
        if self.uses_candidates and probs is not None:
            table = self.candidate_table(found, mimic, lesion_crop)
            found = self.score_candidates(table, image, probs)
        else:
            found.scores = fuse_scores(found.scores, found.boxes, lesion_crop, o.fusion_weight)
        found = found.select(np.argsort(-found.scores, kind="stable"))
        found = found.select(found.scores >= self.report_threshold)
        mimic = mimic.select(mimic.scores >= o.mimic_threshold)
        found.boxes, mimic.boxes = crop.boxes_to_full(found.boxes), crop.boxes_to_full(mimic.boxes)

        duct = crop.paste(probs[0]) if probs is not None else None
        lesion = (
            crop.paste(lesion_crop)
            if lesion_crop is not None
            else np.zeros(crop.full_shape, dtype=np.float32)
        )
        if o.heatmap_gaussians and len(found):
            gauss = detection_heatmap(crop.full_shape, found.boxes, found.scores)
            np.maximum(lesion, gauss, out=lesion)
        return duct, lesion, (_records(found), _records(mimic))

    @property
    def uses_candidates(self) -> bool:
        """Findings from lesion-channel components (inference/candidates.py)? They need the
        detector to name their class: a segmentation-only bundle reports no findings."""
        return (
            self.inferer is not None
            and self.detector is not None
            and self.options.lesion_source == "segmentation"
        )

    def findings_and_mimics(self, raw: RawDetections) -> tuple[RawDetections, RawDetections]:
        """The detector's boxes after NMS across classes, findings and mimics apart."""
        return split_mimics(nms_across_classes(raw, self.options.nms_iou))

    def candidate_table(
        self, findings: RawDetections, mimics: RawDetections, lesion: np.ndarray
    ) -> CandidateTable:
        """The first stage's candidates of one crop, before any scoring."""
        o = self.options
        return candidate_table(
            findings,
            lesion,
            o.component_threshold,
            o.min_component_px,
            o.detector_weight,
            mimics=mimics,
        )

    def score_candidates(
        self,
        table: CandidateTable,
        image: np.ndarray | None,
        probs: np.ndarray,
        rescore: bool = True,
    ) -> RawDetections:
        """Candidates with their final scores: the mimic penalty, then the rescorer."""
        dets = table.detections
        scores = table.penalized_scores(self.options.mimic_penalty)
        if rescore and self.rescorer is not None and image is not None:
            maps = np.stack([image, probs[1], probs[0]])
            scores = self.rescorer.rescore(scores, maps, dets.boxes, table.features)
        return RawDetections(dets.boxes, scores, dets.labels)

    def _segment(self, x: torch.Tensor) -> np.ndarray:
        """Sigmoid probabilities [2, h, w] float32; with TTA the mean of both flips."""
        logits = self.inferer(x, self.seg_forward)
        probs = torch.sigmoid(logits.float())[0]
        if self.tta != "none":
            flipped = self.inferer(torch.flip(x, dims=[-2]), self.seg_forward)
            probs = (probs + torch.flip(torch.sigmoid(flipped.float())[0], dims=[-2])) / 2
        return probs.cpu().numpy().astype(np.float32, copy=False)

    def _detect(self, x: torch.Tensor) -> RawDetections:
        (det,) = self.detector(x)
        passes = [RawDetections.from_torch(det)]
        if self.tta == "all":
            (det,) = self.detector(torch.flip(x, dims=[-2]))
            flipped = RawDetections.from_torch(det)
            flipped.boxes = flip_rows_boxes(flipped.boxes, x.shape[-2])
            passes.append(flipped)
        return merge_tta(passes, iou=self.options.tta_iou)


def tta_mode(option: bool | str | None, bundle_default: str = "none") -> str:
    """The TTA mode from a ``PredictorOptions.tta`` value and the bundle's default."""
    if option is None:
        option = bundle_default
    if option is True:
        return "all"
    if option is False:
        return "none"
    if option not in TTA_MODES:
        raise ValueError(f"tta {option!r}: expected one of {', '.join(TTA_MODES)}, True or False")
    return option


def _records(dets: RawDetections) -> list[Detection]:
    return [
        Detection(box=np.asarray(b, dtype=np.float64), score=float(s), label=label_name(lab))
        for b, s, lab in zip(dets.boxes, dets.scores, dets.labels)
    ]


def _build(payload: dict[str, Any], device: torch.device) -> torch.nn.Module:
    cfg = payload["config"]["model"]
    model = create_model(cfg["name"], **cfg.get("kwargs", {}))
    model.load_state_dict(payload["model"])
    return model.to(device).eval()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available")
    return device


@contextmanager
def _timer(timings: dict[str, float], key: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start
