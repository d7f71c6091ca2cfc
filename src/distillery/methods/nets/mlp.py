"""A 3-layer MLP (the DD references' 'MLP': 128-128 hidden units, ReLU)."""

from __future__ import annotations

from torch import nn

from .registry import FeatureClassifier, register_network


class MLP(FeatureClassifier):
    def __init__(self, channels: int, image_size: tuple[int, int], num_classes: int, width: int = 128, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        dim = channels * image_size[0] * image_size[1]
        for _ in range(depth - 1):
            layers += [nn.Linear(dim, width), nn.ReLU()]
            dim = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(dim, num_classes)


register_network("mlp", MLP)
