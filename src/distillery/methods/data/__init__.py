"""Datasets: a registry of loaders that all return a normalized, in-memory ImageData."""

from .base import ImageData
from .registry import (
    DATASETS,
    DatasetOptions,
    dataset_fingerprint,
    dataset_names,
    load_dataset,
    load_raw,
    resolve_options,
    train_class_counts,
)
from .source import DatasetSource, MissingDataError, RawSplits

__all__ = [
    "DATASETS", "DatasetOptions", "DatasetSource", "ImageData", "MissingDataError", "RawSplits",
    "dataset_fingerprint", "dataset_names", "load_dataset", "load_raw", "resolve_options", "train_class_counts",
]
