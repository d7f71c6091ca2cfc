"""What DC, DSA, DM and DataDAM share: a learnable image tensor optimised by SGD with momentum, a
fresh seeded network per iteration, seeded class-wise real batches, siamese augmentation, and a
resumable iteration loop that reports Progress after every iteration.

Randomness: every draw comes from ``generator(seed, method, purpose, iteration, ...)`` (or a network
seeded by ``derive_seed(seed, method, "net", iteration)``), so an iteration's draws do not depend
on what happened before it and a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..aug import DiffAug, default_strategy
from ..data.base import ImageData
from ..errors import UserError
from ..nets import NETWORKS, build_network
from ..utils.seeding import derive_seed, generator
from .base import DistillMethod, Progress, ProgressCallback, SyntheticSet, Timer, check_resume_state
from .decode import Decoder, repeat_labels
from .init import check_ipc, initial_images, labels_for

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
INITS = ("real", "noise")


@dataclass(frozen=True)
class SynthConfig:
    """Hyperparameters every image-optimising method has (each method sets its own defaults)."""

    iterations: int = 1000
    lr_img: float = 0.1  # SGD on the synthetic pixels
    momentum_img: float = 0.5
    batch_real: int = 256  # real images per class per matching step
    init: str = "real"  # real | noise
    net: str = "convnet"  # the distillation network (a fresh random one per iteration)
    net_width: int = 128  # convnet options (ignored by other archs)
    net_depth: int = 3
    net_norm: str = "instancenorm"
    dsa: bool = True  # siamese differentiable augmentation of real and synthetic batches
    dsa_strategy: str = "auto"  # auto = the dataset's default (no flip for digits); 'none' = off


def _positive_int(config: Any, name: str, minimum: int = 1) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"option {name!r} must be an integer >= {minimum}, got {value!r}")


def _positive_float(config: Any, name: str, allow_zero: bool = False) -> None:
    value = getattr(config, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"option {name!r} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")


def validate_synth_config(config: SynthConfig) -> None:
    """Cheap checks, each naming the option, so bad values fail before any work starts."""
    _positive_int(config, "iterations", 0)
    _positive_float(config, "lr_img")
    _positive_float(config, "momentum_img", allow_zero=True)
    if config.momentum_img >= 1:
        raise UserError(f"option 'momentum_img' must be in [0, 1), got {config.momentum_img!r}")
    _positive_int(config, "batch_real")
    if config.init not in INITS:
        raise UserError(f"option 'init' must be one of {', '.join(INITS)}, got {config.init!r}")
    validate_net_options(config)
    if not isinstance(config.dsa_strategy, str):
        raise UserError(f"option 'dsa_strategy' must be a string ('auto', 'none' or families joined by '_'), got {config.dsa_strategy!r}")
    if config.dsa and config.dsa_strategy != "auto":
        DiffAug(config.dsa_strategy)  # raises a UserError naming a bad family


def validate_net_options(config: Any) -> None:
    """The distillation network's options (net, net_width, net_depth, net_norm), each named."""
    if config.net not in NETWORKS:
        raise UserError(f"option 'net': unknown network {config.net!r}; choose from {', '.join(sorted(NETWORKS.names()))}")
    _positive_int(config, "net_width")
    _positive_int(config, "net_depth")
    if str(config.net_norm).lower() not in NORMS:
        raise UserError(f"option 'net_norm' must be one of {', '.join(NORMS)}, got {config.net_norm!r}")


def net_options(config: SynthConfig) -> dict[str, Any]:
    """build_network options for the distillation net: width/depth/norm apply to ConvNets only
    (convnet_bn keeps its batch norm unless net_norm asks for something other than the default)."""
    if not config.net.startswith("convnet"):
        return {}
    options: dict[str, Any] = {"width": config.net_width, "depth": config.net_depth}
    if config.net == "convnet" or config.net_norm != "instancenorm":
        options["norm"] = config.net_norm
    return options


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


class RealSampler:
    """Seeded class-wise batches of real training images on the working device."""

    def __init__(self, train: ImageData, device: torch.device) -> None:
        self.x = train.train_x
        self.device = device
        self.indices = train.class_indices()

    def __call__(self, c: int, n: int, g: torch.Generator) -> Tensor:
        """min(n, class size) distinct images of class c (as the reference's permutation[:n])."""
        idx = self.indices[c]
        pick = torch.randperm(len(idx), generator=g)[:n].to(idx.device)
        return self.x[idx[pick]].to(self.device, non_blocking=True)


def _clone_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Mapping):
        return {k: _clone_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_clone_cpu(v) for v in value)
    return value


class SynthMethod(DistillMethod):
    """Base class: owns the images, their optimizer, resumption and progress; subclasses implement
    ``iteration`` (compute the loss of iteration ``it``, backpropagate into the images and step
    the optimizer, possibly several times) and may override ``setup``."""

    Config = SynthConfig

    def validate(self, config: SynthConfig) -> None:
        validate_synth_config(config)

    def augmenter(self, train: ImageData, config: SynthConfig) -> DiffAug | None:
        if not config.dsa:
            return None
        aug = DiffAug(default_strategy(train.name) if config.dsa_strategy == "auto" else config.dsa_strategy)
        return aug if aug.enabled else None

    def fresh_net(self, train: ImageData, config: SynthConfig, seed: int, it: int, device: torch.device) -> nn.Module:
        """The randomly initialised network of iteration ``it`` (a pure function of seed and it)."""
        net = build_network(
            config.net, train.channels, train.image_size, train.num_classes,
            seed=derive_seed(seed, self.name, "net", it), **net_options(config),
        )
        return net.to(device).train()

    def g(self, seed: int, *parts: object) -> torch.Generator:
        """A CPU generator for one purpose of one iteration (prefixed by the method name)."""
        return generator(seed, self.name, *parts)

    def setup(self, train: ImageData, ipc: int, config: SynthConfig, seed: int, device: torch.device) -> dict[str, Any]:
        return {}

    def decoder_spec(self, config: SynthConfig) -> tuple[str, dict[str, Any]] | None:
        """For a parameterised set (IDC, IDM): the registered decoder's name and options. The
        optimised tensor is then what the set stores, and matching and evaluation see its decoded
        grid (``decoded``); None, the default, means the optimised tensor is the images."""
        return None

    def initial_stored(self, train: ImageData, ipc: int, config: SynthConfig, seed: int) -> Tensor:
        """The tensor the optimiser starts from: the images themselves for a plain set."""
        return initial_images(train, ipc, seed, config.init)

    def decoded(self, stored: Tensor, config: SynthConfig) -> Tensor:
        """The images that ``stored`` (or a class-major slice of it) decodes into, differentiably."""
        spec = self.decoder_spec(config)
        return stored if spec is None else Decoder(spec[0], {"images": stored}, spec[1]).decode()

    def finish(self, stored: Tensor, labels: Tensor, config: SynthConfig, meta: dict[str, Any], ctx: dict[str, Any]) -> SyntheticSet:
        """The SyntheticSet of the final stored tensor: plain, or its decoded grid plus the decoder
        (``ctx`` is the run's context, for a method whose stored layout depends on the data)."""
        spec = self.decoder_spec(config)
        if spec is None:
            return SyntheticSet(stored, labels, meta=meta)
        decoder = Decoder(spec[0], {"images": stored}, dict(spec[1]))
        images = decoder.decode().detach()
        return SyntheticSet(images, repeat_labels(labels, len(images) // len(stored)), meta=meta, decoder=decoder)

    @abstractmethod
    def iteration(self, it: int, images: Tensor, optimizer: torch.optim.Optimizer, ctx: dict[str, Any]) -> float:
        """Run iteration ``it`` and return its (mean per class) loss."""

    def distill(
        self,
        train: ImageData,
        ipc: int,
        config: SynthConfig,
        seed: int,
        device: torch.device,
        progress_callback: ProgressCallback | None = None,
        resume_state: Mapping[str, Any] | None = None,
    ) -> SyntheticSet:
        self.validate(config)
        check_ipc(train, ipc)
        device = torch.device(device)
        images = self.initial_stored(train, ipc, config, seed).to(device=device, dtype=torch.float32).contiguous()
        images.requires_grad_(True)
        optimizer = torch.optim.SGD([images], lr=config.lr_img, momentum=config.momentum_img)
        start, elapsed = 0, 0.0
        if resume_state is not None:
            start, elapsed = self._restore(resume_state, images, optimizer, ipc, seed)
        timer = Timer(elapsed)

        ctx = {
            "train": train, "ipc": ipc, "config": config, "seed": seed, "device": device,
            "sampler": RealSampler(train, device), "aug": self.augmenter(train, config),
            "num_classes": train.num_classes,
        }
        ctx.update(self.setup(train, ipc, config, seed, device))
        total = config.iterations
        for it in range(start, total):
            loss = self.iteration(it, images, optimizer, ctx)
            if progress_callback is not None:
                now = timer()
                progress_callback(Progress(it + 1, total, loss, now, self._snapshot(images, optimizer, it + 1, now, ipc, seed)))
        labels = labels_for(train.num_classes, ipc).to(device)
        meta = {"method": self.name, "ipc": ipc, "seed": seed, "iterations": total}
        return self.finish(images.detach().clone(), labels, config, meta, ctx)

    def _snapshot(self, images: Tensor, optimizer: torch.optim.Optimizer, iteration: int, elapsed: float, ipc: int, seed: int):
        def state() -> dict[str, Any]:
            return {
                "method": self.name,
                "ipc": ipc,
                "seed": seed,
                "iteration": iteration,
                "elapsed": elapsed,
                "images": images.detach().to("cpu", copy=True),
                "optimizer": _clone_cpu(optimizer.state_dict()),
            }

        return state

    def _restore(self, state: Mapping[str, Any], images: Tensor, optimizer: torch.optim.Optimizer, ipc: int, seed: int) -> tuple[int, float]:
        check_resume_state(state, self.name, ipc, seed, ("iteration", "images", "optimizer"))
        saved = state["images"]
        if tuple(saved.shape) != tuple(images.shape):
            raise UserError(f"resume state images have shape {tuple(saved.shape)}, expected {tuple(images.shape)}")
        with torch.no_grad():
            images.copy_(saved.to(images.device))
        optimizer.load_state_dict(state["optimizer"])
        return int(state["iteration"]), float(state.get("elapsed", 0.0))


def class_slice(c: int, ipc: int) -> slice:
    """Rows of class c in the class-major synthetic tensor."""
    return slice(c * ipc, (c + 1) * ipc)
