"""ConvNet-3, the dataset-distillation standard (DC/DSA/DM/MTT all evaluate on it).

depth x [Conv3x3(pad 1) -> norm -> ReLU -> AvgPool2d(2)] -> Linear. 320,010 parameters for
3x32x32 / 10 classes at width 128. A 1-channel 28x28 input gets padding 3 on the first conv so the
feature maps match the 32x32 case (317,706 parameters for MNIST), as in the references.
"""

from __future__ import annotations

import warnings

from torch import nn

from ..errors import UserError
from .registry import FeatureClassifier, flat_features, make_norm, register_network

#: the ConvNet's choices (the DD references' ``net_pooling`` and ``net_act``); "none" keeps the maps' size
POOLINGS = ("avgpool", "maxpool", "none")
ACTIVATIONS = {"relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "sigmoid": nn.Sigmoid}


class ConvNet(FeatureClassifier):
    def __init__(
        self,
        channels: int,
        image_size: tuple[int, int],
        num_classes: int,
        width: int = 128,
        depth: int = 3,
        norm: str = "instancenorm",
        act: str = "relu",
        pooling: str = "avgpool",
    ) -> None:
        super().__init__()
        # a misspelt choice used to mean "no pooling" (or a bare KeyError): name the choices instead
        if pooling not in POOLINGS:
            raise UserError(f"convnet option pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if act not in ACTIVATIONS:
            raise UserError(f"convnet option act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
        layers: list[nn.Module] = []
        in_ch = channels
        h, w = image_size
        for d in range(depth):
            pad = 3 if (d == 0 and channels == 1 and (h, w) == (28, 28)) else 1
            layers.append(nn.Conv2d(in_ch, width, kernel_size=3, padding=pad))
            h, w = h + 2 * pad - 2, w + 2 * pad - 2
            if norm.lower() == "instancenorm" and h * w < 16:
                warnings.warn(
                    f"ConvNet depth {depth} on {image_size[0]}x{image_size[1]} inputs instance-normalises {h}x{w} maps at "
                    f"layer {d + 1}, which erases most of the signal (full-data digits 8x8: 61% vs 93% at depth 2 or "
                    "resize 16); use depth=2 or the dataset option resize: 16",
                    UserWarning, stacklevel=3,
                )
            layers.append(make_norm(norm, width, (h, w)))
            layers.append(ACTIVATIONS[act]())
            if pooling == "avgpool" and min(h, w) >= 2:
                layers.append(nn.AvgPool2d(2))
                h, w = h // 2, w // 2
            elif pooling == "maxpool" and min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(flat_features(self.features, channels, image_size), num_classes)


register_network("convnet", ConvNet, batchnorm_variant=True)
