"""Candidate rescoring: the second-stage classifier (models/rescorer.py) applied to candidates.

A bundle may carry ``rescorer.pt``; with it, every candidate of candidates.candidate_table
gets the score ``expit((1 - blend) * logit(rule score) + blend * classifier logit)``, where
the rule score is the first stage's (peak probability, mimic penalty applied) and ``blend``
was chosen on the selection sets (stored in the checkpoint). Without it the first stage's
score stands.

Patches (``candidate_patches``): per candidate, the canonical image and the lesion and duct
probability maps, centred on the candidate's box, ``size`` pixels at each of ``scales``
(scale s averages s x s pixels: 64 px at 0.3 mm is 19 mm around the candidate, at scale 3 a
58 mm view of its duct tree). Outside the image is 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.special import expit

from ductai.inference.bundle import RESCORER_TASK
from ductai.inference.candidates import FEATURES, clipped_logit
from ductai.models.checkpoint import CheckpointError, load_checkpoint
from ductai.models.rescorer import CandidateClassifier

__all__ = [
    "PATCH_SIZE",
    "SCALES",
    "Rescorer",
    "RescorerError",
    "blend_scores",
    "candidate_patches",
]

PATCH_SIZE = 64
SCALES = (1, 3)


class RescorerError(ValueError):
    """A rescorer checkpoint that cannot be used; the message names the file."""


def candidate_patches(
    maps: np.ndarray, boxes: np.ndarray, size: int = PATCH_SIZE, scales: tuple[int, ...] = SCALES
) -> np.ndarray:
    """[N, C * len(scales), size, size] float32 patches of ``maps`` [C, H, W] around ``boxes``."""
    maps = np.asarray(maps, dtype=np.float32)
    channels = maps.shape[0]
    out = np.zeros((len(boxes), channels * len(scales), size, size), np.float32)
    if len(boxes) == 0:
        return out
    pad = size * max(scales) // 2 + 1
    padded = np.pad(maps, ((0, 0), (pad, pad), (pad, pad)))
    centres = np.floor((boxes[:, :2] + boxes[:, 2:]) / 2).astype(int) + pad
    for i, (cx, cy) in enumerate(centres):
        for k, s in enumerate(scales):
            half = size * s // 2
            window = padded[:, cy - half : cy - half + size * s, cx - half : cx - half + size * s]
            pooled = window.reshape(channels, size, s, size, s).mean(axis=(2, 4))
            out[i, k * channels : (k + 1) * channels] = pooled
    return out


def blend_scores(first: np.ndarray, second: np.ndarray, blend: float) -> np.ndarray:
    """Final scores from first-stage scores and classifier logits (module docstring)."""
    return expit((1 - blend) * clipped_logit(first) + blend * second)


@dataclass
class Rescorer:
    """A trained candidate classifier and how its logit joins the first stage's score."""

    model: CandidateClassifier
    blend: float
    size: int = PATCH_SIZE
    scales: tuple[int, ...] = SCALES

    @classmethod
    def load(cls, path: str | os.PathLike) -> Rescorer:
        path = Path(path)
        try:
            payload = load_checkpoint(path)
        except (CheckpointError, FileNotFoundError) as e:
            raise RescorerError(str(e)) from e
        if payload.get("task") != RESCORER_TASK:
            raise RescorerError(f"{path}: a {payload.get('task')!r} checkpoint, not a rescorer")
        config = payload["config"]
        if tuple(config.get("features", ())) != FEATURES:
            raise RescorerError(
                f"{path}: trained on features {config.get('features')}, this ductai computes "
                f"{list(FEATURES)}"
            )
        model = CandidateClassifier(**config["model"]["kwargs"])
        model.load_state_dict(payload["model"])
        model.eval()
        return cls(
            model=model,
            blend=float(config["blend"]),
            size=int(config["patch"]["size"]),
            scales=tuple(int(s) for s in config["patch"]["scales"]),
        )

    @torch.inference_mode()
    def logits(
        self, maps: np.ndarray, boxes: np.ndarray, features: np.ndarray, scores: np.ndarray
    ) -> np.ndarray:
        """Classifier logits [N] of the candidates ``boxes`` on ``maps`` [3, H, W], whose
        first-stage scores are ``scores``."""
        if len(boxes) == 0:
            return np.zeros(0)
        patches = torch.from_numpy(candidate_patches(maps, boxes, self.size, self.scales))
        device = next(self.model.parameters()).device
        feats = torch.as_tensor(np.asarray(features, np.float32), device=device)
        prior = torch.as_tensor(clipped_logit(scores), dtype=torch.float32, device=device)
        return self.model(patches.to(device), feats, prior).double().cpu().numpy()

    def rescore(
        self, scores: np.ndarray, maps: np.ndarray, boxes: np.ndarray, features: np.ndarray
    ) -> np.ndarray:
        """New scores of the candidates (module docstring)."""
        if len(scores) == 0:
            return scores
        second = self.logits(maps, boxes, features, scores)
        return blend_scores(scores, second, self.blend)
