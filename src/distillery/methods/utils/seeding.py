"""Explicit, stateless seeding.

Every random draw in distillery comes from a generator derived from (root seed, purpose, index),
never from the global RNG or the wall clock. Because a draw at iteration i depends only on
(seed, i), a method resumed from a checkpoint at iteration i makes exactly the draws an
uninterrupted run would have made, without saving RNG states.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator

import torch


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed that is a pure function of the root seed and any labels/indices."""
    text = "/".join([str(int(seed)), *map(str, parts)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def generator(seed: int, *parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh torch.Generator seeded by derive_seed(seed, *parts)."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *parts))
    return g


@contextlib.contextmanager
def seeded(seed: int, *parts: object) -> Iterator[None]:
    """Temporarily seed torch's global CPU RNG (for code such as nn.Module init that can only
    draw from it), restoring the previous state afterwards so callers are not affected."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, *parts))
        yield


def init_module(factory, seed: int, *parts: object):
    """Build a module with weights drawn from a derived seed (nn.Module init uses the global RNG)."""
    with seeded(seed, *parts):
        return factory()


#: The seeding scheme of a trial, part of its identity (``orchestrator/grid.py: identity``). A trial's
#: result is a function of the seeds it draws from, so a change of the scheme changes every result
#: even where no option changed: raising this label gives every trial a new hash, and ``--resume``
#: then runs the trials again instead of mixing results of two schemes in one sweep.
#: ``cell-v1``: every draw of a trial (its start, its distillation, its evaluation models) comes from
#: ``cell_seed(seed, dataset, ipc)`` rather than from the seed itself.
SEEDING = "cell-v1"


def cell_seed(seed: int, dataset: str, ipc: int | None) -> int:
    """The root seed of one (dataset, IPC, seed) cell, from which a trial draws everything.

    Keyed by the IPC, so one seed's sets at two IPCs are independent draws (with the bare seed,
    `random`'s IPC-k set was the first k images of one per-seed shuffle, so the sets were nested, and
    the evaluation models were the same at every IPC). Not keyed by the method on purpose: every
    method of a cell gets the same seed, so `random`'s set stays the real-image draw the
    real-initialised methods start from (a paired comparison), and the evaluation models are the
    same for all methods of the cell (common random numbers). Most method-internal draws carry the
    method's name in their own keys; the few that do not (the noise start, the multi-formation mix,
    the trajectory family's segment picks) are common to the methods that make them, as they were
    under the bare seed. ``ipc`` None is the full-data baseline cell; the dataset name
    is lower-cased, as the dataset registry does."""
    return derive_seed(seed, "cell", dataset.lower(), ipc if ipc is not None else "full")
