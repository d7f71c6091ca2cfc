"""What MTT's expert buffer costs, before and after "train experts only as far as trials read"
(a benchmark).

    flock /tmp/distillery-heavy.lock .venv/bin/python bench/bench_expert_buffer.py

Before: every buffer held 100 experts x 50 epochs (the reference buffer.py), whatever the trial.
After: experts are trained to max_start_epoch - 1 + expert_epochs (the last epoch a trial reads)
and their number is one per 50 iterations (100 at the published 5000).

Part 1, CIFAR-10 at the published settings (ConvNet-3 width 128, 50,000 training images, batch 256,
DSA): disk is exact (rows x parameters x 4 bytes); build time = expert-epochs x the seconds of one
expert epoch, measured here on ``--probe`` CIFAR-10 images and scaled to 50,000 (stated as such:
a full CIFAR-10 epoch takes minutes on this CPU).
Part 2, digits with `distillery trial --method mtt --set iterations=200` defaults: one expert built
for real before (50 epochs) and after (the trial's epochs), timed and measured on disk, times the
expert count of each rule.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # distillery without installing it (a GPU box)

import torch  # noqa: E402

from distillery.methods.data import DatasetOptions, load_dataset  # noqa: E402
from distillery.methods.distill import get_method  # noqa: E402
from distillery.methods.distill.mtt import ExpertBuffer  # noqa: E402
from distillery.methods.distill.mtt.buffer import build_expert_net, train_expert_epochs  # noqa: E402

BEFORE_EXPERTS, BEFORE_EPOCHS = 100, 50
CIFAR_TRAIN = 50_000


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def hours(s: float) -> str:
    return f"{s / 3600:.1f} h"


def seconds_per_epoch(data, spec, n_images: int) -> float:
    """One expert epoch on the first n_images of data (after a warm-up batch)."""
    sub = type(data)(**{**data.__dict__, "train_x": data.train_x[:n_images], "train_y": data.train_y[:n_images]})
    net = build_expert_net(spec, sub, seed=0)
    train_expert_epochs(net, spec, sub, 0, 0, torch.device("cpu"), lambda *a: None, last_epoch=1)  # warm-up
    t = time.perf_counter()
    train_expert_epochs(net, spec, sub, 0, 1, torch.device("cpu"), lambda *a: None, last_epoch=2)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cifar-root", default="/tmp/distillery-data/cifar10-jpeg")
    p.add_argument("--probe", type=int, default=2560, help="CIFAR-10 images timed for one epoch")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    mtt = get_method("mtt")

    print("Part 1: CIFAR-10, published settings (100 experts at 5000 iterations)")
    cifar = load_dataset("cifar10", DatasetOptions(root=args.cifar_root, format="imagefolder", test_subset_per_class=10))
    cfg1 = mtt.make_config("cifar10", 1)
    spec = mtt.expert_spec(cfg1, "cifar10")
    params = sum(q.numel() for q in build_expert_net(spec, cifar, seed=0).parameters())
    per_epoch = seconds_per_epoch(cifar, spec, args.probe) * CIFAR_TRAIN / args.probe
    print(f"ConvNet-3 width 128: {params:,} parameters; one expert epoch on 50,000 images ~{per_epoch:.0f} s here "
          f"(measured on {args.probe} images, scaled)")
    print("| IPC | epochs read | before: disk | before: build | after: disk | after: build | saved |")
    print("|---|---|---|---|---|---|---|")
    for ipc in (1, 10, 50):
        cfg = mtt.make_config("cifar10", ipc)
        rows_before, rows_after = BEFORE_EXPERTS * (BEFORE_EPOCHS + 1), cfg.num_experts * (cfg.expert_train_epochs + 1)
        t_before, t_after = BEFORE_EXPERTS * BEFORE_EPOCHS * per_epoch, cfg.num_experts * cfg.expert_train_epochs * per_epoch
        print(f"| {ipc} | {cfg.expert_train_epochs} | {gb(rows_before * params * 4)} | {hours(t_before)} | "
              f"{gb(rows_after * params * 4)} | {hours(t_after)} | {100 * (1 - t_after / t_before):.0f}% |", flush=True)
    print("(a sweep over IPC 1, 10 and 50 shares one buffer per dataset: it costs what its largest IPC reads)")

    print("\nPart 2: digits 16x16, `distillery trial --method mtt --set iterations=200` (measured builds of one expert)")
    digits = load_dataset("digits")
    print("| IPC | rule | experts x epochs | one expert: build s | one expert: disk | all: build | all: disk |")
    print("|---|---|---|---|---|---|---|")
    for ipc in (1, 10):
        cfg = mtt.make_config("digits", ipc, {"iterations": 200})
        for rule, n, epochs in (("before", BEFORE_EXPERTS, BEFORE_EPOCHS), ("after", cfg.num_experts, cfg.expert_train_epochs)):
            spec = mtt.expert_spec(cfg, "digits")
            spec = type(spec)(**{**spec.__dict__, "epochs": epochs})
            with tempfile.TemporaryDirectory() as tmp:
                buf = ExpertBuffer(tmp, "digits", "bench", spec)
                t = time.perf_counter()
                buf.build(0, digits, torch.device("cpu"))
                secs = time.perf_counter() - t
                size = buf.expert_path(0).stat().st_size
            print(f"| {ipc} | {rule} | {n} x {epochs} | {secs:.1f} | {size / 1e6:.1f} MB | {n * secs / 60:.1f} min | {gb(n * size)} |", flush=True)


if __name__ == "__main__":
    main()
