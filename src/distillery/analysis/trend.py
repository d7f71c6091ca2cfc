"""Does class variance grow with IPC? A trend test that answers the study's claim in words.

The fairness study (seeds/000) claims that as IPC grows, accuracy rises AND class-wise variance
rises. For each (dataset, method, arch) series of distilled cells this module tests IPC vs a metric
(class_var by default) two ways, on independent units = distilled SETS (each set's metric averaged
over its evaluation models; models of one set share it, so they are not independent replicates):

  * Spearman rank correlation (monotone, no functional form), with its p-value;
  * the OLS slope (metric per unit IPC) with a seeded percentile CI from a bootstrap stratified by
    IPC that resamples sets and then models within sets.

The claim "holds" only when both agree on an increase (rho > 0 with p < alpha, and the slope CI
above 0); it is "contradicted" when both agree on a decrease; anything else is stated as not
supported / mixed. With a single set per IPC the units are the IPC cells, so small sweeps get
honest, weak p-values instead of pseudo-replicated ones.

What a reviewer asks next, answered per series:

  * an effect size with a CI: the change of the metric from the smallest to the largest IPC (mean
    over that IPC's sets; same two-stage bootstrap), in the metric's unit (class variance: fraction^2)
    and, when the sweep has a full-data baseline, as a multiple of the baseline's value;
  * a correction for testing many series at once: ``trend_all`` adjusts the rank test's p-values
    with Holm's step-down method over every (dataset, method, arch) series of one metric, and the
    verdict uses the adjusted p (``p_adjusted``), so adding methods does not inflate false claims.
    ``tests/test_analysis_stats.py`` simulates sweeps with no trend (set and model noise as in real
    runs) and checks the verdict's false-positive rate stays at or below alpha.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ._boot import keyed_rng, percentile_ci, two_stage_set_means

CLAIM = "class variance grows with IPC"


@dataclass
class TrendResult:
    dataset: str
    method: str
    arch: str
    metric: str
    n_units: int
    n_levels: int
    rho: float
    p_value: float
    slope: float
    slope_ci_low: float
    slope_ci_high: float
    direction: str  # increasing | decreasing | none | mixed | insufficient
    claim_holds: bool | None
    verdict: str
    #: the p the decision used: Holm-adjusted over the series tested together (= p_value alone)
    p_adjusted: float = math.nan
    #: metric at the largest IPC minus at the smallest (mean over sets), with its bootstrap CI
    effect: float = math.nan
    effect_ci_low: float = math.nan
    effect_ci_high: float = math.nan
    #: effect / the full-data baseline's value of the metric (NaN without a baseline)
    effect_vs_baseline: float = math.nan


def _slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """OLS slopes of y [..., N] on x [N] along the last axis."""
    xc = x - x.mean()
    return ((y - y.mean(axis=-1, keepdims=True)) * xc).sum(axis=-1) / (xc @ xc)


def trend_test(
    ipc: Sequence[float],
    values: Sequence[float],
    groups: Sequence[object],
    metric: str = "class_var",
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    level: float = 0.95,
    label: tuple[str, str, str] = ("", "", ""),
    p_adjusted: float | None = None,
    baseline: float | None = None,
) -> TrendResult:
    """Trend of ``values`` (per model) with ``ipc``; ``groups`` = the distilled set of each model.

    ``p_adjusted``: the rank test's p after a multiple-testing correction (``trend_all`` passes
    Holm's); the decision uses it instead of the raw p. ``baseline``: the full-data value of the
    metric, to state the effect as a multiple of it."""
    df = pd.DataFrame({"ipc": np.asarray(ipc, float), "y": np.asarray(values, float),
                       "g": np.asarray(groups, dtype=object)}).dropna()
    units = df.groupby(["ipc", "g"], sort=True)["y"].mean().reset_index()
    x, y = units["ipc"].to_numpy(float), units["y"].to_numpy(float)
    levels = np.unique(x)
    ds, method, arch = label
    what = f"{method}/{arch}" + (f" on {ds}" if ds else "")
    base = dict(dataset=ds, method=method, arch=arch, metric=metric, n_units=len(x), n_levels=len(levels))
    if len(levels) < 3:
        return TrendResult(**base, rho=math.nan, p_value=math.nan, slope=math.nan, slope_ci_low=math.nan,
                           slope_ci_high=math.nan, direction="insufficient", claim_holds=None,
                           verdict=f"{what}: cannot test '{metric} vs IPC' with {len(levels)} distinct IPC value(s); "
                                   "needs at least 3.")
    if np.ptp(y) == 0:
        rho, p = 0.0, 1.0
    else:
        res = stats.spearmanr(x, y)
        rho, p = float(res.statistic), float(res.pvalue)
    slope = float(_slopes(x, y))
    reps, xs = [], []
    for lv in levels:
        at = df["ipc"] == lv
        sets = [grp["y"].to_numpy() for _, grp in df[at].groupby("g", sort=True)]
        means, _ = two_stage_set_means(sets, n_boot, keyed_rng(seed, "trend", metric, *label, lv))
        reps.append(means[..., 0])
        xs.append(np.full(len(sets), lv))
    boot = _slopes(np.concatenate(xs), np.concatenate(reps, axis=1))
    lo, hi = (float(v) for v in percentile_ci(boot, level))
    effect = float(y[x == levels[-1]].mean() - y[x == levels[0]].mean())
    e_lo, e_hi = (float(v) for v in percentile_ci(reps[-1].mean(axis=1) - reps[0].mean(axis=1), level))
    rel = effect / baseline if baseline is not None and baseline > 0 else math.nan
    p_used = p if p_adjusted is None else max(p, float(p_adjusted))
    sig = p_used < alpha
    if sig and rho > 0 and lo > 0:
        direction, holds = "increasing", True
    elif sig and rho < 0 and hi < 0:
        direction, holds = "decreasing", False
    elif sig or lo > 0 or hi < 0:
        direction, holds = "mixed", None
    else:
        direction, holds = "none", False
    adjusted = f", Holm-adjusted {p_used:.2g}" if p_adjusted is not None and p_used != p else ""
    times = f" = {rel:+.2g} x the full-data value" if math.isfinite(rel) else ""
    stat = (f"Spearman rho = {rho:+.2f} (p = {p:.2g}{adjusted}, n = {len(x)} sets over {len(levels)} IPC values); "
            f"OLS slope {slope:+.3g} per IPC, {level:.0%} bootstrap CI [{lo:+.3g}, {hi:+.3g}]; "
            f"IPC {levels[0]:g} -> {levels[-1]:g}: {effect:+.3g} [{e_lo:+.3g}, {e_hi:+.3g}]{times}")
    metric_words = "class variance" if metric == "class_var" else metric
    if metric != "class_var":
        claim = {"increasing": f"{metric_words} increases with IPC",
                 "decreasing": f"{metric_words} decreases with IPC",
                 "mixed": f"{what_tests_found(sig, rho, lo, hi, level)}: the evidence on a trend of {metric_words} with IPC is mixed",
                 "none": f"no significant monotone trend of {metric_words} with IPC"}[direction]
    else:
        claim = {"increasing": f"{metric_words} increases with IPC: the study's claim ('{CLAIM}') HOLDS for this sweep",
                 "decreasing": f"{metric_words} DECREASES with IPC: the study's claim ('{CLAIM}') is CONTRADICTED by this sweep",
                 "mixed": f"{what_tests_found(sig, rho, lo, hi, level)}: the study's claim ('{CLAIM}') is INCONCLUSIVE for this sweep",
                 "none": f"no significant monotone trend: the study's claim ('{CLAIM}') is NOT SUPPORTED by this sweep"}[direction]
    return TrendResult(**base, rho=rho, p_value=p, slope=slope, slope_ci_low=lo, slope_ci_high=hi,
                       direction=direction, claim_holds=holds, verdict=f"{what}: {claim} ({stat}).",
                       p_adjusted=p_used, effect=effect, effect_ci_low=e_lo, effect_ci_high=e_hi, effect_vs_baseline=rel)


def what_tests_found(sig: bool, rho: float, lo: float, hi: float, level: float) -> str:
    """What each of the two tests says, in words, for a verdict where they do not agree on a
    significant direction (often both lean the same way and only one is significant)."""
    rank = ("a significant increase" if rho > 0 else "a significant decrease") if sig else \
        f"no significant trend (rho {'> 0' if rho > 0 else '< 0' if rho < 0 else '= 0'})"
    if lo > 0:
        slope = f"the slope's {level:.0%} bootstrap CI is above 0 (an increase)"
    elif hi < 0:
        slope = f"the slope's {level:.0%} bootstrap CI is below 0 (a decrease)"
    else:
        slope = f"the slope's {level:.0%} bootstrap CI includes 0"
    return f"the rank test finds {rank}, {slope}"


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def _rank_p(ipc: pd.Series, values: pd.Series, groups: pd.Series) -> float:
    """The rank test's raw p on set-level units (as trend_test computes it; NaN if not testable)."""
    units = pd.DataFrame({"ipc": ipc.to_numpy(float), "y": values.to_numpy(float), "g": groups.to_numpy(object)}).dropna()
    units = units.groupby(["ipc", "g"], sort=True)["y"].mean().reset_index()
    if units["ipc"].nunique() < 3:
        return math.nan
    if np.ptp(units["y"].to_numpy()) == 0:
        return 1.0
    return float(stats.spearmanr(units["ipc"], units["y"]).pvalue)


def trend_all(models: pd.DataFrame, metric: str = "class_var", n_boot: int = 2000, seed: int = 0,
              alpha: float = 0.05) -> tuple[pd.DataFrame, list[TrendResult]]:
    """trend_test for every (dataset, method, arch) series of distilled cells (baseline excluded),
    with Holm-adjusted p-values over the series and effects relative to each full-data baseline."""
    series = list(models[~models["full_data"]].groupby(["dataset", "method", "arch"], sort=True))
    adjusted = holm([_rank_p(g["ipc"], g[metric], g["run_id"]) for _, g in series])
    base = models[models["full_data"]].groupby(["dataset", "arch"])[metric].mean().to_dict()
    out = []
    for ((ds, method, arch), g), p_adj in zip(series, adjusted):
        out.append(trend_test(g["ipc"], g[metric], g["run_id"], metric=metric, n_boot=n_boot, seed=seed,
                              alpha=alpha, label=(ds, method, arch), p_adjusted=None if math.isnan(p_adj) else p_adj,
                              baseline=base.get((ds, arch))))
    return pd.DataFrame([asdict(r) for r in out]), out
