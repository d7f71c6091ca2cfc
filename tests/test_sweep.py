"""`distillery sweep` with real Ray and real MLflow (no mocks).

One `ray start --head` cluster (with a pretend GPU) is started for the module and joined with
--address by most tests; one test runs the CLI with its own local Ray, as a laptop user would.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from distillery.orchestrator.cli import main as cli_main
from distillery.orchestrator.config import validate_config
from distillery.orchestrator.store import TrialStore
from distillery.orchestrator.sweep import run_sweep
from tests.sweep_helpers import cli, tiny_sweep, trial_runs, write_config

RAY = str(Path(sys.executable).parent / "ray")
MLFLOW = str(Path(sys.executable).parent / "mlflow")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A real Ray cluster head on a free port: 4 CPUs and one pretend GPU."""
    import ray

    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run(
        [RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=4", "--num-gpus=1",
         "--include-dashboard=false", "--disable-usage-stats"],
        check=True, env=env, capture_output=True, text=True, timeout=180,
    )
    address = f"127.0.0.1:{port}"
    try:
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.fixture
def joined(ray_head, tmp_path, monkeypatch):
    """An in-process driver connected to the head (what --address does)."""
    from distillery.orchestrator.raycluster import connect

    monkeypatch.chdir(tmp_path)  # default paths (mlflow.db, distillery-runs) resolve against the cwd
    connect(ray_head)
    yield ray_head


def _doc_keys(section: str) -> list[str]:
    """The backticked names of one ``  - <section>:`` item of docs/tracking-schema.md's trial run."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "tracking-schema.md").read_text()
    block = text.split(f"  - {section}", 1)[1].split("\n  - ", 1)[0]
    return [k.split("=")[0] for k in re.findall(r"`([^`]+)`", block)]


#: documented keys a herding trial does not have (they exist for other methods or on failure)
_CONDITIONAL = {"distillery.error", "learned_lr", "loss", "step", "method_config.iterations", "method_config.lr_img"}


def check_tracking_schema_doc(tags: dict, params: dict, metrics: dict) -> None:
    """docs/tracking-schema.md names the keys a real trial run has, and every key it has is documented."""
    doc_tags = [k for k in _doc_keys("tags:") if k.startswith("distillery.")]
    doc_params = [k for k in _doc_keys("params:") if "<" not in k and "/" not in k and "grid.py" not in k]
    doc_metrics = [k.replace("A/", "convnet/") for k in _doc_keys("metrics") if k != "A"]
    for key in doc_tags + doc_params + [k.replace("<c>", "0") for k in doc_metrics]:
        assert key in _CONDITIONAL or key in tags or key in params or key in metrics, f"documented {key!r} is not recorded"
    assert {k for k in tags if k.startswith("distillery.")} <= set(doc_tags)
    prefixes = {k.split(".")[0] for k in doc_params} | {"method_config", "arch_options"}
    assert {k.split(".")[0] for k in params} <= prefixes, sorted({k.split(".")[0] for k in params} - prefixes)
    patterns = {k.replace("<c>", "") for k in doc_metrics}
    for key in metrics:
        assert key in patterns or any(key.startswith(p) and p.endswith("/") for p in patterns), f"metric {key!r} is not documented"


def _finished(uri: str, experiment: str) -> list:
    return [r for r in trial_runs(uri, experiment) if r.info.status == "FINISHED"]


def test_local_ray_cli_sweep_logs_nested_runs_with_artifacts(tmp_path):
    cfg = tiny_sweep("local", num_cpus=2, analyze=True, full_baseline={"enabled": True})
    cfg["eval"] = {**cfg["eval"], "full_data_epochs": 2}
    path = write_config(tmp_path, cfg)
    home = tmp_path / "home"  # a new user's home: local Ray must neither warn about its token nor write one there
    home.mkdir()
    proc = cli(["sweep", str(path)], cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(home)})  # README's install: venv not activated
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Started a local Ray instance" in proc.stderr + proc.stdout
    assert "Token authentication is" not in proc.stderr + proc.stdout and not (home / ".ray" / "auth_token").exists()
    assert "mean acc %" in proc.stdout
    # the last lines: verdicts, the report file (one analysis folder, next to the trials), an MLflow command that runs as printed
    report = tmp_path / "distillery-runs" / "local" / "analysis" / "report.html"
    assert f"analysis report: {report}" in proc.stdout and report.is_file()
    assert "Trend tests (study claim: class variance grows with IPC):\n  - " in proc.stdout
    assert f"{Path(sys.executable).parent / 'mlflow'} ui --backend-store-uri" in proc.stdout
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs = trial_runs(uri, "local")
    assert len(runs) == 9 and all(r.info.status == "FINISHED" for r in runs)
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1
    assert client.get_run(parents.pop()).data.tags["distillery.kind"] == "sweep"
    assert {r.info.run_name for r in runs} == {f"{m}-ipc{i}-seed{s}" for m in ("random", "herding") for i in (1, 2) for s in (0, 1)} | {"full-seed0"}
    # the full-data baseline cell (ipc null): param 'all', final tag = the per-class count it trained on
    full = next(r for r in runs if r.info.run_name == "full-seed0")
    assert full.data.tags["distillery.full_data"] == "true" and full.data.params["ipc"] == "all"
    assert int(full.data.tags["distillery.ipc"]) > 100 and full.data.metrics["synthetic_images"] > 1000
    assert full.data.tags["distillery.soft_labels"] == "false"
    run = next(r for r in runs if r.info.run_name == "herding-ipc2-seed1")
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    assert (tags["distillery.method"], tags["distillery.ipc"], tags["distillery.seed"]) == ("herding", "2", "1")
    assert len(tags["distillery.trial_hash"]) == 16 and tags["distillery.status"] == "FINISHED"
    for key in ("mean_acc", "class_var", "worst_class_acc", "convnet/per_class/9", "distill_seconds", "eval_seconds", "resources/cpu"):
        assert key in metrics, key
    assert 0 <= metrics["mean_acc"] <= 1
    assert params["method_config.embed_width"] == "8" and params["eval.epochs"] == "4"
    check_tracking_schema_doc(tags, params, metrics)
    # artifacts: the synthetic set loads with weights_only, the CSV is tidy, the grid is a PNG
    local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl")))
    syn = torch.load(local / "synthetic_set.pt", weights_only=True)
    assert syn["images"].shape == (20, 1, 16, 16) and syn["labels"].tolist() == [c for c in range(10) for _ in range(2)]
    rows = list(csv.DictReader(open(local / "per_class.csv")))
    assert len(rows) == 2 * 10 and set(rows[0]) == {"arch", "model", "class_index", "class_name", "acc"}
    assert (local / "synthetic_grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "method: herding" in (local / "config.yaml").read_text()
    # a second plain run refuses instead of duplicating or overwriting
    again = cli(["sweep", str(path)], cwd=tmp_path)
    assert again.returncode == 2 and "--resume" in again.stderr
    # and --resume with everything finished reruns nothing
    resumed = cli(["sweep", str(path), "--resume"], cwd=tmp_path)
    assert resumed.returncode == 0 and "9 already finished, 0 to run" in resumed.stdout
    assert len(trial_runs(uri, "local")) == 9


def test_pad_sweep_builds_scoring_experts_first_and_reports_soft_label_sets(tmp_path):
    """A sweep with PAD (issue 12): its scoring experts (stage 0) are built before PAD's own experts
    (stage 1) as Ray tasks, the trials finish, and MLflow and the report mark the soft-label sets.
    A local Ray instance: it runs before this module's `ray start --head` cluster exists."""
    pad = {"iterations": 2, "num_experts": 2, "soft_labels": True, "syn_steps": 2, "width": 8, "depth": 2, "score_experts": 1, "score_epoch": 1,
           "buffer_dir": str(tmp_path / "experts")}
    cfg = tiny_sweep("padsweep", methods={"random": {}, "pad": {"params": pad}}, ipcs=[1, 2], seeds=[0], analyze=True, num_cpus=2)
    path = write_config(tmp_path, cfg)
    proc = cli(["sweep", str(path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    prep = [line for line in proc.stdout.splitlines() if line.startswith("[prep]") and " done" in line]
    assert len(prep) == 1 + 2 and "PAD scoring expert" in prep[0] and all("PAD expert" in line for line in prep[1:])
    runs = trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "padsweep")
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["distillery.method"]: r.data.tags["distillery.soft_labels"] for r in runs} == {"pad": "true", "random": "false"}
    html = (tmp_path / "distillery-runs" / "padsweep" / "analysis" / "report.html").read_text()
    assert "pad (soft labels)" in html and "random (soft labels)" not in html


def test_join_cluster_with_address_and_pack_fractional_gpus(tmp_path, joined):
    """--address joins the running head; gpu: 0.25 packs four trials on its one (pretend) GPU."""
    import ray

    raw = tiny_sweep("packing", methods={"random": {}}, ipcs=[1, 2, 3, 4], seeds=[0, 1],
                     eval={"archs": ["convnet"], "models": 2, "epochs": 60, "arch_options": {"convnet": {"width": 8}}},
                     resources={"cpu": 0.5, "gpu": 0.25})
    path = write_config(tmp_path, raw)
    assert cli_main(["sweep", str(path), "--address", joined]) == 0
    assert ray.get_runtime_context().gcs_address.endswith(joined.split(":")[1])
    store = TrialStore(tmp_path / "distillery-runs", "packing")
    spans = [(r["started_at"], r["finished_at"]) for r in map(store.read_result, store.done_hashes())]
    assert len(spans) == 8
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    peak = running = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak == 4, f"expected 4 trials at once on one GPU at 0.25 each, saw {peak}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert all(r.data.metrics["resources/gpu"] == 0.25 for r in _finished(uri, "packing"))


def test_failed_trial_is_recorded_and_others_finish(tmp_path, joined):
    raw = tiny_sweep("failing", methods={"random": {}, "herding": {"params": {"embed_arch": "nosuchnet"}}}, ipcs=[1], seeds=[0])
    path = write_config(tmp_path, raw)
    assert cli_main(["sweep", str(path), "--address", joined]) == 1
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = {r.info.run_name: r for r in trial_runs(uri, "failing")}
    assert runs["random-ipc1-seed0"].info.status == "FINISHED"
    failed = runs["herding-ipc1-seed0"]
    assert failed.info.status == "FAILED" and failed.data.tags["distillery.status"] == "FAILED"
    assert "unknown network 'nosuchnet'" in failed.data.tags["distillery.error"]


def test_tracking_server(tmp_path, joined, monkeypatch, capsys):
    """The same sweep against a real `mlflow server` on 127.0.0.1 (sqlite backend), found through
    $MLFLOW_TRACKING_URI alone (the config and the command line name none). The URL carries a
    password (basic auth, ignored by this server): it appears in no printed line, logged YAML or param."""
    port = free_port()
    server = subprocess.Popen(
        [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline and server.poll() is None, "mlflow server did not come up"
            time.sleep(1)
        path = write_config(tmp_path, tiny_sweep("served", methods={"random": {}}))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:s3cret@127.0.0.1:{port}")
        assert cli_main(["sweep", str(path), "--address", joined]) == 0
        printed = capsys.readouterr()
        assert "alice:***@127.0.0.1" in printed.out and "s3cret" not in printed.out + printed.err
        runs = _finished(uri, "served")
        assert len(runs) == 4
        client = MlflowClient(uri)
        parent = runs[0].data.tags["mlflow.parentRunId"]
        logged = Path(client.download_artifacts(parent, "sweep.yaml", str(tmp_path / "cfg"))).read_text()
        assert "tracking_uri" in logged and "s3cret" not in logged and "alice:***@" in logged
        assert not any("s3cret" in v for r in runs for v in (*r.data.params.values(), *r.data.tags.values()))
        local = Path(client.download_artifacts(runs[0].info.run_id, "synthetic_set.pt", str(tmp_path / "dl")))
        assert torch.load(local, weights_only=True)["images"].ndim == 4
        assert not (tmp_path / "mlflow.db").exists()  # nothing went to the embedded default
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _wait_until_quiet(root: Path, quiet_s: float, timeout_s: float) -> None:
    """Block until no file under ``root`` has changed for ``quiet_s`` seconds."""
    def newest() -> float:
        stamps = [0.0]
        for f in root.rglob("*"):
            try:
                stamps.append(f.stat().st_mtime)
            except FileNotFoundError:  # a temp file renamed away between listing and stat
                pass
        return max(stamps)

    deadline = time.time() + timeout_s
    while True:
        before = newest()
        time.sleep(quiet_s)
        if newest() == before:
            return
        assert time.time() < deadline, f"{root} kept changing for {timeout_s:.0f} s after the driver was killed"


def test_sigkill_driver_then_resume(tmp_path, ray_head):
    """Kill the driver mid-sweep and truncate one checkpoint: --resume keeps finished trials,
    continues partial ones from their checkpoint, restarts the one whose checkpoint is unreadable,
    and every trial ends with exactly one FINISHED MLflow run."""
    # 4 trials, 2 at a time: when the first pair is done or nearly so, the second pair runs together,
    # so the kill finds one trial finished and two with checkpoints (the condition below)
    raw = tiny_sweep("killed", methods={"dm": {"params": {"iterations": 400, "net_width": 8}}}, ipcs=[1, 2], seeds=[0, 1],
                     max_concurrent_trials=2)
    path = write_config(tmp_path, raw)
    store = TrialStore(tmp_path / "distillery-runs", "killed")
    env = {"RAY_ADDRESS": ray_head}
    driver = subprocess.Popen([sys.executable, "-m", "distillery.orchestrator.cli", "sweep", str(path)], cwd=tmp_path,
                              env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def partial_with_checkpoint() -> list[str]:
        return [h for h in store.started_hashes() - store.done_hashes() if store.load_checkpoint(h) and store.load_checkpoint(h)["phase"] == "distill"]

    deadline = time.time() + 400
    while not (len(store.done_hashes()) >= 1 and len(partial_with_checkpoint()) >= 2):
        assert driver.poll() is None, "driver ended before it could be killed"
        assert time.time() < deadline, "sweep made no progress"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    # Ray kills a dead driver's workers only once it notices the death; until then they keep
    # checkpointing (every 0.5 s here). Wait for the runs folder to go quiet so that the truncation
    # below is not overwritten by an orphan's next checkpoint (seen on a loaded CI machine).
    _wait_until_quiet(tmp_path / "distillery-runs", quiet_s=3.0, timeout_s=120.0)
    done_before = {h: store.read_result(h)["finished_at"] for h in store.done_hashes()}
    partial = partial_with_checkpoint()
    assert len(done_before) < 4 and len(partial) >= 2
    truncated = store.dir(partial[0]) / "checkpoint.pt"  # e.g. a full disk or a half-synced mount
    truncated.write_bytes(truncated.read_bytes()[:100])

    proc = cli(["sweep", str(path), "--resume"], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = trial_runs(uri, "killed")
    hashes = [r.data.tags["distillery.trial_hash"] for r in runs]
    assert len(runs) == 4 and len(set(hashes)) == 4, "exactly one MLflow run per trial"
    assert all(r.info.status == "FINISHED" for r in runs)
    for h, finished_at in done_before.items():  # finished trials were not rerun
        assert store.read_result(h)["finished_at"] == finished_at
    resumed = [store.read_result(h) for h in partial[1:] if h not in done_before]
    assert resumed and all(r["resumed_from_iteration"] > 0 for r in resumed)
    # the unreadable checkpoint was set aside (kept) and its trial restarted cleanly from iteration 0
    assert store.read_result(partial[0])["resumed_from_iteration"] == 0
    assert len(list(store.dir(partial[0]).glob("checkpoint.unreadable-*.pt"))) == 1


def test_ctrl_c_stops_trials_gracefully_exits_130_and_resume_finishes_them(tmp_path, ray_head):
    """Ctrl-C (SIGINT) on the driver, as a user would: running trials stop with their checkpoints
    kept and are recorded as interrupted, not failed (no error.txt, runs KILLED, no 'SystemExit'
    reason); the command exits 130 without analysing half a sweep; --resume then continues them
    from their checkpoints into the same MLflow runs."""
    raw = tiny_sweep("ctrlc", methods={"dm": {"params": {"iterations": 300, "net_width": 8}}}, ipcs=[1], seeds=[0], analyze=True)
    path = write_config(tmp_path, raw)
    store = TrialStore(tmp_path / "distillery-runs", "ctrlc")
    env = {"RAY_ADDRESS": ray_head}  # the module's head is up: a driver without an address would find it anyway
    driver = subprocess.Popen([sys.executable, "-m", "distillery.orchestrator.cli", "sweep", str(path)], cwd=tmp_path,
                              env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not any((store.load_checkpoint(h) or {}).get("phase") == "distill" for h in store.started_hashes()):
        assert driver.poll() is None, driver.communicate()[1][-3000:]
        assert time.time() < deadline, "no trial checkpointed"
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    out, err = driver.communicate(timeout=180)
    assert driver.returncode == 130, err[-3000:]
    assert "interrupted:" in err and "--resume" in err and "FAILED" not in err
    assert "SystemExit" not in out + err and "Failed to fetch metrics" not in out + err
    assert not (tmp_path / "distillery-runs" / "ctrlc" / "analysis").exists()  # no report of half a sweep
    stopped = store.started_hashes() - store.done_hashes()
    assert stopped and all(store.read_error(h) is None for h in stopped)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ctrlc")
    parent = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("distillery.kind") == "sweep"]
    assert len(parent) == 1 and parent[0].info.status == "KILLED"
    runs = {r.data.tags["distillery.trial_hash"]: r for r in trial_runs(uri, "ctrlc")}
    for h in stopped & set(runs):
        assert runs[h].info.status == "KILLED" and "interrupted" in runs[h].data.tags["distillery.error"]

    proc = cli(["sweep", str(path), "--resume"], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = trial_runs(uri, "ctrlc")
    assert len(runs) == 1 and all(r.info.status == "FINISHED" for r in runs)
    assert (tmp_path / "distillery-runs" / "ctrlc" / "analysis" / "report.html").exists()  # the complete sweep gets its report
    assert all(store.is_done(h) for h in stopped)
    assert any(store.read_result(h)["resumed_from_iteration"] > 0 for h in stopped)


def test_driver_failure_ends_the_parent_run_failed_with_the_reason(tmp_path, joined):
    """A driver that raises after the parent run started (here: MTT's expert preparation cannot
    write its buffer) leaves the parent FAILED with the reason, not RUNNING forever."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the expert buffer folder should be")
    raw = tiny_sweep("prepfail", methods={"mtt": {"params": {"iterations": 2, "num_experts": 1, "syn_steps": 2, "width": 8,
                                                              "buffer_dir": str(blocker)}}}, ipcs=[1], seeds=[0])
    path = write_config(tmp_path, raw)
    with pytest.raises(Exception, match="Not a directory"):
        cli_main(["sweep", str(path), "--address", joined])
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("prepfail")
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.`distillery.kind` = 'sweep'")
    assert parent.info.status == "FAILED"
    assert "not-a-folder" in parent.data.tags["distillery.error"]
