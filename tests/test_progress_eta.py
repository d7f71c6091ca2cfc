"""Progress lines: every long phase of a trial prints its progress with a smoothed ETA."""

from __future__ import annotations

import io

import pytest

from distillery.methods.distill.base import Progress
from distillery.methods.eval import EvalProgress
from distillery.orchestrator.eta import PhaseETA, format_seconds
from distillery.orchestrator.trial_cmd import ProgressPrinter


def test_eta_is_exact_at_a_constant_rate_and_smoothed_after_a_slow_step() -> None:
    eta = PhaseETA(smoothing=0.3)
    assert eta.update(0, 10, now=0.0) is None  # no rate yet
    assert eta.update(2, 10, now=4.0) == pytest.approx(16.0)  # 2 s per unit, 8 left
    assert eta.update(4, 10, now=8.0) == pytest.approx(12.0)
    slow = eta.update(5, 10, now=18.0)  # one unit took 10 s: the estimate moves, but not all the way
    assert 5 * 2.0 < slow < 5 * 10.0
    assert format_seconds(59) == "59s" and format_seconds(61) == "1m01s" and format_seconds(3700) == "1h01m"


def test_trial_printer_shows_each_phase_with_an_eta() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(enabled=True, every=0.0, stream=out)
    for done in range(0, 4):
        printer.distill(Progress(done, 3 if done < 4 else 3, None, float(done), dict, phase="experts"))
    for done in range(1, 5):
        printer.distill(Progress(done, 4, 1.0 / done, float(done), dict))
    for done in range(1, 7):  # 2 models one after another, 3 epochs each
        printer.evaluate("convnet", EvalProgress(done, 6, 3, 2, (done - 1) // 3 + 1))
    lines = out.getvalue().splitlines()
    assert any(line.startswith("[experts] 1/3 expert epochs") for line in lines)
    assert any(line.startswith("[distill] 2/4 iterations") and "ETA" in line for line in lines)
    assert any(line.startswith("[eval convnet] model 1/2, epoch 2/3, ETA") for line in lines)
    assert any(line.startswith("[eval convnet] model 2/2, epoch 1/3") for line in lines)
    assert "ETA" not in lines[-1]  # a finished phase has nothing left


def test_printed_commands_run_without_an_activated_venv(monkeypatch):
    """A hint names this environment's tool by path unless PATH already finds that same file."""
    import sys
    from pathlib import Path

    from distillery.orchestrator.commands import command, tool

    venv_bin = Path(sys.executable).parent
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert tool("mlflow") == str(venv_bin / "mlflow")
    assert command("distillery", "analyze", "--experiment", "my sweep") == f"{venv_bin / 'distillery'} analyze --experiment 'my sweep'"
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")
    assert tool("mlflow") == "mlflow"
    assert tool("no-such-tool-here") == "no-such-tool-here"


def test_trial_help_describes_the_command_and_its_defaults(capsys):
    import pytest

    from distillery.orchestrator.cli import main

    with pytest.raises(SystemExit):
        main(["trial", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Distill one synthetic set" in out and "--set iterations=N" in out
    assert "seed of every random draw" in out and "(default: 0)" in out and "(default: digits)" in out
    assert "(default: None)" not in out and "(default: False)" not in out


def test_summary_table_labels_its_columns_and_uses_the_reports_unit():
    from distillery.orchestrator.progress import summary_table

    from distillery.methods.schema import ArchSummary, ModelScore, TrialSummary

    models = (ModelScore(0.9, 0.0025, 0.9, (0.9,)), ModelScore(0.8, 0.0035, 0.8, (0.8,)))
    arch = ArchSummary(mean_acc=0.85, overall_acc=0.85, class_var=0.003, class_std=0.05, worst_class_acc=0.8, gap=0.1, cv=0.1,
                       mean_acc_std=0.07, ci95=(0.8, 0.9), per_class=(0.85,), per_model=models, n_models=2, train_seconds=1.0,
                       test_seconds=1.0, epochs=3, lr=0.01, vectorized=False)
    summary = TrialSummary(dataset="digits", method="dm", ipc=10, seed=0, archs={"convnet": arch}, class_names=("0",),
                           eval_split="test", eval_samples=10, distill_seconds=1.0, eval_seconds=1.0, learned_lr=None,
                           synthetic_images=100, method_config={})
    assert TrialSummary.from_dict(summary.to_dict()) == summary  # the stored JSON reads back as the same summary
    record = {"ipc": 10, "summary": summary.to_dict()}
    header, _, row, note = summary_table([record]).splitlines()
    assert "mean acc %" in header and "sd %" in header
    assert "class var" in header and "%^2" not in header
    assert row.split()[-4:] == ["85.00", "7.07", "0.00300", "2"]  # class var in fraction^2, as in the report and MLflow
    assert "fraction^2" in note


def test_evaluation_reports_which_model_is_training():
    """The protocol's epoch callback names the model (sequential) or says all train together."""
    import torch

    from distillery.methods.data.base import ImageData
    from distillery.methods.distill.base import SyntheticSet
    from distillery.methods.eval import EvalConfig, evaluate_synset

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 1, 8, 8, generator=g), torch.arange(20) % 2
    data = ImageData("toy", x, y, x, y, ("a", "b"), (0.0,), (1.0,))
    synset = SyntheticSet(x[:4], y[:4])
    for vectorize, expected in ((False, ["model 1/2, epoch 1/2", "model 1/2, epoch 2/2", "model 2/2, epoch 1/2", "model 2/2, epoch 2/2"]),
                                (True, ["2 models together, epoch 1/2", "2 models together, epoch 2/2"])):
        seen = []
        evaluate_synset(synset, data, "mlp", 2, EvalConfig(epochs=2, dsa=False, vectorize=vectorize), epoch_callback=lambda p: seen.append(p.label()))
        assert seen == expected


def test_documented_commands_run_after_the_readmes_install():
    """README/docs command blocks name the venv's tools (the README's install does not activate it),
    except blocks introduced as running in an activated environment (a cluster's nodes)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bare = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = doc.read_text()
        for m in re.finditer(r"```bash\n(.*?)```", text, flags=re.S):
            if "activate" in text[max(0, m.start() - 200): m.start()]:
                continue
            bare += [f"{doc.name}: {line}" for line in m.group(1).splitlines() if re.match(r"(distillery|mlflow|ray|optuna) ", line)]
    assert not bare, bare
