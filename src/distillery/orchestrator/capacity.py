"""Can any node hold a trial? Checked before anything waits on Ray.

Ray Tune only logs a warning for a trial that asks for more CPUs or GPUs than any node has, and a
Ray task that no node can hold (a preparation job) waits forever. So every distinct per-trial
request of a sweep or tuning run is compared with the nodes it will run on: this machine for a
local run (``num_cpus``/``num_gpus`` when the config sets them, else its cores and CUDA devices),
the live nodes of the cluster after ``--address`` connects. A request no node can hold is a
UserError naming the trials and the fix, raised before a trial is queued.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

from distillery.methods.errors import UserError


def local_nodes(num_cpus: int | None, num_gpus: float | None) -> list[dict[str, float]]:
    """The one node a local Ray instance will have."""
    if num_gpus is None:
        try:
            import torch

            num_gpus = float(torch.cuda.device_count())
        except ImportError:  # pragma: no cover - torch is a core dependency
            num_gpus = 0.0
    return [{"CPU": float(num_cpus or os.cpu_count() or 1), "GPU": float(num_gpus)}]


def cluster_nodes() -> list[dict[str, float]]:
    """The live nodes of the Ray cluster this process is connected to."""
    import ray

    return [{"CPU": float(n["Resources"].get("CPU", 0.0)), "GPU": float(n["Resources"].get("GPU", 0.0))}
            for n in ray.nodes() if n.get("Alive")]


def check_fits(requests: Iterable[tuple[str, float, float]], nodes: Sequence[Mapping[str, float]], where: str) -> None:
    """``requests``: (trial name, cpu, gpu). Raise UserError if some request fits on no node."""
    misfits: dict[tuple[float, float], list[str]] = {}
    for name, cpu, gpu in requests:
        if not any(n["CPU"] >= cpu and n["GPU"] >= gpu for n in nodes):
            misfits.setdefault((cpu, gpu), []).append(name)
    if not misfits:
        return
    biggest_cpu = max((n["CPU"] for n in nodes), default=0.0)
    biggest_gpu = max((n["GPU"] for n in nodes), default=0.0)
    parts = []
    for (cpu, gpu), names in misfits.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        parts.append(f"cpu {cpu:g}, gpu {gpu:g} ({shown})")
    raise UserError(
        f"resources: no node of {where} can hold trials asking for " + "; ".join(parts)
        + f" (the largest node has {biggest_cpu:g} CPUs and {biggest_gpu:g} GPUs); lower resources.cpu / resources.gpu "
        "(or the matching resources.overrides), e.g. --set resources.gpu=0 on a machine without a GPU, or run on a "
        "cluster that has such a node (--address)"
    )


def plan_requests(plans: Sequence[Any]) -> list[tuple[str, float, float]]:
    """(name, cpu, gpu) of every trial of a sweep (``grid.TrialPlan``s)."""
    return [(p.name, p.resources.cpu, p.resources.gpu) for p in plans]


def check_capacity(requests: Sequence[tuple[str, float, float]], address: str | None, num_cpus: int | None,
                   num_gpus: float | None) -> None:
    """``check_fits`` against where the run will go: the cluster at ``address`` (or $RAY_ADDRESS),
    connecting to it, else this machine (nothing started)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        from .raycluster import connect

        connect(address, num_cpus, num_gpus)
        check_fits(requests, cluster_nodes(), f"the Ray cluster at {address}")
    else:
        check_fits(requests, local_nodes(num_cpus, num_gpus), "this machine (a local Ray instance)")
