"""``distillery sweep``: run a sweep config on Ray Tune, tracked in MLflow, resumable."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, TextIO

from distillery.methods.data import load_dataset
from distillery.methods.distill.init import check_ipc
from distillery.methods.errors import UserError
from distillery.methods.schema import Tag

from .config import SweepConfig
from .grid import TrialPlan, expand, identity, locations
from .redact import redact, redacted
from .store import TrialStore
from .tracking import SweepTracker, flatten


@dataclass
class SweepOutcome:
    plans: list[TrialPlan]
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)  # hash -> result record
    failed: dict[str, str] = field(default_factory=dict)  # hash -> reason
    skipped: int = 0  # finished before this invocation
    parent_run_id: str | None = None
    interrupted: bool = False  # Ctrl-C: running trials were stopped (their checkpoints kept) for a --resume

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted and len(self.finished) == len(self.plans)


def sweep_hash(plans: list[TrialPlan]) -> str:
    return hashlib.sha256(json.dumps(sorted(p.trial_hash for p in plans)).encode()).hexdigest()[:16]


def trial_table(plans: list[TrialPlan], store: TrialStore) -> str:
    done = store.done_hashes()
    started = store.started_hashes()
    header = f"{'#':>3} {'name':<28} {'hash':<16} {'dataset':<12} {'method':<9} {'ipc':>4} {'seed':>4} {'cpu':>4} {'gpu':>5} {'state':<9}"
    lines = [header, "-" * len(header)]
    for i, p in enumerate(plans):
        state = "done" if p.trial_hash in done else ("partial" if p.trial_hash in started else "new")
        s = p.spec
        lines.append(f"{i:>3} {p.name:<28} {p.trial_hash:<16} {s.dataset:<12} {s.method:<9} {s.ipc if not p.full_data else 'all':>4} {s.seed:>4} {p.resources.cpu:>4g} {p.resources.gpu:>5g} {state:<9}")
    evals = sum(p.spec.n_models * len(p.spec.archs) for p in plans)
    lines.append(f"{len(plans)} trials, {evals} evaluation models")
    return "\n".join(lines)


def check_data(config: SweepConfig, plans: list[TrialPlan]) -> None:
    """Load every dataset once on the driver: bad roots fail before Ray starts, IPCs are checked
    against class sizes, and the decoded-tensor cache of this node is warm for the trials."""
    for entry in config.datasets:
        ds_plans = [p for p in plans if p.spec.dataset == entry.name]
        data = load_dataset(entry.name, ds_plans[0].spec.data)
        for p in ds_plans:
            if not p.full_data:
                try:
                    check_ipc(data, p.spec.ipc)
                except UserError as exc:
                    raise UserError(f"ipcs: {exc}") from None


def run_sweep(config: SweepConfig, resume: bool = False, address: str | None = None, out: TextIO = sys.stdout) -> SweepOutcome:
    plans = expand(config)
    check_data(config, plans)  # before MLflow and Ray: bad data input costs seconds and leaves nothing behind
    from .capacity import check_capacity, plan_requests
    from .driverlock import driver_lock
    from .manifest import check_resume, write_manifest

    check_capacity(plan_requests(plans), address, config.num_cpus, config.num_gpus)
    with driver_lock(config.storage_path, config.name, "sweep"):
        by_hash = {p.trial_hash: p for p in plans}
        store = TrialStore(config.storage_path, config.name)
        tracker = SweepTracker(config.tracking_uri, config.name)
        outcome = SweepOutcome(plans)

        previous = store.started_hashes() & set(by_hash)
        if not resume and (previous or tracker.existing_parent()):
            raise UserError(
                f"sweep {config.name!r} already exists ({len(store.done_hashes() & set(by_hash))} finished trials under "
                f"{store.root}, MLflow experiment {config.name!r} at {redact(config.tracking_uri)}); pass --resume to continue it, "
                "or give the sweep a new name (--set name=...). Nothing was overwritten."
            )
        added = check_resume(config, plans, out) if resume else []
        outcome.parent_run_id = tracker.start_parent(sweep_hash(plans), resume)
        tracker.client.set_tag(outcome.parent_run_id, Tag.STORAGE_PATH, config.storage_path)  # `analyze` writes beside it
        write_manifest(config, plans)
        if added:
            tracker.client.set_tag(outcome.parent_run_id, Tag.CELLS_ADDED,
                                   f"{len(added)} on {_dt.datetime.now().isoformat(timespec='seconds')}: {', '.join(added[:20])}")
        with tracker.parent_fails_on_error():
            _run_trials(config, plans, resume, address, tracker, store, outcome, out)
        return outcome


def _run_trials(config: SweepConfig, plans: list[TrialPlan], resume: bool, address: str | None, tracker: SweepTracker,
                store: TrialStore, outcome: SweepOutcome, out: TextIO) -> None:
    by_hash = {p.trial_hash: p for p in plans}
    if not resume or tracker.client.list_artifacts(outcome.parent_run_id) == []:
        tracker.client.log_dict(outcome.parent_run_id, redacted(json.loads(config.model_dump_json())), "sweep.yaml")

    # trials that finished earlier: never rerun; make sure each has its one FINISHED run
    for h in store.done_hashes() & set(by_hash):
        outcome.finished[h] = _reconcile_finished(tracker, store, by_hash[h])
    outcome.skipped = len(outcome.finished)
    todo = [p for p in plans if p.trial_hash not in outcome.finished]
    print(f"sweep {config.name!r}: {len(plans)} trials, {outcome.skipped} already finished, {len(todo)} to run", file=out, flush=True)
    print(f"tracking: {redact(config.tracking_uri)} (experiment {config.name!r}); trial store: {store.root}", file=out, flush=True)

    if todo:
        from .raycluster import connect

        connect(address, config.num_cpus, config.num_gpus)
        from .prep import run_prep_jobs

        run_prep_jobs([(p.spec, p.resources) for p in todo], config.device)
        _run_tune(config, todo, plans, tracker, store, outcome, out)

    for p in plans:  # final pass: whatever finished is logged, whatever did not is a failure
        h = p.trial_hash
        if h not in outcome.finished and store.is_done(h):
            outcome.finished[h] = _reconcile_finished(tracker, store, p)
        if h not in outcome.finished:
            error = outcome.failed.get(h) or _first_line(store.read_error(h))
            if error is None and outcome.interrupted:  # stopped by Ctrl-C, not failed: --resume continues it
                if h in tracker.runs and tracker.runs[h][1] not in ("FAILED", "KILLED"):
                    tracker.fail(h, INTERRUPTED, status="KILLED")
                continue
            reason = error or "did not finish (interrupted)"
            outcome.failed[h] = reason
            if h in tracker.runs and tracker.runs[h][1] != "FAILED":
                tracker.fail(h, store.read_error(h) or reason)
    tracker.end_parent(outcome.ok, {"trials_finished": len(outcome.finished), "trials_failed": len(outcome.failed)},
                       interrupted=outcome.interrupted)


INTERRUPTED = "interrupted (Ctrl-C); run the same command with --resume to continue from its checkpoint"


class _CtrlC:
    """Turns the first Ctrl-C into a graceful stop of the Tune run, and remembers it.

    Tune's own SIGINT handler also stops gracefully, but the driver cannot tell afterwards that
    the run was interrupted (``fit`` returns as if it had finished), so stopped trials looked like
    failures and the analysis ran on half a sweep. Here Tune's handler is switched off for the
    run, the first Ctrl-C sets a flag that a ``Stopper`` hands to Tune (which stops every trial;
    each keeps its last checkpoint), and a second Ctrl-C raises KeyboardInterrupt as usual."""

    def __init__(self) -> None:
        from ray import tune

        flag = self

        class _Stop(tune.Stopper):
            def __call__(self, trial_id: str, result: dict) -> bool:
                return False

            def stop_all(self) -> bool:
                return flag.interrupted

        self.interrupted = False
        self.stopper = _Stop()

    @contextlib.contextmanager
    def catching(self, out: TextIO) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(sig: int, frame: Any) -> None:
            self.interrupted = True
            signal.signal(signal.SIGINT, previous)  # a second Ctrl-C aborts at once
            print("\ninterrupted: stopping the running trials (their checkpoints are kept); Ctrl-C again to abort now",
                  file=out, flush=True)

        saved_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
            if saved_env is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = saved_env


def _first_line(text: str | None) -> str | None:
    return text.strip().splitlines()[0] if text and text.strip() else None


def _reconcile_finished(tracker: SweepTracker, store: TrialStore, plan: TrialPlan) -> dict[str, Any]:
    record = store.read_result(plan.trial_hash)
    if tracker.runs.get(plan.trial_hash, ("", ""))[1] != "FINISHED":
        tracker.trial_run(plan.name, plan.tags(), run_params(plan))
        tracker.log_curve(tracker.runs[plan.trial_hash][0], "loss", [tuple(x) for x in record.get("losses", [])])
        tracker.finish(plan.trial_hash, store.result_dir(plan.trial_hash), record)
    return record


def _run_tune(config: SweepConfig, todo: list[TrialPlan], plans: list[TrialPlan], tracker: SweepTracker, store: TrialStore, outcome: SweepOutcome, out: TextIO) -> None:
    from ray import tune
    from ray.tune import FailureConfig, PlacementGroupFactory

    from .progress import ProgressView
    from .trainable import SweepContext, sweep_trial

    by_hash = {p.trial_hash: p for p in todo}
    context = SweepContext(config.name, config.storage_path, config.device, config.checkpoint_every_s, by_hash)

    def resources(cfg: dict[str, Any]) -> PlacementGroupFactory:
        r = by_hash[cfg["trial_hash"]].resources
        return PlacementGroupFactory([{"CPU": r.cpu, "GPU": r.gpu}])

    trainable = tune.with_resources(tune.with_parameters(sweep_trial, context=context), resources=resources)
    ctrl_c = _CtrlC()
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    callbacks = [
        JsonLoggerCallback(),
        CSVLoggerCallback(),
        TrackingCallback(tracker, store, by_hash, outcome),
        ProgressView(total=len(plans), already_done=outcome.skipped, stream=None if out is sys.stdout else out,
                     names={p.trial_hash: p.name for p in plans}),
    ]
    tuner = tune.Tuner(
        trainable,
        param_space={"trial_hash": tune.grid_search([p.trial_hash for p in todo])},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=config.max_concurrent_trials,
            reuse_actors=True,  # skip a process start + torch import per trial
            trial_name_creator=lambda t: by_hash[t.config["trial_hash"]].name,
            trial_dirname_creator=lambda t: f"{by_hash[t.config['trial_hash']].name}-{t.config['trial_hash'][:8]}",
        ),
        run_config=tune.RunConfig(
            name=f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(Path(config.storage_path) / config.name / "tune"),
            failure_config=FailureConfig(max_failures=config.max_failures),
            verbose=0,
            callbacks=callbacks,
            stop=ctrl_c.stopper,
        ),
    )
    # Tune lists every trial that never reported ("Failed to fetch metrics ...") when its run ends
    # early; the trial store, not Tune's analysis, says what finished, so that list is only noise
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    with ctrl_c.catching(out):
        tuner.fit()
    outcome.interrupted = ctrl_c.interrupted


def run_params(plan: TrialPlan) -> dict[str, str]:
    """The trial run's MLflow params: its flattened identity. The full-data baseline cell has no
    IPC (null in its identity); its param says ``all``, as the console and the dry-run table do, and
    its ``distillery.ipc`` tag gets the per-class count it trained on when it finishes."""
    params = {**flatten(identity(plan.spec)), **{k: str(v) for k, v in locations(plan.spec).items()}}
    if plan.full_data:
        params["ipc"] = "all"
    return params


from .run_tracking import RunTracking  # noqa: E402  (imports Ray: Tune callbacks need the base class)


class TrackingCallback(RunTracking):
    """A sweep trial's MLflow run: its identity as params, the loss curve, the stored record."""

    def __init__(self, tracker: SweepTracker, store: TrialStore, plans: dict[str, TrialPlan], outcome: SweepOutcome) -> None:
        super().__init__(tracker)
        self.store, self.plans, self.outcome = store, plans, outcome

    def key(self, trial: Any) -> str:
        return trial.config["trial_hash"]

    def describe(self, trial: Any) -> tuple[str, dict[str, str], dict[str, str]]:
        plan = self.plans[self.key(trial)]
        return plan.name, plan.tags(), run_params(plan)

    def started(self, run_id: str, trial: Any) -> None:
        plan = self.plans[self.key(trial)]
        self.tracker.log_metrics(run_id, {"resources/cpu": plan.resources.cpu, "resources/gpu": plan.resources.gpu})

    def result(self, run_id: str, trial: Any, result: dict) -> None:
        points = result.get("loss_points") or []
        if points:
            self.tracker.log_curve(run_id, "loss", [tuple(p) for p in points])

    def completed(self, trial: Any) -> None:
        h = self.key(trial)
        if self.store.is_done(h):  # otherwise the sweep's final pass records why it did not finish
            record = self.store.read_result(h)
            self.outcome.finished[h] = record
            self.ensure_started(trial)
            self.tracker.finish(h, self.store.result_dir(h), record)

    def failure_reason(self, trial: Any) -> str:
        return self.store.read_error(self.key(trial)) or f"trial errored (see {getattr(trial, 'local_path', '')})"

    def note_failure(self, trial: Any, reason: str) -> None:
        self.outcome.failed[self.key(trial)] = _first_line(reason) or "error"
