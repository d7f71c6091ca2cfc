"""Orchestration overhead: N trials through `distillery sweep` vs the same trials in a plain loop.

Both sides run the identical TrialSpecs (from the same sweep config) on this machine's 2 CPUs:
  loop       : methods.trial.run_trial for each trial, sequentially, torch using 2 threads
  sweep/cpu2 : `distillery sweep` with resources.cpu=2 (one trial at a time, 2 threads): the same
               parallelism as the loop, so the ratio is the pure orchestration overhead
  sweep/cpu1 : resources.cpu=1 (two trials at once, 1 thread each): what a user gets by default
Prints wall times, the ratios and where the sweep's extra time goes (startup before the first trial,
per-trial time outside run_trial, tail after the last trial).

    python bench/bench_sweep_overhead.py [--trials 4] [--iterations 300] [--epochs 150]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))


def sweep_config(name: str, trials: int, iterations: int, epochs: int, cpu: int) -> dict:
    return {
        "name": name,
        "datasets": [{"name": "digits", "resize": 16}],  # 16x16: see configs/quickstart.yaml
        "methods": {"dm": {"params": {"iterations": iterations, "net_width": 32}}},
        "ipcs": [10],
        "seeds": list(range(trials)),
        "eval": {"archs": ["convnet"], "models": 5, "epochs": epochs, "arch_options": {"convnet": {"width": 32}}},
        "resources": {"cpu": cpu, "gpu": 0},
        "num_cpus": 2,
        "analyze": False,
    }


def run_loop(cfg: dict, workdir: Path) -> tuple[float, list[float]]:
    from distillery.orchestrator.config import validate_config
    from distillery.orchestrator.grid import expand
    from distillery.methods.data import load_dataset
    from distillery.methods.trial import run_trial

    torch.set_num_threads(2)
    plans = expand(validate_config(cfg, base_dir=workdir))
    t0 = time.perf_counter()
    durations = []
    for p in plans:
        s = time.perf_counter()
        data = load_dataset(p.spec.dataset, p.spec.data)
        run_trial(p.spec, device="cpu", data=data)
        durations.append(time.perf_counter() - s)
    return time.perf_counter() - t0, durations


def run_sweep(cfg: dict, workdir: Path) -> tuple[float, list[dict]]:
    path = workdir / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    start_wall = time.time()
    proc = subprocess.run([sys.executable, "-m", "distillery.orchestrator.cli", "sweep", str(path)], cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    records = [json.loads(p.read_text()) for p in (workdir / "distillery-runs" / cfg["name"] / "trials").glob("*/result/result.json")]
    for r in records:
        r["_rel_start"] = r["started_at"] - start_wall
        r["_rel_end"] = r["finished_at"] - start_wall
    return wall, records


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=150)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        loop_wall, loop_durations = run_loop(sweep_config("loop", args.trials, args.iterations, args.epochs, 2), work)
        results = {}
        for cpu in (2, 1):
            d = work / f"cpu{cpu}"
            d.mkdir()
            results[cpu] = run_sweep(sweep_config(f"overhead-cpu{cpu}", args.trials, args.iterations, args.epochs, cpu), d)
    print(f"# Orchestration overhead, {args.trials} DM trials on digits 16x16 (ipc 10, {args.iterations} iterations, width 32; 5 eval models x {args.epochs} epochs), 2 CPUs")
    print(f"plain loop: {loop_wall:.1f}s  (per trial {sum(loop_durations) / len(loop_durations):.1f}s)")
    for cpu, (wall, recs) in results.items():
        inside = [r["summary"]["distill_seconds"] + r["summary"]["eval_seconds"] for r in recs]
        spans = [r["_rel_end"] - r["_rel_start"] for r in recs]
        first = min(r["_rel_start"] for r in recs)
        last = max(r["_rel_end"] for r in recs)
        print(
            f"sweep cpu={cpu}: {wall:.1f}s  ratio {wall / loop_wall:.3f}  | startup before first trial {first:.1f}s, "
            f"trials {last - first:.1f}s (run_trial {sum(inside):.1f}s of {sum(spans):.1f}s trial-seconds), tail {wall - last:.1f}s"
        )
    print(f"\ncommand: python bench/bench_sweep_overhead.py --trials {args.trials} --iterations {args.iterations} --epochs {args.epochs}")


if __name__ == "__main__":
    main()
