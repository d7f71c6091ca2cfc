"""Every registered method, with its defaults on the default dataset, beats `random`.

The registry-driven conformance check: it iterates ``METHODS`` itself, so a method added later is
checked against `random` without anyone editing this file. Budgets are the only change, and the
same for every method: ``iterations`` lowered (the one knob a quick check lowers), fewer experts
for the trajectory family, 1 evaluation model with the default protocol, IPC 1 on digits (16x16 by default). `full` is the full-data
baseline, not a distillation method. bench/conformance.py runs the full matrix (more datasets,
IPC 10, larger budgets).
"""

from __future__ import annotations

import dataclasses

import pytest

from distillery.methods.distill.base import METHODS
from distillery.methods.distill import load_all  # noqa: F401  (registers every method)
from distillery.methods.trial import TrialSpec, run_trial

QUICK_ITERATIONS = 40
#: the trajectory family at IPC 1 is far above random within a few iterations (at 10: MTT 90.5%, FTD
#: 89.5% vs random's 78.4%), so it gets fewer: DATM and PAD start from samples the experts classify
#: correctly, with the experts' soft labels, and their matching takes 80 steps (MTT's 50).
#: DD unrolls 30 training steps per iteration and RFAD runs 8 random width-256 ConvNets over 1280 real
#: images per iteration (~2 and ~9 s here): 20 and 10 iterations put them 3 and 5 points above random.
#: (DD at 12 and LD at 20 iterations do not beat random: measured.)
#: IDM trains two queue networks 10 steps each per iteration (~12 s here) and an IDC iteration is 100
#: rounds of matching and network training (~240 s): their partitioned inits alone give 4 shrunk real
#: images per class, so 3 IDM iterations and one IDC iteration of 10 rounds (BUDGETS) suffice. CAFE
#: (1.2 s), KFS (1.2 s) and HaBa (trajectory experts) are far above random within 10 (measured at 20,
#: 40 and 10: 91.3, 94.6, 89.6 % vs 78.2 %); HaBa gets 5: its 50 decoded images train 1000
#: evaluation epochs at its learned step size, and at 10 iterations the check took 83 s.
#: DM and DataDAM (93.6 and 93.4 % at 40 with one model) and DATM and PAD (92.1 and 92.6 % at 10)
#: keep wide margins at half that.
ITERATIONS = {"idm": 3, "idc": 1, "cafe": 10, "kfs": 10, "haba": 5, "mtt": 10, "ftd": 10, "datm": 5, "pad": 5, "dc": 20, "dsa": 20, "dd": 20,
              "rfad": 10, "dm": 20, "datadam": 20}
#: the trajectory family's experts are a budget too: 10 (the automatic minimum) GSAM experts are ~100
#: of DATM's 150 s here; a 10-iteration check draws at most 10 segments, so 2 experts suffice
NUM_EXPERTS = 2
#: other budgets a method's check lowers: RFAD's real batch per iteration (the reference's 1280) is
#: most of its cost; with 256 the 10-iteration check takes 35 s instead of 92 s (82.5% instead of 83.6%).
#: PAD ranks the data with 2 scoring experts instead of 4.
BUDGETS = {"rfad": {"batch_real": 256}, "idc": {"inner_loop": 10}, "pad": {"score_experts": 2}}
#: one evaluation model per set: the margins over random are 2.8 (LD) to 16 points with two (2026-12-03,
#: `pytest -s`), and the suite's time is mostly evaluation for the cheap methods (1000 epochs for
#: the trajectory family's learned step sizes)
MODELS = 1
NOT_DISTILLATION = ("full", "random")


def _spec(method: str, experts) -> TrialSpec:
    fields = {f.name for f in dataclasses.fields(METHODS.get(method).Config)}
    params = {"iterations": ITERATIONS.get(method, QUICK_ITERATIONS)} if "iterations" in fields else {}
    params.update(BUDGETS.get(method, {}))
    if "num_experts" in fields:
        params["num_experts"] = NUM_EXPERTS
    if "buffer_dir" in fields:  # shared caches go to the test's folder, not the user's home; one folder
        params["buffer_dir"] = str(experts)  # for the module, so methods share experts as a user's cache would
    return TrialSpec(dataset="digits", method=method, ipc=1, seed=0, n_models=MODELS, method_params=params)


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    return tmp_path_factory.mktemp("experts")


@pytest.fixture(scope="module")
def random_acc(experts) -> float:
    return run_trial(_spec("random", experts), device="cpu").summary().mean_acc


@pytest.mark.parametrize("method", [m for m in METHODS.names() if m not in NOT_DISTILLATION])
def test_method_with_defaults_beats_random_on_the_default_dataset(method: str, random_acc: float, experts) -> None:
    spec = _spec(method, experts)
    acc = run_trial(spec, device="cpu").summary().mean_acc
    print(f"{method}: {acc:.4f} vs random {random_acc:.4f}")  # the margin, with pytest -s
    assert acc > random_acc, f"{method} with defaults ({spec.method_params.get('iterations')} iterations): {acc:.4f} <= random {random_acc:.4f}"
