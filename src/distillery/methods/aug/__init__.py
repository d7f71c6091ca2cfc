"""Augmentation and data transforms: differentiable siamese augmentation (DSA) and ZCA whitening."""

from .dsa import (
    DEFAULT_STRATEGY,
    FAMILIES,
    FLIP_FREE_STRATEGY,
    AugDraw,
    AugStep,
    DiffAug,
    DSAParams,
    default_strategy,
    parse_strategy,
)
from .zca import TRANSFORMS, ZCA, ZCA_EPS, apply_transforms, fit_zca, to_pixels

__all__ = [
    "DEFAULT_STRATEGY",
    "FAMILIES",
    "FLIP_FREE_STRATEGY",
    "AugDraw",
    "AugStep",
    "DiffAug",
    "DSAParams",
    "default_strategy",
    "parse_strategy",
    "TRANSFORMS",
    "ZCA",
    "ZCA_EPS",
    "apply_transforms",
    "fit_zca",
    "to_pixels",
]
