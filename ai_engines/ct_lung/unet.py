"""A small 2-D U-Net for lung tumour segmentation (after Primakov et al. 2022, narrowed).

ELU activations, batch normalisation, dropout in the deep levels, Dice + cross-entropy loss.
Width is a model constant kept small so a 120-slice CT runs in seconds on two CPU cores; the
input is 2.5-D (the slice and its neighbours as channels), which lets a 2-D network tell a
vessel running through the slices from a nodule that ends.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class _ConvBlock(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, dropout: float) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ELU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ELU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class UNet2D(nn.Module):
    """U-Net with ``depth`` poolings; channels ``base * 2**level``.

    Input ``(batch, in_channels, H, W)`` with H, W multiples of ``2**depth``; output logits
    ``(batch, out_channels, H, W)``.
    """

    def __init__(
        self, in_channels: int = 5, out_channels: int = 2, base_channels: int = 8,
        depth: int = 4, dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.depth = depth
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList()
        ch = in_channels
        for level, width in enumerate(widths):
            self.down.append(_ConvBlock(ch, width, dropout if level >= depth - 1 else 0.0))
            ch = width
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for level in reversed(range(depth)):
            self.up.append(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2))
            self.merge.append(_ConvBlock(2 * widths[level], widths[level], dropout if level >= depth - 1 else 0.0))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.down):
            x = block(x)
            if level < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice of the foreground (over the batch) plus pixel-wise cross-entropy."""
    ce = F.cross_entropy(logits, target.long())
    prob = torch.softmax(logits, dim=1)[:, 1]
    fg = target.float()
    dice = (2 * (prob * fg).sum() + smooth) / (prob.sum() + fg.sum() + smooth)
    return ce + (1 - dice)


def stack_context(canvas: np.ndarray, indices: np.ndarray, context: int, step: int = 1) -> np.ndarray:
    """2.5-D inputs: each slice with ``context`` neighbours either side, ``step`` slices apart (clamped)."""
    offsets = np.arange(-context, context + 1) * step
    neighbours = np.clip(indices[:, None] + offsets[None, :], 0, canvas.shape[0] - 1)
    return canvas[neighbours]  # (n, 2*context+1, H, W)


def context_step(slice_spacing: float, context_mm: float) -> int:
    """Neighbour distance in slices so the context spans about ``context_mm`` per step."""
    return max(1, int(round(context_mm / max(slice_spacing, 1e-3))))


def predict_foreground(
    model: nn.Module, canvas: np.ndarray, indices: np.ndarray, box: tuple[int, int, int, int],
    context: int, step: int = 1, batch_size: int = 8, device: str = "cpu",
) -> np.ndarray:
    """Foreground probability of ``canvas`` slices ``indices`` inside ``box`` (r0, r1, c0, c1).

    The box must have sides that are multiples of ``2**model.depth``.
    """
    r0, r1, c0, c1 = box
    out = np.zeros((len(indices), r1 - r0, c1 - c0), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            stacked = stack_context(canvas[:, r0:r1, c0:c1], chunk, context, step)
            x = torch.from_numpy(stacked).to(device=device, dtype=torch.float32).div_(255.0)
            x = x.contiguous(memory_format=torch.channels_last)
            prob = torch.softmax(model(x), dim=1)[:, 1]
            out[start : start + len(chunk)] = prob.float().cpu().numpy()
    return out
