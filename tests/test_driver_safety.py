"""One driver per sweep, and a --resume that continues the same study or refuses (real drivers, real
Ray and MLflow, real files)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from distillery.methods.errors import UserError
from distillery.orchestrator.config import load_config
from distillery.orchestrator.driverlock import driver_lock
from distillery.orchestrator.grid import expand
from distillery.orchestrator.store import TrialStore
from tests.sweep_helpers import REPO, cli, tiny_sweep, write_config

HOLD = ("import sys\n"
        "from distillery.orchestrator.driverlock import driver_lock\n"
        "cm = driver_lock(sys.argv[1], sys.argv[2])\n"
        "cm.__enter__()\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n")


def test_one_driver_per_sweep_and_a_resume_only_adds_cells(tmp_path):
    storage = tmp_path / "store"
    cfg = tiny_sweep("guarded", methods={"random": {}}, ipcs=[1], seeds=[0], storage_path=str(storage))
    path = write_config(tmp_path, cfg)

    # another driver holds the sweep (the lock code of every driver, in its own process)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(storage), "guarded"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert holder.stdout.readline().strip() == "held"
        for extra in ([], ["--resume"]):
            proc = cli(["sweep", str(path), *extra], cwd=tmp_path, timeout=300)
            assert proc.returncode == 2, proc.stderr
            assert "is being run by another driver" in proc.stderr and f"pid {holder.pid}" in proc.stderr
            assert "Traceback" not in proc.stderr
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the owner file stays behind
        holder.wait()
    assert (storage / "guarded" / ".driver.owner.json").exists()

    # the killed driver does not block the next one
    first = cli(["sweep", str(path)], cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (storage / "guarded" / "sweep.json").is_file()

    # `analyze` without --out, from elsewhere, writes beside the sweep's own storage path
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = cli(["analyze", "--experiment", "guarded", "--tracking-uri", uri, "--no-log"], cwd=elsewhere, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (storage / "guarded" / "analysis" / "report.html").is_file() and not (elsewhere / "distillery-runs").exists()
    bad = cli(["analyze", "--experiment", "no-such-sweep", "--tracking-uri", uri], cwd=elsewhere, timeout=300)
    assert bad.returncode == 2 and "unknown experiment 'no-such-sweep'" in bad.stderr

    # an edit that changes an existing cell is refused, naming the change; nothing runs
    edited = write_config(tmp_path, {**cfg, "eval": {**cfg["eval"], "epochs": 5}})
    proc = cli(["sweep", str(edited), "--resume"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "digits/random/ipc1/seed0 changed: eval.epochs: 4 -> 5" in proc.stderr and "--set name=" in proc.stderr

    # dropping a cell is refused too (its finished run would still be analysed)
    moved = write_config(tmp_path, {**cfg, "ipcs": [2]})
    proc = cli(["sweep", str(moved), "--resume"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and "1 cell(s) no longer in the config: digits/random/ipc1/seed0" in proc.stderr

    # adding a cell is allowed and said; the new cell meets a checkpoint that loads but does not fit
    # the trial (a foreign state): it is set aside and the trial restarts once, instead of failing
    grown = write_config(tmp_path, {**cfg, "seeds": [0, 1]})
    new = next(p for p in expand(load_config(grown, base_dir=tmp_path)) if p.spec.seed == 1)
    store = TrialStore(storage, "guarded")
    store.save_checkpoint(new.trial_hash, {"phase": "evaluate", "synset": {"not": "a synthetic set"}, "losses": []})
    proc = cli(["sweep", str(grown), "--resume"], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--resume adds 1 cell(s) to the sweep: digits/random/ipc1/seed1" in proc.stdout
    assert store.is_done(new.trial_hash) and len(list(store.dir(new.trial_hash).glob("checkpoint.unfit-*.pt"))) == 1


def test_a_second_tuning_driver_is_refused_before_it_touches_optuna(tmp_path):
    from distillery.orchestrator.tune_config import load_tune_config
    from distillery.orchestrator.tuning import run_tuning

    cfg = load_tune_config(REPO / "configs/tune_dm_digits.yaml", {"storage_path": str(tmp_path / "runs")}, base_dir=tmp_path)
    with driver_lock(cfg.storage_path, cfg.name, "tuning"):
        with pytest.raises(UserError, match="tuning .* is being run by another driver"):
            run_tuning(cfg, resume=True)
    assert not (tmp_path / "optuna.db").exists()
