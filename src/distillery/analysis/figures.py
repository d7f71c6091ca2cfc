"""Figures for a sweep, in the style of the fairness study (seeds/000, Figs 5-11).

Object-oriented matplotlib only (``matplotlib.figure.Figure`` + the Agg canvas): no pyplot state,
no global backend switch, so it is safe inside a CLI, a test run or a notebook. Every figure is
saved as PNG (for the HTML report) and SVG (for papers). Accuracy is shown in %, class variance in
fraction^2 (the schema's unit); error bars are the aggregate's t intervals over sets; the full-data
baseline is a dashed line (with its CI as a faint band) in the colour of the metric it refers to.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.rcParams.update({"svg.fonttype": "none"})  # keep SVG text as text (searchable, small)

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

from .aggregate import baseline_for, distilled
from .fits import FitResult, best_fit
from .load import acc_columns

ACC_COLOR, VAR_COLOR = "tab:blue", "tab:red"
LABELS = {"mean_acc": "mean accuracy (%)", "class_var": "class variance (fraction$^2$)",
          "worst_class_acc": "worst-class accuracy (%)"}
PERCENT = {"mean_acc", "worst_class_acc"}


def slug(text: str) -> str:
    """A file-name-safe version of a label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "x"


def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``stem``.png (150 dpi) and ``stem``.svg; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    return paths


def method_colors(methods: Sequence[str]) -> dict[str, Any]:
    """A stable method -> colour map (sorted names, tab10), shared by every figure of a report."""
    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(sorted(set(methods)))}


def _scale(metric: str) -> float:
    return 100.0 if metric in PERCENT else 1.0


#: x axes of the metric-vs-budget figures: the IPC (the cell key), the storage budget (numbers
#: stored, as images per class) and the decoded images per class (what the evaluation trained on)
X_AXES = {"ipc": "images per class (IPC)", "storage_ipc": "storage budget (stored numbers as images per class)",
          "decoded_ipc": "decoded images per class (trained on)"}


def _ipc_axis(ax, ipcs: Sequence[float], label: str = X_AXES["ipc"]) -> None:
    """Log x when IPCs span >= 20x (so IPC 1..10 are not squashed), ticks at the IPCs used."""
    ipcs = sorted(set(round(float(i), 3) for i in ipcs))
    if ipcs and ipcs[0] > 0 and ipcs[-1] / ipcs[0] >= 20:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_locator(FixedLocator(ipcs))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel(label)


def _yerr(rows: pd.DataFrame, metric: str) -> np.ndarray | None:
    lo, hi = f"{metric}_ci_low", f"{metric}_ci_high"
    if lo not in rows or hi not in rows:
        return None
    s = _scale(metric)
    return np.vstack([(rows[metric] - rows[lo]) * s, (rows[hi] - rows[metric]) * s]).clip(min=0)


def _baseline_line(ax, base: pd.Series | None, metric: str, color: Any, label: str | None) -> None:
    if base is None:
        return
    s = _scale(metric)
    ax.axhline(base[metric] * s, color=color, ls="--", lw=1.4, label=label)
    lo, hi = base.get(f"{metric}_ci_low"), base.get(f"{metric}_ci_high")
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        ax.axhspan(lo * s, hi * s, color=color, alpha=0.08, lw=0)


def _fit_line(ax, fit: FitResult | None, ipcs: Sequence[int], metric: str, color: Any, label: str | None) -> None:
    if fit is None or not fit.ok:
        return
    grid = np.geomspace(min(ipcs), max(ipcs), 100) if min(ipcs) > 0 else np.linspace(min(ipcs), max(ipcs), 100)
    ax.plot(grid, fit.predict(grid) * _scale(metric), color=color, ls=":", lw=1.2, label=label)


def fig_metric_vs_ipc(agg: pd.DataFrame, dataset: str, metric: str,
                      fits: Mapping[tuple, FitResult] | None = None, colors: Mapping[str, Any] | None = None,
                      x: str = "ipc") -> Figure:
    """One panel per eval arch: metric vs IPC per method (CI bars, best-AIC fit dotted, baseline dashed).

    ``x`` picks the budget axis (``X_AXES``): with parameterised sets (IDC, IDM) the storage budget
    and the decoded images per class differ, and a fair comparison reads accuracy against the first.
    Fits are over IPC, so they are drawn on the IPC axis only."""
    if x not in X_AXES:
        raise ValueError(f"unknown x axis {x!r}; choose from {', '.join(X_AXES)}")
    if x not in agg.columns:
        raise ValueError(f"the aggregate has no {x!r} column (aggregate it with this version of distillery)")
    fits = fits if x == "ipc" else None
    d = distilled(agg)
    d = d[d["dataset"] == dataset]
    archs = sorted(d["arch"].unique())
    colors = colors or method_colors(d["method"])
    fig = Figure(figsize=(5.2 * len(archs), 4.2), layout="constrained")
    axes = fig.subplots(1, len(archs), squeeze=False)[0]
    for ax, arch in zip(axes, archs):
        da = d[d["arch"] == arch]
        for method, g in da.groupby("method", sort=True):
            g = g.sort_values(x)
            ax.errorbar(g[x], g[metric] * _scale(metric), yerr=_yerr(g, metric), marker="o", ms=5,
                        capsize=3, lw=1.5, color=colors[method], label=method)
            fit = best_fit(fits, dataset, method, arch, metric) if fits else None
            _fit_line(ax, fit, g["ipc"].tolist(), metric, colors[method],
                      f"{method} fit: {fit.model}" if fit else None)
        base = baseline_for(agg, dataset, arch)
        _baseline_line(ax, base, metric, "black", f"full data (IPC {int(base['ipc'])})" if base is not None else None)
        _ipc_axis(ax, da[x], X_AXES[x])
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.set_title(f"{dataset} / {arch}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    what = "IPC" if x == "ipc" else X_AXES[x].split(" (")[0]
    fig.suptitle(f"{LABELS.get(metric, metric).split(' (')[0]} vs {what} (error bars: 95% t interval over sets)")
    return fig


def fig_twin_axis(agg: pd.DataFrame, dataset: str) -> Figure:
    """Study Fig. 11 for every (arch, method): accuracy (left, blue X) and class variance (right, red O)
    vs IPC with the full-data baseline of each as a dashed line of the same colour."""
    d = distilled(agg)
    d = d[d["dataset"] == dataset]
    archs, methods = sorted(d["arch"].unique()), sorted(d["method"].unique())
    fig = Figure(figsize=(5.6 * len(methods), 4.0 * len(archs) + 0.5), layout="constrained")
    axes = fig.subplots(len(archs), len(methods), squeeze=False)
    handles: list[Any] = []
    for i, arch in enumerate(archs):
        base = baseline_for(agg, dataset, arch)
        for j, method in enumerate(methods):
            ax = axes[i, j]
            g = d[(d["arch"] == arch) & (d["method"] == method)].sort_values("ipc")
            if g.empty:
                ax.set_axis_off()
                continue
            ax2 = ax.twinx()
            h1 = ax.errorbar(g["ipc"], g["mean_acc"] * 100, yerr=_yerr(g, "mean_acc"), marker="X", ms=7,
                             capsize=3, color=ACC_COLOR, label="mean accuracy (left axis)")
            h2 = ax2.errorbar(g["ipc"], g["class_var"], yerr=_yerr(g, "class_var"), marker="o", ms=5,
                              capsize=3, color=VAR_COLOR, label="class variance (right axis)")
            if base is not None:
                _baseline_line(ax, base, "mean_acc", ACC_COLOR, None)
                _baseline_line(ax2, base, "class_var", VAR_COLOR, None)
            if not handles:
                handles = [h1, h2]
                if base is not None:
                    handles += [Line2D([], [], color=ACC_COLOR, ls="--", label="full-data accuracy"),
                                Line2D([], [], color=VAR_COLOR, ls="--", label="full-data class variance")]
            _ipc_axis(ax, g["ipc"])
            ax.set_ylabel(LABELS["mean_acc"], color=ACC_COLOR)
            ax2.set_ylabel(LABELS["class_var"], color=VAR_COLOR)
            ax.tick_params(axis="y", colors=ACC_COLOR)
            ax2.tick_params(axis="y", colors=VAR_COLOR)
            ax.set_title(f"{dataset} / {method} / {arch}")
            ax.grid(alpha=0.3)
    # one legend for all panels, outside them: inside, it would hide a baseline or a curve
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.suptitle("Accuracy and class variance vs IPC (dashed: full-data baseline)")
    return fig


def fig_pareto(points: pd.DataFrame, agg: pd.DataFrame, dataset: str,
               fits: Mapping[tuple, FitResult] | None = None, colors: Mapping[str, Any] | None = None) -> Figure:
    """Accuracy vs class variance per arch: every (method, IPC) cell, each method's path through IPC
    (the empirical trade-off curve; dotted: the fitted one), the Pareto front, the baseline star."""
    p = points[points["dataset"] == dataset]
    archs = sorted(p["arch"].unique())
    colors = colors or method_colors(p["method"])
    fig = Figure(figsize=(5.6 * len(archs), 4.6), layout="constrained")
    axes = fig.subplots(1, len(archs), squeeze=False)[0]
    for ax, arch in zip(axes, archs):
        pa = p[p["arch"] == arch]
        fitted = False
        for m_index, (method, g) in enumerate(pa.groupby("method", sort=True)):
            g = g.sort_values("ipc")
            ax.plot(g["mean_acc"] * 100, g["class_var"], "-o", color=colors[method], ms=5, lw=1, alpha=0.85,
                    label=method, zorder=3)
            for k, (_, r) in enumerate(g.iterrows()):
                # IPC labels alternate sides along each path and between methods, so neighbours do not overlap
                below = (k + m_index) % 2 == 1
                ax.annotate(f"{int(r['ipc'])}", (r["mean_acc"] * 100, r["class_var"]), textcoords="offset points",
                            xytext=(5, -10 if below else 4), fontsize=7, color=colors[method], zorder=5)
            if fits:
                fa, fv = (best_fit(fits, dataset, method, arch, m) for m in ("mean_acc", "class_var"))
                if fa is not None and fv is not None:
                    grid = np.geomspace(g["ipc"].min(), g["ipc"].max(), 100)
                    ax.plot(fa.predict(grid) * 100, fv.predict(grid), ":", color=colors[method], lw=1)
                    fitted = True
        front = pa[pa["on_front"]].sort_values("mean_acc")
        if len(front):
            # attainment staircase: between fronts points i and i+1 the boundary sits at var_{i+1} ('pre')
            ax.step(front["mean_acc"] * 100, front["class_var"], where="pre", color="black", lw=1, alpha=0.6)
            ax.scatter(front["mean_acc"] * 100, front["class_var"], s=140, facecolors="none", edgecolors="black",
                       lw=1.2, label="Pareto front", zorder=3)
        base = baseline_for(agg, dataset, arch)
        if base is not None:  # under the cells (zorder 2 < 3) and see-through: it must not hide a cell it sits on
            ax.scatter([base["mean_acc"] * 100], [base["class_var"]], marker="*", s=160, color="gold", alpha=0.7,
                       edgecolors="black", lw=0.8, zorder=2, label=f"full data (IPC {int(base['ipc'])})")
        if fitted:
            ax.plot([], [], ":", color="gray", lw=1, label="fitted curve (best AIC)")
        ax.set_xlabel(LABELS["mean_acc"] + "  →  better")
        ax.set_ylabel(LABELS["class_var"] + "  (lower = fairer)")
        ax.set_title(f"{dataset} / {arch}  (labels: IPC)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Accuracy-fairness trade-off and Pareto front\n(max accuracy, min class variance)")
    return fig


def fig_class_heatmap(models: pd.DataFrame, class_names: Mapping[str, list[str]], dataset: str) -> Figure:
    """Per-class accuracy (%), class x IPC, one panel per (arch, method); baseline as the last column."""
    m = models[models["dataset"] == dataset]
    accs = [c for c in acc_columns(m) if m[c].notna().any()]
    names = list(class_names.get(dataset) or [c[4:] for c in accs])
    dist = m[~m["full_data"]]
    archs, methods = sorted(dist["arch"].unique()), sorted(dist["method"].unique())
    n_cls = len(accs)
    fig = Figure(figsize=(max(6.0, 0.55 * dist["ipc"].nunique() + 3.2) * len(methods),
                          max(3.2, 0.28 * min(n_cls, 40) + 1.6) * len(archs)), layout="constrained")
    axes = fig.subplots(len(archs), len(methods), squeeze=False)
    im = None
    for i, arch in enumerate(archs):
        base = m[m["full_data"] & (m["arch"] == arch)]
        for j, method in enumerate(methods):
            ax = axes[i, j]
            g = dist[(dist["arch"] == arch) & (dist["method"] == method)]
            if g.empty:
                ax.set_axis_off()
                continue
            table = g.groupby("ipc")[accs].mean().T * 100  # [classes, ipcs]
            cols = [str(c) for c in table.columns]
            if len(base):
                table["full"] = base[accs].mean().to_numpy() * 100
                cols.append("full")
            im = ax.imshow(table.to_numpy(float), aspect="auto", cmap="viridis", vmin=0, vmax=100,
                           interpolation="nearest")
            ax.set_xticks(range(len(cols)), cols)
            step = 1 if n_cls <= 20 else math.ceil(n_cls / 20)
            ax.set_yticks(range(0, n_cls, step), [names[k] if k < len(names) else str(k) for k in range(0, n_cls, step)],
                          fontsize=8)
            if len(base):
                ax.axvline(len(cols) - 1.5, color="white", lw=2)
            if n_cls * len(cols) <= 160:
                vals = table.to_numpy(float)
                for (r, c), v in np.ndenumerate(vals):
                    ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if v < 55 else "black")
            ax.set_xlabel("IPC")
            ax.set_ylabel("class")
            ax.set_title(f"{dataset} / {method} / {arch}")
    if im is not None:
        fig.colorbar(im, ax=axes, label="per-class accuracy (%)", shrink=0.8)
    fig.suptitle("Per-class accuracy by IPC\n(mean over models; 'full' = full-data baseline)")
    return fig


def _display_images(images: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
    """[N, C, H, W] normalized -> [N, H, W, C] in [0, 1]: un-normalise with meta mean/std when the
    set carries them (and no ZCA was applied), else per-image min-max (shape only, not true colour)."""
    x = np.asarray(images, dtype=float)
    mean, std = meta.get("mean"), meta.get("std")
    zca = bool(meta.get("zca")) or "zca" in str(meta.get("transforms", "")).lower()
    if mean is not None and std is not None and not zca and len(np.atleast_1d(mean)) in (1, x.shape[1]):
        mean = np.asarray(mean, dtype=float).reshape(1, -1, 1, 1)
        std = np.asarray(std, dtype=float).reshape(1, -1, 1, 1)
        x = np.clip(x * std + mean, 0, 1)
    else:
        lo = x.min(axis=(1, 2, 3), keepdims=True)
        hi = x.max(axis=(1, 2, 3), keepdims=True)
        x = (x - lo) / np.where(hi - lo > 0, hi - lo, 1.0)
    return x.transpose(0, 2, 3, 1)


def fig_synthetic_grid(state: Mapping[str, Any], class_names: Sequence[str], title: str,
                       max_per_class: int = 10, max_classes: int = 10) -> Figure:
    """A distilled set as a grid: one row per class (first ``max_classes``), its images left to right.

    The images are tiled into ONE montage (1 px white gutters) drawn by a single imshow: one axes
    per image costs seconds per figure at IPC 50 and makes bloated SVGs.
    """
    images = state["images"].detach().cpu().numpy() if hasattr(state["images"], "detach") else np.asarray(state["images"])
    labels = state["labels"].detach().cpu().numpy() if hasattr(state["labels"], "detach") else np.asarray(state["labels"])
    if labels.ndim == 2:  # soft labels
        labels = labels.argmax(1)
    disp = _display_images(images, dict(state.get("meta") or {}))  # [N, H, W, C]
    classes = sorted(set(int(c) for c in labels))[:max_classes]
    per = min(max_per_class, max(int((labels == c).sum()) for c in classes))
    n, h, w, ch = disp.shape
    gut = 1
    canvas = np.ones((len(classes) * (h + gut) - gut, per * (w + gut) - gut, ch))
    for r, c in enumerate(classes):
        for k, i in enumerate(np.flatnonzero(labels == c)[:per]):
            canvas[r * (h + gut): r * (h + gut) + h, k * (w + gut): k * (w + gut) + w] = disp[i]
    cell = 0.55 if max(h, w) <= 32 else 0.9
    fig = Figure(figsize=(cell * per + 1.8, cell * len(classes) + 0.7), layout="constrained")
    ax = fig.subplots()
    ax.imshow(canvas[..., 0] if ch == 1 else canvas, cmap="gray" if ch == 1 else None, vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_yticks([r * (h + gut) + h / 2 - 0.5 for r in range(len(classes))],
                  [class_names[c] if c < len(class_names) else str(c) for c in classes], fontsize=8)
    ax.set_xticks([k * (w + gut) + w / 2 - 0.5 for k in range(per)], [str(k) for k in range(per)], fontsize=7)
    ax.set_xlabel("image index within class")
    ax.tick_params(length=0)
    for sp in ax.spines.values():
        sp.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return fig
