"""Pareto fronts of the accuracy / fairness (/ cost) trade-off and their exact hypervolume.

Objectives per distilled cell (method x IPC, within one dataset and evaluation arch): maximise
mean accuracy, minimise class variance, optionally minimise a cost (``images`` = IPC x classes
stored, or ``gpu_seconds``). A point is dominated when another is at least as good in every
objective and strictly better in one; equal points do not dominate each other.

Hypervolume is exact (recursive slicing; 2-D base case by a sorted sweep), fine for the tens of
cells a sweep has. Default reference point, stated in every result: accuracy 0 (chance is above
it), class variance 0.25 (the largest population variance of values in [0, 1]), cost 1.1 x the
largest cost in the group (data-dependent, so compare cost hypervolumes only within one sweep).
The full-data baseline is excluded by default: it usually dominates everything and would make
every front a single point; figures plot it as a reference marker instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

DEFAULT_REF: dict[str, float] = {"mean_acc": 0.0, "class_var": 0.25}
SENSES: dict[str, str] = {"mean_acc": "max", "class_var": "min", "worst_class_acc": "max",
                          "images": "min", "gpu_seconds": "min", "compute_seconds": "min"}


def _to_min(points: np.ndarray, senses: Sequence[str]) -> np.ndarray:
    signs = np.array([-1.0 if s == "max" else 1.0 for s in senses])
    if any(s not in ("max", "min") for s in senses):
        raise ValueError(f"senses must be 'max' or 'min', got {list(senses)}")
    return np.asarray(points, dtype=float) * signs


def pareto_mask(points: np.ndarray, senses: Sequence[str]) -> np.ndarray:
    """Boolean mask of non-dominated rows of ``points`` [n, d] (rows with NaN are never on the front)."""
    p = _to_min(np.atleast_2d(points), senses)
    finite = np.isfinite(p).all(axis=1)
    le = (p[:, None, :] <= p[None, :, :]).all(axis=2)  # le[j, i]: j at least as good as i everywhere
    lt = (p[:, None, :] < p[None, :, :]).any(axis=2)
    dominated = ((le & lt) & finite[:, None]).any(axis=0)
    return ~dominated & finite


def _hv_min(p: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume of minimisation points strictly better than ``ref`` in every coordinate."""
    if len(p) == 0:
        return 0.0
    d = p.shape[1]
    if d == 1:
        return float(ref[0] - p[:, 0].min())
    if d == 2:
        p = p[np.lexsort((p[:, 1], p[:, 0]))]
        hv, best_y = 0.0, ref[1]
        for x, y in p:
            if y < best_y:
                hv += (ref[0] - x) * (best_y - y)
                best_y = y
        return float(hv)
    order = np.argsort(p[:, -1], kind="stable")
    p = p[order]
    hv = 0.0
    for i in range(len(p)):
        upper = p[i + 1, -1] if i + 1 < len(p) else ref[-1]
        depth = upper - p[i, -1]
        if depth > 0:
            hv += depth * _hv_min(p[: i + 1, :-1], ref[:-1])
    return float(hv)


def hypervolume(points: np.ndarray, ref: Sequence[float], senses: Sequence[str]) -> float:
    """Volume dominated by ``points`` and bounded by ``ref`` (same units/senses as the points)."""
    p = _to_min(np.atleast_2d(points), senses)
    r = _to_min(np.asarray(ref, dtype=float)[None, :], senses)[0]
    p = p[np.isfinite(p).all(axis=1) & (p < r).all(axis=1)]
    if len(p) == 0:
        return 0.0
    return _hv_min(p[pareto_mask(p, ["min"] * p.shape[1])], r)


@dataclass
class ParetoResult:
    points: pd.DataFrame  # cells with objective columns and `on_front`
    summary: pd.DataFrame  # per group: objectives, reference point, hypervolume, counts
    objectives: tuple[str, ...]
    senses: tuple[str, ...]


def pareto_table(
    agg: pd.DataFrame,
    objectives: Sequence[str] = ("mean_acc", "class_var"),
    cost: str | None = None,
    ref: dict[str, float] | None = None,
    group_keys: Sequence[str] = ("dataset", "arch"),
    include_baseline: bool = False,
) -> ParetoResult:
    """Fronts across methods x IPC within each (dataset, arch) of an aggregate table."""
    objs = tuple(objectives) + ((cost,) if cost else ())
    senses = tuple(SENSES.get(o, "min") for o in objs)
    cells = agg if include_baseline else agg[~agg["is_baseline"]]
    pts, rows = [], []
    for key, g in cells.groupby(list(group_keys), sort=True):
        g = g.copy()
        vals = g[list(objs)].to_numpy(float)
        g["on_front"] = pareto_mask(vals, senses)
        r = {**DEFAULT_REF, **(ref or {})}
        for o in objs:
            if o not in r:
                r[o] = 1.1 * float(np.nanmax(g[o])) if np.isfinite(g[o]).any() else np.nan
        ref_vec = [r[o] for o in objs]
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(group_keys, key))
        row.update({"objectives": ", ".join(f"{s} {o}" for o, s in zip(objs, senses)),
                    "reference": ", ".join(f"{o}={r[o]:.4g}" for o in objs),
                    "hypervolume": hypervolume(vals, ref_vec, senses) if np.all(np.isfinite(ref_vec)) else np.nan,
                    "n_points": len(g), "n_front": int(g["on_front"].sum()),
                    "front": "; ".join(f"{m}@{i}" for m, i in zip(g.loc[g["on_front"], "method"], g.loc[g["on_front"], "ipc"]))})
        rows.append(row)
        pts.append(g)
    points = pd.concat(pts, ignore_index=True) if pts else cells.assign(on_front=False)
    return ParetoResult(points, pd.DataFrame(rows), objs, senses)
