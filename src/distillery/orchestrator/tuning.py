"""``distillery tune``: Optuna (TPE, one or two objectives) on Ray Tune, one study per
(dataset, method, IPC) cell, persisted in an RDB so ``--resume`` adds trials to the same study.

Objectives are measured on a validation split held out of the training data
(``DatasetOptions.validation_per_class``): tuning never sees the test split, so the test accuracy
a tuned sweep later reports is not selected on. Only the driver writes to Optuna (OptunaSearch's
ask/tell) and to MLflow (a Tune callback), so sqlite is safe for both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

import yaml

from distillery.methods.data import load_dataset
from distillery.methods.distill.base import Progress, get_method
from distillery.methods.distill.init import check_ipc
from distillery.methods.errors import UserError
from distillery.methods.schema import FAIRNESS_METRICS, Tag
from distillery.methods.trial import TrialSpec, run_trial
from distillery.methods.utils.atomic import atomic_write_json, atomic_write_text

from .config import DatasetEntry
from .grid import dataset_options, eval_config
from .redact import redact, redacted
from .tracking import HASH_TAG, SweepTracker, flatten
from .tune_config import TuneConfig

TUNE_KIND = "tune"
INTERRUPTED = "interrupted: the tuning driver stopped before this trial finished"


@dataclass(frozen=True)
class Cell:
    """One (dataset, method, IPC) cell: one Optuna study."""

    dataset: DatasetEntry
    method: str
    ipc: int
    params: dict[str, Any]  # fixed hyperparameters
    space: dict[str, Any]  # name -> ParamSpace
    #: the method's path options (MTT's buffer_dir) as the driver resolved them: a worker builds its
    #: trial's spec itself (it samples the parameters), and must not resolve them in its own environment
    locations: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.dataset.name}.{self.method}.ipc{self.ipc}"

    def study_name(self, config: TuneConfig) -> str:
        return f"{config.name}.{self.label}"

    def start_point(self) -> dict[str, Any] | None:
        """The starting config's values of the tuned options (when all are given in params)."""
        if not all(k in self.params for k in self.space):
            return None
        return {k: self.params[k] for k in self.space}


def cells(config: TuneConfig) -> list[Cell]:
    """Every (dataset, method, IPC) cell, with its method's locations resolved here, on the driver."""
    out = []
    for d in config.datasets:
        for method, entry in config.methods.items():
            for ipc in entry.ipcs or config.ipcs:
                cell = Cell(d, method, ipc, dict(entry.params), dict(entry.space))
                resolved = trial_spec(config, cell, cell.start_point() or {}).resolved_method_config()
                paths = {p: getattr(resolved, p) for p in get_method(method).path_options}
                out.append(dataclasses.replace(cell, locations=paths))
    return out


def trial_spec(config: TuneConfig, cell: Cell, params: dict[str, Any]) -> TrialSpec:
    """The trial a sampled configuration runs: evaluated on the validation split, never the test split."""
    data = dataclasses.replace(dataset_options(cell.dataset), validation_per_class=config.validation_per_class)
    return TrialSpec(
        dataset=cell.dataset.name, method=cell.method, ipc=cell.ipc, seed=config.seed,
        method_params={**cell.locations, **cell.params, **params}, archs=tuple(config.eval.archs), n_models=config.eval.models,
        eval=eval_config(config), data=data, arch_options={k: dict(v) for k, v in config.eval.arch_options.items()},
    )


def prep_needs(config: TuneConfig, todo: list[Cell]) -> list[tuple[TrialSpec, Any]]:
    """What the cells' trials need prepared (e.g. MTT's expert buffers on the training data minus
    the validation split), from each cell's fixed params and its starting point: built once, as
    parallel Ray tasks, before the first trial, exactly as a sweep does. A sampled value that changes
    what is needed (e.g. a larger ``max_start_epoch``) extends or builds its buffer in the trial."""
    return [(trial_spec(config, cell, cell.start_point() or {}), config.resources) for cell in todo]


def params_hash(cell: Cell, params: dict[str, Any]) -> str:
    blob = json.dumps({"cell": cell.label, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- the trainable (workers)
@dataclass(frozen=True)
class CellContext:
    config: TuneConfig
    cell: Cell


def objective_report(result: Any) -> dict[str, Any]:
    s = result.summary()
    return {
        **{k: s.metric(k) for k in FAIRNESS_METRICS},
        "eval_split": s.eval_split, "eval_samples": s.eval_samples,
        "distill_seconds": s.distill_seconds, "eval_seconds": s.eval_seconds,
    }


def tune_trial(params: dict[str, Any], context: CellContext) -> None:
    """Distill with the sampled hyperparameters and report the validation objectives."""
    from ray import tune

    from .worker import claim_resources, trial_data

    config, cell = context.config, context.cell
    device = claim_resources(config.resources, config.device)
    spec = trial_spec(config, cell, params)
    data = trial_data(spec)
    if data.eval_split != "validation":  # the guarantee this module exists for
        raise RuntimeError("tuning trial would be scored on the test split")
    rungs = config.early_stopping.rungs if config.early_stopping.enabled else 1
    run_in_rungs(spec, data, device, rungs, tune.report)


def run_in_rungs(spec: TrialSpec, data: Any, device: Any, rungs: int, report: Callable[[dict[str, Any]], None]) -> None:
    """Distill and evaluate, reporting after each of ``rungs`` equal slices of the iterations (one
    report when rungs == 1). Each slice resumes from the previous slice's state, which the methods
    guarantee equals an uninterrupted run, so a trial that early stopping lets finish ends with
    exactly the set (and score) of a plain trial."""
    if rungs == 1:
        report({**objective_report(run_trial(spec, device=device, data=data)), "rung": 1, "done": True})
        return
    full = spec.resolved_method_config()
    total = full.iterations
    # every resolved option is pinned, so values derived from ``iterations`` (e.g. MTT's expert
    # count) stay those of the full run and only the stopping point changes between rungs
    pinned = dataclasses.asdict(full)
    state: dict[str, Any] | None = None
    for r in range(1, rungs + 1):
        stop = math.ceil(total * r / rungs)
        last: dict[str, Progress] = {}
        rung_spec = dataclasses.replace(spec, method_params={**pinned, "iterations": stop})

        def keep(p: Progress) -> None:
            if p.phase == "distill":
                last["p"] = p

        result = run_trial(rung_spec, device=device, data=data, progress_callback=keep, resume_state=state)
        state = last["p"].state() if "p" in last else state
        report({**objective_report(result), "rung": r, "iterations": stop, "done": r == rungs})


# --------------------------------------------------------------------------- the driver
@dataclass
class CellOutcome:
    cell: Cell
    study_name: str
    n_trials: int = 0  # completed trials in the study after this invocation
    added: int = 0  # trials this invocation ran
    best: list[dict[str, Any]] = field(default_factory=list)  # best (one) or Pareto-optimal trials
    files: list[Path] = field(default_factory=list)
    failed: int = 0


def run_tuning(config: TuneConfig, resume: bool = False, address: str | None = None, out: TextIO = sys.stdout) -> list[CellOutcome]:
    """Tune every cell; one driver at a time per run name (``driverlock``), so a second ``tune
    --resume`` cannot mark the live driver's running Optuna trials FAIL."""
    from .driverlock import driver_lock

    with driver_lock(config.storage_path, config.name, "tuning"):
        return _run_tuning_locked(config, resume, address, out)


def _run_tuning_locked(config: TuneConfig, resume: bool, address: str | None, out: TextIO) -> list[CellOutcome]:
    import optuna

    todo = cells(config)
    storage = optuna.storages.RDBStorage(config.storage)
    existing = set(optuna.study.get_all_study_names(storage))
    clash = [c.study_name(config) for c in todo if c.study_name(config) in existing]
    if clash and not resume:
        raise UserError(
            f"tuning {config.name!r} already has Optuna studies {clash} in {redact(config.storage)}; pass --resume to add "
            "trials to them, or give the run a new name (--set name=...). Nothing was changed."
        )
    for entry in config.datasets:  # bad roots or too-small classes fail before Ray and MLflow start
        data = load_dataset(entry.name, dataclasses.replace(dataset_options(entry), validation_per_class=config.validation_per_class))
        for c in todo:
            if c.dataset.name == entry.name:
                try:
                    check_ipc(data, c.ipc)
                except UserError as exc:
                    raise UserError(f"ipcs: {exc}") from None
    from .capacity import check_capacity  # a trial no node can hold would wait forever

    check_capacity([(c.study_name(config), config.resources.cpu, config.resources.gpu) for c in todo], address,
                   config.num_cpus, config.num_gpus)

    tracker = SweepTracker(config.tracking_uri, config.name)
    parent = tracker.start_parent(_config_hash(config), resume, kind=TUNE_KIND)
    with tracker.parent_fails_on_error():
        return _run_cells(config, todo, storage, tracker, parent, out, address, resume)


def _run_cells(config: TuneConfig, todo: list[Cell], storage: Any, tracker: SweepTracker, parent: str, out: TextIO,
               address: str | None, resume: bool) -> list[CellOutcome]:
    close_interrupted_runs(tracker)
    if not resume or not tracker.client.list_artifacts(parent):
        tracker.client.log_dict(parent, redacted(json.loads(config.model_dump_json())), "tune.yaml")
    from .raycluster import connect

    connect(address, config.num_cpus, config.num_gpus)
    from .prep import run_prep_jobs

    run_prep_jobs(prep_needs(config, todo), config.device)
    out_dir = Path(config.storage_path) / config.name / "tuning"
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    ok = True
    for cell in todo:
        outcome = _run_cell(config, cell, storage, tracker, out_dir, out)
        outcomes.append(outcome)
        ok = ok and outcome.n_trials > 0
    outcomes_files = _export(config, outcomes, out_dir)
    for path in outcomes_files:
        tracker.client.log_artifact(parent, str(path))
    for o in outcomes:
        for path in o.files:
            tracker.client.log_artifact(parent, str(path), artifact_path=o.cell.label)
    tracker.end_parent(ok, {"cells": len(outcomes), "trials_completed": sum(o.n_trials for o in outcomes)})
    return outcomes


def close_interrupted_runs(tracker: SweepTracker) -> list[str]:
    """Trial runs a killed driver left RUNNING become FAILED with the reason (never reused: the
    resumed run asks Optuna for new trials)."""
    stale = [key for key, (_, status) in tracker.runs.items() if status == "RUNNING"]
    for key in stale:
        tracker.fail(key, INTERRUPTED)
    return stale


def _config_hash(config: TuneConfig) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def prepare_study(config: TuneConfig, cell: Cell, storage: Any) -> Any:
    """Create or load the cell's study, close trials a killed run left RUNNING, enqueue the start."""
    import optuna
    from optuna.trial import TrialState

    name = cell.study_name(config)
    directions = ["maximize" if m == "max" else "minimize" for m in config.objectives.values()]
    study = optuna.create_study(storage=storage, study_name=name, directions=directions, load_if_exists=True)
    if [d.name.lower() for d in study.directions] != directions:
        raise UserError(f"Optuna study {name!r} was created with other objectives; use a new name (--set name=...)")
    study_id = storage.get_study_id_from_name(name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # a driver died mid-trial: record it, never reuse it
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_system_attr(trial_id, "fail_reason", INTERRUPTED)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    study.set_user_attr("objectives", dict(config.objectives))
    study.set_user_attr("evaluated_on", f"validation split: {config.validation_per_class} training images per class held out")
    start = cell.start_point()
    if start is not None and not study.trials:
        study.enqueue_trial(start)  # the starting config is trial 0: the baseline the search must beat
    return study


def _run_cell(config: TuneConfig, cell: Cell, storage: Any, tracker: SweepTracker, out_dir: Path, out: TextIO) -> CellOutcome:
    import optuna
    from optuna.samplers import TPESampler
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    study = prepare_study(config, cell, storage)
    before = len([t for t in study.trials if t.state != optuna.trial.TrialState.WAITING])  # the enqueued start is not run yet
    metrics, modes = list(config.objectives), list(config.objectives.values())
    single = len(metrics) == 1
    budget = config.trials or 0
    # TPE's random start-up shrinks with small budgets; the seed moves on with the study so a resumed
    # run does not redraw the points its first invocation already tried
    sampler = TPESampler(n_startup_trials=max(2, min(10, budget // 3 or 10)), seed=config.seed * 100_003 + before)
    searcher = EarlyStopAwareOptunaSearch(
        space={k: s.distribution() for k, s in cell.space.items()},
        metric=metrics[0] if single else metrics, mode=modes[0] if single else modes,
        sampler=sampler, study_name=cell.study_name(config), storage=storage,
        rungs=config.early_stopping.rungs if config.early_stopping.enabled else 1,
    )
    scheduler = None
    if config.early_stopping.enabled:
        from ray.tune.schedulers import ASHAScheduler

        es = config.early_stopping
        scheduler = ASHAScheduler(metric=metrics[0], mode=modes[0], time_attr="rung", max_t=es.rungs, grace_period=1, reduction_factor=es.reduction_factor)
    print(f"[tune] {cell.label}: study {cell.study_name(config)!r} has {before} trials; adding "
          f"{config.trials if config.trials else 'as many as fit'} trials{f' within {config.time_budget_s:g}s' if config.time_budget_s else ''}; "
          f"objectives {', '.join(f'{m} ({d})' for m, d in config.objectives.items())} on the validation split", file=out, flush=True)

    callback = TuneTracking(tracker, cell, config)
    r = config.resources
    trainable = tune.with_resources(tune.with_parameters(tune_trial, context=CellContext(config, cell)), {"cpu": r.cpu, "gpu": r.gpu})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=config.trials or -1,
            time_budget_s=config.time_budget_s, max_concurrent_trials=config.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(
            name=f"{cell.label}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(Path(config.storage_path) / config.name / "tune"),
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
            verbose=0, callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), callback],
        ),
    )
    tuner.fit()

    study = optuna.load_study(study_name=cell.study_name(config), storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    outcome = CellOutcome(cell, cell.study_name(config), n_trials=len(done), added=len(study.trials) - before, failed=callback.failed)
    if not done:
        print(f"[tune] {cell.label}: no trial completed", file=out, flush=True)
        return outcome
    best = [study.best_trial] if single else list(study.best_trials)
    outcome.best = [{"number": t.number, "params": dict(t.params), "values": dict(zip(metrics, t.values))} for t in best]
    outcome.files = _cell_files(study, cell, metrics, out_dir)
    return outcome


def _cell_files(study: Any, cell: Cell, metrics: list[str], out_dir: Path) -> list[Path]:
    """Trials table, the Pareto front (or optimisation history) and parameter importances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    files: list[Path] = []
    table = out_dir / f"{cell.label}_trials.csv"
    study.trials_dataframe().to_csv(table, index=False)
    files.append(table)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        try:
            if len(metrics) > 1:
                ax = ovm.plot_pareto_front(study, target_names=metrics)
                name = "pareto"
            else:
                ax = ovm.plot_optimization_history(study, target_name=metrics[0])
                name = "history"
            path = out_dir / f"{cell.label}_{name}.png"
            ax.figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(ax.figure)
            files.append(path)
        except Exception as exc:  # a plot must not lose the study's results
            print(f"[tune] {cell.label}: plot skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
        importances: dict[str, dict[str, float]] = {}
        for i, m in enumerate(metrics):
            try:
                imp = optuna.importance.get_param_importances(study, target=lambda t, i=i: t.values[i])
                importances[m] = {k: float(v) for k, v in imp.items()}
            except Exception as exc:  # e.g. too few completed trials
                importances[m] = {}
                print(f"[tune] {cell.label}: importances for {m} skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
    path = out_dir / f"{cell.label}_importances.json"
    atomic_write_json(path, importances, indent=2)
    files.append(path)
    return files


def _export(config: TuneConfig, outcomes: list[CellOutcome], out_dir: Path) -> list[Path]:
    """Ready-to-run sweep YAMLs: one with every cell's best config (single objective), or one per
    Pareto-optimal config (several objectives: a sweep has one config per method and IPC)."""
    written: list[Path] = []
    header = (
        f"# written by `distillery tune` ({config.name}); objectives {dict(config.objectives)} were measured on a\n"
        f"# validation split ({config.validation_per_class} training images per class held out), never the test split.\n"
        "# eval and seeds are the tuning's (cheap) settings: raise eval.models/epochs and seeds for the full protocol.\n"
        "# Run: distillery sweep PATH\n"
    )

    def write(name: str, chosen: list[tuple[Cell, dict[str, Any]]]) -> Path:
        methods: dict[str, Any] = {}
        for cell, params in chosen:
            entry = methods.setdefault(cell.method, {"params": dict(cell.params), "per_ipc": {}, "ipcs": []})
            entry["per_ipc"][cell.ipc] = dict(params)
            entry["ipcs"].append(cell.ipc)
        datasets = sorted({c.dataset.name for c, _ in chosen})
        sweep = {
            "name": name,
            "datasets": [d.model_dump(exclude_defaults=True) for d in config.datasets if d.name in datasets],
            "methods": methods,
            "ipcs": sorted({c.ipc for c, _ in chosen}),
            "seeds": config.export_seeds,
            "eval": config.eval.model_dump(exclude_defaults=True),
            "resources": config.resources.model_dump(exclude_defaults=True),
        }
        path = out_dir / f"{name}.yaml"
        atomic_write_text(path, header.replace("PATH", str(path)) + yaml.safe_dump(sweep, sort_keys=False))
        return path

    if len(config.objectives) == 1:
        for d in config.datasets:
            chosen = [(o.cell, o.best[0]["params"]) for o in outcomes if o.best and o.cell.dataset.name == d.name]
            if chosen:
                written.append(write(f"{config.name}-{d.name}-best" if len(config.datasets) > 1 else f"{config.name}-best", chosen))
    else:
        for o in outcomes:
            for b in o.best:
                written.append(write(f"{config.name}-{o.cell.label.replace('.', '-')}-pareto-t{b['number']}", [(o.cell, b["params"])]))
    pareto = out_dir / "best.json"
    atomic_write_json(pareto, {o.cell.label: o.best for o in outcomes}, indent=2, default=str)
    return [*written, pareto]


from ray.tune.search.optuna import OptunaSearch  # noqa: E402  (the searcher's base class)

from .run_tracking import RunTracking  # noqa: E402  (the callback's base class)


def stopped_early(result: dict, rungs: int) -> bool:
    """Whether a trial's last report came before its last rung. (Not the report's ``done``: Tune
    overwrites that key with True when a scheduler stops a trial.)"""
    return int(result.get("rung", rungs)) < rungs


class EarlyStopAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna the truth about early-stopped trials.

    Ray's OptunaSearch marks every trial that reported a value COMPLETE, so a trial ASHA stopped
    after its first rung enters the study as if its truncated score were final, and TPE learns
    from partial results (and ``best_trial`` may be one). A trial whose last report came before
    the last rung is told as PRUNED instead, with that report as its intermediate value, which is
    how Optuna's samplers expect pruned trials to look."""

    def __init__(self, *args: Any, rungs: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rungs = rungs

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and not error and stopped_early(result, self.rungs) and trial_id not in self._completed_trials:
            import optuna

            ot_trial = self._ot_trials[trial_id]
            try:
                # Tune hands the stopping result to on_trial_complete only, never to on_trial_result
                if isinstance(self.metric, str) and result.get(self.metric) is not None:
                    ot_trial.report(float(result[self.metric]), int(result.get("training_iteration", 1)))
                self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
            except Exception as exc:  # noqa: BLE001 - as the base class: a refused tell must not end the study
                print(f"[tune] warning: could not record trial {trial_id} as pruned: {exc}", file=sys.stderr, flush=True)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)



class TuneTracking(RunTracking):
    """A tuning trial's MLflow run: the sampled and resolved options, each rung's objectives, the
    validation metrics, and whether ASHA stopped it early."""

    def __init__(self, tracker: SweepTracker, cell: Cell, config: TuneConfig) -> None:
        super().__init__(tracker)
        self.cell, self.config = cell, config

    def key(self, trial: Any) -> str:
        return f"{self.cell.study_name(self.config)}:{trial.trial_id}"

    def describe(self, trial: Any) -> tuple[str, dict[str, str], dict[str, str]]:
        params = dict(trial.config)
        spec = trial_spec(self.config, self.cell, params)
        tags = {
            Tag.KIND: "tune_trial", Tag.DATASET: self.cell.dataset.name,
            Tag.METHOD: self.cell.method, Tag.IPC: str(self.cell.ipc),
            Tag.SEED: str(self.config.seed), Tag.STUDY: self.cell.study_name(self.config),
            Tag.EVAL_SPLIT: "validation", Tag.PARAMS_HASH: params_hash(self.cell, params),
            HASH_TAG: self.key(trial),
        }
        logged = {**flatten({"tuned": params}), **flatten({"method_config": dataclasses.asdict(spec.resolved_method_config())}),
                  "validation_per_class": str(self.config.validation_per_class)}
        return f"{self.cell.method}-ipc{self.cell.ipc}-{trial.trial_id.split('_')[-1]}", tags, logged

    def result(self, run_id: str, trial: Any, result: dict) -> None:
        values = {k: result[k] for k in self.config.objectives}
        self.tracker.log_metrics(run_id, {f"rung/{k}": v for k, v in values.items()}, int(result.get("rung", 1)))

    def completed(self, trial: Any) -> None:
        self.ensure_started(trial)
        result = trial.last_result or {}
        run_id = self.run_id(trial)
        keys = (*FAIRNESS_METRICS, "distill_seconds", "eval_seconds", "eval_samples")
        self.tracker.log_metrics(run_id, {k: result[k] for k in keys if k in result})
        stopped = stopped_early(result, self.config.early_stopping.rungs if self.config.early_stopping.enabled else 1)
        self.tracker.client.set_tag(run_id, Tag.EARLY_STOPPED, str(stopped).lower())
        self.tracker.client.set_tag(run_id, Tag.STATUS, "FINISHED")
        self.tracker.client.set_terminated(run_id, "FINISHED")
        self.tracker.runs[self.key(trial)] = (run_id, "FINISHED")

    def failure_reason(self, trial: Any) -> str:
        try:
            return Path(trial.error_file).read_text() if trial.error_file else "trial errored"
        except OSError:
            return "trial errored"


def format_outcomes(config: TuneConfig, outcomes: list[CellOutcome]) -> str:
    lines = [f"objectives measured on a validation split ({config.validation_per_class} training images per class held out; the test split was not used)"]
    for o in outcomes:
        lines.append(f"\n{o.cell.label}: {o.n_trials} completed trials in study {o.study_name!r} (+{o.added} now{f', {o.failed} failed' if o.failed else ''})")
        label = "best" if len(config.objectives) == 1 else "Pareto-optimal"
        for b in o.best:
            vals = ", ".join(f"{k} {v:.4f}" for k, v in b["values"].items())
            lines.append(f"  {label} trial {b['number']}: {vals}  params {b['params']}")
    return "\n".join(lines)


__all__ = ["Cell", "CellOutcome", "cells", "format_outcomes", "run_tuning", "trial_spec", "tune_trial"]
