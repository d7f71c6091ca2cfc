"""CLI of ``distillery tune``."""

from __future__ import annotations

import argparse

from .redact import redact
from .run_args import add_run_arguments, run_overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="tune method hyperparameters with Optuna on Ray Tune (validation split, never test)")
    add_run_arguments(p, "configs/tune_dm_digits.yaml", resume="add trials to the existing Optuna studies of this tuning run",
                      set_example="--set trials=20")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<cwd>/optuna.db; any SQLAlchemy URL)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from .tune_config import load_tune_config

    config = load_tune_config(args.config, run_overrides(args, {"storage": "storage"}))

    from .tuning import format_outcomes, run_tuning

    outcomes = run_tuning(config, resume=args.resume, address=args.address)
    print()
    print(format_outcomes(config, outcomes))
    out_dir = f"{config.storage_path}/{config.name}/tuning"
    print(f"\noutputs (sweep YAML, trials, plots, importances): {out_dir}")
    print(f"Optuna storage: {redact(config.storage)}; MLflow: {redact(config.tracking_uri)} (experiment {config.name!r})")
    return 0 if all(o.n_trials > 0 for o in outcomes) else 1
