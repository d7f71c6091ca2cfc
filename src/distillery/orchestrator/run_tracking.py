"""The one Tune callback that turns trial events into MLflow runs, for sweeps and tuning alike.

The driver is MLflow's only writer: Tune calls these hooks in the driver process, so concurrent
trials never open the tracking store themselves. What is common (start a nested run once per
trial key, make sure a run exists before it is finished or failed, never let an MLflow problem stop
the run) lives here; what a sweep and a tuning run record differently (tags and params, progress
metrics, the final record) is a handful of hooks in their subclasses.
"""

from __future__ import annotations

from typing import Any, Mapping

from ray import tune

from .tracking import SweepTracker, safe_call


class RunTracking(tune.Callback):
    """One nested MLflow run per trial key; subclasses say what goes into it."""

    def __init__(self, tracker: SweepTracker) -> None:
        self.tracker = tracker
        self.failed = 0

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks into its experiment state
        return {"failed": self.failed}

    # ------------------------------------------------------------------ hooks
    def key(self, trial: Any) -> str:
        """The trial's key among the parent's runs (its ``distillery.trial_hash`` tag)."""
        raise NotImplementedError

    def describe(self, trial: Any) -> tuple[str, Mapping[str, str], Mapping[str, str]]:
        """The run's name, tags and params."""
        raise NotImplementedError

    def started(self, run_id: str, trial: Any) -> None:
        """After the run was created or found again (e.g. log the trial's resources)."""

    def result(self, run_id: str, trial: Any, result: dict) -> None:
        """An intermediate report (a loss curve, a rung's objective)."""

    def completed(self, trial: Any) -> None:
        """The trial ended without error: record its outcome."""
        raise NotImplementedError

    def failure_reason(self, trial: Any) -> str:
        return "trial errored"

    def note_failure(self, trial: Any, reason: str) -> None:
        """After the failure was recorded (e.g. remember it for the summary)."""

    # ------------------------------------------------------------------ Tune's callbacks
    def run_id(self, trial: Any) -> str | None:
        entry = self.tracker.runs.get(self.key(trial))
        return entry[0] if entry else None

    def ensure_started(self, trial: Any) -> None:
        if self.run_id(trial) is None:
            self.on_trial_start(0, [], trial)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        def start() -> None:
            name, tags, params = self.describe(trial)
            self.started(self.tracker.trial_run(name, tags, params), trial)

        safe_call(start)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run_id = self.run_id(trial)
        if run_id is not None:
            safe_call(self.result, run_id, trial, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        safe_call(self.completed, trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.failed += 1
        self.ensure_started(trial)
        reason = self.failure_reason(trial)
        self.note_failure(trial, reason)
        safe_call(self.tracker.fail, self.key(trial), reason)
