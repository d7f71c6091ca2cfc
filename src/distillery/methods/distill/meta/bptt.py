"""DD (Wang, Zhu, Torralba & Efros 2018, "Dataset Distillation") and label distillation (LD:
Bohdal, Yang & Hospedales 2020, "Flexible Dataset Distillation: Learn Labels Instead of Images"):
meta-learning by back-propagation through a network's training on the synthetic set.

DD: each iteration a freshly initialised network (seeded by (seed, iteration): the reference's
"unknown init" default, so the set must train any initialisation) takes ``unroll_steps`` x
``unroll_epochs`` differentiable SGD steps on the synthetic set with learned per-step learning rates
(softplus-parametrised, start ``lr_inner``); the cross-entropy of the resulting weights on a
seeded real batch is backpropagated through every step to the pixels and the step sizes (Adam,
betas (0.5, 0.999), as the reference). Unlike the reference, whose every step has its own images,
each step here uses the whole synthetic set, so the set has exactly IPC images per class.
The unrolled graph grows with steps x images x image size (18.5 GB for CIFAR-10's or MNIST's IPC
10 at 30 steps, 92 GB at IPC 50), so ``memory_mode: auto`` keeps it only where it fits and else
goes ``stepwise``: the same gradient from one step's graph at a time (``stepwise_loss``).

LD: the images stay real ones and the labels are learned. The base examples are the `random`
baseline's draw for the same seed (the reference draws class-balanced random real images too), so
an LD row against random's is a paired comparison of learned against hard labels on the same
images. Each iteration an online network (Adam,
``lr_online``) takes one differentiable SGD step (``lr_inner``) on a seeded batch of the synthetic
set with the soft labels, the cross-entropy of the stepped weights on a real batch is
backpropagated to the labels, and the online network then trains on the same inner loss. It is
re-initialised by the reference's rule: when the moving average (over ``online_patience`` steps) of
the stepped network's error on the real batches has not reached a new minimum for another
``online_patience`` steps, i.e. once the online network stops learning. (A fixed restart every 50
steps, this module's first rule, keeps a freshly initialised network in charge a third of the time;
the gradient a fresh network gives the labels is mostly "be uniform", which softened MNIST's rows
to a mean top probability of 0.7 and cost accuracy: 94.7 % at 100 iterations against 95.7 % now,
random 95.4 %.) Labels are probability rows, projected after every step onto the simplex as the
reference does (clamp to [0, 1], renormalise). Like the reference, a run returns the labels that
scored best, not the last ones: every ``select_every`` iterations and at the end a network trained
on the set with them is tested on training images outside the set (meta/selection.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ...utils.device import free_memory_bytes
from ...utils.memory import saved_tensor_peak, unrolled_fits
from ..base import register_method
from ..learned import LearnedSetConfig, LearnedSetMethod, check_choice, finite_positive
from ..synth import _positive_int, validate_net_options
from .selection import label_error, scoring_images

#: DD's ways to get the gradient through its unrolled steps (the same gradient, up to float rounding)
DD_MEMORY_MODES = ("auto", "unrolled", "stepwise")


@dataclass(frozen=True)
class BPTTConfig(LearnedSetConfig):
    net: str = "convnet"
    net_width: int = 128
    net_depth: int = 3
    net_norm: str = "instancenorm"
    lr_inner: float = 0.01  # the inner SGD step size (DD: the learned step sizes' start)


@dataclass(frozen=True)
class DDConfig(BPTTConfig):
    iterations: int = 1000
    lr_img: float = 0.01  # Adam on pixels and step sizes (the reference's lr)
    lr_label: float = 0.01
    learn_labels: bool = False  # the reference's labels are fixed
    batch_real: int = 1024
    lr_inner: float = 0.02  # the reference's distill_lr
    unroll_steps: int = 10
    unroll_epochs: int = 3
    learn_lr: bool = True
    #: auto: ``unrolled`` (the reference's one graph) while its estimate takes at most half the free
    #: memory, else ``stepwise`` (one step's graph at a time, about one more forward/backward a step)
    memory_mode: str = "auto"


@dataclass(frozen=True)
class LDConfig(BPTTConfig):
    iterations: int = 1000
    lr_img: float = 0.01  # only when learn_images (the reference keeps the real images)
    #: the reference's Adam default 1e-3 is for ~20k steps (400 epochs of 1024-image batches);
    #: at 40 iterations it barely moves the labels (digits IPC 1: 78.7% vs random 78.4%; 1e-2: 81.4%)
    lr_label: float = 1e-2
    learn_images: bool = False
    learn_labels: bool = True
    batch_real: int = 1024
    inner_batch: int = 50
    lr_online: float = 1e-3
    #: the restart rule's moving-average window and patience (the reference's 50, which it raises
    #: to 100 for 100 classes and 200 above 100 base examples)
    online_patience: int = 50
    #: score the labels every this many iterations and at the end, and return the best-scoring
    #: (meta/selection.py); 0, or a run no longer than this, returns the last labels
    select_every: int = 100
    select_steps: int = 200  # Adam steps of the scoring network on the set
    select_images: int = 2000  # training images outside the set it is tested on


class BPTT(LearnedSetMethod):
    """Shared: the network, labels as probability rows, and one differentiable SGD step."""

    Config = BPTTConfig

    def validate(self, config: BPTTConfig) -> None:
        super().validate(config)
        validate_net_options(config)
        finite_positive("lr_inner", config.lr_inner)

    def initial_labels(self, hard: Tensor, num_classes: int, config: BPTTConfig) -> Tensor:
        """One-hot probability rows (LD's reference starts from uniform rows, which a short run
        cannot move far enough to be better than the hard labels: we start where random does)."""
        return F.one_hot(hard, num_classes).float()

    def export_labels(self, labels: Tensor, config: BPTTConfig) -> Tensor:
        return labels / labels.sum(1, keepdim=True)

    def after_step(self, it: int, tensors: dict[str, Tensor], ctx: dict[str, Any]) -> None:
        if ctx["config"].learn_labels:
            with torch.no_grad():  # the reference's projection onto probability rows
                labels = tensors["labels"]
                labels.clamp_(0, 1)
                labels.div_(labels.sum(1, keepdim=True).clamp_min(1e-12))

    def targets(self, tensors: dict[str, Tensor], config: BPTTConfig) -> Tensor:
        """What the inner loss trains on: the learned rows, or the fixed hard labels."""
        return tensors["labels"] if config.learn_labels else tensors["labels"].argmax(1)


def sgd_step(net: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor, lr: Tensor | float) -> dict[str, Tensor]:
    """params - lr * grad of the inner loss, differentiable in x, y, lr and params."""
    loss = F.cross_entropy(functional_call(net, (params, buffers), (x,)), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    return {k: p - lr * g for (k, p), g in zip(params.items(), grads)}


def unrolled_loss(net: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor, lrs: Tensor,
                  x_real: Tensor, y_real: Tensor) -> Tensor:
    """DD's objective with one graph through every step: the cross-entropy on the real batch of
    the weights after ``len(lrs)`` SGD steps on (x, y), step s at lr ``lrs[s]``."""
    for step in range(len(lrs)):
        params = sgd_step(net, params, buffers, x, y, lrs[step])
    return F.cross_entropy(functional_call(net, (params, buffers), (x_real,)), y_real)


def stepwise_loss(net: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor, lrs: Tensor,
                  x_real: Tensor, y_real: Tensor) -> Tensor:
    """``unrolled_loss``'s value, with a graph whose gradient in x, lrs and (float) y is the
    unrolled one, in one step's memory. Pass 1 takes the steps with detached gradients and keeps
    each step's weights (30 copies of a ConvNet's ~0.3M parameters); pass 2 walks back, recomputing
    one step's graph at a time, and carries the adjoint a_s = dL/dtheta_s with one Hessian-vector
    product a step (theta_{s+1} = theta_s - lr_s g_s gives a_s = a_{s+1} - lr_s H_s a_{s+1},
    dL/dlr_s = -g_s . a_{s+1} and dL/dx += -lr_s d(g_s . a_{s+1})/dx), the scheme of
    ``mtt/matching.py``'s ``tesla_exact``. The returned tensor is the loss plus a term that is zero
    in value and carries those gradients, so the caller's ``backward()`` is unchanged."""
    soft = y.is_floating_point()
    xd, yd, alphas = x.detach(), y.detach(), lrs.detach()
    names = list(params)

    def step_grads(theta: dict[str, Tensor], xs: Tensor, ys: Tensor, create_graph: bool) -> tuple[Tensor, ...]:
        loss = F.cross_entropy(functional_call(net, (theta, buffers), (xs,)), ys)
        return torch.autograd.grad(loss, list(theta.values()), create_graph=create_graph)

    thetas = [{k: v.detach() for k, v in params.items()}]  # pass 1: theta_0 .. theta_N, no graph kept
    for s in range(len(alphas)):
        theta = {k: v.detach().requires_grad_(True) for k, v in thetas[-1].items()}
        grads = step_grads(theta, xd, yd, create_graph=False)
        thetas.append({k: (thetas[-1][k] - alphas[s] * g).detach() for k, g in zip(names, grads)})
    final = {k: v.detach().requires_grad_(True) for k, v in thetas[-1].items()}
    loss = F.cross_entropy(functional_call(net, (final, buffers), (x_real,)), y_real)
    adjoint = list(torch.autograd.grad(loss, list(final.values())))
    grad_x, grad_lr = torch.zeros_like(xd), torch.zeros_like(alphas)
    grad_y = torch.zeros_like(yd) if soft else None
    for s in range(len(alphas) - 1, -1, -1):  # pass 2: backwards, one step's graph at a time
        theta = {k: v.detach().requires_grad_(True) for k, v in thetas[s].items()}
        xs = xd.clone().requires_grad_(True)
        ys = yd.clone().requires_grad_(True) if soft else yd
        grads = step_grads(theta, xs, ys, create_graph=True)
        dot = sum((g * a).sum() for g, a in zip(grads, adjoint))
        wrt = [*theta.values(), xs, *([ys] if soft else [])]
        got = torch.autograd.grad(dot, wrt, allow_unused=True)
        got = [torch.zeros_like(t) if gt is None else gt for t, gt in zip(wrt, got)]
        grad_x -= alphas[s] * got[len(names)]
        if grad_y is not None:
            grad_y -= alphas[s] * got[len(names) + 1]
        grad_lr[s] = -dot.detach()
        adjoint = [a - alphas[s] * h for a, h in zip(adjoint, got[: len(names)])]
    carrier = (x * grad_x).sum() + (lrs * grad_lr).sum()
    if grad_y is not None:
        carrier = carrier + (y * grad_y).sum()
    return loss.detach() + (carrier - carrier.detach())


@register_method("dd")
class DD(BPTT):
    Config = DDConfig
    adam_betas = (0.5, 0.999)

    def validate(self, config: DDConfig) -> None:
        super().validate(config)
        _positive_int(config, "unroll_steps")
        _positive_int(config, "unroll_epochs")
        check_choice("memory_mode", config.memory_mode, DD_MEMORY_MODES)

    def init_tensors(self, train, ipc, config: DDConfig, seed, device) -> dict[str, Tensor]:
        tensors = super().init_tensors(train, ipc, config, seed, device)
        steps = config.unroll_steps * config.unroll_epochs
        raw = math.log(math.expm1(config.lr_inner))  # softplus^-1, as the reference stores them
        tensors["raw_lr"] = torch.full((steps,), raw, device=device)
        # (mode index in DD_MEMORY_MODES, unrolled estimate, free bytes): -1 until the first
        # iteration resolves it; a resumed run keeps its run's choice, so it repeats the same bits
        tensors["memory"] = torch.tensor([-1.0, math.nan, math.nan], dtype=torch.float64, device=device)
        return tensors

    def resolve_memory_mode(self, tensors: dict[str, Tensor], config: DDConfig, net: nn.Module, params: dict[str, Tensor],
                    buffers: dict[str, Tensor], x: Tensor, y: Tensor, lrs: Tensor, device: torch.device) -> str:
        """The run's mode, chosen on its first iteration: ``memory_mode`` unless it is ``auto``;
        then ``unrolled`` when one step's saved tensors (measured, an upper bound) times the steps
        fit in half the free memory, else ``stepwise``. It draws nothing, so it changes no seed."""
        code = int(tensors["memory"][0])
        if code >= 0:
            return DD_MEMORY_MODES[code]
        estimate, free = math.nan, math.nan
        mode = config.memory_mode
        if mode == "auto":
            def one_step() -> None:
                theta = {k: v.detach().requires_grad_(True) for k, v in params.items()}
                sgd_step(net, theta, buffers, x.detach().requires_grad_(True), y.detach(), lrs[0].detach().requires_grad_(True))

            per_step = saved_tensor_peak(one_step)[1]
            free_bytes = free_memory_bytes(device)
            estimate = float(per_step * len(lrs))
            free = math.nan if free_bytes is None else float(free_bytes)
            mode = "unrolled" if unrolled_fits(int(estimate), free_bytes) else "stepwise"
        tensors["memory"].copy_(torch.tensor([float(DD_MEMORY_MODES.index(mode)), estimate, free], dtype=torch.float64))
        return mode

    def learning_rates(self, config: DDConfig) -> dict[str, float]:
        rates = super().learning_rates(config)
        if config.learn_lr:
            rates["raw_lr"] = config.lr_img
        return rates

    def loss(self, it: int, tensors: dict[str, Tensor], ctx: dict[str, Any]) -> Tensor:
        config, seed = ctx["config"], ctx["seed"]
        net = self.seeded_net(ctx["train"], config, seed, "net", it).to(ctx["device"]).train()
        params = {k: v.detach().requires_grad_(True) for k, v in net.named_parameters()}
        buffers = dict(net.named_buffers())
        x, y = tensors["images"], self.targets(tensors, config)
        lrs = F.softplus(tensors["raw_lr"])
        x_real, y_real = ctx["real"](config.batch_real, self.g(seed, "real", it))
        mode = self.resolve_memory_mode(tensors, config, net, params, buffers, x, y, lrs, ctx["device"])
        loss_fn = unrolled_loss if mode == "unrolled" else stepwise_loss
        return loss_fn(net, params, buffers, x, y, lrs, x_real, y_real)

    def extra_meta(self, tensors: dict[str, Tensor], config: DDConfig) -> dict[str, Any]:
        lrs = F.softplus(tensors["raw_lr"].detach())
        meta: dict[str, Any] = {"learned_lr_mean": float(lrs.mean()), "learned_lr_min": float(lrs.min()), "learned_lr_max": float(lrs.max())}
        code, estimate, free = (float(v) for v in tensors["memory"])
        if code >= 0:
            meta["memory_mode"] = DD_MEMORY_MODES[int(code)]
            meta.update({k: round(v / 2**30, 2) for k, v in (("unrolled_gb", estimate), ("free_gb", free)) if math.isfinite(v)})
        return meta


@register_method("ld")
class LD(BPTT):
    Config = LDConfig

    def validate(self, config: LDConfig) -> None:
        super().validate(config)
        for name in ("inner_batch", "online_patience", "select_steps", "select_images"):
            _positive_int(config, name)
        _positive_int(config, "select_every", minimum=0)
        finite_positive("lr_online", config.lr_online)

    @staticmethod
    def selects(config: LDConfig) -> bool:
        """Whether a run scores its labels (it has more than one checkpoint to choose from)."""
        return config.learn_labels and 0 < config.select_every < config.iterations

    def init_tensors(self, train, ipc, config: LDConfig, seed, device) -> dict[str, Tensor]:
        tensors = super().init_tensors(train, ipc, config, seed, device)
        tensors["best_labels"] = tensors["labels"].clone()
        tensors["best"] = torch.tensor([math.inf, 0.0], dtype=torch.float64, device=device)  # (error, iteration)
        return tensors

    def setup(self, train, ipc, config: LDConfig, seed, device) -> dict[str, Any]:
        return {"scoring": scoring_images(train, ipc, seed, config.select_images)} if self.selects(config) else {}

    def _online(self, ctx: dict[str, Any], generation: int) -> dict[str, Any]:
        """A fresh online network (seeded by its generation) with empty restart statistics."""
        net = self.seeded_net(ctx["train"], ctx["config"], ctx["seed"], "online", generation).to(ctx["device"]).train()
        return {"net": net, "opt": torch.optim.Adam(net.parameters(), lr=ctx["config"].lr_online), "generation": generation,
                "errors": [], "lowest": math.inf, "since_lowest": 0}

    def loss(self, it: int, tensors: dict[str, Tensor], ctx: dict[str, Any]) -> Tensor:
        config, seed = ctx["config"], ctx["seed"]
        if ctx.get("online") is None:
            ctx["online"] = self._online(ctx, 0)
        net = ctx["online"]["net"]
        pick = torch.randperm(len(tensors["images"]), generator=self.g(seed, "inner", it))[: config.inner_batch].to(tensors["images"].device)
        x, y = tensors["images"][pick], self.targets(tensors, config)[pick]
        params = {k: v.detach().requires_grad_(True) for k, v in net.named_parameters()}
        buffers = dict(net.named_buffers())
        stepped = sgd_step(net, params, buffers, x, y, config.lr_inner)
        x_real, y_real = ctx["real"](config.batch_real, self.g(seed, "real", it))
        ctx["inner"] = (x.detach(), y.detach())
        logits = functional_call(net, (stepped, buffers), (x_real,))
        ctx["real_error"] = float((logits.detach().argmax(1) != y_real).float().mean())
        return F.cross_entropy(logits, y_real)

    def after_step(self, it: int, tensors: dict[str, Tensor], ctx: dict[str, Any]) -> None:
        super().after_step(it, tensors, ctx)
        online = ctx["online"]
        x, y = ctx.pop("inner")
        online["opt"].zero_grad(set_to_none=True)
        F.cross_entropy(online["net"](x), y).backward()
        online["opt"].step()
        if stalled(online, ctx.pop("real_error"), ctx["config"].online_patience):
            ctx["online"] = self._online(ctx, online["generation"] + 1)
        config, done = ctx["config"], it + 1
        if self.selects(config) and (done % config.select_every == 0 or done == config.iterations):
            self._select(done, tensors, ctx)

    def _select(self, iteration: int, tensors: dict[str, Tensor], ctx: dict[str, Any]) -> None:
        """Score the current labels; keep them when they beat the best so far."""
        config, seed, (score_x, score_y) = ctx["config"], ctx["seed"], ctx["scoring"]
        labels = tensors["labels"].detach()
        error = label_error(lambda: self.seeded_net(ctx["train"], config, seed, "select").to(ctx["device"]),
                            tensors["images"].detach(), labels, config.select_steps, config.inner_batch, config.lr_online,
                            lambda step: self.g(seed, "select-batch", step), score_x, score_y)
        if error < float(tensors["best"][0]):
            with torch.no_grad():
                tensors["best_labels"].copy_(labels)
                tensors["best"].copy_(torch.tensor([error, float(iteration)], dtype=torch.float64))

    def synthetic_set(self, tensors: dict[str, Tensor], train, ipc: int, config: LDConfig, seed: int):
        """The best-scoring labels once any were scored (else the current ones)."""
        error, iteration = (float(v) for v in tensors["best"])
        if not self.selects(config) or not math.isfinite(error):
            return super().synthetic_set(tensors, train, ipc, config, seed)
        synset = super().synthetic_set({**tensors, "labels": tensors["best_labels"]}, train, ipc, config, seed)
        synset.meta.update(selected_iteration=int(iteration), selection_error=error)
        return synset

    def extra_state(self, ctx: dict[str, Any]) -> dict[str, Any]:
        online = ctx.get("online")
        if online is None:
            return {}
        return {"online": {"net": online["net"].state_dict(), "opt": online["opt"].state_dict(), "generation": online["generation"],
                           "errors": list(online["errors"]), "lowest": online["lowest"], "since_lowest": online["since_lowest"]}}

    def restore_extra(self, ctx: dict[str, Any], state: Mapping[str, Any]) -> None:
        if "online" in state:
            saved = state["online"]
            ctx["online"] = self._online(ctx, int(saved["generation"]))
            ctx["online"]["net"].load_state_dict(saved["net"])
            ctx["online"]["opt"].load_state_dict(saved["opt"])
            ctx["online"].update(errors=list(saved["errors"]), lowest=float(saved["lowest"]), since_lowest=int(saved["since_lowest"]))


def stalled(online: dict[str, Any], error: float, patience: int) -> bool:
    """LD's restart rule, updating ``online``'s statistics in place: True once the moving average of
    the last ``patience`` errors has gone ``patience`` further steps without a new minimum."""
    errors = online["errors"]
    errors.append(error)
    if len(errors) > patience:
        errors.pop(0)
    if len(errors) < patience:
        return False
    average = sum(errors) / patience
    if average < online["lowest"]:
        online["lowest"], online["since_lowest"] = average, 0
        return False
    online["since_lowest"] += 1
    return online["since_lowest"] > patience
