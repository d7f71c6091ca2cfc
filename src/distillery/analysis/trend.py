"""Does class variance grow with IPC? A trend test that answers the study's claim in words.

The fairness study (seeds/000) claims that as IPC grows, accuracy rises AND class-wise variance
rises. For each (dataset, method, arch) series of distilled cells this module tests IPC vs a metric
(class_var by default) two ways, on independent units = distilled SETS (each set's metric averaged
over its evaluation models; models of one set share it, so they only tell how well that set's value
is known). Sets of one seed are independent across IPC by construction (each cell draws from a seed
keyed by the cell, ``TrialSpec.cell_seed``), so they are exchangeable units here:

  * Spearman rank correlation over the sets (monotone, no functional form), with its p-value;
  * the OLS slope over the sets (metric per unit IPC) as a linear contrast of the per-IPC means, with
    a Welch-Satterthwaite t interval (``inference.welch_contrast``): each IPC keeps its own set-to-set
    variance, so noise that grows with IPC is allowed, and the t quantile on the estimated degrees of
    freedom keeps the interval honest at 2-3 sets per IPC, where a bootstrap under-covered.

The claim "holds" only when both agree on an increase (rho > 0 with p < alpha, and the slope CI
above 0); it is "contradicted" when both agree on a decrease; anything else is stated as not
supported / mixed, naming which test lacked the evidence. With one set at some IPC there is no
estimate of the set-to-set noise there, so no interval about sets can be given: the verdict says so
("untested") instead of printing a model-only interval.

What a reviewer asks next, answered per series:

  * an effect size with a CI: the change of the metric from the smallest to the largest IPC (mean
    over that IPC's sets), with a Welch interval, in the metric's unit (class variance: fraction^2)
    and, when the sweep has a full-data baseline, as a multiple of the baseline's value;
  * a correction for testing many series at once: ``trend_all`` adjusts the rank test's p-values
    with Holm's step-down method over every (dataset, method, arch) series of one metric;
  * the design's power: the minimal change from the smallest to the largest IPC that this design
    (its IPCs, sets and the noise it measured) detects with 80 % power (``planner``), so "not
    supported" reads as "no rise larger than X", not as "no rise".

``tests/test_calibration.py`` simulates sweeps over noise regimes and checks the intervals' coverage
and the verdict's error rates; the decision rule itself is ``decide``, shared with the planner.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .inference import decide, effect_weights, level_stats, rank_test, set_units, slope_weights, welch_contrast
from .planner import series_mde

CLAIM = "class variance grows with IPC"
INTERVAL_METHOD = "Welch-Satterthwaite t over set means"


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
    direction: str  # increasing | decreasing | none | mixed | untested | insufficient
    claim_holds: bool | None
    verdict: str
    #: the p the decision used: Holm-adjusted over the series tested together (= p_value alone)
    p_adjusted: float = math.nan
    #: metric at the largest IPC minus at the smallest (mean over sets), with its Welch CI
    effect: float = math.nan
    effect_ci_low: float = math.nan
    effect_ci_high: float = math.nan
    #: effect / the full-data baseline's value of the metric (NaN without a baseline)
    effect_vs_baseline: float = math.nan
    #: fewest and most sets at one IPC (an interval needs at least 2 at every IPC)
    min_sets: int = 0
    max_sets: int = 0
    slope_df: float = math.nan
    effect_df: float = math.nan
    interval_method: str = INTERVAL_METHOD
    #: minimal change from the smallest to the largest IPC this design detects with 80 % power
    #: (planner, from the noise the series itself shows; NaN where it cannot be estimated)
    mde: float = math.nan


def trend_test(
    ipc: Sequence[float],
    values: Sequence[float],
    groups: Sequence[object],
    metric: str = "class_var",
    alpha: float = 0.05,
    level: float = 0.95,
    label: tuple[str, str, str] = ("", "", ""),
    p_adjusted: float | None = None,
    baseline: float | None = None,
    mde: float | None = None,
) -> TrendResult:
    """Trend of ``values`` (per model) with ``ipc``; ``groups`` = the distilled set of each model.

    ``p_adjusted``: the rank test's p after a multiple-testing correction (``trend_all`` passes
    Holm's); the decision uses it instead of the raw p. ``baseline``: the full-data value of the
    metric, to state the effect as a multiple of it. ``mde``: the planner's minimal detectable
    change for this design, quoted when no trend is found."""
    x, y = set_units(ipc, values, groups)
    levels, counts, means, variances = level_stats(x, y)
    ds, method, arch = label
    what = f"{method}/{arch}" + (f" on {ds}" if ds else "")
    base = dict(dataset=ds, method=method, arch=arch, metric=metric, n_units=len(x), n_levels=len(levels),
                min_sets=int(counts.min()) if len(counts) else 0, max_sets=int(counts.max()) if len(counts) else 0,
                mde=math.nan if mde is None else float(mde))
    if len(levels) < 3:
        return TrendResult(**base, rho=math.nan, p_value=math.nan, slope=math.nan, slope_ci_low=math.nan,
                           slope_ci_high=math.nan, direction="insufficient", claim_holds=None,
                           verdict=f"{what}: cannot test '{metric} vs IPC' with {len(levels)} distinct IPC value(s); "
                                   "needs at least 3.")
    rho_a, p_a = rank_test(x, y)
    rho, p = float(rho_a), float(p_a)
    slope, _, s_df, lo, hi, _ = (float(v) for v in welch_contrast(means, variances, counts, slope_weights(levels, counts), level))
    effect, _, e_df, e_lo, e_hi, _ = (float(v) for v in welch_contrast(means, variances, counts, effect_weights(len(levels)), level))
    rel = effect / baseline if baseline is not None and baseline > 0 else math.nan
    p_used = p if p_adjusted is None else max(p, float(p_adjusted))
    sets = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"
    adjusted = f", Holm-adjusted {p_used:.2g}" if p_adjusted is not None and p_used != p else ""
    rank = f"Spearman rho = {rho:+.2f} (p = {p:.2g}{adjusted}, n = {len(x)} sets over {len(levels)} IPC values, {sets} per IPC)"
    result = dict(base, rho=rho, p_value=p, slope=slope, slope_ci_low=lo, slope_ci_high=hi, p_adjusted=p_used,
                  effect=effect, effect_ci_low=e_lo, effect_ci_high=e_hi, effect_vs_baseline=rel,
                  slope_df=s_df, effect_df=e_df)
    metric_words = "class variance" if metric == "class_var" else metric
    claim_tail = f": the study's claim ('{CLAIM}')" if metric == "class_var" else ""
    if not math.isfinite(lo):
        alone = [str(int(lv)) if float(lv).is_integer() else f"{lv:g}" for lv, c in zip(levels, counts) if c < 2]
        words = (f"no interval about sets can be given with one set at IPC {', '.join(alone)} (the set-to-set noise "
                 f"there is unknown; run at least 2 seeds per IPC)")
        tail = f"{claim_tail} is UNTESTED by this sweep" if metric == "class_var" else ": the trend is untested"
        return TrendResult(**result, direction="untested", claim_holds=None,
                           verdict=f"{what}: {words}{tail} ({rank}; OLS slope {slope:+.3g} per IPC).")
    up, down = (bool(v) for v in decide(rho, p_used, lo, hi, alpha))
    sig = p_used < alpha
    if up:
        direction, holds = "increasing", True
    elif down:
        direction, holds = "decreasing", False
    elif sig or lo > 0 or hi < 0:
        direction, holds = "mixed", None
    else:
        direction, holds = "none", False
    times = f" = {rel:+.2g} x the full-data value" if math.isfinite(rel) else ""
    stat = (f"{rank}; OLS slope {slope:+.3g} per IPC, {level:.0%} {INTERVAL_METHOD} CI [{lo:+.3g}, {hi:+.3g}] "
            f"(df {s_df:.1f}); IPC {levels[0]:g} -> {levels[-1]:g}: {effect:+.3g} [{e_lo:+.3g}, {e_hi:+.3g}]{times}")
    power = ""
    if direction in ("none", "mixed") and mde is not None and math.isfinite(mde):
        power = (f"; the planner: this design and its noise detect a rise of {metric_words} of at least {mde:+.3g} from "
                 f"IPC {levels[0]:g} to {levels[-1]:g} with 80% power, so a smaller one may be hidden")
    found = what_tests_found(sig, rho, lo, hi, level)
    if metric != "class_var":
        claim = {"increasing": f"{metric_words} increases with IPC",
                 "decreasing": f"{metric_words} decreases with IPC",
                 "mixed": f"{found}: the evidence on a trend of {metric_words} with IPC is mixed",
                 "none": f"{found}: no significant monotone trend of {metric_words} with IPC"}[direction]
    else:
        claim = {"increasing": f"{metric_words} increases with IPC{claim_tail} HOLDS for this sweep",
                 "decreasing": f"{metric_words} DECREASES with IPC{claim_tail} is CONTRADICTED by this sweep",
                 "mixed": f"{found}{claim_tail} is INCONCLUSIVE for this sweep",
                 "none": f"{found}{claim_tail} is NOT SUPPORTED by this sweep"}[direction]
    return TrendResult(**result, direction=direction, claim_holds=holds, verdict=f"{what}: {claim} ({stat}{power}).")


def what_tests_found(sig: bool, rho: float, lo: float, hi: float, level: float) -> str:
    """What each of the two tests says, in words: which found a trend and which lacked the evidence
    (often both lean the same way and only one is significant)."""
    rank = ("a significant increase" if rho > 0 else "a significant decrease") if sig else \
        f"no significant trend (rho {'> 0' if rho > 0 else '< 0' if rho < 0 else '= 0'})"
    if lo > 0:
        slope = f"the slope's {level:.0%} CI is above 0 (an increase)"
    elif hi < 0:
        slope = f"the slope's {level:.0%} CI is below 0 (a decrease)"
    else:
        slope = f"the slope's {level:.0%} CI includes 0"
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
    x, y = set_units(ipc, values, groups)
    if len(np.unique(x)) < 3:
        return math.nan
    return float(rank_test(x, y)[1])


def trend_all(models: pd.DataFrame, metric: str = "class_var", alpha: float = 0.05, level: float = 0.95,
              power: float = 0.8, seed: int = 0) -> tuple[pd.DataFrame, list[TrendResult]]:
    """trend_test for every (dataset, method, arch) series of distilled cells (baseline excluded),
    with Holm-adjusted p-values over the series, effects relative to each full-data baseline and
    the planner's minimal detectable effect of each series' own design and noise (``seed`` keys its
    simulated sweeps)."""
    series = list(models[~models["full_data"]].groupby(["dataset", "method", "arch"], sort=True))
    adjusted = holm([_rank_p(g["ipc"], g[metric], g["run_id"]) for _, g in series])
    n_tested = int(np.isfinite(adjusted).sum())
    base = models[models["full_data"]].groupby(["dataset", "arch"])[metric].mean().to_dict()
    out = []
    for ((ds, method, arch), g), p_adj in zip(series, adjusted):
        mde = series_mde(g, metric, alpha=alpha, level=level, power=power, n_series=max(1, n_tested),
                         seed=seed, key=(ds, method, arch, metric))
        out.append(trend_test(g["ipc"], g[metric], g["run_id"], metric=metric, alpha=alpha, level=level,
                              label=(ds, method, arch), p_adjusted=None if math.isnan(p_adj) else p_adj,
                              baseline=base.get((ds, arch)), mde=mde))
    return pd.DataFrame([asdict(r) for r in out]), out
