"""Shared steps after decoding: resize, normalization statistics, normalization, class subsets.

Kept separate from the loaders so every dataset gets identical semantics: statistics always come
from the full training split of *this* dataset (after resize, before subsetting), and subsets are
drawn per class from seeds that depend only on (seed, split, class), so a subset of k images per
class is a prefix of the one with k+1 and does not change when another class changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils.seeding import generator

_RESIZE_CHUNK = 2048  # bounds the float32 working copy to ~100 MB for 3x64x64


def resize_uint8(x: Tensor, size: int) -> Tensor:
    """Antialiased bilinear resize of uint8 [N, C, H, W] to size x size, rounded back to uint8
    (the cache stores uint8; the rounding error is below one grey level)."""
    if tuple(x.shape[2:]) == (size, size):
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, x.shape[0], _RESIZE_CHUNK):
        chunk = F.interpolate(x[i:i + _RESIZE_CHUNK].float(), size=(size, size), mode="bilinear",
                              align_corners=False, antialias=True)
        out[i:i + _RESIZE_CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of x / 255, from a 256-bin histogram per
    channel: no float copy of the data and no float32 accumulation error over 50M pixels."""
    means, stds = [], []
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        n = counts.sum()
        mean = (counts * levels).sum() / n
        var = (counts * (levels - mean) ** 2).sum() / n
        means.append(float(mean))
        stds.append(float(var.sqrt()))
    return tuple(means), tuple(stds)


def normalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """float32 (x / 255 - mean) / std, computed as one scale and one shift in place."""
    std_t = torch.tensor(std, dtype=torch.float32).clamp_min(1e-8).view(1, -1, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    out = x.to(torch.float32)
    out.mul_(1.0 / (255.0 * std_t)).sub_(mean_t / std_t)
    return out


def subset_per_class(y: Tensor, k: int, num_classes: int, seed: int, split: str) -> Tensor:
    """Sorted indices of at most k random samples per class (all of a class with fewer)."""
    keep = []
    for c in range(num_classes):
        idx = torch.nonzero(y == c, as_tuple=False).flatten()
        perm = torch.randperm(len(idx), generator=generator(seed, "data-subset", split, c))
        keep.append(idx[perm[:k]])
    return torch.sort(torch.cat(keep)).values
