"""Cell-keyed seeds: a trial draws everything from ``TrialSpec.cell_seed`` (the seed keyed by dataset
and IPC, not by the method), so one seed's sets at two IPCs are independent units while the methods
of one (dataset, IPC, seed) stay paired with `random` (same start, same evaluation models)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from distillery.methods.distill import get_method
from distillery.methods.distill.init import real_init
from distillery.methods.eval import EvalConfig, evaluate_synset
from distillery.methods.trial import TrialSpec, run_trial
from distillery.methods.utils.seeding import SEEDING, cell_seed, derive_seed
from tests.conftest import make_tiny_data

CPU = torch.device("cpu")
#: a cheap evaluation: one narrow model, one epoch, no augmentation (these tests compare draws, not accuracy)
QUICK = dict(n_models=1, eval=EvalConfig(epochs=1, dsa=False), arch_options={"convnet": {"width": 8, "depth": 2}})


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train_indices(data, images: torch.Tensor) -> list[set[int]]:
    """Per class, the training indices of a set's images (tiny data's images are all distinct)."""
    where = {data.train_x[i].numpy().tobytes(): i for i in range(len(data.train_x))}
    out: list[set[int]] = [set() for _ in range(data.num_classes)]
    for img in images:
        i = where[img.numpy().tobytes()]
        out[int(data.train_y[i])].add(i)
    return out


def _random_set(data, ipc: int, seed: int) -> list[set[int]]:
    m = get_method("random")
    return _train_indices(data, m.distill(data, ipc, m.make_config("tiny", ipc), seed, CPU).images)


def test_the_cell_seed_is_keyed_by_dataset_ipc_and_seed_but_not_by_the_method():
    spec = TrialSpec(dataset="digits", method="random", ipc=1, seed=0)
    assert spec.cell_seed == cell_seed(0, "digits", 1) == derive_seed(0, "cell", "digits", 1)
    assert spec.cell_seed != spec.seed
    # independent across IPC (the evaluation models too: they are drawn from the cell seed)
    assert TrialSpec(ipc=1).cell_seed != TrialSpec(ipc=2).cell_seed
    assert len({TrialSpec(ipc=k, seed=s).cell_seed for k in (1, 5, 10, 20, 30) for s in range(10)}) == 50
    assert TrialSpec(dataset="mnist", ipc=1).cell_seed != TrialSpec(dataset="digits", ipc=1).cell_seed
    # shared by every method of the cell: `random`'s draw and the evaluation models are common to them
    assert {TrialSpec(method=m, ipc=10, seed=3).cell_seed for m in ("random", "dm", "mtt", "herding")} == {TrialSpec(ipc=10, seed=3).cell_seed}
    # the full-data baseline cell (ipc null) has its own
    full = TrialSpec(method="full", ipc=None, seed=0)
    assert full.cell_seed == cell_seed(0, "digits", None) and full.cell_seed not in {TrialSpec(ipc=k).cell_seed for k in range(1, 51)}
    assert TrialSpec(dataset="MNIST").cell_seed == TrialSpec(dataset="mnist").cell_seed  # names are case-insensitive


def test_one_seeds_random_sets_at_two_ipcs_are_independent_draws():
    """The IPC-3 and IPC-6 sets of one seed share about as many images as two independent draws
    (3 * 6 / n per class), not the nested 3 per class the bare seed gave."""
    data = make_tiny_data(num_classes=4, per_class=24)
    a, b, n, seeds = 3, 6, 24, range(20)
    units = len(seeds) * data.num_classes
    # the old scheme, as a control: the bare seed's sets are prefixes of one shuffle
    nested = sum(len(x & y) for s in seeds for x, y in zip(_random_set(data, a, s), _random_set(data, b, s)))
    assert nested == a * units
    shared = 0
    for s in seeds:
        small = _random_set(data, a, TrialSpec(dataset="digits", ipc=a, seed=s).cell_seed)
        large = _random_set(data, b, TrialSpec(dataset="digits", ipc=b, seed=s).cell_seed)
        assert any(not x <= y for x, y in zip(small, large)), f"seed {s}: the IPC-{a} set lies inside the IPC-{b} set"
        shared += sum(len(x & y) for x, y in zip(small, large))
    # per class the overlap is hypergeometric: mean a*b/n, variance a*(b/n)*(1-b/n)*(n-a)/(n-1)
    mean = units * a * b / n
    sd = math.sqrt(units * a * (b / n) * (1 - b / n) * (n - a) / (n - 1))
    assert abs(shared - mean) < 5 * sd, (shared, mean, sd)
    assert shared < nested / 2


def test_run_trial_draws_the_set_and_the_evaluation_from_the_cell_seed(tiny_data):
    spec = TrialSpec(dataset="digits", method="random", ipc=3, seed=2, **QUICK)
    result = run_trial(spec, device="cpu", data=tiny_data)
    assert torch.equal(result.synset.images, real_init(tiny_data, 3, spec.cell_seed))
    summary = result.summary()
    assert summary.seed == 2 and summary.cell_seed == spec.cell_seed  # the user-facing seed stays the label
    assert summary.to_dict()["cell_seed"] == spec.cell_seed and summary.to_dict()["seed"] == 2
    # the evaluation models are the cell's: the same as evaluating the set with the cell seed by hand
    by_hand = evaluate_synset(result.synset, tiny_data, "convnet", 1, spec.eval, seed=spec.cell_seed, device=CPU,
                              net_options={"width": 8, "depth": 2})
    assert torch.equal(result.evals["convnet"].per_class, by_hand.per_class)


def test_real_initialised_methods_keep_randoms_draw_and_evaluation(tiny_data):
    """DM with zero iterations returns its start: at the same (dataset, IPC, seed) it is `random`'s set,
    and, evaluated with the cell's models, scores exactly what `random` scores (common random numbers)."""
    params = {"iterations": 0, "net_width": 8, "net_depth": 2}
    random = run_trial(TrialSpec(dataset="digits", method="random", ipc=2, seed=4, **QUICK), device="cpu", data=tiny_data)
    dm = run_trial(TrialSpec(dataset="digits", method="dm", ipc=2, seed=4, method_params=params, **QUICK), device="cpu", data=tiny_data)
    assert torch.equal(dm.synset.images, random.synset.images)
    assert torch.equal(dm.evals["convnet"].per_class, random.evals["convnet"].per_class)
    # another IPC of the same seed is another draw
    other = run_trial(TrialSpec(dataset="digits", method="dm", ipc=4, seed=4, method_params=params, **QUICK), device="cpu", data=tiny_data)
    assert any(not x <= y for x, y in zip(_train_indices(tiny_data, dm.synset.images), _train_indices(tiny_data, other.synset.images)))


def test_the_cost_estimate_exercises_the_cell_seed(tiny_data, monkeypatch):
    from distillery.methods import estimate
    from distillery.methods.distill.baselines import RandomReal

    seen: dict[str, list[int]] = {"distill": [], "eval": []}
    distill, evaluate = RandomReal.distill, estimate.evaluate_synset

    def recording_distill(self, train, ipc, config, seed, *args, **kwargs):
        seen["distill"].append(seed)
        return distill(self, train, ipc, config, seed, *args, **kwargs)

    def recording_evaluate(*args, seed, **kwargs):
        seen["eval"].append(seed)
        return evaluate(*args, seed=seed, **kwargs)

    monkeypatch.setattr(RandomReal, "distill", recording_distill)
    monkeypatch.setattr(estimate, "evaluate_synset", recording_evaluate)
    spec = TrialSpec(dataset="digits", method="random", ipc=2, seed=1, **QUICK)
    estimate.estimate_trial(spec, device="cpu", data=tiny_data, calibration_epochs=1)
    assert seen["distill"] == [spec.cell_seed] and seen["eval"] and set(seen["eval"]) == {spec.cell_seed}


def test_the_trial_identity_names_the_seeding_scheme(monkeypatch):
    from distillery.orchestrator import grid

    spec = TrialSpec(dataset="digits", method="random", ipc=1, seed=0)
    assert SEEDING == "cell-v1" and grid.identity(spec)["seeding"] == SEEDING
    before = grid.trial_hash(spec)
    assert grid.trial_hash(spec) == before
    monkeypatch.setattr(grid, "SEEDING", "some-other-scheme")  # a new scheme: every trial is a new trial
    assert grid.identity(spec)["seeding"] == "some-other-scheme" and grid.trial_hash(spec) != before
    assert grid.trial_hash(dataclasses.replace(spec, ipc=2)) != grid.trial_hash(spec)
