"""The matching objectives of DC/DSA (gradients), DM (mean embeddings) and DataDAM (attention maps).

Pure tensor functions, so each can be checked by hand on small inputs.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: added to the product of the norms in the cosine distance (the reference's value)
COSINE_EPS = 1e-6


def layer_distance(g_syn: Tensor, g_real: Tensor, eps: float = COSINE_EPS) -> Tensor:
    """Sum over output channels of (1 - cos) between one layer's synthetic and real gradients.

    Survey eq. 23 / the DC reference's ``distance_wb``: a conv weight [out, in, kh, kw] gives
    ``out`` rows of in*kh*kw numbers, a 3-D weight (layer norm [C, H, W]) C rows, a linear weight
    [out, in] ``out`` rows. 1-D parameters (biases, norm scales and shifts) contribute 0, as in the
    reference (one row of a bias is a single number whose cosine carries almost no signal).
    """
    if g_syn.shape != g_real.shape:
        raise ValueError(f"gradient shapes differ: {tuple(g_syn.shape)} vs {tuple(g_real.shape)}")
    if g_syn.dim() <= 1:
        return g_syn.new_zeros(())
    a = g_syn.reshape(g_syn.shape[0], -1)
    b = g_real.reshape(g_real.shape[0], -1)
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)
    return (1.0 - cos).sum()


def gradient_distance(grads_syn: Sequence[Tensor], grads_real: Sequence[Tensor], eps: float = COSINE_EPS) -> Tensor:
    """DC's distance D (survey eq. 22): the layer-wise sum of ``layer_distance``."""
    if len(grads_syn) != len(grads_real):
        raise ValueError(f"{len(grads_syn)} synthetic vs {len(grads_real)} real gradient tensors")
    total = grads_syn[0].new_zeros(())
    for gs, gr in zip(grads_syn, grads_real):
        total = total + layer_distance(gs, gr, eps)
    return total


def mean_distance(real: Tensor, syn: Tensor) -> Tensor:
    """Squared Euclidean distance between the batch means of two [B, ...] tensors (DM's loss for
    one class; DataDAM uses it for attention maps and the last-layer embedding)."""
    return ((real.flatten(1).mean(0) - syn.flatten(1).mean(0)) ** 2).sum()


def attention_map(activation: Tensor, power: float = 1.0) -> Tensor:
    """DataDAM's spatial attention: sum over channels of |a|^p, flattened to [B, H*W] and
    L2-normalised per sample (F.normalize, eps 1e-12). Non-spatial [B, D] activations are
    treated as D positions with one channel."""
    if activation.dim() == 2:
        amap = activation.abs() ** power
    else:
        amap = (activation.abs() ** power).sum(dim=1)
    return F.normalize(amap.reshape(activation.shape[0], -1), p=2.0, dim=1)


class ReLURecorder:
    """Forward hooks on a network's ``nn.ReLU`` modules (those of ``features`` when it has them)
    that store each output, in forward order: CAFE's layer-wise features."""

    def __init__(self, net: nn.Module) -> None:
        root = getattr(net, "features", net)
        self.modules = [m for m in root.modules() if isinstance(m, nn.ReLU)]
        self.maps: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.modules)

    def transform(self, output: Tensor) -> Tensor:
        return output

    def _hook(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        self.maps.append(self.transform(output))

    @contextlib.contextmanager
    def record(self) -> Iterator[list[Tensor]]:
        """Within the block, forward passes append their (transformed) ReLU outputs to the yielded list."""
        self.maps = []
        handles = [m.register_forward_hook(self._hook) for m in self.modules]
        try:
            yield self.maps
        finally:
            for h in handles:
                h.remove()


class AttentionRecorder(ReLURecorder):
    """DataDAM's recorder: each ReLU output's attention map (the reference hooks every ReLU of
    ``features``)."""

    def __init__(self, net: nn.Module, power: float = 1.0) -> None:
        super().__init__(net)
        self.power = power

    def transform(self, output: Tensor) -> Tensor:
        return attention_map(output, self.power)
