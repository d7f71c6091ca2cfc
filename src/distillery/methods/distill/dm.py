"""DM: Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023).

Each iteration draws a fresh randomly initialised network (seeded by (seed, iteration)), freezes
it, and minimises, summed over classes, the squared distance between the mean embeddings
(``net.embed``, the penultimate features) of a real batch and the class's synthetic images, both
augmented with ONE shared DSA draw per class. One SGD step (momentum 0.5) on the pixels per
iteration. Defaults follow the reference main_DM.py: 20000 iterations, lr_img 1 (10 for CIFAR-10
at IPC >= 100), batch_real 256, init real.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ..errors import UserError
from .base import register_method
from .matching import mean_distance
from .synth import SynthConfig, SynthMethod, class_slice, has_batchnorm


@dataclass(frozen=True)
class DMConfig(SynthConfig):
    iterations: int = 20000
    lr_img: float = 1.0
    batch_real: int = 256
    init: str = "real"
    dsa: bool = True
    #: classes per forward pass (their losses are summed and backpropagated together); 0 = auto:
    #: all classes at once for batch-norm networks (the reference, whose BN statistics then span
    #: all classes), otherwise as many classes as fit ~4096 real images. The loss is a sum over
    #: classes, so without batch norm the chunking changes only speed and peak memory.
    class_chunk: int = 0


def chunk_classes(num_classes: int, chunk: int) -> list[range]:
    return [range(s, min(s + chunk, num_classes)) for s in range(0, num_classes, chunk)]


def auto_chunk(config: Any, num_classes: int, batchnorm: bool, budget: int = 4096) -> int:
    if config.class_chunk > 0:
        return min(config.class_chunk, num_classes)
    if batchnorm:
        return num_classes
    return max(1, min(num_classes, budget // max(1, config.batch_real)))


def augmented_class_batches(
    method: SynthMethod, it: int, classes: range, images: Tensor, ctx: dict[str, Any],
    class_images: Callable[[int], Tensor] | None = None,
) -> tuple[list[Tensor], list[Tensor]]:
    """Real and synthetic batches of each class, augmented siamese-wise (one draw per class).

    ``class_images(c)`` gives class c's synthetic images (differentiable in ``images``) for a
    method that stores something other than the images themselves (KFS decodes them); by default
    they are the class's slice of ``images``."""
    config, seed, ipc = ctx["config"], ctx["seed"], ctx["ipc"]
    reals, syns = [], []
    for c in classes:
        real = ctx["sampler"](c, config.batch_real, method.g(seed, "real", it, c))
        syn = class_images(c) if class_images is not None else images[class_slice(c, ipc)]
        if ctx["aug"] is not None:
            real, syn = ctx["aug"].siamese(real, syn, generator=method.g(seed, "dsa", it, c))
        reals.append(real)
        syns.append(syn)
    return reals, syns


@register_method("dm")
class DM(SynthMethod):
    Config = DMConfig

    def default_config(self, dataset: str, ipc: int) -> DMConfig:
        big = ipc >= 100 and "cifar100" not in dataset.lower().replace("-", "")
        return DMConfig(lr_img=10.0 if big else 1.0)

    def validate(self, config: DMConfig) -> None:
        super().validate(config)
        if isinstance(config.class_chunk, bool) or not isinstance(config.class_chunk, int) or config.class_chunk < 0:
            raise UserError(f"option 'class_chunk' must be an integer >= 0 (0 = auto), got {config.class_chunk!r}")

    def iteration(self, it: int, images: Tensor, optimizer: torch.optim.Optimizer, ctx: dict[str, Any]) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = backward_mean_embedding_loss(self, it, images, ctx)
        optimizer.step()
        return loss


def backward_mean_embedding_loss(
    method: SynthMethod, it: int, images: Tensor, ctx: dict[str, Any], class_images: Callable[[int], Tensor] | None = None,
) -> float:
    """DM's objective for iteration ``it``, backpropagated into ``images.grad``: a fresh frozen
    network (seeded by (seed, it)), then per class the squared distance between the mean
    embeddings of a real batch and the class's synthetic images, chunked over classes (the sum is
    the same). Returns the loss per class. Shared with methods that change only what the
    synthetic images are (``class_images``, see ``augmented_class_batches``)."""
    train, config, seed, device = ctx["train"], ctx["config"], ctx["seed"], ctx["device"]
    net = method.fresh_net(train, config, seed, it, device)
    net.requires_grad_(False)
    chunk = auto_chunk(config, ctx["num_classes"], has_batchnorm(net))
    total = 0.0
    for classes in chunk_classes(ctx["num_classes"], chunk):
        reals, syns = augmented_class_batches(method, it, classes, images, ctx, class_images)
        with torch.no_grad():
            emb_real = net.embed(torch.cat(reals)).split([len(r) for r in reals])
        emb_syn = net.embed(torch.cat(syns)).split([len(s) for s in syns])
        loss = sum(mean_distance(r, s) for r, s in zip(emb_real, emb_syn))
        torch.autograd.backward(loss, inputs=[images])
        total += float(loss.detach())
    return total / ctx["num_classes"]
