"""What a sweep will cost on this machine, before it starts (``distillery sweep CONFIG --dry-run --estimate``).

Each distinct trial shape (the trial identity minus its seed: seeds cost the same) is calibrated
once with ``methods.estimate.estimate_trial`` (2 timed iterations, 2 timed evaluation epochs) on
the driver, with the thread count a trial gets (``resources.cpu``), so the figure is this machine's
and the config's, not a table's. Trials then run ``slots`` at a time (the CPUs/GPUs Ray has divided
by each trial's share), in plan order, each taking the next free slot: the wall-time estimate
simulates exactly that. Each shape is calibrated alone, so trials sharing a GPU (``gpu: 0.25``) are
assumed not to slow one another: on a GPU the wall time is a lower bound. A method whose
preparation is missing (MTT's expert buffer) is not calibrated, because calibrating would build it:
the estimate says so instead of hiding the cost.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import os
import platform
from pathlib import Path
from typing import Callable, Sequence

import torch

from distillery.methods.data.cache import cache_root
from distillery.methods.estimate import TrialEstimate, estimate_trial
from distillery.methods.utils.atomic import atomic_write_json

from .config import SweepConfig
from .eta import format_seconds
from .grid import TrialPlan, trial_hash
from .worker import trial_device


@dataclasses.dataclass(frozen=True)
class SweepEstimate:
    per_trial: dict[str, TrialEstimate]  # trial hash -> estimate
    missing: dict[str, str]  # trial hash -> why it was not estimated
    slots: int  # trials that run at once
    wall_seconds: float  # estimated trials' wall time, run ``slots`` at a time
    cached_shapes: int = 0  # trial shapes whose calibration came from the cache
    devices: tuple[str, ...] = ()  # what the calibrations ran on, e.g. ('cpu (2 cores)',)

    @property
    def trial_seconds(self) -> float:
        return sum(e.total_seconds for e in self.per_trial.values())


def shape_key(plan: TrialPlan) -> str:
    """Trials that cost the same: the trial hash with the seed fixed, and the per-trial thread count."""
    return f"{trial_hash(dataclasses.replace(plan.spec, seed=0))}-{max(1, int(plan.resources.cpu))}"


def concurrent_slots(config: SweepConfig, plans: Sequence[TrialPlan]) -> int:
    """How many trials Ray runs at once on a local instance with this config's resources."""
    if not plans:
        return 0
    cpus = config.num_cpus or os.cpu_count() or 1
    need_cpu = max(p.resources.cpu for p in plans)
    slots = int(cpus // need_cpu) if need_cpu > 0 else len(plans)
    need_gpu = max(p.resources.gpu for p in plans)
    if need_gpu > 0:
        gpus = config.num_gpus if config.num_gpus is not None else torch.cuda.device_count()
        slots = min(slots, int(gpus // need_gpu))
    if config.max_concurrent_trials:
        slots = min(slots, config.max_concurrent_trials)
    return max(0, min(slots, len(plans)))


def _missing_prep(plan: TrialPlan) -> str | None:
    method = plan.spec.method_impl()
    config = plan.spec.resolved_method_config()
    jobs = [j for j in method.prep_jobs(plan.spec.dataset, plan.spec.data, config) if not method.job_done(j)]
    if jobs:
        return (f"{plan.spec.method} needs {len(jobs)} preparation job(s) first ({jobs[0].description}, ...); "
                "they run at the start of the sweep (calibrating would build them)")
    return None


def calibration_cache_path() -> Path:
    return cache_root(None) / "calibration.json"


def _machine(device: str) -> str:
    """What a calibration is valid for: the same host, cores, torch and device."""
    return f"{platform.node()}|{os.cpu_count()} cpus|torch {torch.__version__}|{device}"


def calibration_key(config: SweepConfig, plan: TrialPlan) -> tuple[str, str]:
    """(cache key, device label) of ``plan``'s calibration: its shape on the device it will run on."""
    label = device_label(trial_device(plan.resources, config.device))
    return f"{shape_key(plan)}|{_machine(label)}", label


def cached_calibrations(config: SweepConfig, plans: Sequence[TrialPlan]) -> dict[str, TrialEstimate]:
    """Trial hash -> its cached calibration, for the plans that have one (nothing is measured)."""
    cache = _read_cache(calibration_cache_path())
    out = {}
    for p in plans:
        entry = cache.get(calibration_key(config, p)[0])
        if entry is not None:
            out[p.trial_hash] = TrialEstimate(**entry)
    return out


def _read_cache(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # missing or half-written: calibrate again, never fail the estimate
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, entries: dict[str, dict]) -> None:
    atomic_write_json(path, entries, indent=1, sort_keys=True)  # readers see the old file or the new one, never half of one


def device_label(device: torch.device) -> str:
    """'cpu (2 cores)' or 'cuda:0 (NVIDIA H100 80GB HBM3)': what the figures were measured on."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({os.cpu_count()} cores)"


def estimate_sweep(config: SweepConfig, plans: Sequence[TrialPlan], skip: set[str] = frozenset(),
                   on_shape: Callable[[TrialPlan, int, int, bool], None] | None = None,
                   recalibrate: bool = False) -> SweepEstimate:
    """Calibrate each trial shape once, or take it from the cache; ``skip``: hashes already
    finished (they cost nothing). Each shape is measured on the device its trials will get
    (``worker.trial_device``: a GPU trial on this machine's GPU when it has one, else the CPU),
    so a GPU config dry-run on a GPU box gives that GPU's figures. ``on_shape(plan, i, n, cached)``
    reports each shape."""
    todo = [p for p in plans if p.trial_hash not in skip]
    shapes: dict[str, TrialPlan] = {}
    for p in todo:
        shapes.setdefault(shape_key(p), p)
    cache_path = calibration_cache_path()
    cache = _read_cache(cache_path)
    by_shape: dict[str, TrialEstimate | str] = {}
    devices: set[str] = set()
    cached = 0
    threads = torch.get_num_threads()
    try:
        for i, (key, plan) in enumerate(shapes.items()):
            cache_key, label = calibration_key(config, plan)
            devices.add(label)
            entry = None if recalibrate else cache.get(cache_key)
            if on_shape is not None:
                on_shape(plan, i + 1, len(shapes), entry is not None)
            if entry is not None:
                by_shape[key] = TrialEstimate(**entry)
                cached += 1
                continue
            reason = _missing_prep(plan)
            if reason is not None:
                by_shape[key] = reason
                continue
            torch.set_num_threads(max(1, int(plan.resources.cpu)))
            by_shape[key] = estimate = estimate_trial(plan.spec, device=trial_device(plan.resources, config.device))
            cache = {**_read_cache(cache_path), cache_key: dataclasses.asdict(estimate)}
            _write_cache(cache_path, cache)  # after each shape: an interrupted estimate keeps what it measured
    finally:
        torch.set_num_threads(threads)
    per_trial = {p.trial_hash: e for p in todo if isinstance(e := by_shape[shape_key(p)], TrialEstimate)}
    missing = {p.trial_hash: e for p in todo if isinstance(e := by_shape[shape_key(p)], str)}
    slots = concurrent_slots(config, todo)
    return SweepEstimate(per_trial, missing, slots, _simulate([per_trial[p.trial_hash].total_seconds for p in todo
                                                                if p.trial_hash in per_trial], slots), cached,
                         tuple(sorted(devices)))


def _simulate(durations: Sequence[float], slots: int) -> float:
    """Wall time of running ``durations`` in order, each on the first free of ``slots`` slots."""
    if not durations or slots < 1:
        return 0.0
    free = [0.0] * min(slots, len(durations))
    for d in durations:
        start = heapq.heappop(free)
        heapq.heappush(free, start + d)
    return max(free)


def describe(est: SweepEstimate, plans: Sequence[TrialPlan]) -> str:
    """Per trial shape and in total, for the dry-run output."""
    names = {p.trial_hash: p.name for p in plans}
    source = f"; {est.cached_shapes} from the calibration cache" if est.cached_shapes else ""
    on = ", ".join(est.devices) or "this machine"
    lines = ["", f"Estimated cost on {on} (calibrated: 2 iterations and 2 evaluation epochs per trial shape{source}):"]
    for h, e in est.per_trial.items():
        lines.append(f"  {names[h]:<28} distill ~{format_seconds(e.distill_seconds):>7}  evaluate ~{format_seconds(e.eval_seconds):>7}"
                     f"  total ~{format_seconds(e.total_seconds)}")
    for h, why in est.missing.items():
        lines.append(f"  {names[h]:<28} not estimated: {why}")
    lines.append(f"  {len(est.per_trial)} trials, ~{format_seconds(est.trial_seconds)} of trial time; {est.slots} at a time "
                 f"-> ~{format_seconds(est.wall_seconds)} wall"
                 + (f" (plus {len(est.missing)} trial(s) not estimated)" if est.missing else "")
                 + "; Ray start-up, MLflow and the analysis add about a minute")
    return "\n".join(lines)
