"""`distillery tune`: Optuna on Ray Tune with a real sqlite study and real MLflow (no mocks).

The objectives must come from a validation split carved out of the training data, never the test
split; a resumed tuning run adds trials to the same study; the written sweep YAML runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from distillery.methods.data import DatasetOptions, dataset_fingerprint, load_dataset
from distillery.methods.trial import run_trial
from distillery.orchestrator.cli import main as cli_main
from distillery.orchestrator.config import load_config
from distillery.orchestrator.tune_config import load_tune_config, validate_tune_config
from distillery.orchestrator.tuning import cells, run_in_rungs, trial_spec
from tests.sweep_helpers import REPO

VAL = 20


def tiny_tune(name: str, tmp_path: Path, **overrides) -> Path:
    """DM on digits with tiny nets; the starting config (noise init, lr 1e-4) is deliberately poor."""
    cfg = {
        "name": name,
        "datasets": ["digits"],
        "methods": {"dm": {
            "params": {"iterations": 20, "init": "noise", "lr_img": 0.0001, "net_width": 16, "batch_real": 32},
            "space": {"lr_img": {"type": "float", "low": 0.0001, "high": 10.0, "log": True},
                      "init": {"type": "categorical", "choices": ["noise", "real"]}},
        }},
        "ipcs": [3],
        "trials": 8,
        "max_concurrent_trials": 2,
        "validation_per_class": VAL,
        "eval": {"archs": ["convnet"], "models": 2, "epochs": 150, "arch_options": {"convnet": {"width": 16}}},
        "resources": {"cpu": 1},
        "export_seeds": 1,
    }
    cfg.update(overrides)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ------------------------------------------------------------------ validation split (no Ray)
def test_validation_split_is_held_out_of_training_and_replaces_test():
    full = load_dataset("digits")
    val = load_dataset("digits", DatasetOptions(validation_per_class=VAL))
    assert full.eval_split == "test" and val.eval_split == "validation"
    assert len(val.test_y) == VAL * 10 and torch.bincount(val.test_y).tolist() == [VAL] * 10
    assert len(val.train_y) == len(full.train_y) - VAL * 10
    # validation images are training images (same normalization), none of them is left in training
    train_rows = {tuple(r.tolist()) for r in full.train_x.flatten(1)}
    test_rows = {tuple(r.tolist()) for r in full.test_x.flatten(1)}
    val_rows = [tuple(r.tolist()) for r in val.test_x.flatten(1)]
    assert all(r in train_rows for r in val_rows)
    assert not any(r in test_rows for r in val_rows if r not in train_rows)
    remaining = {tuple(r.tolist()) for r in val.train_x.flatten(1)}
    assert sum(r in remaining for r in val_rows) <= 2  # digits has a few duplicate images; no held-out row stays otherwise
    assert dataset_fingerprint("digits", DatasetOptions(validation_per_class=VAL)) != dataset_fingerprint("digits")


def test_tuning_trials_are_scored_on_the_validation_split(tmp_path):
    config = load_tune_config(tiny_tune("specs", tmp_path), base_dir=tmp_path)
    (cell,) = cells(config)
    spec = trial_spec(config, cell, {"lr_img": 0.5, "init": "real"})
    assert spec.data.validation_per_class == VAL and spec.method_params["lr_img"] == 0.5
    spec = trial_spec(config, cell, {"lr_img": 0.5, "init": "real"})
    reports: list[dict] = []
    data = load_dataset("digits", spec.data)
    run_in_rungs(spec, data, "cpu", 1, reports.append)
    assert reports[-1]["eval_split"] == "validation" and reports[-1]["eval_samples"] == VAL * 10


def test_early_stopping_rungs_end_with_the_uninterrupted_result(tmp_path):
    """ASHA is sound only if a trial that runs through all rungs equals a plain trial."""
    config = load_tune_config(tiny_tune("rungs", tmp_path, early_stopping={"enabled": True, "rungs": 3}), base_dir=tmp_path)
    (cell,) = cells(config)
    spec = trial_spec(config, cell, {"lr_img": 1.0, "init": "real"})
    data = load_dataset("digits", spec.data)
    reports: list[dict] = []
    run_in_rungs(spec, data, "cpu", 3, reports.append)
    assert [r["rung"] for r in reports] == [1, 2, 3] and [r["iterations"] for r in reports] == [7, 14, 20]
    assert reports[-1]["done"] and not reports[0]["done"]
    plain = run_trial(spec, device="cpu", data=data).summary()
    assert reports[-1]["mean_acc"] == pytest.approx(plain.mean_acc, abs=1e-9)
    assert reports[-1]["class_var"] == pytest.approx(plain.class_var, abs=1e-9)


@pytest.mark.parametrize("change, field", [
    ({"methods": {"dm": {"space": {"lr_img": {"type": "float", "low": 1.0, "high": 0.1}}}}}, "methods.dm.space.lr_img"),
    ({"methods": {"dm": {"space": {"lr_img": {"type": "float", "low": 0, "high": 1, "log": True}}}}}, "methods.dm.space.lr_img"),
    ({"methods": {"dm": {"space": {"no_such_option": {"type": "int", "low": 1, "high": 3}}}}}, "methods.dm.space.no_such_option"),
    ({"methods": {"dm": {"space": {"iterations": {"type": "int", "low": -5, "high": 3}}}}}, "methods.dm.space.iterations"),
    ({"methods": {"nosuch": {"space": {"x": {"type": "int", "low": 1, "high": 3}}}}}, "methods.nosuch"),
    ({"objectives": ["accuracy"]}, "objectives"),
    ({"objectives": ["mean_acc", "class_var"], "early_stopping": {"enabled": True}}, "early_stopping"),
    ({"trials": None}, "budget"),
    ({"datasets": [{"name": "digits", "test_subset_per_class": 5}]}, "datasets[0].test_subset_per_class"),
])
def test_bad_tuning_configs_exit_2_naming_the_field(tmp_path, capsys, change, field):
    path = tiny_tune("bad", tmp_path, **change)
    assert cli_main(["tune", str(path)]) == 2
    err = capsys.readouterr().err
    assert field in err, err
    assert not (tmp_path / "optuna.db").exists()


# ------------------------------------------------------------------ real tuning runs (Ray, Optuna, MLflow)
@pytest.fixture(scope="module")
def local_ray():
    import ray

    from distillery.orchestrator.raycluster import connect

    if ray.is_initialized():
        ray.shutdown()
    before = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    connect(None, num_cpus=2)  # may put a private token in os.environ (orchestrator/raycluster.py)
    yield
    ray.shutdown()
    for k, v in before.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def tune_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    return client.search_runs([exp.experiment_id], filter_string="tags.`distillery.kind` = 'tune_trial'", max_results=1000)


def test_tuning_improves_on_a_poor_start_and_resume_adds_to_the_study(tmp_path, local_ray, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tiny_tune("improve", tmp_path)
    assert cli_main(["tune", str(path)]) == 0
    out = capsys.readouterr().out
    assert "validation split" in out

    study = optuna.load_study(study_name="improve.digits.dm.ipc3", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 8
    start = study.trials[0]
    assert start.params == {"lr_img": 0.0001, "init": "noise"}  # the starting config ran first
    assert study.best_value > start.value + 0.2, (start.value, study.best_value)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = tune_runs(uri, "improve")
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1
    assert all(r.data.tags["distillery.eval_split"] == "validation" and r.data.metrics["eval_samples"] == VAL * 10 for r in runs)
    accs = sorted(r.data.metrics["mean_acc"] for r in runs)
    assert accs == pytest.approx(sorted(t.value for t in complete))

    # the written sweep YAML is a valid sweep config carrying the best parameters
    best_yaml = tmp_path / "distillery-runs" / "improve" / "tuning" / "improve-best.yaml"
    sweep = load_config(best_yaml)
    assert sweep.methods["dm"].per_ipc[3] == study.best_params
    assert sweep.methods["dm"].params["iterations"] == 20

    # same run again: refused without --resume; with it, trials are added to the same study and parent run
    assert cli_main(["tune", str(path), "--set", "trials=2"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli_main(["tune", str(path), "--set", "trials=2", "--resume"]) == 0
    study = optuna.load_study(study_name="improve.digits.dm.ipc3", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 10
    runs = tune_runs(uri, "improve")
    assert len(runs) == 10 and {r.data.tags["mlflow.parentRunId"] for r in runs} == parents


def test_multi_objective_reports_the_pareto_set_and_its_sweep_yaml_runs(tmp_path, local_ray, monkeypatch):
    from distillery.orchestrator.sweep import run_sweep

    monkeypatch.chdir(tmp_path)
    path = tiny_tune("pareto", tmp_path, objectives=["mean_acc", "class_var"], trials=6,
                     methods={"dm": {"params": {"iterations": 10, "init": "real", "net_width": 16, "batch_real": 32},
                                     "space": {"lr_img": {"type": "float", "low": 0.001, "high": 10.0, "log": True},
                                               "iterations": {"type": "int", "low": 2, "high": 12, "step": 2}}}})
    assert cli_main(["tune", str(path)]) == 0
    study = optuna.load_study(study_name="pareto.digits.dm.ipc3", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    out_dir = tmp_path / "distillery-runs" / "pareto" / "tuning"
    reported = json.loads((out_dir / "best.json").read_text())["digits.dm.ipc3"]
    assert sorted(b["number"] for b in reported) == sorted(t.number for t in study.best_trials)
    assert (out_dir / "digits.dm.ipc3_pareto.png").stat().st_size > 1000
    written = sorted(out_dir.glob("pareto-digits-dm-ipc3-pareto-t*.yaml"))
    assert len(written) == len(study.best_trials)

    sweep = load_config(written[0], {"eval.epochs": "2", "analyze": "false"})
    outcome = run_sweep(sweep)
    assert outcome.ok and len(outcome.finished) == 1


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path, tmp_path):
    """Every YAML in configs/ is a valid sweep or tuning config (the study grids included)."""
    from distillery.orchestrator.grid import expand

    raw = yaml.safe_load(path.read_text())
    if any("space" in (m or {}) for m in raw["methods"].values()):
        config = load_tune_config(path, base_dir=tmp_path)
        assert cells(config)
    else:
        plans = expand(load_config(path, base_dir=tmp_path))
        if path.name == "paper_fairness_cifar10.yaml":  # the study: 7 IPCs x 10 seeds + baseline, 100 models per cell and arch
            assert len(plans) == 71 and {p.spec.ipc for p in plans if not p.full_data} == {1, 5, 10, 15, 20, 25, 30}
            assert all(p.spec.n_models == 10 and p.spec.archs == ("convnet", "alexnet") for p in plans)
        if path.name == "paper_fairness_cifar100.yaml":
            assert len(plans) == 81 and max(p.spec.ipc for p in plans if not p.full_data) == 35


def test_resume_closes_what_a_killed_driver_left_running(tmp_path):
    """A killed driver leaves an Optuna trial and an MLflow run RUNNING: resuming records both as
    failed with the reason and reuses neither (no Ray needed to set the scene)."""
    from distillery.orchestrator.tracking import SweepTracker
    from distillery.orchestrator.tuning import INTERRUPTED, close_interrupted_runs, prepare_study

    config = load_tune_config(tiny_tune("killed", tmp_path), base_dir=tmp_path)
    (cell,) = cells(config)
    storage = optuna.storages.RDBStorage(config.storage)
    study = prepare_study(config, cell, storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.WAITING]  # the starting config, enqueued
    running = study.ask({k: s.distribution() for k, s in cell.space.items()})  # what the dead driver handed out
    assert running.params == {"lr_img": 0.0001, "init": "noise"}
    tracker = SweepTracker(config.tracking_uri, config.name)
    tracker.start_parent("h", resume=False, kind="tune")
    tracker.trial_run("dm-ipc3-x", {"distillery.trial_hash": "k1", "distillery.kind": "tune_trial"}, {})

    study = prepare_study(config, cell, storage)  # the resumed driver
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.FAIL and trial.system_attrs["fail_reason"] == INTERRUPTED
    again = SweepTracker(config.tracking_uri, config.name)
    again.start_parent("h", resume=True, kind="tune")
    assert close_interrupted_runs(again) == ["k1"]
    run = again.client.get_run(again.runs["k1"][0])
    assert run.info.status == "FAILED" and run.data.tags["distillery.error"] == INTERRUPTED


def test_asha_stopped_trials_are_pruned_in_optuna(tmp_path, local_ray, monkeypatch):
    """With early stopping, a trial ASHA stops is PRUNED in the study (its rung values kept as
    intermediate values), never COMPLETE with a truncated score; completed trials ran every rung."""
    monkeypatch.chdir(tmp_path)
    path = tiny_tune("asha", tmp_path, trials=6, early_stopping={"enabled": True, "rungs": 2, "reduction_factor": 2},
                     eval={"archs": ["convnet"], "models": 1, "epochs": 40, "arch_options": {"convnet": {"width": 16}}})
    assert cli_main(["tune", str(path)]) == 0
    study = optuna.load_study(study_name="asha.digits.dm.ipc3", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = [t.state for t in study.trials]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(states) == 6 and pruned and complete, states
    assert all(list(t.intermediate_values) == [1] for t in pruned)  # stopped after rung 1 of 2, its score kept as such
    assert study.best_trial.state == optuna.trial.TrialState.COMPLETE
    runs = tune_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "asha")
    assert sum(r.data.tags["distillery.early_stopped"] == "true" for r in runs) == len(pruned)


def test_tuning_prepares_expert_buffers_like_a_sweep(tmp_path):
    """An MTT cell's trials need the experts on the training data minus the validation split; the
    tuning driver hands the same jobs to the sweep's parallel prep (no Ray needed to list them), and
    a cell of a method without preparation adds none."""
    from distillery.orchestrator.prep import collect_prep_jobs
    from distillery.orchestrator.tuning import prep_needs

    mtt = {"params": {"iterations": 2, "num_experts": 2, "expert_epochs": 1, "max_start_epoch": 1, "syn_steps": 2,
                      "width": 8, "buffer_dir": str(tmp_path / "experts")},
           "space": {"lr_img": {"type": "float", "low": 10.0, "high": 1000.0, "log": True}}}
    path = tiny_tune("mttprep", tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["methods"]["mtt"] = mtt
    path.write_text(yaml.safe_dump(raw))
    config = load_tune_config(path, base_dir=tmp_path)
    needs = prep_needs(config, cells(config))
    assert [spec.method for spec, _ in needs] == ["dm", "mtt"]
    assert all(spec.data.validation_per_class == VAL for spec, _ in needs)
    jobs = collect_prep_jobs(needs)
    assert sorted(j.index for j, _ in jobs) == [0, 1] and {j.method for j, _ in jobs} == {"mtt"}
    data = jobs[0][0].load_data()
    assert data.eval_split == "validation" and len(data.train_y) == len(load_dataset("digits").train_y) - VAL * 10


def test_tuning_workers_use_the_drivers_buffer_folder(tmp_path, monkeypatch):
    """A tuning worker builds its trial's spec from sampled parameters; the method's locations in it
    are the driver's (where the driver's preparation built the experts), not the worker's environment."""
    import pickle

    monkeypatch.setenv("DISTILLERY_CACHE", str(tmp_path / "driver-cache"))
    config = validate_tune_config({"name": "loc", "datasets": ["digits"], "ipcs": [1], "methods": {"mtt": {
        "params": {"iterations": 2}, "space": {"lr_img": {"type": "float", "low": 10, "high": 100}}}}}, base_dir=tmp_path)
    (cell,) = cells(config)
    monkeypatch.setenv("DISTILLERY_CACHE", str(tmp_path / "worker-cache"))
    shipped = pickle.loads(pickle.dumps(cell))
    spec = trial_spec(config, shipped, {"lr_img": 50.0})
    assert spec.resolved_method_config().buffer_dir == str(tmp_path / "driver-cache" / "experts")
    assert spec.resolved_method_config().lr_img == 50.0
