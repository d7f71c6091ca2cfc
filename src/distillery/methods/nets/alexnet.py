"""The AlexNet variant of the DD papers (CIFAR-sized): 1,872,202 parameters for CIFAR-10.

5 convs (5x5/128, 5x5/192, 3x3/256, 3x3/192, 3x3/192) with ReLU and three 2x2 max-pools, one
Linear head, no norm (``norm='batchnorm'`` gives AlexNetBN). 1-channel input uses padding 4 on the
first conv, as in the references.

``width`` (default 128, the papers') sets the first conv's channels; the others keep the papers'
ratios (x1.5, x2, x1.5, x1.5). A laptop study narrows it as it narrows the ConvNet: at width 128
a 2-core CPU trains 105-111 images/s, ~9x slower than a width-32 ConvNet (two measurements).
"""

from __future__ import annotations

from torch import nn

from ..errors import UserError
from .registry import FeatureClassifier, flat_features, register_network


def _pool(size: list[int]) -> nn.Module:
    if min(size) >= 2:
        size[0] //= 2
        size[1] //= 2
        return nn.MaxPool2d(2)
    return nn.Identity()


class AlexNet(FeatureClassifier):
    def __init__(self, channels: int, image_size: tuple[int, int], num_classes: int, norm: str = "none",
                 width: int = 128) -> None:
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 2 or width % 2:
            raise UserError(f"alexnet option width must be an even integer >= 2 (e.g. 32 for a CPU study; 128 is the papers'), got {width!r}")
        if norm not in ("none", "batchnorm"):  # any other word used to mean "no norm" silently
            raise UserError(f"alexnet option norm must be 'none' or 'batchnorm', got {norm!r}")
        c1, c2, c3 = width, width * 3 // 2, width * 2
        pad0 = 4 if channels == 1 and tuple(image_size) == (28, 28) else 2
        size = [image_size[0] + 2 * pad0 - 4, image_size[1] + 2 * pad0 - 4]

        def block(cin: int, cout: int, k: int, p: int) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=p)]
            if norm == "batchnorm":
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=False))
            return layers

        layers = [*block(channels, c1, 5, pad0), _pool(size)]
        layers += [*block(c1, c2, 5, 2), _pool(size)]
        layers += block(c2, c3, 3, 1)
        layers += block(c3, c2, 3, 1)
        layers += [*block(c2, c2, 3, 1), _pool(size)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(flat_features(self.features, channels, image_size), num_classes)


register_network("alexnet", AlexNet, batchnorm_variant=True)
