"""The three reference points every study needs: random real images, herding, and the full data."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..data.base import ImageData
from ..nets import build_network
from ..utils.seeding import generator
from ..schema import FULL_DATA_METHOD
from .base import DistillMethod, Progress, ProgressCallback, SyntheticSet, register_method
from .init import RANDOM_DRAW, check_ipc, labels_for, real_init


def _done(callback: ProgressCallback | None, start: float) -> None:
    if callback is not None:
        callback(Progress(1, 1, None, time.perf_counter() - start, lambda: {}))


@dataclass(frozen=True)
class RandomConfig:
    pass


@register_method("random")
class RandomReal(DistillMethod):
    """``ipc`` real training images per class, drawn from the seed (the 'random real' baseline)."""

    Config = RandomConfig

    def distill(self, train, ipc, config, seed, device, progress_callback=None, resume_state=None):
        start = time.perf_counter()
        images = real_init(train, ipc, seed, purpose=RANDOM_DRAW)
        _done(progress_callback, start)
        return SyntheticSet(images.to(device), labels_for(train.num_classes, ipc).to(device), meta={"method": "random", "ipc": ipc, "seed": seed})


@dataclass(frozen=True)
class HerdingConfig:
    embed_arch: str = "convnet"
    embed_width: int = 128
    embed_epochs: int = 5  # epochs of training the embedding net on the real data (0 = random net)
    embed_lr: float = 0.01
    batch_size: int = 256


@register_method("herding")
class Herding(DistillMethod):
    """Greedy herding (Welling 2009) per class on the penultimate features of a ConvNet trained on the
    real training set (as the DD baselines do): repeatedly add the sample that brings the running
    mean of selected features closest to the class mean."""

    Config = HerdingConfig

    def distill(self, train, ipc, config: HerdingConfig, seed, device, progress_callback=None, resume_state=None):
        check_ipc(train, ipc)
        start = time.perf_counter()
        net = _train_embedder(train, config, seed, device)
        chosen = []
        with torch.no_grad():
            for c, idx in enumerate(train.class_indices()):
                feats = torch.cat([net.embed(train.train_x[b].to(device)) for b in idx.split(1024)])
                chosen.append(idx[herding_select(feats, ipc).cpu().to(idx.device)])
        _done(progress_callback, start)
        images = train.train_x[torch.cat(chosen)].clone().to(device)
        return SyntheticSet(images, labels_for(train.num_classes, ipc).to(device), meta={"method": "herding", "ipc": ipc, "seed": seed})


def herding_select(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of k rows chosen greedily so their running mean tracks the mean of all rows."""
    mu = features.mean(0)
    selected: list[int] = []
    total = torch.zeros_like(mu)
    available = torch.ones(len(features), dtype=torch.bool, device=features.device)
    for t in range(1, k + 1):
        dist = ((mu - (total + features) / t) ** 2).sum(1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        selected.append(i)
        available[i] = False
        total = total + features[i]
    return torch.tensor(selected, dtype=torch.long)


def _train_embedder(train: ImageData, config: HerdingConfig, seed: int, device: torch.device):
    options = {"width": config.embed_width} if config.embed_arch.startswith("convnet") else {}
    net = build_network(config.embed_arch, train.channels, train.image_size, train.num_classes, seed=seed, **options).to(device)
    if config.embed_epochs > 0:
        opt = torch.optim.SGD(net.parameters(), lr=config.embed_lr, momentum=0.9, weight_decay=5e-4)
        g = generator(seed, "herding-embed")
        net.train()
        for _ in range(config.embed_epochs):
            for idx in torch.randperm(len(train.train_x), generator=g).split(config.batch_size):
                idx = idx.to(train.train_x.device)
                loss = F.cross_entropy(net(train.train_x[idx].to(device)), train.train_y[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    net.eval()
    return net


@dataclass(frozen=True)
class FullConfig:
    pass


class FullData(DistillMethod):
    """The full-data baseline: the evaluation trains on the whole training set. Not a registered
    method: the baseline is a cell kind (a trial with ``ipc`` null, see TrialSpec.full_data), so no
    sweep can list it among its methods and no method loop (conformance, tuning) meets it."""

    name = FULL_DATA_METHOD
    Config = FullConfig

    def distill(self, train, ipc, config, seed, device, progress_callback=None, resume_state=None):
        start = time.perf_counter()
        _done(progress_callback, start)
        return SyntheticSet(train.train_x, train.train_y, full_data=True,
                            meta={"method": FULL_DATA_METHOD, "ipc": max(train.class_counts()), "seed": seed})


#: the one instance trials use for their full-data cell
FULL_DATA = FullData()
