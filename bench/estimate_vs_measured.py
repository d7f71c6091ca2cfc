"""How good was `distillery sweep CONFIG --dry-run --estimate`? Its calibrated figures beside a finished sweep's measured ones.

    .venv/bin/python bench/estimate_vs_measured.py configs/fairness_cifar10_laptop.yaml [--set a.b=c ...] [--runs DIR]

Run it where the sweep ran (the same cwd, so relative paths resolve the same), after the sweep and
after a dry-run estimate with the same config and ``--set`` overrides on the same machine (the
estimate's calibrations are read from its cache, ``$DISTILLERY_CACHE/calibration.json``; nothing is
re-measured here). For each trial shape it prints the estimated and the measured trial time (mean
over the shape's seeds: the worker's started_at -> finished_at, data loading included) and their
ratio, then the sweep's estimated wall time (the estimate's slot simulation) against the
measured trial-time sum divided by the slots. ``--wall SECONDS`` adds the measured wall time of the
whole command (Ray start-up, MLflow logging and the analysis included) for comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from distillery.orchestrator.config import load_config  # noqa: E402
from distillery.orchestrator.cost import _simulate, cached_calibrations, concurrent_slots, shape_key  # noqa: E402
from distillery.orchestrator.eta import format_seconds  # noqa: E402
from distillery.orchestrator.grid import expand  # noqa: E402
from distillery.orchestrator.store import TrialStore  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--set", action="append", default=[], metavar="A.B=C")
    ap.add_argument("--wall", type=float, help="the sweep command's measured wall seconds, to print beside the estimate")
    args = ap.parse_args()
    overrides = dict(s.split("=", 1) for s in args.set)
    config = load_config(args.config, overrides)
    plans = expand(config)
    store = TrialStore(config.storage_path, config.name)
    cached = cached_calibrations(config, plans)
    rows, est_all, measured_all = [], [], []
    by_shape: dict[str, list] = {}
    for p in plans:
        by_shape.setdefault(shape_key(p), []).append(p)
    for key, group in by_shape.items():
        est = cached.get(group[0].trial_hash)
        measured = []
        for p in group:
            try:
                r = store.read_result(p.trial_hash)
            except (OSError, ValueError):
                r = None
            if r:
                measured.append(r["finished_at"] - r["started_at"])
        mean = statistics.fmean(measured) if measured else float("nan")
        name = group[0].name.rsplit("-seed", 1)[0]
        e = est.total_seconds if est else float("nan")
        rows.append((name, len(measured), e, mean))
        if est:
            est_all += [e] * len(group)
        measured_all += measured
    print(f"{'trial shape':<22} {'done':>4} {'estimated':>10} {'measured':>10} {'measured/est':>12}")
    for name, n, e, m in rows:
        ratio = m / e if e == e and m == m and e > 0 else float("nan")
        print(f"{name:<22} {n:>4} {format_seconds(e) if e == e else '-':>10} {format_seconds(m) if m == m else '-':>10} {ratio:>12.2f}")
    slots = concurrent_slots(config, plans)
    est_wall = _simulate(est_all, slots)
    print(f"\ntrial time: estimated {format_seconds(sum(est_all))}, measured {format_seconds(sum(measured_all))} "
          f"({sum(measured_all) / max(1e-9, sum(est_all)):.2f}x)")
    print(f"wall, {slots} at a time: estimated {format_seconds(est_wall)}, measured trials / slots "
          f"{format_seconds(sum(measured_all) / max(1, slots))}"
          + (f", measured command {format_seconds(args.wall)} ({args.wall / max(1e-9, est_wall):.2f}x the estimate)" if args.wall else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
