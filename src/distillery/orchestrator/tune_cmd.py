"""CLI of ``distillery tune``."""

from __future__ import annotations

import argparse

from .trial_cmd import parse_set


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="tune method hyperparameters with Optuna on Ray Tune (validation split, never test)")
    p.add_argument("config", help="tuning YAML, e.g. configs/tune_dm_digits.yaml")
    p.add_argument("--resume", action="store_true", help="add trials to the existing Optuna studies of this tuning run")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. --set trials=20")
    p.add_argument("--address", help="join a running Ray cluster: auto or HOST:PORT (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the config's tracking_uri, else $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<cwd>/optuna.db; any SQLAlchemy URL)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from .tune_config import load_tune_config

    overrides = parse_set(args.set)
    if args.tracking_uri:
        overrides["tracking_uri"] = args.tracking_uri
    if args.storage:
        overrides["storage"] = args.storage
    config = load_tune_config(args.config, overrides)

    from .tuning import format_outcomes, run_tuning

    outcomes = run_tuning(config, resume=args.resume, address=args.address)
    print()
    print(format_outcomes(config, outcomes))
    out_dir = f"{config.storage_path}/{config.name}/tuning"
    print(f"\noutputs (sweep YAML, trials, plots, importances): {out_dir}")
    print(f"Optuna storage: {config.storage}; MLflow: {config.tracking_uri} (experiment {config.name!r})")
    return 0 if all(o.n_trials > 0 for o in outcomes) else 1
