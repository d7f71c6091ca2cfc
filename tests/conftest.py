"""Shared fixtures: small, self-made data (tests never need ../shared or the network)."""

from __future__ import annotations

import os

import pytest
import torch

from distillery.methods.data.base import ImageData

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def make_tiny_data(num_classes: int = 4, per_class: int = 24, test_per_class: int = 10, channels: int = 1, size: int = 8, seed: int = 0) -> ImageData:
    """Class-dependent blobs + noise: learnable in a few epochs, so accuracy checks are meaningful."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(num_classes, channels, size, size, generator=g) * 1.5

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(num_classes).repeat_interleave(n)
        x = protos[y] + 0.8 * torch.randn(len(y), channels, size, size, generator=g)
        return x.float(), y

    tx, ty = split(per_class)
    vx, vy = split(test_per_class)
    return ImageData(
        name="tiny", train_x=tx, train_y=ty, test_x=vx, test_y=vy,
        classes=tuple(f"c{i}" for i in range(num_classes)), mean=(0.0,) * channels, std=(1.0,) * channels,
    )


@pytest.fixture
def tiny_data() -> ImageData:
    return make_tiny_data()


@pytest.fixture(autouse=True)
def _no_ambient_tracking_uri(monkeypatch):
    """$MLFLOW_TRACKING_URI takes part in config resolution; neither a developer's shell nor
    mlflow.set_tracking_uri (which exports it) in an earlier test may steer a test's tracking."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(autouse=True)
def _ray_auth_env_restored():
    """A local Ray instance started in-process puts its private token in os.environ (for the workers
    it starts); a later test joining the `ray start --head` cluster must not send that token."""
    keys = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    before = {k: os.environ.get(k) for k in keys}
    yield
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def one_thread():
    """Tiny ops are dominated by OpenMP synchronisation: one thread is faster (and steadier) for
    the method tests on tiny data (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Stop(Exception):
    """Raised from a progress callback to interrupt a run after a snapshot (resume tests)."""
