"""analysis end to end on a REAL MLflow sqlite store laid out exactly as docs/tracking-schema.md says,
plus the Tune results-directory loader and the CLI's user errors. No mocks of MLflow."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")
torch = pytest.importorskip("torch")

from mlflow import MlflowClient  # noqa: E402

from distillery.analysis.cli import add_analyze_parser, analyze_main, main  # noqa: E402
from distillery.analysis.errors import AnalysisError, NoFinishedTrialsError, UnknownExperimentError  # noqa: E402
from distillery.analysis.load import load_mlflow, load_tune_dir, per_model_metrics  # noqa: E402
from distillery.analysis.report import run_analysis  # noqa: E402

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PATTERN = np.linspace(-1.5, 1.5, len(CLASSES))  # fixed easy-to-hard class ordering


def planted_accs(method: str, arch: str, ipc: int, rng: np.random.Generator, n_models: int) -> np.ndarray:
    """[n_models, classes]: accuracy saturates with IPC, class spread (variance) grows with log IPC."""
    top = {"dc": 0.55, "dm": 0.60, "mtt": 0.70, "idm": 0.65, "full": 0.85}[method] - (0.05 if arch == "AlexNet" else 0.0)
    mean = top - (0.0 if method == "full" else 0.4 * ipc**-0.5)
    spread = 0.03 if method == "full" else 0.04 + 0.025 * np.log(ipc)
    set_shift = rng.normal(0, 0.01)
    return np.clip(mean + set_shift + spread * PATTERN + rng.normal(0, 0.01, (n_models, len(CLASSES))), 0, 1)


def build_sweep(root: Path, name: str = "fair-sweep", methods=("dc", "mtt"), ipcs=(1, 5, 10, 20), seeds=(0, 1),
                archs=("ConvNet", "AlexNet"), n_models: int = 3, img: int = 8) -> tuple[str, str]:
    """Write a sweep with real mlflow calls: parent run, nested trials (+ baseline + one failed)."""
    uri = f"sqlite:///{(root / 'mlflow.db').resolve()}"
    prev = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        exp_id = mlflow.create_experiment(name, artifact_location=(root / "artifacts").resolve().as_uri())
        rng = np.random.default_rng(0)
        work = root / "work"
        work.mkdir(exist_ok=True)
        with mlflow.start_run(experiment_id=exp_id, run_name=name,
                              tags={"distillery.kind": "sweep", "distillery.sweep_hash": "abc123"}) as parent:
            (work / "sweep.yaml").write_text(f"name: {name}\n")
            mlflow.log_artifact(str(work / "sweep.yaml"))
            cells = [(m, i, s) for m in methods for i in ipcs for s in seeds] + [("full", 5000, 0)]
            for method, ipc, seed in cells:
                _trial(exp_id, parent.info.run_id, work, method, ipc, seed, archs, n_models, img, rng)
            failed = mlflow.start_run(experiment_id=exp_id, run_name="mtt-ipc50-seed0", nested=True, tags={
                "distillery.kind": "trial", "distillery.dataset": "cifar10", "distillery.method": "mtt",
                "distillery.ipc": "50", "distillery.seed": "0", "distillery.trial_hash": "failed50",
                "distillery.status": "FAILED", "distillery.error": "CUDA out of memory", "distillery.full_data": "false"})
            mlflow.end_run(status="FAILED")
            assert failed.info.run_id
        return uri, parent.info.run_id
    finally:
        mlflow.set_tracking_uri(prev)


def _trial(exp_id, parent_id, work, method, ipc, seed, archs, n_models, img, rng):
    full = method == "full"
    tags = {"distillery.kind": "trial", "distillery.dataset": "cifar10", "distillery.method": method,
            # like the orchestrator today: the baseline's ipc tag is a placeholder (1); synthetic_images is the truth
            "distillery.ipc": "1" if full else str(ipc), "distillery.seed": str(seed),
            "distillery.trial_hash": f"{method}{ipc}{seed}",
            "distillery.status": "RUNNING", "distillery.full_data": "true" if full else "false"}
    name = f"{method}-seed{seed}" if full else f"{method}-ipc{ipc}-seed{seed}"
    with mlflow.start_run(experiment_id=exp_id, run_name=name, nested=True, tags=tags) as run:
        assert run.data.tags.get("mlflow.parentRunId", parent_id) == parent_id
        mlflow.log_params({"method.lr_img": "100", "eval.epochs": "300", "eval.archs": ",".join(archs),
                           "dataset.name": "cifar10", "ipc": str(ipc), "seed": str(seed)})
        rows, metrics = [], {}
        for k, arch in enumerate(archs):
            accs = planted_accs(method, arch, ipc, rng, n_models)
            pm = per_model_metrics(accs)
            for m in range(n_models):
                rows += [(arch, m, c, CLASSES[c], float(accs[m, c])) for c in range(len(CLASSES))]
            for key in ("mean_acc", "class_var", "class_std", "worst_class_acc", "gap", "cv"):
                metrics[f"{arch}/{key}"] = float(pm[key].mean())
            metrics[f"{arch}/overall_acc"] = float(pm["mean_acc"].mean())
            metrics[f"{arch}/mean_acc_std"] = float(pm["mean_acc"].std())
            metrics[f"{arch}/n_models"] = n_models
            metrics.update({f"{arch}/per_class/{c}": float(accs[:, c].mean()) for c in range(len(CLASSES))})
            if k == 0:
                metrics.update({key: metrics[f"{arch}/{key}"] for key in ("mean_acc", "class_var", "worst_class_acc")})
        metrics.update({"distill_seconds": 0.0 if full else 30.0 * ipc, "eval_seconds": 20.0,
                        # idm stands for a parameterised set: 4 decoded images per stored one
                        "synthetic_images": ipc * len(CLASSES) * (4 if method == "idm" else 1),
                        **({} if full else {"storage_ipc": float(ipc)}),
                        "resources/cpu": 1, "resources/gpu": 0.5})
        mlflow.log_metrics(metrics)
        for step in range(3):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        d = work / run.info.run_id
        d.mkdir()
        pd.DataFrame(rows, columns=["arch", "model", "class_index", "class_name", "acc"]).to_csv(d / "per_class.csv",
                                                                                                 index=False)
        (d / "config.yaml").write_text(f"method: {method}\nipc: {ipc}\n")
        mlflow.log_artifact(str(d / "per_class.csv"))
        mlflow.log_artifact(str(d / "config.yaml"))
        if not full:
            labels = torch.arange(len(CLASSES)).repeat_interleave(ipc)
            hue = torch.tensor([[np.cos(c), np.sin(c), np.cos(2 * c)] for c in range(len(CLASSES))], dtype=torch.float32)
            gen = torch.Generator().manual_seed(seed * 1000 + ipc)
            images = hue[labels][:, :, None, None] + 0.3 * torch.randn(len(labels), 3, img, img, generator=gen)
            if method == "mtt":  # a soft-label set (as DATM/PAD make): one probability row per image
                labels = 0.7 * torch.nn.functional.one_hot(labels, len(CLASSES)).float() + 0.3 / len(CLASSES)
            torch.save({"images": images, "labels": labels, "lr": 0.01, "full_data": False,
                        "meta": {"method": method, "ipc": ipc}}, d / "synthetic_set.pt")
            mlflow.log_artifact(str(d / "synthetic_set.pt"))
        mlflow.set_tag("distillery.soft_labels", "true" if method == "mtt" else "false")
        mlflow.set_tag("distillery.status", "FINISHED")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    uri, parent = build_sweep(root)
    return root, uri, parent


def test_load_mlflow_frame(sweep):
    _, uri, parent = sweep
    data = load_mlflow(uri, "fair-sweep")
    m = data.models
    assert data.parent_run_id == parent
    assert len(m) == (2 * 4 * 2 + 1) * 2 * 3  # (trials + baseline) x archs x models
    assert m["ipc"].dtype.kind == "i" and m["seed"].dtype.kind == "i" and m["full_data"].dtype == bool
    assert [c for c in m.columns if c.startswith("acc_")] == [f"acc_{c}" for c in range(10)]
    assert data.class_names["cifar10"] == CLASSES
    assert not [w for w in data.warnings if "disagree" in w], data.warnings  # our metrics == the logged ones
    assert set(m.loc[m["full_data"], "ipc"]) == {5000} and set(m.loc[m["full_data"], "method"]) == {"full"}
    assert set(m.loc[m["soft_labels"], "method"]) == {"mtt"} and set(data.trials.loc[data.trials["soft_labels"] == True, "method"]) == {"mtt"}  # noqa: E712
    prob = data.problems
    assert list(prob["status"]) == ["FAILED"] and prob["error"].iloc[0] == "CUDA out of memory"
    assert m.loc[m["method"] == "dc", "gpu_seconds"].max() == pytest.approx((30.0 * 20 + 20.0) * 0.5)
    assert (load_mlflow(uri, parent_run_id=parent).models[["run_id", "model", "arch"]]
            .equals(m[["run_id", "model", "arch"]]))


def test_run_analysis_writes_and_logs_everything(sweep, tmp_path):
    _, uri, parent = sweep
    out = tmp_path / "report"
    res = run_analysis("fair-sweep", uri, out)
    assert res.html_path.exists() and res.csv_path.exists()
    html = res.html_path.read_text()
    assert "data:image/png;base64," in html and "HOLDS" in html and "CUDA out of memory" in html
    assert "mtt (soft labels)" in html and "dc (soft labels)" not in html
    agg = pd.read_csv(res.csv_path)
    assert len(agg) == (2 * 4 + 1) * 2 and agg["is_baseline"].sum() == 2
    # the planted sweep: variance grows with IPC for every series, and the claim is found to hold
    assert all(t.claim_holds for t in res.trend_results if t.metric == "class_var")
    assert res.fits["ok"].all()
    # the per-class table: the planted easy-to-hard ordering, and cell means that agree with aggregates.csv
    per_class = pd.read_csv(out / "per_class.csv")
    assert len(per_class) == len(agg) * len(CLASSES)
    assert (per_class.groupby(["method", "arch", "ipc"])["rank_in_cell"].min() == 1).all()
    wide = per_class[~per_class["full_data"] & (per_class["ipc"] >= 5)]  # where the planted class gap beats the noise
    worst = wide[wide["rank_in_cell"] == 1]
    assert set(worst["class_name"]) == {"airplane"} and len(worst) == wide.groupby(["method", "arch", "ipc"]).ngroups
    cell = per_class[(per_class["method"] == "mtt") & (per_class["arch"] == "ConvNet") & (per_class["ipc"] == 20)]
    row = agg[(agg["method"] == "mtt") & (agg["arch"] == "ConvNet") & (agg["ipc"] == 20)].iloc[0]
    assert cell["acc_mean"].mean() == pytest.approx(row["mean_acc"], abs=1e-9)
    stems = {p.stem for p in res.figures}
    for s in ("accuracy_vs_ipc_cifar10", "variance_vs_ipc_cifar10", "accuracy_variance_twin_cifar10",
              "pareto_cifar10", "class_heatmap_cifar10", "synthetic_cifar10_dc_ipc1", "synthetic_cifar10_mtt_ipc20"):
        assert s in stems, (s, stems)
    for p in res.figures:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert ET.parse(p).getroot().tag.endswith("svg")
    assert len(res.figures) == 2 * (5 + 2 * 3)
    assert "cifar10" in res.summary and "HOLDS" in res.summary
    # logged under analysis/ of the sweep's parent run
    assert res.logged_to_run == parent
    client = MlflowClient(tracking_uri=uri)
    top = {f.path for f in client.list_artifacts(parent, "analysis")}
    figs = {f.path for f in client.list_artifacts(parent, "analysis/figures")}
    assert {"analysis/report.html", "analysis/aggregates.csv", "analysis/summary.txt", "analysis/per_class.csv"} <= top
    assert figs == {f"analysis/figures/{p.name}" for p in res.figures}
    assert "sweep.yaml" in {f.path for f in client.list_artifacts(parent)}


def test_parameterised_sets_get_budget_figures_in_the_report(tmp_path):
    """A sweep with a parameterised method (4 decoded images per stored one) gets accuracy and class
    variance against the decoded images per class; the storage budget equals the IPC here, so no
    storage figure is added; a sweep of plain sets gets neither."""
    uri, _ = build_sweep(tmp_path, name="budget-sweep", methods=("dm", "idm"), ipcs=(1, 10), seeds=(0,),
                         archs=("ConvNet",), n_models=2)
    res = run_analysis("budget-sweep", uri, tmp_path / "report")
    stems = {p.stem for p in res.figures}
    assert {"accuracy_vs_decoded_ipc_cifar10", "variance_vs_decoded_ipc_cifar10"} <= stems
    assert not any("storage_ipc" in s for s in stems)
    agg = pd.read_csv(res.csv_path).set_index(["method", "ipc"])
    assert agg.loc[("idm", 10), "decoded_ipc"] == 40 and agg.loc[("dm", 10), "decoded_ipc"] == 10
    plain = run_analysis("fair-sweep", build_sweep(tmp_path / "plain", methods=("dm",), ipcs=(1, 10), seeds=(0,),
                                                   archs=("ConvNet",), n_models=2)[0], tmp_path / "plain-report")
    assert not any("decoded_ipc" in p.stem for p in plain.figures)


def test_tune_results_directory(tmp_path):
    rng = np.random.default_rng(1)
    for i, (method, ipc) in enumerate([("dc", 1), ("dc", 10), ("mtt", 1), ("mtt", 10)]):
        d = tmp_path / "sweep" / f"trial_{i:05d}"
        d.mkdir(parents=True)
        accs = {a: planted_accs(method, a, ipc, rng, 2).tolist() for a in ("ConvNet",)}
        pm = per_model_metrics(np.array(accs["ConvNet"]))
        progress = {"training_iteration": 1, "loss": 0.5, "trial_hash": f"h{i}"}
        final = {"training_iteration": 2, "trial_id": f"t{i}", "trial_hash": f"h{i}", "dataset": "cifar10", "method": method, "ipc": ipc, "seed": 0,
                 "mean_acc": float(pm["mean_acc"].mean()), "class_var": float(pm["class_var"].mean()),
                 "ConvNet/class_var": float(pm["class_var"].mean()), "per_class": accs, "class_names": CLASSES,
                 "distill_seconds": 5.0, "eval_seconds": 2.0, "resources/gpu": 1.0, "timestamp": 100 + i}
        (d / "result.json").write_text(json.dumps(progress) + "\n" + json.dumps(final) + "\n")
    # a resumed trial that left a second, older copy with the same trial_hash must not be counted twice
    dup = tmp_path / "sweep" / "trial_00000_old"
    dup.mkdir()
    old = json.loads((tmp_path / "sweep" / "trial_00000" / "result.json").read_text().splitlines()[-1])
    (dup / "result.json").write_text(json.dumps({**old, "timestamp": 1}) + "\n")
    # the sweep store's own trials/<hash>/result/result.json (not a Tune file) is ignored
    store = tmp_path / "sweep" / "trials" / "abc" / "result"
    store.mkdir(parents=True)
    (store / "result.json").write_text(json.dumps({"trial_hash": "abc", "summary": {}}))
    bad = tmp_path / "sweep" / "trial_00009"
    bad.mkdir()
    (bad / "result.json").write_text(json.dumps({"training_iteration": 1, "dataset": "cifar10", "method": "dc",
                                                 "ipc": 50, "seed": 0}) + "\n")
    (bad / "error.txt").write_text("Traceback...\nRuntimeError: CUDA out of memory\n")
    data = load_tune_dir(tmp_path / "sweep")
    assert len(data.models) == 4 * 2 and set(data.models["ipc"]) == {1, 10}
    assert data.models["gpu_seconds"].iloc[0] == pytest.approx(7.0)
    prob = data.problems.set_index("run_id")
    assert prob.loc["trial_00009", "status"] == "FAILED" and "out of memory" in prob.loc["trial_00009", "error"]
    assert "superseded" in prob.loc["trial_00000_old", "error"] and len(prob) == 2
    assert any("several FINISHED runs" in w for w in data.warnings)
    assert not [w for w in data.warnings if "disagree" in w]
    res = run_analysis(None, "sqlite:///unused.db", tmp_path / "out", log_to_mlflow=False, tune_dir=tmp_path / "sweep")
    assert res.csv_path.exists() and res.logged_to_run is None
    assert not any(p.stem.startswith("synthetic_") for p in res.figures)


def test_user_errors_are_value_errors_with_the_fix(sweep, tmp_path, capsys):
    _, uri, parent = sweep
    with pytest.raises(UnknownExperimentError, match="'nope'.*fair-sweep") as e:
        load_mlflow(uri, "nope")
    assert isinstance(e.value, ValueError)
    with pytest.raises(UnknownExperimentError, match="no MLflow database"):
        load_mlflow(f"sqlite:///{tmp_path / 'missing.db'}", "fair-sweep")
    assert not (tmp_path / "missing.db").exists()  # we did not create an empty store
    with pytest.raises(UnknownExperimentError, match="no run with id"):
        load_mlflow(uri, parent_run_id="0" * 32)
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment("empty-sweep", artifact_location=(tmp_path / "a").as_uri())
    with pytest.raises(NoFinishedTrialsError, match="empty-sweep"):
        load_mlflow(uri, "empty-sweep")
    # the CLI: analyze_main lets the error through (the distillery CLI prints it, exits 2); main() does that
    import argparse
    parser = argparse.ArgumentParser()
    add_analyze_parser(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["analyze", "--experiment", "nope", "--tracking-uri", uri])
    with pytest.raises(AnalysisError):
        analyze_main(args)
    assert main(["analyze", "--experiment", "nope", "--tracking-uri", uri]) == 2
    assert "nope" in capsys.readouterr().err
    code = main(["analyze", "--experiment", "fair-sweep", "--tracking-uri", uri, "--out", str(tmp_path / "cli"),
                 "--no-log", "--grid-ipc", "5"])
    printed = capsys.readouterr().out
    assert code == 0 and "report:" in printed and (tmp_path / "cli" / "report.html").exists()
    assert {p.name for p in (tmp_path / "cli" / "figures").glob("synthetic_*.png")} == {
        "synthetic_cifar10_dc_ipc5.png", "synthetic_cifar10_mtt_ipc5.png"}
