"""Coverage of the analysis' intervals on simulated sweeps, beside the percentile bootstrap they replaced.

    .venv/bin/python bench/calibration.py [--sims 4000] [--out bench/results/calibration.csv]

For each noise regime (set-dominant, model-dominant, balanced, set noise growing 4x across IPC) and
design (2, 3, 10 sets per IPC; 2, 10 models per set; IPC 1, 5, 10, 20, 30), it simulates sweeps as
``tests/test_calibration.py`` does and prints how often each nominal 95 % interval covers the truth:
the slope and the effect (IPC 1 -> 30) with the product's Welch-Satterthwaite interval
(``analysis.inference.welch_contrast``) and with a two-stage (set, then model) percentile bootstrap
stratified by IPC (what the analysis printed before; 500 replicates, implemented here for the
comparison only), plus the rate of each verdict under a null. It appends the rows, with the commit,
date and command, to ``--out``. The suite asserts the product's side; this records the comparison.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from distillery.analysis.inference import effect_weights, slope_weights, welch_contrast  # noqa: E402
from distillery.analysis.trend import decide, rank_test  # noqa: E402

LEVELS = np.array([1.0, 5.0, 10.0, 20.0, 30.0])
REGIMES = {"set-dominant": (0.004, 0.001, False), "model-dominant": (0.001, 0.004, False),
           "balanced": (0.003, 0.003, False), "set-noise-grows-4x": (0.002, 0.002, True)}


def _models(rng, truth, sims, n, m, set_sd, model_sd, grows):
    """[sims, L, n, m] per-model values: truth + set noise + model noise."""
    sd = set_sd * (np.linspace(1.0, 4.0, len(truth)) if grows else np.ones(len(truth)))
    sets = rng.standard_normal((sims, len(truth), n, 1)) * sd[:, None, None]
    return truth[None, :, None, None] + sets + rng.standard_normal((sims, len(truth), n, m)) * model_sd


def _bootstrap_cover(rng, y, weights, truths, reps=500):
    """Two-stage percentile bootstrap (sets, then models within sets, per IPC) of each contrast."""
    sims, L, n, m = y.shape
    covered = np.zeros((len(weights),))
    for s in range(sims):
        si = rng.integers(0, n, (reps, L, n))
        mi = rng.integers(0, m, (reps, L, n, m))
        drawn = y[s][np.arange(L)[None, :, None, None], si[..., None], mi]  # [reps, L, n, m]
        means = drawn.mean(axis=(-1, -2))  # equal models per set: the level mean of set means
        for k, (w, t) in enumerate(zip(weights, truths)):
            est = means @ w
            lo, hi = np.quantile(est, [0.025, 0.975])
            covered[k] += lo <= t <= hi
    return covered / sims


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=4000, help="simulated sweeps per design (the bootstrap uses a tenth)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "calibration.csv")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    command = "python bench/calibration.py " + " ".join(sys.argv[1:])
    rows = []
    print(f"{'regime':<20} {'sets':>4} {'models':>6}  {'slope welch':>11} {'slope boot':>10}  {'effect welch':>12} "
          f"{'effect boot':>11}  {'holds|null':>10} {'contra|null':>11}")
    for r_i, (regime, (set_sd, model_sd, grows)) in enumerate(REGIMES.items()):
        for n in (2, 3, 10):
            for m in (2, 10):
                rng = np.random.default_rng([2026, r_i, n, m])
                truth = 0.01 + 0.002 * np.sqrt(LEVELS)
                counts = np.full(len(LEVELS), n)
                weights = [slope_weights(LEVELS, counts), effect_weights(len(LEVELS))]
                truths = [float(w @ truth) for w in weights]
                y = _models(rng, truth, args.sims, n, m, set_sd, model_sd, grows).mean(-1)
                welch = []
                for w, t in zip(weights, truths):
                    _, _, _, lo, hi, _ = welch_contrast(y.mean(-1), y.var(-1, ddof=1), counts, w)
                    welch.append(float(np.mean((lo <= t) & (t <= hi))))
                boot = _bootstrap_cover(rng, _models(rng, truth, max(200, args.sims // 10), n, m, set_sd, model_sd, grows),
                                        weights, truths)
                flat = _models(rng, np.full(len(LEVELS), 0.01), args.sims, n, m, set_sd, model_sd, grows).mean(-1)
                _, _, _, lo, hi, _ = welch_contrast(flat.mean(-1), flat.var(-1, ddof=1), counts, weights[0])
                rho, p = rank_test(np.repeat(LEVELS, n), flat.reshape(args.sims, -1))
                up, down = decide(rho, p, lo, hi, 0.05)
                row = dict(regime=regime, sets=n, models=m, slope_welch=welch[0], slope_bootstrap=float(boot[0]),
                           effect_welch=welch[1], effect_bootstrap=float(boot[1]), holds_under_null=float(up.mean()),
                           contradicted_under_null=float(down.mean()), sims=args.sims,
                           bootstrap_sims=max(200, args.sims // 10), commit=commit,
                           date=dt.date.today().isoformat(), command=command)
                rows.append(row)
                print(f"{regime:<20} {n:>4} {m:>6}  {welch[0]:>11.3f} {boot[0]:>10.3f}  {welch[1]:>12.3f} {boot[1]:>11.3f}  "
                      f"{up.mean():>10.3f} {down.mean():>11.3f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    new = not args.out.exists()
    with args.out.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)
    print(f"appended {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
