"""Sweep config validation: every bad input fails before Ray starts, naming the field."""

import pytest
import yaml

from methods.errors import UserError
from orchestrator.config import load_config, validate_config
from orchestrator.grid import expand, trial_hash
from tests.sweep_helpers import cli, tiny_sweep, write_config


def test_valid_config_expands_with_stable_hashes(tmp_path):
    cfg = validate_config(tiny_sweep("ok", full_baseline={"enabled": True}), base_dir=tmp_path)
    plans = expand(cfg)
    assert len(plans) == 9  # 2 methods x 2 ipc x 2 seeds + 1 baseline
    assert [p.name for p in plans][:2] == ["random-ipc1-seed0", "random-ipc1-seed1"]
    assert plans[-1].name == "full-seed0" and plans[-1].full_data
    again = expand(validate_config(tiny_sweep("ok", full_baseline={"enabled": True}), base_dir=tmp_path))
    assert [p.trial_hash for p in plans] == [p.trial_hash for p in again]
    assert cfg.storage_path.startswith(str(tmp_path)) and cfg.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_hash_changes_with_what_matters_only(tmp_path):
    base = expand(validate_config(tiny_sweep("h"), base_dir=tmp_path))[0]
    more_epochs = expand(validate_config(tiny_sweep("h", eval={"epochs": 5, "models": 2}), base_dir=tmp_path))[0]
    more_cpu = expand(validate_config(tiny_sweep("h", resources={"cpu": 2}), base_dir=tmp_path))[0]
    renamed = expand(validate_config(tiny_sweep("other-name"), base_dir=tmp_path))[0]
    vmap = expand(validate_config(tiny_sweep("h", eval={"epochs": 4, "models": 2, "vectorize": True, "arch_options": {"convnet": {"width": 8}}}), base_dir=tmp_path))[0]
    assert trial_hash(base.spec) != trial_hash(more_epochs.spec)
    assert vmap.spec.eval.vectorize is True and base.spec.eval.vectorize is None
    assert base.trial_hash == more_cpu.trial_hash == renamed.trial_hash == vmap.trial_hash  # how, not what


def test_per_method_ipcs_params_and_resource_overrides(tmp_path):
    raw = tiny_sweep("o")
    raw["methods"]["herding"]["ipcs"] = [2]
    raw["methods"]["herding"]["per_ipc"] = {2: {"embed_epochs": 2}}
    raw["resources"] = {"cpu": 1, "gpu": 0, "overrides": [{"method": "herding", "ipc": [2], "gpu": 0.25, "cpu": 0.5}]}
    plans = expand(validate_config(raw, base_dir=tmp_path))
    herding = [p for p in plans if p.spec.method == "herding"]
    assert {p.spec.ipc for p in herding} == {2}
    assert all(p.spec.resolved_method_config().embed_epochs == 2 for p in herding)
    assert all(p.resources.gpu == 0.25 and p.resources.cpu == 0.5 for p in herding)
    assert all(p.resources.gpu == 0 for p in plans if p.spec.method == "random")


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"methods": {"nosuch": {}}}, "methods.nosuch: unknown method 'nosuch'"),
        ({"ipcs": [0, 1]}, "ipcs.0"),
        ({"resources": {"gpu": 1.5}}, "resources.gpu"),
        ({"methods": {"random": {"lr_img": 1}}}, "methods.random.lr_img: unknown field (method options go under params:)"),
        ({"methods": {"herding": {"params": {"lr": 1}}}}, "method 'herding' has no option 'lr'"),
        ({"datasets": ["nosuch"]}, "datasets[0].name: unknown dataset 'nosuch'"),
        ({"eval": {"archs": ["vgg"]}}, "eval.archs: unknown network 'vgg'"),
        ({"seeds": [1, 1]}, "seeds has duplicates"),
        ({"name": "bad name!"}, "name"),
    ],
)
def test_bad_configs_name_the_field(tmp_path, change, expected):
    raw = {**tiny_sweep("bad"), **change}
    with pytest.raises(UserError) as err:
        validate_config(raw, base_dir=tmp_path)
    assert expected in str(err.value)


def test_set_overrides_and_missing_file(tmp_path):
    path = write_config(tmp_path, tiny_sweep("s"))
    cfg = load_config(path, {"eval.epochs": "7", "resources.gpu": "0.25", "datasets.0.subset_per_class": "20"}, base_dir=tmp_path)
    assert cfg.eval.epochs == 7 and cfg.resources.gpu == 0.25 and cfg.datasets[0].subset_per_class == 20
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"methods": {"nosuch": {}}}, "unknown method 'nosuch'"),
        ({"ipcs": [0]}, "ipcs.0"),
        ({"resources": {"gpu": 1.5}}, "resources.gpu"),
        ({"datasets": [{"name": "imagefolder", "root": "/nonexistent/data"}]}, "/nonexistent/data"),
        ({"ipcs": [500]}, "exceeds"),
    ],
)
def test_cli_exits_2_before_ray_starts(tmp_path, change, expected):
    path = write_config(tmp_path, {**tiny_sweep("bad"), **change})
    proc = cli(["sweep", str(path)], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout


def test_dry_run_prints_the_trial_table(tmp_path):
    path = write_config(tmp_path, tiny_sweep("dry"))
    proc = cli(["sweep", str(path), "--dry-run"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "herding-ipc2-seed1" in proc.stdout and "8 trials, 16 evaluation models" in proc.stdout
    assert not (tmp_path / "mlflow.db").exists()
