"""A single trial sized for a laptop: the quick budget, the paper budget, and the duration estimate."""

from __future__ import annotations

import json

import pytest

from distillery.methods.budget import QUICK_ITERATIONS, apply_budget
from distillery.methods.errors import UserError
from distillery.methods.eval import EvalConfig
from distillery.methods.trial import TrialSpec


def test_quick_budget_lowers_only_iterations_the_user_did_not_set():
    spec = TrialSpec(dataset="digits", method="dm", ipc=10)
    quick = apply_budget(spec, "quick")
    assert quick.spec.method_params == {"iterations": QUICK_ITERATIONS} and "20000" in quick.note
    assert quick.spec.resolved_method_config().iterations == QUICK_ITERATIONS
    assert spec.method_params == {}  # the argument is not changed
    paper = apply_budget(spec, "paper")
    assert paper.spec == spec and paper.spec.resolved_method_config().iterations == 20000
    mine = TrialSpec(dataset="digits", method="dm", ipc=10, method_params={"iterations": "7"})
    assert apply_budget(mine, "quick").spec == mine  # an explicit number wins
    assert apply_budget(TrialSpec(method="random"), "quick").note is None  # nothing iterative to budget
    with pytest.raises(UserError, match="--budget must be one of quick, paper"):
        apply_budget(spec, "huge")


def test_trial_prints_its_budget_and_estimate_before_it_starts(capsys):
    from distillery.orchestrator.cli import main

    rc = main(["trial", "--method", "dm", "--ipc", "1", "--models", "2", "--epochs", "3", "--device", "cpu", "--json",
               "--set", "net_width=8", "--set", "net_depth=2", "--set", "net.convnet.width=8",
               "--set", "data.subset_per_class=10", "--set", "data.test_subset_per_class=10"])
    assert rc == 0
    captured = capsys.readouterr()
    out, err = json.loads(captured.out), captured.err.splitlines()
    assert out["budget"] == "quick" and out["method_config"]["iterations"] == QUICK_ITERATIONS
    assert err[0].startswith(f"budget quick: dm runs {QUICK_ITERATIONS} of its published 20000 iterations")
    assert err[1].startswith("estimated ~") and "distill" in err[1] and "evaluate" in err[1]
    assert err.index(err[1]) < min(i for i, line in enumerate(err) if line.startswith("[distill]"))  # before it starts
    est = out["estimate"]
    assert est["iterations"] == QUICK_ITERATIONS and est["seconds_per_iteration"] > 0
    assert est["distill_seconds"] == pytest.approx(est["seconds_per_iteration"] * QUICK_ITERATIONS)
    assert est["eval_seconds"] > 0


def test_estimate_scales_with_the_trials_size():
    """Ten times the iterations, a thousand times the epochs: estimates that grow with them (same calibration)."""
    from distillery.methods.estimate import estimate_trial
    from distillery.methods.eval import EvalConfig
    from distillery.methods.trial import with_overrides

    base = with_overrides(TrialSpec(dataset="digits", method="dm", ipc=1, n_models=1, eval=EvalConfig(epochs=4, dsa=False)),
                          {"net_width": "8", "net_depth": "2", "net.convnet.width": "8", "iterations": "10",
                           "data.subset_per_class": "10", "data.test_subset_per_class": "10"})
    small = estimate_trial(base, device="cpu")
    big = estimate_trial(with_overrides(base, {"iterations": "100", "eval.epochs": "4000"}), device="cpu")
    assert small.iterations == 10 and big.iterations == 100
    for est in (small, big):  # the measured per-iteration cost, scaled to the trial's iterations
        assert est.distill_seconds == pytest.approx(est.seconds_per_iteration * est.iterations)
    assert big.eval_seconds > small.eval_seconds  # 3996 more epochs at a measured cost > 0 (no timing threshold)


def test_estimate_calibrates_one_model_on_a_slice_of_the_test_split(monkeypatch):
    """Sequential models cost K times one and testing is linear in the split's size, so the
    calibration trains one model and tests on at most CALIBRATION_TEST_IMAGES images (a CIFAR-10
    calibration used to test every model on all 10k images), and scales both back up."""
    from distillery.methods import estimate
    from distillery.methods.trial import with_overrides

    seen: list[tuple[int, int]] = []
    real = estimate.evaluate_synset

    def spy(synset, data, arch, n_models, *args, **kwargs):
        seen.append((n_models, len(data.test_x)))
        return real(synset, data, arch, n_models, *args, **kwargs)

    monkeypatch.setattr(estimate, "evaluate_synset", spy)
    monkeypatch.setattr(estimate, "CALIBRATION_TEST_IMAGES", 30)
    spec = with_overrides(TrialSpec(dataset="digits", method="random", ipc=1, n_models=5, eval=EvalConfig(epochs=4, dsa=False)),
                          {"net.convnet.width": "8", "data.subset_per_class": "5", "data.test_subset_per_class": "10"})
    est = estimate.estimate_trial(spec, device="cpu")
    assert seen == [(1, 30)]  # one model, 30 of the 100 test images
    assert est.eval_seconds > 0
