"""run_analysis: a sweep -> tables, fits, tests, figures, one self-contained HTML report.

Writes into ``out_dir``:
  report.html        everything, figures embedded as base64 PNG (one file to mail or archive)
  aggregates.csv     the per-cell table (analysis.aggregate), baseline rows included
  fits.csv, trends.csv, pareto.csv, problems.csv, summary.txt
  per_class.csv      per-class accuracy per cell (mean, std, models, rank; analysis.aggregate.class_table)
  figures/*.png|svg  acc/variance vs IPC, twin-axis, Pareto, class x IPC heatmap, synthetic grids
and (``log_to_mlflow``) logs them under ``analysis/`` of the sweep's parent run, so the analysis
travels with the sweep it describes.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from distillery.methods.utils.atomic import atomic_write_text

from .aggregate import aggregate, class_table
from .errors import AnalysisError
from .figures import (X_AXES, fig_class_heatmap, fig_metric_vs_ipc, fig_pareto, fig_synthetic_grid, fig_twin_axis,
                      method_colors, save_figure, slug)
from .fits import FitResult, fit_all
from .load import SweepData, fetch_synthetic_set, load_mlflow, load_tune_dir, mlflow_client, resolve_sweep
from .pareto import ParetoResult, pareto_table
from .trend import TrendResult, trend_all


@dataclass
class AnalysisResult:
    """Everything run_analysis computed and wrote (frames for notebooks, paths for the CLI)."""

    data: SweepData
    aggregates: pd.DataFrame
    fits: pd.DataFrame
    fit_results: dict[tuple, FitResult]
    trends: pd.DataFrame
    trend_results: list[TrendResult]
    pareto: ParetoResult
    pareto_cost: ParetoResult | None
    out_dir: Path
    html_path: Path
    csv_path: Path
    figures: list[Path]
    files: list[Path]
    summary: str
    logged_to_run: str | None = None
    warnings: list[str] = field(default_factory=list)


def run_analysis(
    experiment: str | None,
    tracking_uri: str,
    out_dir: Path,
    parent_run_id: str | None = None,
    log_to_mlflow: bool = True,
    *,
    tune_dir: Path | None = None,
    seed: int = 0,
    alpha: float = 0.05,
    grid_ipcs: Sequence[int] | None = None,
    pareto_cost: str | None = "images",
    include_unfinished: bool = False,
) -> AnalysisResult:
    """Analyse one sweep end to end; see the module docstring for what is written where.

    experiment / parent_run_id pick the sweep in ``tracking_uri``; ``tune_dir`` loads from Tune's
    result.json files instead (results are still logged to MLflow when the sweep can be found there).
    grid_ipcs: IPCs whose synthetic sets are drawn (default: smallest, middle, largest of the sweep).
    pareto_cost: third objective of the cost-aware front ('images', 'gpu_seconds' or None).
    seed: keys the planner's simulated sweeps (the minimal detectable effects), so a report is
    reproducible bit for bit; every interval is analytic. alpha: the trend tests' level.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    if pareto_cost not in (None, "images", "gpu_seconds", "compute_seconds"):
        raise AnalysisError(f"unknown Pareto cost {pareto_cost!r}; use 'images', 'gpu_seconds', 'compute_seconds' or None")
    if tune_dir is not None:
        data = load_tune_dir(tune_dir, include_unfinished=include_unfinished)
    else:
        data = load_mlflow(tracking_uri, experiment, parent_run_id, include_unfinished=include_unfinished)
    warnings = list(data.warnings)
    models = data.models

    agg = aggregate(models)
    fits, fit_results = fit_all(models)
    trend_frames, trend_results = [], []
    for metric in ("class_var", "mean_acc"):
        f, r = trend_all(models, metric=metric, alpha=alpha, seed=seed)
        trend_frames.append(f)
        trend_results.extend(r)
    trends = pd.concat(trend_frames, ignore_index=True)
    pareto = pareto_table(agg)
    pareto_c = None
    if pareto_cost and agg[pareto_cost].notna().all() and (agg[pareto_cost] > 0).any():
        pareto_c = pareto_table(agg, cost=pareto_cost)
    elif pareto_cost:
        warnings.append(f"cost-aware Pareto front skipped: {pareto_cost!r} is missing for some cells")

    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir = out_dir / "figures"
    figures, captions = _write_figures(data, agg, fit_results, pareto, fig_dir, grid_ipcs, warnings)

    csv_path = out_dir / "aggregates.csv"
    agg.to_csv(csv_path, index=False)
    fits.to_csv(out_dir / "fits.csv", index=False)
    trends.to_csv(out_dir / "trends.csv", index=False)
    pd.concat([pareto.points.assign(objectives="2d")] +
              ([pareto_c.points.assign(objectives="3d")] if pareto_c else []), ignore_index=True
              ).to_csv(out_dir / "pareto.csv", index=False)
    data.problems.to_csv(out_dir / "problems.csv", index=False)
    class_table(data.models, data.class_names).to_csv(out_dir / "per_class.csv", index=False)
    summary = summary_text(data, agg, trend_results, pareto, pareto_c)
    atomic_write_text(out_dir / "summary.txt", summary + "\n")
    html_path = out_dir / "report.html"
    atomic_write_text(html_path, _html(data, agg, fits, trend_results, pareto, pareto_c, figures, captions, summary, warnings,
                               seed, alpha))
    files = [html_path, csv_path] + [out_dir / n for n in ("fits.csv", "trends.csv", "pareto.csv", "problems.csv",
                                                          "per_class.csv", "summary.txt")] + figures
    logged = None
    if log_to_mlflow:
        logged = _log_to_parent(data, experiment, parent_run_id, tracking_uri, out_dir, files, warnings)
    return AnalysisResult(data, agg, fits, fit_results, trends, trend_results, pareto, pareto_c, out_dir, html_path,
                          csv_path, figures, files, summary, logged, warnings)


# ----------------------------------------------------------------------------------------------


def _write_figures(data: SweepData, agg: pd.DataFrame, fits: dict, pareto: ParetoResult, fig_dir: Path,
                   grid_ipcs: Sequence[int] | None, warnings: list[str]) -> tuple[list[Path], dict[Path, str]]:
    figures: list[Path] = []
    captions: dict[Path, str] = {}
    colors = method_colors(agg["method"])

    def keep(fig, stem: str, caption: str) -> None:
        paths = save_figure(fig, fig_dir, stem)
        figures.extend(paths)
        captions[paths[0]] = caption

    for ds in sorted(agg["dataset"].unique()):
        s = slug(ds)
        keep(fig_metric_vs_ipc(agg, ds, "mean_acc", fits, colors), f"accuracy_vs_ipc_{s}",
             f"{ds}: mean accuracy vs IPC per method and arch (95% t intervals over sets; dotted: best-AIC fit; dashed: full data).")
        keep(fig_metric_vs_ipc(agg, ds, "class_var", fits, colors), f"variance_vs_ipc_{s}",
             f"{ds}: class variance (mean over models of the per-model population variance) vs IPC.")
        budgets = agg[(agg["dataset"] == ds) & ~agg["is_baseline"]]
        # parameterised sets: besides the IPC (the stored images), plot against each budget that
        # differs from it: the decoded images trained on, the stored numbers (decoder weights counted)
        for x in ("storage_ipc", "decoded_ipc"):
            if x in budgets and len(budgets) and not np.allclose(budgets[x].astype(float), budgets["ipc"].astype(float)):
                for metric, word in (("mean_acc", "accuracy"), ("class_var", "variance")):
                    keep(fig_metric_vs_ipc(agg, ds, metric, None, colors, x=x), f"{word}_vs_{x}_{s}",
                         f"{ds}: {'mean accuracy' if metric == 'mean_acc' else 'class variance'} vs {X_AXES[x]}: "
                         "parameterised sets (IDC, IDM) train on more images than they store.")
        keep(fig_twin_axis(agg, ds), f"accuracy_variance_twin_{s}",
             f"{ds}: accuracy (left, blue X) and class variance (right, red O) vs IPC; dashed: full-data baseline.")
        keep(fig_pareto(pareto.points, agg, ds, fits, colors), f"pareto_{s}",
             f"{ds}: accuracy vs class variance for every (method, IPC) cell; circled: Pareto front; star: full data.")
        keep(fig_class_heatmap(data.models, data.class_names, ds), f"class_heatmap_{s}",
             f"{ds}: per-class accuracy (%) by IPC, mean over all models of a cell.")
    if data.tracking_uri is None:
        return figures, captions
    used = data.models.drop_duplicates("run_id")
    used = used[~used["full_data"]].sort_values(["dataset", "method", "ipc", "seed"])
    with tempfile.TemporaryDirectory(prefix="distillery-grids-") as tmp:
        for (ds, method), g in used.groupby(["dataset", "method"], sort=True):
            ipcs = sorted(g["ipc"].unique())
            chosen = [i for i in ipcs if i in set(grid_ipcs)] if grid_ipcs else \
                sorted({ipcs[0], ipcs[len(ipcs) // 2], ipcs[-1]})
            for ipc in chosen:
                run = g[g["ipc"] == ipc].iloc[0]
                state = fetch_synthetic_set(data.tracking_uri, run["run_id"], Path(tmp))
                if state is None:
                    warnings.append(f"no synthetic_set.pt for {ds}/{method} IPC {ipc} (run {run['run_id']}); grid skipped")
                    continue
                names = data.class_names.get(ds, [])
                keep(fig_synthetic_grid(state, names, f"{ds} / {method} / IPC {ipc} / seed {int(run['seed'])}"),
                     f"synthetic_{slug(ds)}_{slug(method)}_ipc{ipc}",
                     f"{ds}: synthetic set of {method} at IPC {ipc} (seed {int(run['seed'])}); one row per class.")
    return figures, captions


def _log_to_parent(data: SweepData, experiment: str | None, parent_run_id: str | None, tracking_uri: str,
                   out_dir: Path, files: list[Path], warnings: list[str]) -> str | None:
    """Log every written file under analysis/ (figures under analysis/figures/) of the parent run."""
    from mlflow.exceptions import MlflowException

    parent = data.parent_run_id
    try:
        client = mlflow_client(tracking_uri)
        if parent is None and (experiment or parent_run_id):  # loaded from a Tune dir
            _, _, parent, _ = resolve_sweep(client, experiment, parent_run_id)
        if parent is None:
            warnings.append("report not logged to MLflow: the sweep has no parent run (tag distillery.kind=sweep)")
            return None
        for f in files:
            rel = f.relative_to(out_dir).parent.as_posix()
            client.log_artifact(parent, str(f), artifact_path="analysis" + ("" if rel == "." else f"/{rel}"))
    except (MlflowException, AnalysisError, OSError) as exc:
        warnings.append(f"report not logged to MLflow ({exc}); the files are in {out_dir}")
        return None
    return parent


# ----------------------------------------------------------------------------------------------
# text


def _pct(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{100 * v:.2f}"


def _ci(lo: float, hi: float, pct: bool, n_sets: int = 2) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "n/a (1 set)" if n_sets < 2 else ""
    return f"[{_pct(lo)}, {_pct(hi)}]" if pct else f"[{lo:.4g}, {hi:.4g}]"


def display_table(agg: pd.DataFrame) -> pd.DataFrame:
    """The aggregate table as people read it: accuracy in %, CIs as text, the baseline and sets with
    soft labels labelled (a soft-label set stores more than its images: its cost is not IPC alone)."""
    rows = []
    for _, r in agg.iterrows():
        rows.append({
            "dataset": r["dataset"],
            "method": r["method"] + (" (full data)" if r["is_baseline"] else "") + (" (soft labels)" if r.get("soft_labels", False) else ""),
            "arch": r["arch"], "IPC": int(r["ipc"]), "sets": int(r["n_sets"]), "models": int(r["n_models"]),
            "acc %": _pct(r["mean_acc"]), "acc 95% CI": _ci(r["mean_acc_ci_low"], r["mean_acc_ci_high"], True, int(r["n_sets"])),
            "class var": f"{r['class_var']:.4g}",
            "var 95% CI": _ci(r["class_var_ci_low"], r["class_var_ci_high"], False, int(r["n_sets"])),
            "worst %": _pct(r["worst_class_acc"]), "gap %": _pct(r["gap"]),
        })
    return pd.DataFrame(rows)


def summary_text(data: SweepData, agg: pd.DataFrame, trends: list[TrendResult], pareto: ParetoResult,
                 pareto_c: ParetoResult | None) -> str:
    """The table and verdicts the CLI prints."""
    n_used = int(data.trials["used"].sum())
    lines = [f"Sweep: {data.source}",
             f"Trials analysed: {n_used}; not analysed: {len(data.problems)}" +
             (" (see problems.csv)" if len(data.problems) else ""), "",
             display_table(agg).to_string(index=False), ""]
    lines.append("Trend tests (study claim: class variance grows with IPC):")
    lines += [f"  - {t.verdict}" for t in trends if t.metric == "class_var"]
    lines.append("Pareto fronts (max accuracy, min class variance):")
    for _, r in pareto.summary.iterrows():
        lines.append(f"  - {r['dataset']}/{r['arch']}: {r['front']}  (hypervolume {r['hypervolume']:.4g} w.r.t. {r['reference']})")
    if pareto_c is not None:
        for _, r in pareto_c.summary.iterrows():
            lines.append(f"  - {r['dataset']}/{r['arch']} with cost: {r['front']}  (hypervolume {r['hypervolume']:.4g} "
                         f"w.r.t. {r['reference']})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}
.holds{color:#0a6b1f}.contra{color:#a01010}.neutral{color:#8a5a00}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:13px;color:#555}
.warn{background:#fff6e0;border-left:4px solid #e0a000;padding:.4em .8em;font-size:13px}
code,pre{background:#f6f6f6;padding:1px 4px}
"""


def _table(df: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    if df is None or df.empty:
        return "<p><em>none</em></p>"
    return df.to_html(index=False, escape=True, na_rep="", float_format=lambda v: float_format.format(v), border=0)


def _fits_display(fits: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in fits.iterrows():
        params = []
        for p in ("a", "b", "c"):
            if f"p_{p}" in r and np.isfinite(r.get(f"p_{p}", np.nan)):
                lo, hi = r.get(f"p_{p}_ci_low", np.nan), r.get(f"p_{p}_ci_high", np.nan)
                params.append(f"{p}={r[f'p_{p}']:.4g}" + (f" [{lo:.4g}, {hi:.4g}]" if np.isfinite(lo) else ""))
        note = r.get("ci_note", "")
        text = "; ".join(params) + (f" ({note})" if params and isinstance(note, str) and note else "")
        rows.append({"dataset": r["dataset"], "method": r["method"], "arch": r["arch"], "metric": r["metric"],
                     "model": r["model"], "formula": r["formula"], "parameters [95% CI]": text or r["message"],
                     "R² (cell means)": r["r2"], "AIC": r["aic"], "ΔAIC": r.get("delta_aic", np.nan),
                     "best": "✓" if r.get("best") else ""})
    return pd.DataFrame(rows)


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html(data: SweepData, agg: pd.DataFrame, fits: pd.DataFrame, trends: list[TrendResult], pareto: ParetoResult,
          pareto_c: ParetoResult | None, figures: list[Path], captions: dict[Path, str], summary: str,
          warnings: list[str], seed: int, alpha: float) -> str:
    e = html.escape
    title = f"distillery analysis: {data.experiment_name or data.source}"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(title)}</h1>",
             f"<p>Source: <code>{e(data.source)}</code><br>Generated {e(_dt.datetime.now().isoformat(timespec='seconds'))}; "
             f"intervals: t over distilled sets (cells), Welch-Satterthwaite t (trends, linear fits); trend tests at "
             f"alpha {alpha:g}; planner seed {seed}.</p>"]
    if warnings:
        parts.append("<h2>Warnings</h2>" + "".join(f"<p class='warn'>{e(w)}</p>" for w in warnings))
    parts.append("<h2>Claim check: does class variance grow with IPC?</h2><ul>")
    for t in trends:
        cls = {True: "holds", False: "contra" if t.direction == "decreasing" else "neutral"}.get(t.claim_holds, "neutral")
        if t.metric == "class_var":
            mde = (f" <strong>Minimal detectable rise (80% power, planner): {t.mde:.3g}</strong>"
                   if np.isfinite(t.mde) else " <strong>Minimal detectable rise: n/a (needs 2+ sets at every IPC)</strong>")
            parts.append(f"<li class='{cls}'>{e(t.verdict)}{mde}</li>")
    parts.append("</ul><p>Accuracy trend (the study also claims accuracy rises with IPC):</p><ul>")
    parts += [f"<li>{e(t.verdict)}</li>" for t in trends if t.metric == "mean_acc"]
    parts.append("</ul>")
    parts.append("<h2>Per-cell results</h2><p>Mean over all evaluation models of a cell (sets x models); "
                 "class var = mean per-model population variance of per-class accuracies (fraction²); "
                 "CIs: t intervals over the cell's distilled sets (each set = the mean of its models); "
                 "n/a with one set, where no interval about sets can be given.</p>" + _table(display_table(agg)))
    parts.append("<h2>Trade-off curve fits</h2><p>Least squares on per-model observations. CIs: Welch-Satterthwaite "
                 "t over sets for curves linear in their parameters (log-linear); the power law is nonlinear and "
                 "gets none (no calibrated interval at these sizes). "
                 "R² of model-count-weighted cell means; AIC on per-model observations; lowest AIC = best.</p>"
                 + _table(_fits_display(fits)))
    tcols = ["dataset", "method", "arch", "metric", "n_units", "n_levels", "rho", "p_value", "p_adjusted", "slope",
             "slope_ci_low", "slope_ci_high", "slope_df", "effect", "effect_ci_low", "effect_ci_high", "effect_vs_baseline",
             "mde", "min_sets", "direction"]
    tdf = pd.DataFrame([t.__dict__ for t in trends])
    parts.append("<h2>Trend tests</h2><p>p_adjusted: Holm over the series of one metric (what the verdicts use); "
                 "slope and effect intervals: Welch-Satterthwaite t over set means (df: its degrees of freedom); "
                 "effect: the metric at the largest IPC minus at the smallest, with its CI "
                 "(class variance in fraction²), and as a multiple of the full-data baseline's value; "
                 "mde: the smallest rise from the smallest to the largest IPC that this design and its measured "
                 "noise detect with 80% power (the planner, as `distillery sweep --dry-run --plan`); min_sets: "
                 "the fewest sets at one IPC.</p>"
                 + _table(tdf[tcols] if len(tdf) else tdf))
    parts.append("<h2>Pareto fronts</h2><p>Across methods x IPC within each dataset and arch; full-data baseline "
                 "excluded. Hypervolume is exact, w.r.t. the stated reference point.</p>" + _table(pareto.summary))
    if pareto_c is not None:
        parts.append("<h3>With storage cost as a third objective</h3>" + _table(pareto_c.summary))
    if len(data.problems):
        cols = ["run_name", "dataset", "method", "ipc", "seed", "status", "error"]
        parts.append("<h2>Trials not analysed</h2>" + _table(data.problems[cols]))
    parts.append("<h2>Figures</h2>")
    for p in figures:
        if p.suffix == ".png":
            parts.append(f"<figure><img alt='{e(captions.get(p, p.stem), quote=True)}' src='{_img(p)}'><figcaption>{e(captions.get(p, p.stem))} "
                         f"(<code>figures/{e(p.name)}</code>, SVG alongside)</figcaption></figure>")
    parts.append(f"<h2>Summary (as printed)</h2><pre>{e(summary)}</pre></body></html>")
    return "\n".join(parts)
