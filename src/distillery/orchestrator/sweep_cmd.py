"""CLI of ``distillery sweep``."""

from __future__ import annotations

import argparse
import os
import sys

from distillery.analysis.paths import analysis_dir

from .commands import command
from .redact import redact
from .run_args import add_run_arguments, run_overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a sweep config (method x IPC x seed) on Ray Tune, tracked in MLflow")
    add_run_arguments(p, "configs/quickstart.yaml",
                      resume="continue a sweep: finished trials are kept, unfinished ones resume from their checkpoints",
                      set_example="--set eval.epochs=50 --set resources.gpu=0.25")
    p.add_argument("--dry-run", action="store_true", help="validate and print the trial table; start nothing")
    p.add_argument("--estimate", action="store_true",
                   help="before starting (or with --dry-run, instead), print each trial's and the sweep's estimated time on this "
                        "machine, from a short calibration run per trial shape (cached per machine)")
    p.add_argument("--plan", action="store_true",
                   help="before starting (or with --dry-run, instead), print per (method, arch) series the smallest rise of class "
                        "variance the design detects (stats.power, stats.alpha) and the sets per IPC that stats.target_effect needs")
    p.add_argument("--pilot", metavar="EXPERIMENT",
                   help="with --plan: take the set- and model-level noise from this finished sweep (an MLflow experiment in "
                        "the tracking store) instead of the documented defaults")
    p.add_argument("--recalibrate", action="store_true", help="with --estimate: measure again instead of using cached calibrations")
    p.add_argument("--storage-path", help="where trial checkpoints/results live (shared storage on a multi-node cluster)")
    p.add_argument("--no-analyze", action="store_true", help="skip `distillery analyze` at the end")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from distillery.methods.errors import UserError

    from .config import load_config

    if args.recalibrate and not args.estimate:  # a silently ignored flag would leave the cache in use
        raise UserError("--recalibrate only applies to the estimate; add --estimate (e.g. --dry-run --estimate --recalibrate)")
    if args.pilot and not args.plan:
        raise UserError("--pilot only applies to the plan; add --plan (e.g. --dry-run --plan --pilot EXPERIMENT)")

    overrides = run_overrides(args, {"storage_path": "storage_path"})
    if args.no_analyze:
        overrides["analyze"] = "false"
    config = load_config(args.config, overrides)

    from .grid import expand
    from .store import TrialStore
    from .sweep import run_sweep, trial_table

    if args.dry_run:
        print(trial_table(expand(config), TrialStore(config.storage_path, config.name)))
    if args.plan:
        _print_plan(config, args.pilot)
    if args.estimate:
        _print_estimate(config, recalibrate=args.recalibrate)
    if args.dry_run:
        if not (args.address or os.environ.get("RAY_ADDRESS")):  # after the table and plan, which describe the grid anywhere
            from .capacity import check_capacity, plan_requests

            check_capacity(plan_requests(expand(config)), None, config.num_cpus, config.num_gpus)
        return 0
    outcome = run_sweep(config, resume=args.resume, address=args.address)
    from .progress import summary_table

    print()
    print(summary_table(outcome.finished.values()))
    if outcome.failed:
        names = {p.trial_hash: p.name for p in outcome.plans}
        print(f"\n{len(outcome.failed)} trial(s) FAILED:", file=sys.stderr)
        for h, reason in outcome.failed.items():
            print(f"  {names[h]} ({h}): {reason}", file=sys.stderr)
        print("Fix the cause and run the same command with --resume: finished trials are kept.", file=sys.stderr)
    if outcome.interrupted:
        left = len(outcome.plans) - len(outcome.finished) - len(outcome.failed)
        print(f"\ninterrupted: {len(outcome.finished)} of {len(outcome.plans)} trials finished, {left} stopped or not started "
              "(their checkpoints are kept). Continue with the same command plus --resume; the analysis runs when "
              "the sweep completes.", file=sys.stderr)
        return 130
    if config.analyze and outcome.finished:
        _analyze(config, outcome)
    if config.tracking_uri.startswith("sqlite"):
        print(f"\nMLflow UI:  {command('mlflow', 'ui', '--backend-store-uri', config.tracking_uri)}   (experiment {config.name!r})")
    else:
        print(f"\nMLflow UI: {redact(config.tracking_uri)} (experiment {config.name!r})")
    return 0 if outcome.ok else 1


def _print_plan(config, pilot: str | None) -> None:
    from .plan import describe_plan, pilot_noise, plan_sweep

    noise = pilot_noise(config, pilot) if pilot else None
    print(describe_plan(config, plan_sweep(config, noise)), flush=True)


def _print_estimate(config, recalibrate: bool = False) -> None:
    from .cost import describe, estimate_sweep
    from .grid import expand
    from .store import TrialStore

    plans = expand(config)
    done = TrialStore(config.storage_path, config.name).done_hashes()

    def on_shape(plan, i: int, n: int, cached: bool) -> None:
        what = "cached calibration for" if cached else "calibrating"
        print(f"[estimate] {what} trial shape {i}/{n} ({plan.name})", file=sys.stderr, flush=True)

    est = estimate_sweep(config, plans, skip=done, on_shape=on_shape, recalibrate=recalibrate)
    print(describe(est, plans), flush=True)


def _analyze(config, outcome) -> None:
    try:
        from distillery.analysis.report import run_analysis
    except ImportError:
        return
    from pathlib import Path

    out_dir = analysis_dir(config.storage_path, config.name)
    try:
        res = run_analysis(config.name, config.tracking_uri, out_dir, parent_run_id=outcome.parent_run_id,
                           alpha=config.stats.alpha)
    except Exception as exc:  # the sweep's results are safe; analysis can be rerun with `distillery analyze`
        rerun = redact(command("distillery", "analyze", "--experiment", config.name, "--tracking-uri", config.tracking_uri, "--out", str(out_dir)))
        print(f"analysis failed ({type(exc).__name__}: {exc}); rerun with: {rerun}", file=sys.stderr)
        return
    print("\nTrend tests (study claim: class variance grows with IPC):")
    for t in res.trend_results:
        if t.metric == "class_var":
            print(f"  - {t.verdict}")
    print(f"\nanalysis report: {res.html_path}")
