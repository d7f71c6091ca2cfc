"""Load a sweep into one tidy frame: one row per evaluation model per trial.

Sources (layouts in docs/tracking-schema.md):
  * MLflow (any tracking URI): trial runs of an experiment or nested under a parent run; each
    finished trial's ``per_class.csv`` artifact is the ground truth, its tags give the cell.
  * A Tune results directory: the final ``result.json`` record of each trial carries ``per_class``.

Frame layout (``SweepData.models``), chosen so that one row is one independent-ish observation
(a trained evaluation model) and every per-model statistic is a column:

  run_id, run_name, trial_hash, dataset, method, arch, ipc (int), seed (int), model (int),
  full_data (bool), soft_labels (bool: the set carried soft labels), n_classes (int), images (int: the images
  trained on; ipc * n_classes unless the set has a decoder),
  storage_ipc (float: stored numbers as images per class; = ipc unless the set has a decoder),
  distill_seconds, eval_seconds, compute_seconds, gpu_seconds (float, per trial),
  mean_acc, class_var, class_std, worst_class_acc, gap, cv (float, per model, schema definitions),
  acc_0 .. acc_{C-1} (float: per-class accuracy as a fraction; NaN beyond a dataset's n_classes).

Per-class accuracies are WIDE (``acc_<class_index>``) because every per-model metric is a
row-wise reduction of them and the heatmap is a groupby-mean; ``to_long`` gives the tidy
(…, class_index, class_name, acc) view when one is needed. Class names live in
``SweepData.class_names[dataset]`` (the index into that list is the ``<c>`` of ``acc_<c>``).

Per-model metrics are recomputed from per-class accuracies (not taken from the logged trial
metrics, which are means over models) and cross-checked against the logged ``A/mean_acc`` and
``A/class_var``; a mismatch becomes a warning, because it means the writer and the reader
disagree about a definition.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import unquote

import numpy as np
import pandas as pd

from .errors import AnalysisError, NoFinishedTrialsError, UnknownExperimentError
from distillery.methods.schema import Tag

METRICS: tuple[str, ...] = ("mean_acc", "class_var", "class_std", "worst_class_acc", "gap", "cv")
FINISHED = "FINISHED"
TRIAL_COLUMNS: tuple[str, ...] = (
    "run_id", "run_name", "trial_hash", "dataset", "method", "ipc", "seed", "full_data", "status",
    "error", "used", "soft_labels", "distill_seconds", "eval_seconds", "compute_seconds", "gpu_seconds", "start_time",
)
_CHECK_TOL = 1e-4  # per_class.csv vs logged metric; generous for CSV rounding


@dataclass
class SweepData:
    """A loaded sweep: the model-level frame plus the bookkeeping a report needs."""

    models: pd.DataFrame
    trials: pd.DataFrame  # one row per trial run found (any status); `used` marks those in `models`
    class_names: dict[str, list[str]]
    source: str
    tracking_uri: str | None = None
    experiment_id: str | None = None
    experiment_name: str | None = None
    parent_run_id: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def problems(self) -> pd.DataFrame:
        """Trials that were found but are not analysed (failed, running, or unusable), with why."""
        t = self.trials
        return t[~t["used"]].reset_index(drop=True) if len(t) else t


def per_model_metrics(acc: np.ndarray) -> dict[str, np.ndarray]:
    """The schema's fairness metrics for each row of ``acc`` [n_models, n_classes] (fractions).

    class_var is the POPULATION variance over classes (ddof=0), as the study and methods/metrics use.
    """
    acc = np.asarray(acc, dtype=float)
    mean = acc.mean(axis=1)
    var = acc.var(axis=1)
    std = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        cv = np.where(mean > 0, std / mean, np.nan)
    return {
        "mean_acc": mean,
        "class_var": var,
        "class_std": std,
        "worst_class_acc": acc.min(axis=1),
        "gap": acc.max(axis=1) - acc.min(axis=1),
        "cv": cv,
    }


def acc_columns(frame: pd.DataFrame) -> list[str]:
    """The ``acc_<c>`` columns of a model frame, in class-index order."""
    cols = [c for c in frame.columns if c.startswith("acc_") and c[4:].isdigit()]
    return sorted(cols, key=lambda c: int(c[4:]))


def to_long(models: pd.DataFrame, class_names: Mapping[str, list[str]] | None = None) -> pd.DataFrame:
    """Tidy per-class view: one row per (trial, arch, model, class) with class_index, class_name, acc."""
    ids = [c for c in models.columns if c not in acc_columns(models) and c not in METRICS]
    long = models.melt(id_vars=ids, value_vars=acc_columns(models), var_name="class_index", value_name="acc")
    long = long.dropna(subset=["acc"])
    long["class_index"] = long["class_index"].str[4:].astype(int)
    names = class_names or {}
    long["class_name"] = [
        (names.get(d) or [])[c] if c < len(names.get(d) or []) else str(c)
        for d, c in zip(long["dataset"], long["class_index"])
    ]
    return long.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# shared: per-trial long results -> model rows


def models_from_per_class(trial: Mapping[str, Any], per_class: pd.DataFrame) -> pd.DataFrame:
    """Model rows of one trial from its tidy per-class frame (arch, model, class_index, acc).

    ``trial`` needs run_id, dataset, method, ipc, seed, full_data (cost keys optional). Public so
    tests and notebooks can build frames with exactly the loader's columns.
    """
    rows = []
    for (arch, model), g in per_class.groupby(["arch", "model"], sort=True):
        g = g.sort_values("class_index")
        n_classes = int(g["class_index"].max()) + 1
        acc = np.full(n_classes, np.nan)
        acc[g["class_index"].to_numpy(int)] = g["acc"].to_numpy(float)
        if np.isnan(acc).any():
            raise ValueError(f"arch {arch} model {model}: missing class indices")
        metrics = {k: float(v[0]) for k, v in per_model_metrics(acc[None, :]).items()}
        row = {
            "run_id": trial["run_id"], "run_name": trial.get("run_name"), "trial_hash": trial.get("trial_hash"),
            "dataset": trial["dataset"], "method": trial["method"], "arch": str(arch),
            "ipc": int(trial["ipc"]), "seed": int(trial["seed"]), "model": int(model),
            "full_data": bool(trial["full_data"]), "soft_labels": bool(trial.get("soft_labels", False)), "n_classes": n_classes,
            # decoded (trained-on) images: more than ipc x classes for a parameterised set (IDC, IDM)
            "images": _images(trial, n_classes),
            # the storage budget (images-per-class equivalent): differs from ipc only for parameterised sets
            "storage_ipc": _storage_ipc(trial),
        }
        for k in ("distill_seconds", "eval_seconds", "compute_seconds", "gpu_seconds"):
            row[k] = trial.get(k, np.nan)
        row.update(metrics)
        row.update({f"acc_{c}": float(a) for c, a in enumerate(acc)})
        rows.append(row)
    return pd.DataFrame(rows)


def _check_against_logged(trial: Mapping[str, Any], rows: pd.DataFrame, logged: Mapping[str, float]) -> list[str]:
    """Compare our per-model means with the trial's logged per-arch metrics (definition drift)."""
    out = []
    for arch, g in rows.groupby("arch"):
        for metric in ("mean_acc", "class_var"):
            key = f"{arch}/{metric}"
            if key in logged and logged[key] is not None and not math.isnan(float(logged[key])):
                ours = float(g[metric].mean())
                if abs(ours - float(logged[key])) > _CHECK_TOL:
                    out.append(
                        f"trial {trial.get('run_name') or trial['run_id']}: {key} logged {float(logged[key]):.6g} "
                        f"but per-class results give {ours:.6g} (writer and reader disagree on the definition?)"
                    )
    return out


def _costs(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Trial cost columns. gpu_seconds = (distill + eval seconds) x GPU fraction held."""
    def num(key: str) -> float:
        v = metrics.get(key)
        try:
            return float(v) if v is not None else np.nan
        except (TypeError, ValueError):
            return np.nan

    distill, evals, gpu = num("distill_seconds"), num("eval_seconds"), num("resources/gpu")
    compute = np.nansum([distill, evals]) if not (np.isnan(distill) and np.isnan(evals)) else np.nan
    return {
        "distill_seconds": distill,
        "eval_seconds": evals,
        "compute_seconds": float(compute),
        "gpu_seconds": float(compute * gpu) if not (np.isnan(compute) or np.isnan(gpu)) else np.nan,
    }


def _images(trial: Mapping[str, Any], n_classes: int) -> int:
    """The images the evaluation trained on: the recorded ``synthetic_images`` of a distilled set,
    else (older results, the full-data baseline) ipc x classes."""
    value = trial.get("synthetic_images")
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float("nan")
    if trial.get("full_data") or not np.isfinite(value) or value <= 0:
        return int(trial["ipc"]) * n_classes
    return int(value)


def _storage_ipc(trial: Mapping[str, Any]) -> float:
    """The trial's storage budget (images-per-class equivalent); results written before it was
    recorded, and the full-data baseline, fall back to the IPC."""
    value = trial.get("storage_ipc")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return float(trial["ipc"])
    return value if np.isfinite(value) else float(trial["ipc"])


def _is_true(value: Any) -> bool:
    return str(value).strip().lower() in {"true", "1", "yes"}


def _select_and_build(trials: list[dict[str, Any]], loader, warnings: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pick one run per trial_hash (FINISHED first, then newest), load the chosen finished ones.

    A resumed trial can leave several runs with the same hash; counting them all would double a cell.
    ``loader(trial) -> (per_class long frame, logged metrics)``; a failure marks the trial unusable.
    """
    frames: list[pd.DataFrame] = []
    ordered = sorted(trials, key=lambda t: (t["status"] != FINISHED, -(t.get("start_time") or 0)))
    seen: set[str] = set()
    cells: dict[tuple, str] = {}
    for t in ordered:
        key = t.get("trial_hash") or t["run_id"]
        if t.get("full_data"):  # one baseline per (dataset, seed): its hash changed once (ipc 1 -> null), see docs
            key = f"full-data:{t.get('dataset')}:{t.get('seed')}"
        t["used"] = False
        if key in seen:
            t["error"] = t.get("error") or "superseded by another run of the same trial_hash"
            if t["status"] == FINISHED:
                warnings.append(f"trial_hash {key}: several FINISHED runs; using the newest, ignoring run {t['run_id']}")
            continue
        seen.add(key)
        if t["status"] != FINISHED:
            continue
        # a sweep has one trial per (dataset, method, IPC, seed): two finished hashes of one cell come from
        # a --resume across a change of its identity (e.g. the seeding scheme); pooling them would mix two
        # designs in one cell, so only the newest counts
        cell = (t.get("dataset"), t.get("method"), t.get("ipc"), t.get("seed"), bool(t.get("full_data")))
        if t.get("trial_hash") and cell in cells:
            t["error"] = (f"superseded by the newer run {cells[cell]} of the same cell with another trial_hash "
                          "(its identity changed under --resume); not pooled")
            warnings.append(f"{t.get('run_name') or t['run_id']}: {t['error']}")
            continue
        cells[cell] = t["run_id"]
        try:
            per_class, logged = loader(t)
            _baseline_ipc(t, per_class, warnings)
            rows = models_from_per_class(t, per_class)
            if rows.empty:
                raise ValueError("per-class results are empty")
        except Exception as exc:  # one bad trial must not hide the rest of the sweep
            t["error"] = f"unusable results: {exc}"
            warnings.append(f"trial {t.get('run_name') or t['run_id']}: {t['error']}")
            continue
        warnings.extend(_check_against_logged(t, rows, logged))
        t["used"] = True
        frames.append(rows)
    trial_frame = pd.DataFrame(trials)
    for col in TRIAL_COLUMNS:
        if col not in trial_frame.columns:
            trial_frame[col] = np.nan
    trial_frame = trial_frame[list(TRIAL_COLUMNS)]
    models = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not models.empty:
        models = _order_columns(models)
    return models, trial_frame


def _baseline_ipc(t: dict[str, Any], per_class: pd.DataFrame, warnings: list[str]) -> None:
    """The schema gives the full-data baseline ipc = its per-class training count; a tag that is
    smaller than synthetic_images / classes (e.g. a placeholder 1) is replaced by that estimate."""
    n_img = t.get("synthetic_images")
    if not t["full_data"] or n_img is None or not np.isfinite(float(n_img)) or per_class.empty:
        return
    est = int(round(float(n_img) / (int(per_class["class_index"].max()) + 1)))
    if est > int(t["ipc"]):
        warnings.append(f"full-data trial {t.get('run_name') or t['run_id']}: ipc tag {t['ipc']} is not its per-class "
                        f"training count; using synthetic_images / classes = {est}")
        t["ipc"] = est


def _order_columns(models: pd.DataFrame) -> pd.DataFrame:
    accs = acc_columns(models)
    front = [c for c in models.columns if c not in accs]
    out = models[front + accs].sort_values(["dataset", "method", "arch", "ipc", "seed", "model"], kind="stable")
    return out.reset_index(drop=True)


def _class_names_from(per_class_by_dataset: Mapping[str, pd.DataFrame]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ds, pc in per_class_by_dataset.items():
        if "class_name" in pc.columns:
            names = pc.drop_duplicates("class_index").sort_values("class_index")
            out[ds] = [str(n) for n in names["class_name"]]
    return out


def _require_models(data: SweepData, what: str) -> SweepData:
    if data.models.empty:
        counts = data.trials["status"].value_counts().to_dict() if len(data.trials) else {}
        raise NoFinishedTrialsError(
            f"{what} has no FINISHED trial with per-class results (trial runs found by status: {counts or 'none'}); "
            "wait for the sweep to finish, or resume it (`distillery sweep ... --resume`), then analyse again"
        )
    return data


# ----------------------------------------------------------------------------------------------
# MLflow


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI (absolute when path starts with '/'), else None."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return Path(unquote(tracking_uri[len(prefix):].split("?", 1)[0]))


def mlflow_client(tracking_uri: str):
    """An MlflowClient for an EXISTING store (opening a missing sqlite file would silently create one)."""
    db = sqlite_path(tracking_uri)
    if db is not None and not db.exists():
        raise UnknownExperimentError(
            f"no MLflow database at {db} (tracking URI {tracking_uri!r}); pass --tracking-uri "
            "sqlite:////abs/path/mlflow.db pointing at the store the sweep wrote"
        )
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


@contextlib.contextmanager
def quiet_downloads():
    """Silence MLflow's per-file download progress bars (hundreds of them for a sweep) temporarily."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _search_all(client, experiment_ids: list[str], filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def resolve_sweep(client, experiment: str | None, parent_run_id: str | None) -> tuple[str, str, str | None, list[str]]:
    """(experiment_id, experiment_name, parent_run_id, warnings) for an experiment name and/or parent run."""
    warnings: list[str] = []
    exp = None
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = sorted(e.name for e in client.search_experiments())
            raise UnknownExperimentError(
                f"unknown experiment {experiment!r} in {client.tracking_uri}; existing experiments: "
                f"{', '.join(names) or 'none'} (the experiment is the sweep's name; pass --tracking-uri if the "
                "sweep logged elsewhere)"
            )
    if parent_run_id is not None:
        from mlflow.exceptions import MlflowException

        try:
            parent = client.get_run(parent_run_id)
        except MlflowException:
            raise UnknownExperimentError(
                f"no run with id {parent_run_id!r} in {client.tracking_uri}; pass the sweep's parent run id "
                "(tag distillery.kind=sweep) or use --experiment NAME instead"
            ) from None
        if exp is not None and parent.info.experiment_id != exp.experiment_id:
            raise UnknownExperimentError(
                f"run {parent_run_id!r} belongs to experiment id {parent.info.experiment_id}, not to "
                f"{experiment!r}; drop one of --experiment / --parent-run"
            )
        exp = exp or client.get_experiment(parent.info.experiment_id)
        return exp.experiment_id, exp.name, parent_run_id, warnings
    if exp is None:
        raise AnalysisError("name the sweep to analyse: --experiment NAME, --parent-run RUN_ID or --tune-dir DIR")
    parents = _search_all(client, [exp.experiment_id], f"tags.`{Tag.KIND}` = 'sweep'")
    parents.sort(key=lambda r: r.info.start_time or 0, reverse=True)
    if len(parents) > 1:
        warnings.append(
            f"experiment {exp.name!r} has {len(parents)} sweep parent runs; analysing the newest "
            f"({parents[0].info.run_id}); pass --parent-run to choose another"
        )
    return exp.experiment_id, exp.name, (parents[0].info.run_id if parents else None), warnings


def _mlflow_trial(run) -> dict[str, Any]:
    tags, metrics = run.data.tags, run.data.metrics
    status = tags.get(Tag.STATUS) or run.info.status
    t: dict[str, Any] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "trial_hash": tags.get(Tag.TRIAL_HASH),
        "dataset": tags.get(Tag.DATASET),
        "method": tags.get(Tag.METHOD),
        "ipc": tags.get(Tag.IPC),
        "seed": tags.get(Tag.SEED),
        "full_data": _is_true(tags.get(Tag.FULL_DATA)) or tags.get(Tag.METHOD) == "full",
        "soft_labels": _is_true(tags.get(Tag.SOFT_LABELS)),
        "status": str(status).upper(),
        "error": tags.get(Tag.ERROR),
        "start_time": run.info.start_time,
        "parent_run_id": tags.get(Tag.PARENT),
    }
    t.update(_costs(metrics))
    t["synthetic_images"] = metrics.get("synthetic_images")
    t["storage_ipc"] = metrics.get("storage_ipc")
    missing = [k for k in ("dataset", "method", "ipc", "seed") if t[k] in (None, "")]
    if missing and t["status"] == FINISHED:
        t["status"], t["error"] = "INVALID", f"missing tags: {', '.join('distillery.' + m for m in missing)}"
    else:
        try:
            t["ipc"], t["seed"] = int(t["ipc"]), int(t["seed"])
        except (TypeError, ValueError):
            if t["status"] == FINISHED:
                t["status"], t["error"] = "INVALID", f"non-integer ipc/seed tags: {t['ipc']!r}/{t['seed']!r}"
    return t


def load_mlflow(
    tracking_uri: str,
    experiment: str | None = None,
    parent_run_id: str | None = None,
    include_unfinished: bool = False,
) -> SweepData:
    """Load a sweep's trials from MLflow (experiment name and/or parent run id).

    Only trials whose status is FINISHED contribute rows unless ``include_unfinished`` (then RUNNING
    trials that already have a per_class.csv are used too); the rest are listed in ``trials``.
    """
    import mlflow.artifacts

    client = mlflow_client(tracking_uri)
    exp_id, exp_name, parent_id, warnings = resolve_sweep(client, experiment, parent_run_id)
    flt = f"tags.`{Tag.KIND}` = 'trial'"
    if parent_run_id is not None:  # explicit parent: exactly its children
        flt += f" and tags.`{Tag.PARENT}` = '{parent_run_id}'"
    runs = _search_all(client, [exp_id], flt)
    if parent_run_id is None and parent_id is not None:
        runs = [r for r in runs if r.data.tags.get(Tag.PARENT) in (parent_id, None)]
    trials = [_mlflow_trial(r) for r in runs]
    metrics_by_run = {r.info.run_id: dict(r.data.metrics) for r in runs}
    if include_unfinished:
        for t in trials:
            if t["status"] == "RUNNING":
                t["status"] = FINISHED
    per_class_by_dataset: dict[str, pd.DataFrame] = {}

    with tempfile.TemporaryDirectory(prefix="distillery-analysis-") as tmp, quiet_downloads():
        def loader(t: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, float]]:
            local = mlflow.artifacts.download_artifacts(
                run_id=t["run_id"], artifact_path="per_class.csv", dst_path=os.path.join(tmp, t["run_id"]),
                tracking_uri=tracking_uri,
            )
            pc = pd.read_csv(local)
            need = {"arch", "model", "class_index", "acc"}
            if not need <= set(pc.columns):
                raise ValueError(f"per_class.csv lacks columns {sorted(need - set(pc.columns))}")
            per_class_by_dataset.setdefault(t["dataset"], pc)
            return pc, metrics_by_run[t["run_id"]]

        models, trial_frame = _select_and_build(trials, loader, warnings)
    what = f"experiment {exp_name!r}" + (f" (parent run {parent_id})" if parent_id else "")
    data = SweepData(
        models=models, trials=trial_frame, class_names=_class_names_from(per_class_by_dataset),
        source=f"MLflow {tracking_uri}, {what}", tracking_uri=tracking_uri, experiment_id=exp_id,
        experiment_name=exp_name, parent_run_id=parent_id, warnings=warnings,
    )
    return _require_models(data, what)


def fetch_synthetic_set(tracking_uri: str, run_id: str, dst_dir: Path) -> dict[str, Any] | None:
    """A trial's ``synthetic_set.pt`` (SyntheticSet.state_dict()) or None when it has none."""
    import mlflow.artifacts
    import torch
    from mlflow.exceptions import MlflowException

    try:
        with quiet_downloads():
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="synthetic_set.pt", dst_path=str(dst_dir / run_id),
                tracking_uri=tracking_uri,
            )
    except (MlflowException, OSError):
        return None
    return torch.load(local, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------------------------
# Tune results directory


_TUNE_KEYS = ("training_iteration", "trial_id")


def _is_tune_result(path: Path) -> bool:
    """Tune's result.json is JSON lines whose records carry Tune's auto-filled keys; the sweep's own
    trials/<hash>/result/result.json (one record with a 'summary') sits under the same storage path."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    return isinstance(rec, dict) and any(k in rec for k in _TUNE_KEYS)
    except (OSError, json.JSONDecodeError):
        return False
    return False


def _last_record_with_per_class(path: Path) -> dict[str, Any] | None:
    last = None
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "per_class" in rec or any(k.startswith("per_class/") for k in rec):
                last = rec
    return last


def _per_class_from_record(rec: Mapping[str, Any]) -> pd.DataFrame:
    """{arch: [[acc per class] per model]} (nested, or flattened by Tune as per_class/<arch>) -> long frame."""
    pc = rec.get("per_class")
    if not isinstance(pc, Mapping):
        pc = {k.split("/", 1)[1]: v for k, v in rec.items() if k.startswith("per_class/")}
    names = list(rec.get("class_names") or [])
    rows = []
    for arch, per_model in pc.items():
        for m, accs in enumerate(per_model):
            for c, a in enumerate(accs):
                rows.append((arch, m, c, names[c] if c < len(names) else str(c), float(a)))
    return pd.DataFrame(rows, columns=["arch", "model", "class_index", "class_name", "acc"])


def _tune_trial(trial_dir: Path, root: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    rec = _last_record_with_per_class(trial_dir / "result.json")
    first: dict[str, Any] = {}
    if rec is None:  # no final report: use whatever the last record says about the cell
        try:
            lines = [ln for ln in (trial_dir / "result.json").read_text().splitlines() if ln.strip()]
            first = json.loads(lines[-1]) if lines else {}
        except (OSError, json.JSONDecodeError):
            first = {}
    src = rec or first
    cfg = src.get("config") or {}
    error = None
    if rec is None:
        err = trial_dir / "error.txt"
        if err.exists():
            tail = [ln for ln in err.read_text(errors="replace").splitlines() if ln.strip()]
            error = tail[-1][:300] if tail else "error.txt is empty"
    t: dict[str, Any] = {
        "run_id": str(trial_dir.relative_to(root)),
        "run_name": src.get("trial_id") or trial_dir.name,
        "trial_hash": src.get("trial_hash"),
        "dataset": src.get("dataset", cfg.get("dataset")),
        "method": src.get("method", cfg.get("method")),
        "ipc": src.get("ipc", cfg.get("ipc")),
        "seed": src.get("seed", cfg.get("seed")),
        "status": FINISHED if rec is not None else ("FAILED" if error else "RUNNING"),
        "error": error,
        "start_time": src.get("timestamp"),
    }
    t["full_data"] = _is_true(src.get("full_data")) or t["method"] == "full"
    t["soft_labels"] = _is_true(src.get("soft_labels"))
    t["storage_ipc"] = src.get("storage_ipc")
    t["synthetic_images"] = src.get("synthetic_images")
    t.update(_costs(src))
    if t["status"] == FINISHED:
        try:
            t["ipc"], t["seed"] = int(t["ipc"]), int(t["seed"])
            if not t["dataset"] or not t["method"]:
                raise ValueError
        except (TypeError, ValueError):
            t["status"], t["error"] = "INVALID", "final report lacks dataset/method/ipc/seed"
    return t, rec


def load_tune_dir(path: str | os.PathLike[str], include_unfinished: bool = False) -> SweepData:
    """Load every trial under a Tune results directory from its result.json (no MLflow needed).

    ``include_unfinished`` is accepted for symmetry with load_mlflow; a Tune trial without its final
    report has no per-class results, so it can never contribute rows.
    """
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise UnknownExperimentError(f"Tune results directory {str(path)!r} does not exist; pass --tune-dir DIR "
                                     "(the sweep's storage path / experiment directory)")
    trial_dirs = sorted({p.parent for p in root.rglob("result.json") if _is_tune_result(p)})
    if not trial_dirs:
        raise NoFinishedTrialsError(f"no Tune result.json under {root}; pass the sweep's Tune directory "
                                    "(<storage_path>/<sweep name>/tune) or the sweep's storage directory")
    trials, records, warnings = [], {}, []
    per_class_by_dataset: dict[str, pd.DataFrame] = {}
    for d in trial_dirs:
        t, rec = _tune_trial(d, root)
        trials.append(t)
        records[t["run_id"]] = rec

    def loader(t: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, float]]:
        rec = records[t["run_id"]]
        pc = _per_class_from_record(rec)
        per_class_by_dataset.setdefault(t["dataset"], pc)
        logged = {k: v for k, v in rec.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return pc, logged

    models, trial_frame = _select_and_build(trials, loader, warnings)
    data = SweepData(models=models, trials=trial_frame, class_names=_class_names_from(per_class_by_dataset),
                     source=f"Tune results {root}", warnings=warnings)
    return _require_models(data, f"Tune directory {str(root)!r}")


def iter_cells(models: pd.DataFrame, keys: Iterable[str] = ("dataset", "method", "arch", "ipc")):
    """(key tuple, group) over cells in a stable order: the one grouping every module uses."""
    yield from models.groupby(list(keys), sort=True)
