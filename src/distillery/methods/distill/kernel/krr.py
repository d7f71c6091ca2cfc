"""Kernel ridge regression on a synthetic support set, and kernels computable in closed form.

``krr_predict`` solves (K_ss + lambda * tr(K_ss)/n * I) alpha = y_s and returns K_ts alpha. The
ridge is relative to the kernel's mean diagonal, as KIP's reference scales it, so one lambda works
whatever the kernel's magnitude (an NTK of depth 3 and a feature Gram matrix differ by orders).
The solve runs in float64: at lambda 1e-6 a float32 Cholesky of a near-singular Gram matrix
(IPC 1: 10 nearly orthogonal rows; IPC 50: 500 correlated ones) loses the digits the gradient
needs.

``fc_kernel`` is the NNGP or NTK of an infinitely wide fully connected ReLU network (the
arc-cosine recursion of Cho & Saul 2009; Lee et al. 2018; Jacot et al. 2018) with weight variance
sigma_w^2 / fan_in and bias variance sigma_b^2, ``depth`` hidden layers and a linear readout.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_COS_EPS = 1e-6  # keeps acos differentiable where two inputs coincide (the diagonal)


def krr_predict(k_ts: Tensor, k_ss: Tensor, y_s: Tensor, reg: float) -> Tensor:
    """Predictions for the targets from the support set's labels (kernel ridge regression)."""
    n = k_ss.shape[0]
    k_ss64 = k_ss.double()
    ridge = reg * torch.diagonal(k_ss64).mean().clamp_min(1e-12)
    eye = torch.eye(n, dtype=torch.float64, device=k_ss.device)
    alpha = torch.linalg.solve(k_ss64 + ridge * eye, y_s.double())
    return (k_ts.double() @ alpha).to(k_ts.dtype)


def _relu_step(k12: Tensor, k11: Tensor, k22: Tensor, sigma_w2: float, sigma_b2: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One ReLU layer of the recursion: the next covariances and the derivative kernel."""
    norm = torch.sqrt(k11[:, None] * k22[None, :])
    cos = (k12 / norm).clamp(-1 + _COS_EPS, 1 - _COS_EPS)
    theta = torch.acos(cos)
    nxt = sigma_w2 / (2 * math.pi) * norm * (torch.sin(theta) + (math.pi - theta) * cos) + sigma_b2
    deriv = sigma_w2 / (2 * math.pi) * (math.pi - theta)
    # on the diagonal theta = 0: E[relu(u)^2] = k/2
    return nxt, sigma_w2 / 2 * k11 + sigma_b2, sigma_w2 / 2 * k22 + sigma_b2, deriv


def fc_kernel(x1: Tensor, x2: Tensor, depth: int = 3, sigma_w2: float = 2.0, sigma_b2: float = 0.01, kind: str = "ntk") -> Tensor:
    """[n1, n2] NNGP ('nngp') or NTK ('ntk') of a ``depth``-hidden-layer ReLU network."""
    a, b = x1.flatten(1), x2.flatten(1)
    d = a.shape[1]
    k12 = sigma_w2 * (a @ b.T) / d + sigma_b2
    k11 = sigma_w2 * (a * a).sum(1) / d + sigma_b2
    k22 = sigma_w2 * (b * b).sum(1) / d + sigma_b2
    ntk = k12
    for _ in range(depth):
        k12, k11, k22, deriv = _relu_step(k12, k11, k22, sigma_w2, sigma_b2)
        ntk = k12 + ntk * deriv
    return ntk if kind == "ntk" else k12


def feature_kernel(f1: Tensor, f2: Tensor) -> Tensor:
    """The linear kernel of (flattened) features, scaled by their dimension (an NNGP estimate)."""
    a, b = f1.flatten(1), f2.flatten(1)
    return a @ b.T / a.shape[1]
