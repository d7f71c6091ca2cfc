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
