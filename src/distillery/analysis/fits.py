"""Trade-off curves: named models of metric(IPC), fitted with CIs and goodness of fit.

Models live in a registry (``CURVE_MODELS``; add one with ``register_curve_model``) so a report
can fit every model and let AIC choose, instead of hard-coding one functional form:

  power_law   y = a - b * IPC^-c   (saturating: a is the IPC -> inf asymptote, c > 0 the rate)
  log_linear  y = a + b * ln(IPC)  (constant gain per doubling)

Fitting is least squares on the per-MODEL observations (x = the cell's IPC, y = the model's
metric): same estimates as weighting cell means by their model counts.

Intervals: only where one can be calibrated. A curve linear in its parameters (``log_linear``) has
parameters that are linear contrasts of the per-IPC means, so each gets the Welch-Satterthwaite t
interval over distilled sets that the trend's slope uses (``inference.welch_contrast``; sets are the
unit, models only make each set's value more precise). The saturating power law is nonlinear in
``c``; with 5-7 IPC values and 2-3 sets each neither its covariance nor a bootstrap gives a
calibrated interval, so it reports point estimates and AIC only, and the report says so. (The
former curve_fit covariance treated models as independent and the two-stage bootstrap under-covered
at 2-3 sets per IPC.)

Goodness of fit: ``r2`` is R^2 of the model-count-weighted CELL MEANS (how much of the IPC trend the
curve explains; per-model R^2 would mostly measure model noise); ``aic``/``aicc`` are Gaussian
AIC = n ln(RSS/n) + 2k on the per-model observations (k = params + noise variance), comparable
between models fitted to the same series.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize

from .inference import level_stats, welch_contrast

Starts = Callable[[np.ndarray, np.ndarray], list[list[float]]]


@dataclass(frozen=True)
class CurveModel:
    """A named parametric curve y = func(x, *params)."""

    name: str
    formula: str
    params: tuple[str, ...]
    func: Callable[..., np.ndarray]
    starts: Starts  # starting points from the data (several: the power law has local minima)
    bounds: tuple[Sequence[float], Sequence[float]] | None = None
    #: for a curve linear in its parameters: the design matrix X(ipc) with y = X @ params, which
    #: makes each parameter a linear contrast of per-IPC means with a calibrated interval
    design: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def min_levels(self) -> int:
        """Distinct IPC values needed for a fit with at least one residual degree of freedom."""
        return len(self.params) + 1


CURVE_MODELS: dict[str, CurveModel] = {}


def register_curve_model(model: CurveModel) -> CurveModel:
    if model.name in CURVE_MODELS:
        raise ValueError(f"curve model {model.name!r} is registered twice")
    CURVE_MODELS[model.name] = model
    return model


def _power_law(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.power(x, -c)


def _power_law_starts(x: np.ndarray, y: np.ndarray) -> list[list[float]]:
    lo, hi = x.min(), x.max()
    y_lo, y_hi = y[x == lo].mean(), y[x == hi].mean()
    out = []
    for c in (0.25, 0.5, 1.0, 2.0):
        a = y_hi + 0.1 * (y_hi - y_lo)
        out.append([a, (a - y_lo) * lo**c, c])
    return out


def _log_linear(x: np.ndarray, a: float, b: float) -> np.ndarray:
    return a + b * np.log(x)


def _log_linear_starts(x: np.ndarray, y: np.ndarray) -> list[list[float]]:
    b, a = np.polyfit(np.log(x), y, 1)
    return [[a, b]]


register_curve_model(CurveModel(
    "power_law", "a - b*IPC^-c", ("a", "b", "c"), _power_law, _power_law_starts,
    bounds=([-np.inf, -np.inf, 1e-3], [np.inf, np.inf, 10.0]),
))
register_curve_model(CurveModel("log_linear", "a + b*ln(IPC)", ("a", "b"), _log_linear, _log_linear_starts,
                                design=lambda x: np.column_stack([np.ones_like(x), np.log(x)])))


@dataclass
class FitResult:
    """One fitted curve (``ok`` False with ``message`` when it could not be fitted)."""

    model: str
    formula: str
    ok: bool
    message: str = ""
    n_obs: int = 0
    n_levels: int = 0
    params: dict[str, float] = field(default_factory=dict)
    #: Welch-Satterthwaite standard error and interval over sets (curves linear in their parameters
    #: with >= 2 sets at every IPC); empty otherwise, with the reason in ``ci_note``
    stderr: dict[str, float] = field(default_factory=dict)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    ci_note: str = ""
    r2: float = math.nan
    rss: float = math.nan
    aic: float = math.nan
    aicc: float = math.nan

    def predict(self, x: np.ndarray | Sequence[float]) -> np.ndarray:
        model = CURVE_MODELS[self.model]
        return model.func(np.asarray(x, dtype=float), *[self.params[p] for p in model.params])


def _curve_fit(model: CurveModel, x: np.ndarray, y: np.ndarray, starts: Iterable[Sequence[float]],
               sigma: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Best (lowest weighted RSS) curve_fit over several starts, or None if all fail."""
    best = None
    for p0 in starts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kw = {"bounds": model.bounds} if model.bounds is not None else {}
                p, cov = optimize.curve_fit(model.func, x, y, p0=list(p0), sigma=sigma, maxfev=20000, **kw)
        except (RuntimeError, ValueError, np.linalg.LinAlgError):
            continue
        resid = (y - model.func(x, *p)) / (sigma if sigma is not None else 1.0)
        rss = float(resid @ resid)
        if np.isfinite(rss) and (best is None or rss < best[0]):
            best = (rss, p, cov)
    return None if best is None else (best[1], best[2])


def fit_curve(
    x: Sequence[float],
    y: Sequence[float],
    model: str | CurveModel,
    groups: Sequence[object] | None = None,
    level: float = 0.95,
) -> FitResult:
    """Fit ``model`` to per-model observations (x = IPC, y = metric).

    groups: the distilled set (run id) of each observation, the unit of the parameters' intervals;
    without it every observation is its own set.
    """
    cm = CURVE_MODELS[model] if isinstance(model, str) else model
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[keep], y[keep]
    grp = np.asarray(groups, dtype=object)[keep] if groups is not None else np.arange(len(x)).astype(object)
    levels = np.unique(x)
    res = FitResult(cm.name, cm.formula, ok=False, n_obs=len(x), n_levels=len(levels))
    if len(levels) < cm.min_levels:
        res.message = f"needs >= {cm.min_levels} distinct IPC values, has {len(levels)}"
        return res
    fitted = _curve_fit(cm, x, y, cm.starts(x, y))
    if fitted is None:
        res.message = "curve_fit did not converge from any starting point"
        return res
    p, _ = fitted
    k = len(cm.params)
    res.ok = True
    res.params = dict(zip(cm.params, map(float, p)))
    resid = y - cm.func(x, *p)
    res.rss = float(resid @ resid)
    n, kk = len(x), k + 1
    res.aic = float(n * math.log(max(res.rss, 1e-300) / n) + 2 * kk)
    res.aicc = float(res.aic + 2 * kk * (kk + 1) / (n - kk - 1)) if n - kk - 1 > 0 else math.nan
    means = np.array([y[x == lv].mean() for lv in levels])
    counts = np.array([(x == lv).sum() for lv in levels], dtype=float)
    grand = float((means * counts).sum() / counts.sum())
    tss = float((counts * (means - grand) ** 2).sum())
    rss_m = float((counts * (means - cm.func(levels, *p)) ** 2).sum())
    res.r2 = 1.0 - rss_m / tss if tss > 0 else math.nan
    _set_intervals(res, cm, x, y, grp, level)
    return res


def _set_intervals(res: FitResult, cm: CurveModel, x: np.ndarray, y: np.ndarray, grp: np.ndarray, level: float) -> None:
    """Welch t intervals over sets for a curve linear in its parameters (see the module docstring)."""
    if cm.design is None:
        res.ci_note = "nonlinear in its parameters: no calibrated interval at these sizes"
        return
    units = pd.DataFrame({"x": x, "y": y, "g": grp}).groupby(["x", "g"], sort=True)["y"].agg(["mean", "size"]).reset_index()
    levels, counts, means, variances = level_stats(units["x"].to_numpy(), units["mean"].to_numpy())
    if counts.min() < 2:
        res.ci_note = "one set at some IPC: no interval about sets can be given"
        return
    weights = units.groupby("x")["size"].sum().to_numpy(float)  # the per-model least squares weights each IPC by its models
    X = cm.design(levels)
    A = np.linalg.solve(X.T @ (weights[:, None] * X), X.T * weights)  # params = A @ per-IPC means
    for name, w in zip(cm.params, A):
        _, se, _, lo, hi, _ = welch_contrast(means, variances, counts, w, level)
        res.stderr[name] = float(se)
        res.ci[name] = (float(lo), float(hi))


def fit_all(
    models: pd.DataFrame,
    metrics: Sequence[str] = ("mean_acc", "class_var"),
    curve_models: Sequence[str] | None = None,
    level: float = 0.95,
) -> tuple[pd.DataFrame, dict[tuple, FitResult]]:
    """Fit every curve model to every (dataset, method, arch, metric) series of distilled cells.

    Returns a tidy table (one row per fit: params p_<name> with se / CI over sets where calibrated, r2, aic,
    delta_aic, best) and the FitResult objects keyed (dataset, method, arch, metric, model).
    """
    names = list(curve_models or CURVE_MODELS)
    distilled = models[~models["full_data"]]
    rows, results = [], {}
    for (ds, method, arch), g in distilled.groupby(["dataset", "method", "arch"], sort=True):
        for metric in metrics:
            for name in names:
                key = (ds, method, arch, metric, name)
                r = fit_curve(g["ipc"], g[metric], name, groups=g["run_id"], level=level)
                results[key] = r
                row = {"dataset": ds, "method": method, "arch": arch, "metric": metric, "model": name,
                       "formula": r.formula, "ok": r.ok, "message": r.message, "n_obs": r.n_obs,
                       "n_levels": r.n_levels, "r2": r.r2, "aic": r.aic, "aicc": r.aicc, "ci_note": r.ci_note}
                for pn, v in r.params.items():
                    row[f"p_{pn}"] = v
                    row[f"p_{pn}_se"] = r.stderr.get(pn, math.nan)
                    row[f"p_{pn}_ci_low"], row[f"p_{pn}_ci_high"] = r.ci.get(pn, (math.nan, math.nan))
                rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        grp = table.groupby(["dataset", "method", "arch", "metric"])["aic"]
        table["delta_aic"] = table["aic"] - grp.transform("min")
        table["best"] = table["ok"] & (table["delta_aic"] == 0)
    return table, results


def best_fit(results: Mapping[tuple, FitResult], dataset: str, method: str, arch: str, metric: str) -> FitResult | None:
    """The lowest-AIC successful fit of one series, or None."""
    cands = [r for (d, m, a, met, _), r in results.items()
             if (d, m, a, met) == (dataset, method, arch, metric) and r.ok]
    return min(cands, key=lambda r: r.aic) if cands else None


def tradeoff_curve(acc_fit: FitResult, var_fit: FitResult, ipc: Sequence[float]) -> pd.DataFrame:
    """The fitted accuracy-vs-variance curve, parametrised by IPC: (ipc, mean_acc, class_var, dvar_dacc).

    dvar_dacc is the marginal price of accuracy in class variance along the curve (finite differences).
    """
    ipc = np.asarray(ipc, dtype=float)
    acc, var = acc_fit.predict(ipc), var_fit.predict(ipc)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.gradient(var, acc) if len(ipc) > 1 else np.full(len(ipc), np.nan)
    return pd.DataFrame({"ipc": ipc, "mean_acc": acc, "class_var": var, "dvar_dacc": slope})
