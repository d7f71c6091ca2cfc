"""The trajectory-matching objective and its gradient, three ways.

From expert parameters theta_0 = theta*_t the student takes N SGD steps on synthetic minibatches,
theta_{s+1} = theta_s - alpha * g_s with g_s = grad_theta CE(f(A_s(X[B_s]); theta_s), y[B_s]),
and the loss is ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2. We need dL/dX and
dL/dalpha.

* ``unrolled`` (MTT): one autograd graph through all N steps (create_graph), then backward.
  Memory grows with N x batch.
* ``tesla`` (TESLA, Cui et al. 2023): pass 1 takes the N steps with detached gradients, keeping
  theta_s and G = sum_s g_s, so theta_N = theta_0 - alpha G in closed form and
  dL/dg_s = -alpha a with a = 2 (theta_N - theta*) / D for every s. Pass 2 recomputes each g_s
  (create_graph, one step at a time) and backpropagates -alpha a . g_s into that step's batch only;
  dL/dalpha = -G . a. It treats each theta_s as a constant, i.e. drops the terms through which X
  and alpha also move the later steps' parameters (alpha^2 H_s terms): exact for N = 1 and a
  first-order approximation otherwise (that is the published method).
* ``tesla_exact``: the same two passes and the same memory (one step's graph plus the stored
  theta_s), but pass 2 runs backwards and carries the adjoint a_s = dL/dtheta_s with one
  Hessian-vector product per step, a_s = a_{s+1} - alpha H_s a_{s+1}, so dL/dX and dL/dalpha equal
  the unrolled ones (up to float rounding). Costs about one extra forward/backward per step over
  ``unrolled``.
* ``auto`` (the default): ``unrolled`` when its graph fits the free memory, else ``tesla_exact``
  (choose_memory_mode, once per run, on the first iteration's real batch).

Extensions of the later trajectory papers, in every mode: ``labels`` may be learnable logits
[N, num_classes] (DATM/PAD: each step's loss is the soft-target cross-entropy against
softmax(logits), and the logits get a gradient too), and ``keep_from`` drops the first parameters
(shallow layers first, in ``parameters()`` order) from the matching loss (PAD's parameter
filtering: the sums of both the numerator and the denominator start at ``keep_from``).

All three consume the same precomputed plan (batch indices and augmentation draws per step), so
they see identical data; the plan is drawn from a generator keyed by (seed, iteration).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ...aug import AugDraw, DiffAug
from ...utils.memory import UNROLLED_SHARE, saved_tensor_peak, unrolled_fits  # noqa: F401 (re-exported)

MEMORY_MODES = ("auto", "unrolled", "tesla", "tesla_exact")


class FlatNet:
    """``module`` evaluated at a flat parameter vector (torch.func.functional_call; the module's
    own parameters are only a template for names and shapes)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        named = list(module.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.num_params = sum(self.numels)
        self.buffers = dict(module.named_buffers())

    def __call__(self, flat: Tensor, x: Tensor) -> Tensor:
        params = {n: t.view(s) for n, t, s in zip(self.names, torch.split(flat, self.numels), self.shapes)}
        return functional_call(self.module, {**params, **self.buffers}, (x,))


@dataclass(frozen=True, eq=False)
class Step:
    indices: Tensor  # which synthetic images (on the images' device)
    draw: AugDraw | None  # the step's augmentation parameters (per sample), or None


def plan_steps(n_images: int, syn_steps: int, batch_syn: int, aug: DiffAug | None, g: torch.Generator, device: torch.device) -> list[Step]:
    """Minibatches as the reference: walk a fresh permutation in chunks of batch_syn, reshuffling
    when it runs out; one per-sample DSA draw per step."""
    steps: list[Step] = []
    chunks: list[Tensor] = []
    for _ in range(syn_steps):
        if not chunks:
            chunks = list(torch.randperm(n_images, generator=g).split(batch_syn))
        idx = chunks.pop(0)
        draw = aug.sample(len(idx), g, device=device) if aug is not None and aug.enabled else None
        steps.append(Step(idx.to(device), draw))
    return steps


class MatchGrads(NamedTuple):
    """The matching loss and its gradients (``labels`` is None for hard labels)."""

    loss: Tensor
    images: Tensor
    lr: Tensor
    labels: Tensor | None = None


def soft_cross_entropy(logits: Tensor, target_logits: Tensor) -> Tensor:
    """Cross-entropy against softmax(target_logits) (temperature 1, as DATM/PAD), batch mean."""
    return -(F.softmax(target_logits, dim=1) * F.log_softmax(logits, dim=1)).sum(1).mean()


def _step_loss(net: FlatNet, theta: Tensor, x: Tensor, y: Tensor, step: Step, aug: DiffAug | None) -> Tensor:
    if step.draw is not None and aug is not None:
        x = aug.apply(x, step.draw)
    out = net(theta, x)
    return soft_cross_entropy(out, y) if y.is_floating_point() else F.cross_entropy(out, y)


def match_loss(theta_n: Tensor, start: Tensor, target: Tensor, keep_from: int = 0) -> Tensor:
    """||theta_N - theta*||^2 / ||theta*_t - theta*||^2 over the parameters from ``keep_from`` on."""
    return (theta_n[keep_from:] - target[keep_from:]).pow(2).sum() / (start[keep_from:] - target[keep_from:]).pow(2).sum()


@dataclass(frozen=True)
class MemoryChoice:
    """What ``memory_mode: auto`` chose for a run, and the figures it chose on (bytes)."""

    mode: str
    unrolled_bytes: int | None = None  # the unrolled graph's estimated peak (None: not measured)
    free_bytes: int | None = None  # free memory on the device when measured (None: unknown)

    def meta(self) -> dict[str, object]:
        out: dict[str, object] = {"memory_mode": self.mode}
        if self.unrolled_bytes is not None:
            out["unrolled_gb"] = round(self.unrolled_bytes / 2**30, 2)
        if self.free_bytes is not None:
            out["free_gb"] = round(self.free_bytes / 2**30, 2)
        return out


def choose_memory_mode(
    mode: str, net: FlatNet, start: Tensor, images: Tensor, labels: Tensor, lr: Tensor, steps: list[Step],
    aug: DiffAug | None, free_bytes: int | None,
) -> MemoryChoice:
    """``mode`` unless it is ``auto``; then ``unrolled`` (MTT's own) when its graph fits in
    UNROLLED_SHARE of ``free_bytes``, else ``tesla_exact``, which computes the same gradients (up to
    float rounding) in one step's memory at about one more forward/backward per step. Why: the
    unrolled graph grows with syn_steps x batch x image size, and at MNIST IPC 10 with PAD's 80 steps
    it outgrew a 24 GB laptop, which then killed the trial without a word. The estimate measures one
    student step's saved tensors on the real batch (an upper bound: a tensor saved twice counts
    twice) and multiplies by the steps; it draws nothing, so the run is the same either way."""
    if mode != "auto":
        return MemoryChoice(mode)
    if free_bytes is None:
        return MemoryChoice("unrolled")
    step = steps[0]

    def one_step() -> None:
        theta = start.detach().requires_grad_(True)
        x = images.detach().requires_grad_(True)
        y = labels.detach().requires_grad_(labels.is_floating_point())
        loss = _step_loss(net, theta, x[step.indices], y[step.indices], step, aug)
        (g,) = torch.autograd.grad(loss, theta, create_graph=True)
        (theta - lr.detach().requires_grad_(True) * g).sum()

    per_step = saved_tensor_peak(one_step)[1]
    estimate = per_step * len(steps) + start.numel() * start.element_size() * len(steps)
    return MemoryChoice("unrolled" if unrolled_fits(estimate, free_bytes) else "tesla_exact", estimate, free_bytes)


def matching_grads(
    mode: str,
    net: FlatNet,
    start: Tensor,
    target: Tensor,
    images: Tensor,
    labels: Tensor,
    lr: Tensor,
    steps: list[Step],
    aug: DiffAug | None,
    keep_from: int = 0,
) -> MatchGrads:
    """(loss, dL/dimages, dL/dlr, dL/dlabels or None) for one expert segment; ``images``, ``lr``
    and float ``labels`` (logits) are plain tensors (their requires_grad is ignored)."""
    if not 0 <= keep_from < start.numel():
        raise ValueError(f"keep_from must be in [0, {start.numel()}), got {keep_from}")
    if mode == "unrolled":
        return _unrolled(net, start, target, images, labels, lr, steps, aug, keep_from)
    if mode in ("tesla", "tesla_exact"):
        return _two_pass(net, start, target, images, labels, lr, steps, aug, keep_from, exact=mode == "tesla_exact")
    if mode == "auto":
        raise ValueError("memory_mode auto is resolved once per run: call choose_memory_mode first")
    raise ValueError(f"unknown memory_mode {mode!r}; choose one of {', '.join(MEMORY_MODES)}")


def _unrolled(net, start, target, images, labels, lr, steps, aug, keep_from):
    soft = labels.is_floating_point()
    images = images.detach().requires_grad_(True)
    labels = labels.detach().requires_grad_(soft)
    lr = lr.detach().requires_grad_(True)
    theta = start.detach().requires_grad_(True)
    for step in steps:
        loss = _step_loss(net, theta, images[step.indices], labels[step.indices], step, aug)
        (g,) = torch.autograd.grad(loss, theta, create_graph=True)
        theta = theta - lr * g
    loss = match_loss(theta, start, target, keep_from)
    grads = torch.autograd.grad(loss, (images, lr, labels) if soft else (images, lr))
    return MatchGrads(loss.detach(), grads[0], grads[1], grads[2] if soft else None)


def _two_pass(net, start, target, images, labels, lr, steps, aug, keep_from, exact: bool):
    soft = labels.is_floating_point()
    images = images.detach()
    labels = labels.detach()
    alpha = lr.detach()
    # pass 1: the trajectory with detached gradients (memory: the N + 1 parameter vectors)
    thetas = [start.detach()]
    grad_sum = torch.zeros_like(start)
    for step in steps:
        theta = thetas[-1].clone().requires_grad_(True)
        loss = _step_loss(net, theta, images[step.indices], labels[step.indices], step, aug)
        (g,) = torch.autograd.grad(loss, theta)
        grad_sum += g
        thetas.append((thetas[-1] - alpha * g).detach())
    theta_n = thetas[-1]
    loss = match_loss(theta_n, start, target, keep_from)
    adjoint = 2.0 * (theta_n - target) / (start[keep_from:] - target[keep_from:]).pow(2).sum()  # dL/dtheta_N
    adjoint[:keep_from] = 0.0  # filtered parameters do not enter the loss
    # pass 2: one step's graph at a time
    grad_images = torch.zeros_like(images)
    grad_labels = torch.zeros_like(labels) if soft else None
    grad_lr = torch.zeros_like(alpha)
    order = range(len(steps) - 1, -1, -1) if exact else range(len(steps))
    for s in order:
        step = steps[s]
        theta = thetas[s].clone().requires_grad_(True)
        xb = images[step.indices].clone().requires_grad_(True)
        yb = labels[step.indices].clone().requires_grad_(soft)
        step_loss = _step_loss(net, theta, xb, yb, step, aug)
        (g,) = torch.autograd.grad(step_loss, theta, create_graph=True)
        dot = (g * adjoint).sum()  # d(theta_{s+1})/d(.) contracted with the adjoint, up to -alpha
        wrt = (theta, xb) if exact else (xb,)
        got = torch.autograd.grad(dot, wrt + ((yb,) if soft else ()))
        hv, gx = (got[0], got[1]) if exact else (None, got[0])
        grad_images[step.indices] += gx * (-alpha)  # indices within a step are distinct: deterministic
        if soft:
            grad_labels[step.indices] += got[-1] * (-alpha)
        grad_lr -= (g.detach() * adjoint).sum()
        if exact:
            adjoint = adjoint - alpha * hv
    return MatchGrads(loss, grad_images, grad_lr, grad_labels)
