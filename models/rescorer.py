"""Second-stage candidate classifier: is this lesion candidate a true intraductal lesion?

The false-positive-reduction stage of CAD systems: the first stage (inference/candidates.py)
proposes about 28 candidates per view and finds almost every lesion, but ranks them poorly
(a small bright noise component saturates the lesion channel as readily as a papilloma). This
net sees each candidate again, as a patch of the image and of both probability maps at two
scales, together with the candidate's scalar features (candidates.FEATURES), and outputs one
logit. A MONAI ResNet encodes the patch; a small MLP joins it with the features.

The output is a correction to the first stage: ``logit = w * prior + mlp(...)``, with
``prior`` the first-stage logit, ``w`` learnt (from 1) and the MLP's last layer starting at
zero, so an untrained classifier ranks exactly as the first stage and training can only move
away from it where the patches and features say so.
"""

from __future__ import annotations

import torch
from monai.networks.nets import ResNet
from torch import nn

__all__ = ["CandidateClassifier"]


class CandidateClassifier(nn.Module):
    def __init__(
        self,
        in_channels: int = 6,
        n_features: int = 8,
        channels: tuple[int, ...] = (16, 32, 64, 96),
        hidden: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"channels: four stage widths (MONAI ResNet), got {list(channels)}")
        self.encoder = ResNet(
            block="basic",
            layers=[1, 1, 1, 1],
            block_inplanes=list(channels),
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=3,
            conv1_t_stride=1,
            feed_forward=False,
        )
        # features differ in scale (probabilities, log areas): normalised by running statistics
        self.feature_norm = nn.BatchNorm1d(n_features)
        self.head = nn.Sequential(
            nn.Linear(channels[-1] + n_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.prior_weight = nn.Parameter(torch.tensor(1.0))

    def forward(
        self, patches: torch.Tensor, features: torch.Tensor, prior: torch.Tensor
    ) -> torch.Tensor:
        """``patches`` [N, C, P, P], ``features`` [N, F], first-stage logits [N] -> logits [N]."""
        joined = torch.cat([self.encoder(patches), self.feature_norm(features)], dim=1)
        return self.head(joined).squeeze(1) + self.prior_weight * prior
