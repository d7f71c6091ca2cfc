"""The AlexNet variant of the DD papers (CIFAR-sized): 1,872,202 parameters for CIFAR-10.

5 convs (5x5/128, 5x5/192, 3x3/256, 3x3/192, 3x3/192) with ReLU and three 2x2 max-pools, one
Linear head, no norm (``norm='batchnorm'`` gives AlexNetBN). 1-channel input uses padding 4 on the
first conv, as in the references.
"""

from __future__ import annotations

from torch import Tensor, nn

from .registry import NETWORKS, flat_features


def _pool(size: list[int]) -> nn.Module:
    if min(size) >= 2:
        size[0] //= 2
        size[1] //= 2
        return nn.MaxPool2d(2)
    return nn.Identity()


class AlexNet(nn.Module):
    def __init__(self, channels: int, image_size: tuple[int, int], num_classes: int, norm: str = "none") -> None:
        super().__init__()
        pad0 = 4 if channels == 1 and tuple(image_size) == (28, 28) else 2
        size = [image_size[0] + 2 * pad0 - 4, image_size[1] + 2 * pad0 - 4]

        def block(cin: int, cout: int, k: int, p: int) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=p)]
            if norm == "batchnorm":
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=False))
            return layers

        layers = [*block(channels, 128, 5, pad0), _pool(size)]
        layers += [*block(128, 192, 5, 2), _pool(size)]
        layers += block(192, 256, 3, 1)
        layers += block(256, 192, 3, 1)
        layers += [*block(192, 192, 3, 1), _pool(size)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(flat_features(self.features, channels, image_size), num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))


@NETWORKS.register("alexnet")
def alexnet(channels: int, image_size: tuple[int, int], num_classes: int, **options) -> AlexNet:
    return AlexNet(channels, image_size, num_classes, **options)


@NETWORKS.register("alexnet_bn")
def alexnet_bn(channels: int, image_size: tuple[int, int], num_classes: int, **options) -> AlexNet:
    return AlexNet(channels, image_size, num_classes, **{"norm": "batchnorm", **options})
