"""Per-image segmentation metrics: Dice, clDice and HD95 for each output channel.

Definitions (probabilities are binarised with ``prob >= threshold``; P = prediction, G = truth):

* **Dice** = 2|P∩G| / (|P| + |G|) (MONAI ``compute_dice``).
* **clDice** (Shit et al., CVPR 2021): S(X) = skeleton of X (skimage ``skeletonize``),
  Tprec = |S(P)∩G| / |S(P)|, Tsens = |S(G)∩P| / |S(G)|, clDice = 2·Tprec·Tsens/(Tprec+Tsens).
  Computed on the channels in ``cldice_channels`` (ducts: lesions are blobs, not tubes).
* **HD95**: the 95th percentile symmetric Hausdorff distance between the boundaries of P
  and G (MONAI ``compute_hausdorff_distance(percentile=95)``), in mm with ``spacing_mm``,
  otherwise in pixels (keys then end in ``_px``).

Empty masks, per image and channel:

* G and P both empty: nothing to score; all three metrics are NaN and the image is left out
  of the channel's means (typical for the lesion channel of a lesion-free image).
* G empty, P not (a false alarm) or P empty, G not (a miss): Dice = clDice = 0, counted in
  the means. HD95 is infinite: left out of the HD95 mean but counted in ``hd95_<ch>_inf``,
  so a model cannot improve its HD95 by predicting nothing unnoticed.
* A channel with no label for an image (``label_mask`` False) is left out entirely.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from skimage.morphology import skeletonize


def cldice(pred: np.ndarray, target: np.ndarray) -> float:
    """clDice of two 2D boolean masks; NaN when both are empty, 0 when exactly one is."""
    pred, target = pred.astype(bool), target.astype(bool)
    if not pred.any() and not target.any():
        return math.nan
    if not pred.any() or not target.any():
        return 0.0
    skel_p, skel_t = skeletonize(pred), skeletonize(target)
    tprec = (skel_p & target).sum() / max(skel_p.sum(), 1)
    tsens = (skel_t & pred).sum() / max(skel_t.sum(), 1)
    if tprec + tsens == 0:
        return 0.0
    return float(2 * tprec * tsens / (tprec + tsens))


class SegmentationMetrics:
    """Accumulates per-image Dice, clDice and HD95; ``compute()`` gives the channel means.

    ``update(probs [B,C,H,W], target [B,C,H,W], ids=None, label_mask=None)`` with
    probabilities (after the sigmoid), not logits. Distributed use::

        states = all_gather_object(metrics.state()); metrics.reset(); metrics.merge(states)
    """

    def __init__(
        self,
        threshold: float = 0.5,
        spacing_mm: float | None = None,
        channels: Sequence[str] = ("duct", "lesion"),
        cldice_channels: Sequence[str] = ("duct",),
    ) -> None:
        self.threshold = threshold
        self.spacing_mm = spacing_mm
        self.channels = tuple(channels)
        self.cldice_channels = tuple(cldice_channels)
        self.unit = "mm" if spacing_mm is not None else "px"
        self.per_image: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.per_image = []

    def update(
        self,
        probs: torch.Tensor | np.ndarray,
        target: torch.Tensor | np.ndarray,
        ids: Sequence[Any] | None = None,
        label_mask: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        pred = torch.as_tensor(probs).detach().cpu().float() >= self.threshold
        true = torch.as_tensor(target).detach().cpu() > 0
        if pred.shape != true.shape or pred.ndim != 4 or pred.shape[1] != len(self.channels):
            raise ValueError(
                f"expected probs and target [B, {len(self.channels)}, H, W], "
                f"got {tuple(pred.shape)} and {tuple(true.shape)}"
            )
        n = pred.shape[0]
        labelled = (
            np.ones((n, len(self.channels)), bool)
            if label_mask is None
            else np.asarray(torch.as_tensor(label_mask).cpu()).astype(bool).reshape(n, -1)
        )
        # ignore_empty=False scores a false alarm on an empty truth as 0; both-empty (1 here)
        # is set to NaN below.
        dice = compute_dice(pred.float(), true.float(), ignore_empty=False).numpy()
        first = len(self.per_image)
        for b in range(n):
            rec: dict[str, Any] = {"id": ids[b] if ids is not None else first + b}
            for c, name in enumerate(self.channels):
                if labelled[b, c]:
                    rec.update(self._channel_record(name, pred[b, c], true[b, c], dice[b, c]))
                else:
                    rec.update(self._unlabelled_record(name))
            self.per_image.append(rec)

    def _channel_record(
        self, name: str, pred: torch.Tensor, true: torch.Tensor, dice: float
    ) -> dict[str, Any]:
        p_any, t_any = bool(pred.any()), bool(true.any())
        rec: dict[str, Any] = {
            f"labelled_{name}": True,
            f"empty_truth_{name}": not t_any,
            f"empty_pred_{name}": not p_any,
        }
        both_empty = not p_any and not t_any
        rec[f"dice_{name}"] = math.nan if both_empty else float(dice)
        if name in self.cldice_channels:
            rec[f"cldice_{name}"] = cldice(pred.numpy(), true.numpy())
        if both_empty:
            hd = math.nan
        elif p_any != t_any:
            hd = math.inf
        else:
            # MONAI wants [B, C, H, W]; called only when both masks are non-empty, so it
            # never warns about empty inputs.
            with warnings.catch_warnings():
                # MONAI 1.6 warns about its own deprecated get_mask_edges argument.
                warnings.simplefilter("ignore", FutureWarning)
                hd = float(
                    compute_hausdorff_distance(
                        pred[None, None].float(),
                        true[None, None].float(),
                        include_background=True,
                        percentile=95,
                        spacing=self.spacing_mm,
                    )[0, 0]
                )
        rec[f"hd95_{name}_{self.unit}"] = hd
        return rec

    def _unlabelled_record(self, name: str) -> dict[str, Any]:
        rec: dict[str, Any] = {f"labelled_{name}": False, f"dice_{name}": math.nan}
        if name in self.cldice_channels:
            rec[f"cldice_{name}"] = math.nan
        rec[f"hd95_{name}_{self.unit}"] = math.nan
        return rec

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {"n_images": float(len(self.per_image))}
        for name in self.channels:
            keys = [f"dice_{name}", f"hd95_{name}_{self.unit}"]
            if name in self.cldice_channels:
                keys.append(f"cldice_{name}")
            for key in keys:
                vals = np.array([r[key] for r in self.per_image], dtype=float)
                finite = vals[np.isfinite(vals)]
                out[key] = float(finite.mean()) if finite.size else math.nan
            hd = np.array([r[f"hd95_{name}_{self.unit}"] for r in self.per_image], dtype=float)
            out[f"hd95_{name}_inf"] = float(np.isinf(hd).sum())
            out[f"n_scored_{name}"] = float(
                np.isfinite([r[f"dice_{name}"] for r in self.per_image]).sum()
            )
        return out

    def state(self) -> list[dict[str, Any]]:
        """The accumulated per-image records: plain, picklable, for all_gather_object."""
        return [dict(r) for r in self.per_image]

    def merge(self, states: Iterable[list[dict[str, Any]]]) -> None:
        """Adds the records of other states (e.g. from every rank) to this object's."""
        for st in states:
            self.per_image.extend(dict(r) for r in st)
