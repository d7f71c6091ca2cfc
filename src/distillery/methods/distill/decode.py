"""Parameterised synthetic sets: a stored tensor set plus a pure function that decodes it into the
images the evaluation protocol trains on.

Why: IDC's multi-formation, IDM's partitioning, HaBa's bases x hallucinators and KFS's shared
codes store something other than IPC full-size images, so "images per class" stops measuring what
a set costs. A decoder names a registered pure function and its options; the set keeps the stored
parameters (what the storage budget counts) beside the decoded grid (what the protocol trains on).
Decoders are pure functions of (params, options) so a saved set can be decoded again and checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch.nn.functional as F
from torch import Tensor

from ..registry import Registry

#: name -> decode(params, options) -> the decoded images [M, C, H, W]
DecodeFn = Callable[[Mapping[str, Tensor], Mapping[str, Any]], Tensor]
DECODERS: Registry[DecodeFn] = Registry("decoder")


def register_decoder(name: str) -> Callable[[DecodeFn], DecodeFn]:
    return DECODERS.register(name)


@dataclass
class Decoder:
    """What a parameterised set stores: the decoder's name, its plain options and its parameters."""

    name: str
    params: dict[str, Tensor]
    options: dict[str, Any] = field(default_factory=dict)

    def decode(self) -> Tensor:
        return DECODERS.get(self.name)(self.params, self.options)

    @property
    def stored_floats(self) -> int:
        """Numbers stored (every parameter tensor's elements): the set's storage budget."""
        return int(sum(p.numel() for p in self.params.values()))

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": {k: v.detach().cpu() for k, v in self.params.items()}, "options": dict(self.options)}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "Decoder":
        return cls(name=str(state["name"]), params=dict(state["params"]), options=dict(state.get("options", {})))


def multiformation(stored: Tensor, factor: int) -> Tensor:
    """IDC's multi-formation (also IDM's partitioning): each stored image [C, H, W] holds
    ``factor`` x ``factor`` tiles of size H/factor; each tile is upsampled (bilinear) back to H x W.
    Returns [N * factor**2, C, H, W], the tiles of stored image i at rows i*f^2 .. (i+1)*f^2 - 1
    (row-major over tiles), so class-major stored sets stay class-major. Differentiable."""
    if factor < 1:
        raise ValueError(f"multiformation factor must be >= 1, got {factor}")
    if factor == 1:
        return stored
    n, c, h, w = stored.shape
    if h % factor or w % factor:
        raise ValueError(f"multiformation factor {factor} does not divide the image size {h}x{w}")
    th, tw = h // factor, w // factor
    tiles = stored.reshape(n, c, factor, th, factor, tw).permute(0, 2, 4, 1, 3, 5).reshape(n * factor * factor, c, th, tw)
    return F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)


@register_decoder("multiformation")
def _decode_multiformation(params: Mapping[str, Tensor], options: Mapping[str, Any]) -> Tensor:
    return multiformation(params["images"], int(options.get("factor", 2)))


def repeat_labels(labels: Tensor, per_stored: int) -> Tensor:
    """Labels of the decoded rows when every stored row decodes into ``per_stored`` consecutive rows."""
    return labels.repeat_interleave(per_stored, dim=0)
