"""Hash-addressed trial directories on the sweep's storage path.

<storage>/<sweep>/trials/<trial_hash>/
    checkpoint.pt   latest resumable state (written atomically and fsynced; replaced as the trial runs;
                    read with weights_only=True)
    checkpoint.unreadable-<time>-<pid>[-n].pt   a checkpoint that could not be read, kept for inspection
    checkpoint.unfit-<time>-<pid>[-n].pt        one that loaded but did not fit the trial (the trial restarted once)
    result/         final artifacts + result.json, published by one atomic rename (never overwritten)
    error.txt       the reason of the last failure

A trial's outcome lives under its identity, not under a Tune run directory, so a resumed sweep (a
fresh Tuner), a Tune retry and even a re-submitted job all find the same checkpoint and the same
finished result. The storage path must be shared between nodes on a multi-node cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from distillery.methods.utils.atomic import atomic_write, atomic_write_text, fsync_dir


#: reads of a checkpoint before it is set aside, and the pause before the n-th retry (n x this)
READ_ATTEMPTS = 3
READ_BACKOFF_S = 0.5


class TrialStore:
    def __init__(self, storage_path: str | Path, sweep_name: str) -> None:
        self.root = Path(storage_path) / sweep_name / "trials"

    def dir(self, trial_hash: str) -> Path:
        return self.root / trial_hash

    def result_dir(self, trial_hash: str) -> Path:
        return self.dir(trial_hash) / "result"

    def is_done(self, trial_hash: str) -> bool:
        return (self.result_dir(trial_hash) / "result.json").is_file()

    def done_hashes(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {p.name for p in self.root.iterdir() if (p / "result" / "result.json").is_file()}

    def started_hashes(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {p.name for p in self.root.iterdir() if p.is_dir()}

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self, trial_hash: str, state: dict[str, Any]) -> None:
        """Durably replace the trial's checkpoint: temp file, fsync, rename, fsync the folder. A
        crash at any point leaves either the old checkpoint or the new one, never a torn file."""
        atomic_write(self.dir(trial_hash) / "checkpoint.pt", lambda f: torch.save(state, f))

    def load_checkpoint(self, trial_hash: str) -> dict[str, Any] | None:
        """The trial's checkpoint, or None when there is none or it cannot be read.

        Loaded with ``weights_only=True``: the storage path is shared between nodes, and a pickle
        that anyone with write access there could replace must not run code on every worker
        (states are tensors, numbers, strings and containers, which that loader accepts). An
        unreadable checkpoint (truncated by a full disk, a half-synced network mount) is moved
        aside under a name that is never reused, with a warning naming it, and the trial restarts
        from scratch instead of failing every retry and every resume."""
        path = self.dir(trial_hash) / "checkpoint.pt"
        if not path.is_file():
            return None
        for attempt in range(READ_ATTEMPTS):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(state, dict):
                    raise ValueError(f"expected a dict, got {type(state).__name__}")
                return state
            except MemoryError:  # the machine's trouble, not the file's: never throw a good checkpoint away
                raise
            except OSError as exc:  # a transient NFS or disk error: read again before giving up on the file
                if attempt + 1 < READ_ATTEMPTS:
                    time.sleep(READ_BACKOFF_S * (attempt + 1))
                    continue
                self.set_aside(trial_hash, f"could not be read after {READ_ATTEMPTS} attempts ({type(exc).__name__}: {exc})")
            except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file means "start this trial over"
                self.set_aside(trial_hash, f"could not be read ({type(exc).__name__}: {exc})")
            return None
        return None

    def set_aside(self, trial_hash: str, why: str, kind: str = "unreadable") -> Path | None:
        """Move the trial's checkpoint to a name that is never reused, with a warning saying why:
        the trial then starts from the beginning instead of failing every retry and every resume."""
        path = self.dir(trial_hash) / "checkpoint.pt"
        if not path.is_file():
            return None
        aside = _unused(path.with_name(f"checkpoint.{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.pt"))
        os.replace(path, aside)  # noqa: atomic (a rename aside, nothing written)
        message = f"trial {trial_hash}: checkpoint {path} {why}; moved it to {aside} and restarting the trial from the beginning"
        warnings.warn(message, stacklevel=3)
        print(f"distillery: warning: {message}", file=sys.stderr, flush=True)
        return aside

    # ---------------------------------------------------------------- results
    def staging_dir(self, trial_hash: str) -> Path:
        d = self.dir(trial_hash)
        d.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".result-", dir=d))

    def publish(self, trial_hash: str, staging: Path) -> Path:
        """Atomically turn a fully written staging dir into the trial's result (first one wins).
        Every file and the folder are fsynced first, so a published result is complete on disk."""
        target = self.result_dir(trial_hash)
        fsync_tree(staging)
        try:
            os.rename(staging, target)
            fsync_dir(target.parent)
        except OSError:
            if self.is_done(trial_hash):  # a concurrent duplicate finished first: keep its result
                shutil.rmtree(staging, ignore_errors=True)
            else:
                raise
        return target

    def read_result(self, trial_hash: str) -> dict[str, Any]:
        return json.loads((self.result_dir(trial_hash) / "result.json").read_text())

    def write_error(self, trial_hash: str, text: str) -> None:
        atomic_write_text(self.dir(trial_hash) / "error.txt", text)

    def read_error(self, trial_hash: str) -> str | None:
        path = self.dir(trial_hash) / "error.txt"
        return path.read_text() if path.is_file() else None

    def clear_error(self, trial_hash: str) -> None:
        (self.dir(trial_hash) / "error.txt").unlink(missing_ok=True)


def _unused(path: Path) -> Path:
    """``path``, or ``path`` with -1, -2, ... before the suffix: set-aside files are never overwritten."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def fsync_tree(root: Path) -> None:
    """fsync every file under ``root`` and every folder, deepest first."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(folder))
