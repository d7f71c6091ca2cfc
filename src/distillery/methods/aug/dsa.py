"""Differentiable Siamese Augmentation (DSA, Zhao & Bilen 2021).

Semantics follow the published DSA/MTT code (DatasetCondensation ``DiffAugment``):

* strategy ``"color_crop_cutout_flip_scale_rotate"``: families joined by ``_``;
* mode ``"S"`` (the default everywhere): each call picks ONE family uniformly at random for the
  whole batch; ``color`` means brightness, then saturation, then contrast; mode ``"M"`` applies
  every family of the strategy in order;
* parameters are drawn per sample, except in siamese mode, where ONE draw is shared by every
  sample of every batch it is applied to (the reference reseeds the global RNG and broadcasts the
  first sample's draw; we draw once and broadcast). So a real batch and a synthetic batch of
  different sizes receive exactly the same transform;
* every op is differentiable w.r.t. the images: colour by arithmetic, crop by integer translation
  with zero fill (a gather), cutout by a 0/1 mask, flip by ``where``, scale/rotate by
  ``affine_grid``/``grid_sample`` (bilinear, zero padding, ``align_corners=False``).

Unlike the reference, all randomness comes from an explicit ``torch.Generator`` (never the global
RNG). Crop offsets and cutout centres are drawn as uniforms in [0, 1) and turned into integer
pixel offsets at apply time (``floor(u * k)`` is exactly uniform over the k integers), so one draw
is valid for any image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError

FAMILIES: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
FLIP_FREE_STRATEGY = "color_crop_cutout_scale_rotate"
MODES = ("S", "M")

# Datasets whose labels are not invariant under a horizontal mirror (digits and handwritten
# characters): the DSA protocol drops ``flip`` for MNIST and SVHN. FashionMNIST keeps flip
# (a mirrored shirt or shoe is still a shirt or shoe), as in the reference scripts.
_FLIP_FREE_DATASETS = frozenset({"mnist", "svhn", "digits", "usps", "emnist", "kmnist"})

_NO_AUG = {"", "none"}


@dataclass(frozen=True)
class DSAParams:
    """Strengths of the DSA families (the published defaults)."""

    brightness: float = 1.0  # additive shift (u - 0.5) * brightness
    saturation: float = 2.0  # channel-deviation factor u * saturation
    contrast: float = 0.5  # image-deviation factor u + contrast
    crop_pad: float = 0.125  # max translation as a fraction of the side (4 px at 32)
    cutout: float = 0.5  # side of the zeroed square as a fraction of the side (16 px at 32)
    flip_prob: float = 0.5  # probability of a horizontal flip
    scale: float = 1.2  # per-axis scale factor uniform in [1/scale, scale]
    rotate: float = 15.0  # rotation uniform in [-rotate, rotate] degrees

    def __post_init__(self) -> None:
        for name in ("brightness", "saturation", "contrast", "rotate"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise UserError(f"DSAParams.{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        for name in ("crop_pad", "cutout", "flip_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"DSAParams.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not (math.isfinite(self.scale) and self.scale >= 1.0):
            raise UserError(f"DSAParams.scale must be a finite number >= 1, got {self.scale!r}")


def parse_strategy(strategy: str | None) -> tuple[str, ...]:
    """Families of a strategy string; ``"none"``/``""``/None -> () (identity)."""
    if strategy is None or strategy.strip().lower() in _NO_AUG:
        return ()
    parts = [p.strip().lower() for p in strategy.split("_")]
    for p in parts:
        if p not in FAMILIES:
            raise UserError(
                f"unknown DSA augmentation family {p!r} in strategy {strategy!r}; valid families: "
                f"{', '.join(FAMILIES)} (join them with '_', e.g. {DEFAULT_STRATEGY!r}, or use 'none')"
            )
    if len(set(parts)) != len(parts):
        raise UserError(f"DSA strategy {strategy!r} names a family twice; name each family at most once")
    return tuple(parts)


def default_strategy(dataset_name: str) -> str:
    """The DSA strategy for a dataset: the standard one, without ``flip`` for digit/character sets.

    Flip-free: mnist, svhn, digits, usps, emnist, kmnist (mirrored digits/characters change or lose
    their meaning). FashionMNIST, CIFAR, Tiny ImageNet, ImageNet subsets keep flip.
    """
    key = dataset_name.strip().lower().replace("-", "").replace("_", "")
    return FLIP_FREE_STRATEGY if key in _FLIP_FREE_DATASETS else DEFAULT_STRATEGY


@dataclass(frozen=True, eq=False)
class AugStep:
    """One family with its random values: each tensor has n rows (or 1 row, broadcast)."""

    family: str
    values: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class AugDraw:
    """A complete random draw: the families to apply, in order, and their parameters.

    ``n`` is the number of parameter rows: the batch size for a per-sample draw, 1 for a siamese
    (shared) draw, which applies to batches of any size.
    """

    steps: tuple[AugStep, ...]
    n: int
    siamese: bool

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(s.family for s in self.steps)

    def to(self, device: torch.device | str) -> "AugDraw":
        steps = tuple(AugStep(s.family, {k: v.to(device) for k, v in s.values.items()}) for s in self.steps)
        return AugDraw(steps, self.n, self.siamese)


# ---------------------------------------------------------------------------------------------
# sampling


def _uniform(m: int, g: torch.Generator) -> Tensor:
    return torch.rand(m, generator=g, device=g.device, dtype=torch.float32)


def _sample_family(family: str, m: int, g: torch.Generator, p: DSAParams) -> AugStep:
    if family == "color":
        values = {"brightness": _uniform(m, g), "saturation": _uniform(m, g), "contrast": _uniform(m, g)}
    elif family == "crop":
        values = {"ty": _uniform(m, g), "tx": _uniform(m, g)}
    elif family == "cutout":
        values = {"cy": _uniform(m, g), "cx": _uniform(m, g)}
    elif family == "flip":
        values = {"flip": _uniform(m, g) < p.flip_prob}
    elif family == "scale":
        lo, hi = 1.0 / p.scale, p.scale
        values = {"sx": lo + (hi - lo) * _uniform(m, g), "sy": lo + (hi - lo) * _uniform(m, g)}
    elif family == "rotate":
        values = {"angle": (2.0 * _uniform(m, g) - 1.0) * math.radians(p.rotate)}
    else:  # pragma: no cover - parse_strategy guards this
        raise AssertionError(family)
    return AugStep(family, values)


# ---------------------------------------------------------------------------------------------
# the differentiable ops (x: [B, C, H, W]; every value tensor already has B rows)


def _col(v: Tensor, x: Tensor) -> Tensor:
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _color(x: Tensor, v: dict[str, Tensor], p: DSAParams) -> Tensor:
    x = x + (_col(v["brightness"], x) - 0.5) * p.brightness
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * (_col(v["saturation"], x) * p.saturation) + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * (_col(v["contrast"], x) + p.contrast) + m


def _int_offsets(u: Tensor, count: int, device: torch.device) -> Tensor:
    """floor(u * count) in {0, ..., count - 1}: exactly uniform over the integers."""
    return (u.to(device=device, dtype=torch.float64) * count).floor().long().clamp_(0, count - 1)


def _shift_axis(x: Tensor, shift: Tensor, dim: int) -> Tensor:
    """out[..., i, ...] = x[..., i + shift, ...] along dim (2 or 3), zero outside the image."""
    size = x.shape[dim]
    idx = torch.arange(size, device=x.device).unsqueeze(0) + shift.unsqueeze(1)  # [B, size]
    valid = (idx >= 0) & (idx < size)
    idx = idx.clamp(0, size - 1)
    view = (-1, 1, size, 1) if dim == 2 else (-1, 1, 1, size)
    out = x.gather(dim, idx.view(view).expand_as(x))
    return out * valid.view(view).to(x.dtype)


def _crop(x: Tensor, v: dict[str, Tensor], p: DSAParams) -> Tensor:
    _, _, h, w = x.shape
    sh, sw = int(h * p.crop_pad + 0.5), int(w * p.crop_pad + 0.5)
    if sh > 0:
        x = _shift_axis(x, _int_offsets(v["ty"], 2 * sh + 1, x.device) - sh, dim=2)
    if sw > 0:
        x = _shift_axis(x, _int_offsets(v["tx"], 2 * sw + 1, x.device) - sw, dim=3)
    return x


def _cutout(x: Tensor, v: dict[str, Tensor], p: DSAParams) -> Tensor:
    _, _, h, w = x.shape
    ch, cw = int(h * p.cutout + 0.5), int(w * p.cutout + 0.5)
    if ch == 0 or cw == 0:
        return x
    # centre in {0, ..., size - (cut % 2)} as in the reference; the square is clipped to the image
    y0 = _int_offsets(v["cy"], h + 1 - ch % 2, x.device) - ch // 2
    x0 = _int_offsets(v["cx"], w + 1 - cw % 2, x.device) - cw // 2
    rows = torch.arange(h, device=x.device).unsqueeze(0)
    cols = torch.arange(w, device=x.device).unsqueeze(0)
    in_r = (rows >= y0.unsqueeze(1)) & (rows < (y0 + ch).unsqueeze(1))  # [B, H]
    in_c = (cols >= x0.unsqueeze(1)) & (cols < (x0 + cw).unsqueeze(1))  # [B, W]
    keep = ~(in_r.unsqueeze(2) & in_c.unsqueeze(1))  # [B, H, W]
    return x * keep.unsqueeze(1).to(x.dtype)


def _flip(x: Tensor, v: dict[str, Tensor], p: DSAParams) -> Tensor:
    do = v["flip"].to(x.device).view(-1, 1, 1, 1)
    return torch.where(do, x.flip(3), x)


def _warp(x: Tensor, theta: Tensor) -> Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _affine(a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> Tensor:
    """theta [B, 2, 3] = [[a, b, 0], [c, d, 0]]."""
    z = torch.zeros_like(a)
    return torch.stack([torch.stack([a, b, z], dim=-1), torch.stack([c, d, z], dim=-1)], dim=1)


def _scale(x: Tensor, v: dict[str, Tensor], p: DSAParams) -> Tensor:
    sx = v["sx"].to(device=x.device, dtype=x.dtype)
    sy = v["sy"].to(device=x.device, dtype=x.dtype)
    z = torch.zeros_like(sx)
    return _warp(x, _affine(sx, z, z, sy))


def _rotate(x: Tensor, v: dict[str, Tensor], p: DSAParams) -> Tensor:
    a = v["angle"].to(device=x.device, dtype=x.dtype)
    cos, sin = torch.cos(a), torch.sin(a)
    return _warp(x, _affine(cos, -sin, sin, cos))


_OPS = {"color": _color, "crop": _crop, "cutout": _cutout, "flip": _flip, "scale": _scale, "rotate": _rotate}


# ---------------------------------------------------------------------------------------------


class DiffAug:
    """Differentiable (siamese) augmentation; every draw comes from an explicit generator.

    >>> aug = DiffAug()
    >>> real_aug, syn_aug = aug.siamese(real, syn, generator=g)   # same transform for both
    >>> x_aug = aug(x, generator=g)                               # independent per-sample draws
    """

    def __init__(self, strategy: str = DEFAULT_STRATEGY, params: DSAParams = DSAParams(), mode: str = "S") -> None:
        if not isinstance(params, DSAParams):
            raise UserError(f"DiffAug params must be a DSAParams, got {type(params).__name__}")
        mode_u = str(mode).upper()
        if mode_u not in MODES:
            raise UserError(f"unknown DSA mode {mode!r}; choose 'S' (one random family per call) or 'M' (all families)")
        self.families = parse_strategy(strategy)
        self.strategy = "_".join(self.families) if self.families else "none"
        self.params = params
        self.mode = mode_u

    @property
    def enabled(self) -> bool:
        return bool(self.families)

    def __repr__(self) -> str:
        return f"DiffAug(strategy={self.strategy!r}, mode={self.mode!r}, params={self.params!r})"

    def sample(
        self,
        n: int,
        generator: torch.Generator,
        device: torch.device | str | None = None,
        siamese: bool = False,
    ) -> AugDraw:
        """Draw the family (mode S) and parameters for a batch of n images (1 shared row if siamese).

        Draws happen on the generator's device; ``device`` (if given) is where the values end up.
        """
        if not isinstance(generator, torch.Generator):
            raise TypeError("DiffAug.sample needs an explicit torch.Generator")
        if n < 0:
            raise ValueError(f"batch size must be >= 0, got {n}")
        m = 1 if siamese else int(n)
        if not self.families:
            steps: tuple[AugStep, ...] = ()
        elif self.mode == "S":
            k = int(torch.randint(len(self.families), (1,), generator=generator, device=generator.device).item())
            steps = (_sample_family(self.families[k], m, generator, self.params),)
        else:
            steps = tuple(_sample_family(f, m, generator, self.params) for f in self.families)
        draw = AugDraw(steps, m, bool(siamese))
        return draw.to(device) if device is not None else draw

    def apply(self, x: Tensor, draw: AugDraw) -> Tensor:
        """Apply a draw to x [B, C, H, W]; a 1-row (siamese) draw is broadcast to any B."""
        if x.dim() != 4:
            raise ValueError(f"DiffAug expects images [B, C, H, W], got shape {tuple(x.shape)}")
        if not draw.steps:
            return x
        b = x.shape[0]
        if draw.n not in (1, b):
            raise ValueError(f"draw has {draw.n} parameter rows but the batch has {b} images (use a siamese draw)")
        if b == 0:
            return x
        for step in draw.steps:
            values = {k: (v.expand(b) if v.shape[0] != b else v) for k, v in step.values.items()}
            x = _OPS[step.family](x, values, self.params)
        return x.contiguous()

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Augment x with independent per-sample parameters (one family for the batch in mode S)."""
        if not self.families:
            return x
        return self.apply(x, self.sample(x.shape[0], generator))

    def siamese(self, *batches: Tensor, generator: torch.Generator) -> tuple[Tensor, ...]:
        """Augment every batch with ONE shared draw (same family and parameters for all samples)."""
        if not self.families:
            return tuple(batches)
        draw = self.sample(1, generator, siamese=True)
        return tuple(self.apply(x, draw) for x in batches)
