"""What the meta-learning (DD, LD) and kernel (KIP, FRePo, RFAD) methods share: a synthetic set whose
images and/or labels are learned by Adam against a loss on real batches, a resumable loop that
reports Progress after every iteration, and the export of learned labels to the protocol.

Unlike SynthMethod (DC/DM/DataDAM: SGD on the pixels only), these methods learn several tensors
(images, labels, step sizes, a Platt scale) with their own learning rates, as their papers do, so
the loop owns a dict of named leaf tensors and one Adam with a parameter group per tensor. A
subclass says which tensors exist (``init_tensors``) and computes the loss (``loss``); the base
backpropagates, steps, snapshots and restores. State a subclass keeps outside the tensors (FRePo's
model pool) goes through ``extra_state``/``restore_extra``.

Labels: the learnable label tensor is real-valued [N, C]. Kernel methods regress on it (KIP's
centred one-hot init: 1 - 1/C for the class, -1/C elsewhere); DD/LD read it as logits. The
evaluation protocol takes probabilities, so a set with learned labels exports
softmax(labels / label_temperature) (a learned-label set is marked soft; with labels frozen the
hard class-major labels are exported unchanged).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.base import ImageData
from ..errors import UserError
from ..nets import build_network
from ..utils.seeding import derive_seed, generator
from .base import DistillMethod, Progress, ProgressCallback, SyntheticSet, Timer, check_resume_state
from .init import check_ipc, initial_images, labels_for
from .synth import INITS, _clone_cpu, _positive_float, _positive_int, net_options


@dataclass(frozen=True)
class LearnedSetConfig:
    """Options every learned-set method has (each method sets its own defaults)."""

    iterations: int = 1000
    lr_img: float = 0.01  # Adam on the pixels
    lr_label: float = 0.01  # Adam on the label tensor (when learn_labels)
    learn_images: bool = True
    learn_labels: bool = False
    #: learned regression labels are exported as softmax(labels / label_temperature); 0.1 turns the
    #: centred one-hot start (0.9 vs -0.1) into rows within 4e-4 of the hard label
    label_temperature: float = 0.1
    batch_real: int = 256  # real (target) images per iteration, drawn uniformly from the training set
    init: str = "real"  # real | noise


def validate_learned(config: LearnedSetConfig) -> None:
    _positive_int(config, "iterations", 0)
    _positive_float(config, "lr_img")
    _positive_float(config, "lr_label")
    _positive_float(config, "label_temperature")
    _positive_int(config, "batch_real")
    if config.init not in INITS:
        raise UserError(f"option 'init' must be one of {', '.join(INITS)}, got {config.init!r}")
    if not config.learn_images and not config.learn_labels:
        raise UserError("options 'learn_images' and 'learn_labels' are both false: nothing to learn; set one to true")


def centred_one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """KIP's regression targets: one-hot minus 1/C (each row sums to 0)."""
    return F.one_hot(labels, num_classes).float() - 1.0 / num_classes


class RealBatches:
    """Seeded batches of real training images with their labels (uniform over the training set)."""

    def __init__(self, train: ImageData, device: torch.device) -> None:
        self.x, self.y, self.device = train.train_x, train.train_y, device

    def __call__(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        pick = torch.randperm(len(self.y), generator=g)[:n].to(self.y.device)
        return self.x[pick].to(self.device, non_blocking=True), self.y[pick].to(self.device, non_blocking=True)


class LearnedSetMethod(DistillMethod):
    """Base class; subclasses implement ``loss`` and may extend ``init_tensors``/``setup``."""

    Config = LearnedSetConfig
    #: Adam's betas for every learned tensor (DD's reference uses (0.5, 0.999))
    adam_betas: tuple[float, float] = (0.9, 0.999)

    def validate(self, config: LearnedSetConfig) -> None:
        validate_learned(config)

    def g(self, seed: int, *parts: object) -> torch.Generator:
        return generator(seed, self.name, *parts)

    def seeded_net(self, train: ImageData, config: Any, seed: int, *parts: object) -> nn.Module:
        """A network from the config's net options, its weights a pure function of (seed, parts)
        (methods with a network: FRePo's pool, RFAD's random features, DD/LD)."""
        return build_network(config.net, train.channels, train.image_size, train.num_classes,
                             seed=derive_seed(seed, self.name, *parts), **net_options(config))

    # -- what a subclass says ------------------------------------------------------------------

    def initial_labels(self, hard: Tensor, num_classes: int, config: LearnedSetConfig) -> Tensor:
        """The label tensor's start (kernel methods: centred one-hot; DD/LD override: logits)."""
        return centred_one_hot(hard, num_classes)

    def init_tensors(self, train: ImageData, ipc: int, config: LearnedSetConfig, seed: int, device: torch.device) -> dict[str, Tensor]:
        """Named tensors the loop keeps (images and labels always; a subclass adds its own).

        ``init: real`` starts from `random`'s own draw for the seed (``initial_images``, as every
        method), so a learned set's row against `random` is paired."""
        images = initial_images(train, ipc, seed, config.init)
        images = images.to(device=device, dtype=torch.float32).contiguous()
        hard = labels_for(train.num_classes, ipc).to(device)
        return {"images": images, "labels": self.initial_labels(hard, train.num_classes, config).to(device)}

    def learning_rates(self, config: LearnedSetConfig) -> dict[str, float]:
        """Tensor name -> Adam learning rate, for the tensors that are learned."""
        rates = {}
        if config.learn_images:
            rates["images"] = config.lr_img
        if config.learn_labels:
            rates["labels"] = config.lr_label
        return rates

    def setup(self, train: ImageData, ipc: int, config: Any, seed: int, device: torch.device) -> dict[str, Any]:
        return {}

    @abstractmethod
    def loss(self, it: int, tensors: dict[str, Tensor], ctx: dict[str, Any]) -> Tensor:
        """The scalar loss of iteration ``it`` (differentiable in the learned tensors)."""

    def after_step(self, it: int, tensors: dict[str, Tensor], ctx: dict[str, Any]) -> None:
        """Work after the optimizer step (FRePo trains its model pool here)."""

    def extra_state(self, ctx: dict[str, Any]) -> dict[str, Any]:
        return {}

    def restore_extra(self, ctx: dict[str, Any], state: Mapping[str, Any]) -> None:
        pass

    # -- the loop --------------------------------------------------------------------------------

    def distill(
        self,
        train: ImageData,
        ipc: int,
        config: LearnedSetConfig,
        seed: int,
        device: torch.device,
        progress_callback: ProgressCallback | None = None,
        resume_state: Mapping[str, Any] | None = None,
    ) -> SyntheticSet:
        self.validate(config)
        check_ipc(train, ipc)
        device = torch.device(device)
        tensors = self.init_tensors(train, ipc, config, seed, device)
        rates = self.learning_rates(config)
        for name in rates:
            tensors[name].requires_grad_(True)
        optimizer = torch.optim.Adam([{"params": [tensors[n]], "lr": lr, "name": n} for n, lr in rates.items()], betas=self.adam_betas)
        ctx: dict[str, Any] = {
            "train": train, "ipc": ipc, "config": config, "seed": seed, "device": device,
            "real": RealBatches(train, device), "num_classes": train.num_classes,
        }
        ctx.update(self.setup(train, ipc, config, seed, device))
        start, elapsed = 0, 0.0
        if resume_state is not None:
            start, elapsed = self._restore(resume_state, tensors, optimizer, ctx, ipc, seed)
        timer = Timer(elapsed)
        total = config.iterations
        for it in range(start, total):
            optimizer.zero_grad(set_to_none=True)
            loss = self.loss(it, tensors, ctx)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{self.name}: loss is {float(loss)} at iteration {it}; lower lr_img/lr_label")
            loss.backward()
            optimizer.step()
            self.after_step(it, tensors, ctx)
            if progress_callback is not None:
                now = timer()
                progress_callback(Progress(it + 1, total, float(loss.detach()), now, self._snapshot(tensors, optimizer, ctx, it + 1, now, ipc, seed)))
        return self.synthetic_set(tensors, train, ipc, config, seed)

    def synthetic_set(self, tensors: dict[str, Tensor], train: ImageData, ipc: int, config: LearnedSetConfig, seed: int) -> SyntheticSet:
        hard = labels_for(train.num_classes, ipc).to(tensors["images"].device)
        labels = self.export_labels(tensors["labels"].detach().float(), config) if config.learn_labels else hard
        meta = {"method": self.name, "ipc": ipc, "seed": seed, "iterations": config.iterations, "learned_labels": bool(config.learn_labels)}
        meta.update(self.extra_meta(tensors, config))
        return SyntheticSet(tensors["images"].detach().clone(), labels, meta=meta)

    def set_from_state(self, state: Mapping[str, Any], train: ImageData, ipc: int, config: LearnedSetConfig, seed: int) -> SyntheticSet:
        """The set a run stopped at ``state`` (a Progress snapshot) would return, with the same
        label export (bench/learning_curve.py evaluates snapshots with it)."""
        return self.synthetic_set(dict(state["tensors"]), train, ipc, config, seed)

    def export_labels(self, labels: Tensor, config: LearnedSetConfig) -> Tensor:
        """Learned labels as the protocol's probability rows: softmax(labels / label_temperature)."""
        return torch.softmax(labels / config.label_temperature, dim=1)

    def extra_meta(self, tensors: dict[str, Tensor], config: Any) -> dict[str, Any]:
        return {}

    def _snapshot(self, tensors, optimizer, ctx, iteration: int, elapsed: float, ipc: int, seed: int):
        def state() -> dict[str, Any]:
            return {
                "method": self.name, "ipc": ipc, "seed": seed, "iteration": iteration, "elapsed": elapsed,
                "tensors": {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()},
                "optimizer": _clone_cpu(optimizer.state_dict()),
                "extra": _clone_cpu(self.extra_state(ctx)),
            }

        return state

    def _restore(self, state: Mapping[str, Any], tensors, optimizer, ctx, ipc: int, seed: int) -> tuple[int, float]:
        check_resume_state(state, self.name, ipc, seed, ("iteration", "tensors", "optimizer"))
        saved = state["tensors"]
        for name, tensor in tensors.items():
            if name not in saved or tuple(saved[name].shape) != tuple(tensor.shape):
                raise UserError(f"resume state tensor {name!r} is missing or has another shape than {tuple(tensor.shape)}")
            with torch.no_grad():
                tensor.copy_(saved[name].to(tensor.device))
        optimizer.load_state_dict(state["optimizer"])
        self.restore_extra(ctx, state.get("extra", {}))
        return int(state["iteration"]), float(state.get("elapsed", 0.0))


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"option {name!r} must be one of {', '.join(choices)}, got {value!r}")


def finite_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UserError(f"option {name!r} must be a finite number > 0, got {value!r}")
