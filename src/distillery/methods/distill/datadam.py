"""DataDAM: Efficient Dataset Distillation with Attention Matching (Sajedi et al., ICCV 2023).

Like DM (a fresh, frozen, randomly initialised network per iteration; siamese DSA per class; one
SGD step on the pixels), but the loss matches, class by class, the mean spatial attention maps at
every ReLU output of the network except the last (attention = sum over channels of |a|^p,
flattened and L2-normalised per image; p = 1), weighted ``att_weight`` (100), plus the squared
distance of the mean last-layer embeddings (the linear-kernel MMD) weighted ``mmd_weight``, which
is the reference's 100 x task_balance 0.01 = 1. Defaults (reference main_DataDAM.py): 20000
iterations, lr_img 1 (10 for IPC >= 100), batch_real 64, init real.

Unlike the reference, the distillation ConvNet uses instance norm (its "ConvNet" silently used
batch norm); set ``net_norm=batchnorm`` for the reference behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from .base import register_method
from .dm import augmented_class_batches, auto_chunk, chunk_classes
from .matching import AttentionRecorder, mean_distance
from .synth import SynthConfig, SynthMethod, _positive_float, has_batchnorm


@dataclass(frozen=True)
class DataDAMConfig(SynthConfig):
    iterations: int = 20000
    lr_img: float = 1.0
    batch_real: int = 64
    init: str = "real"
    dsa: bool = True
    att_power: float = 1.0  # p in sum_c |a_c|^p
    att_weight: float = 100.0  # weight of the summed attention-map losses
    mmd_weight: float = 1.0  # weight of the last-layer embedding loss (= 100 x task_balance 0.01)
    class_chunk: int = 0  # classes per forward pass; 0 = auto (see DMConfig.class_chunk)


@register_method("datadam")
class DataDAM(SynthMethod):
    Config = DataDAMConfig

    def default_config(self, dataset: str, ipc: int) -> DataDAMConfig:
        return DataDAMConfig(lr_img=10.0 if ipc >= 100 else 1.0)

    def validate(self, config: DataDAMConfig) -> None:
        super().validate(config)
        _positive_float(config, "att_power")
        _positive_float(config, "att_weight", allow_zero=True)
        _positive_float(config, "mmd_weight", allow_zero=True)
        if isinstance(config.class_chunk, bool) or not isinstance(config.class_chunk, int) or config.class_chunk < 0:
            raise UserError(f"option 'class_chunk' must be an integer >= 0 (0 = auto), got {config.class_chunk!r}")
        if config.att_weight == 0 and config.mmd_weight == 0:
            raise UserError("options 'att_weight' and 'mmd_weight' are both 0: nothing to match; make one positive")

    def setup(self, train, ipc, config, seed, device) -> dict[str, Any]:
        probe = self.fresh_net(train, config, seed, 0, torch.device("cpu"))
        if not hasattr(probe, "embed"):
            raise UserError(f"option 'net': datadam needs a network with an .embed method, {config.net!r} has none")
        if len(AttentionRecorder(probe)) == 0 and config.att_weight > 0:
            raise UserError(
                f"option 'net': datadam matches attention at nn.ReLU modules and {config.net!r} has none; "
                "use a convnet/alexnet or set att_weight=0"
            )
        return {}

    def iteration(self, it: int, images: Tensor, optimizer: torch.optim.Optimizer, ctx: dict[str, Any]) -> float:
        train, config, seed, device = ctx["train"], ctx["config"], ctx["seed"], ctx["device"]
        net = self.fresh_net(train, config, seed, it, device)
        net.requires_grad_(False)
        recorder = AttentionRecorder(net, config.att_power)
        chunk = auto_chunk(config, ctx["num_classes"], has_batchnorm(net))
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for classes in chunk_classes(ctx["num_classes"], chunk):
            reals, syns = augmented_class_batches(self, it, classes, images, ctx)
            real_sizes, syn_sizes = [len(r) for r in reals], [len(s) for s in syns]
            with torch.no_grad(), recorder.record() as maps_real:
                emb_real = net.embed(torch.cat(reals))
            with recorder.record() as maps_syn:
                emb_syn = net.embed(torch.cat(syns))
            # every ReLU output but the last; the last layer enters through the embedding term
            loss = emb_syn.new_zeros(())
            if config.att_weight > 0:
                for a_real, a_syn in zip(maps_real[:-1], maps_syn[:-1]):
                    for r, s in zip(a_real.split(real_sizes), a_syn.split(syn_sizes)):
                        loss = loss + config.att_weight * mean_distance(r, s)
            if config.mmd_weight > 0:
                for r, s in zip(emb_real.split(real_sizes), emb_syn.split(syn_sizes)):
                    loss = loss + config.mmd_weight * mean_distance(r, s)
            torch.autograd.backward(loss, inputs=[images])
            total += float(loss.detach())
        optimizer.step()
        return total / ctx["num_classes"]
