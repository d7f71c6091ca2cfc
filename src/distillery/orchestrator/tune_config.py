"""The tuning config: search spaces, objectives and budgets, validated (pydantic) before Ray starts.

It shares the sweep config's pieces (datasets, evaluation, resources, paths) so a tuned config can
be handed to ``distillery sweep`` unchanged. Every error names the field (``methods.dm.space.lr_img.low``)
and the fix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

from pydantic import BaseModel, Field, PositiveInt, field_validator, model_validator

from distillery.methods.errors import UserError
from distillery.methods.schema import FULL_DATA_METHOD

from .config import (_STRICT, EvalEntry, Resources, RunConfig, abs_sqlite_uri, absolute_method_paths, check_datasets_and_eval,
                     check_device_resources)

#: metrics a tuning trial reports, with the direction that makes them better
OBJECTIVE_MODES: dict[str, str] = {
    "mean_acc": "max", "overall_acc": "max", "worst_class_acc": "max",
    "class_var": "min", "class_std": "min", "gap": "min", "cv": "min",
}


class ParamSpace(BaseModel):
    """One hyperparameter's search range: ``float`` (``log`` for log-uniform), ``int`` (optional
    ``step``, ``log``) or ``categorical`` (``choices``)."""

    model_config = _STRICT
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "ParamSpace":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("categorical takes only 'choices' (no low/high/log/step)")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low/high, not 'choices' (use type: categorical)")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs both 'low' and 'high'")
        if not self.low < self.high:
            raise ValueError(f"'low' ({self.low}) must be below 'high' ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("'step' and 'log' cannot be combined")
        if self.type == "int":
            for name in ("low", "high", "step"):
                v = getattr(self, name)
                if v is not None and v != int(v):
                    raise ValueError(f"int range needs whole numbers, got {name}={v}")
        return self

    def distribution(self) -> Any:
        """The Optuna distribution (what the study stores and samples)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "categorical":
            return CategoricalDistribution(list(self.choices or []))
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)


class TuneMethod(BaseModel):
    """``params``: fixed hyperparameters (their values for tuned options are the starting config,
    evaluated as the first trial); ``space``: the tuned ones."""

    model_config = _STRICT
    params: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, ParamSpace] = Field(min_length=1)
    ipcs: list[PositiveInt] | None = None


class EarlyStopping(BaseModel):
    """ASHA on the validation objective, measured after each of ``rungs`` equal slices of the
    method's iterations (the distillation resumes between them, so a trial that is not stopped ends
    with exactly the set an uninterrupted run makes). Single objective only: ASHA would hand Optuna
    partial values of several objectives."""

    model_config = _STRICT
    enabled: bool = False
    rungs: int = Field(3, ge=2)
    reduction_factor: float = Field(2.0, gt=1)


class TuneConfig(RunConfig):
    methods: dict[str, TuneMethod] = Field(min_length=1)
    seed: int = 0  # the trials' distillation/evaluation seed and the sampler's seed
    objectives: dict[str, Literal["max", "min"]] = Field(default_factory=lambda: {"mean_acc": "max"}, min_length=1)
    trials: PositiveInt | None = 8  # trials per cell added by this invocation
    time_budget_s: float | None = Field(None, gt=0)  # per cell
    validation_per_class: PositiveInt = 50  # held out of the training split; objectives are measured on it
    eval: EvalEntry = EvalEntry(models=3, epochs=100)
    early_stopping: EarlyStopping = EarlyStopping()
    resources: Resources = Resources()
    storage: str | None = None  # Optuna RDB URL; default sqlite:///<cwd>/optuna.db
    export_seeds: PositiveInt = 3  # seeds of the written sweep YAML

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives_shorthand(cls, v: Any) -> Any:
        """``objectives: mean_acc`` or ``[mean_acc, class_var]`` take each metric's natural direction."""
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list):
            return {m: OBJECTIVE_MODES.get(m, "max") for m in v}  # names are checked below
        return v

    @field_validator("objectives")
    @classmethod
    def _known_objectives(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = [m for m in v if m not in OBJECTIVE_MODES]
        if unknown:
            raise ValueError(f"unknown objective(s) {unknown}; choose from {', '.join(OBJECTIVE_MODES)}")
        return v

    @model_validator(mode="after")
    def _budgets(self) -> "TuneConfig":
        if self.trials is None and self.time_budget_s is None:
            raise ValueError("give a budget: trials (per cell), time_budget_s, or both")
        if self.early_stopping.enabled and len(self.objectives) > 1:
            raise ValueError(
                "early_stopping.enabled needs a single objective (ASHA would pass partial values of several "
                "objectives to Optuna); disable early stopping or tune one objective"
            )
        return self

    KIND: ClassVar[str] = "tuning"
    EXAMPLE: ClassVar[str] = "configs/tune_dm_digits.yaml"

    def check(self, source: str) -> None:
        _check_methods(self, source)

    def preflight_options(self) -> dict[str, Any]:
        return {"validation_per_class": self.validation_per_class, "command": "tune"}

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def resolved(self, base_dir: Path | None = None) -> "TuneConfig":
        base = (base_dir or Path.cwd()).resolve()
        storage = abs_sqlite_uri(self.storage or f"sqlite:///{base / 'optuna.db'}", base)
        methods = {name: m.model_copy(update={"params": absolute_method_paths(name, m.params, base)}) for name, m in self.methods.items()}
        return self.model_copy(update={**self._resolved_locations(base), "storage": storage, "methods": methods})


def load_tune_config(path: str | Path, overrides: Mapping[str, str] | None = None, base_dir: Path | None = None) -> TuneConfig:
    """Read, apply ``--set`` overrides, validate (including every method option) and resolve paths."""
    return TuneConfig.load(path, overrides, base_dir)


def validate_tune_config(raw: Mapping[str, Any], source: str = "tuning config", base_dir: Path | None = None) -> TuneConfig:
    return TuneConfig.validate_raw(raw, source, base_dir)


def _check_methods(config: TuneConfig, source: str) -> None:
    """Registry names, tuned options that exist, and the starting config and both ends of every
    range accepted by the method (so a range that the method rejects fails now, not in trial 5)."""
    from distillery.methods.distill.base import get_method
    from distillery.methods.registry import UnknownNameError

    def fail(field: str, msg: str) -> None:
        raise UserError(f"{source}: {field}: {msg}")

    check_datasets_and_eval(config.datasets, config.eval, fail)
    check_device_resources(config.device, [config.resources.gpu], fail)
    for i, d in enumerate(config.datasets):
        if d.test_subset_per_class is not None:
            fail(f"datasets[{i}].test_subset_per_class", "tuning never touches the test split; drop it (validation_per_class sets the validation size)")
    for name, entry in config.methods.items():
        if name == FULL_DATA_METHOD:
            fail("methods.full", "the full-data baseline has no hyperparameters to tune")
        try:
            method = get_method(name)
        except UnknownNameError as exc:
            fail(f"methods.{name}", str(exc))
        if config.early_stopping.enabled and "iterations" not in {f.name for f in dataclasses.fields(method.Config)}:
            fail("early_stopping.enabled", f"method {name!r} has no iterations to stop early; disable early stopping")
        for key, space in entry.space.items():
            if key in ("iterations",) and config.early_stopping.enabled:
                fail(f"methods.{name}.space.{key}", "cannot tune iterations with early stopping (the rungs slice them)")
            probes = space.choices if space.type == "categorical" else [space.low, space.high]
            for value in probes or []:
                if space.type == "int":
                    value = int(value)
                for d in config.datasets:
                    for ipc in entry.ipcs or config.ipcs:
                        try:
                            method.make_config(d.name, ipc, {**entry.params, key: value}, training_subset=d.training_subset)
                        except UserError as exc:
                            fail(f"methods.{name}.space.{key}", f"value {value!r}: {exc}")
        for d in config.datasets:
            for ipc in entry.ipcs or config.ipcs:
                try:
                    method.make_config(d.name, ipc, entry.params, training_subset=d.training_subset)
                except UserError as exc:
                    fail(f"methods.{name}.params", str(exc))
