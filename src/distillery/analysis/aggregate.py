"""Per-cell summaries: one row per (dataset, method, arch, IPC), the full-data baseline included.

Study convention (docs/tracking-schema.md): a cell's accuracy / class variance is the MEAN over
all evaluation models of the cell (sets x models), e.g. class_var = mean of per-model population
variances, not the variance of the mean per-class accuracies. ``*_std`` is the sample std (ddof=1)
over models; ``*_ci_low/high`` a t interval over the cell's distilled SETS (each set's value is the
mean over its models; sets are the independent unit, models only tell how well each set's value is
known), ``inference.t_interval``: calibrated at 2-10 sets (``tests/test_calibration.py``), where the
former two-stage bootstrap covered 70-85 %. It is centred on the mean of set means, which is the
cell's value whenever its sets have equal model counts (a sweep's do). With one set the bounds are
NaN: no interval about sets can be given, and the report says so. The baseline row has ``is_baseline`` True (method ``full``, ipc = per-class training
count) and is kept as a reference, never fitted or put on a Pareto front.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .inference import t_interval
from .load import METRICS, to_long

CELL_KEYS: tuple[str, ...] = ("dataset", "method", "arch", "ipc")
CI_METRICS: tuple[str, ...] = ("mean_acc", "class_var", "worst_class_acc")


def aggregate(
    models: pd.DataFrame,
    level: float = 0.95,
    ci_metrics: Sequence[str] = CI_METRICS,
) -> pd.DataFrame:
    """Cell means, stds, t intervals over sets and counts for a model frame from analysis.load."""
    rows = []
    for key, g in models.groupby(list(CELL_KEYS), sort=True):
        row: dict[str, object] = dict(zip(CELL_KEYS, key))
        row["ipc"] = int(row["ipc"])
        row["is_baseline"] = bool(g["full_data"].any())
        row["soft_labels"] = bool(g["soft_labels"].any()) if "soft_labels" in g else False  # shown in the report's cell table
        row["n_sets"] = int(g["run_id"].nunique())
        row["n_models"] = int(len(g))
        row["n_classes"] = int(g["n_classes"].iloc[0])
        row["images"] = int(g["images"].iloc[0])
        # the two budgets a parameterised set separates: numbers stored and images decoded, per class
        row["storage_ipc"] = float(g["storage_ipc"].mean()) if "storage_ipc" in g else float(row["ipc"])
        row["decoded_ipc"] = row["images"] / max(1, row["n_classes"])
        for m in METRICS:
            row[m] = float(g[m].mean())
            row[f"{m}_std"] = float(g[m].std(ddof=1)) if len(g) > 1 else np.nan
        set_means = g.groupby("run_id", sort=True)[list(ci_metrics)].mean()
        for m in ci_metrics:
            ci = t_interval(set_means[m].to_numpy(float), level)
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = ci.low, ci.high
        per_trial = g.drop_duplicates("run_id")
        for c in ("compute_seconds", "gpu_seconds"):
            vals = pd.to_numeric(per_trial[c], errors="coerce")
            row[c] = float(vals.mean()) if vals.notna().any() else np.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    # baseline rows last within each dataset: they are the reference, read after the cells they frame
    return out.sort_values(["dataset", "is_baseline", "method", "arch", "ipc"], kind="stable").reset_index(drop=True)


def distilled(agg: pd.DataFrame) -> pd.DataFrame:
    """Cells of distilled sets only (what curves, trends and fronts are about)."""
    return agg[~agg["is_baseline"]].reset_index(drop=True)


def baseline_for(agg: pd.DataFrame, dataset: str, arch: str) -> pd.Series | None:
    """The full-data reference row of (dataset, arch), or None when the sweep has no baseline."""
    b = agg[agg["is_baseline"] & (agg["dataset"] == dataset) & (agg["arch"] == arch)]
    return b.iloc[0] if len(b) else None


def class_table(models: pd.DataFrame, class_names: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Per-class accuracy per cell: one row per (dataset, method, arch, IPC, class) with the mean
    over the cell's models (sets x models), its sample std, the model count and the class's rank
    (1 = the cell's worst class). The study's question is *which* classes pay for a larger IPC, so
    the numbers behind the class x IPC heatmap are published as a table, not only as colours."""
    long = to_long(models, class_names)
    keys = ["dataset", "method", "arch", "ipc", "full_data", "class_index", "class_name"]
    table = (long.groupby(keys, sort=True, dropna=False)["acc"]
             .agg(acc_mean="mean", acc_std="std", n_models="count").reset_index())
    table["rank_in_cell"] = (table.groupby(["dataset", "method", "arch", "ipc"], dropna=False)["acc_mean"]
                             .rank(method="min").astype(int))
    return table
