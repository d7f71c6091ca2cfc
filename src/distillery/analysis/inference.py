"""Small-sample inference with distilled sets as the unit: t intervals and Welch contrasts.

Why not the bootstrap any more: a sweep people run has 2-3 sets per IPC. A percentile bootstrap over
2-3 units is a z interval with a variance shrunk by (n-1)/n, and in simulated sweeps its nominal
95 % covered the truth in 69-85 % of them (``tests/test_calibration.py`` keeps the regimes). The
evaluation models of one set share that set, so they only tell how well the set's own value is
known: each set enters as the mean over its models, and the spread of those set means (which
already contains the model noise, divided by the models per set) is the whole error.

What is computed, all vectorised over leading axes so the planner can run thousands of simulated
sweeps through the very same code as one real analysis:

* ``t_interval``: a cell's mean of set means with a Student t interval on n - 1 degrees of freedom.
* ``set_units``, ``rank_test`` and ``decide``: the set-level units, Spearman's test over them and
  the verdict rule (both tests agree), shared by ``trend`` (a real sweep) and ``planner`` (simulated ones).
* ``welch_contrast``: any linear contrast sum_i w_i * mean_i of per-IPC means (the OLS slope over sets,
  the change from the smallest to the largest IPC) with the variance sum_i w_i^2 s_i^2 / n_i, the
  Welch-Satterthwaite degrees of freedom and a t quantile. Each IPC keeps its own variance, so set
  noise that grows with IPC is allowed.

With one set at a level there is no estimate of set-to-set noise there: the interval is NaN and the
callers say that no interval about sets can be given (a model-only interval would describe the
evaluation networks of one draw, not the method).
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval (NaN bounds: no interval can be given) and how it was made."""

    estimate: float
    low: float
    high: float
    se: float
    df: float
    n_sets: int
    method: str


def t_bounds(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) of a t interval over the last axis (one value per set), vectorised over
    the leading axes; NaN bounds with fewer than 2 sets."""
    v = np.asarray(values, dtype=float)
    n = v.shape[-1]
    mean = v.mean(axis=-1)
    if n < 2:
        nan = np.full(np.shape(mean), np.nan)
        return mean, nan, nan
    half = stats.t.ppf(0.5 + level / 2, n - 1) * v.std(axis=-1, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def t_interval(values: np.ndarray, level: float = 0.95) -> Interval:
    """Mean of ``values`` (one per set; NaN dropped) with a t interval; NaN bounds with fewer than 2 sets."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return Interval(np.nan, np.nan, np.nan, np.nan, np.nan, 0, "t over sets")
    mean, low, high = (float(b) for b in t_bounds(v, level))
    se = float(v.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
    return Interval(mean, low, high, se, float(n - 1) if n > 1 else np.nan, n, "t over sets")


def welch_contrast(means: np.ndarray, variances: np.ndarray, counts: np.ndarray, weights: np.ndarray,
                   level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A linear contrast of per-level means with a Welch-Satterthwaite t interval.

    means, variances: [..., L] per-level mean of set means and the sample variance (ddof=1) of the
    set means; counts [L]: sets per level; weights [L]. Returns (estimate, se, df, low, high, p)
    over the leading axes; p is the two-sided p-value of estimate = 0. Levels with fewer than 2 sets
    make the interval NaN (no variance estimate there)."""
    means, variances = np.asarray(means, float), np.asarray(variances, float)
    n = np.asarray(counts, float)
    w = np.asarray(weights, float)
    est = (means * w).sum(axis=-1)
    terms = w**2 * variances / n
    var = terms.sum(axis=-1)
    used = w != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = np.where(used, terms**2 / np.maximum(n - 1, 1e-300), 0.0).sum(axis=-1)
        df = np.where(denom > 0, var**2 / denom, np.inf)
        se = np.sqrt(var)
        q = stats.t.ppf(0.5 + level / 2, df)
        tstat = np.where(se > 0, est / se, np.where(est == 0, 0.0, np.sign(est) * np.inf))
        p = 2 * stats.t.sf(np.abs(tstat), df)
    if np.any(used & (n < 2)):
        nan = np.full(np.shape(est), np.nan)
        return est, nan, nan, nan, nan, nan
    return est, se, df, est - q * se, est + q * se, p


def slope_weights(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Weights w with sum_i w_i * mean_i = the OLS slope over all sets (level i has counts_i sets)."""
    x, n = np.asarray(x, float), np.asarray(counts, float)
    xc = x - (n * x).sum() / n.sum()
    return n * xc / (n * xc**2).sum()


def effect_weights(n_levels: int) -> np.ndarray:
    """Weights of (largest IPC) - (smallest IPC)."""
    w = np.zeros(n_levels)
    w[0], w[-1] = -1.0, 1.0
    return w


def level_stats(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(levels, counts, means, sample variances) of set values ``y`` grouped by their IPC ``x``;
    the variance is NaN at a level with one set."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    levels = np.unique(x)
    counts = np.array([(x == lv).sum() for lv in levels])
    means = np.array([y[x == lv].mean() for lv in levels])
    variances = np.array([y[x == lv].var(ddof=1) if c > 1 else np.nan for lv, c in zip(levels, counts)])
    return levels, counts, means, variances


def set_units(ipc: Sequence[float], values: Sequence[float], groups: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """(IPC, value) per distilled set: each set's value is the mean over its evaluation models."""
    df = pd.DataFrame({"ipc": np.asarray(ipc, float), "y": np.asarray(values, float),
                       "g": np.asarray(groups, dtype=object)}).dropna()
    units = df.groupby(["ipc", "g"], sort=True)["y"].mean().reset_index()
    return units["ipc"].to_numpy(float), units["y"].to_numpy(float)


def rank_test(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman's rho of y [..., N] with x [N] along the last axis and its two-sided p-value (the
    t approximation on N - 2 degrees of freedom, as ``scipy.stats.spearmanr``); a constant y gives
    rho 0, p 1. Vectorised so that simulated sweeps use the same test as a real one."""
    rx = stats.rankdata(np.asarray(x, float))
    ry = stats.rankdata(np.asarray(y, float), axis=-1)
    rx = rx - rx.mean()
    ry = ry - ry.mean(axis=-1, keepdims=True)
    denom = np.sqrt((rx @ rx) * (ry * ry).sum(axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(denom > 0, (ry * rx).sum(axis=-1) / np.where(denom > 0, denom, 1.0), 0.0)
        n = len(rx)
        tstat = rho * np.sqrt((n - 2) / np.clip(1.0 - rho**2, 1e-300, None))
        p = np.where(denom > 0, 2 * stats.t.sf(np.abs(tstat), n - 2), 1.0)
    return rho, p


def decide(rho: np.ndarray, p: np.ndarray, low: np.ndarray, high: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The verdict rule: (increase found, decrease found). Both tests must agree: the rank test
    significant at ``alpha`` in a direction and the slope's interval excluding 0 on that side."""
    sig = np.asarray(p) < alpha
    return sig & (np.asarray(rho) > 0) & (np.asarray(low) > 0), sig & (np.asarray(rho) < 0) & (np.asarray(high) < 0)
