"""DSA's cost against DC's for the same iterations, measured side by side in one run (a benchmark).

    flock /tmp/distillery-heavy.lock .venv/bin/python bench/bench_dsa.py                 # digits, IPC 1 and 10
    .venv/bin/python bench/bench_dsa.py --dataset cifar10 --ipcs 1                       # CIFAR-10 (ImageFolder tree)

Both methods run with their registered defaults (DSA = DC + siamese augmentation + real init) for
``--iters`` iterations, alternating DC, DSA, DC, DSA, ... ``--reps`` times so that a slow phase of
the machine hits both; it prints the median seconds per iteration of each, their ratio, and the
share of DSA's time spent inside the augmentation itself (every DiffAug.apply timed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # distillery without installing it (a GPU box)

import torch  # noqa: E402

from distillery.methods.aug import dsa as dsa_mod  # noqa: E402
from distillery.methods.data import DatasetOptions, load_dataset  # noqa: E402
from distillery.methods.distill import get_method  # noqa: E402

FOLDERS = {"cifar10": "cifar10-jpeg", "mnist": "mnist-png", "fashionmnist": "fashionmnist-png"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits", choices=["digits", *FOLDERS])
    p.add_argument("--data-root", default="/tmp/distillery-data")
    p.add_argument("--subset", type=int, default=500)
    p.add_argument("--ipcs", type=int, nargs="+", default=[1, 10])
    p.add_argument("--iters", type=int, nargs="+", default=[10, 1], help="iterations per run, one per IPC")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    options = DatasetOptions() if args.dataset == "digits" else DatasetOptions(
        root=str(Path(args.data_root) / FOLDERS[args.dataset]), format="imagefolder", subset_per_class=args.subset, test_subset_per_class=10)
    data = load_dataset(args.dataset, options)
    print(f"{args.dataset} {tuple(data.image_shape)}, {len(data.train_x)} training images; torch {torch.__version__}, {args.threads} threads")

    aug_seconds = [0.0]
    real_apply = dsa_mod.DiffAug.apply

    def timed_apply(self, x, draw):
        t = time.perf_counter()
        out = real_apply(self, x, draw)
        aug_seconds[0] += time.perf_counter() - t
        return out

    dsa_mod.DiffAug.apply = timed_apply  # forward cost only; backward through it is counted in the total
    print("| IPC | iterations/run | DC s/iter | DSA s/iter | DSA/DC | augmentation share of DSA |")
    print("|---|---|---|---|---|---|")
    for ipc, iters in zip(args.ipcs, args.iters * len(args.ipcs) if len(args.iters) == 1 else args.iters):
        times: dict[str, list[float]] = {"dc": [], "dsa": []}
        aug_share = []
        for rep in range(args.reps):
            for name in ("dc", "dsa"):
                m = get_method(name)
                cfg = m.make_config(args.dataset, ipc, {"iterations": iters})
                aug_seconds[0] = 0.0
                t = time.perf_counter()
                m.distill(data, ipc, cfg, seed=rep, device=torch.device("cpu"))
                elapsed = time.perf_counter() - t
                times[name].append(elapsed / iters)
                if name == "dsa":
                    aug_share.append(aug_seconds[0] / elapsed)
        dc, dsa = statistics.median(times["dc"]), statistics.median(times["dsa"])
        print(f"| {ipc} | {iters} | {dc:.3f} | {dsa:.3f} | {dsa / dc:.2f} | {100 * statistics.median(aug_share):.1f}% |", flush=True)


if __name__ == "__main__":
    main()
