"""``distillery trial``: one trial in-process with a readable table or ``--json``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from distillery.methods.data import DATASETS, DatasetOptions
from distillery.methods.distill.base import Progress
from distillery.methods.errors import UserError
from distillery.methods.eval import EvalConfig, EvalProgress
from distillery.methods.budget import BUDGETS, QUICK_ITERATIONS, BudgetChoice, apply_budget
from distillery.methods.estimate import estimate_trial
from distillery.methods.trial import TrialSpec, prepare_data, run_trial, with_overrides
from distillery.methods.schema import FULL_DATA_METHOD
from distillery.methods.utils.device import resolve_device

from .eta import PhaseETA, format_seconds


def parse_set(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def ipc_arg(value: str) -> int | None:
    """``--ipc N``, or ``all`` (the full-data baseline, which takes every training image)."""
    if value.strip().lower() == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of images per class or 'all', got {value!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", help="dataset name (digits is bundled: works offline)")
    p.add_argument("--method", default="random", help="distillation method (random, herding, full, dc, dsa, dm, datadam, mtt, ftd, datm, pad, dd, ld, kip, frepo, rfad)")
    p.add_argument("--ipc", type=ipc_arg, default=10, help="images per class ('all' with --method full, the full-data baseline)")
    p.add_argument("--models", type=int, default=5, help="evaluation models per architecture (K)")
    p.add_argument("--arch", action="append", help="evaluation architecture (repeatable; default convnet)")
    p.add_argument("--epochs", type=int, help="evaluation epochs (default: the protocol's 300, or 1000 for a set with a learned step size: MTT's evaluation)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (distillation, evaluation networks, subsets)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N")
    p.add_argument("--data-root", help="dataset root folder")
    p.add_argument("--download", action="store_true", help="download the dataset with torchvision if missing")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="method option (lr_img=0.1), eval.<field>, data.<field> or net.<arch>.<option>")
    p.add_argument("--budget", choices=BUDGETS, default="quick",
                   help=f"quick: iterative methods run {QUICK_ITERATIONS} iterations (minutes on a laptop); paper: their "
                        "published counts (what sweeps run). --set iterations=N overrides either")
    p.add_argument("--no-estimate", action="store_true",
                   help="skip the short calibration run that prints the expected duration before the trial starts")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr (and no calibration)")


def spec_from_args(args: argparse.Namespace) -> TrialSpec:
    """The TrialSpec the arguments describe, budget applied (what ``main`` runs)."""
    return budgeted_spec(args).spec


def budgeted_spec(args: argparse.Namespace) -> BudgetChoice:
    DATASETS.get(args.dataset)  # fail fast on unknown names
    eval_cfg = EvalConfig() if args.epochs is None else EvalConfig(epochs=args.epochs)
    spec = TrialSpec(
        dataset=args.dataset,
        method=args.method,
        ipc=None if args.method == FULL_DATA_METHOD else args.ipc,  # the baseline cell has no IPC
        seed=args.seed,
        archs=tuple(args.arch or ["convnet"]),
        n_models=args.models,
        eval=eval_cfg,
        data=DatasetOptions(root=args.data_root, download=args.download),
    )
    spec = with_overrides(spec, parse_set(args.set))
    choice = apply_budget(spec, getattr(args, "budget", "paper"))
    choice.spec.validate()
    return choice


class ProgressPrinter:
    """Throttled progress lines on stderr for every long phase (expert building, distillation,
    evaluation), each with its own ETA, so long runs show life without flooding logs."""

    UNITS = {"experts": "expert epochs", "distill": "iterations"}

    def __init__(self, enabled: bool, every: float = 2.0, stream=None) -> None:
        self.enabled, self.every, self.last = enabled, every, 0.0
        self.stream = stream
        self.etas: dict[str, PhaseETA] = {}

    def _emit(self, text: str, force: bool) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self.last >= self.every):
            self.last = now
            print(text, file=self.stream or sys.stderr, flush=True)

    def _eta(self, phase: str, done: int, total: int) -> str:
        eta = self.etas.setdefault(phase, PhaseETA()).update(done, total, time.monotonic())
        return "" if eta is None or done >= total else f", ETA {format_seconds(eta)}"

    def distill(self, p: Progress) -> None:
        loss = f" loss {p.loss:.4g}" if p.loss is not None else ""
        unit = self.UNITS.get(p.phase, "steps")
        label = "experts" if p.phase == "experts" else p.phase
        self._emit(
            f"[{label}] {p.iteration}/{p.total} {unit}{loss} ({format_seconds(p.elapsed)}{self._eta(p.phase, p.iteration, p.total)})",
            p.iteration == p.total,
        )

    def evaluate(self, arch: str, p: EvalProgress) -> None:
        eta = self._eta("eval:" + arch, p.done, p.total)
        self._emit(f"[eval {arch}] {p.label()}{eta}", p.done == p.total)  # the ETA covers every model


def main(args: argparse.Namespace) -> int:
    choice = budgeted_spec(args)
    spec = choice.spec
    printer = ProgressPrinter(not args.quiet)
    if choice.note and not args.quiet:
        print(choice.note, file=sys.stderr, flush=True)
    estimate, data = None, None
    if not (args.quiet or args.no_estimate):
        data = prepare_data(spec)  # loaded once for the calibration and the trial
        estimate = estimate_trial(spec, device=args.device, data=data, progress_callback=printer.distill)
        print(f"{estimate.describe(format_seconds)} on {resolve_device(args.device)}", file=sys.stderr, flush=True)
    result = run_trial(spec, device=args.device, data=data, progress_callback=printer.distill, eval_callback=printer.evaluate)
    summary = {**result.summary().to_dict(), "budget": args.budget, "estimate": dataclasses.asdict(estimate) if estimate else None}
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_summary(summary))
    return 0


def format_summary(s: dict) -> str:
    lines = [f"{s['method']} on {s['dataset']}, ipc {'all' if s['ipc'] is None else s['ipc']}, seed {s['seed']} ({s['synthetic_images']} images)"]
    names = s["class_names"]
    width = max(12, max(len(n) for n in names) + 2)
    for arch, a in s["archs"].items():
        lines.append("")
        lines.append(f"{arch}: {a['n_models']} models, {a['epochs']} epochs, lr {a['lr']:.4g}")
        lines.append(f"  {'class':<{width}}{'accuracy %':>12}")
        for name, acc in zip(names, a["per_class"]):
            lines.append(f"  {name:<{width}}{100 * acc:>12.2f}")
        lo, hi = a["ci95"]
        lines += [
            f"  mean per-class accuracy  {100 * a['mean_acc']:.2f}% +- {100 * a['mean_acc_std']:.2f} (95% CI over this set's models {100 * lo:.2f}..{100 * hi:.2f}: "
            "how well this one set is measured, not how another draw of it would score; a sweep's seeds give that)",
            f"  overall accuracy         {100 * a['overall_acc']:.2f}%",
            f"  class variance           {a['class_var']:.5f} fraction^2  (std {100 * a['class_std']:.2f} points)",
            f"  worst class              {100 * a['worst_class_acc']:.2f}%",
            f"  max-min gap              {100 * a['gap']:.2f} points",
            f"  coefficient of variation {a['cv']:.4f}",
            f"  train {a['train_seconds']:.1f}s, test {a['test_seconds']:.1f}s ({'vectorized' if a['vectorized'] else 'sequential'})",
        ]
    lines += ["", f"distill {s['distill_seconds']:.1f}s, evaluate {s['eval_seconds']:.1f}s"]
    return "\n".join(lines)
