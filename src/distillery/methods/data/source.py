"""What a dataset loader provides, and the registry loaders register into.

A loader is split into ``locate`` (cheap: which files define the data) and ``decode`` (expensive:
turn them into uint8 tensors). The split is what makes the disk cache possible: the file list's
sizes and mtimes key the cache, so a cache hit costs a directory scan instead of a decode.
Normalization, resizing and subsetting are shared (preprocess.py), so loaders stay format readers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from ..errors import UserError
from ..registry import Registry

DATASETS: Registry[type["DatasetSource"]] = Registry("dataset")


@dataclass(frozen=True)
class RawSplits:
    """Decoded, un-normalized data: uint8 [N, C, H, W] images and int64 [N] labels.

    Kept as uint8 because that is what gets cached (4x smaller than float) and because exact
    per-channel statistics can then be computed from value histograms.
    """

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dtype != torch.uint8 or x.ndim != 4:
                raise ValueError(f"RawSplits.{split}_x must be uint8 [N, C, H, W], got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"RawSplits.{split}_y must be int64 [{x.shape[0]}], got {y.dtype} {tuple(y.shape)}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(f"train/test image shapes differ: {tuple(self.train_x.shape[1:])} vs {tuple(self.test_x.shape[1:])}")

    def state_dict(self) -> dict:
        """Tensors, strings and lists only, so the cache can be read with weights_only=True."""
        return {
            "train_x": self.train_x, "train_y": self.train_y,
            "test_x": self.test_x, "test_y": self.test_y,
            "classes": list(self.classes),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "RawSplits":
        return cls(state["train_x"], state["train_y"], state["test_x"], state["test_y"], tuple(state["classes"]))


class MissingDataError(UserError):
    """A loader's expected file or folder is absent.

    Loaders raise it with only what they know (the path and what belongs there); load_dataset
    re-raises it with the dataset name, how the root was chosen and the fix, so every loader's
    message has the same shape without each one re-deriving that context.
    """

    def __init__(self, path: Path, expected: str, message: str | None = None) -> None:
        self.path, self.expected = path, expected
        super().__init__(message or f"missing {path} ({expected})")


class DatasetSource:
    """Base class of registered loaders. Subclasses set the class attributes and override
    ``locate``/``decode`` (and ``download`` where a download exists)."""

    needs_root: ClassVar[bool] = True      # False for bundled data (digits): no path involved
    cacheable: ClassVar[bool] = True       # False when decoding is cheaper than a cache read
    can_download: ClassVar[bool] = False
    layout: ClassVar[str] = ""             # one line on the expected layout, used in error messages
    #: side the images are resized to when the user sets no ``resize`` (None: native size). Set for
    #: sets whose native size makes the standard networks degenerate (digits: 8x8, see digits.py)
    default_resize: ClassVar[int | None] = None

    def __init__(self, name: str) -> None:
        self.name = name

    def locate(self, root: Path | None) -> list[str]:
        """The files whose content defines the dataset, as absolute path strings (not Path: on
        every cached load of a 60k-file tree, creating Path objects alone took ~0.5 s).
        Raises MissingDataError if anything is absent."""
        raise NotImplementedError

    def decode(self, root: Path | None, files: list[str], resize: int | None) -> RawSplits:
        """Read ``files`` (as returned by locate). ``resize`` is only a hint for loaders whose
        images may differ in size (imagefolder); the shared resize step handles everyone else."""
        raise NotImplementedError

    def train_class_counts(self, root: Path | None, files: list[str]) -> list[int] | None:
        """Training images per class when they can be had without decoding the images (from file
        names or a label file), else None: configs are checked against them before anything
        starts (an IPC larger than a class). Sets without a cheap way are covered by the index
        written next to their decoded-tensor cache (registry.train_class_counts)."""
        return None

    def download(self, root: Path) -> None:
        raise NotImplementedError(f"dataset {self.name!r} cannot be downloaded")
