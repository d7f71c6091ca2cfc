"""Class-wise fairness metrics from per-class accuracy.

Conventions (the fairness study's, stated once here and in docs/tracking-schema.md):
- Accuracies are fractions in [0, 1]; variances are therefore in fraction^2 (multiply by 1e4 for %^2).
- ``class_var`` is the POPULATION variance across the C classes: (1/C) * sum_c (a_c - mean)^2.
  The classes are the whole population of interest, not a sample, so no Bessel correction.
- ``mean_acc`` is the mean per-class accuracy (balanced accuracy); ``overall_acc`` is
  correct/total over the test set. They differ when the test set is class-imbalanced.
- A cell's figure (e.g. one IPC) is the mean over all its models (the study: 10 sets x 10 models).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..schema import FAIRNESS_METRICS  # noqa: F401  (re-exported: the names live in methods/schema.py)


def per_class_accuracy(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """[C] accuracy of each class (recall); NaN for a class absent from ``target``."""
    correct = torch.bincount(target[pred == target], minlength=num_classes).double()
    total = torch.bincount(target, minlength=num_classes).double()
    return torch.where(total > 0, correct / total.clamp(min=1), torch.full_like(total, float("nan")))


def confusion_per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Per-class accuracy from a confusion matrix (rows = true class): its diagonal over row sums."""
    confusion = np.asarray(confusion, dtype=float)
    return np.diag(confusion) / confusion.sum(axis=1)


def fairness_metrics(per_class: Sequence[float] | np.ndarray | Tensor, class_counts: Sequence[int] | None = None) -> dict[str, float]:
    """All fairness metrics of ONE model from its per-class accuracies.

    ``class_counts`` (test samples per class) gives the exact ``overall_acc``; without it the
    test set is assumed balanced and overall_acc equals mean_acc.
    """
    a = np.asarray(per_class.cpu() if isinstance(per_class, Tensor) else per_class, dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"per-class accuracy must be a non-empty 1-D sequence, got shape {a.shape}")
    mean = float(a.mean())
    var = float(((a - mean) ** 2).mean())
    std = math.sqrt(var)
    if class_counts is not None:
        counts = np.asarray(class_counts, dtype=float)
        overall = float((a * counts).sum() / counts.sum())
    else:
        overall = mean
    return {
        "mean_acc": mean,
        "overall_acc": overall,
        "class_var": var,
        "class_std": std,
        "worst_class_acc": float(a.min()),
        "gap": float(a.max() - a.min()),
        "cv": std / mean if mean > 0 else float("inf"),
    }


def _t_quantile_975(df: int) -> float:
    try:
        from scipy import stats

        return float(stats.t.ppf(0.975, df))
    except ImportError:  # scipy is optional for methods/; normal approximation
        return 1.959963984540054


def aggregate_models(per_class: np.ndarray | Tensor, class_counts: Sequence[int] | None = None) -> dict[str, dict[str, float]]:
    """Aggregate the metrics of K models ([K, C] per-class accuracies).

    Returns {metric: {"mean", "std", "ci95_low", "ci95_high", "n"}}; std is the sample std over
    models (ddof=1) and the CI is the t-interval of the mean (a normal approximation when scipy is
    absent). Across-model spread is a sample of a random process, hence ddof=1 here, unlike the
    across-class population variance above.
    """
    pc = np.asarray(per_class.cpu() if isinstance(per_class, Tensor) else per_class, dtype=float)
    if pc.ndim != 2:
        raise ValueError(f"expected [K, C] per-class accuracies, got shape {pc.shape}")
    rows = [fairness_metrics(row, class_counts) for row in pc]
    out: dict[str, dict[str, float]] = {}
    k = len(rows)
    for name in FAIRNESS_METRICS:
        vals = np.array([r[name] for r in rows])
        mean = float(vals.mean())
        std = float(vals.std(ddof=1)) if k > 1 else 0.0
        half = _t_quantile_975(k - 1) * std / math.sqrt(k) if k > 1 else 0.0
        out[name] = {"mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half, "n": float(k)}
    return out


def summarize(per_class: np.ndarray | Tensor, class_counts: Sequence[int] | None = None) -> Mapping[str, float]:
    """Flat {metric: mean over models} (what a trial reports as its headline numbers)."""
    return {k: v["mean"] for k, v in aggregate_models(per_class, class_counts).items()}
