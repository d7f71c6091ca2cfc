"""The package layering the project promises: methods/ is pure PyTorch (it runs on a GPU box without
the orchestration stack), analysis/ needs no torch, and the shared schema needs nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ORCHESTRATION = ("ray", "mlflow", "optuna", "pandas", "pydantic", "orchestrator", "analysis")


def _imported_after(code: str) -> set[str]:
    """Top-level modules loaded by ``code`` in a fresh interpreter."""
    probe = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_methods_runs_without_the_orchestration_stack():
    loaded = _imported_after(
        "import methods.trial, methods.estimate, methods.budget, methods.distill.load_all, methods.eval, methods.data"
    )
    assert "torch" in loaded  # the probe imported what it says
    assert not loaded & set(ORCHESTRATION), sorted(loaded & set(ORCHESTRATION))


@pytest.mark.parametrize("module,forbidden", [("methods.schema", ("torch", *ORCHESTRATION)), ("analysis.load", ("torch", "ray", "optuna"))])
def test_light_modules_stay_light(module, forbidden):
    loaded = _imported_after(f"import {module}")
    assert not loaded & set(forbidden), sorted(loaded & set(forbidden))
