"""The sweep config: one YAML file, validated (pydantic) before Ray starts.

Every error names the field path (e.g. ``methods.dm.params.lr_img``) and what to do, so a typo
costs seconds, not a cluster allocation. The model resolves every relative path to an absolute one
at load time, because Tune runs each trial in its own working directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Literal, Mapping

from typing_extensions import Self  # typing.Self needs Python 3.11; pydantic brings typing_extensions

from pydantic import AfterValidator, BaseModel, Field, PositiveInt, ValidationError, field_validator, model_validator

from distillery.methods.data import DatasetOptions
from distillery.methods.errors import UserError
from distillery.methods.eval import EvalConfig
from distillery.methods.schema import FULL_DATA_METHOD

from .derived import STRICT, StrictInt, StrictPositiveInt, dataclass_kwargs, dataclass_model
from .yamlio import read_yaml

_STRICT = STRICT
#: sweep/tuning names become folder names under storage_path: letters, digits, _ - and inner dots
#: only, never a leading dot (``..`` would put trials outside the storage path, ``.x`` hides them)
NAME_PATTERN = r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$"
_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def local_storage_path(value: str) -> str:
    """``storage_path`` as a local (or network-mounted) folder. Checkpoints and results are
    written with local file operations (atomic renames, fsync), so object-store URIs (s3://,
    gs://, ...) are refused rather than turned into a folder named ``s3:``; file:// is a path."""
    m = _URI_SCHEME.match(value)
    if m is None:
        return value
    if m.group(1).lower() == "file":
        return _file_path(value)
    raise ValueError(
        f"{value!r} is a {m.group(1)}:// URI, which distillery cannot write trial checkpoints to yet; use a folder "
        "that every node mounts (local disk for one machine, NFS or similar for a cluster)"
    )


#: what ``device`` may say: torch's device strings that distillery can place a trial on
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
#: MLflow tracking stores distillery can write to (MLflow 3 refuses the old file store)
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def check_device(value: str) -> str:
    if not DEVICE_PATTERN.match(value):
        raise ValueError(f"device {value!r} is not one of auto, cpu, cuda, cuda:N, mps (auto: a GPU when the trial "
                         "has one, else the CPU)")
    return value


def check_tracking_uri(value: str | None) -> str | None:
    """A tracking URI MLflow can open: a known scheme written ``scheme://...``; a bare path is refused
    (MLflow 3 has no file store), a typo such as ``htp:/x`` is named instead of failing in the driver."""
    if value is None:
        return value
    m = _URI_SCHEME.match(value)
    scheme = m.group(1).lower().split("+")[0] if m else None
    if scheme not in TRACKING_SCHEMES:
        from .redact import redact

        raise ValueError(f"tracking_uri {redact(value)!r} is not an MLflow tracking store distillery can use; write one of "
                         f"{', '.join(s + '://' for s in TRACKING_SCHEMES)} (e.g. sqlite:///mlflow.db or http://HOST:5000)")
    return value


def _no_duplicates(name: str, why: str, key: Callable[[Any], Any] = lambda v: v) -> Callable[[list | None], list | None]:
    """An after-validator refusing a list with repeated entries (two trials with one identity)."""
    def check(v: list | None) -> list | None:
        if v is not None and len({key(x) for x in v}) != len(v):
            raise ValueError(f"{name} has duplicates: {v}; {why}")
        return v

    return check


def check_name(value: str) -> str:
    """Sweep and tuning names become folder names (see NAME_PATTERN)."""
    if not re.match(NAME_PATTERN, value):
        raise ValueError(
            f"{value!r} cannot be a folder name under storage_path: use letters, digits, '_', '-' and inner '.', "
            "not starting with '.' (e.g. quickstart, fairness_cifar10-v2)"
        )
    return value


#: a sweep or tuning name (a folder name) and a storage path (a local or mounted folder), checked where declared
RunName = Annotated[str, AfterValidator(check_name)]
StoragePath = Annotated[str, AfterValidator(local_storage_path)]


#: DatasetOptions fields under another YAML name: ``seed`` would read as the trials' seed
DATASET_RENAMES = {"seed": "subset_seed"}

_DatasetFields = dataclass_model(
    "_DatasetFields", DatasetOptions, "DatasetOptions' fields (see methods.data.DatasetOptions).",
    bounds={opt: {"gt": 0} for opt in ("subset_per_class", "test_subset_per_class", "resize")},
    renames=DATASET_RENAMES,
    # read the named dataset from an ImageFolder tree (keeps its defaults)
    annotations={"format": Literal["imagefolder"] | None},
    # tuning sets the validation split from its own validation_per_class; sweeps evaluate on test
    skip=("validation_per_class",),
)


class DatasetEntry(_DatasetFields):  # type: ignore[misc,valid-type]
    """A dataset and how to load it: its name plus every field of methods.data.DatasetOptions
    (``seed`` written ``subset_seed``), generated from the dataclass so none can be missing."""

    name: str

    @model_validator(mode="after")
    def _local_paths(self) -> "DatasetEntry":
        """A data root or cache is read with local file operations: an object-store URI would
        silently become a folder named ``s3:`` (and a download would fill it)."""
        for key in ("root", "cache_dir"):
            value = getattr(self, key, None)
            m = _URI_SCHEME.match(str(value or ""))
            if m and m.group(1).lower() != "file":
                raise ValueError(f"{key} {value!r} is a {m.group(1)}:// URI; distillery reads datasets from a local or "
                                 "mounted folder: copy the data there (or mount the bucket) and give that path")
        return self

    @property
    def training_subset(self) -> bool:
        """Whether the training split is a per-class subset (see DatasetOptions.training_subset)."""
        return self.subset_per_class is not None

    def options(self) -> DatasetOptions:
        """The core's loading options, exactly as written (locations resolved by resolve_options)."""
        return DatasetOptions(**dataclass_kwargs(self, DatasetOptions, DATASET_RENAMES))


class Resources(BaseModel):
    """Per-trial resources. gpu may be a fraction (0.25 packs four trials per GPU) or a whole number."""

    model_config = _STRICT
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)
    gpu_memory_fraction: float | None = Field(None, gt=0, le=1)  # cap torch's share of a shared GPU

    @field_validator("gpu")
    @classmethod
    def _gpu_fraction(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError(f"gpu must be a fraction in [0, 1] or a whole number of GPUs, got {v}")
        return v


class ResourceOverride(BaseModel):
    """Resources for the trials matching ``method`` and/or ``ipc`` (later entries win)."""

    model_config = _STRICT
    method: str | None = None
    ipc: list[StrictPositiveInt] | None = None
    cpu: float | None = Field(None, gt=0)
    gpu: float | None = Field(None, ge=0)
    gpu_memory_fraction: float | None = Field(None, gt=0, le=1)

    @field_validator("gpu")
    @classmethod
    def _gpu_fraction(cls, v: float | None) -> float | None:
        return None if v is None else Resources._gpu_fraction(v)


class ResourceConfig(Resources):
    overrides: list[ResourceOverride] = Field(default_factory=list)

    def for_trial(self, method: str, ipc: int | None) -> Resources:
        values = {"cpu": self.cpu, "gpu": self.gpu, "gpu_memory_fraction": self.gpu_memory_fraction}
        for o in self.overrides:
            if (o.method is None or o.method == method) and (o.ipc is None or ipc in o.ipc):
                values.update({k: v for k, v in o.model_dump(include={"cpu", "gpu", "gpu_memory_fraction"}).items() if v is not None})
        return Resources(**values)


class MethodEntry(BaseModel):
    """A method's hyperparameters: ``params`` for every IPC, ``per_ipc`` on top for one IPC;
    ``ipcs`` replaces the sweep's IPC list for this method."""

    model_config = _STRICT
    params: dict[str, Any] = Field(default_factory=dict)
    per_ipc: dict[PositiveInt, dict[str, Any]] = Field(default_factory=dict)
    ipcs: Annotated[list[StrictPositiveInt] | None,
                    AfterValidator(_no_duplicates("ipcs", "each IPC is one trial per seed, list it once"))] = None

    def params_for(self, ipc: int) -> dict[str, Any]:
        return {**self.params, **self.per_ipc.get(ipc, {})}


_EvalFields = dataclass_model(
    "_EvalFields", EvalConfig, "EvalConfig's fields (see methods.eval.EvalConfig).",
    bounds={
        "epochs": {"gt": 0}, "full_data_epochs": {"gt": 0}, "lr": {"gt": 0}, "momentum": {"ge": 0, "lt": 1},
        "weight_decay": {"ge": 0}, "batch_size": {"gt": 0}, "test_batch_size": {"gt": 0},
    },
)


class EvalEntry(_EvalFields):  # type: ignore[misc,valid-type]
    """How synthetic sets are evaluated: every field of methods.eval.EvalConfig (generated from the
    dataclass, so a new protocol option is settable in YAML without touching this file), plus the
    architectures, K models per architecture and each architecture's options."""

    archs: Annotated[list[str], AfterValidator(_no_duplicates("archs", "each network is evaluated once per set, list it once",
                                                               key=str.lower))] = Field(default_factory=lambda: ["convnet"], min_length=1)
    models: StrictPositiveInt = 10
    arch_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def protocol(self) -> EvalConfig:
        """The core's evaluation protocol these fields describe."""
        return EvalConfig(**dataclass_kwargs(self, EvalConfig))


class FullBaseline(BaseModel):
    """The full-data baseline: one trial per dataset and seed (default: the sweep's first seed)."""

    model_config = _STRICT
    enabled: bool = False
    seeds: Annotated[list[StrictInt] | None,
                     AfterValidator(_no_duplicates("seeds", "one baseline trial per seed, list each once"))] = None


class StatsEntry(BaseModel):
    """How the analysis judges the study's claim and what the planner (``--dry-run --plan``) aims at."""

    model_config = _STRICT
    alpha: float = Field(0.05, gt=0, lt=1)  # the trend tests' level (rank test, Holm over the series)
    power: float = Field(0.8, gt=0, lt=1)  # the planner's target power
    #: the rise of class variance (fraction^2) from the smallest to the largest IPC the planner sizes
    #: the study for; the fairness study states its effect in figures only, so this is the user's
    #: choice (default: a third of the full-data ConvNet's class variance in the CIFAR-10 laptop study)
    target_effect: float = Field(0.005, gt=0)


class RunConfig(BaseModel):
    """What a sweep and a tuning run share (datasets, IPCs, where results go, how Ray runs trials),
    defined once: `SweepConfig` and `tune_config.TuneConfig` add their own fields."""

    model_config = _STRICT

    name: RunName
    datasets: list[DatasetEntry] = Field(min_length=1)
    ipcs: list[StrictPositiveInt] = Field(min_length=1)
    max_concurrent_trials: PositiveInt | None = None
    max_failures: int = Field(1, ge=0)  # retries of a failed trial; then it is recorded as failed
    tracking_uri: Annotated[str | None, AfterValidator(check_tracking_uri)] = None
    storage_path: StoragePath = "distillery-runs"
    device: Annotated[str, AfterValidator(check_device)] = "auto"
    num_cpus: PositiveInt | None = None  # for a local Ray instance (default: all cores)
    num_gpus: float | None = Field(None, ge=0)  # for a local Ray instance (a pretend GPU in tests)

    @field_validator("datasets", mode="before")
    @classmethod
    def _datasets_shorthand(cls, v: Any) -> Any:
        return datasets_shorthand(v)

    @model_validator(mode="after")
    def _unique_datasets_and_ipcs(self) -> "RunConfig":
        if len(set(self.ipcs)) != len(self.ipcs):
            raise ValueError(f"ipcs has duplicates: {self.ipcs}")
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"datasets has duplicate names: {names}")
        return self

    # ------------------------------------------------------------------ one pipeline for every run kind
    KIND: ClassVar[str] = "run"  # the word in messages: "sweep", "tuning"
    EXAMPLE: ClassVar[str] = "configs/quickstart.yaml"  # a shipped config of this kind

    @classmethod
    def load(cls, path: str | Path, overrides: Mapping[str, Any] | None = None, base_dir: Path | None = None) -> Self:
        """Read ``path``, apply ``--set a.b=c`` overrides, validate and resolve; UserError on any problem."""
        return cls.validate_raw(read_yaml(path, overrides, cls.KIND, cls.EXAMPLE), str(path), base_dir)

    @classmethod
    def validate_raw(cls, raw: Mapping[str, Any], source: str, base_dir: Path | None = None) -> Self:
        """Field types, then names and options (``check``), then locations made absolute once on the
        driver (``resolved``), then the files they point at: all before anything starts."""
        try:
            config = cls.model_validate(raw)
        except ValidationError as exc:
            raise UserError(format_validation_error(exc, source, cls.KIND)) from None
        config.check(source)
        resolved = config.resolved(base_dir)
        from .preflight import check_config_files  # preflight imports this module

        check_config_files(resolved, source, **resolved.preflight_options())
        return resolved

    def check(self, source: str) -> None:
        """Registry names and option values (no data loaded); UserError naming ``source`` and the field."""

    def resolved(self, base_dir: Path | None = None) -> Self:
        raise NotImplementedError

    def preflight_options(self) -> dict[str, Any]:
        """Keyword arguments of ``preflight.check_config_files`` for this kind."""
        return {}

    def _resolved_locations(self, base: Path) -> dict[str, Any]:
        """Absolute storage path, data roots and caches and tracking URI (Tune trials run in other dirs)."""
        return {
            "storage_path": _abs(self.storage_path, base),
            "tracking_uri": abs_sqlite_uri(default_tracking_uri(self.tracking_uri, base), base),
            "datasets": [
                d.model_copy(update={k: _abs(_file_path(getattr(d, k)), base) for k in ("root", "cache_dir") if getattr(d, k)})
                for d in self.datasets
            ],
        }


class SweepConfig(RunConfig):
    methods: dict[str, MethodEntry] = Field(min_length=1)
    seeds: list[StrictInt] = Field(min_length=1)
    eval: EvalEntry = EvalEntry()
    full_baseline: FullBaseline = FullBaseline()
    resources: ResourceConfig = ResourceConfig()
    checkpoint_every_s: float = Field(30.0, gt=0)
    analyze: bool = True  # run `distillery analyze` at the end
    stats: StatsEntry = StatsEntry()

    @field_validator("methods", mode="before")
    @classmethod
    def _methods_shorthand(cls, v: Any) -> Any:
        """``methods: [random, dm]`` means default hyperparameters; ``dm: null`` too."""
        if isinstance(v, list):
            v = {m: {} for m in v}
        if isinstance(v, dict):
            return {k: ({} if val is None else val) for k, val in v.items()}
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_shorthand(cls, v: Any) -> Any:
        """``seeds: 3`` means [0, 1, 2]."""
        return list(range(v)) if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _unique_seeds(self) -> "SweepConfig":
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds has duplicates: {self.seeds}")
        return self

    KIND: ClassVar[str] = "sweep"

    def check(self, source: str) -> None:
        check_names(self, source)

    # ------------------------------------------------------------------ resolution
    def resolved(self, base_dir: Path | None = None) -> "SweepConfig":
        """Locations made absolute once, on the driver, and the methods' path options with them."""
        base = (base_dir or Path.cwd()).resolve()
        methods = {
            name: e.model_copy(update={
                "params": absolute_method_paths(name, e.params, base),
                "per_ipc": {ipc: absolute_method_paths(name, p, base) for ipc, p in e.per_ipc.items()},
            })
            for name, e in self.methods.items()
        }
        return self.model_copy(update={**self._resolved_locations(base), "methods": methods})


def default_tracking_uri(configured: str | None, base: Path) -> str:
    """The MLflow URI, by precedence: ``--tracking-uri`` (written into the config as an override),
    the config's ``tracking_uri``, $MLFLOW_TRACKING_URI (MLflow's own convention, so a cluster's
    environment is honoured), then sqlite:///<base>/mlflow.db."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{base / 'mlflow.db'}"




def abs_sqlite_uri(uri: str, base: Path) -> str:
    """A relative sqlite URL (sqlite:///x.db) made absolute: trials and servers run elsewhere."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{_abs(uri[len('sqlite:///'):], base)}"
    return uri


def _abs(path: str, base: Path) -> str:
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (base / p).resolve())


def absolute_method_paths(method: str, params: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """``params`` with the method's path options (``DistillMethod.path_options``, e.g. MTT's
    buffer_dir) made absolute against ``base``, once on the driver: resolved in a Tune worker, a
    relative path would point into the trial's own directory (experts built twice, in two places)."""
    from distillery.methods.distill.base import METHODS
    from distillery.methods.distill import load_all  # noqa: F401  (registers every method)

    paths = METHODS.get(method).path_options if method in METHODS.names() else ()
    for k in paths:
        m = _URI_SCHEME.match(str(params.get(k, "")))
        if m and m.group(1).lower() != "file":  # an object store would silently become a local folder named "s3:"
            raise UserError(f"methods.{method}.params.{k}: {params[k]!r} is a {m.group(1)}:// URI; distillery reads and "
                            "writes it with local file operations, so use a folder every node mounts (local disk or NFS)")
    return {k: (_abs(_file_path(str(v)), base) if k in paths and isinstance(v, (str, os.PathLike)) else v) for k, v in params.items()}


def _file_path(value: str) -> str:
    return value[len("file://"):] or "/" if value.lower().startswith("file://") else value


def load_config(path: str | Path, overrides: Mapping[str, str] | None = None, base_dir: Path | None = None) -> SweepConfig:
    """Read, apply ``--set a.b=c`` overrides, validate and resolve; UserError on any problem."""
    return SweepConfig.load(path, overrides, base_dir)


def validate_config(raw: Mapping[str, Any], source: str = "config", base_dir: Path | None = None) -> SweepConfig:
    return SweepConfig.validate_raw(raw, source, base_dir)


def check_datasets_and_eval(datasets: list[DatasetEntry], evaluation: EvalEntry, fail: Callable[[str, str], None]) -> None:
    """Registered dataset and network names (shared by sweep and tuning configs)."""
    from distillery.methods.aug.dsa import parse_strategy
    from distillery.methods.data import DATASETS
    from distillery.methods.nets import NETWORKS, check_net_options

    for i, d in enumerate(datasets):
        if d.name not in DATASETS:
            fail(f"datasets[{i}].name", f"unknown dataset {d.name!r}; choose one of: {', '.join(DATASETS.names())}")
    for arch in evaluation.archs:
        if arch not in NETWORKS:
            fail("eval.archs", f"unknown network {arch!r}; choose one of: {', '.join(NETWORKS.names())}")
    for arch, options in evaluation.arch_options.items():
        if arch not in evaluation.archs:
            fail(f"eval.arch_options.{arch}", f"{arch!r} is not in eval.archs {evaluation.archs}")
        try:
            check_net_options(arch, options)
        except UserError as exc:
            fail(f"eval.arch_options.{arch}", str(exc))
    if evaluation.dsa and evaluation.dsa_strategy is not None:
        try:
            parse_strategy(evaluation.dsa_strategy)
        except UserError as exc:
            fail("eval.dsa_strategy", str(exc))


def datasets_shorthand(v: Any) -> Any:
    """``datasets: digits`` or ``[digits, {name: cifar10, root: ...}]`` are accepted."""
    if isinstance(v, (str, dict)):
        v = [v]
    if not isinstance(v, list):
        return v  # pydantic reports the wrong type with the field name
    return [{"name": d} if isinstance(d, str) else d for d in v]


def check_names(config: SweepConfig, source: str) -> None:
    """Registry lookups and method-option validation (pure, no data loaded)."""
    from distillery.methods.distill.base import get_method
    from distillery.methods.registry import UnknownNameError

    def fail(field: str, msg: str) -> None:
        raise UserError(f"{source}: {field}: {msg}")

    check_datasets_and_eval(config.datasets, config.eval, fail)
    gpus = [config.resources.for_trial(m, ipc).gpu for m, e in config.methods.items() for ipc in (e.ipcs or config.ipcs)]
    check_device_resources(config.device, gpus, fail)
    if FULL_DATA_METHOD in config.methods:
        fail("methods.full", "the full-data baseline is not a per-IPC method; set full_baseline: {enabled: true} instead")
    for name, entry in config.methods.items():
        try:
            method = get_method(name)
        except UnknownNameError as exc:
            fail(f"methods.{name}", str(exc))
        grid = entry.ipcs or config.ipcs
        for ipc in entry.per_ipc:
            if ipc not in grid:
                where = f"methods.{name}.ipcs" if entry.ipcs else "ipcs"
                fail(f"methods.{name}.per_ipc.{ipc}", f"IPC {ipc} is not in {where} {grid}, so these options would never be used; "
                     f"add {ipc} to {where} or remove the entry")
        for ipc in grid:
            for d in config.datasets:
                try:
                    method.make_config(d.name, ipc, entry.params_for(ipc), training_subset=d.training_subset)
                except UserError as exc:
                    fail(f"methods.{name}.params", str(exc))
    grid_ipcs = {ipc for name, entry in config.methods.items() for ipc in (entry.ipcs or config.ipcs)}
    for i, o in enumerate(config.resources.overrides):
        targets = [config.methods[o.method]] if o.method in config.methods else list(config.methods.values())
        cells = {ipc for entry in targets for ipc in (entry.ipcs or config.ipcs)}
        missing = sorted(set(o.ipc or ()) - cells)
        if missing and o.method != FULL_DATA_METHOD:
            whose = f"method {o.method!r}" if o.method else "the sweep"
            fail(f"resources.overrides.{i}.ipc", f"IPC {missing} matches no trial of {whose} (IPCs {sorted(cells or grid_ipcs)}), "
                 "so the override would never apply; fix the IPC or remove it")
        if o.method == FULL_DATA_METHOD and o.ipc is not None:
            fail("resources.overrides.ipc", f"the full-data baseline ({FULL_DATA_METHOD}) has no IPC; drop ipc from its override")
        if o.method is not None and o.method not in config.methods and o.method != FULL_DATA_METHOD:  # overrides may target the baseline cell by its label
            fail("resources.overrides.method", f"{o.method!r} is not one of the sweep's methods {sorted(config.methods)}")


def check_device_resources(device: str, gpus: list[float], fail: Callable[[str, str], None]) -> None:
    """``device: cuda`` needs a GPU in every trial's resources: Ray hides GPUs from a trial that
    asked for none, so it would run on the CPU (or fail) while the config says cuda."""
    if device.startswith("cuda") and min(gpus, default=0) <= 0:
        fail("device", f"{device!r} but resources.gpu is 0 for some trials, which Ray then gives no GPU; set resources.gpu "
             "(e.g. 1, or 0.5 to share one) or device: auto")


def format_validation_error(exc: ValidationError, source: str, kind: str = "sweep") -> str:
    lines = [f"{source}: invalid {kind} config:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field" + (" (method options go under params:)" if loc.startswith("methods.") else "")
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "value_error":  # our validators' messages already quote the value
            msg = msg.removeprefix("Value error, ")
        got = err.get("input")
        quiet = ("missing", "extra_forbidden", "value_error")
        tail = f" (got {got!r})" if err["type"] not in quiet and not isinstance(got, (dict, list)) else ""
        lines.append(f"  {loc}: {msg}{tail}")
    return "\n".join(lines)
