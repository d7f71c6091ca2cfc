"""Expand a sweep config into trials, each identified by a hash of its resolved arguments.

As in DomainBed, identity = hash(everything that determines the result): dataset and its loading
options, method and its fully resolved hyperparameters (published defaults included, so a changed
default is a new trial), IPC, seed, the seeding scheme (``utils.seeding.SEEDING``: how the seed
becomes the trial's draws) and the evaluation protocol. Resources, concurrency and
locations are not part of it (the data root, a method's path options such as MTT's buffer_dir,
the decoded-tensor cache): the same trial may run anywhere, and moving the data or a cache keeps
every hash. ``locations`` gives them back for the MLflow params. A resumed sweep recomputes the hashes and
skips or continues those it already has, so work is never redone or duplicated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from distillery.methods.data import DatasetOptions
from distillery.methods.data.registry import resolve_options
from distillery.methods.distill.base import get_method
from distillery.methods.eval import EvalConfig
from distillery.methods.eval.protocol import DEFAULT_EPOCHS, LEARNED_LR_EPOCHS
from distillery.methods.nets.registry import network_defaults
from distillery.methods.schema import FULL_DATA_METHOD, RESULT_FORMAT, Tag
from distillery.methods.trial import TrialSpec
from distillery.methods.utils.seeding import SEEDING

from .config import DatasetEntry, Resources, SweepConfig
from .reproduce import trial_command


@dataclass(frozen=True)
class TrialPlan:
    """One (dataset, method, IPC, seed) trial of a sweep, or a full-data baseline cell (ipc null)."""

    name: str  # e.g. dm-ipc10-seed3, full-seed0
    trial_hash: str
    spec: TrialSpec
    resources: Resources

    @property
    def full_data(self) -> bool:
        return self.spec.full_data

    def tags(self) -> dict[str, str]:
        return {
            Tag.KIND: "trial",
            Tag.DATASET: self.spec.dataset,
            Tag.METHOD: self.spec.method,
            Tag.IPC: "all" if self.full_data else str(self.spec.ipc),  # the baseline's per-class count replaces "all" when it finishes
            Tag.SEED: str(self.spec.seed),
            Tag.TRIAL_HASH: self.trial_hash,
            Tag.FULL_DATA: str(self.full_data).lower(),
            Tag.TRIAL_COMMAND: trial_command(self.spec),  # reproduces this cell in-process
        }


def dataset_options(entry: DatasetEntry) -> DatasetOptions:
    """Loading options with the root made absolute on the driver (trials run in their own cwd)."""
    return resolve_options(entry.name, entry.options())


def eval_config(config: SweepConfig) -> EvalConfig:
    return config.eval.protocol()


def identity(spec: TrialSpec) -> dict[str, Any]:
    """The JSON-able content that defines a trial's result."""
    method_config = dataclasses.asdict(spec.resolved_method_config())
    for path in spec.method_impl().path_options:  # where a cache lives, not what it holds
        method_config.pop(path, None)
    data = dataclasses.asdict(spec.data)
    data.pop("download", None)  # how files arrived does not change them
    data.pop("cache_dir", None)
    data.pop("root", None)  # where the files are, not what they are
    evaluation = dataclasses.asdict(spec.eval)
    for how in ("vectorize", "test_batch_size"):  # how the models are computed, not what they are
        evaluation.pop(how, None)
    # the protocol's epoch rule as the code has it (used when eval.epochs is null): a changed default is a new trial
    evaluation.update(default_epochs=DEFAULT_EPOCHS, learned_lr_epochs=LEARNED_LR_EPOCHS)
    return {
        "dataset": spec.dataset,
        "data": data,
        "method": spec.method,
        "method_config": method_config,
        "ipc": spec.ipc,
        "seed": spec.seed,
        "seeding": SEEDING,  # how the seed becomes draws: a new scheme changes every result
        "result_format": RESULT_FORMAT,  # what a trial computes: raised when code changes results
        "archs": list(spec.archs),
        "n_models": spec.n_models,
        "eval": evaluation,
        # every evaluation network's options as built: constructor defaults, then the config's
        "arch_options": {a: {**network_defaults(a), **dict(spec.arch_options.get(a, {}))} for a in sorted(spec.archs)},
    }


def locations(spec: TrialSpec) -> dict[str, Any]:
    """What ``identity`` leaves out on purpose, as flat param names: where the data and caches are."""
    config = spec.resolved_method_config()
    out: dict[str, Any] = {"data.root": spec.data.root}
    out.update({f"method_config.{p}": getattr(config, p) for p in spec.method_impl().path_options})
    return out


def trial_hash(spec: TrialSpec) -> str:
    blob = json.dumps(identity(spec), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def expand(config: SweepConfig) -> list[TrialPlan]:
    """All trials in a stable order: dataset, method (as written), IPC, seed; then baselines."""
    plans: list[TrialPlan] = []
    multi = len(config.datasets) > 1
    ev = eval_config(config)
    arch_options = {k: dict(v) for k, v in config.eval.arch_options.items()}

    def add(d: DatasetEntry, method: str, ipc: int | None, seed: int, params: dict[str, Any]) -> None:
        spec = TrialSpec(
            dataset=d.name, method=method, ipc=ipc, seed=seed, method_params=params,
            archs=tuple(config.eval.archs), n_models=config.eval.models, eval=ev,
            data=dataset_options(d), arch_options=arch_options,
        )
        name = f"{method}-seed{seed}" if ipc is None else f"{method}-ipc{ipc}-seed{seed}"
        if multi:
            name = f"{d.name}-{name}"
        plans.append(TrialPlan(name, trial_hash(spec), spec, config.resources.for_trial(method, ipc)))

    for d in config.datasets:
        for method, entry in config.methods.items():
            get_method(method)  # registered (validated earlier)
            for ipc in entry.ipcs or config.ipcs:
                for seed in config.seeds:
                    add(d, method, ipc, seed, entry.params_for(ipc))
        if config.full_baseline.enabled:
            for seed in config.full_baseline.seeds or config.seeds[:1]:
                add(d, FULL_DATA_METHOD, None, seed, {})  # the baseline cell: no IPC
    hashes = [p.trial_hash for p in plans]
    assert len(set(hashes)) == len(hashes), "two trials of the sweep have the same identity"
    return plans
