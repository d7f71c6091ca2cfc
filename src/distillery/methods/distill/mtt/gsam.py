"""Surrogate-gap guided sharpness-aware minimisation (GSAM, Zhuang et al., ICLR 2022): the update
direction FTD's, DATM's and PAD's experts are trained with (their buffer_FTD.py / buffer_CL.py use
the ``gsam`` package with SGD underneath, constant rho, adaptive perturbation).

One step, for parameters w and a batch loss L:

1. g = grad L(w);
2. the adaptive (ASAM) perturbation e = rho * w^2 * g / ||w * g|| (plain SAM: rho * g / ||g||);
3. g_p = grad L(w + e), the gradient at the perturbed point;
4. the direction d = g_p - alpha * g_perp, with g_perp the component of g orthogonal to g_p
   (GSAM's "surrogate gap" term; alpha = 0 is SAM).

Nothing here keeps state between steps (rho is constant, the base optimizer has no momentum), so an
expert trained with it can still be extended epoch by epoch with the same bits (buffer.py).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

EPS = 1e-12


def _norm(tensors: list[Tensor]) -> Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def gsam_direction(
    loss_fn: Callable[[], tuple[Tensor, Tensor]], params: list[Tensor], rho: float, alpha: float, adaptive: bool = True,
) -> tuple[list[Tensor], Tensor, Tensor]:
    """(update direction per parameter, loss at w, outputs at w) for one batch; ``loss_fn()``
    returns (loss, outputs) evaluated at the parameters' current values (it is called twice, on
    the same batch and augmentation)."""
    loss, out = loss_fn()
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        saved = [p.detach().clone() for p in params]  # restored exactly (not w + e - e) afterwards
        scaled = [g * p.abs() for g, p in zip(grads, params)] if adaptive else list(grads)
        scale = rho / (_norm(scaled) + EPS)
        perturb = [g * scale * (p.pow(2) if adaptive else 1.0) for g, p in zip(grads, params)]
        torch._foreach_add_(params, perturb)
    try:
        loss_p, _ = loss_fn()
        grads_p = torch.autograd.grad(loss_p, params)
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, saved)
    with torch.no_grad():
        inner = sum((g * gp).sum() for g, gp in zip(grads, grads_p))
        norm_g, norm_gp = _norm(list(grads)), _norm(list(grads_p))
        cosine = inner / (norm_g * norm_gp + EPS)
        direction = [gp - alpha * (g - cosine * norm_g * gp / (norm_gp + EPS)) for g, gp in zip(grads, grads_p)]
    return direction, loss.detach(), out.detach()
