"""analysis: aggregation, curve fits and the trend test on frames with planted ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from distillery.analysis.aggregate import aggregate, baseline_for
from distillery.analysis.fits import CURVE_MODELS, fit_all, fit_curve, tradeoff_curve
from distillery.analysis.load import models_from_per_class, per_model_metrics, to_long
from distillery.analysis.trend import trend_test


def _trial_frame(run_id, method, ipc, seed, accs, arch="ConvNet", full=False):
    """Model rows for one trial from accs [n_models, n_classes], through the loader's own builder."""
    rows = [(arch, m, c, f"c{c}", float(a)) for m, per in enumerate(accs) for c, a in enumerate(per)]
    pc = pd.DataFrame(rows, columns=["arch", "model", "class_index", "class_name", "acc"])
    trial = {"run_id": run_id, "dataset": "toy", "method": method, "ipc": ipc, "seed": seed, "full_data": full,
             "compute_seconds": 10.0, "gpu_seconds": 5.0}
    return models_from_per_class(trial, pc)


def test_per_model_metrics_match_schema_definitions():
    acc = np.array([[0.5, 0.7, 0.9, 0.3]])
    m = {k: v[0] for k, v in per_model_metrics(acc).items()}
    assert m["mean_acc"] == pytest.approx(0.6)
    assert m["class_var"] == pytest.approx(((0.1**2) + (0.1**2) + (0.3**2) + (0.3**2)) / 4)  # population
    assert m["class_std"] == pytest.approx(np.sqrt(0.05))
    assert m["worst_class_acc"] == pytest.approx(0.3)
    assert m["gap"] == pytest.approx(0.6)
    assert m["cv"] == pytest.approx(np.sqrt(0.05) / 0.6)


def test_aggregate_equals_hand_calculation():
    models = pd.concat([
        _trial_frame("r1", "dc", 10, 0, [[0.2, 0.4], [0.4, 0.4]]),
        _trial_frame("r2", "dc", 10, 1, [[0.6, 1.0]]),
        _trial_frame("full", "full", 5000, 0, [[0.9, 0.9]], full=True),
    ], ignore_index=True)
    agg = aggregate(models)
    cell = agg[agg["method"] == "dc"].iloc[0]
    # per model: means 0.3, 0.4, 0.8; population variances 0.01, 0.0, 0.04
    assert cell["n_models"] == 3 and cell["n_sets"] == 2 and cell["images"] == 20
    assert cell["mean_acc"] == pytest.approx((0.3 + 0.4 + 0.8) / 3)
    assert cell["class_var"] == pytest.approx((0.01 + 0.0 + 0.04) / 3)  # study convention: mean of per-model vars
    assert cell["mean_acc_std"] == pytest.approx(np.std([0.3, 0.4, 0.8], ddof=1))
    assert cell["worst_class_acc"] == pytest.approx((0.2 + 0.4 + 0.6) / 3)
    # the interval is over SETS (set means 0.35 and 0.8): a t interval on 1 degree of freedom
    from scipy import stats
    half = stats.t.ppf(0.975, 1) * np.std([0.35, 0.8], ddof=1) / np.sqrt(2)
    assert cell["mean_acc_ci_low"] == pytest.approx(0.575 - half) and cell["mean_acc_ci_high"] == pytest.approx(0.575 + half)
    assert cell["gpu_seconds"] == pytest.approx(5.0)  # per set, not per model
    assert not cell["is_baseline"]
    base = baseline_for(agg, "toy", "ConvNet")
    assert base is not None and base["is_baseline"] and base["class_var"] == pytest.approx(0.0)
    # independent of the other cells present; with one set no interval about sets is given
    again = aggregate(models[models["run_id"] != "full"])
    assert again.iloc[0]["mean_acc_ci_low"] == cell["mean_acc_ci_low"]
    assert np.isnan(base["mean_acc_ci_low"]) and np.isnan(base["class_var_ci_high"])
    long = to_long(models)
    assert len(long) == 2 * 4 and set(long.columns) >= {"class_index", "class_name", "acc"}


def _planted_series(func, ipcs, n_sets=3, n_models=4, noise=0.004, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for ipc in ipcs:
        for s in range(n_sets):
            set_shift = rng.normal(0, noise)
            for _ in range(n_models):
                rows.append((ipc, f"{ipc}-{s}", func(ipc) + set_shift + rng.normal(0, noise)))
    return pd.DataFrame(rows, columns=["ipc", "set", "y"])


@pytest.mark.parametrize("model,truth,tol", [
    ("power_law", {"a": 0.72, "b": 0.45, "c": 0.6}, {"a": 0.02, "b": 0.03, "c": 0.1}),
    ("log_linear", {"a": 0.01, "b": 0.004}, {"a": 0.003, "b": 0.001}),
])
def test_fits_recover_planted_parameters(model, truth, tol):
    cm = CURVE_MODELS[model]
    df = _planted_series(lambda x: cm.func(np.float64(x), *truth.values()), [1, 2, 5, 10, 20, 30, 50],
                         noise=0.002 if model == "log_linear" else 0.004)
    r = fit_curve(df["ipc"], df["y"], model, groups=df["set"])
    assert r.ok, r.message
    for p, v in truth.items():
        assert r.params[p] == pytest.approx(v, abs=tol[p]), (p, r.params)
        if model == "log_linear":  # linear in its parameters: a Welch interval over sets
            lo, hi = r.ci[p]
            assert lo <= r.params[p] <= hi and lo <= v <= hi
        else:  # nonlinear: no calibrated interval, and it says why
            assert not r.ci and "nonlinear" in r.ci_note
    assert r.r2 > 0.95
    other = "log_linear" if model == "power_law" else "power_law"
    r_other = fit_curve(df["ipc"], df["y"], other)
    if model == "power_law":  # the true model wins on AIC when the truth is clearly saturating
        assert r.aic < r_other.aic


def test_fit_reports_too_few_levels_instead_of_failing():
    r = fit_curve([1, 1, 5, 5, 10], [0.1, 0.1, 0.3, 0.3, 0.4], "power_law")
    assert not r.ok and "needs >= 4" in r.message


def test_fit_all_table_and_tradeoff_curve():
    rows = []
    rng = np.random.default_rng(0)
    for ipc in (1, 5, 10, 20, 30):
        for s in range(2):
            acc = 0.7 - 0.4 * ipc**-0.5
            spread = 0.05 + 0.01 * np.log(ipc)
            pattern = np.linspace(-1.5, 1.5, 10)
            accs = [np.clip(acc + spread * pattern + rng.normal(0, 0.005, 10), 0, 1) for _ in range(3)]
            rows.append(_trial_frame(f"{ipc}-{s}", "mtt", ipc, s, accs))
    models = pd.concat(rows, ignore_index=True)
    table, results = fit_all(models)
    assert set(table["model"]) == {"power_law", "log_linear"} and table["ok"].all()
    assert table.groupby("metric")["best"].sum().eq(1).all()
    curve = tradeoff_curve(results[("toy", "mtt", "ConvNet", "mean_acc", "power_law")],
                           results[("toy", "mtt", "ConvNet", "class_var", "log_linear")], [1, 5, 10, 30])
    assert (np.diff(curve["mean_acc"]) > 0).all() and (np.diff(curve["class_var"]) > 0).all()
    assert (curve["dvar_dacc"] > 0).all()


def _trend_data(slope, seed):
    rng = np.random.default_rng(seed)
    ipc, y, g = [], [], []
    for x in (1, 5, 10, 15, 20, 25, 30):
        for s in range(3):
            shift = rng.normal(0, 0.002)
            for _ in range(4):
                ipc.append(x)
                y.append(0.02 + slope * x + shift + rng.normal(0, 0.002))
                g.append(f"{x}-{s}")
    return ipc, y, g


def test_trend_detects_planted_increase():
    r = trend_test(*_trend_data(4e-4, seed=0), label=("toy", "mtt", "ConvNet"))
    assert r.direction == "increasing" and r.claim_holds is True
    assert r.rho > 0.8 and r.p_value < 1e-3 and r.slope_ci_low > 0
    assert r.slope == pytest.approx(4e-4, rel=0.25)
    assert "HOLDS" in r.verdict and r.n_units == 21


def test_trend_finds_no_trend_in_flat_data():
    r = trend_test(*_trend_data(0.0, seed=1))
    assert r.direction == "none" and r.claim_holds is False
    assert r.p_value > 0.05 and r.slope_ci_low < 0 < r.slope_ci_high
    assert "NOT SUPPORTED" in r.verdict


def test_trend_detects_decrease_and_insufficient_levels():
    r = trend_test(*_trend_data(-4e-4, seed=2))
    assert r.direction == "decreasing" and "CONTRADICTED" in r.verdict
    r2 = trend_test([1, 1, 5, 5], [0.1, 0.1, 0.2, 0.2], ["a", "b", "c", "d"])
    assert r2.direction == "insufficient" and r2.claim_holds is None


def test_mixed_verdicts_say_what_each_test_found():
    from distillery.analysis.trend import what_tests_found

    same_way = what_tests_found(True, 0.4, -0.001, 0.02, 0.95)  # both lean up, only the rank test is significant
    assert same_way == "the rank test finds a significant increase, the slope's 95% CI includes 0"
    assert "disagree" not in same_way
    other = what_tests_found(False, 0.1, 0.001, 0.02, 0.95)
    assert other == "the rank test finds no significant trend (rho > 0), the slope's 95% CI is above 0 (an increase)"


def test_trend_reports_an_effect_size_with_a_ci():
    r = trend_test(*_trend_data(4e-4, seed=0), baseline=0.01)
    assert r.effect == pytest.approx(4e-4 * (30 - 1), rel=0.3)  # IPC 1 -> 30
    assert r.effect_ci_low < r.effect < r.effect_ci_high and r.effect_ci_low > 0
    assert r.effect_vs_baseline == pytest.approx(r.effect / 0.01)
    assert "IPC 1 -> 30: +" in r.verdict and "x the full-data value" in r.verdict
    flat = trend_test(*_trend_data(0.0, seed=1))
    assert flat.effect_ci_low < 0 < flat.effect_ci_high and np.isnan(flat.effect_vs_baseline)


def test_holm_adjustment_and_its_use_in_the_verdict():
    from distillery.analysis.trend import holm

    adj = holm([0.01, 0.04, np.nan, 0.03])
    assert np.allclose(adj[[0, 3, 1]], [0.03, 0.06, 0.06]) and np.isnan(adj[2])  # 3 tests: 3p, 2p (running max), 1p
    strong = _trend_data(4e-4, seed=0)
    r = trend_test(*strong, p_adjusted=0.2)  # significant alone, not after correction
    assert r.p_value < 0.05 and r.p_adjusted == 0.2 and r.claim_holds is not True and "Holm-adjusted 0.2" in r.verdict


def test_trend_all_corrects_over_series_and_relates_to_the_baseline():
    from distillery.analysis.trend import trend_all

    frames = []
    for method, slope in (("a", 4e-4), ("b", 0.0), ("c", 0.0)):
        ipc, y, g = _trend_data(slope, seed=len(frames))
        frames.append(pd.DataFrame({"dataset": "toy", "method": method, "arch": "convnet", "ipc": ipc, "class_var": y,
                                    "run_id": [f"{method}{k}" for k in g], "full_data": False}))
    frames.append(pd.DataFrame({"dataset": "toy", "method": "full", "arch": "convnet", "ipc": 500, "class_var": [0.004] * 3,
                                "run_id": "full", "full_data": True}))
    table, results = trend_all(pd.concat(frames, ignore_index=True))
    assert list(table["method"]) == ["a", "b", "c"]
    assert (table["p_adjusted"] >= table["p_value"]).all() and results[0].claim_holds is True
    assert results[0].effect_vs_baseline == pytest.approx(results[0].effect / 0.004)


def test_one_full_data_baseline_per_dataset_and_seed_is_counted():
    """A sweep resumed across the baseline's hash change (ipc 1 -> null) has two finished baseline
    runs for one seed; analysis counts the newest only (distilled trials are still keyed by hash)."""
    from distillery.analysis.load import _select_and_build

    def trial(run_id, h, start, full=True, seed=0):
        return {"run_id": run_id, "trial_hash": h, "status": "FINISHED", "start_time": start, "full_data": full,
                "dataset": "toy", "method": "full" if full else "dm", "ipc": 500 if full else 1, "seed": seed}

    def loader(t):
        per_class = pd.DataFrame({"arch": "convnet", "model": 0, "class_index": [0, 1], "acc": [0.9, 0.8]})
        return per_class, {}

    trials = [trial("old", "h-old", 1), trial("new", "h-new", 2), trial("other-seed", "h-s1", 1, seed=1),
              trial("dm", "h-dm", 1, full=False)]
    warnings: list[str] = []
    models, frame = _select_and_build(trials, loader, warnings)
    assert sorted(models["run_id"].unique()) == ["dm", "new", "other-seed"]
    assert frame.set_index("run_id").loc["old", "used"] == False  # noqa: E712
    assert any("several FINISHED runs" in w for w in warnings)


def test_two_identities_of_one_cell_are_never_pooled():
    """A --resume across an identity change (e.g. the seeding scheme) leaves two finished hashes of
    one (dataset, method, IPC, seed) cell: only the newest is counted."""
    from distillery.analysis.load import _select_and_build

    def trial(run_id, h, start, seed=0):
        return {"run_id": run_id, "trial_hash": h, "status": "FINISHED", "start_time": start, "full_data": False,
                "dataset": "toy", "method": "dm", "ipc": 5, "seed": seed}

    def loader(t):
        return pd.DataFrame({"arch": "convnet", "model": 0, "class_index": [0, 1], "acc": [0.9, 0.8]}), {}

    warnings: list[str] = []
    models, frame = _select_and_build([trial("old", "h-old", 1), trial("new", "h-new", 2), trial("s1", "h-s1", 1, seed=1)],
                                      loader, warnings)
    assert sorted(models["run_id"].unique()) == ["new", "s1"]
    assert "not pooled" in frame.set_index("run_id").loc["old", "error"] and any("not pooled" in w for w in warnings)


def test_verdicts_name_the_interval_the_sets_and_what_lacked_power():
    from distillery.analysis.trend import trend_all

    frames = []
    for method, slope in (("up", 4e-4), ("flat", 0.0)):
        ipc, y, g = _trend_data(slope, seed=4)
        frames.append(pd.DataFrame({"dataset": "toy", "method": method, "arch": "convnet", "ipc": ipc, "class_var": y,
                                    "run_id": [f"{method}{k}" for k in g], "full_data": False}))
    _, (flat, up) = trend_all(pd.concat(frames, ignore_index=True))
    assert up.claim_holds is True and "Welch-Satterthwaite t over set means" in up.verdict
    assert "n = 21 sets over 7 IPC values, 3 per IPC" in up.verdict and up.min_sets == 3
    assert flat.direction == "none" and "the rank test finds no significant trend" in flat.verdict
    assert "the slope's 95% CI includes 0" in flat.verdict
    assert np.isfinite(flat.mde) and f"at least {flat.mde:+.3g} from IPC 1 to 30 with 80% power" in flat.verdict
