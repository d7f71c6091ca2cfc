"""How much memory an autograd graph holds, and the rule that picks a memory mode from it.

Two families back-propagate through many differentiable training steps: trajectory matching (MTT
and its successors, ``mtt/matching.py``) and DD (``meta/bptt.py``). Both keep the whole graph when it
fits and otherwise recompute one step at a time for the same gradient; this module is what they
share to decide, so the decision and its figures mean the same thing in both.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch import Tensor

#: a method keeps its unrolled graph while the estimate takes at most this share of the memory free
#: on the device (the rest is for the data, experts and the evaluation), else it goes step by step
UNROLLED_SHARE = 0.5

T = TypeVar("T")


class _Packed:
    """A tensor saved for backward, counted while the graph holding it is alive."""

    __slots__ = ("tensor", "nbytes", "meter")

    def __init__(self, tensor: Tensor, meter: list[int]) -> None:
        self.tensor, self.nbytes, self.meter = tensor, tensor.numel() * tensor.element_size(), meter
        meter[0] += self.nbytes
        meter[1] = max(meter[1], meter[0])

    def __del__(self) -> None:
        self.meter[0] -= self.nbytes


def saved_tensor_peak(fn: Callable[[], T]) -> tuple[T, int]:
    """(fn(), peak bytes of tensors held by live autograd graphs while fn ran): the memory an
    unrolled graph costs, measured exactly on any device (CPU autograd runs on this thread).
    Tensors saved twice count twice, so it is an upper bound of the graph's own memory."""
    meter = [0, 0]  # live, peak
    with torch.autograd.graph.saved_tensors_hooks(lambda t: _Packed(t, meter), lambda p: p.tensor):
        out = fn()
    return out, meter[1]


def unrolled_fits(estimate_bytes: int, free_bytes: int | None) -> bool:
    """Whether an unrolled graph of ``estimate_bytes`` should be kept: yes when the platform does
    not say how much is free (the method's own behaviour), else within UNROLLED_SHARE of it."""
    return free_bytes is None or estimate_bytes <= UNROLLED_SHARE * free_bytes
