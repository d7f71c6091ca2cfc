"""Preparatory jobs a sweep's or a tuning run's methods share (e.g. MTT expert trajectories), run
once per (key, index) as parallel Ray tasks before any trial starts, so no two trials build the same
buffer and the experts of one buffer train in parallel. Sweep and tune call the same function with
the (spec, resources) pairs of the trials they are about to run."""

from __future__ import annotations

import time
from typing import Any, Iterable

from distillery.methods.distill.base import PrepJob, get_method
from distillery.methods.trial import TrialSpec

from .config import Resources
from .eta import PhaseETA, format_seconds

#: what a trial about to run needs prepared: its spec and the resources it runs with
Need = tuple[TrialSpec, Resources]


def collect_prep_jobs(needs: Iterable[Need]) -> list[tuple[PrepJob, Resources]]:
    """Unique jobs not done yet, deduplicated by (key, index) keeping the largest extent (e.g. the
    most expert epochs any trial reads), with the resources of a trial that needs them."""
    jobs: dict[tuple[str, int], tuple[PrepJob, Resources]] = {}
    for spec, resources in needs:
        method = spec.method_impl()
        for job in method.prep_jobs(spec.dataset, spec.data, spec.resolved_method_config()):
            known = jobs.get((job.key, job.index))
            if (known is None or job.extent > known[0].extent) and not method.job_done(job):
                jobs[(job.key, job.index)] = (job, resources)
    return list(jobs.values())


def _run_job(job: PrepJob, device: str, threads: int) -> str:
    import torch

    from distillery.methods.utils.device import resolve_device

    torch.set_num_threads(max(1, threads))
    get_method(job.method).run_prep_job(job, job.load_data(), resolve_device(device))
    return job.description


#: seconds between "still running" lines while preparation jobs run
HEARTBEAT_S = 60.0


def run_prep_jobs(needs: Iterable[Need], device: str) -> int:
    """Build every missing shared artifact; raises (failing the sweep or tuning run early) if one
    cannot be built."""
    import ray

    todo = collect_prep_jobs(needs)
    if not todo:
        return 0
    print(f"[prep] building {len(todo)} shared artifacts (e.g. expert trajectories) as parallel Ray tasks", flush=True)
    done = 0
    eta = PhaseETA()
    eta.update(0, len(todo), time.monotonic())
    for stage in sorted({job.stage for job, _ in todo}):  # a stage starts when the earlier ones are done
        refs: list[Any] = []
        for job, r in todo:
            if job.stage == stage:
                task = ray.remote(_run_job).options(num_cpus=r.cpu, num_gpus=r.gpu, max_retries=2)
                refs.append(task.remote(job, device if r.gpu > 0 else "cpu", int(max(1, r.cpu))))
        remaining = list(refs)
        waited = 0.0
        while remaining:
            # never a silent wait: a request no node can hold was refused before (capacity.py); a job that
            # is merely slow (an expert build takes minutes) says so every HEARTBEAT_S
            ready, remaining = ray.wait(remaining, num_returns=1, timeout=HEARTBEAT_S)
            if not ready:
                waited += HEARTBEAT_S
                print(f"[prep] {len(remaining)} job(s) of stage {stage} still running after {format_seconds(waited)}", flush=True)
                continue
            done += 1
            left = eta.update(done, len(todo), time.monotonic())
            when = f", ETA {format_seconds(left)}" if left is not None and done < len(todo) else ""
            print(f"[prep] {done}/{len(todo)} done{when}: {ray.get(ready[0])}", flush=True)
    return len(todo)
