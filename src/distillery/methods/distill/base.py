"""The interface every distillation method implements, and the synthetic set it returns.

A method is a class registered under a name with a frozen dataclass of hyperparameters. Methods
are pure functions of (training data, ipc, config, seed): all randomness comes from
methods.utils.seeding, keyed by (seed, iteration, ...), so a run resumed from a saved state makes
the same draws as an uninterrupted one and ends with the same set.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import Tensor

from ..data.base import ImageData
from ..errors import UserError
from ..registry import Registry
from ..utils.typecheck import check_field
from .decode import Decoder


@dataclass
class SyntheticSet:
    """What a method produces and the evaluation protocol trains on.

    images: float32 [N, C, H, W] in the same (normalized, possibly transformed) space as the
    ImageData it was distilled from. labels: int64 [N] (hard) or float32 [N, num_classes] (soft: a
    probability row per image, checked; the evaluation trains on them with soft-target cross-entropy,
    as DATM and PAD do, while every accuracy and fairness metric still counts hard test labels).
    lr: a learned training learning rate (MTT) the evaluation uses instead of its default.
    full_data: True for the full-data baseline, whose images are the whole training set (the
    evaluation then uses the full-data epoch count and nobody should save it as an artifact).
    decoder: for a parameterised set (IDC, IDM, ...), what is stored; ``images`` are then its decoded
    grid, which the protocol trains on, and the storage budget counts the decoder's parameters.
    """

    images: Tensor
    labels: Tensor
    lr: float | None = None
    full_data: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    decoder: Decoder | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"SyntheticSet.images must be [N, C, H, W], got shape {tuple(self.images.shape)}")
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError("SyntheticSet.images and labels must have the same length")
        if self.labels.ndim == 2:  # soft labels: the protocol trains on them with soft-target cross-entropy
            labels = self.labels.detach()
            if not labels.is_floating_point() or bool((labels < 0).any()) or not torch.allclose(
                    labels.sum(1), torch.ones(len(labels), dtype=labels.dtype, device=labels.device), atol=1e-3):
                raise ValueError(
                    "SyntheticSet soft labels must be a probability matrix [N, num_classes] (non-negative float rows that "
                    "sum to 1); a method that learns logits stores softmax(logits / temperature)"
                )
        elif self.labels.ndim != 1:
            raise ValueError(f"SyntheticSet.labels must be [N] class indices or [N, num_classes] probabilities, got {tuple(self.labels.shape)}")

    @property
    def soft_labels(self) -> bool:
        return self.labels.ndim == 2

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def stored_floats(self) -> int:
        """The storage budget in numbers: the decoder's parameters, else the images themselves
        (labels are not counted, as the field's IPC convention does not count them)."""
        return self.decoder.stored_floats if self.decoder is not None else int(self.images.numel())

    def storage_ipc(self, num_classes: int) -> float:
        """The storage budget as images-per-class equivalent: stored numbers / (C*H*W*classes).
        Equals the IPC for a plain set; a factor-2 multi-formation set at IPC 1 decodes 4 images
        per class and still stores 1."""
        per_image = int(self.images[0].numel()) if len(self) else 1
        return self.stored_floats / float(per_image * max(1, num_classes))

    def hard_labels(self) -> Tensor:
        return self.labels.argmax(1) if self.soft_labels else self.labels

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only, so torch.load(..., weights_only=True) can read it back."""
        return {
            "images": self.images.detach().cpu(),
            "labels": self.labels.detach().cpu(),
            "lr": self.lr,
            "full_data": self.full_data,
            "meta": _plain(self.meta),
            **({"decoder": self.decoder.state_dict()} if self.decoder is not None else {}),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "SyntheticSet":
        return cls(
            images=state["images"],
            labels=state["labels"],
            lr=state.get("lr"),
            full_data=bool(state.get("full_data", False)),
            meta=dict(state.get("meta", {})),
            decoder=Decoder.from_state_dict(state["decoder"]) if state.get("decoder") is not None else None,
        )

    def save(self, path: str) -> None:
        torch.save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str) -> "SyntheticSet":
        return cls.from_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def _plain(value: Any) -> Any:
    """Meta as JSON-like values (safe for weights_only loading and for MLflow params)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass(frozen=True)
class Progress:
    """One progress report from a running method.

    ``state`` is a zero-argument callable returning the resumable state (CPU tensors and plain
    values): snapshots cost a copy, so the receiver decides whether and how often to take one.
    """

    iteration: int  # iterations completed so far (in a phase other than "distill": units of that phase)
    total: int
    loss: float | None
    elapsed: float  # seconds since this (possibly resumed) distill call started (or since the phase started)
    state: Callable[[], dict[str, Any]]
    #: "distill" for the method's iterations (the only phase whose state is worth a checkpoint);
    #: a preparation phase reports e.g. "experts" (iteration/total = expert epochs trained/to train)
    phase: str = "distill"


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class PrepJob:
    """One independent, idempotent preparation step a method needs before it can distill, e.g.
    training one MTT expert. Small and picklable: the orchestrator collects a trial's jobs with
    ``method.prep_jobs(...)``, de-duplicates them by ``(key, index)`` across trials, skips those with
    ``method.job_done(job)`` and runs the rest (in parallel, each once) with
    ``get_method(job.method).run_prep_job(job, job.load_data(), device)``.
    Methods subclass it (``kw_only`` fields) to carry whatever their run needs.
    """

    method: str  # registered method name that runs the job
    key: str  # shared-resource key (e.g. the expert buffer); jobs with equal key and index are identical
    index: int  # position of the job within its key (e.g. the expert number)
    description: str
    dataset: str  # the data the job needs: load_dataset(dataset, data_options) + transforms
    data_options: Any = None  # methods.data.DatasetOptions
    transforms: tuple[str, ...] = ()
    #: how far the job goes (e.g. an expert's epochs): of two jobs with equal (key, index) the
    #: orchestrator runs the one with the larger extent, which serves both
    extent: int = 0
    #: jobs of a later stage start only after every job of the earlier stages finished (PAD's
    #: experts train on a ranking that its scoring experts, stage 0, must exist for)
    stage: int = 0

    def load_data(self) -> ImageData:
        """The (transformed) training data this job expects, as the trial runner would prepare it."""
        from ..aug import apply_transforms
        from ..data import dataset_fingerprint, load_dataset

        data = load_dataset(self.dataset, self.data_options)
        data = dataclasses.replace(data, fingerprint=data.fingerprint or dataset_fingerprint(self.dataset, self.data_options))
        return apply_transforms(data, self.transforms) if self.transforms else data


#: the dataset name a method's tables are looked up under for a training subset when its rows need
#: the full training set (``DistillMethod.rows_need_full_training_set``): in no table
OFF_TABLE = "(training subset)"


class DistillMethod(ABC):
    """Base class for distillation methods (and the random/herding/full baselines).

    Subclasses set ``name`` and ``Config`` (a frozen dataclass whose fields are the method's
    hyperparameters with sensible defaults) and implement ``distill``. ``default_config`` returns
    the published defaults for a dataset/IPC; user overrides are applied on top of it.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    #: preprocessing the method needs on the data before distillation and evaluation (e.g. ZCA)
    needs_transform: ClassVar[tuple[str, ...]] = ()
    #: options that are file-system paths: an orchestrator makes them absolute once, on the driver,
    #: because workers run in other directories (Ray Tune changes each trial's cwd)
    path_options: ClassVar[tuple[str, ...]] = ()
    #: the published rows hold only for the dataset's full training set: the trajectory family's
    #: step sizes, loss gates, soft labels and ZCA were tuned on experts trained on all 50000 CIFAR
    #: images. On a training subset (``subset_per_class``) such a method takes its rule for datasets
    #: outside its tables, which is what digits, MNIST and Fashion-MNIST subsets run on (measured:
    #: FTD, DATM, PAD and HaBa with CIFAR-10's rows on a 100-per-class subset tie or lose to random).
    rows_need_full_training_set: ClassVar[bool] = False

    def default_config(self, dataset: str, ipc: int) -> Any:
        return self.Config()

    def table_dataset(self, dataset: str, training_subset: bool) -> str:
        """The name ``default_config`` looks its published rows up under: ``dataset``, or a name in
        no table when the rows need the full training set and a subset is drawn."""
        return OFF_TABLE if training_subset and self.rows_need_full_training_set else dataset

    def make_config(self, dataset: str, ipc: int, overrides: Mapping[str, Any] | None = None, *,
                    training_subset: bool = False) -> Any:
        """Published defaults for (dataset, ipc) with overrides applied and validated; unknown keys
        and bad values are errors, raised here so configs fail before any work starts.
        ``training_subset``: the trial trains on a per-class subset of the training split."""
        base = self.default_config(self.table_dataset(dataset, training_subset), ipc)
        config = apply_overrides(base, overrides or {}, owner=f"method {self.name!r}")
        self.validate(config)
        return config

    def validate(self, config: Any) -> None:
        """Cheap value checks naming the option (configs that check themselves need none)."""

    def transforms(self, config: Any) -> tuple[str, ...]:
        """Data transforms this config asks for (e.g. ('zca',) when config.zca is true)."""
        return self.needs_transform

    # -- preparation jobs (e.g. MTT expert trajectories); methods without any keep these defaults --

    def prep_jobs(self, dataset: str, data_options: Any, config: Any) -> list[PrepJob]:
        """Independent jobs that must have run before ``distill`` (built once, shared by trials)."""
        return []

    def run_prep_job(self, job: PrepJob, data: ImageData, device: torch.device) -> None:
        """Run one job (idempotent: returns at once when ``job_done(job)``)."""
        raise UserError(f"method {self.name!r} has no preparation jobs (got {job.description!r})")

    def job_done(self, job: PrepJob) -> bool:
        return True

    @abstractmethod
    def distill(
        self,
        train: ImageData,
        ipc: int,
        config: Any,
        seed: int,
        device: torch.device,
        progress_callback: ProgressCallback | None = None,
        resume_state: Mapping[str, Any] | None = None,
    ) -> SyntheticSet:
        """Produce a synthetic set with ``ipc`` images per class.

        If ``resume_state`` (a dict previously returned by a Progress.state()) is given, continue
        from it; the result must equal an uninterrupted run's.
        """


METHODS: Registry[type[DistillMethod]] = Registry("method")


def register_method(name: str):
    def decorator(cls: type[DistillMethod]) -> type[DistillMethod]:
        cls.name = name
        return METHODS.register(name)(cls)

    return decorator


def get_method(name: str) -> DistillMethod:
    from . import load_all  # noqa: F401  (import side effect: registration)

    return METHODS.get(name)()


def apply_overrides(config: Any, overrides: Mapping[str, Any], owner: str) -> Any:
    """dataclasses.replace with type coercion and an error naming the key and the valid keys."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in fields:
            raise UserError(f"{owner} has no option {key!r}; valid options: {', '.join(sorted(fields))}")
        changes[key] = coerce(value, getattr(config, key), key, owner)
        expected = check_field(type(config), key, changes[key])
        if expected is not None:
            raise UserError(f"{owner} option {key!r} expects {expected}, got {value!r}")
    return dataclasses.replace(config, **changes)


def coerce(value: Any, current: Any, key: str, owner: str) -> Any:
    """Coerce strings from --set key=value to the type of the current default."""
    if current is None and isinstance(value, str):
        return parse_scalar(value)
    if isinstance(value, str) and value.strip().lower() in ("none", "null", "~"):
        return None  # an Optional option switched off (e.g. loss_threshold=none); check_field refuses it elsewhere
    if current is None or not isinstance(value, str):
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    try:
        if isinstance(current, bool):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
    except ValueError:
        raise UserError(
            f"{owner} option {key!r} expects a {type(current).__name__}, got {value!r}"
        ) from None
    return value


def parse_scalar(value: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, 'none' -> None, anything else stays a string."""
    low = value.strip().lower()
    if low in ("none", "null", "~"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def check_resume_state(state: Mapping[str, Any], method: str, ipc: int, seed: int, keys: tuple[str, ...]) -> None:
    """A resume state must be this method's, for this IPC and seed, with the keys it needs: each
    mismatch is a UserError naming it (a state from another run would otherwise resume silently)."""
    for key in keys:
        if key not in state:
            raise UserError(f"resume state for method {method!r} lacks {key!r}; it is not a state this method saved")
    if state.get("method", method) != method:
        raise UserError(f"resume state was saved by method {state['method']!r}, not {method!r}")
    for key, value in (("ipc", ipc), ("seed", seed)):
        if key in state and state[key] != value:
            raise UserError(f"resume state has {key} {state[key]!r} but this run has {key} {value!r}")


class Timer:
    """Wall-clock seconds since construction, offset by time already spent before a resume."""

    def __init__(self, offset: float = 0.0) -> None:
        self._start = time.perf_counter() - offset

    def __call__(self) -> float:
        return time.perf_counter() - self._start
