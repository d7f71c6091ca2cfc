"""MTT on real CIFAR-10 at CPU-affordable settings (a benchmark, not a CI test).

    flock /tmp/distillery-heavy.lock .venv/bin/python bench/bench_mtt.py

Data: the CIFAR-10 JPEG ImageFolder tree (``bash ../shared/data/unpack.sh`` puts it in
/tmp/distillery-data/cifar10-jpeg), a seeded subset of --subset training images per class (the
experts, DM's real batches and the random baseline all draw from it), --test-subset test images
per class. No ZCA by default (--zca fits it on the training subset; all methods then use it).

What it does:
1. builds --experts expert trajectories (width --width ConvNet, --expert-epochs epochs, SGD lr 0.01,
   batch 256, DSA) into a fresh buffer (reused when --buffer-dir already holds them);
2. for IPC 1 and 10 distils `random`, DM (if methods/distill/dm.py exists) and MTT, and evaluates
   each set with the same protocol: --models ConvNets of the same width, --eval-epochs epochs,
   SGD momentum 0.9, DSA; MTT's sets train with their learned lr. Prints mean +- std over models
   of the mean per-class test accuracy;
3. times one MTT iteration at IPC 10 in each memory mode and reports its peak memory: the bytes
   held by autograd graphs (exact) and the peak RSS increase of the process (VmHWM, reset per run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # distillery without installing it (a GPU box)

import torch  # noqa: E402

from bench.memory import reset_peak, status_kb  # noqa: E402

from distillery.methods.data import DatasetOptions, dataset_fingerprint, load_dataset  # noqa: E402
from distillery.methods.aug import DiffAug, apply_transforms  # noqa: E402
from distillery.methods.distill import get_method  # noqa: E402
from distillery.methods.distill.mtt.buffer import build_expert_net  # noqa: E402
from distillery.methods.distill.mtt.matching import FlatNet, matching_grads, plan_steps, saved_tensor_peak  # noqa: E402
from distillery.methods.eval import EvalConfig, evaluate_synset  # noqa: E402
from distillery.methods.utils.seeding import generator  # noqa: E402

CPU = torch.device("cpu")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/tmp/distillery-data/cifar10-jpeg")
    p.add_argument("--subset", type=int, default=500, help="training images per class")
    p.add_argument("--test-subset", type=int, default=500, help="test images per class")
    p.add_argument("--zca", action="store_true")
    p.add_argument("--width", type=int, default=32, help="ConvNet width (experts, student, DM net, evaluation)")
    p.add_argument("--experts", type=int, default=3)
    p.add_argument("--expert-epochs", type=int, default=6)
    p.add_argument("--buffer-dir", default=None, help="default: a fresh directory under /tmp")
    p.add_argument("--mtt-iters", type=int, nargs=2, default=(200, 80), metavar=("IPC1", "IPC10"))
    p.add_argument("--syn-steps", type=int, nargs=2, default=(20, 10), metavar=("IPC1", "IPC10"))
    p.add_argument("--lr-img", type=float, nargs=2, default=(1000.0, 1000.0), metavar=("IPC1", "IPC10"))
    p.add_argument("--dm-iters", type=int, default=300)
    p.add_argument("--dm-batch-real", type=int, default=64)
    p.add_argument("--models", type=int, default=3)
    p.add_argument("--eval-epochs", type=int, default=300)
    p.add_argument("--ipcs", type=int, nargs="+", default=(1, 10))
    p.add_argument("--mem-steps", type=int, nargs="*", default=(10, 30), help="syn_steps for the memory comparison (IPC 10; none: skip)")
    p.add_argument("--methods", nargs="+", default=("random", "dm", "mtt"))
    p.add_argument("--skip-methods", action="store_true", help="only the experts and the memory comparison")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def mtt_config(args, ipc: int, **changes):
    i = 0 if ipc == 1 else 1
    params = dict(
        width=args.width, depth=3, num_experts=args.experts, expert_train_epochs=args.expert_epochs,
        expert_epochs=2, max_start_epoch=2 if ipc == 1 else max(1, args.expert_epochs - 2), syn_steps=args.syn_steps[i],
        iterations=args.mtt_iters[i], lr_img=args.lr_img[i], lr_lr=1e-5 if ipc > 1 else 1e-7, lr_teacher=0.01,
        zca=args.zca, buffer_dir=args.buffer_dir,
    )
    params.update(changes)
    return get_method("mtt").make_config("cifar10", ipc, params)


def evaluate(args, syn, data) -> tuple[float, float, float]:
    res = evaluate_synset(syn, data, "convnet", args.models, EvalConfig(epochs=args.eval_epochs), seed=args.seed, device=CPU,
                          net_options={"width": args.width})
    acc = res.per_class.mean(1)  # mean per-class accuracy of each model
    return float(acc.mean()), float(acc.std()) if len(acc) > 1 else 0.0, res.train_seconds + res.test_seconds


# ---------------------------------------------------------------------------------------------
# memory


def memory_modes(args, data, buffer) -> list[dict]:
    ipc = 10
    cfg = mtt_config(args, ipc)
    module = build_expert_net(buffer.spec, data, seed=0)
    module.train()
    net = FlatNet(module)
    aug = DiffAug(buffer.spec.dsa_strategy)
    images = data.train_x[torch.cat([idx[:ipc] for idx in data.class_indices()])].clone()
    labels = torch.arange(data.num_classes).repeat_interleave(ipc)
    start, target = buffer.load_epochs(0, 1, 1 + cfg.expert_epochs)
    rows = []
    for steps_n in args.mem_steps:
        for mode in ("unrolled", "tesla", "tesla_exact"):
            steps = plan_steps(len(images), steps_n, len(images), aug, generator(args.seed, "bench-mem", steps_n), CPU)
            lr = torch.tensor(0.01)
            matching_grads(mode, net, start, target, images, labels, lr, steps, aug)  # warm-up
            ok = reset_peak()
            base = status_kb("VmRSS")
            t0 = time.perf_counter()
            reps = 2
            for _ in range(reps):
                loss, gi, gl, _ = matching_grads(mode, net, start, target, images, labels, lr, steps, aug)
            sec = (time.perf_counter() - t0) / reps
            rss_mb = (status_kb("VmHWM") - base) / 1024 if ok else float("nan")
            _, graph = saved_tensor_peak(lambda: matching_grads(mode, net, start, target, images, labels, lr, steps, aug))
            rows.append({"syn_steps": steps_n, "mode": mode, "sec_per_iter": sec, "graph_mb": graph / 2**20, "rss_peak_mb": rss_mb,
                         "loss": float(loss)})
            log(f"memory: steps {steps_n} {mode}: {sec:.2f}s/iter, graph {graph / 2**20:.1f} MB, rss +{rss_mb:.1f} MB")
    return rows


# ---------------------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.buffer_dir is None:
        args.buffer_dir = f"/tmp/distillery-bench-experts-{os.getpid()}"
    t_all = time.perf_counter()
    options = DatasetOptions(root=args.root, subset_per_class=args.subset, test_subset_per_class=args.test_subset, seed=args.seed)
    t0 = time.perf_counter()
    data = load_dataset("imagefolder", options)
    data = dataclasses.replace(data, fingerprint=dataset_fingerprint("imagefolder", options))
    if args.zca:
        data = apply_transforms(data, ("zca",))
    log(f"data: {tuple(data.train_x.shape)} train, {tuple(data.test_x.shape)} test in {time.perf_counter() - t0:.1f}s")

    mtt = get_method("mtt")
    base_cfg = mtt_config(args, 10)
    buffer = mtt.buffer_for(data, base_cfg)
    t0 = time.perf_counter()
    built = buffer.ensure(args.experts, data, CPU)
    expert_seconds = time.perf_counter() - t0
    markers = [buffer.marker(i) for i in range(args.experts)]
    expert_acc = [m["test_acc"] for m in markers]
    build_secs = sum(m["seconds"] for m in markers)
    log(f"experts: built {len(built)} in {expert_seconds:.0f}s ({build_secs:.0f}s total build time), test acc {expert_acc}")

    rows = []
    if not args.skip_methods:
        have_dm = True
        try:
            get_method("dm")
        except Exception:  # noqa: BLE001 - not written yet
            have_dm = False
        for ipc in args.ipcs:
            runs = [("random", get_method("random"), get_method("random").make_config("cifar10", ipc))]
            if have_dm:
                dm = get_method("dm")
                runs.append(("dm", dm, dm.make_config("cifar10", ipc, {"iterations": args.dm_iters, "batch_real": args.dm_batch_real,
                                                                        "net_width": args.width})))
            runs.append(("mtt", mtt, mtt_config(args, ipc)))
            for name, method, cfg in runs:
                if name not in args.methods:
                    continue
                losses: list[float] = []
                t0 = time.perf_counter()
                syn = method.distill(data, ipc, cfg, seed=args.seed, device=CPU,
                                     progress_callback=lambda p: losses.append(p.loss) if p.loss is not None else None)
                dsec = time.perf_counter() - t0
                iters = getattr(cfg, "iterations", 0) if name != "random" else 0
                mean, std, esec = evaluate(args, syn, data)
                row = {"ipc": ipc, "method": name, "acc": mean, "std": std, "distill_s": dsec, "iters": iters,
                       "s_per_iter": dsec / iters if iters else 0.0, "eval_s": esec, "lr": syn.lr,
                       "loss_first": sum(losses[:10]) / max(1, len(losses[:10])) if losses else None,
                       "loss_last": sum(losses[-10:]) / max(1, len(losses[-10:])) if losses else None}
                rows.append(row)
                log(f"ipc {ipc} {name}: {100 * mean:.2f} +- {100 * std:.2f} (distill {dsec:.0f}s, eval {esec:.0f}s, lr {syn.lr}, "
                    f"loss {row['loss_first']} -> {row['loss_last']})")
        if not have_dm:
            log("DM: methods/distill/dm.py is not there; skipped")

    mem = memory_modes(args, data, buffer)
    total = time.perf_counter() - t_all

    print(f"\nMTT bench: CIFAR-10 (JPEG) {args.subset}/class train, {args.test_subset}/class test, ZCA {'on' if args.zca else 'off'}, "
          f"ConvNet-3 width {args.width}, torch threads {args.threads}")
    print(f"experts: {args.experts} x {args.expert_epochs} epochs, {build_secs:.0f}s to build, test acc "
          f"{', '.join(f'{100 * a:.1f}' for a in expert_acc)}%")
    if rows:
        print(f"eval: {args.models} ConvNets, {args.eval_epochs} epochs, DSA; mean per-class test accuracy, mean +- std over models")
        print(f"{'IPC':>3} {'method':<7} {'acc %':>14} {'iters':>6} {'s/iter':>7} {'distill s':>9} {'eval s':>7} {'learned lr':>10}")
        for r in rows:
            lr = f"{r['lr']:.4g}" if r["lr"] is not None else "-"
            print(f"{r['ipc']:>3} {r['method']:<7} {100 * r['acc']:>7.2f} +- {100 * r['std']:<4.2f} {r['iters']:>6} "
                  f"{r['s_per_iter']:>7.2f} {r['distill_s']:>9.0f} {r['eval_s']:>7.0f} {lr:>10}")
    print(f"memory modes (MTT IPC 10, batch_syn 100): per iteration")
    print(f"{'syn_steps':>9} {'mode':<12} {'s/iter':>7} {'graph MB':>9} {'peak RSS +MB':>12}")
    for r in mem:
        print(f"{r['syn_steps']:>9} {r['mode']:<12} {r['sec_per_iter']:>7.2f} {r['graph_mb']:>9.1f} {r['rss_peak_mb']:>12.1f}")
    print(f"total {total:.0f}s")
    print(json.dumps({"rows": rows, "memory": mem, "experts": {"acc": expert_acc, "build_seconds": build_secs}, "args": vars(args)}),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
