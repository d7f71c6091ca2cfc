"""Readers for the on-disk formats torchvision downloads (CIFAR pickles, MNIST idx, SVHN .mat).

We parse the files ourselves instead of instantiating torchvision datasets because torchvision
verifies md5 checksums, which rejects anything but the exact published files (test fixtures, a
re-packed copy). Every reader returns uint8 [N, C, H, W] and int64 [N], and turns malformed input
into a UserError that names the file.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError

# The only globals a CIFAR pickle needs (numpy arrays under protocols 2..5, numpy 1 and 2 module
# names). Anything else is refused, so a malicious "data_batch_1" cannot execute code.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _corrupt(path: Path, what: str, err: object) -> UserError:
    return UserError(
        f"{path} is not a valid {what} ({err}); delete it and re-download (download: true), "
        f"or point --data-root at an intact copy"
    )


def read_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR python-format pickle (written by Python 2, hence latin1) as a str-keyed dict."""
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as err:
        raise _corrupt(path, "CIFAR pickle", err) from None
    if not isinstance(obj, dict):
        raise _corrupt(path, "CIFAR pickle", f"expected a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar_batch(path: Path, label_key: str) -> tuple[Tensor, Tensor]:
    """One CIFAR batch: 'data' is uint8 [N, 3072] in channel-major (CHW) order."""
    batch = read_pickle(path)
    try:
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
        x = data.reshape(-1, 3, 32, 32)
    except (KeyError, ValueError) as err:
        raise _corrupt(path, f"CIFAR batch with 'data' [N, 3072] and {label_key!r}", err) from None
    if labels.shape != (x.shape[0],):
        raise _corrupt(path, "CIFAR batch", f"{x.shape[0]} images but {labels.size} labels")
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(labels)


def read_cifar_names(path: Path, key: str) -> tuple[str, ...]:
    meta = read_pickle(path)
    if key not in meta:
        raise _corrupt(path, f"CIFAR meta file with {key!r}", f"keys are {sorted(meta)}")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[key])


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (MNIST's format), plain or gzip-compressed (by the .gz suffix)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as err:
        raise _corrupt(path, "idx file", err) from None
    try:
        zero, code, ndim = struct.unpack_from(">HBB", raw, 0)
        if zero != 0 or code not in _IDX_DTYPES:
            raise ValueError(f"bad magic number {raw[:4].hex()}")
        shape = struct.unpack_from(f">{ndim}I", raw, 4)
        dtype = np.dtype(_IDX_DTYPES[code])
        count = int(np.prod(shape, dtype=np.int64))
        offset = 4 + 4 * ndim
        if len(raw) - offset != count * dtype.itemsize:
            raise ValueError(f"header says {shape} but the file holds {len(raw) - offset} data bytes")
        return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape)
    except (struct.error, ValueError) as err:
        raise _corrupt(path, "idx file", err) from None


def read_idx_images(path: Path) -> Tensor:
    arr = read_idx(path)
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise _corrupt(path, "idx image file", f"expected uint8 [N, H, W], got {arr.dtype} {arr.shape}")
    return torch.from_numpy(arr.copy()).unsqueeze(1)


def read_idx_labels(path: Path) -> Tensor:
    arr = read_idx(path)
    if arr.ndim != 1:
        raise _corrupt(path, "idx label file", f"expected [N], got shape {arr.shape}")
    return torch.from_numpy(arr.astype(np.int64))


def read_svhn_mat(path: Path) -> tuple[Tensor, Tensor]:
    """SVHN cropped digits: X is uint8 [32, 32, 3, N], y is [N, 1] with 10 meaning digit 0."""
    import scipy.io  # deferred: only SVHN needs scipy

    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
        x, y = mat["X"], mat["y"]
    except (OSError, ValueError, KeyError, NotImplementedError, TypeError) as err:
        raise _corrupt(path, "SVHN .mat file with X [32, 32, 3, N] and y [N, 1]", err) from None
    if x.ndim != 4 or x.shape[2] != 3 or y.size != x.shape[3]:
        raise _corrupt(path, "SVHN .mat file", f"X has shape {x.shape}, y has {y.size} labels")
    labels = y.reshape(-1).astype(np.int64)
    labels[labels == 10] = 0
    images = np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)), dtype=np.uint8)
    return torch.from_numpy(images), torch.from_numpy(labels)


__all__ = [
    "read_cifar_batch", "read_cifar_names", "read_idx", "read_idx_images", "read_idx_labels",
    "read_pickle", "read_svhn_mat",
]
