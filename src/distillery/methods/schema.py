"""Names shared by the trial runner, the orchestrator and the analysis: one definition, no imports.

The orchestrator writes MLflow tags and metrics under these names and analysis reads them back;
typed once here, a rename cannot leave a reader behind (docs/tracking-schema.md documents them and
tests/test_sweep.py checks the document against a real run). Deliberately dependency-free, so the
analysis can import it without torch and the orchestrator without loading the methods.
"""

from __future__ import annotations

#: a trial's fairness metrics (methods.metrics.fairness computes them; fractions, class_var in fraction^2)
FAIRNESS_METRICS: tuple[str, ...] = ("mean_acc", "overall_acc", "class_var", "class_std", "worst_class_acc", "gap", "cv")


class Tag:
    """MLflow tag names (values are strings)."""

    KIND = "distillery.kind"  # sweep | trial | tune | tune_trial
    DATASET = "distillery.dataset"
    METHOD = "distillery.method"
    IPC = "distillery.ipc"
    SEED = "distillery.seed"
    TRIAL_HASH = "distillery.trial_hash"
    FULL_DATA = "distillery.full_data"
    TRIAL_COMMAND = "distillery.trial_command"
    STATUS = "distillery.status"
    ERROR = "distillery.error"
    SWEEP_HASH = "distillery.sweep_hash"
    STUDY = "distillery.study"
    EVAL_SPLIT = "distillery.eval_split"
    PARAMS_HASH = "distillery.params_hash"
    EARLY_STOPPED = "distillery.early_stopped"
    PARENT = "mlflow.parentRunId"  # MLflow's own nesting tag
