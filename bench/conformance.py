"""The conformance matrix: every registered method, with its defaults, against `random` (a benchmark).

    flock /tmp/distillery-heavy.lock .venv/bin/python bench/conformance.py                     # everything
    .venv/bin/python bench/conformance.py --datasets digits --ipcs 1 --iterations 200           # the quick check

For every dataset and IPC it runs `random` and then each method exactly as `distillery trial` does
(``run_trial`` with the method's defaults for that dataset and IPC), changing only ``iterations``
(printed per row; ``--iterations N`` for all, ``--iters METHOD=N`` for one), and prints one table:
mean per-class accuracy (mean +- std over the evaluation models), accuracy minus random's (same
seed, same models, same evaluation), seconds per iteration and the peak RSS increase while
distilling. A row whose accuracy is not above random's is marked FAIL and makes the exit status 1.

Data: digits ships with scikit-learn (16x16 by default). MNIST, Fashion-MNIST and CIFAR-10 are read
from ImageFolder trees (``bash ../shared/data/unpack.sh`` puts them in /tmp/distillery-data) with
``format: imagefolder``, so each keeps its name and per-dataset defaults; ``--subset`` training and
``--test-subset`` test images per class are drawn (seeded) for CPU-sized runs. The evaluation is
the default protocol (ConvNet-3 width 128, 300 epochs or 1000 at a learned step size, DSA),
``--models`` models per set.
`full` (the full-data baseline) is not a distillation method and is left out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # distillery without installing it (a GPU box)

import torch  # noqa: E402

from bench.memory import reset_peak, status_kb  # noqa: E402

from distillery.methods.data import DatasetOptions  # noqa: E402
from distillery.methods.distill.base import METHODS, Progress  # noqa: E402
from distillery.methods.distill import load_all  # noqa: E402,F401  (registers every method)
from distillery.methods.trial import TrialSpec, run_trial  # noqa: E402

#: (dataset name, ImageFolder folder under --data-root or None for bundled data)
DATASETS = {"digits": None, "mnist": "mnist-png", "fashionmnist": "fashionmnist-png", "cifar10": "cifar10-jpeg"}
NOT_DISTILLATION = ("full", "random")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--ipcs", type=int, nargs="+", default=[1, 10])
    p.add_argument("--methods", nargs="+", default=None, help="default: every registered method but full and random")
    p.add_argument("--iterations", type=int, default=200, help="iterations of every iterative method (the one knob lowered)")
    p.add_argument("--iters", nargs="*", default=[], metavar="METHOD=N", help="per-method iterations, e.g. dc=50")
    p.add_argument("--models", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default="/tmp/distillery-data")
    p.add_argument("--subset", type=int, default=500, help="training images per class for the ImageFolder sets")
    p.add_argument("--test-subset", type=int, default=300, help="test images per class for the ImageFolder sets")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory-mode", choices=["unrolled", "tesla", "tesla_exact"], default=None,
                   help="trajectory methods' memory_mode; tesla_exact gives unrolled's gradients (up to rounding) in constant "
                        "memory, for cells whose unrolled graph does not fit in this machine's RAM (printed in the row)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    return p.parse_args(argv)


def data_options(name: str, args: argparse.Namespace) -> DatasetOptions:
    folder = DATASETS[name]
    if folder is None:
        return DatasetOptions()
    return DatasetOptions(root=str(Path(args.data_root) / folder), format="imagefolder",
                          subset_per_class=args.subset, test_subset_per_class=args.test_subset)


def iterations_for(method: str, args: argparse.Namespace) -> int | None:
    """The lowered iterations, or None for methods without the option (random, herding)."""
    per = dict(item.split("=", 1) for item in args.iters)
    fields = getattr(METHODS.get(method), "Config", None)
    if fields is None or "iterations" not in getattr(fields, "__dataclass_fields__", {}):
        return None
    return int(per.get(method, args.iterations))


def run_cell(dataset: str, method: str, ipc: int, args: argparse.Namespace) -> dict:
    iters = iterations_for(method, args)
    params: dict = {} if iters is None else {"iterations": iters}
    if args.memory_mode and "memory_mode" in getattr(METHODS.get(method).Config, "__dataclass_fields__", {}):
        params["memory_mode"] = args.memory_mode
    spec = TrialSpec(dataset=dataset, method=method, ipc=ipc, seed=args.seed, n_models=args.models,
                     method_params=params, data=data_options(dataset, args))
    reset_peak()
    rss0 = status_kb("VmRSS")
    last: dict[str, float] = {}

    def progress(p: Progress) -> None:
        if p.phase == "distill":
            last["t"], last["n"] = p.elapsed, p.iteration
        now = time.monotonic()
        if now - last.get("printed", 0.0) > 30:
            last["printed"] = now
            print(f"    [{dataset} ipc {ipc} {method}] {p.phase} {p.iteration}/{p.total}", file=sys.stderr, flush=True)

    result = run_trial(spec, device="cpu", progress_callback=progress)
    s = result.summary()
    per_model = [m.mean_acc for m in s.first.per_model]
    return {
        "dataset": dataset, "ipc": ipc, "method": method + (f" ({params['memory_mode']})" if "memory_mode" in params else ""),
        "iterations": iters,
        "mean_acc": s.mean_acc, "std": float(torch.tensor(per_model).std()) if len(per_model) > 1 else 0.0,
        "s_per_iter": (last["t"] / last["n"]) if last.get("n") else None,
        "distill_seconds": s.distill_seconds, "eval_seconds": s.eval_seconds,
        "peak_rss_mb": max(0, status_kb("VmHWM") - rss0) / 1024,
    }


def format_row(r: dict) -> str:
    it = "-" if r["iterations"] is None else str(r["iterations"])
    spi = "-" if r["s_per_iter"] is None or r["iterations"] is None else f"{r['s_per_iter']:.2f}"  # herding: one step
    delta = "" if r["method"] == "random" else f"{100 * (r['mean_acc'] - r['random_acc']):+.1f}"
    verdict = "" if r["method"] == "random" else ("ok" if r["mean_acc"] > r["random_acc"] else "FAIL")
    return (f"| {r['dataset']} | {r['ipc']} | {r['method']} | {it} | {100 * r['mean_acc']:.2f} +- {100 * r['std']:.2f} | {delta} | "
            f"{spi} | {r['distill_seconds']:.0f} | {r['peak_rss_mb']:.0f} | {verdict} |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = args.methods or [m for m in METHODS.names() if m not in NOT_DISTILLATION]
    print(f"conformance: methods {', '.join(methods)}; iterations {args.iterations} {' '.join(args.iters)}; "
          f"{args.models} models x default evaluation; seed {args.seed}; torch {torch.__version__}, {args.threads} threads", flush=True)
    header = ("| dataset | IPC | method | iterations | mean acc % | vs random | s/iter | distill s | peak RSS MB | |\n"
              "|---|---|---|---|---|---|---|---|---|---|")
    rows: list[dict] = []
    lines = [header]
    print(header, flush=True)
    for dataset in args.datasets:
        for ipc in args.ipcs:
            base = run_cell(dataset, "random", ipc, args)
            base["random_acc"] = base["mean_acc"]
            rows.append(base)
            lines.append(format_row(base))
            print(lines[-1], flush=True)
            for method in methods:
                row = run_cell(dataset, method, ipc, args)
                row["random_acc"] = base["mean_acc"]
                rows.append(row)
                lines.append(format_row(row))
                print(lines[-1], flush=True)
    failed = [r for r in rows if r["method"] != "random" and r["mean_acc"] <= r["random_acc"]]
    print("\n" + "\n".join(lines))
    names = ", ".join(f"{r['dataset']}/{r['method']}@{r['ipc']}" for r in failed)
    print(f"\n{len(rows) - len(failed)}/{len(rows)} rows ok" + (f"; below random: {names}" if failed else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
