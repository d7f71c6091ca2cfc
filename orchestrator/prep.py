"""Preparatory jobs a sweep's methods share (e.g. MTT expert trajectories), run once per key as
parallel Ray tasks before any trial starts, so no two trials build the same buffer."""

from __future__ import annotations

import sys
from typing import Any

from methods.distill.base import get_method
from methods.trial import prepare_data

from .grid import TrialPlan


def collect_prep_jobs(plans: list[TrialPlan]) -> list[tuple[Any, TrialPlan]]:
    """Unique (job, a plan that needs it) pairs for jobs not done yet, deduplicated by (key, index)."""
    jobs: dict[tuple[str, int], tuple[Any, TrialPlan]] = {}
    for plan in plans:
        method = get_method(plan.spec.method)
        if not hasattr(method, "prep_jobs"):
            continue
        for job in method.prep_jobs(plan.spec.dataset, plan.spec.data, plan.spec.resolved_method_config()):
            if not method.job_done(job):
                jobs.setdefault((job.key, job.index), (job, plan))
    return list(jobs.values())


def _run_job(job: Any, plan: TrialPlan, device: str, threads: int) -> str:
    import torch

    from methods.utils.device import resolve_device

    torch.set_num_threads(max(1, threads))
    method = get_method(plan.spec.method)
    data = prepare_data(plan.spec)
    method.run_prep_job(job, data, resolve_device(device if plan.resources.gpu > 0 else "cpu"))
    return f"{job.key}:{job.index}"


def run_prep_jobs(plans: list[TrialPlan], device: str) -> int:
    import ray

    todo = collect_prep_jobs(plans)
    if not todo:
        return 0
    print(f"[prep] building {len(todo)} shared artifacts (e.g. expert trajectories) as Ray tasks", flush=True)
    refs = []
    for job, plan in todo:
        r = plan.resources
        task = ray.remote(_run_job).options(num_cpus=r.cpu, num_gpus=r.gpu, max_retries=2)
        refs.append(task.remote(job, plan, device, int(r.cpu)))
    for i, ref in enumerate(refs, 1):
        done = ray.get(ref)
        print(f"[prep] {i}/{len(refs)} done ({done})", file=sys.stdout, flush=True)
    return len(refs)
