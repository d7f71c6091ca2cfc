"""Multi-formation for image-optimising methods (IDC's multi-formation, IDM's partitioning).

Each stored image holds ``factor`` x ``factor`` tiles; the decoder (``decode.multiformation``)
upsamples every tile to full size, so a set stores IPC images per class and trains the evaluation
network on IPC x factor^2. ``MultiFormationMixin`` gives a ``SynthMethod`` the decoder, the mixed
initialisation and a per-class view of the decoded images; the method's config needs ``factor``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.base import ImageData
from ..errors import UserError
from ..utils.seeding import generator
from .decode import multiformation
from .init import check_ipc, initial_images


def tile(small: Tensor, factor: int) -> Tensor:
    """The inverse of multi-formation's tiling: [N * f^2, C, h, w] -> [N, C, h*f, w*f], image
    i*f^2 + k going to tile k (row-major) of stored image i."""
    nf, c, h, w = small.shape
    n = nf // (factor * factor)
    return small.reshape(n, factor, factor, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h * factor, w * factor)


def mixed_init(train: ImageData, ipc: int, seed: int, factor: int) -> Tensor:
    """IDC's ``mix`` / IDM's partitioned real init: ipc x factor^2 real images per class, each
    shrunk by ``factor`` (area averaging) into one tile, so the decoded set starts as blurred real
    images. Images are distinct while the class has enough; a smaller class reuses them in a seeded
    order (rather than failing: the budget is IPC stored images, which the class does have)."""
    check_ipc(train, ipc)
    need = ipc * factor * factor
    picks = []
    for c, idx in enumerate(train.class_indices()):
        g = generator(seed, "init-mix", c)
        order = torch.cat([torch.randperm(len(idx), generator=g) for _ in range(-(-need // len(idx)))])[:need]
        picks.append(idx[order.to(idx.device)])
    real = train.train_x[torch.cat(picks)]
    small = F.avg_pool2d(real, factor) if factor > 1 else real
    return tile(small, factor).clone()


def check_factor(factor: Any, image_size: tuple[int, int] | None = None) -> None:
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise UserError(f"option 'factor' must be an integer >= 1 (1 = plain images, 2 = four tiles per stored image), got {factor!r}")
    if image_size is not None and (image_size[0] % factor or image_size[1] % factor):
        raise UserError(
            f"option 'factor' {factor} does not divide the image size {image_size[0]}x{image_size[1]}; "
            "choose a factor that does (or change data.resize)"
        )


class MultiFormationMixin:
    """Put before the SynthMethod base: ``class IDM(MultiFormationMixin, DM)``."""

    def decoder_spec(self, config: Any) -> tuple[str, dict[str, Any]] | None:
        return ("multiformation", {"factor": int(config.factor)}) if config.factor > 1 else None

    def initial_stored(self, train: ImageData, ipc: int, config: Any, seed: int) -> Tensor:
        check_factor(config.factor, train.image_size)
        if config.init == "real":
            return mixed_init(train, ipc, seed, config.factor)
        return initial_images(train, ipc, seed, config.init)

    def per_stored(self, config: Any) -> int:
        """Decoded images per stored image."""
        return int(config.factor) ** 2

    def class_decoded(self, stored: Tensor, c: int, ipc: int, config: Any) -> Tensor:
        """Class c's decoded images (its ipc stored images, decoded; differentiable)."""
        return multiformation(stored[c * ipc:(c + 1) * ipc], int(config.factor))
