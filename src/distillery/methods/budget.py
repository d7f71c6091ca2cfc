"""Trial budgets: how long an iterative method runs when the user does not say.

The published budgets (DC/DSA 1000 iterations, DM/DataDAM 20000, MTT 5000 over 100 experts) are
what a study at paper scale runs, and what sweep configs keep. A first ``distillery trial`` on a
laptop should instead finish in minutes, so a single trial defaults to the ``quick`` budget:

- ``paper``: the method's own (published) defaults, unchanged.
- ``quick``: ``QUICK_ITERATIONS`` iterations for every method that has an ``iterations`` option
  (never more than its published count). 50 is the budget the conformance matrix checks every method
  at (docs/methods.md): with it each method beats ``random`` at IPC 1 on digits, MNIST, Fashion-MNIST
  and CIFAR-10 subsets, though far below its published accuracy, and at IPC 10 on digits. At IPC 10
  on the MNIST, Fashion-MNIST and CIFAR-10 subsets the first five and herding beat random at the
  iterations docs/methods.md gives (DC and DSA 5, DM and DataDAM 50, MTT 10), by margins of 0.2 (herding,
  MNIST) to 8 points. Of the later methods, FRePo, LD, RFAD and CAFE beat random at Fashion-MNIST
  IPC 10, FRePo, LD and CAFE at CIFAR-10 IPC 10, and FRePo, CAFE and IDM at MNIST IPC 10, where RFAD
  (-0.2) and LD (-0.1) do not: random's real images already give 95.4 % there. KIP beats it at IPC 10 on all three sets at this
  budget (+0.2 MNIST, +2.4 Fashion-MNIST, +3.6 CIFAR-10) and at its published 1000 iterations since
  its pixels stay within ``max_shift`` of their real start; the paper's unbounded KIP fell below it.

An explicit ``iterations`` (``--set iterations=N``) always wins over the budget. The budget is
applied to the spec's method parameters, so the trial's identity and records show the iterations
that actually ran.
"""

from __future__ import annotations

import dataclasses

from .errors import UserError
from .trial import TrialSpec

BUDGETS: tuple[str, ...] = ("quick", "paper")
QUICK_ITERATIONS = 50


@dataclasses.dataclass(frozen=True)
class BudgetChoice:
    """What a budget did to a spec: the spec to run and a sentence for the user (None: nothing to say)."""

    spec: TrialSpec
    note: str | None


def apply_budget(spec: TrialSpec, budget: str) -> BudgetChoice:
    """``spec`` with the budget's iteration count (a new spec; ``spec`` is not changed)."""
    if budget not in BUDGETS:
        raise UserError(f"--budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    if "iterations" in spec.method_params:
        return BudgetChoice(spec, None)  # the user's number wins
    published = getattr(spec.method_impl().default_config(spec.dataset, spec.ipc), "iterations", None)
    if published is None:  # not an iterative method (random, herding, full): nothing to budget
        return BudgetChoice(spec, None)
    if budget == "paper":
        return BudgetChoice(spec, f"budget paper: {spec.method} runs its published {published} iterations")
    if published <= QUICK_ITERATIONS:
        return BudgetChoice(spec, None)
    quick = dataclasses.replace(spec, method_params={**spec.method_params, "iterations": QUICK_ITERATIONS})
    return BudgetChoice(
        quick,
        f"budget quick: {spec.method} runs {QUICK_ITERATIONS} of its published {published} iterations "
        f"(--budget paper for all of them, --set iterations=N for another number)",
    )
