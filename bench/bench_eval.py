"""Evaluation protocol on real CIFAR-10 (a benchmark, not a CI test).

    flock /tmp/distillery-heavy.lock .venv/bin/python bench/bench_eval.py

Data: the CIFAR-10 JPEG ImageFolder tree (``bash ../shared/data/unpack.sh`` puts it in
/tmp/distillery-data/cifar10-jpeg); full training split, --test-subset test images per class.

1. Speed-up of the vectorized K-model training (torch.func.vmap over K ConvNets) over the sequential
   loop of K trainings, side by side in one run: same `random` IPC-10 set, same seeds, same epochs;
   prints both wall times, the ratio and the largest difference between the two runs' per-class
   accuracies (they must agree up to float error).
2. `random` IPC 10 accuracy with ConvNet-3 (width --width) trained --acc-epochs epochs (the field
   reports 26.0 +- 1.2% for a width-128 ConvNet at 300+ epochs), mean +- std over --models models
   and over --sets random sets (seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # distillery without installing it (a GPU box)

import torch  # noqa: E402

from distillery.methods.data import DatasetOptions, load_dataset  # noqa: E402
from distillery.methods.distill import get_method  # noqa: E402
from distillery.methods.eval import EvalConfig, evaluate_synset  # noqa: E402

CPU = torch.device("cpu")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/tmp/distillery-data/cifar10-jpeg")
    p.add_argument("--test-subset", type=int, default=300, help="test images per class")
    p.add_argument("--width", type=int, default=128, help="ConvNet width for the accuracy part")
    p.add_argument("--speed-width", type=int, default=32, help="ConvNet width for the speed-up part")
    p.add_argument("--models", type=int, default=10, help="K")
    p.add_argument("--speed-epochs", type=int, default=30)
    p.add_argument("--acc-epochs", type=int, default=300)
    p.add_argument("--sets", type=int, default=2, help="random sets (seeds) for the accuracy part")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def random_set(data, ipc: int, seed: int):
    method = get_method("random")
    return method.distill(data, ipc, method.make_config(data.name, ipc), seed, CPU)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = load_dataset("imagefolder", DatasetOptions(root=args.root, test_subset_per_class=args.test_subset))
    print(f"data: {len(data.train_x)} train / {len(data.test_x)} test images, {data.num_classes} classes "
          f"(loaded in {time.perf_counter() - t0:.1f}s)")

    synset = random_set(data, 10, seed=0)
    base = EvalConfig(epochs=args.speed_epochs)
    opts = {"width": args.speed_width}
    runs = {}
    for vectorize in (True, False):
        cfg = dataclasses.replace(base, vectorize=vectorize)
        t = time.perf_counter()
        res = evaluate_synset(synset, data, "convnet", args.models, cfg, seed=0, device=CPU, net_options=opts)
        runs[vectorize] = (time.perf_counter() - t, res)
    (tv, rv), (ts, rs) = runs[True], runs[False]
    diff = float((rv.per_class - rs.per_class).abs().max())
    print(f"\n[speed] K={args.models} ConvNet width {args.speed_width}, {args.speed_epochs} epochs on random IPC10 (100 images):")
    print(f"  vectorized (vmap): {tv:7.1f}s train {rv.train_seconds:6.1f}s   mean acc {100 * float(rv.per_class.mean()):.2f}%")
    print(f"  sequential loop  : {ts:7.1f}s train {rs.train_seconds:6.1f}s   mean acc {100 * float(rs.per_class.mean()):.2f}%")
    print(f"  speed-up (train) : {rs.train_seconds / rv.train_seconds:.2f}x   (total {ts / tv:.2f}x); max |per-class acc diff| = {diff:.4f}")

    print(f"\n[accuracy] random IPC10, ConvNet width {args.width}, {args.acc_epochs} epochs, {args.models} models x {args.sets} sets:")
    cfg = EvalConfig(epochs=args.acc_epochs)
    accs = []
    for seed in range(args.sets):
        s = random_set(data, 10, seed)
        t = time.perf_counter()
        res = evaluate_synset(s, data, "convnet", args.models, cfg, seed=seed, device=CPU, net_options={"width": args.width})
        model_acc = [100 * float(a) for a in res.per_class.mean(1)]
        accs += model_acc
        print(f"  set seed {seed}: {statistics.mean(model_acc):.2f} +- {statistics.stdev(model_acc):.2f}%  ({time.perf_counter() - t:.0f}s)")
    print(f"  all models: {statistics.mean(accs):.2f} +- {statistics.stdev(accs):.2f}% (published: 26.0 +- 1.2%)")


if __name__ == "__main__":
    main()
