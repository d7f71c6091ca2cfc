"""The command-line arguments every Ray-run command shares (``sweep`` and ``tune``), defined once.

Both read a YAML config, take ``--set`` overrides in one grammar (dotted path = YAML value), can
resume, join a cluster and name an MLflow server; only their own flags differ. Flags that set a
config field become overrides, so a flag and ``--set`` of the same field are validated alike.
"""

from __future__ import annotations

import argparse
from typing import Any

from .trial_cmd import parse_set

TRACKING_HELP = ("MLflow tracking URI (default: the config's tracking_uri, else $MLFLOW_TRACKING_URI, else "
                 "sqlite:///<cwd>/mlflow.db); e.g. http://host:5000")


def add_run_arguments(p: argparse.ArgumentParser, example: str, resume: str, set_example: str) -> None:
    p.add_argument("config", help=f"the YAML config, e.g. {example}")
    p.add_argument("--resume", action="store_true", help=resume)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=f"override a config field (a dotted path = a YAML value), e.g. {set_example}")
    p.add_argument("--address", help="join a running Ray cluster: auto or HOST:PORT (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--tracking-uri", help=TRACKING_HELP)


def run_overrides(args: argparse.Namespace, flags: dict[str, str] | None = None) -> dict[str, Any]:
    """``--set`` items plus the valued flags that set config fields (``flags``: argparse dest ->
    field; ``--tracking-uri`` always), each a YAML value like a ``--set``'s."""
    overrides: dict[str, Any] = parse_set(args.set)
    for dest, field in {"tracking_uri": "tracking_uri", **(flags or {})}.items():
        value = getattr(args, dest, None)
        if value:
            overrides[field] = value
    return overrides
