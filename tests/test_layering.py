"""The package layering the project promises: distillery.methods is pure PyTorch (it runs on a GPU box
without the orchestration stack, installed by ``pip install distillery`` alone), distillery.analysis
needs no torch, and the shared schema needs nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

THIRD_PARTY = ("ray", "mlflow", "optuna", "pandas", "pydantic")
OWN_LAYERS = ("distillery.orchestrator", "distillery.analysis")


def _imported_after(code: str) -> set[str]:
    """Every module loaded by ``code`` in a fresh interpreter."""
    probe = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _forbidden(loaded: set[str], third_party: tuple[str, ...], layers: tuple[str, ...] = OWN_LAYERS) -> list[str]:
    tops = {m.split(".")[0] for m in loaded}
    return sorted((tops & set(third_party)) | {m for m in loaded if any(m == x or m.startswith(x + ".") for x in layers)})


def test_the_probe_sees_what_it_imports():
    loaded = _imported_after("import distillery.orchestrator.config")
    assert _forbidden(loaded, THIRD_PARTY) and "pydantic" in _forbidden(loaded, THIRD_PARTY)


def test_methods_runs_without_the_orchestration_stack():
    loaded = _imported_after(
        "import distillery.methods.trial, distillery.methods.estimate, distillery.methods.budget, "
        "distillery.methods.distill.load_all, distillery.methods.eval, distillery.methods.data"
    )
    assert "torch" in loaded  # the probe imported what it says
    assert not _forbidden(loaded, THIRD_PARTY), _forbidden(loaded, THIRD_PARTY)


def test_the_top_level_package_imports_no_layer():
    loaded = _imported_after("import distillery")
    assert not _forbidden(loaded, ("torch", *THIRD_PARTY), ("distillery.methods", *OWN_LAYERS))


@pytest.mark.parametrize("module,forbidden,layers", [
    ("distillery.methods.schema", ("torch", *THIRD_PARTY), OWN_LAYERS),
    ("distillery.analysis.load", ("torch", "ray", "optuna"), ("distillery.orchestrator",)),
])
def test_light_modules_stay_light(module, forbidden, layers):
    loaded = _imported_after(f"import {module}")
    assert not _forbidden(loaded, forbidden, layers), _forbidden(loaded, forbidden, layers)


def test_sweep_without_the_orchestration_extra_names_it(tmp_path):
    """On a core-only install (`pip install distillery`: no pydantic, Ray, MLflow, ...), `distillery
    sweep` exits 2 naming the extra to install, and `distillery trial --help` still works."""
    from tests.sweep_helpers import REPO

    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {THIRD_PARTY + ('yaml', 'matplotlib')!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from distillery.orchestrator.cli import main\n"
    )
    sweep = subprocess.run([sys.executable, "-c", blocker + f"sys.exit(main(['sweep', {str(REPO / 'configs/quickstart.yaml')!r}, '--dry-run']))"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert sweep.returncode == 2, sweep.stderr
    assert "pip install 'distillery[orchestration]'" in sweep.stderr and "Traceback" not in sweep.stderr
    trial = subprocess.run([sys.executable, "-c", blocker + "sys.exit(main(['trial', '--help']))"], capture_output=True, text=True, timeout=300)
    assert trial.returncode == 0 and "--budget" in trial.stdout, trial.stderr
