"""`distillery analyze`: the command-line face of analysis.report.run_analysis.

The lead wires ``add_analyze_parser`` into the ``distillery`` CLI; ``analyze_main`` lets
AnalysisError (a ValueError/UserError) propagate so that CLI prints it as one line and exits 2.
``python -m distillery.analysis.cli analyze ...`` works standalone (``main`` does the same catch).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .errors import AnalysisError
from .paths import analysis_dir


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI when set (MLflow's own convention), else sqlite:///<abs cwd>/mlflow.db:
    where a sweep started in this directory logs by default (same rule as the sweep's config)."""
    import os

    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"


def add_analyze_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `analyze` sub-command (its handler is ``args.handler = analyze_main``)."""
    p = subparsers.add_parser(
        "analyze",
        help="trade-off curves, Pareto fronts, figures and an HTML report for a finished sweep",
        description="Analyse a sweep: per-(method, arch, IPC) accuracy and class variance with t intervals over sets, "
                    "curve fits, the 'variance grows with IPC' trend test, Pareto fronts, figures and an HTML "
                    "report, logged under analysis/ of the sweep's parent MLflow run.",
    )
    p.add_argument("--experiment", "-e", help="the sweep's name (= MLflow experiment)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: distillery-runs/<experiment>/analysis, where the sweep writes it)")
    p.add_argument("--parent-run", default=None, help="analyse the trials nested under this parent run id")
    p.add_argument("--tune-dir", type=Path, default=None,
                   help="read trials from a Tune results directory (result.json) instead of MLflow")
    p.add_argument("--seed", type=int, default=0, help="seed of the planner's simulated sweeps (default 0)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the trend tests (default 0.05)")
    p.add_argument("--grid-ipc", type=int, nargs="*", default=None,
                   help="IPCs whose synthetic sets are drawn (default: smallest, middle, largest)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the parent MLflow run")
    p.set_defaults(handler=analyze_main, func=analyze_main)  # `handler`: the distillery CLI's dispatch key
    return p


def _default_out(uri: str, args: argparse.Namespace, name: str) -> Path:
    """``<storage_path>/<sweep>/analysis`` of the sweep's own storage path (its parent run's
    ``distillery.storage_path`` tag), where the sweep itself wrote its analysis; ./distillery-runs
    for a sweep that predates the tag or a Tune directory. Validates --experiment / --parent-run."""
    if args.tune_dir is None:
        from distillery.methods.schema import Tag

        from .load import mlflow_client, resolve_sweep

        client = mlflow_client(uri)
        _, exp_name, parent, _ = resolve_sweep(client, args.experiment, args.parent_run)
        storage = client.get_run(parent).data.tags.get(Tag.STORAGE_PATH) if parent else None
        if storage:
            return analysis_dir(storage, exp_name)
    return analysis_dir("distillery-runs", name)


def analyze_main(args: argparse.Namespace) -> int:
    """Run the analysis, print the summary and where the files went; 0 on success."""
    from .report import run_analysis

    if not 0 < args.alpha < 1:
        raise AnalysisError(f"--alpha {args.alpha}: use a level between 0 and 1, e.g. --alpha 0.05")
    if not (args.experiment or args.parent_run or args.tune_dir):
        raise AnalysisError("name the sweep to analyse: --experiment NAME (or --parent-run RUN_ID, or --tune-dir DIR)")
    uri = args.tracking_uri or default_tracking_uri()
    name = args.experiment or args.parent_run or Path(args.tune_dir).name
    out = args.out or _default_out(uri, args, name)
    log = not args.no_log and (args.tune_dir is None or bool(args.experiment or args.parent_run))
    result = run_analysis(args.experiment, uri, out, parent_run_id=args.parent_run, log_to_mlflow=log,
                          tune_dir=args.tune_dir, seed=args.seed, alpha=args.alpha,
                          grid_ipcs=args.grid_ipc)
    print(result.summary)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"\nreport: {result.html_path}\naggregates: {result.csv_path}\nfigures: {len(result.figures)} files in "
          f"{result.out_dir / 'figures'}")
    if result.logged_to_run:
        print(f"logged under analysis/ of MLflow run {result.logged_to_run}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: `python -m distillery.analysis.cli analyze --experiment NAME`."""
    parser = argparse.ArgumentParser(prog="distillery")
    sub = parser.add_subparsers(dest="command", required=True)
    add_analyze_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
