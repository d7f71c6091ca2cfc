"""MLflow tracking for sweeps, written by the driver only.

Trials never talk to MLflow: they report through Tune and leave their artifacts in their
hash-addressed directory; this module (running in the driver, as Tune callbacks) is the single
writer. That is what makes the embedded sqlite store safe under any number of concurrent trials
("database is locked" needs two writers), and it gives resume a single place to guarantee one
MLflow run per trial: runs are found again by their trial-hash tag, never created twice.
A tracking server (``--tracking-uri http://host:5000``) is needed for a shared UI and for drivers
on other machines; it works the same way.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from distillery.methods.schema import FAIRNESS_METRICS, Tag, TrialSummary

KIND_TAG, HASH_TAG, STATUS_TAG, ERROR_TAG, PARENT_TAG = Tag.KIND, Tag.TRIAL_HASH, Tag.STATUS, Tag.ERROR, Tag.PARENT


def safe_call(fn: Callable[..., Any], *args: Any) -> None:
    """Run a tracking call from a Tune callback: an MLflow problem is printed, never raised, so it
    cannot kill a sweep or a study (the results are safe on disk / in Optuna and reconciled later)."""
    try:
        fn(*args)
    except Exception as exc:
        print(f"[mlflow] warning: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:6000]
    return out


class SweepTracker:
    """Experiment, parent run and one nested run per trial hash."""

    def __init__(self, tracking_uri: str, sweep_name: str) -> None:
        from .redact import redact

        if redact(tracking_uri) != tracking_uri:  # MLflow prints "View run at: <url>" with the URL's password in it
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.sweep_name = sweep_name
        self.experiment_id = self._experiment()
        self.parent_run_id: str | None = None
        self.runs: dict[str, tuple[str, str]] = {}  # trial hash -> (run id, MLflow status)

    def _experiment(self) -> str:
        exp = self.client.get_experiment_by_name(self.sweep_name)
        if exp is not None:
            return exp.experiment_id
        artifact_location = None
        if self.uri.startswith("sqlite:///"):
            db = Path(self.uri[len("sqlite:///"):])
            artifact_location = (db.parent / "mlartifacts").as_uri()
        return self.client.create_experiment(self.sweep_name, artifact_location=artifact_location)

    def existing_parent(self, kind: str = "sweep") -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{KIND_TAG}` = '{kind}'", max_results=10, order_by=["attributes.start_time ASC"]
        )
        return runs[0].info.run_id if runs else None

    def start_parent(self, sweep_hash: str, resume: bool, kind: str = "sweep") -> str:
        """The parent run (kind 'sweep' or 'tune'): the existing one when resuming, else a new one."""
        run_id = self.existing_parent(kind) if resume else None
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=self.sweep_name, tags={KIND_TAG: kind, Tag.SWEEP_HASH: sweep_hash})
            run_id = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.parent_run_id = run_id
        self._load_trial_runs()
        return run_id

    def _load_trial_runs(self) -> None:
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'", max_results=1000, page_token=token
            )
            for r in page:
                h = r.data.tags.get(HASH_TAG)
                if h:
                    self.runs.setdefault(h, (r.info.run_id, r.info.status))
            token = page.token
            if not token:
                break

    def finished_hashes(self) -> set[str]:
        return {h for h, (_, status) in self.runs.items() if status == "FINISHED"}

    def trial_run(self, name: str, tags: Mapping[str, str], params: Mapping[str, str]) -> str:
        """The trial's run: the existing one for its hash (resume), else a new nested run."""
        h = tags[HASH_TAG]
        if h in self.runs:
            run_id = self.runs[h][0]
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, STATUS_TAG, "RUNNING")
        else:
            run = self.client.create_run(self.experiment_id, run_name=name, tags={**tags, PARENT_TAG: self.parent_run_id, STATUS_TAG: "RUNNING"})
            run_id = run.info.run_id
            self._log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
        self.runs[h] = (run_id, "RUNNING")
        return run_id

    def log_metrics(self, run_id: str, values: Mapping[str, float], step: int = 0) -> None:
        ts = int(time.time() * 1000)
        self._log_batch(run_id, metrics=[Metric(k, float(v), ts, step) for k, v in values.items()])

    def log_curve(self, run_id: str, name: str, points: Iterable[tuple[int, float]]) -> None:
        ts = int(time.time() * 1000)
        self._log_batch(run_id, metrics=[Metric(name, float(v), ts, int(s)) for s, v in points])

    def finish(self, trial_hash: str, result_dir: Path, record: Mapping[str, Any]) -> None:
        run_id = self.runs[trial_hash][0]
        if record.get("full_data"):  # the baseline's IPC is the per-class count it trained on
            self.client.set_tag(run_id, Tag.IPC, str(record["ipc"]))
        summary = TrialSummary.from_dict(record["summary"])
        self.client.set_tag(run_id, Tag.SOFT_LABELS, str(summary.soft_labels).lower())
        self.log_metrics(run_id, trial_metrics(summary, record["resources"]))
        self.client.log_artifacts(run_id, str(result_dir))
        self.client.set_tag(run_id, STATUS_TAG, "FINISHED")
        self.client.set_terminated(run_id, "FINISHED")
        self.runs[trial_hash] = (run_id, "FINISHED")

    def fail(self, trial_hash: str, reason: str, status: str = "FAILED") -> None:
        """End a trial's run ``status`` (FAILED, or KILLED for a trial stopped by Ctrl-C) with the reason."""
        run_id = self.runs[trial_hash][0]
        self.client.set_tag(run_id, STATUS_TAG, status)
        self.client.set_tag(run_id, ERROR_TAG, reason[:5000])
        self.client.set_terminated(run_id, status)
        self.runs[trial_hash] = (run_id, status)

    @contextlib.contextmanager
    def parent_fails_on_error(self) -> Iterator[None]:
        """A driver that raises (prep, ``tuner.fit``, Ctrl-C) ends the parent run FAILED (KILLED on
        an interrupt) with the reason as a tag, instead of leaving it RUNNING forever."""
        try:
            yield
        except BaseException as exc:
            if self.parent_run_id:
                interrupted = isinstance(exc, KeyboardInterrupt)
                reason = "interrupted (Ctrl-C)" if interrupted else f"{type(exc).__name__}: {exc}"
                safe_call(self.client.set_tag, self.parent_run_id, ERROR_TAG, reason[:5000])
                safe_call(self.client.set_tag, self.parent_run_id, STATUS_TAG, "KILLED" if interrupted else "FAILED")
                safe_call(self.client.set_terminated, self.parent_run_id, "KILLED" if interrupted else "FAILED")
            raise

    def end_parent(self, ok: bool, summary: Mapping[str, float], interrupted: bool = False) -> None:
        if self.parent_run_id:
            self.log_metrics(self.parent_run_id, summary)
            if interrupted:
                self.client.set_tag(self.parent_run_id, ERROR_TAG, "interrupted (Ctrl-C)")
                self.client.set_tag(self.parent_run_id, STATUS_TAG, "KILLED")
            self.client.set_terminated(self.parent_run_id, "KILLED" if interrupted else "FINISHED" if ok else "FAILED")

    def _log_batch(self, run_id: str, metrics: Iterable[Metric] = (), params: Iterable[Param] = ()) -> None:
        """MLflow caps a batch at 1000 metrics and 100 params."""
        metrics, params = list(metrics), list(params)
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[i : i + 100])
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i : i + 1000])


def trial_metrics(s: TrialSummary, resources: Mapping[str, Any]) -> dict[str, float]:
    """Final metrics of a trial per docs/tracking-schema.md."""
    out: dict[str, float] = {
        "distill_seconds": s.distill_seconds,
        "eval_seconds": s.eval_seconds,
        "resources/cpu": resources["cpu"],
        "resources/gpu": resources["gpu"],
        "synthetic_images": s.synthetic_images,
    }
    if s.storage_ipc is not None:
        out["storage_ipc"] = s.storage_ipc
    for arch, a in s.archs.items():
        for key in (*FAIRNESS_METRICS, "mean_acc_std"):
            out[f"{arch}/{key}"] = getattr(a, key)
        out[f"{arch}/n_models"] = a.n_models
        out[f"{arch}/eval_epochs"] = a.epochs  # what ran: the eval.epochs param is null for the protocol's own count
        out[f"{arch}/eval_lr"] = a.lr
        for c, acc in enumerate(a.per_class):
            out[f"{arch}/per_class/{c}"] = acc
    out.update({k: s.metric(k) for k in ("mean_acc", "class_var", "worst_class_acc")})
    if s.learned_lr is not None:
        out["learned_lr"] = s.learned_lr
    return out
