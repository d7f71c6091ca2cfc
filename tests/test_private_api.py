"""The private Ray attributes distillery relies on still exist: a Ray upgrade that renames them fails
here, loudly, instead of corrupting a tuning study (pyproject.toml pins the tested range)."""

from __future__ import annotations


def test_optuna_search_keeps_the_attributes_the_early_stop_aware_searcher_uses():
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from distillery.orchestrator.tuning import EarlyStopAwareOptunaSearch

    searcher = EarlyStopAwareOptunaSearch(space={"x": tune.uniform(0.0, 1.0)}, metric="m", mode="max", rungs=2)
    for name in ("_ot_trials", "_ot_study", "_completed_trials"):
        assert hasattr(searcher, name), (f"Ray's OptunaSearch has no {name!r} any more: EarlyStopAwareOptunaSearch "
                                         "(orchestrator/tuning.py) needs porting before this Ray version is allowed")
    assert issubclass(EarlyStopAwareOptunaSearch, OptunaSearch)
    assert callable(getattr(OptunaSearch, "on_trial_complete"))


def test_ray_config_reload_used_for_token_authentication_exists():
    from ray._raylet import Config  # orchestrator/raycluster.py refreshes Ray's config after setting RAY_AUTH_MODE

    assert callable(getattr(Config, "initialize", None))
