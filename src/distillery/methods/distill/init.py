"""Initial synthetic sets shared by methods: real images (seeded, per class) or Gaussian noise."""

from __future__ import annotations

import torch
from torch import Tensor

from ..data.base import ImageData
from ..errors import UserError
from ..utils.seeding import generator


def check_ipc(train: ImageData, ipc: int) -> None:
    """IPC must be >= 1 and at most the smallest class's training count."""
    if ipc < 1:
        raise UserError(f"ipc must be >= 1, got {ipc}")
    counts = train.class_counts()
    smallest = min(range(len(counts)), key=counts.__getitem__)
    if ipc > counts[smallest]:
        raise UserError(
            f"ipc {ipc} exceeds the {counts[smallest]} training images of class "
            f"{train.classes[smallest]!r} in dataset {train.name!r}; use ipc <= {counts[smallest]} "
            "(or a larger subset_per_class)"
        )


def labels_for(num_classes: int, ipc: int) -> Tensor:
    """Class-major hard labels [0]*ipc + [1]*ipc + ... (every method uses this layout)."""
    return torch.arange(num_classes).repeat_interleave(ipc)


#: the draw of the `random` baseline, and the start of every method initialised from real images:
#: a method's row against `random` with the same seed is then paired, the difference being what
#: distillation did to those very images and not the luck of two draws (at IPC 1 that luck is as
#: large as the effect: seed 0's other draw scored 70.2% on digits against random's 78.4%)
RANDOM_DRAW = "random-baseline"


def shuffled_classes(train: ImageData, seed: int, purpose: str = RANDOM_DRAW) -> list[Tensor]:
    """Each class's training indices in the order of (seed, purpose, class)'s shuffle; by default
    `random`'s, whose first ipc entries are its set (methods that filter real images walk it)."""
    return [idx[torch.randperm(len(idx), generator=generator(seed, purpose, c)).to(idx.device)]
            for c, idx in enumerate(train.class_indices())]


def real_init(train: ImageData, ipc: int, seed: int, purpose: str = RANDOM_DRAW) -> Tensor:
    """ipc distinct real training images per class, drawn from (seed, purpose, class); by default
    `random`'s own draw for the seed."""
    check_ipc(train, ipc)
    return train.train_x[torch.cat([order[:ipc] for order in shuffled_classes(train, seed, purpose)])].clone()


def noise_init(train: ImageData, ipc: int, seed: int) -> Tensor:
    """Standard-normal images (data are normalized, so this matches the data's scale)."""
    check_ipc(train, ipc)
    g = generator(seed, "init-noise")
    shape = (train.num_classes * ipc, *train.image_shape)
    return torch.randn(shape, generator=g).to(train.train_x.device)


def initial_images(train: ImageData, ipc: int, seed: int, init: str) -> Tensor:
    if init == "real":
        return real_init(train, ipc, seed)
    if init == "noise":
        return noise_init(train, ipc, seed)
    raise UserError(f"unknown init {init!r}; use 'real' or 'noise'")
