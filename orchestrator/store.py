"""Hash-addressed trial directories on the sweep's storage path.

<storage>/<sweep>/trials/<trial_hash>/
    checkpoint.pt   latest resumable state (written atomically; replaced as the trial runs)
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
import tempfile
from pathlib import Path
from typing import Any

import torch


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
        d = self.dir(trial_hash)
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=d)
        os.close(fd)
        try:
            torch.save(state, tmp)
            os.replace(tmp, d / "checkpoint.pt")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def load_checkpoint(self, trial_hash: str) -> dict[str, Any] | None:
        path = self.dir(trial_hash) / "checkpoint.pt"
        if not path.is_file():
            return None
        # our own file, written by save_checkpoint; method states may hold optimizer dicts
        return torch.load(path, map_location="cpu", weights_only=False)

    # ---------------------------------------------------------------- results
    def staging_dir(self, trial_hash: str) -> Path:
        d = self.dir(trial_hash)
        d.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".result-", dir=d))

    def publish(self, trial_hash: str, staging: Path) -> Path:
        """Atomically turn a fully written staging dir into the trial's result (first one wins)."""
        target = self.result_dir(trial_hash)
        try:
            os.rename(staging, target)
        except OSError:
            if self.is_done(trial_hash):  # a concurrent duplicate finished first: keep its result
                shutil.rmtree(staging, ignore_errors=True)
            else:
                raise
        return target

    def read_result(self, trial_hash: str) -> dict[str, Any]:
        return json.loads((self.result_dir(trial_hash) / "result.json").read_text())

    def write_error(self, trial_hash: str, text: str) -> None:
        d = self.dir(trial_hash)
        d.mkdir(parents=True, exist_ok=True)
        (d / "error.txt").write_text(text)

    def read_error(self, trial_hash: str) -> str | None:
        path = self.dir(trial_hash) / "error.txt"
        return path.read_text() if path.is_file() else None

    def clear_error(self, trial_hash: str) -> None:
        (self.dir(trial_hash) / "error.txt").unlink(missing_ok=True)
