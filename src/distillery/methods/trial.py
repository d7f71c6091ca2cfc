"""One trial = distill one synthetic set, then evaluate K models per architecture on it.

This is the unit the orchestrator schedules and ``distillery trial`` runs in-process. It only
depends on torch, so a GPU box without Ray/MLflow can run it.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from .aug import apply_transforms
from .data import DatasetOptions, ImageData, dataset_fingerprint, load_dataset
from .distill.base import DistillMethod, Progress, ProgressCallback, SyntheticSet, apply_overrides, get_method, parse_scalar
from .distill.baselines import FULL_DATA
from .errors import UserError
from .eval import EvalConfig, EvalProgress, EvalResult, evaluate_synset
from .metrics.fairness import aggregate_models, fairness_metrics
from .schema import FAIRNESS_METRICS, FULL_DATA_METHOD, ArchSummary, ModelScore, TrialSummary
from .aug.dsa import parse_strategy
from .nets import NETWORKS, check_net_options
from .utils.device import resolve_device
from .utils.seeding import cell_seed


@dataclass(frozen=True)
class TrialSpec:
    """Everything that determines a trial's result (its identity is a hash of this)."""

    dataset: str = "digits"
    method: str = "random"
    #: images per class; None is the full-data baseline cell (method FULL_DATA_METHOD): the whole
    #: training split, no per-class count, so no placeholder needs correcting downstream
    ipc: int | None = 10
    seed: int = 0
    method_params: Mapping[str, Any] = field(default_factory=dict)
    archs: tuple[str, ...] = ("convnet",)
    n_models: int = 5
    eval: EvalConfig = EvalConfig()
    data: DatasetOptions = DatasetOptions()
    arch_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def full_data(self) -> bool:
        """The full-data baseline cell: evaluation trains on the whole training split."""
        return self.ipc is None

    @property
    def cell_seed(self) -> int:
        """The root seed of everything the trial draws (its start, its distillation, its evaluation
        models): ``seed`` keyed by (dataset, IPC), not by the method (``utils.seeding.cell_seed``).
        One seed's sets at two IPCs are thereby independent, and the methods of one (dataset, IPC,
        seed) still share `random`'s draw and the evaluation models (paired). ``seed`` stays the
        user-facing label (names, tags, the summary)."""
        return cell_seed(self.seed, self.dataset, self.ipc)

    def method_impl(self) -> DistillMethod:
        """What makes this cell's set: the registered method, or the full-data baseline."""
        return FULL_DATA if self.full_data else get_method(self.method)

    def validate(self) -> None:
        """Cheap checks that need no data, so bad input fails before anything expensive starts."""
        if (self.ipc is None) != (self.method == FULL_DATA_METHOD):
            raise UserError(
                f"the full-data baseline is the cell with ipc null (method {FULL_DATA_METHOD!r}); got method {self.method!r} "
                f"with ipc {self.ipc}: use --method {FULL_DATA_METHOD} (any --ipc is ignored) or give a distillation method an ipc"
            )
        if self.ipc is not None and self.ipc < 1:
            raise UserError(f"ipc must be >= 1, got {self.ipc}")
        if self.n_models < 1:
            raise UserError(f"models must be >= 1, got {self.n_models}")
        if not self.archs:
            raise UserError("at least one evaluation arch is required (e.g. --arch convnet)")
        for arch in self.archs:
            NETWORKS.get(arch)
        for arch in self.arch_options:
            if arch not in self.archs:
                raise UserError(f"options given for arch {arch!r}, which is not evaluated (archs: {', '.join(self.archs)})")
            check_net_options(arch, dict(self.arch_options[arch]))
        if self.eval.dsa and self.eval.dsa_strategy is not None:
            parse_strategy(self.eval.dsa_strategy)
        if (self.eval.epochs is not None and self.eval.epochs < 0) or self.eval.full_data_epochs < 0:
            raise UserError("eval epochs must be >= 0")
        self.resolved_method_config()

    @functools.cached_property
    def method_config(self) -> Any:
        """The method's typed config: published defaults for (dataset, ipc), ``method_params`` on top,
        automatic values filled in (e.g. MTT's expert count and buffer folder). Resolved once per
        spec and cached in the instance, so it travels with the spec when the driver ships it to a
        Ray worker: the worker uses the driver's resolution (its buffer folder, where the driver's
        preparation built the experts) instead of resolving again in its own environment."""
        return self.method_impl().make_config(self.dataset, self.ipc, self.method_params,
                                              training_subset=self.data.training_subset)

    def resolved_method_config(self) -> Any:
        return self.method_config


@dataclass
class TrialResult:
    spec: TrialSpec
    method_config: Any
    synset: SyntheticSet
    evals: dict[str, EvalResult]
    class_names: tuple[str, ...]
    class_counts: list[int]  # test samples per class
    distill_seconds: float
    eval_seconds: float
    losses: list[tuple[int, float]]
    eval_split: str = "test"  # what the accuracies were measured on: "test" or "validation" (tuning)

    def summary(self) -> TrialSummary:
        """The typed result every reader uses (``.to_dict()`` is the CLI's JSON and result.json's summary)."""
        return TrialSummary(
            dataset=self.spec.dataset, method=self.spec.method, ipc=self.spec.ipc, seed=self.spec.seed, cell_seed=self.spec.cell_seed,
            archs={arch: _arch_summary(res, self.class_counts) for arch, res in self.evals.items()},
            class_names=tuple(self.class_names), eval_split=self.eval_split, eval_samples=sum(self.class_counts),
            distill_seconds=self.distill_seconds, eval_seconds=self.eval_seconds, learned_lr=self.synset.lr,
            synthetic_images=len(self.synset), method_config=dataclasses.asdict(self.method_config),
            soft_labels=self.synset.soft_labels,
            storage_ipc=None if self.synset.full_data else self.synset.storage_ipc(len(self.class_names)),
        )


def _arch_summary(res: EvalResult, class_counts: list[int]) -> ArchSummary:
    agg = aggregate_models(res.per_class, class_counts)
    per_model = []
    for k in range(res.n_models):
        m = fairness_metrics(res.per_class[k], class_counts)
        per_model.append(ModelScore(m["mean_acc"], m["class_var"], float(res.overall[k]), tuple(res.per_class[k].tolist())))
    means = {name: v["mean"] for name, v in agg.items() if name != "overall_acc"}
    return ArchSummary(
        **{k: float(means[k]) for k in FAIRNESS_METRICS if k != "overall_acc"},
        overall_acc=float(res.overall.mean()),
        mean_acc_std=float(agg["mean_acc"]["std"]),
        ci95=(float(agg["mean_acc"]["ci95_low"]), float(agg["mean_acc"]["ci95_high"])),
        per_class=tuple(res.per_class.mean(0).tolist()),
        per_model=tuple(per_model),
        n_models=res.n_models,
        train_seconds=res.train_seconds,
        test_seconds=res.test_seconds,
        epochs=res.epochs,
        lr=res.lr,
        vectorized=res.vectorized,
    )


def prepare_data(spec: TrialSpec, data: ImageData | None = None) -> ImageData:
    """Load the dataset (unless given) and apply the transforms the method's config asks for."""
    if data is None:
        data = load_dataset(spec.dataset, spec.data)
        if data.fingerprint is None:  # identifies the data for shared caches (MTT expert buffers)
            data = dataclasses.replace(data, fingerprint=dataset_fingerprint(spec.dataset, spec.data))
    method = spec.method_impl()
    transforms = method.transforms(spec.resolved_method_config())
    return apply_transforms(data, transforms) if transforms and data.transform != transforms else data


def run_trial(
    spec: TrialSpec,
    device: torch.device | str = "auto",
    data: ImageData | None = None,
    progress_callback: ProgressCallback | None = None,
    resume_state: Mapping[str, Any] | None = None,
    synset: SyntheticSet | None = None,
    eval_callback: Callable[[str, EvalProgress], None] | None = None,
) -> TrialResult:
    """Distill (or take a given ``synset``, e.g. from a checkpoint) and evaluate.

    ``progress_callback`` receives the method's Progress reports (checkpoint from them);
    ``eval_callback(arch, progress)`` reports evaluation progress (an EvalProgress per epoch).
    """
    spec.validate()
    dev = resolve_device(device)
    method = spec.method_impl()
    config = spec.resolved_method_config()
    data = prepare_data(spec, data)
    losses: list[tuple[int, float]] = []

    def on_progress(p: Progress) -> None:
        if p.loss is not None and p.phase == "distill":
            losses.append((p.iteration, float(p.loss)))
        if progress_callback is not None:
            progress_callback(p)

    t0 = time.perf_counter()
    if synset is None:
        synset = method.distill(data.to(dev) if dev.type != "cpu" else data, spec.ipc, config, spec.cell_seed, dev, on_progress, resume_state)
    distill_seconds = time.perf_counter() - t0

    evals: dict[str, EvalResult] = {}
    t0 = time.perf_counter()
    eval_data = data.to(dev) if dev.type != "cpu" else data
    for arch in spec.archs:
        cb = (lambda p, _a=arch: eval_callback(_a, p)) if eval_callback else None
        evals[arch] = evaluate_synset(
            synset, eval_data, arch, spec.n_models, spec.eval, seed=spec.cell_seed, device=dev,
            net_options=dict(spec.arch_options.get(arch, {})), epoch_callback=cb,
        )
    eval_seconds = time.perf_counter() - t0
    counts = torch.bincount(data.test_y.cpu(), minlength=data.num_classes).tolist()
    return TrialResult(spec, config, synset, evals, data.classes, counts, distill_seconds, eval_seconds, losses, data.eval_split)


#: the sweep YAML's names of trial fields (a dataset's ``subset_seed`` is DatasetOptions.seed), so a
#: path copied from a sweep's ``--set`` works in ``distillery trial --set`` too
_SWEEP_SPELLINGS = {"data.subset_seed": "data.seed"}


def with_overrides(spec: TrialSpec, overrides: Mapping[str, str]) -> TrialSpec:
    """Apply ``--set`` style overrides: ``key`` -> method hyperparameter, ``eval.key`` -> EvalConfig,
    ``data.key`` -> DatasetOptions, ``net.<arch>.key`` -> that evaluation network's option (also
    spelled as in a sweep YAML: ``eval.arch_options.<arch>.key``, ``data.subset_seed``)."""
    method_params = dict(spec.method_params)
    eval_changes: dict[str, Any] = {}
    data_changes: dict[str, Any] = {}
    arch_options = {a: dict(o) for a, o in spec.arch_options.items()}
    for key, value in overrides.items():
        key = _SWEEP_SPELLINGS.get(key, key)
        if key.startswith("eval.arch_options."):  # the sweep YAML's spelling of net.<arch>.<option>
            key = "net." + key[len("eval.arch_options."):]
        head, _, rest = key.partition(".")
        if head == "eval" and rest:
            eval_changes[rest] = value
        elif head == "data" and rest:
            data_changes[rest] = value
        elif head == "net" and rest:
            arch, _, opt = rest.partition(".")
            if not opt:
                raise UserError(f"--set {key}: use net.<arch>.<option>=value, e.g. net.convnet.width=32")
            arch_options.setdefault(arch, {})[opt] = parse_scalar(value) if isinstance(value, str) else value
        elif "." in key:
            raise UserError(f"--set {key}: unknown prefix {head!r}; use a method option, eval.<field>, data.<field> or net.<arch>.<option>")
        else:
            method_params[key] = value
    return dataclasses.replace(
        spec,
        method_params=method_params,
        eval=apply_overrides(spec.eval, eval_changes, owner="eval"),
        data=apply_overrides(spec.data, data_changes, owner="data"),
        arch_options=arch_options,
    )

