"""DC: Dataset Condensation with Gradient Matching (Zhao, Mopuri & Bilen, ICLR 2021), and DSA:
the same with Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021).

One iteration (the reference's outer iteration ``it``) draws a fresh randomly initialised network
and then, ``outer_loop`` times:

1. for every class c: the gradient of the cross-entropy of a real batch of class c w.r.t. the
   network's parameters, and the same for the class's synthetic images (with its graph), and the
   distance between the two (``matching.gradient_distance``: per-output-channel cosine distances
   summed over layers; 1-D parameters ignored, as in the reference's ``match_loss`` 'ours');
2. one SGD step (momentum 0.5) on the pixels for the sum over classes;
3. except after the last outer loop: ``inner_loop`` epochs of training the network on the
   (detached) synthetic set, batch ``batch_train``, SGD lr_net (no momentum, as the reference's
   final code), with per-sample DSA for DSA.

With ``dsa`` the real and synthetic batches of a class share one augmentation draw (siamese).
(outer_loop, inner_loop) by IPC are the reference's table; IPCs between table entries get outer =
IPC and an inner count interpolated linearly (the reference stops with an error there).
BatchNorm networks get their running statistics from 16 real images per class before each matching
step and frozen for it, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .base import register_method
from .matching import gradient_distance
from .synth import SynthConfig, SynthMethod, _positive_float, _positive_int, class_slice, has_batchnorm

#: the reference's (outer_loop, inner_loop) per IPC
LOOPS: dict[int, tuple[int, int]] = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
BN_IMAGES_PER_CLASS = 16


def loops_for(ipc: int) -> tuple[int, int]:
    """The reference's loops; other IPCs: outer = min(IPC, 50), inner interpolated in IPC."""
    if ipc in LOOPS:
        return LOOPS[ipc]
    keys = sorted(LOOPS)
    if ipc > keys[-1]:
        return keys[-1], LOOPS[keys[-1]][1]
    hi = next(k for k in keys if k > ipc)
    lo = max(k for k in keys if k < ipc)
    t = (ipc - lo) / (hi - lo)
    inner = LOOPS[lo][1] + t * (LOOPS[hi][1] - LOOPS[lo][1])
    return ipc, max(1, int(round(inner)))


@dataclass(frozen=True)
class DCConfig(SynthConfig):
    iterations: int = 1000
    lr_img: float = 0.1
    batch_real: int = 256
    # real, not the DC code's default noise: from noise, a short budget at IPC 10 leaves the set below
    # random real images (digits IPC 10, 10 iterations: 92.6 % from noise, 98.3 % from real, random
    # 95.5 %); DSA, DM, DataDAM and MTT all start from real images (docs/methods.md)
    init: str = "real"
    dsa: bool = False
    outer_loop: int = 0  # image updates per iteration (0 = the reference's value for the IPC)
    inner_loop: int = 0  # network epochs on the synthetic set between them (0 = by IPC)
    lr_net: float = 0.01
    momentum_net: float = 0.0
    batch_train: int = 256


@register_method("dc")
class DC(SynthMethod):
    Config = DCConfig

    def default_config(self, dataset: str, ipc: int) -> DCConfig:
        outer, inner = loops_for(max(1, ipc))
        return DCConfig(outer_loop=outer, inner_loop=inner)

    def validate(self, config: DCConfig) -> None:
        super().validate(config)
        _positive_int(config, "outer_loop", 0)
        _positive_int(config, "inner_loop", 0)
        _positive_float(config, "lr_net")
        _positive_float(config, "momentum_net", allow_zero=True)
        if config.momentum_net >= 1:
            raise UserError(f"option 'momentum_net' must be in [0, 1), got {config.momentum_net!r}")
        _positive_int(config, "batch_train")

    def setup(self, train, ipc, config: DCConfig, seed, device) -> dict[str, Any]:
        outer, inner = loops_for(ipc)
        return {
            "outer": config.outer_loop or outer,
            "inner": config.inner_loop or inner,
            "syn_labels": torch.arange(train.num_classes, device=device).repeat_interleave(ipc),
        }

    def iteration(self, it: int, images: Tensor, optimizer: torch.optim.Optimizer, ctx: dict[str, Any]) -> float:
        train, config, seed, device, ipc = ctx["train"], ctx["config"], ctx["seed"], ctx["device"], ctx["ipc"]
        num_classes, aug, sample = ctx["num_classes"], ctx["aug"], ctx["sampler"]
        net = self.fresh_net(train, config, seed, it, device)
        params = [p for p in net.parameters() if p.requires_grad]
        net_opt = torch.optim.SGD(params, lr=config.lr_net, momentum=config.momentum_net)
        batchnorm = has_batchnorm(net)
        total = 0.0
        for ol in range(ctx["outer"]):
            if batchnorm:
                self._freeze_bn(net, it, ol, ctx)
            optimizer.zero_grad(set_to_none=True)
            for c in range(num_classes):
                real = sample(c, config.batch_real, self.g(seed, "real", it, ol, c))
                syn = images[class_slice(c, ipc)]
                if aug is not None:
                    real, syn = aug.siamese(real, syn, generator=self.g(seed, "dsa", it, ol, c))
                target_real = torch.full((len(real),), c, dtype=torch.long, device=device)
                target_syn = torch.full((len(syn),), c, dtype=torch.long, device=device)
                g_real = torch.autograd.grad(F.cross_entropy(net(real), target_real), params)
                g_real = [g.detach() for g in g_real]
                g_syn = torch.autograd.grad(F.cross_entropy(net(syn), target_syn), params, create_graph=True)
                dist = gradient_distance(g_syn, g_real)
                torch.autograd.backward(dist, inputs=[images])  # class by class: one graph at a time
                total += float(dist.detach())
            optimizer.step()
            if ol == ctx["outer"] - 1:
                break
            self._train_net(net, net_opt, images.detach(), it, ol, ctx)
        return total / (num_classes * ctx["outer"])

    def _train_net(self, net: nn.Module, net_opt: torch.optim.Optimizer, x: Tensor, it: int, ol: int, ctx: dict[str, Any]) -> None:
        """``inner_loop`` epochs on the synthetic set (the reference's ``epoch('train', ...)``)."""
        for il in range(ctx["inner"]):
            self._train_epoch(net, net_opt, x, it, ol, il, ctx)

    def _train_epoch(self, net: nn.Module, net_opt: torch.optim.Optimizer, x: Tensor, it: int, ol: int, il: int, ctx: dict[str, Any]) -> None:
        """Epoch ``il`` of training the network on the (detached) synthetic set, seeded by (it, ol, il)."""
        config, seed, aug, y = ctx["config"], ctx["seed"], ctx["aug"], ctx["syn_labels"]
        net.train()
        g = self.g(seed, "inner", it, ol, il)
        for idx in torch.randperm(len(x), generator=g).split(config.batch_train):
            idx = idx.to(x.device)
            xb = aug(x[idx], generator=g) if aug is not None else x[idx]
            loss = F.cross_entropy(net(xb), y[idx])
            net_opt.zero_grad(set_to_none=True)
            loss.backward()
            net_opt.step()

    def _freeze_bn(self, net: nn.Module, it: int, ol: int, ctx: dict[str, Any]) -> None:
        """Running statistics from 16 real images per class, then BN layers in eval mode."""
        sample, seed = ctx["sampler"], ctx["seed"]
        real = torch.cat([sample(c, BN_IMAGES_PER_CLASS, self.g(seed, "bn", it, ol, c)) for c in range(ctx["num_classes"])])
        net.train()
        with torch.no_grad():
            net(real)
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


@register_method("dsa")
class DSA(DC):
    """DC with differentiable siamese augmentation and real initialisation (DSA paper settings)."""

    def default_config(self, dataset: str, ipc: int) -> DCConfig:
        outer, inner = loops_for(max(1, ipc))
        return DCConfig(outer_loop=outer, inner_loop=inner, init="real", dsa=True)
