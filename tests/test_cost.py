"""`distillery sweep CONFIG --dry-run --estimate`: a calibrated cost estimate before launch."""

from __future__ import annotations


from distillery.orchestrator.config import validate_config
from distillery.orchestrator.cost import _simulate, concurrent_slots, describe, estimate_sweep, shape_key
from distillery.orchestrator.grid import expand
from tests.sweep_helpers import cli, tiny_sweep, write_config


def test_wall_time_simulates_trials_taking_the_next_free_slot():
    assert _simulate([10, 10, 10, 10], 2) == 20
    assert _simulate([30, 10, 10, 10], 2) == 30  # the long one holds a slot while the others share the second
    assert _simulate([5], 4) == 5 and _simulate([], 2) == 0


def test_slots_follow_the_configs_resources(tmp_path):
    cfg = validate_config({**tiny_sweep("slots"), "num_cpus": 4, "resources": {"cpu": 1, "gpu": 0}}, base_dir=tmp_path)
    assert concurrent_slots(cfg, expand(cfg)) == 4
    cfg = validate_config({**tiny_sweep("slots"), "num_cpus": 4, "resources": {"cpu": 2, "gpu": 0}}, base_dir=tmp_path)
    assert concurrent_slots(cfg, expand(cfg)) == 2
    cfg = validate_config({**tiny_sweep("slots"), "num_cpus": 8, "num_gpus": 1, "resources": {"cpu": 1, "gpu": 0.25}}, base_dir=tmp_path)
    assert concurrent_slots(cfg, expand(cfg)) == 4  # four trials share the one GPU


def test_estimate_calibrates_each_shape_once_and_skips_what_needs_preparation(tmp_path, monkeypatch):
    raw = tiny_sweep("est", methods={"random": {}, "mtt": {"params": {"iterations": 2, "buffer_dir": str(tmp_path / "experts")}}},
                     ipcs=[1], seeds=[0, 1])
    monkeypatch.setenv("DISTILLERY_CACHE", str(tmp_path / "cache"))
    cfg = validate_config(raw, base_dir=tmp_path)
    plans = expand(cfg)
    assert len({shape_key(p) for p in plans}) == 2  # seeds cost the same
    shapes = []
    est = estimate_sweep(cfg, plans, on_shape=lambda plan, i, n, cached: shapes.append((plan.spec.method, i, n, cached)))
    assert shapes == [("random", 1, 2, False), ("mtt", 2, 2, False)]
    randoms = [p.trial_hash for p in plans if p.spec.method == "random"]
    assert set(est.per_trial) == set(randoms) and est.per_trial[randoms[0]].total_seconds > 0
    assert all("preparation job" in why for why in est.missing.values()) and len(est.missing) == 2
    assert not (tmp_path / "experts").exists() or not any((tmp_path / "experts").rglob("*.pt"))  # nothing built


def test_dry_run_estimate_prints_per_trial_and_total_and_starts_nothing(tmp_path):
    path = write_config(tmp_path, tiny_sweep("dryest", num_cpus=2))
    proc = cli(["sweep", str(path), "--dry-run", "--estimate"], cwd=tmp_path, env={"DISTILLERY_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[estimate] calibrating trial shape 1/4" in proc.stderr
    assert "herding-ipc2-seed1" in proc.stdout and "total ~" in proc.stdout
    assert "8 trials, ~" in proc.stdout and "2 at a time -> ~" in proc.stdout
    assert "Estimated cost on cpu (" in proc.stdout  # names what it was measured on
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "distillery-runs").exists()


def test_a_second_estimate_reads_the_calibration_cache_and_recalibrate_measures_again(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLERY_CACHE", str(tmp_path / "cache"))
    cfg = validate_config(tiny_sweep("cached", methods={"random": {}}, ipcs=[1], seeds=[0, 1]), base_dir=tmp_path)
    plans = expand(cfg)
    first = estimate_sweep(cfg, plans)
    assert first.cached_shapes == 0 and (tmp_path / "cache" / "calibration.json").exists()
    second = estimate_sweep(cfg, plans)
    assert second.cached_shapes == 1 and second.per_trial == first.per_trial  # the very same figures, not a new measurement
    assert "1 from the calibration cache" in describe(second, plans)
    (tmp_path / "cache" / "calibration.json").write_text("{half a file")  # an interrupted write elsewhere: measure again
    assert estimate_sweep(cfg, plans).cached_shapes == 0
    assert estimate_sweep(cfg, plans, recalibrate=True).cached_shapes == 0


def test_a_gpu_trial_without_a_gpu_here_is_calibrated_on_the_cpu_it_would_fall_back_to(tmp_path, monkeypatch):
    """The calibration runs where the trial will run (worker.trial_device); with no CUDA, 'auto' is the CPU."""
    import torch

    monkeypatch.setenv("DISTILLERY_CACHE", str(tmp_path / "cache"))
    cfg = validate_config({**tiny_sweep("gpuest", methods={"random": {}}, ipcs=[1], seeds=[0]), "num_gpus": 1,
                           "resources": {"cpu": 1, "gpu": 0.5}}, base_dir=tmp_path)
    est = estimate_sweep(cfg, expand(cfg))
    want = "cuda" if torch.cuda.is_available() else "cpu ("
    assert len(est.devices) == 1 and est.devices[0].startswith(want)


def test_recalibrate_without_estimate_is_a_clear_error(tmp_path):
    path = write_config(tmp_path, tiny_sweep("recal"))
    proc = cli(["sweep", str(path), "--dry-run", "--recalibrate"], cwd=tmp_path)
    assert proc.returncode == 2 and "--recalibrate" in proc.stderr and "add --estimate" in proc.stderr
    assert not (tmp_path / "distillery-runs").exists()
