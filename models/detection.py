"""Lesion detector: MONAI RetinaNet (ATSS matching, hard negative sampling) in 2D, no torchvision.

Box convention: ductai boxes are ``[x0, y0, x1, y1]`` (x = column); MONAI's 2D boxes are
``[d0_min, d1_min, d0_max, d1_max]`` over the tensor's spatial dims (H first), i.e.
``[y0, x0, y1, x1]``. ``LesionDetector`` converts at its boundary; nothing outside this module
sees MONAI's order.

Sizing (defaults, at the 0.3 mm training spacing): findings and mimics are 1-16 mm, i.e.
about 3-55 px, most 5-35 px. Two pyramid levels, strides 8 and 16, cover them with 3 anchor
sizes each (6-48 px); a stride-4 level (the stock tutorial setup) would quadruple the head cost
for nothing, and a stride-32 level would hold anchors bigger than any lesion. Heads are 64
channels wide (MONAI's heads are 4 convs of the FPN width at every level, so the width costs
quadratically). The backbone is a small MONAI ResNet of basic blocks, cut after the deepest
level used.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.apps.detection.utils.anchor_utils import AnchorGenerator
from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher
from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from monai.networks.nets.resnet import ResNet
from torch import Tensor, nn

from ductai.data.labels import CLASSES
from ductai.models.registry import register_model

# ductai [x0, y0, x1, y1] <-> MONAI [y0, x0, y1, x1]: the same swap both ways.
_SWAP_XY = [1, 0, 3, 2]


def to_monai_boxes(boxes: Tensor) -> Tensor:
    """ductai ``[x0, y0, x1, y1]`` -> MONAI 2D ``[y0, x0, y1, x1]`` (rows are dim 0)."""
    return boxes[..., _SWAP_XY]


def from_monai_boxes(boxes: Tensor) -> Tensor:
    """MONAI 2D ``[y0, x0, y1, x1]`` -> ductai ``[x0, y0, x1, y1]``."""
    return boxes[..., _SWAP_XY]


class ResNetFPNExtractor(nn.Module):
    """MONAI ResNet stages + MONAI FeaturePyramidNetwork, built without torchvision.

    Replaces MONAI's ``resnet_fpn_feature_extractor``/``BackboneWithFPN``, which need
    torchvision's ``IntermediateLayerGetter``. The stem (7x7 conv stride 2, max pool) gives
    stride 4 at ``layer1``; ``layer k`` has stride ``2 ** (k + 1)``. Only the stages up to the
    deepest returned one are kept, so every parameter gets a gradient (DDP needs no
    ``find_unused_parameters``).

    ``norm`` is "group" by default: detection batches are a few crops, and with GroupNorm the
    network behaves the same in train and eval mode from the first step (BatchNorm's running
    statistics lag for hundreds of steps, so early validation would be meaningless). MONAI's
    ResNet applies its ``norm`` argument to the stem only, so the stages are re-normed here.
    """

    def __init__(
        self,
        block: str = "basic",
        layers: Sequence[int] = (1, 2, 2),
        block_inplanes: Sequence[int] = (16, 32, 64),
        returned_layers: Sequence[int] = (2, 3),
        fpn_channels: int = 64,
        extra_pool_level: bool = False,
        in_channels: int = 1,
        norm: str = "group",
    ) -> None:
        super().__init__()
        returned_layers = sorted(int(k) for k in returned_layers)
        depth = returned_layers[-1]
        if returned_layers[0] < 1 or depth > 4:
            raise ValueError(f"returned_layers must lie in 1..4, got {returned_layers}")
        if len(layers) < depth or len(block_inplanes) < depth:
            raise ValueError(
                f"layers and block_inplanes need {depth} entries for returned_layers "
                f"{returned_layers}, got {list(layers)} and {list(block_inplanes)}"
            )
        # MONAI's ResNet always builds 4 stages: pad, then keep only the stages used.
        layers4 = list(layers[:depth]) + [1] * (4 - depth)
        planes4 = list(block_inplanes[:depth]) + [block_inplanes[depth - 1]] * (4 - depth)
        resnet = ResNet(
            block=block,
            layers=layers4,
            block_inplanes=planes4,
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            feed_forward=False,
        )
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.act, resnet.maxpool)
        self.stages = nn.ModuleList(getattr(resnet, f"layer{k}") for k in range(1, depth + 1))
        if norm != "batch":
            _replace_batchnorm(self.stem, norm)
            _replace_batchnorm(self.stages, norm)
        self.returned_layers = returned_layers
        expansion = 4 if block == "bottleneck" else 1
        self.fpn = FeaturePyramidNetwork(
            spatial_dims=2,
            in_channels_list=[block_inplanes[k - 1] * expansion for k in returned_layers],
            out_channels=fpn_channels,
            extra_blocks=LastLevelMaxPool(spatial_dims=2) if extra_pool_level else None,
        )
        # RetinaNet reads this attribute to size its heads.
        self.out_channels = fpn_channels
        self.strides = [2 ** (k + 1) for k in returned_layers]
        if extra_pool_level:
            self.strides.append(self.strides[-1] * 2)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        x = self.stem(x)
        features: OrderedDict[str, Tensor] = OrderedDict()
        for k, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if k in self.returned_layers:
                features[f"layer{k}"] = x
        return self.fpn(features)


def _replace_batchnorm(module: nn.Module, norm: str) -> None:
    """Swap every BatchNorm2d under ``module`` for a ``norm`` layer of the same width."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            channels = child.num_features
            if norm == "group":
                layer = nn.GroupNorm(num_groups=math.gcd(channels, 8), num_channels=channels)
            elif norm == "instance":
                layer = nn.InstanceNorm2d(channels, affine=True)
            else:
                raise ValueError(f"norm must be 'group', 'instance' or 'batch', got {norm!r}")
            setattr(module, name, layer)
        else:
            _replace_batchnorm(child, norm)


class _AtssRetinaNetDetector(RetinaNetDetector):
    """RetinaNetDetector whose anchor matching never touches torchvision.

    MONAI's ``compute_anchor_matched_idxs`` first tests ``isinstance(matcher, Matcher)`` with
    torchvision's ``Matcher`` from ``optional_import``; without torchvision that placeholder
    raises on the test itself. This override is MONAI's ATSS branch alone.
    """

    def compute_anchor_matched_idxs(
        self,
        anchors: list[Tensor],
        targets: list[dict[str, Tensor]],
        num_anchor_locs_per_level: Sequence[int],
    ) -> list[Tensor]:
        if not isinstance(self.proposal_matcher, ATSSMatcher):
            raise TypeError("LesionDetector supports the ATSS matcher only (set_atss_matcher)")
        matched_idxs = []
        for anchors_per_image, targets_per_image in zip(anchors, targets):
            gt_boxes = targets_per_image[self.target_box_key].to(anchors_per_image.device)
            if gt_boxes.numel() == 0:
                # No lesion in this crop: every anchor is background (BELOW_LOW_THRESHOLD).
                matched_idxs.append(
                    torch.full(
                        (anchors_per_image.size(0),),
                        -1,
                        dtype=torch.int64,
                        device=anchors_per_image.device,
                    )
                )
                continue
            _, matched = self.proposal_matcher(
                gt_boxes, anchors_per_image, num_anchor_locs_per_level, self.num_anchors_per_loc
            )
            matched_idxs.append(matched)
        return matched_idxs

    def generate_anchors(self, images: Tensor, head_outputs: dict[str, list[Tensor]]) -> None:
        # MONAI builds anchors in the head outputs' dtype (float16 under autocast: about 1 px
        # resolution at 1000 px) and caches them by image shape only (stale after .to(device)).
        # Build them in float32 and key the cache on shape and device.
        key = (tuple(images.shape), images.device)
        if self.anchors is None or getattr(self, "_anchor_key", None) != key:
            shapes = [
                torch.empty((1, 1, *m.shape[-2:]), device=m.device)
                for m in head_outputs[self.cls_key]
            ]
            self.anchors = self.anchor_generator(images, shapes)
            self._anchor_key = key


class LesionDetector(nn.Module):
    """2D RetinaNet for intraductal lesions and their mimics, in ductai's box convention.

    ``forward(images [B, 1, H, W], targets=None)``: in train mode ``targets`` is a list of
    ``{"boxes": float [N, 4] xyxy, "labels": int64 [N]}`` and the result is
    ``{"classification": loss, "box_regression": loss}``; in eval mode a list of
    ``{"boxes" [K, 4] xyxy, "scores" [K], "labels" [K]}``, per-class NMS applied, all classes
    (mimics included: inference suppresses them). Images larger than ``sliding_window_roi`` in
    eval mode go through MONAI's sliding-window inferer (the default, 1024 px = 31 cm at
    0.3 mm, passes whole canonical images in one piece; see ``set_sliding_window``).

    Sizes are in millimetres and converted with ``spacing_mm`` so a config that changes the
    training spacing keeps anchors matched to lesion sizes. ``anchor_sizes_mm`` has one tuple
    per pyramid level (same count each: the heads are shared across levels).
    """

    def __init__(
        self,
        num_classes: int = len(CLASSES),
        spacing_mm: float = 0.3,
        block: str = "basic",
        layers: Sequence[int] = (1, 2, 2),
        block_inplanes: Sequence[int] = (16, 32, 64),
        returned_layers: Sequence[int] = (2, 3),
        fpn_channels: int = 64,
        extra_pool_level: bool = False,
        norm: str = "group",
        anchor_sizes_mm: Sequence[Sequence[float]] = ((1.8, 3.0, 4.8), (6.0, 9.6, 14.4)),
        aspect_ratios: Sequence[float] = (1.0,),
        atss_num_candidates: int = 4,
        atss_center_in_gt: bool = False,
        hard_negative_batch_size: int = 64,
        positive_fraction: float = 0.3,
        hard_negative_pool_size: float = 20,
        min_negatives: int = 16,
        score_thresh: float = 0.02,
        topk_candidates_per_level: int = 1000,
        nms_thresh: float = 0.22,
        detections_per_img: int = 100,
        sliding_window_roi: Sequence[int] | None = (1024, 1024),
        sliding_window_overlap: float = 0.5,
        sliding_window_batch_size: int = 1,
    ) -> None:
        super().__init__()
        extractor = ResNetFPNExtractor(
            block=block,
            layers=layers,
            block_inplanes=block_inplanes,
            returned_layers=returned_layers,
            fpn_channels=fpn_channels,
            extra_pool_level=extra_pool_level,
            norm=norm,
        )
        n_levels = len(extractor.strides)
        if len(anchor_sizes_mm) != n_levels:
            raise ValueError(
                f"anchor_sizes_mm needs one tuple per pyramid level ({n_levels}, strides "
                f"{extractor.strides}), got {len(anchor_sizes_mm)}"
            )
        if len({len(s) for s in anchor_sizes_mm}) != 1:
            raise ValueError(
                f"every level needs the same number of anchor sizes: {anchor_sizes_mm}"
            )
        self.spacing_mm = float(spacing_mm)
        self.strides = list(extractor.strides)
        self.anchor_sizes_px = [tuple(s / self.spacing_mm for s in lvl) for lvl in anchor_sizes_mm]
        anchors = AnchorGenerator(
            sizes=self.anchor_sizes_px,
            aspect_ratios=[tuple(float(a) for a in aspect_ratios)] * n_levels,
            indexing="ij",
        )
        # Inputs are padded to a multiple of the coarsest stride so every level aligns.
        self.size_divisible = max(self.strides)
        network = RetinaNet(
            spatial_dims=2,
            num_classes=num_classes,
            num_anchors=anchors.num_anchors_per_location()[0],
            feature_extractor=extractor,
            size_divisible=self.size_divisible,
        )
        detector = _AtssRetinaNetDetector(network=network, anchor_generator=anchors)
        detector.set_atss_matcher(
            num_candidates=atss_num_candidates, center_in_gt=atss_center_in_gt
        )
        detector.set_hard_negative_sampler(
            batch_size_per_image=hard_negative_batch_size,
            positive_fraction=positive_fraction,
            pool_size=hard_negative_pool_size,
            min_neg=min_negatives,
        )
        detector.set_target_keys(box_key="boxes", label_key="labels")
        detector.set_box_selector_parameters(
            score_thresh=score_thresh,
            topk_candidates_per_level=topk_candidates_per_level,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )
        self.detector = detector
        self.num_classes = num_classes
        self.sliding_window_roi: tuple[int, ...] | None = None
        self.set_sliding_window(
            sliding_window_roi, overlap=sliding_window_overlap, batch_size=sliding_window_batch_size
        )

    def set_sliding_window(
        self, roi: Sequence[int] | None, overlap: float = 0.5, batch_size: int = 1
    ) -> None:
        """Eval images larger than ``roi`` (rounded up to the coarsest stride) go window by window.

        Windows cut lesions at their edges and MONAI averages the head outputs of overlapping
        windows, which blurs boxes near window borders: keep ``roi`` large (whole canonical
        images fit the default) and the overlap at 0.5. ``None`` turns it off.
        """
        if roi is None:
            self.sliding_window_roi = None
            self.detector.inferer = None
            return
        size = tuple(_round_up(int(r), self.size_divisible) for r in roi)
        self.detector.set_sliding_window_inferer(
            roi_size=size, sw_batch_size=batch_size, overlap=overlap
        )
        self.sliding_window_roi = size

    @property
    def network(self) -> RetinaNet:
        """The trainable part (backbone, FPN, heads)."""
        return self.detector.network

    def forward(
        self, images: Tensor | list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ):
        if self.training:
            if targets is None:
                raise ValueError("LesionDetector needs targets in train mode")
            monai_targets = [
                {
                    "boxes": to_monai_boxes(t["boxes"].to(torch.float32).reshape(-1, 4)),
                    "labels": t["labels"].to(torch.int64).reshape(-1),
                }
                for t in targets
            ]
            losses = self.detector(images, monai_targets)
            if torch.is_grad_enabled() and not losses["box_regression"].requires_grad:
                # A batch without boxes (background / mimic-free crops) gives a constant box
                # loss, leaving the regression head without gradients; DDP would then wait for
                # them forever. A zero-weighted term keeps every parameter in the graph.
                head = self.network.regression_head
                losses["box_regression"] = losses["box_regression"] + 0.0 * sum(
                    p.sum() for p in head.parameters()
                )
            return losses
        use_inferer = self._needs_sliding_window(images)
        detections = self.detector(images, use_inferer=use_inferer)
        return [
            {
                "boxes": from_monai_boxes(d["boxes"]),
                "scores": d["labels_scores"],
                "labels": d["labels"],
            }
            for d in detections
        ]

    def _needs_sliding_window(self, images: Tensor | list[Tensor]) -> bool:
        if self.sliding_window_roi is None:
            return False
        shapes = (
            [images.shape[-2:]] if isinstance(images, Tensor) else [i.shape[-2:] for i in images]
        )
        return any(s > r for shape in shapes for s, r in zip(shape, self.sliding_window_roi))


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


@register_model("retinanet", task="detection", target=LesionDetector)
def retinanet(**kwargs) -> LesionDetector:
    return LesionDetector(**kwargs)


@register_model("retinanet_naive", task="detection", target=LesionDetector)
def naive_detector(**kwargs) -> LesionDetector:
    """The stock 3D-tutorial-style setup in 2D, kept for the speed comparison benchmark.

    ResNet-50 depth (bottleneck blocks 3-4-6, widths 64-256), FPN on strides 4, 8, 16 plus a
    max-pooled stride-32 level, 256-channel heads. Same classes, matcher and sampler.
    """
    defaults = {
        "block": "bottleneck",
        "layers": (3, 4, 6),
        "block_inplanes": (64, 128, 256),
        "returned_layers": (1, 2, 3),
        "fpn_channels": 256,
        "extra_pool_level": True,
        "anchor_sizes_mm": ((0.9, 1.5, 2.4), (1.8, 3.0, 4.8), (3.6, 6.0, 9.6), (7.2, 12.0, 19.2)),
    }
    return LesionDetector(**{**defaults, **kwargs})
