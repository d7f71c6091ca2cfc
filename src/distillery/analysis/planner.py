"""A study planner: how large a change of class variance a design can detect, before launch.

A verdict of "not supported" is only as strong as the design's power. The planner answers, for a
(method, arch) series with given IPCs, sets per IPC and models per set: the minimal change of the
metric from the smallest to the largest IPC that the study's verdict ("holds": the rank test and the
slope's interval agree on an increase, ``trend.decide``) finds with 80 % power, and how many sets per
IPC a target change needs.

How: simulated sweeps run through the very functions the analysis uses (``trend.rank_test``,
``inference.welch_contrast``, ``trend.decide``), vectorised over thousands of sweeps, with a linear
rise from the smallest to the largest IPC. Each set's value is its true value plus set noise plus the
mean of its models' noise, so a set mean has the variance set_sd^2 + model_sd^2 / models. The draws are
common random numbers keyed by (seed, key), so power grows monotonically with the effect and the
bisection for the minimal detectable effect is deterministic. Power is not analytic here because the
verdict needs two tests to agree; ``tests/test_calibration.py`` checks the planner's power against
sweeps simulated at the model level through ``trend_test``.

Multiple series: the analysis adjusts the rank test with Holm over the series; the planner uses
Holm's first step (alpha / number of series), the worst case, so its figures are conservative.

Noise: from a pilot sweep (``estimate_noise`` on its per-model rows: the pooled within-set variance
of the models and the pooled variance of set means within an IPC), or, without one, the defaults in
``DEFAULT_NOISE``, measured on the shipped CIFAR-10 laptop study (docs/findings/cifar10/aggregates.csv).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .inference import decide, rank_test, set_units, slope_weights, welch_contrast

#: simulated sweeps per power evaluation (binomial SE of a power near 0.8: 0.006)
SIMS = 4000
POWER = 0.8


@dataclass(frozen=True)
class Noise:
    """Standard deviations of a metric (class variance: fraction^2) between the sets of one cell and
    between the models of one set, and where they come from."""

    set_sd: float
    model_sd: float
    source: str

    def set_mean_sd(self, models: int) -> float:
        """SD of one set's value (the mean over its ``models`` evaluation models)."""
        return math.sqrt(self.set_sd**2 + self.model_sd**2 / max(1, models))


#: Without a pilot: the median, over the distilled cells of the CIFAR-10 laptop study
#: (docs/findings/cifar10/aggregates.csv: random and DM, IPC 1-30, 3 sets x 2 models), of the SD of
#: class variance over a cell's models; that run did not store its per-set values, so the SD is split
#: evenly between the set and the model level (set_sd = model_sd = SD / sqrt(2)). Other networks use
#: the ConvNet's. ``tests/test_calibration.py`` recomputes the medians from the stored CSV.
DEFAULT_TOTAL_SD = {"convnet": 0.0030, "alexnet": 0.0060}
DEFAULT_SOURCE = "default: CIFAR-10 laptop study, docs/findings/cifar10/aggregates.csv"


def default_noise(arch: str) -> Noise:
    total = DEFAULT_TOTAL_SD.get(arch, DEFAULT_TOTAL_SD["convnet"])
    return Noise(total / math.sqrt(2), total / math.sqrt(2), DEFAULT_SOURCE + ("" if arch in DEFAULT_TOTAL_SD else ", ConvNet's"))


@dataclass(frozen=True)
class Design:
    """IPC values, sets at each and evaluation models per set of one series."""

    ipcs: tuple[float, ...]
    sets: tuple[int, ...]
    models: int

    @classmethod
    def balanced(cls, ipcs: Sequence[float], sets: int, models: int) -> "Design":
        return cls(tuple(float(i) for i in sorted(ipcs)), tuple([int(sets)] * len(ipcs)), int(models))


def _rng(seed: int, key: Sequence[object]) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(repr(tuple(str(k) for k in key)).encode())])


def _draws(design: Design, sims: int, seed: int, key: Sequence[object]) -> np.ndarray:
    return _rng(seed, ("planner", *key, design.ipcs, design.sets)).standard_normal((sims, sum(design.sets)))


def _power_from(z: np.ndarray, design: Design, sd: float, effect: float, alpha: float, level: float,
                n_series: int) -> float:
    """Fraction of the simulated sweeps ``sd * z`` (+ a linear rise of ``effect``) whose verdict holds."""
    levels = np.asarray(design.ipcs, float)
    counts = np.asarray(design.sets)
    x = np.repeat(levels, counts)
    span = levels[-1] - levels[0]
    y = effect * (x - levels[0]) / span + sd * z
    bounds = np.concatenate([[0], np.cumsum(counts)])
    means = np.stack([y[:, a:b].mean(axis=1) for a, b in zip(bounds[:-1], bounds[1:])], axis=1)
    variances = np.stack([y[:, a:b].var(axis=1, ddof=1) for a, b in zip(bounds[:-1], bounds[1:])], axis=1)
    _, _, _, lo, hi, _ = welch_contrast(means, variances, counts, slope_weights(levels, counts), level)
    rho, p = rank_test(x, y)
    up, _ = decide(rho, p, lo, hi, alpha / max(1, n_series))
    return float(np.mean(up))


def _check(design: Design) -> None:
    if len(design.ipcs) < 3:
        raise ValueError(f"a trend needs at least 3 IPC values, the design has {len(design.ipcs)}")
    if min(design.sets) < 2:
        raise ValueError("a verdict needs at least 2 sets at every IPC (no interval about sets with one)")


def power(design: Design, sd: float, effect: float, alpha: float = 0.05, level: float = 0.95, n_series: int = 1,
          sims: int = SIMS, seed: int = 0, key: Sequence[object] = ()) -> float:
    """Probability that the verdict finds an increase of ``effect`` (smallest -> largest IPC, linear
    in IPC) when a set's value has SD ``sd``."""
    _check(design)
    return _power_from(_draws(design, sims, seed, key), design, sd, effect, alpha, level, n_series)


def minimal_detectable_effect(design: Design, sd: float, alpha: float = 0.05, level: float = 0.95,
                              target: float = POWER, n_series: int = 1, sims: int = SIMS, seed: int = 0,
                              key: Sequence[object] = ()) -> float:
    """Smallest rise (smallest -> largest IPC) found with probability ``target``; inf if none is
    (e.g. Holm's threshold below what the rank test can reach with so few sets)."""
    _check(design)
    if sd <= 0:
        return 0.0
    z = _draws(design, sims, seed, key)

    def pw(e: float) -> float:
        return _power_from(z, design, sd, e, alpha, level, n_series)

    lo, hi = 0.0, sd
    for _ in range(40):
        if pw(hi) >= target:
            break
        lo, hi = hi, hi * 2
    else:
        return math.inf
    for _ in range(40):
        mid = (lo + hi) / 2
        if pw(mid) >= target:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-3 * hi:
            break
    return hi


def sets_needed(ipcs: Sequence[float], models: int, noise: Noise, effect: float, alpha: float = 0.05,
                level: float = 0.95, target: float = POWER, n_series: int = 1, max_sets: int = 200,
                sims: int = SIMS, seed: int = 0, key: Sequence[object] = ()) -> int | None:
    """Fewest sets per IPC at which a rise of ``effect`` is found with probability ``target``
    (None: not within ``max_sets``)."""
    sd = noise.set_mean_sd(models)

    def ok(n: int) -> bool:
        d = Design.balanced(ipcs, n, models)
        return power(d, sd, effect, alpha, level, n_series, sims, seed, key) >= target

    lo, hi = 1, 2
    while not ok(hi):
        lo, hi = hi, hi * 2
        if lo >= max_sets:
            return None
        hi = min(hi, max_sets)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def estimate_noise(rows: pd.DataFrame, metric: str = "class_var", source: str = "pilot") -> Noise | None:
    """Set- and model-level SDs of ``metric`` from the per-model rows of one series (columns ipc,
    run_id and the metric): model SD = pooled within-set SD; set SD from the pooled variance of set
    means within an IPC minus the model part. None without two sets at some IPC."""
    g = rows[["ipc", "run_id", metric]].dropna()
    within = g.groupby("run_id")[metric]
    m = within.size()
    dof_m = float((m - 1).sum())
    model_var = float(((g[metric] - within.transform("mean")) ** 2).sum() / dof_m) if dof_m > 0 else 0.0
    x, y = set_units(g["ipc"], g[metric], g["run_id"])
    sets = pd.DataFrame({"ipc": x, "y": y})
    by = sets.groupby("ipc")["y"]
    dof_s = float((by.size() - 1).sum())
    if dof_s <= 0:
        return None
    between = float(((sets["y"] - by.transform("mean")) ** 2).sum() / dof_s)
    m_h = float(len(m) / (1.0 / m).sum())  # harmonic mean of models per set
    set_var = max(0.0, between - model_var / m_h)
    return Noise(math.sqrt(set_var), math.sqrt(model_var), source)


def series_mde(rows: pd.DataFrame, metric: str, alpha: float = 0.05, level: float = 0.95, power: float = POWER,
               n_series: int = 1, sims: int = SIMS, seed: int = 0, key: Sequence[object] = ()) -> float:
    """The minimal detectable effect of an analysed series' own design (its IPCs and sets per IPC)
    at the noise it shows (the pooled SD of set means within an IPC); NaN where there is none."""
    x, y = set_units(rows["ipc"], rows[metric], rows["run_id"])
    sets = pd.DataFrame({"ipc": x, "y": y})
    by = sets.groupby("ipc")["y"]
    counts = by.size()
    if len(counts) < 3 or counts.min() < 2:
        return math.nan
    sd = math.sqrt(float(((sets["y"] - by.transform("mean")) ** 2).sum() / float((counts - 1).sum())))
    design = Design(tuple(float(i) for i in counts.index), tuple(int(c) for c in counts), 1)
    return minimal_detectable_effect(design, sd, alpha, level, power, n_series, sims, seed, key)
