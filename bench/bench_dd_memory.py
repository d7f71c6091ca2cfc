"""DD's two memory modes side by side: one iteration's time, the autograd graph's peak and the
process's peak RSS, for the image shapes of the shipped datasets (a benchmark, not a CI test).

    flock /tmp/distillery-heavy.lock .venv/bin/python bench/bench_dd_memory.py

Why: DD back-propagates through ``unroll_steps x unroll_epochs`` (30) SGD steps on the whole set.
Kept as one graph (the reference's way, ``unrolled``) that graph is ~0.6 GB a step for 100 images at
28x28 or 32x32 through the width-128 ConvNet: 18.5 GB at IPC 10, more than half of a 24 GB laptop.
``stepwise`` computes the same gradient from one step's graph at a time. No data is needed: the
images are seeded noise of each dataset's shape (the cost does not depend on the pixels), the real
batch is ``batch_real`` (1024) noise images. A shape whose unrolled estimate exceeds half the free
memory is measured only stepwise (the unrolled row says "skipped", with the estimate).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # distillery without installing it (a GPU box)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.memory import reset_peak, status_kb  # noqa: E402

from distillery.methods.distill.meta.bptt import DDConfig, sgd_step, stepwise_loss, unrolled_loss  # noqa: E402
from distillery.methods.nets.registry import build_network  # noqa: E402
from distillery.methods.utils.device import free_memory_bytes  # noqa: E402
from distillery.methods.utils.memory import saved_tensor_peak, unrolled_fits  # noqa: E402

SHAPES = {"digits": (1, 16), "mnist": (1, 28), "cifar10": (3, 32)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--ipcs", type=int, nargs="+", default=[1, 10])
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def one_iteration(fn, channels: int, size: int, ipc: int, config: DDConfig) -> tuple[float, int, int]:
    """(seconds, graph peak bytes, RSS peak increase in bytes) of one DD iteration's loss and backward."""
    g = torch.Generator().manual_seed(0)
    net = build_network(config.net, channels, size, 10, seed=0, width=config.net_width, depth=config.net_depth, norm=config.net_norm)
    params = {k: v.detach().requires_grad_(True) for k, v in net.named_parameters()}
    x = torch.randn(10 * ipc, channels, size, size, generator=g).requires_grad_(True)
    y = torch.arange(10 * ipc) % 10
    raw = torch.full((config.unroll_steps * config.unroll_epochs,), -3.9, requires_grad=True)
    x_real = torch.randn(config.batch_real, channels, size, size, generator=g)
    y_real = torch.randint(10, (config.batch_real,), generator=g)

    def run() -> None:
        fn(net, params, {}, x, y, F.softplus(raw), x_real, y_real).backward()

    reset_peak()
    base = status_kb("VmRSS")
    start = time.perf_counter()
    _, graph = saved_tensor_peak(run)
    seconds = time.perf_counter() - start
    return seconds, graph, (status_kb("VmHWM") - base) * 1024


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    config = DDConfig()
    steps = config.unroll_steps * config.unroll_epochs
    free = free_memory_bytes(torch.device("cpu"))
    print(f"DD defaults: ConvNet width {config.net_width}, {steps} unrolled steps, batch_real {config.batch_real}; "
          f"{args.threads} threads, torch {torch.__version__}, free memory {free / 2**30:.1f} GB")
    print("| dataset shape | IPC | unrolled estimate GB | auto picks | unrolled s | stepwise s | stepwise / unrolled | graph GB (unrolled / stepwise) | RSS peak GB (unrolled / stepwise) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.datasets:
        channels, size = SHAPES[name]
        for ipc in args.ipcs:
            net = build_network(config.net, channels, size, 10, seed=0, width=config.net_width, depth=config.net_depth, norm=config.net_norm)
            params = {k: v.detach().requires_grad_(True) for k, v in net.named_parameters()}
            x = torch.zeros(10 * ipc, channels, size, size, requires_grad=True)
            per_step = saved_tensor_peak(lambda: sgd_step(net, params, {}, x, torch.arange(10 * ipc) % 10, torch.tensor(0.02, requires_grad=True)))[1]
            estimate = per_step * steps
            fits = unrolled_fits(estimate, free_memory_bytes(torch.device("cpu")))
            s_step, g_step, r_step = one_iteration(stepwise_loss, channels, size, ipc, config)
            if fits:
                s_unr, g_unr, r_unr = one_iteration(unrolled_loss, channels, size, ipc, config)
                unr = (f"{s_unr:.1f}", f"{s_step / s_unr:.2f}", f"{g_unr / 2**30:.2f} / {g_step / 2**30:.2f}", f"{r_unr / 2**30:.2f} / {r_step / 2**30:.2f}")
            else:
                unr = ("skipped (over half the free memory)", "-", f"- / {g_step / 2**30:.2f}", f"- / {r_step / 2**30:.2f}")
            print(f"| {name} {channels}x{size}x{size} | {ipc} | {estimate / 2**30:.2f} | {'unrolled' if fits else 'stepwise'} | {unr[0]} | {s_step:.1f} | {unr[1]} | {unr[2]} | {unr[3]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
