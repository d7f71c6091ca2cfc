"""The field's evaluation protocol ("evaluate_synset"), K models at once.

Train K freshly initialised networks on a synthetic set (SGD momentum 0.9, weight decay 5e-4,
lr 0.01 or the set's learned lr, x0.1 once at half the epochs, batch 256, DSA augmentation) and
report each model's per-class test accuracy after the LAST epoch (no selection on the test set).

Evaluation dominates the wall-clock time of a distillation study (100 models per cell), so the K
models are trained together: their parameters are stacked and one ``torch.func.vmap`` of
``functional_call`` runs all K forward/backward passes as batched kernels. Model k still sees its
own initialisation, its own data order and its own augmentation draws (all derived from
(seed, arch, k)), so the result equals K separate trainings up to float error; ``vectorize=False``
runs exactly those separate trainings with plain modules (the reference path, and the fallback for
batch-norm networks, whose running-statistics updates vmap cannot batch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from ..aug import DiffAug, default_strategy
from ..data.base import ImageData
from ..distill.base import SyntheticSet
from ..metrics.fairness import per_class_accuracy
from ..nets import build_network
from ..utils.seeding import generator


#: the protocol's epochs for a set trained at the protocol's lr (DC's evaluation)
DEFAULT_EPOCHS = 300
#: ... and for a set trained at its learned step size (MTT's evaluation, which FTD, DATM and PAD keep)
LEARNED_LR_EPOCHS = 1000


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation hyperparameters (defaults: the DD protocol).

    ``epochs: None`` (the default) is the protocol's epoch count for the set: 300 (DC's) for a set
    trained at the protocol's lr, 1000 (MTT's evaluation) for a set trained at its own learned step
    size. The two go together: the trajectory family learns a step size ~10x smaller than the
    protocol's 0.01 (CIFAR-10 IPC 10 starts at 0.001), and 300 epochs at it under-train: DATM at
    digits IPC 10 and MTT at MNIST IPC 10 fell below `random` (docs/methods.md). An explicit
    ``epochs`` applies to every set."""

    epochs: int | None = None
    full_data_epochs: int = 30  # the full-data baseline trains on all images: far fewer epochs needed
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    dsa: bool = True
    dsa_strategy: str | None = None  # None: the dataset's default (no flip for digits)
    use_learned_lr: bool = True  # use SyntheticSet.lr (MTT) when the set has one
    #: train the K models in one torch.func.vmap pass (True), in a loop (False), or None: vmap on an
    #: accelerator, the loop on CPU, where bench/bench_eval.py measured vmap ~3x slower (2 cores).
    #: The results agree up to float error either way, so this is not part of a trial's identity.
    vectorize: bool | None = None
    test_batch_size: int = 2048

    def epochs_for(self, synset: SyntheticSet) -> int:
        """How many epochs the protocol trains on ``synset`` (see ``epochs``)."""
        if synset.full_data:
            return self.full_data_epochs
        if self.epochs is not None:
            return self.epochs
        return LEARNED_LR_EPOCHS if self._learned(synset) else DEFAULT_EPOCHS

    def lr_for(self, synset: SyntheticSet) -> float:
        """The step size the protocol trains ``synset`` at: its learned one (MTT) when it has one."""
        return float(synset.lr) if self._learned(synset) else self.lr

    def _learned(self, synset: SyntheticSet) -> bool:
        return self.use_learned_lr and synset.lr is not None


@dataclass
class EvalResult:
    """Per-model results of one architecture."""

    arch: str
    per_class: Tensor  # [K, C] accuracy fractions
    overall: Tensor  # [K] correct / total
    train_seconds: float
    test_seconds: float
    epochs: int
    lr: float
    vectorized: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_models(self) -> int:
        return int(self.per_class.shape[0])


@dataclass(frozen=True)
class EvalProgress:
    """One evaluation progress report. ``done``/``total`` count model-epochs (K x epochs when the K
    models train one after another, epochs when they train together), so a caller's ETA is linear;
    ``model`` says which model is training (1-based), None when all K train together."""

    done: int
    total: int
    epochs: int
    n_models: int
    model: int | None

    @property
    def epoch(self) -> int:
        """Epochs finished by the model in training (by every model when they train together)."""
        return self.done - (self.model - 1) * self.epochs if self.model is not None else self.done

    def label(self) -> str:
        """'model 2/5, epoch 56/300' (or '5 models together, epoch 56/300')."""
        who = f"model {self.model}/{self.n_models}" if self.model is not None else f"{self.n_models} models together"
        return f"{who}, epoch {self.epoch}/{self.epochs}"


#: ``epoch_callback(progress)``, called after every epoch
EpochCallback = Callable[[EvalProgress], None]


def evaluate_synset(
    synset: SyntheticSet,
    data: ImageData,
    arch: str,
    n_models: int,
    config: EvalConfig = EvalConfig(),
    seed: int = 0,
    device: torch.device | str = "cpu",
    net_options: dict[str, Any] | None = None,
    epoch_callback: EpochCallback | None = None,
) -> EvalResult:
    device = torch.device(device)
    epochs = config.epochs_for(synset)
    lr = config.lr_for(synset)
    models = [
        build_network(arch, data.channels, data.image_size, data.num_classes, seed=_model_seed(seed, arch, k), **(net_options or {})).to(device)
        for k in range(n_models)
    ]
    aug = DiffAug(config.dsa_strategy or default_strategy(data.name)) if config.dsa else None
    x = synset.images.detach().to(device)
    y = synset.labels.detach().to(device)
    want = config.vectorize if config.vectorize is not None else device.type != "cpu"
    vectorized = want and not _has_batchnorm(models[0])

    t0 = time.perf_counter()
    train = _train_vectorized if vectorized else _train_sequential
    models = train(models, x, y, epochs, lr, config, aug, seed, arch, epoch_callback)
    train_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    per_class, overall = _test(models, data, config.test_batch_size, device, vectorized)
    test_seconds = time.perf_counter() - t0
    return EvalResult(arch, per_class, overall, train_seconds, test_seconds, epochs, float(lr), vectorized)


def _model_seed(seed: int, arch: str, k: int) -> int:
    from ..utils.seeding import derive_seed

    return derive_seed(seed, "eval-model", arch, k)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _batches(n: int, batch_size: int, g: torch.Generator) -> list[Tensor]:
    perm = torch.randperm(n, generator=g)
    return list(perm.split(batch_size))


def _augment(aug: DiffAug | None, x: Tensor, g: torch.Generator) -> Tensor:
    return aug(x, generator=g) if aug is not None else x


def _loss(logits: Tensor, target: Tensor) -> Tensor:
    # soft labels are [B, C] probabilities; cross_entropy accepts both forms
    return F.cross_entropy(logits, target)


def _train_sequential(models, x, y, epochs, lr, config, aug, seed, arch, epoch_callback):
    """K independent trainings with plain modules and torch.optim (the reference behaviour)."""
    for k, model in enumerate(models):
        g = generator(seed, "eval-data", arch, k)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
        model.train()
        for ep in range(epochs):
            if ep == epochs // 2 and ep > 0:
                for group in opt.param_groups:
                    group["lr"] = lr * 0.1
            for idx in _batches(len(x), config.batch_size, g):
                xb = _augment(aug, x[idx.to(x.device)], g)
                opt.zero_grad(set_to_none=True)
                _loss(model(xb), y[idx.to(y.device)]).backward()
                opt.step()
            if epoch_callback is not None:  # model-epochs done over all K, so progress moves from the first model on
                epoch_callback(EvalProgress(k * epochs + ep + 1, len(models) * epochs, epochs, len(models), k + 1))
    return models


def _train_vectorized(models, x, y, epochs, lr, config, aug, seed, arch, epoch_callback):
    """All K models in one vmapped forward/backward per step; SGD on the stacked parameters.

    SGD with momentum and weight decay is elementwise, so one optimizer over [K, ...] tensors is
    exactly K optimizers. The summed loss gives each model's slice its own gradient.
    """
    k_models = len(models)
    params, buffers = stack_module_state(models)
    base = models[0]

    def fmodel(p: dict[str, Tensor], b: dict[str, Tensor], xb: Tensor) -> Tensor:
        return functional_call(base, (p, b), (xb,))

    batched = vmap(fmodel, in_dims=(0, 0, 0), randomness="different")
    opt = torch.optim.SGD(list(params.values()), lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    gens = [generator(seed, "eval-data", arch, k) for k in range(k_models)]
    base.train()
    for ep in range(epochs):
        if ep == epochs // 2 and ep > 0:
            for group in opt.param_groups:
                group["lr"] = lr * 0.1
        orders = [_batches(len(x), config.batch_size, g) for g in gens]
        for step in range(len(orders[0])):
            idx = [orders[k][step].to(x.device) for k in range(k_models)]
            xb = torch.stack([_augment(aug, x[idx[k]], gens[k]) for k in range(k_models)])
            yb = torch.stack([y[i] for i in idx])
            logits = batched(params, buffers, xb)  # [K, B, C]
            loss = _loss(logits.flatten(0, 1), yb.flatten(0, 1)) * k_models  # = sum of per-model means
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch_callback is not None:
            epoch_callback(EvalProgress(ep + 1, epochs, epochs, k_models, None if k_models > 1 else 1))
    # write the trained slices back into the modules (so callers get ordinary nn.Modules)
    with torch.no_grad():
        for k, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(params[name][k])
            for name, b in model.named_buffers():
                b.copy_(buffers[name][k])
    return models


@torch.no_grad()
def _test(models, data: ImageData, batch_size: int, device: torch.device, vectorized: bool) -> tuple[Tensor, Tensor]:
    preds: list[list[Tensor]] = [[] for _ in models]
    if vectorized:
        params, buffers = stack_module_state(models)
        base = models[0]
        base.eval()
        batched = vmap(lambda p, b, xb: functional_call(base, (p, b), (xb,)), in_dims=(0, 0, None))
    for m in models:
        m.eval()
    for start in range(0, len(data.test_x), batch_size):
        xb = data.test_x[start : start + batch_size].to(device)
        if vectorized:
            out = batched(params, buffers, xb).argmax(-1)
            for k in range(len(models)):
                preds[k].append(out[k].cpu())
        else:
            for k, m in enumerate(models):
                preds[k].append(m(xb).argmax(-1).cpu())
    target = data.test_y.cpu()
    per_class = torch.stack([per_class_accuracy(torch.cat(p), target, data.num_classes) for p in preds]).float()
    overall = torch.stack([(torch.cat(p) == target).double().mean() for p in preds]).float()
    return per_class, overall
