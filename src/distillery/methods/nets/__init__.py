"""Network registry: the DD-standard ConvNet-3, the DD AlexNet, ResNet-18 (BN) and an MLP."""

from .registry import (
    NETWORKS,
    FeatureClassifier,
    NetSpec,
    build_network,
    check_net_options,
    count_parameters,
    register_network,
)
from . import convnet, alexnet, resnet, mlp  # noqa: F401  (registration)

__all__ = [
    "NETWORKS",
    "FeatureClassifier",
    "NetSpec",
    "build_network",
    "check_net_options",
    "count_parameters",
    "register_network",
]
