"""PAD's data selection for expert training (Li et al., 2024, "Prioritize Alignment in Dataset
Distillation"): training samples ranked by difficulty within their class, and a schedule that
trains the experts on the easiest samples first and adds the harder ones as epochs pass, then
drops the easiest late in training (PAD's buffer_CL.py).

Difficulty is EL2N (Paul et al., NeurIPS 2021): ||softmax(f(x)) - onehot(y)||_2 of a network early
in training, averaged over a few networks. PAD's released code reads precomputed DeepCore GraNd
rankings instead; EL2N is the score its paper names and is computable from what we already have:
the plain MTT experts of the same data (their stored epoch rows), so scoring costs a forward pass
over the training set per scoring expert and nothing to keep.

How the compression ratio (IPC) sets the easy/hard mix: a trial reads expert epochs up to its
window's end (max_start_epoch + expert_epochs), which the per-IPC tables grow with IPC. Small IPC
reads only early epochs, trained on the easiest ``init_ratio`` of each class; large IPC reads
epochs trained on all samples and, past ``rm_epoch_first``, on the harder ones only.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Schedule:
    """Which share of each class (easiest first) an expert trains on at each epoch.

    Epoch e (0-based) trains on the easiest ``min(1, init_ratio + (1 - init_ratio) e / add_end_epoch)``
    of every class up to ``add_end_epoch``, on all samples up to ``rm_epoch_first``, then without
    the easiest ``rm_easy_ratio_first`` up to ``rm_epoch_second``, then without the easiest
    ``rm_easy_ratio_second`` (PAD's buffer_CL.py, with its README's values as defaults)."""

    init_ratio: float = 0.75
    add_end_epoch: int = 20
    rm_epoch_first: int = 40
    rm_epoch_second: int = 60
    rm_easy_ratio_first: float = 0.1
    rm_easy_ratio_second: float = 0.2

    def window(self, epoch: int) -> tuple[float, float]:
        """(start, end) of the epoch's slice of each class's easy-to-hard order, as fractions."""
        if epoch < self.add_end_epoch:
            return 0.0, min(1.0, self.init_ratio + (1.0 - self.init_ratio) * epoch / self.add_end_epoch)
        if epoch < self.rm_epoch_first:
            return 0.0, 1.0
        if epoch < self.rm_epoch_second:
            return self.rm_easy_ratio_first, 1.0
        return self.rm_easy_ratio_second, 1.0


@dataclass(frozen=True, eq=False)
class Curriculum:
    """A schedule applied to one ranking: ``order[c]`` lists class c's training indices easy to hard."""

    order: tuple[Tensor, ...]
    schedule: Schedule

    def indices(self, epoch: int) -> Tensor:
        lo, hi = self.schedule.window(epoch)
        parts = []
        for idx in self.order:
            n = len(idx)
            a, b = int(math.floor(lo * n)), max(int(math.ceil(hi * n)), int(math.floor(lo * n)) + 1)
            parts.append(idx[a:min(b, n)])
        return torch.cat(parts).sort().values  # a fixed order; the epoch's generator shuffles it


@torch.no_grad()
def el2n(logits: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Per-sample ||softmax(logits) - onehot(labels)||_2."""
    return (F.softmax(logits, dim=1) - F.one_hot(labels, num_classes).to(logits.dtype)).norm(dim=1)


def rank_by_class(scores: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, ...]:
    """Each class's sample indices sorted by score, lowest (easiest) first; ties by index."""
    out = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        order = np.lexsort((idx.numpy(), scores[idx].double().numpy()))
        out.append(idx[torch.from_numpy(order)])
    return tuple(out)


def ranking_digest(order: tuple[Tensor, ...]) -> str:
    h = hashlib.blake2b(digest_size=8)
    for idx in order:
        h.update(idx.to(torch.int64).numpy().tobytes())
        h.update(b"|")
    return h.hexdigest()
