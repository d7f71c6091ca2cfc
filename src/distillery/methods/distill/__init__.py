"""Distillation methods. Importing ``load_all`` registers every built-in method."""

from .base import METHODS, DistillMethod, Progress, ProgressCallback, SyntheticSet, get_method, register_method

__all__ = ["METHODS", "DistillMethod", "Progress", "ProgressCallback", "SyntheticSet", "get_method", "register_method"]
