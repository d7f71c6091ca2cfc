"""The in-memory dataset every method and the evaluation protocol consume.

Datasets are small enough (CIFAR-10 train: 50k x 3x32x32) to hold as one normalized float tensor,
which is what the distillation algorithms want: random class-wise batches by indexing, no
DataLoader workers. Decoding happens once and is cached on disk (see cache.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class ImageData:
    """Normalized train/test tensors plus what is needed to interpret them.

    train_x/test_x: float32 [N, C, H, W], already normalized with (mean, std) computed on the
    *training split of this dataset* (never another dataset's statistics).
    train_y/test_y: int64 [N] class indices into ``classes``.
    transform: labels of preprocessing applied after normalization (e.g. ("zca",)) so that a
    synthetic set made in a transformed space is evaluated in the same space.
    fingerprint: dataset_fingerprint(name, options) of the loaded data (None for hand-made data).
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    transform: tuple[str, ...] = field(default=())
    #: stable id of the untransformed data (methods.data.dataset_fingerprint) when known; methods
    #: key shared caches on (fingerprint, transform), e.g. MTT's expert buffers
    fingerprint: str | None = None
    #: what test_x/test_y hold: "test" (the official test split) or "validation" (images held out of
    #: the training split, DatasetOptions.validation_per_class; what tuning scores on)
    eval_split: str = "test"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return int(self.train_x.shape[1]), int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def class_indices(self) -> list[Tensor]:
        """Indices of training samples per class (the unit every class-wise method samples from)."""
        return [torch.nonzero(self.train_y == c, as_tuple=False).flatten() for c in range(self.num_classes)]

    def class_counts(self) -> list[int]:
        return torch.bincount(self.train_y, minlength=self.num_classes).tolist()

    def sample_class(self, c: int, n: int, generator: torch.Generator, indices: list[Tensor] | None = None) -> Tensor:
        """n random training images of class c (without replacement when possible), seeded."""
        idx = (indices or self.class_indices())[c]
        if n <= len(idx):
            pick = idx[torch.randperm(len(idx), generator=generator)[:n]]
        else:
            pick = idx[torch.randint(len(idx), (n,), generator=generator)]
        return self.train_x[pick]

    def to(self, device: torch.device | str) -> "ImageData":
        return replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
        )

    def denormalize(self, x: Tensor) -> Tensor:
        """Back to [0, 1] pixel space (for image grids); only meaningful without a transform."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1)
