"""The ``distillery`` command. Subcommands import their heavy dependencies lazily, so
``distillery trial`` works (and starts fast) without touching Ray or MLflow."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from distillery.methods.errors import USER_ERRORS

Handler = Callable[[argparse.Namespace], int]

#: modules of the ``orchestration`` extra (``pip install distillery`` alone installs the torch core)
ORCHESTRATION_MODULES = frozenset({"ray", "mlflow", "optuna", "pandas", "matplotlib", "pydantic", "yaml"})


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Shows an option's default when it has a meaningful one (not None/False, which argparse's
    own ArgumentDefaultsHelpFormatter prints as noise)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" not in text and not (default is None or default is False or default == argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def _add_trial(sub: argparse._SubParsersAction) -> None:
    from . import trial_cmd

    p = sub.add_parser(
        "trial", help="distill one set and evaluate it, in-process (no Ray, no MLflow)",
        description="Distill one synthetic set (dataset, method, IPC, seed) and evaluate K freshly initialised "
                    "networks on it, in this process: no Ray, no MLflow. Prints per-class accuracy and the fairness "
                    "metrics (or one JSON object with --json). Method options, evaluation, data and network options "
                    "go through --set; `--set iterations=N` is the one knob a quick check lowers. A single trial "
                    "defaults to the quick budget (--budget paper for the published iterations, as sweeps run) and "
                    "prints its expected duration, measured by a short calibration run, before it starts.",
        formatter_class=DefaultsHelpFormatter,
    )
    trial_cmd.add_arguments(p)
    p.set_defaults(handler=trial_cmd.main)


def _add_optional(sub: argparse._SubParsersAction, module: str, adder: str, handler: str) -> None:
    """Subcommands of other issues register here when their module exists."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return
    getattr(mod, adder)(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distillery", description="Dataset distillation experiments, from one trial to a Ray cluster sweep.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_trial(sub)
    _add_optional(sub, "distillery.orchestrator.sweep_cmd", "add_parser", "main")
    _add_optional(sub, "distillery.orchestrator.tune_cmd", "add_parser", "main")
    _add_optional(sub, "distillery.analysis.cli", "add_analyze_parser", "analyze_main")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except USER_ERRORS as exc:
        print(f"distillery {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in ORCHESTRATION_MODULES:
            raise
        print(f"distillery {args.command}: error: needs the orchestration extra (module {top!r} is not installed); "
              "install it with: pip install 'distillery[orchestration]'. `distillery trial` runs without it.", file=sys.stderr)
        return 2


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
