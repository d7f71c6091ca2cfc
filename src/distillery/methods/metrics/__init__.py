from .fairness import (
    FAIRNESS_METRICS,
    aggregate_models,
    confusion_per_class_accuracy,
    fairness_metrics,
    per_class_accuracy,
)

__all__ = [
    "FAIRNESS_METRICS",
    "aggregate_models",
    "confusion_per_class_accuracy",
    "fairness_metrics",
    "per_class_accuracy",
]
