"""Names shared by the trial runner, the orchestrator and the analysis: one definition, no imports.

The orchestrator writes MLflow tags and metrics under these names and analysis reads them back;
typed once here, a rename cannot leave a reader behind (docs/tracking-schema.md documents them and
tests/test_sweep.py checks the document against a real run). Deliberately dependency-free, so the
analysis can import it without torch and the orchestrator without loading the methods.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

#: the method label of the full-data baseline cell (ipc null): in trial specs, MLflow tags and analysis
FULL_DATA_METHOD = "full"

#: a trial's fairness metrics (methods.metrics.fairness computes them; fractions, class_var in fraction^2)
FAIRNESS_METRICS: tuple[str, ...] = ("mean_acc", "overall_acc", "class_var", "class_std", "worst_class_acc", "gap", "cv")


#: The version of what a trial computes and records (its result.json and metrics). Part of every
#: trial's identity (orchestrator/grid.py): raise it when a code change alters results without
#: changing any option, so ``--resume`` reruns trials instead of reusing results of the old code.
RESULT_FORMAT = 1


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
    STORAGE_PATH = "distillery.storage_path"  # on the parent run: where the sweep's trials and analysis live
    CELLS_ADDED = "distillery.cells_added"  # on the parent run: cells a --resume added
    STUDY = "distillery.study"
    EVAL_SPLIT = "distillery.eval_split"
    PARAMS_HASH = "distillery.params_hash"
    EARLY_STOPPED = "distillery.early_stopped"
    SOFT_LABELS = "distillery.soft_labels"  # true when the set carried soft labels (set when the trial finishes)
    PARENT = "mlflow.parentRunId"  # MLflow's own nesting tag


# --------------------------------------------------------------------------- the trial summary
# A trial's result as every reader sees it: the CLI's --json, the stored record (result.json), Tune's
# last report, MLflow's metrics and the sweep's console table. Typed here (plain dataclasses, no
# torch) so a reader asks for ``summary.archs["convnet"].class_var`` and a renamed field fails where
# it is read, not as a KeyError in one of five places. The JSON shape is unchanged (``to_dict``), so
# stored results written before this type existed read back with ``from_dict``.


@dataclass(frozen=True)
class ModelScore:
    """One evaluation model's scores (fractions; class_var in fraction^2)."""

    mean_acc: float
    class_var: float
    overall_acc: float
    per_class: tuple[float, ...]


@dataclass(frozen=True)
class ArchSummary:
    """The K models of one evaluation architecture: means over models, and each model."""

    mean_acc: float
    overall_acc: float
    class_var: float
    class_std: float
    worst_class_acc: float
    gap: float
    cv: float
    mean_acc_std: float
    ci95: tuple[float, float]
    per_class: tuple[float, ...]
    per_model: tuple[ModelScore, ...]
    n_models: int
    train_seconds: float
    test_seconds: float
    epochs: int
    lr: float
    vectorized: bool


@dataclass(frozen=True)
class TrialSummary:
    """What one trial found. The first evaluated architecture's metrics are also the trial's own
    (``metrics``/``mean_acc``...), as the CLI and the tuning objectives read them."""

    dataset: str
    method: str
    ipc: int | None  # None: the full-data baseline cell
    seed: int
    archs: dict[str, ArchSummary]
    class_names: tuple[str, ...]
    eval_split: str
    eval_samples: int
    distill_seconds: float
    eval_seconds: float
    learned_lr: float | None
    synthetic_images: int
    method_config: dict[str, Any]
    soft_labels: bool = False  # the set carried soft labels (a probability matrix) rather than one class per image
    #: storage budget in images-per-class equivalent (stored numbers / (C*H*W*classes)); equals ipc
    #: for a plain set and differs for a parameterised one (a decoder); None for older results
    storage_ipc: float | None = None
    #: the root seed the trial drew everything from (``TrialSpec.cell_seed``: ``seed`` keyed by
    #: dataset and IPC); None for older results, whose draws came from ``seed`` itself
    cell_seed: int | None = None

    @property
    def first(self) -> ArchSummary:
        return next(iter(self.archs.values()))

    def metric(self, name: str) -> float:
        """A fairness metric (FAIRNESS_METRICS) of the first architecture."""
        if name not in FAIRNESS_METRICS:
            raise KeyError(f"{name!r} is not a fairness metric; choose from {', '.join(FAIRNESS_METRICS)}")
        return float(getattr(self.first, name))

    @property
    def mean_acc(self) -> float:
        return self.first.mean_acc

    @property
    def class_var(self) -> float:
        return self.first.class_var

    @property
    def worst_class_acc(self) -> float:
        return self.first.worst_class_acc

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``distillery trial --json`` and of result.json's ``summary``."""
        first = self.first
        archs = {a: {**asdict(s), "ci95": list(s.ci95), "per_class": list(s.per_class),
                     "per_model": [{**asdict(m), "per_class": list(m.per_class)} for m in s.per_model]}
                 for a, s in self.archs.items()}
        head = archs[next(iter(archs))]
        return {
            "dataset": self.dataset, "method": self.method, "ipc": self.ipc, "seed": self.seed,
            **{k: getattr(first, k) for k in (*FAIRNESS_METRICS, "mean_acc_std")}, "ci95": list(first.ci95),
            "per_class": head["per_class"], "per_model": head["per_model"], "n_models": first.n_models,
            "class_names": list(self.class_names), "eval_split": self.eval_split, "eval_samples": self.eval_samples,
            "archs": archs, "distill_seconds": self.distill_seconds, "eval_seconds": self.eval_seconds,
            "learned_lr": self.learned_lr, "synthetic_images": self.synthetic_images,
            "method_config": dict(self.method_config), "soft_labels": self.soft_labels,
            "storage_ipc": self.storage_ipc, "cell_seed": self.cell_seed,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrialSummary":
        def arch(a: Mapping[str, Any]) -> ArchSummary:
            models = tuple(ModelScore(m["mean_acc"], m["class_var"], m["overall_acc"], tuple(m["per_class"])) for m in a["per_model"])
            values = {f.name: a[f.name] for f in fields(ArchSummary) if f.name not in ("ci95", "per_class", "per_model")}
            return ArchSummary(**values, ci95=(a["ci95"][0], a["ci95"][1]), per_class=tuple(a["per_class"]), per_model=models)

        return cls(
            dataset=d["dataset"], method=d["method"], ipc=d["ipc"], seed=d["seed"],
            archs={name: arch(a) for name, a in d["archs"].items()}, class_names=tuple(d["class_names"]),
            eval_split=d.get("eval_split", "test"), eval_samples=d["eval_samples"], distill_seconds=d["distill_seconds"],
            eval_seconds=d["eval_seconds"], learned_lr=d.get("learned_lr"), synthetic_images=d["synthetic_images"],
            method_config=dict(d.get("method_config", {})), soft_labels=bool(d.get("soft_labels", False)),
            storage_ipc=d.get("storage_ipc"), cell_seed=d.get("cell_seed"),
        )
