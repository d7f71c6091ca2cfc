"""Build networks by name for a given input shape and class count.

Every builder takes (channels, image_size, num_classes, **options) so datasets of any shape
(3x32x32, 1x28x28, 1x8x8) work with every architecture; the flatten size is computed by a dry
forward, not hard-coded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..registry import Registry
from ..utils.seeding import init_module

NETWORKS: Registry[Callable[..., nn.Module]] = Registry("network")


class FeatureClassifier(nn.Module):
    """A feature extractor followed by one linear head: the shape every network here shares.

    The methods rely on that shape, not on a class: DM, DataDAM, CAFE and herding match or select
    on ``embed`` (the penultimate features), everything else calls ``forward``. A subclass sets
    ``features`` and ``classifier`` in its constructor; one whose features are not a single module
    (ResNet-18's stem, blocks and pooling) overrides ``embed``.
    """

    features: nn.Module
    classifier: nn.Module

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate features, flattened to (batch, dim)."""
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))


def register_network(name: str, cls: Callable[..., nn.Module], batchnorm_variant: bool = False) -> None:
    """Register a network class under ``name`` and, with ``batchnorm_variant``, under ``name_bn``.

    The ``_bn`` name is the references' spelling of the same architecture with BatchNorm
    (ConvNetBN, AlexNetBN); it only changes the ``norm`` default, so an explicit ``norm`` option
    still wins. The class is its own builder: its constructor takes (channels, image_size,
    num_classes, **options), which is what ``build_network`` calls.
    """
    NETWORKS.register(name)(cls)
    if batchnorm_variant:
        NETWORKS.register(f"{name}_bn")(partial(cls, norm="batchnorm"))


@dataclass(frozen=True)
class NetSpec:
    """A network choice: arch name plus options such as width/depth/norm for ConvNet."""

    arch: str = "convnet"
    options: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.arch, tuple(sorted(self.options.items()))))


def network_defaults(arch: str) -> dict[str, Any]:
    """The constructor defaults of ``arch``'s options (width, depth, norm, ...), with a ``_bn``
    variant's own default applied: what a trial builds when a config sets none of them. A trial's
    identity includes them, so changing a default in code never reuses results computed with the old one."""
    import inspect

    builder = NETWORKS.get(arch)
    fixed = dict(getattr(builder, "keywords", {}) or {})
    target = getattr(builder, "func", builder)
    out = {}
    for name, p in inspect.signature(target).parameters.items():
        if name in ("self", "channels", "image_size", "num_classes") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is not inspect.Parameter.empty:
            out[name] = p.default
    out.update(fixed)
    return out


def build_network(
    arch: str,
    channels: int,
    image_size: tuple[int, int] | int,
    num_classes: int,
    seed: int | None = None,
    **options: Any,
) -> nn.Module:
    """Instantiate a registered network; with ``seed`` its initial weights are a pure function of it."""
    builder = NETWORKS.get(arch)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)

    def factory() -> nn.Module:
        try:
            return builder(channels=channels, image_size=size, num_classes=num_classes, **options)
        except TypeError as exc:  # unknown option keyword
            raise UserError(f"network {arch!r}: {exc}") from None

    return init_module(factory, seed, "net", arch) if seed is not None else factory()


def check_net_options(arch: str, options: dict[str, Any], channels: int = 3, image_size: int = 32, num_classes: int = 10) -> None:
    """Build ``arch`` once with ``options`` on a probe shape, so an unknown option or a bad value
    fails while a config is read (naming the network) rather than in every trial. Shape-specific
    limits of a real dataset are still checked when the trial builds its networks."""
    try:
        build_network(arch, channels, image_size, num_classes, **options)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any constructor failure is a bad option value
        raise UserError(f"network {arch!r} with options {options}: {type(exc).__name__}: {exc}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flat_features(features: nn.Module, channels: int, image_size: tuple[int, int]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, channels, *image_size)).flatten(1).shape[1])


def make_norm(norm: str, width: int, spatial: tuple[int, int]) -> nn.Module:
    """The DD norm choices. 'instancenorm' is GroupNorm(C, C) with affine, as in the DD references."""
    norm = norm.lower()
    if norm == "instancenorm":
        return nn.GroupNorm(width, width, affine=True)
    if norm == "batchnorm":
        return nn.BatchNorm2d(width)
    if norm == "layernorm":
        return nn.LayerNorm([width, *spatial], elementwise_affine=True)
    if norm == "groupnorm":
        return nn.GroupNorm(4, width, affine=True)
    if norm in ("none", ""):
        return nn.Identity()
    raise UserError(f"unknown norm {norm!r}; choose instancenorm, batchnorm, layernorm, groupnorm or none")
