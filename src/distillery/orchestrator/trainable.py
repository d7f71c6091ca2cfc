"""The Ray Tune function trainable: one sweep trial, resumable from its hash-addressed checkpoint."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any

from distillery.methods.distill.base import Progress, SyntheticSet
from distillery.methods.eval import EvalProgress
from distillery.methods.schema import TrialSummary
from distillery.methods.trial import TrialResult, run_trial

from .artifacts import write_trial_artifacts
from .grid import TrialPlan, identity
from .store import TrialStore
from .worker import claim_resources, trial_data


@dataclass(frozen=True)
class SweepContext:
    """What every trial of a sweep needs besides its own plan (shipped once via tune.with_parameters)."""

    sweep_name: str
    storage_path: str
    device: str
    checkpoint_every_s: float
    plans: dict[str, TrialPlan]


def final_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """The last Tune report of a trial (docs/tracking-schema.md: 'Tune results directory')."""
    s = TrialSummary.from_dict(record["summary"])
    return {
        "done": True,
        "trial_hash": record["trial_hash"],
        "dataset": s.dataset, "method": s.method, "ipc": record["ipc"], "seed": s.seed,
        "mean_acc": s.mean_acc, "class_var": s.class_var, "worst_class_acc": s.worst_class_acc,
        "distill_seconds": s.distill_seconds, "eval_seconds": s.eval_seconds,
        "per_class": {arch: [list(m.per_class) for m in a.per_model] for arch, a in s.archs.items()},
        "class_names": list(s.class_names),
        "soft_labels": s.soft_labels,
        "storage_ipc": s.storage_ipc,
        "synthetic_images": s.synthetic_images,
    }


def sweep_trial(config: dict[str, Any], context: SweepContext) -> None:
    from ray import tune

    plan = context.plans[config["trial_hash"]]
    store = TrialStore(context.storage_path, context.sweep_name)
    h = plan.trial_hash
    if store.is_done(h):  # finished earlier (e.g. just before a driver crash): never rerun
        tune.report(final_metrics(store.read_result(h)))
        return
    try:
        record = _run(plan, store, context)
    except (SystemExit, KeyboardInterrupt):  # stopped (Ctrl-C on the driver), not failed: no error to record
        raise
    except BaseException as exc:
        store.write_error(h, f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
        raise
    tune.report(final_metrics(record))


def _run(plan: TrialPlan, store: TrialStore, context: SweepContext) -> dict[str, Any]:
    """The trial from its checkpoint. An unreadable checkpoint is set aside by the store; one that
    loads but does not fit the trial (another layout, a foreign state) is set aside here and the
    trial restarts from the beginning, once, with a warning."""
    h = plan.trial_hash
    started_at = time.time()
    store.clear_error(h)
    dev = claim_resources(plan.resources, context.device)
    data = trial_data(plan.spec)
    ckpt = store.load_checkpoint(h) or {}
    if not ckpt:
        return _attempt(plan, store, context, dev, data, {}, started_at)
    try:
        return _attempt(plan, store, context, dev, data, ckpt, started_at)
    except Exception as exc:  # noqa: BLE001 - a checkpoint that loads but does not fit must not fail every retry
        store.set_aside(h, f"loaded but did not fit the trial ({type(exc).__name__}: {exc})", kind="unfit")
        return _attempt(plan, store, context, dev, data, {}, started_at)  # once: a second failure is the trial's own


def _attempt(plan: TrialPlan, store: TrialStore, context: SweepContext, dev: Any, data: Any, ckpt: dict[str, Any],
             started_at: float) -> dict[str, Any]:
    """One run of the trial from ``ckpt`` (empty: from the beginning)."""
    from ray import tune

    h = plan.trial_hash
    losses: list[list[float]] = list(ckpt.get("losses", []))
    last_save = time.monotonic()
    last_report = 0.0
    pending: list[list[float]] = []
    resumed_from = int(ckpt.get("iteration", 0))

    def on_progress(p: Progress) -> None:
        nonlocal last_save, last_report
        if p.phase != "distill":  # a preparation phase (e.g. MTT experts built in the trial): progress only
            now = time.monotonic()
            if now - last_report >= 1.0 or p.iteration == p.total:
                tune.report({"phase": p.phase, "iteration": p.iteration, "total": p.total, "loss_points": [], "done": False})
                last_report = now
            return
        if p.loss is not None:
            point = [p.iteration, float(p.loss)]
            losses.append(point)
            pending.append(point)
        now = time.monotonic()
        if now - last_save >= context.checkpoint_every_s and p.iteration < p.total:
            store.save_checkpoint(h, {"phase": "distill", "iteration": p.iteration, "state": p.state(), "losses": losses})
            last_save = now
        if now - last_report >= 1.0 or p.iteration == p.total:
            tune.report({"phase": "distill", "iteration": p.iteration, "total": p.total, "loss_points": list(pending), "done": False})
            pending.clear()
            last_report = now

    def on_eval(arch: str, p: EvalProgress) -> None:
        nonlocal last_report
        now = time.monotonic()
        if now - last_report >= 2.0 or p.done == p.total:
            tune.report({"phase": f"eval:{arch}", "iteration": p.done, "total": p.total, "detail": p.label(), "loss_points": [], "done": False})
            last_report = now

    synset = None
    distill_seconds_before = 0.0
    if ckpt.get("phase") == "evaluate":
        synset = SyntheticSet.from_state_dict(ckpt["synset"])
        distill_seconds_before = float(ckpt.get("distill_seconds", 0.0))
    result = run_trial(
        plan.spec, device=dev, data=data, progress_callback=on_progress,
        resume_state=ckpt.get("state") if ckpt.get("phase") == "distill" else None,
        synset=synset, eval_callback=on_eval,
    )
    distill_seconds = result.distill_seconds + distill_seconds_before
    if synset is None and not result.synset.full_data:  # the full-data 'set' costs nothing to rebuild
        store.save_checkpoint(h, {"phase": "evaluate", "losses": losses, "distill_seconds": distill_seconds, "synset": result.synset.state_dict()})
    result = dataclasses.replace(result, distill_seconds=distill_seconds)
    record = _record(plan, result, losses, resumed_from, started_at)
    staging = store.staging_dir(h)
    write_trial_artifacts(staging, result, data, record)
    store.publish(h, staging)
    return record


def _record(plan: TrialPlan, result: TrialResult, losses: list[list[float]], resumed_from: int, started_at: float) -> dict[str, Any]:
    summary = result.summary().to_dict()
    # the baseline cell has no IPC; its record (and the MLflow tag) carry the per-class count it trained on
    ipc = int(result.synset.meta["ipc"]) if plan.full_data else plan.spec.ipc
    return {
        "trial_hash": plan.trial_hash,
        "name": plan.name,
        "ipc": ipc,
        "full_data": plan.full_data,
        "config": identity(plan.spec),
        "resources": plan.resources.model_dump(),
        "summary": summary,
        "losses": losses,
        "resumed_from_iteration": resumed_from,
        "started_at": started_at,
        "node": socket.gethostname(),
        "pid": os.getpid(),
        "finished_at": time.time(),
    }
