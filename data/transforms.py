"""Training and validation transforms: canonical sample dict -> torch tensors for one task.

Train: choose a crop (``ductai.data.sampling``), cut it with a context margin, augment image,
duct, centerline and instance masks together with albumentations (masks nearest), cut the
patch from the middle (so rotations and zoom-outs rarely show empty corners), then derive
boxes and the lesion channel from the augmented instance mask: a box follows its lesion
exactly, and an object cut out of the patch or shrunk below ``min_object_pixels`` is dropped.

Boxes from the instance mask are tight around the lesion's pixels; the simulator's stored
boxes come from the 3D geometry and are 1-2 px wider. Validation keeps the stored boxes.

Outputs: ``image`` float32 [1, h, w]. Segmentation: ``seg`` float32 [2, h, w] (duct, lesion =
union of FINDING instances), ``centerline`` float32 [1, h, w], ``channel_mask`` float32 [2]
(0 where the sample has no label for that channel, e.g. a datalist entry without a duct mask:
losses and metrics skip it). Detection: ``boxes`` float32 [N, 4] ductai ``[x0, y0, x1, y1]``,
``labels`` int64 [N] into ``CLASSES`` (mimics included: they are learned as hard negatives).

Horizontal flips are never used: canonical space puts the nipple on the right. Vertical flips
mirror medial/lateral (or head/feet), which is anatomically valid. Nothing inverts contrast.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A
import cv2

from ductai.data.instances import boxes_from_instances, paint_missing_instances
from ductai.data.labels import FINDINGS
from ductai.data.sampling import Crop, CropSampler, crop_padded

Task = Literal["segmentation", "detection"]
TASKS = ("segmentation", "detection")

__all__ = [
    "AugmentConfig",
    "TrainTransform",
    "ValTransform",
    "build_train_transform",
    "build_val_transform",
    "detection_collate",
    "geometric_augmentations",
    "photometric_augmentations",
]


class AugmentConfig(BaseModel):
    """Crop sampling and augmentation settings; probabilities are per sample."""

    model_config = ConfigDict(extra="forbid")

    patch_size: tuple[int, int] = (256, 256)  # (rows, columns); one number means square
    positive_fraction: float = 0.5  # crops holding a finding
    mimic_fraction: float = 0.15  # crops holding an air bubble or calcification
    duct_fraction: float = 0.15  # crops on an opacified duct; the rest: anywhere in the breast
    context_fraction: float = 0.25  # extra border augmented around the patch, then cut off
    edge_margin: int = 16  # px between a sampled object and the patch border, when it fits
    tissue_threshold: float = 0.05
    min_object_pixels: int = 2  # fewer visible pixels after augmentation: the object is dropped
    val_center_crop: bool = False  # validation: whole image (sliding window) or a centre patch

    # geometric (image and masks together)
    affine_p: float = 0.7
    scale: tuple[float, float] = (0.8, 1.25)
    rotate_deg: float = 15.0
    translate_fraction: float = 0.05
    shear_deg: float = 5.0
    vertical_flip_p: float = 0.5
    elastic_p: float = 0.15
    elastic_alpha: float = 150.0  # with sigma 10: about 0.7 px mean, 3 px largest shift
    elastic_sigma: float = 10.0
    grid_distortion_p: float = 0.15
    grid_distort_limit: float = 0.1
    # photometric (image only): vendor looks and exposure
    gamma_p: float = 0.5
    gamma_limit: tuple[float, float] = (70.0, 150.0)
    brightness_contrast_p: float = 0.5
    brightness_limit: float = 0.1
    contrast_limit: float = 0.2
    clahe_p: float = 0.1
    tone_curve_p: float = 0.3
    tone_curve_scale: float = 0.1
    noise_p: float = 0.3
    noise_std: tuple[float, float] = (0.005, 0.03)
    blur_sharpen_p: float = 0.3
    downscale_p: float = 0.1
    downscale_range: tuple[float, float] = (0.5, 0.9)

    @field_validator("patch_size", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) else value

    @field_validator("patch_size")
    @classmethod
    def _positive_patch(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 8:
            raise ValueError(f"patch_size must be at least 8 pixels, not {value}")
        return value

    @model_validator(mode="after")
    def _probabilities(self) -> AugmentConfig:
        for name, value in self:
            if name.endswith(("_p", "_fraction")) and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], not {value}")
        crops = self.positive_fraction + self.mimic_fraction + self.duct_fraction
        if crops > 1.0 + 1e-9:
            raise ValueError(f"positive + mimic + duct fractions must be <= 1, not {crops:g}")
        return self

    @property
    def context(self) -> int:
        """Pixels of context on each side of the patch while augmenting."""
        return round(max(self.patch_size) * self.context_fraction / 2)

    def sampler(self) -> CropSampler:
        return CropSampler(
            patch_size=tuple(self.patch_size),
            positive_fraction=self.positive_fraction,
            mimic_fraction=self.mimic_fraction,
            duct_fraction=self.duct_fraction,
            edge_margin=self.edge_margin,
            tissue_threshold=self.tissue_threshold,
        )


# Outside the image (or the rotated crop) is air: 0, and background in every mask.
_BORDER = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": 0}


def geometric_augmentations(cfg: AugmentConfig) -> list[A.BasicTransform]:
    """Spatial transforms; albumentations applies them to masks with nearest interpolation."""
    return [
        A.Affine(
            scale=cfg.scale,
            rotate=(-cfg.rotate_deg, cfg.rotate_deg),
            translate_percent=(-cfg.translate_fraction, cfg.translate_fraction),
            shear=(-cfg.shear_deg, cfg.shear_deg),
            p=cfg.affine_p,
            **_BORDER,
        ),
        A.VerticalFlip(p=cfg.vertical_flip_p),
        A.ElasticTransform(
            alpha=cfg.elastic_alpha, sigma=cfg.elastic_sigma, p=cfg.elastic_p, **_BORDER
        ),
        A.GridDistortion(
            num_steps=5, distort_limit=cfg.grid_distort_limit, p=cfg.grid_distortion_p, **_BORDER
        ),
    ]


def photometric_augmentations(cfg: AugmentConfig) -> list[A.BasicTransform]:
    """Intensity transforms on float32 in [0, 1] (albumentations clips to that range)."""
    return [
        A.RandomGamma(gamma_limit=cfg.gamma_limit, p=cfg.gamma_p),
        A.RandomBrightnessContrast(
            brightness_limit=cfg.brightness_limit,
            contrast_limit=cfg.contrast_limit,
            p=cfg.brightness_contrast_p,
        ),
        A.CLAHE(clip_limit=(1.0, 3.0), p=cfg.clahe_p),
        A.RandomToneCurve(scale=cfg.tone_curve_scale, p=cfg.tone_curve_p),
        A.OneOf(
            [
                A.GaussianBlur(blur_limit=(3, 5)),
                A.Sharpen(alpha=(0.1, 0.3)),
                A.UnsharpMask(alpha=(0.1, 0.4)),
            ],
            p=cfg.blur_sharpen_p,
        ),
        A.Downscale(scale_range=cfg.downscale_range, p=cfg.downscale_p),
        A.GaussNoise(std_range=cfg.noise_std, p=cfg.noise_p),
    ]


class _ProcessSeed:
    """Re-seed per DataLoader worker: forked workers would otherwise share one random state.

    ``torch.initial_seed()`` differs per worker (and per epoch unless workers persist) and
    follows ``torch.manual_seed`` in the main process, so one seed controls everything.
    """

    def __init__(self) -> None:
        self.seed: int | None = None

    def changed(self) -> int | None:
        seed = torch.initial_seed()
        if seed == self.seed:
            return None
        self.seed = seed
        return seed


class TrainTransform:
    """Crop sampling + augmentation + targets for one task; a picklable callable."""

    def __init__(
        self,
        task: Task,
        cfg: AugmentConfig | None = None,
        augmentations: list[A.BasicTransform] | None = None,
        return_instances: bool = False,
    ) -> None:
        _check_task(task)
        self.task = task
        self.cfg = cfg or AugmentConfig()
        # Also return the augmented ``instances`` [1, h, w] and ``object_ids`` (the instance
        # value of each output object): for tests, overlays and debugging.
        self.return_instances = return_instances
        self.sampler = self.cfg.sampler()
        if augmentations is None:
            augmentations = geometric_augmentations(self.cfg) + photometric_augmentations(self.cfg)
        self.augment = A.Compose(augmentations)
        self._seed = _ProcessSeed()
        self.rng = np.random.default_rng(0)
        self.last_crop: Crop | None = None  # for tests and debugging

    def __call__(self, sample: dict[str, Any]) -> dict[str, torch.Tensor]:
        seed = self._seed.changed()
        if seed is not None:
            self.rng = np.random.default_rng(seed)
            self.augment.set_random_seed(seed % 2**32)
        s = _arrays(sample)
        crop = self.sampler.choose(s, self.rng)
        self.last_crop = crop
        window = crop.expanded(self.cfg.context)
        image = crop_padded(s["image"][0], window)
        # One int32 [h, w, 3] mask: a single warp per transform instead of three.
        masks = np.stack(
            [crop_padded(s[k][0].astype(np.int32, copy=False), window) for k in _MASKS], axis=-1
        )
        out = self.augment(image=image, mask=masks)
        m = self.cfg.context
        image = out["image"][m : m + crop.height, m : m + crop.width]
        masks = out["mask"][m : m + crop.height, m : m + crop.width]
        instances = np.ascontiguousarray(masks[..., 2])
        targets, keep = _targets(
            self.task, image, masks[..., 0], masks[..., 1], instances, s, self.cfg.min_object_pixels
        )
        if self.return_instances:
            targets["instances"] = torch.from_numpy(instances[None])
            targets["object_ids"] = torch.from_numpy(np.flatnonzero(keep) + 1)
        return targets


class ValTransform:
    """No augmentation: the whole image (sliding-window validation) or a centre patch."""

    def __init__(self, task: Task, cfg: AugmentConfig | None = None) -> None:
        _check_task(task)
        self.task = task
        self.cfg = cfg or AugmentConfig()

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        s = _arrays(sample)
        image = s["image"][0]
        masks = [s[k][0] for k in _MASKS]
        boxes = s["boxes"].astype(np.float32)
        if self.cfg.val_center_crop:
            rows, cols = image.shape
            height, width = self.cfg.patch_size
            crop = Crop("center", (rows - height) // 2, (cols - width) // 2, height, width)
            image = crop_padded(image, crop)
            masks = [crop_padded(m, crop) for m in masks]
            boxes = boxes - np.float32([crop.col0, crop.row0, crop.col0, crop.row0])
            boxes = np.clip(boxes, 0, np.float32([width, height, width, height]))
        out, _ = _targets(self.task, image, *masks, s, 1, boxes=boxes)
        if "meta" in sample:
            out["meta"] = sample["meta"]
        return out


_MASKS = ("duct", "centerline", "instances")


def _arrays(sample: dict[str, Any]) -> dict[str, Any]:
    """Numpy views of a sample (tensors from a MONAI cache or arrays from the simulator).

    Every object is given instance pixels (an ellipse in its box where it had none), so the
    lesion channel and the re-derived boxes always agree with the boxes.
    """
    s = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in sample.items()}
    s["image"] = np.asarray(s["image"], dtype=np.float32)
    shape = s["image"].shape[-2:]
    for key in ("duct", "centerline"):
        s[key] = np.asarray(s[key]) if key in s else np.zeros((1, *shape), np.uint8)
    s["boxes"] = np.asarray(s.get("boxes", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
    s["labels"] = np.asarray(s.get("labels", np.zeros(0)), dtype=np.int64).reshape(-1)
    if "is_mimic" in s:
        s["is_mimic"] = np.asarray(s["is_mimic"], dtype=bool).reshape(-1)
    else:
        s["is_mimic"] = s["labels"] >= len(FINDINGS)
    instances, _ = paint_missing_instances(s.get("instances"), s["boxes"], shape)
    s["instances"] = instances[None]
    return s


def _targets(
    task: str,
    image: np.ndarray,
    duct: np.ndarray,
    centerline: np.ndarray,
    instances: np.ndarray,
    s: dict[str, Any],
    min_pixels: int,
    boxes: np.ndarray | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Tensors for `task` and which objects are still visible (bool [N])."""
    out: dict[str, Any] = {"image": torch.from_numpy(np.ascontiguousarray(image)[None].copy())}
    n = len(s["labels"])
    derived, keep = boxes_from_instances(instances, n, min_pixels)
    if task == "segmentation":
        finding = np.zeros(n + 1, dtype=np.float32)  # lookup: instance value -> is a finding
        finding[1:] = ~s["is_mimic"]
        lesion = finding[np.clip(instances, 0, n)]
        seg = np.stack([(duct > 0).astype(np.float32), lesion])
        out["seg"] = torch.from_numpy(seg)
        out["centerline"] = torch.from_numpy((centerline > 0).astype(np.float32)[None])
        has_duct = bool(s.get("meta", {}).get("has_duct", True))
        out["channel_mask"] = torch.tensor([float(has_duct), 1.0])
        return out, keep
    if boxes is None:  # after augmentation: the boxes of what is visible
        boxes = derived
    else:  # validation: the stored boxes of objects still visible
        keep = keep & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    out["boxes"] = torch.from_numpy(np.ascontiguousarray(boxes[keep], dtype=np.float32))
    out["labels"] = torch.from_numpy(s["labels"][keep].astype(np.int64))
    return out, keep


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")


def build_train_transform(task: Task, cfg: AugmentConfig | None = None) -> TrainTransform:
    return TrainTransform(task, cfg)


def build_val_transform(task: Task, cfg: AugmentConfig | None = None) -> ValTransform:
    return ValTransform(task, cfg)


def detection_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Images stacked to [B, 1, h, w] (a list if sizes differ); boxes, labels, ... as lists."""
    images = [b["image"] for b in batch]
    same = all(i.shape == images[0].shape for i in images)
    out: dict[str, Any] = {"image": torch.stack(images) if same else images}
    for key in batch[0]:
        if key != "image":
            out[key] = [b[key] for b in batch]
    return out
