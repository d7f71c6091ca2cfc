"""Seeded two-stage (set, then model) bootstrap shared by aggregate, fits and trend.

Why two stages: the evaluation models of one distilled set share that set, so they are not
independent replicates. Resampling sets (the independent unit) and then models within each
drawn set keeps that nesting; with a single set per cell it reduces to a plain model bootstrap
instead of collapsing to a zero-width interval.

Why keyed generators: every cell draws from ``default_rng([seed, crc32(key)])``, so a cell's
interval does not change when other cells are added to or removed from the sweep.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np


def keyed_rng(seed: int, *key: object) -> np.random.Generator:
    """A generator determined by (seed, key) only."""
    digest = zlib.crc32(repr(tuple(str(k) for k in key)).encode())
    return np.random.default_rng([int(seed), digest])


def two_stage_set_means(sets: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap replicates of per-set means.

    sets: one array per set, shape [m_s] or [m_s, k] (k metrics per model).
    Returns (means [B, S, k], counts [B, S]): replicate b draws S sets with replacement and, within
    each drawn set s, m_s models with replacement; means[b, j] is the mean of the models drawn for
    the j-th drawn set and counts[b, j] that set's model count (for model-weighted pooling).
    """
    arrs = [np.asarray(s, dtype=float).reshape(len(s), -1) for s in sets]
    if not arrs or any(len(a) == 0 for a in arrs):
        raise ValueError("two_stage_set_means needs at least one set with at least one model")
    k = arrs[0].shape[1]
    sizes = np.array([len(a) for a in arrs])
    n_sets, m_max = len(arrs), int(sizes.max())
    padded = np.zeros((n_sets, m_max, k))
    for i, a in enumerate(arrs):
        padded[i, : len(a)] = a
    set_idx = rng.integers(0, n_sets, size=(n_boot, n_sets))
    m_chosen = sizes[set_idx]  # [B, S]
    model_idx = np.floor(rng.random((n_boot, n_sets, m_max)) * m_chosen[..., None]).astype(int)
    valid = np.arange(m_max)[None, None, :] < m_chosen[..., None]  # [B, S, M]
    vals = padded[set_idx[..., None], model_idx]  # [B, S, M, k]
    sums = np.where(valid[..., None], vals, 0.0).sum(axis=2)
    return sums / m_chosen[..., None], m_chosen


def two_stage_means(sets: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates [B, k] of the model-weighted mean over all models of a cell."""
    means, counts = two_stage_set_means(sets, n_boot, rng)
    return (means * counts[..., None]).sum(axis=1) / counts.sum(axis=1)[:, None]


def percentile_ci(reps: np.ndarray, level: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap replicates along ``axis``."""
    alpha = (1.0 - level) / 2.0
    return np.quantile(reps, alpha, axis=axis), np.quantile(reps, 1.0 - alpha, axis=axis)
