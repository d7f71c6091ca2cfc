"""Live progress of a sweep (a Tune callback on the driver) and the final summary table."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from typing import Any, Iterable, Mapping, TextIO

from ray import tune

from distillery.methods.schema import FULL_DATA_METHOD, TrialSummary

from .eta import PhaseETA, format_seconds as _fmt_seconds


class ProgressView(tune.Callback):
    """One status line whenever the counts change (at most every ``every`` seconds otherwise):
    done / running / pending / failed, and an ETA from the throughput of this session."""

    def __init__(self, total: int, already_done: int, stream: TextIO | None = None, every: float = 15.0,
                 names: Mapping[str, str] | None = None) -> None:
        self.total, self.already_done, self.every = total, already_done, every
        self.names = dict(names or {})  # trial hash -> run name (dm-ipc10-seed3): what the user reads in MLflow
        self._stream = stream
        self.start = time.monotonic()
        self.last_print = 0.0
        self.last_counts: tuple[int, ...] | None = None
        self.phase: dict[str, str] = {}
        self.etas: dict[tuple[str, str], PhaseETA] = {}  # (trial, phase) -> its remaining-time estimate

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with its experiment state
        return {**self.__dict__, "_stream": None}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "phase" in result and not result.get("done"):
            h, phase = trial.config["trial_hash"], result["phase"]
            done, total = int(result.get("iteration", 0)), int(result.get("total", 0) or 0)
            eta = self.etas.setdefault((h, phase), PhaseETA()).update(done, total, time.monotonic()) if total else None
            where = result.get("detail") or f"{done}/{total or '?'}"  # e.g. 'model 2/5, epoch 56/300'
            self.phase[h] = f"{phase} {where}" + (f" ETA {_fmt_seconds(eta)}" if eta is not None and done < total else "")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        counts = defaultdict(int)
        for t in trials:
            counts[t.status] += 1
        done = counts["TERMINATED"] + self.already_done
        running, failed = counts["RUNNING"], counts["ERROR"]
        pending = self.total - done - running - failed
        key = (done, running, pending, failed)
        now = time.monotonic()
        if key == self.last_counts and now - self.last_print < self.every:
            return
        self.last_counts, self.last_print = key, now
        elapsed = now - self.start
        finished_here = counts["TERMINATED"]
        eta = ""
        if finished_here and (pending + running):
            eta = f", ETA {_fmt_seconds(elapsed / finished_here * (pending + running))}"
        run_detail = [f"{self.names.get(t.config['trial_hash'], t.config['trial_hash'][:6])}: {self.phase.get(t.config['trial_hash'], 'starting')}"
                      for t in trials if t.status == "RUNNING"]
        detail = f"  [{'; '.join(run_detail[:4])}{' ...' if len(run_detail) > 4 else ''}]" if run_detail else ""
        print(
            f"[sweep {_fmt_seconds(elapsed)}] {done}/{self.total} done, {running} running, {pending} pending, {failed} failed{eta}{detail}",
            file=self._stream or sys.stdout, flush=True,
        )


def summary_table(records: Iterable[Mapping[str, Any]]) -> str:
    """method x IPC (per dataset and arch): mean accuracy, class variance, models, over all seeds' models."""
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        s = TrialSummary.from_dict(r["summary"])
        for arch, a in s.archs.items():
            cells[(s.dataset, arch, s.method, r["ipc"])].extend(a.per_model)
    if not cells:
        return "(no finished trials)"
    header = f"{'dataset':<12} {'arch':<10} {'method':<10} {'ipc':>5} {'mean acc %':>11} {'sd %':>6} {'class var':>10} {'models':>7}"
    lines = [header, "-" * len(header)]
    for (dataset, arch, method, ipc), models in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] == FULL_DATA_METHOD, kv[0][2], kv[0][3])):
        accs = [m.mean_acc for m in models]
        mean = sum(accs) / len(accs)
        std = (sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) ** 0.5 if len(accs) > 1 else 0.0
        var = sum(m.class_var for m in models) / len(models)
        ipc_label = "all" if method == FULL_DATA_METHOD else str(ipc)
        lines.append(f"{dataset:<12} {arch:<10} {method:<10} {ipc_label:>5} {100 * mean:>11.2f} {100 * std:>6.2f} {var:>10.5f} {len(models):>7}")
    lines.append("mean acc: mean per-class accuracy over every model of the cell; sd: its standard deviation over those "
                 "models; class var: variance of the per-class accuracies (fractions, so fraction^2: the unit of the "
                 "report, the figures and MLflow), averaged over the models")
    return "\n".join(lines)
