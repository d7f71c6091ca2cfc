"""`distillery sweep CONFIG --dry-run --plan`: the minimal detectable effect per series, before launch."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from distillery.analysis.planner import Design, default_noise, minimal_detectable_effect
from distillery.orchestrator.config import load_config
from distillery.orchestrator.plan import plan_sweep
from tests.sweep_helpers import tiny_sweep, write_config

ROOT = Path(__file__).resolve().parents[1]


def _rows(out: str) -> dict[str, list[str]]:
    """series name -> its columns in the plan table."""
    rows = {}
    for line in out.splitlines():
        m = re.match(r"\s+(\w+ [\w-]+/\w+)\s+(\d+\.\.\d+ \(\d+\))\s+(\d+ x \d+)\s+(\S+ / \S+)\s+(\S+)\s+(\S+)\s+(\S+)$", line)
        if m:
            rows[m.group(1)] = list(m.groups()[1:])
    return rows


@pytest.mark.parametrize("config,series", [
    ("configs/paper_fairness_cifar10.yaml", ["cifar10 mtt/convnet", "cifar10 mtt/alexnet"]),
    ("configs/fairness_cifar10_laptop.yaml", ["cifar10 random/convnet", "cifar10 dm/convnet", "cifar10 random/alexnet",
                                              "cifar10 dm/alexnet"]),
])
def test_plan_prints_a_minimal_detectable_effect_per_series(config, series, capsys, tmp_path, monkeypatch):
    from distillery.orchestrator.cli import main

    monkeypatch.chdir(tmp_path)  # nothing may be written where the user stands
    # a GPU grid is planned anywhere; the local resource check needs a node that could hold its trials
    assert main(["sweep", str(ROOT / config), "--dry-run", "--plan", "--set", "num_cpus=8", "--set", "num_gpus=1"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert sorted(rows) == sorted(series), out
    cfg = load_config(ROOT / config)
    for name, cols in rows.items():
        arch = name.split("/")[1]
        ipcs = sorted(cfg.ipcs)
        design = Design.balanced(ipcs, len(cfg.seeds), cfg.eval.models)
        expected = minimal_detectable_effect(design, default_noise(arch).set_mean_sd(cfg.eval.models),
                                             n_series=len(series))
        assert float(cols[3]) == pytest.approx(expected, rel=0.01), (name, cols)
        assert 0 <= float(cols[4]) <= 1 and int(cols[5]) >= 2
    assert "noise: default: CIFAR-10 laptop study" in out
    assert not list(tmp_path.iterdir())


def test_plan_says_when_a_design_cannot_give_a_verdict(tmp_path):
    cfg = load_config(write_config(tmp_path, tiny_sweep("one-seed", seeds=[0], ipcs=[1, 2, 3])), base_dir=tmp_path)
    plans = plan_sweep(cfg)
    assert all(p.mde is None and "1 set per IPC" in p.note for p in plans)
    assert all(p.sets_for_target is not None and p.sets_for_target >= 2 for p in plans)
    two_ipcs = plan_sweep(load_config(write_config(tmp_path, tiny_sweep("two-ipcs")), base_dir=tmp_path))
    assert all(p.mde is None and "at least 3" in p.note for p in two_ipcs)


def test_plan_takes_the_noise_of_a_pilot_sweep(tmp_path, capsys):
    """A real MLflow store with a finished sweep: --pilot reads its per-model rows and the plan
    uses that noise (and says so), per series where the pilot has it."""
    from distillery.orchestrator.cli import main
    from tests.test_analysis_e2e import build_sweep

    uri, _ = build_sweep(tmp_path / "pilot", name="pilot-sweep", methods=("dc",), ipcs=(1, 5, 10), seeds=(0, 1),
                         archs=("ConvNet",), n_models=3)
    path = write_config(tmp_path, tiny_sweep("planned", ipcs=[1, 2, 3], tracking_uri=uri,
                                             eval={"archs": ["convnet"], "models": 3, "epochs": 4}))
    assert main(["sweep", str(path), "--dry-run", "--plan", "--pilot", "pilot-sweep"]) == 0
    out = capsys.readouterr().out
    assert "noise: pilot pilot-sweep" in out and "default" not in out.split("noise:")[-1]
    assert all(math.isfinite(float(cols[3])) for cols in _rows(out).values())
    assert main(["sweep", str(path), "--dry-run", "--plan", "--pilot", "no-such-sweep"]) == 2
    assert "--pilot no-such-sweep" in capsys.readouterr().err
    assert main(["sweep", str(path), "--dry-run", "--pilot", "pilot-sweep"]) == 2
    assert "add --plan" in capsys.readouterr().err


def test_a_gpu_grid_on_a_cpu_machine_plans_then_exits_2(capsys, tmp_path, monkeypatch):
    from distillery.orchestrator.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(ROOT / "configs/paper_fairness_cifar10.yaml"), "--dry-run", "--plan", "--set", "num_gpus=0"]) == 2
    captured = capsys.readouterr()
    assert "Study plan" in captured.out and "no node of this machine" in captured.err and "gpu 0.5" in captured.err
