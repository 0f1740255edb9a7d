"""The glioma network: the project's 2-D U-Net with 2.5-D multi-sequence input, plus a grade
head on its encoder.

Input per slice of the 1 mm working grid: for each of T1, T1c, T2, FLAIR (in that order) the
slice and its neighbours ``context`` slices either side ``step`` mm apart (z-scored, zeros
when the sequence is missing), then one constant channel per sequence saying whether it is
present: ``4 * (2 * context + 1) + 4`` channels.  Output: 4 classes (0 background,
1 necrosis / non-enhancing core, 2 oedema, 3 enhancing).

The grade head reads the deepest encoder features of the segmentation network (transfer from
the segmentation encoder, as the seed found best), pooled over the tumour.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ai_engines.ct_lung.unet import UNet2D

INPUT_ROLES = ("T1", "T1c", "T2", "FLAIR")
N_CLASSES = 4


def n_input_channels(context: int) -> int:
    return len(INPUT_ROLES) * (2 * context + 1) + len(INPUT_ROLES)


def encode(model: UNet2D, x: torch.Tensor) -> torch.Tensor:
    """The deepest encoder features of ``model`` (batch, width, H / 2**depth, W / 2**depth)."""
    for level, block in enumerate(model.down):
        x = block(x)
        if level < model.depth:
            x = F.max_pool2d(x, 2)
    return x


class GradeHead(nn.Module):
    """Logit of high-grade glioma from pooled encoder features (mean and max over the tumour)."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.linear = nn.Sequential(nn.Linear(2 * in_features, 32), nn.ELU(), nn.Linear(32, 1))

    def forward(self, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``features`` (n, C, h, w) of the slices of one study; ``weight`` (n, 1, h, w) the
        tumour mask at that scale.  Returns one logit."""
        total = weight.sum().clamp_min(1e-3)
        mean = (features * weight).sum(dim=(0, 2, 3)) / total
        masked = features.masked_fill(weight < 0.5, float("-inf")) if bool((weight >= 0.5).any()) else features
        peak = masked.amax(dim=(0, 2, 3))
        return self.linear(torch.cat([mean, peak])[None])[0, 0]


def region_dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Cross-entropy plus soft Dice of the BraTS regions: whole tumour (1|2|3), core (1|3),
    enhancing (3); regions absent from the batch add nothing to the Dice term."""
    ce = F.cross_entropy(logits, target.long())
    prob = torch.softmax(logits, dim=1)
    regions = (((1, 2, 3)), ((1, 3)), ((3,)))
    dice_terms = []
    for classes in regions:
        p = prob[:, list(classes)].sum(1)
        t = torch.zeros_like(p)
        for c in classes:
            t = t + (target == c).float()
        if t.sum() == 0:
            continue
        dice_terms.append(1 - (2 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth))
    return ce + (torch.stack(dice_terms).mean() if dice_terms else 0.0 * ce)


def stack_inputs(
    channels: dict[str, np.ndarray], indices: np.ndarray, context: int, step: int,
    box: tuple[slice, slice] | None = None, pool: int = 1,
) -> np.ndarray:
    """Network input (n, C, H / pool, W / pool) for slices ``indices`` of the working grid,
    averaged over ``pool`` x ``pool`` pixels (the network's in-plane grid)."""
    any_channel = next(iter(channels.values()))
    rows, cols = box or (slice(None), slice(None))
    offsets = np.arange(-context, context + 1) * step
    neighbours = np.clip(indices[:, None] + offsets[None, :], 0, any_channel.shape[0] - 1)
    height, width = any_channel[0, rows, cols].shape
    height, width = height // pool, width // pool
    out = np.zeros((len(indices), n_input_channels(context), height, width), np.float32)
    per = 2 * context + 1
    for r, role in enumerate(INPUT_ROLES):
        if role in channels:
            values = channels[role][neighbours][:, :, rows, cols][:, :, : height * pool, : width * pool]
            if pool > 1:
                values = values.reshape(*values.shape[:2], height, pool, width, pool).mean(axis=(3, 5))
            out[:, r * per : (r + 1) * per] = values
            out[:, len(INPUT_ROLES) * per + r] = 1.0
    return out


def predict_probabilities(
    model: nn.Module, channels: dict[str, np.ndarray], indices: np.ndarray, box: tuple[slice, slice],
    context: int, step: int, pool: int = 1, batch_size: int = 8, device: str = "cpu",
) -> np.ndarray:
    """Class probabilities (4, n, H, W) of slices ``indices`` inside ``box`` (sides multiples
    of ``pool * 2**depth``), upsampled from the network grid, as float16 to bound memory."""
    any_channel = next(iter(channels.values()))
    height, width = any_channel[0, box[0], box[1]].shape
    out = np.zeros((N_CLASSES, len(indices), height, width), np.float16)
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            x = torch.from_numpy(stack_inputs(channels, chunk, context, step, box, pool)).to(device)
            logits = model(x)
            if pool > 1:
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            prob = torch.softmax(logits, dim=1)
            out[:, start : start + len(chunk)] = prob.permute(1, 0, 2, 3).cpu().numpy().astype(np.float16)
    return out


def tumour_features(
    model: UNet2D, channels: dict[str, np.ndarray], tumour: np.ndarray, context: int, step: int, pool: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deepest encoder features of the slices holding ``tumour`` (a box around it) and the
    tumour mask pooled to their scale: the grade head's input."""
    ks = np.nonzero(tumour.any(axis=(1, 2)))[0]
    unit = pool * 2**model.depth
    rows, cols = (np.nonzero(tumour.any(axis=a))[0] for a in ((0, 2), (0, 1)))
    box = []
    for idx, n in ((rows, tumour.shape[1]), (cols, tumour.shape[2])):
        centre = (int(idx[0]) + int(idx[-1])) // 2
        size = min(n // unit * unit, max(2 * unit, int(np.ceil((idx[-1] - idx[0] + 32) / unit) * unit)))
        lo = int(np.clip(centre - size // 2, 0, n - size))
        box.append(slice(lo, lo + size))
    x = torch.from_numpy(stack_inputs(channels, ks, context, step, (box[0], box[1]), pool))
    with torch.no_grad():
        features = encode(model, x)
    weight = torch.from_numpy(tumour[ks][:, None, box[0], box[1]].astype(np.float32))
    weight = F.adaptive_avg_pool2d(weight, (int(features.shape[-2]), int(features.shape[-1])))
    return features, weight
