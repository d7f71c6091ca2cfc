"""Small sweep configs and MLflow readers shared by the orchestrator tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]


def tiny_sweep(name: str, **overrides: Any) -> dict[str, Any]:
    """2 methods x 2 IPC x 2 seeds on digits with tiny networks: seconds per trial."""
    cfg: dict[str, Any] = {
        "name": name,
        "datasets": ["digits"],
        "methods": {"random": {}, "herding": {"params": {"embed_epochs": 1, "embed_width": 8}}},
        "ipcs": [1, 2],
        "seeds": [0, 1],
        "eval": {"archs": ["convnet"], "models": 2, "epochs": 4, "arch_options": {"convnet": {"width": 8}}},
        "resources": {"cpu": 1, "gpu": 0},
        "max_failures": 0,
        "analyze": False,
        "checkpoint_every_s": 0.5,
    }
    cfg.update(overrides)
    return cfg


def write_config(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    path = tmp_path / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``distillery`` as a user would, in a fresh process."""
    full_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    full_env.update({"PYTHONUNBUFFERED": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "distillery.orchestrator.cli", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def trial_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`distillery.kind` = 'trial'", max_results=1000)
    return runs
