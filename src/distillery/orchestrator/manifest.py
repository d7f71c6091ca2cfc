"""A sweep's manifest: the identity of every cell, so a ``--resume`` continues the same study or refuses.

``<storage>/<sweep>/sweep.json`` maps each cell, (dataset, method, IPC, seed), to its trial hash and
resolved identity (``grid.identity``). It is written when a sweep starts and after every accepted
resume. A resume with an edited config is compared with it first:

* a cell whose identity changed (a hyperparameter, the evaluation protocol, the seeding scheme, ...)
  is refused, naming the fields that changed: its old and new results would be two designs under one
  label, and the analysis would pool them;
* a cell the config no longer has is refused too: its finished runs stay under the sweep's parent
  run, so the analysis would still count them;
* new cells (another IPC, seed or method) are allowed, printed, and tagged on the parent run.

To change existing cells, start a new sweep (``--set name=...``). Sweeps started before manifests
existed resume unchecked, with a note.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from distillery.methods.errors import UserError

from .config import SweepConfig
from .grid import TrialPlan, identity
from distillery.methods.utils.atomic import atomic_write_json

from .tracking import flatten

MANIFEST = "sweep.json"


def cell_label(plan: TrialPlan) -> str:
    s = plan.spec
    return f"{s.dataset}/{s.method}/ipc{'-all' if s.ipc is None else s.ipc}/seed{s.seed}"


def _path(config: SweepConfig) -> Path:
    return Path(config.storage_path) / config.name / MANIFEST


def write_manifest(config: SweepConfig, plans: list[TrialPlan]) -> Path:
    """Durably write the manifest of ``plans`` (temp file, fsync, rename, fsync the folder)."""
    body = {"sweep": config.name, "cells": {cell_label(p): {"hash": p.trial_hash, "identity": identity(p.spec)} for p in plans}}
    return atomic_write_json(_path(config), body, sort_keys=True, default=str)


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = flatten(json.loads(json.dumps(old, default=str))), flatten(json.loads(json.dumps(new, default=str)))
    return [f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check_resume(config: SweepConfig, plans: list[TrialPlan], out: TextIO) -> list[str]:
    """Compare ``plans`` with the stored manifest; UserError if an existing cell changed or went
    away, else the labels of the new cells (printed)."""
    path = _path(config)
    try:
        stored = json.loads(path.read_text())["cells"]
    except FileNotFoundError:
        print(f"note: {path} is missing (a sweep started by an older version): the resumed config cannot be compared "
              "with the one that started the sweep", file=out, flush=True)
        return []
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"--resume: the sweep's manifest {path} cannot be read ({exc}); restore it, or start a new "
                        "sweep (--set name=...)") from None
    current = {cell_label(p): p for p in plans}
    changed = [(label, _changes(stored[label]["identity"], identity(p.spec)))
               for label, p in current.items() if label in stored and stored[label]["hash"] != p.trial_hash]
    removed = sorted(set(stored) - set(current))
    if changed or removed:
        lines = [f"--resume: this config is not the one that started sweep {config.name!r} ({path}):"]
        for label, diff in changed[:5]:
            lines.append(f"  {label} changed: " + "; ".join(diff[:4]) + (" ..." if len(diff) > 4 else ""))
        if len(changed) > 5:
            lines.append(f"  ... and {len(changed) - 5} more changed cells")
        if removed:
            lines.append(f"  {len(removed)} cell(s) no longer in the config: {', '.join(removed[:5])}"
                         + (" ..." if len(removed) > 5 else ""))
        lines.append("A resume may only add cells (IPCs, seeds, methods): results of two configs would be pooled. "
                     "Undo the edit to continue this sweep, or start a new one with --set name=NEW_NAME.")
        raise UserError("\n".join(lines))
    added = sorted(set(current) - set(stored))
    if added:
        print(f"--resume adds {len(added)} cell(s) to the sweep: {', '.join(added[:10])}" + (" ..." if len(added) > 10 else ""),
              file=out, flush=True)
    return added
