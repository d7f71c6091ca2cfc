"""DC, DSA, DM and DataDAM vs `random` on real CIFAR-10 at CPU-affordable settings (a benchmark, not a CI test).

    flock /tmp/distillery-heavy.lock .venv/bin/python bench/bench_methods.py

Data: the CIFAR-10 JPEG ImageFolder tree (``bash ../shared/data/unpack.sh`` puts it in
/tmp/distillery-data/cifar10-jpeg); a seeded --subset training images per class (every method's
real batches and `random` draw from it), --test-subset test images per class.

Reduced settings (full scale belongs on a GPU): a width --width ConvNet-3 (instance norm) for the
distillation networks and the evaluation; --iters iterations per method and IPC (the published
values are 1000 for DC/DSA and 20000 for DM/DataDAM); DC/DSA inner loops capped by --dc-inner and
real batches of --batch-real; evaluation: --models ConvNets trained --eval-epochs epochs with the
standard protocol (SGD momentum 0.9, lr 0.01 x0.1 at half, DSA), accuracy after the last epoch.
For each method and IPC it prints mean +- std over models of the mean per-class test accuracy,
seconds per iteration and the process's peak RSS increase during distillation (VmHWM, reset per run),
next to the published numbers (full scale, width 128).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # distillery without installing it (a GPU box)

import torch  # noqa: E402

from bench.memory import reset_peak, status_kb  # noqa: E402

from distillery.methods.data import DatasetOptions, load_dataset  # noqa: E402
from distillery.methods.distill import get_method  # noqa: E402
from distillery.methods.eval import EvalConfig, evaluate_synset  # noqa: E402

CPU = torch.device("cpu")
PUBLISHED = {  # CIFAR-10, ConvNet width 128, % (shared/reference/distillation-protocol.md)
    "random": {1: "14.4", 10: "26.0"}, "dc": {1: "28.3", 10: "44.9"}, "dsa": {1: "28.8", 10: "52.1"},
    "dm": {1: "26.0", 10: "48.9"}, "datadam": {1: "32.0", 10: "54.2"},
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/tmp/distillery-data/cifar10-jpeg")
    p.add_argument("--subset", type=int, default=500)
    p.add_argument("--test-subset", type=int, default=300)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--ipcs", type=int, nargs="+", default=(1, 10))
    p.add_argument("--methods", nargs="+", default=("random", "dc", "dsa", "dm", "datadam"))
    p.add_argument("--iters", nargs="+", default=["dc=1:100,10:20", "dsa=1:100,10:20", "dm=1:400,10:400", "datadam=1:400,10:400"],
                   help="METHOD=IPC:ITERS,IPC:ITERS ...")
    p.add_argument("--dc-inner", type=int, default=10, help="cap on DC/DSA inner epochs (reference: 50 at IPC 10)")
    p.add_argument("--dc-real-init-from", type=int, default=10,
                   help="DC starts from real images (not its published noise) at IPC >= this: 20 iterations cannot move noise far")
    p.add_argument("--batch-real", type=int, default=128)
    p.add_argument("--models", type=int, default=4)
    p.add_argument("--eval-epochs", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def iterations(args) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for item in args.iters:
        name, _, spec = item.partition("=")
        out[name] = {int(a): int(b) for a, b in (kv.split(":") for kv in spec.split(","))}
    return out


def config_for(args, name: str, ipc: int, iters: dict[str, dict[int, int]]):
    method = get_method(name)
    if name == "random":
        return method.make_config("cifar10", ipc)
    params = {"iterations": iters[name][ipc], "net_width": args.width, "batch_real": args.batch_real}
    if name in ("dc", "dsa"):
        default = method.default_config("cifar10", ipc)
        params["inner_loop"] = min(default.inner_loop, args.dc_inner)
        if name == "dc" and ipc >= args.dc_real_init_from:
            params["init"] = "real"
    if name == "datadam":
        params["batch_real"] = min(args.batch_real, 64)  # the published value
    return method.make_config("cifar10", ipc, params)


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    iters = iterations(args)
    data = load_dataset("imagefolder", DatasetOptions(root=args.root, subset_per_class=args.subset,
                                                      test_subset_per_class=args.test_subset, seed=args.seed))
    print(f"data: {tuple(data.train_x.shape)} train, {tuple(data.test_x.shape)} test", flush=True)
    rows = []
    for ipc in args.ipcs:
        for name in args.methods:
            cfg = config_for(args, name, ipc, iters)
            method = get_method(name)
            losses: list[float] = []
            reset_peak()
            base = status_kb("VmRSS")
            t0 = time.perf_counter()
            syn = method.distill(data, ipc, cfg, args.seed, CPU, lambda p: losses.append(p.loss) if p.loss is not None else None)
            dsec = time.perf_counter() - t0
            peak_mb = (status_kb("VmHWM") - base) / 1024
            n_it = getattr(cfg, "iterations", 0) if name != "random" else 0
            res = evaluate_synset(syn, data, "convnet", args.models, EvalConfig(epochs=args.eval_epochs), seed=args.seed,
                                  device=CPU, net_options={"width": args.width})
            acc = res.per_class.mean(1)
            row = dict(ipc=ipc, method=name, acc=100 * float(acc.mean()), std=100 * float(acc.std()), iters=n_it,
                       s_iter=dsec / n_it if n_it else 0.0, distill_s=dsec, eval_s=res.train_seconds + res.test_seconds,
                       peak_mb=peak_mb, loss0=sum(losses[:5]) / max(1, len(losses[:5])) if losses else None,
                       loss1=sum(losses[-5:]) / max(1, len(losses[-5:])) if losses else None)
            rows.append(row)
            loss = f"loss {row['loss0']:.4g} -> {row['loss1']:.4g}" if losses else ""
            print(f"ipc {ipc:>2} {name:<8} {row['acc']:6.2f} +- {row['std']:4.2f}%  {n_it} it, {row['s_iter']:.2f} s/it, "
                  f"distill {dsec:.0f}s, eval {row['eval_s']:.0f}s, peak RSS +{peak_mb:.0f} MB  {loss}", flush=True)

    print(f"\nCIFAR-10 (JPEG) {args.subset}/class train subset, {args.test_subset}/class test; ConvNet-3 width {args.width}; "
          f"eval {args.models} models x {args.eval_epochs} epochs (DSA); torch threads {args.threads}; DC/DSA inner loop <= {args.dc_inner}, "
          f"batch_real {args.batch_real} (DataDAM 64); DC init real at IPC >= {args.dc_real_init_from}; iterations {' '.join(args.iters)}")
    print(f"{'IPC':>3} {'method':<8} {'acc % (mean+-std)':>18} {'vs random':>9} {'iters':>6} {'s/iter':>7} {'peak MB':>8} {'published':>9}")
    base = {r["ipc"]: r["acc"] for r in rows if r["method"] == "random"}
    for r in rows:
        delta = f"{r['acc'] - base[r['ipc']]:+.1f}" if r["ipc"] in base else "-"
        print(f"{r['ipc']:>3} {r['method']:<8} {r['acc']:>10.2f} +- {r['std']:<5.2f} {delta:>9} {r['iters']:>6} {r['s_iter']:>7.2f} "
              f"{r['peak_mb']:>8.0f} {PUBLISHED.get(r['method'], {}).get(r['ipc'], '-'):>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
