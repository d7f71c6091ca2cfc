"""ZCA whitening as MTT uses it (kornia ``ZCAWhitening(eps=0.1, compute_inv=True)``).

Conventions, checked against kornia.enhance.zca (zca_mean / linear_transform / inverse_transform):

* data flattened to [N, D] (D = C*H*W), mean over the N samples;
* covariance UNBIASED: Xc^T Xc / (N - 1) (kornia's default ``unbiased=True``);
* with Sigma = U diag(S) U^T: T = U diag((S + eps)^-1/2) U^T, T_inv = U diag((S + eps)^1/2) U^T;
* transform(x) = (x - mean) @ T  (the mean IS subtracted at transform time, so whitened data is
  centred); inverse(y) = y @ T_inv + mean;
* the whitened fitted data has covariance U diag(S / (S + eps)) U^T (identity as eps -> 0).

We compute mean, covariance and the eigendecomposition in float64 (kornia uses an SVD in the data's
dtype; for a symmetric PSD matrix ``eigh`` gives the same factors, more cheaply and accurately), and
accumulate the covariance in row chunks so a 50k x 3072 CIFAR fit needs only ~100 MB extra.

MTT fits ZCA on UN-normalized pixels in [0, 1] (its loaders use ToTensor() without Normalize when
--zca is set), fitted on the whole training set and applied to train and test. Because eps = 0.1 is
an absolute regulariser, the input scale matters: ZCA of mean/std-normalized data with eps = 0.1
would regularise ~25x less than MTT. ``apply_transforms`` therefore maps ImageData (normalized)
back to pixel space before fitting, reproducing MTT exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ..data.base import ImageData
from ..errors import UserError

ZCA_EPS = 0.1
TRANSFORMS: tuple[str, ...] = ("zca",)
_CHUNK = 4096


@dataclass(frozen=True, eq=False)
class ZCA:
    """A fitted ZCA whitening: ``transform`` whitens, ``inverse`` undoes it. Tensors are float64."""

    mean: Tensor  # [D]
    matrix: Tensor  # [D, D] symmetric whitening matrix T
    inverse_matrix: Tensor  # [D, D] T_inv = T^-1
    eigenvalues: Tensor  # [D] eigenvalues S of the (unbiased) covariance, ascending
    eps: float
    sample_shape: tuple[int, ...]  # (C, H, W) of the fitted data
    _cast: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return int(self.mean.numel())

    @classmethod
    def fit(cls, x: Tensor, eps: float = ZCA_EPS, unbiased: bool = True, chunk_size: int = _CHUNK) -> "ZCA":
        """Fit on x [N, ...] (all of it: the whole training set). Computed in float64 on x's device."""
        eps = float(eps)
        if not eps >= 0.0:
            raise UserError(f"ZCA eps must be >= 0, got {eps}")
        if x.dim() < 2:
            raise ValueError(f"ZCA.fit expects [N, ...] data, got shape {tuple(x.shape)}")
        n = int(x.shape[0])
        if n < 2:
            raise UserError(f"ZCA needs at least 2 samples to estimate a covariance, got {n}")
        flat = x.detach().reshape(n, -1)
        d = flat.shape[1]
        with torch.no_grad():
            mean = torch.zeros(d, dtype=torch.float64, device=x.device)
            for i in range(0, n, chunk_size):
                mean += flat[i : i + chunk_size].to(torch.float64).sum(0)
            mean /= n
            cov = torch.zeros(d, d, dtype=torch.float64, device=x.device)
            for i in range(0, n, chunk_size):
                c = flat[i : i + chunk_size].to(torch.float64) - mean
                cov.addmm_(c.T, c)
            cov /= (n - 1) if unbiased else n
            evals, evecs = torch.linalg.eigh(cov)
            evals = evals.clamp_min(0.0)  # round-off can make null directions slightly negative
            if eps == 0.0 and bool((evals <= 0).any()):
                raise UserError("ZCA with eps=0 needs full-rank data (more samples than dimensions); use eps > 0")
            root = (evals + eps).sqrt()
            matrix = (evecs / root) @ evecs.T
            inverse_matrix = (evecs * root) @ evecs.T
            matrix = (matrix + matrix.T) / 2  # exactly symmetric
            inverse_matrix = (inverse_matrix + inverse_matrix.T) / 2
        return cls(mean, matrix, inverse_matrix, evals, eps, tuple(int(s) for s in x.shape[1:]))

    def _mats(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        key = (str(device), dtype)
        if key not in self._cast:
            self._cast.clear()  # keep at most one cast copy around (a 3072^2 matrix is 36 MB in fp32)
            self._cast[key] = tuple(t.to(device=device, dtype=dtype) for t in (self.mean, self.matrix, self.inverse_matrix))
        return self._cast[key]

    def _check(self, x: Tensor) -> tuple[int, int]:
        if x.dim() < 2:
            raise ValueError(f"ZCA expects [N, ...] data, got shape {tuple(x.shape)}")
        n, d = int(x.shape[0]), math.prod(x.shape[1:])
        if d != self.dim:
            raise ValueError(f"ZCA was fitted on samples of shape {self.sample_shape}; got {tuple(x.shape[1:])}")
        if not x.is_floating_point():
            raise TypeError(f"ZCA needs floating-point data, got {x.dtype}")
        return n, d

    def _linear(self, x: Tensor, inverse: bool, out: Tensor | None, chunk_size: int) -> Tensor:
        n, d = self._check(x)
        mean, t, t_inv = self._mats(x.device, x.dtype)
        flat = x.reshape(n, d)

        def block(rows: Tensor) -> Tensor:
            return rows @ t_inv + mean if inverse else (rows - mean) @ t

        if out is None:
            if n <= chunk_size:
                return block(flat).reshape(x.shape)
            return torch.cat([block(flat[i : i + chunk_size]) for i in range(0, n, chunk_size)]).reshape(x.shape)
        # in-place / preallocated path (no autograd): each chunk reads only its own rows, so out may alias x
        if out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
            raise ValueError("out must have the shape, dtype and device of x")
        out_flat = out.view(n, d)
        with torch.no_grad():
            for i in range(0, n, chunk_size):
                out_flat[i : i + chunk_size] = block(flat[i : i + chunk_size])
        return out

    def transform(self, x: Tensor, out: Tensor | None = None, chunk_size: int = _CHUNK) -> Tensor:
        """(x - mean) @ T, in x's dtype and device; differentiable unless ``out`` is given."""
        return self._linear(x, inverse=False, out=out, chunk_size=chunk_size)

    def inverse(self, x: Tensor, out: Tensor | None = None, chunk_size: int = _CHUNK) -> Tensor:
        """x @ T_inv + mean (back to the fitted space); differentiable unless ``out`` is given."""
        return self._linear(x, inverse=True, out=out, chunk_size=chunk_size)

    __call__ = transform


def _channel_stats(data: ImageData, x: Tensor) -> tuple[Tensor, Tensor]:
    c = x.shape[1]
    if len(data.mean) != c or len(data.std) != c:
        raise UserError(f"dataset {data.name!r}: mean/std have {len(data.mean)}/{len(data.std)} entries for {c} channels")
    mean = torch.tensor(data.mean, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
    std = torch.tensor(data.std, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
    return mean, std


def to_pixels(data: ImageData, x: Tensor) -> Tensor:
    """Undo the per-channel normalization WITHOUT clamping (x * std + mean): the space MTT whitens in."""
    mean, std = _channel_stats(data, x)
    return x * std + mean


def fit_zca(data: ImageData, eps: float = ZCA_EPS) -> ZCA:
    """The ZCA ``apply_transforms`` uses for ``data`` (fitted on its un-normalized training pixels).

    ``fit_zca(data).inverse(x_zca)`` maps whitened images back to [0, 1]-scale pixels, e.g. to show a
    synthetic set distilled in ZCA space. Deterministic: refitting gives the same matrices.
    """
    if data.transform:
        raise UserError(f"fit_zca needs untransformed data; {data.name!r} already has transform {data.transform}")
    return ZCA.fit(_pixels_chunked(data, data.train_x), eps=eps)


def _pixels_chunked(data: ImageData, x: Tensor) -> Tensor:
    out = torch.empty_like(x)
    mean, std = _channel_stats(data, x)
    with torch.no_grad():
        for i in range(0, x.shape[0], _CHUNK):
            torch.addcmul(mean, x[i : i + _CHUNK], std, out=out[i : i + _CHUNK])
    return out


def apply_transforms(data: ImageData, names: tuple[str, ...] | list[str]) -> ImageData:
    """A new ImageData with train/test transformed by ``names`` in order and ``transform`` extended.

    Currently only ``"zca"`` (MTT's: eps 0.1, fitted on the whole un-normalized training split and
    applied to train and test). Labels, classes and mean/std are kept (mean/std still describe the
    original normalization; ``denormalize`` is meaningless for transformed data, use
    ``fit_zca(original).inverse``).
    """
    names = tuple(str(n).strip().lower() for n in names)
    for name in names:
        if name not in TRANSFORMS:
            raise UserError(f"unknown data transform {name!r}; valid transforms: {', '.join(TRANSFORMS)}")
    for name in names:
        if names.count(name) > 1 or name in data.transform:
            raise UserError(f"transform {name!r} would be applied twice to {data.name!r}; apply it once")
    for name in names:
        if name == "zca":
            if data.transform:
                raise UserError(f"zca must be the first transform (data already has {data.transform})")
            train = _pixels_chunked(data, data.train_x)
            zca = ZCA.fit(train, eps=ZCA_EPS)
            zca.transform(train, out=train)
            test = _pixels_chunked(data, data.test_x)
            zca.transform(test, out=test)
            data = replace(data, train_x=train, test_x=test, transform=data.transform + (name,))
    return data
