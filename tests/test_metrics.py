import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix

from distillery.methods.metrics import aggregate_models, confusion_per_class_accuracy, fairness_metrics, per_class_accuracy


def test_hand_computed_metrics():
    m = fairness_metrics([0.9, 0.5, 0.7, 0.3])
    assert m["mean_acc"] == pytest.approx(0.6)
    # population variance: ((.3)^2 + (.1)^2 + (.1)^2 + (.3)^2) / 4 = 0.05
    assert m["class_var"] == pytest.approx(0.05)
    assert m["class_std"] == pytest.approx(math.sqrt(0.05))
    assert m["worst_class_acc"] == pytest.approx(0.3)
    assert m["gap"] == pytest.approx(0.6)
    assert m["cv"] == pytest.approx(math.sqrt(0.05) / 0.6)
    assert m["overall_acc"] == pytest.approx(0.6)


def test_overall_accuracy_weights_by_class_counts():
    m = fairness_metrics([1.0, 0.0], class_counts=[3, 1])
    assert m["overall_acc"] == pytest.approx(0.75)
    assert m["mean_acc"] == pytest.approx(0.5)


def test_per_class_accuracy_matches_sklearn_confusion_matrix():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, size=500)
    pred = np.where(rng.random(500) < 0.6, target, rng.integers(0, 5, size=500))
    ours = per_class_accuracy(torch.tensor(pred), torch.tensor(target), 5).numpy()
    cm = confusion_matrix(target, pred, labels=range(5))
    np.testing.assert_allclose(ours, confusion_per_class_accuracy(cm))
    np.testing.assert_allclose(ours, np.diag(cm) / cm.sum(1))
    # overall accuracy with class counts equals plain accuracy
    m = fairness_metrics(ours, class_counts=cm.sum(1))
    assert m["overall_acc"] == pytest.approx((pred == target).mean())


def test_absent_class_is_nan():
    acc = per_class_accuracy(torch.tensor([0, 0]), torch.tensor([0, 0]), 3)
    assert acc[0] == 1 and torch.isnan(acc[1:]).all()


def test_aggregate_over_models():
    pc = np.array([[0.9, 0.5], [0.7, 0.5], [0.8, 0.2]])
    agg = aggregate_models(pc)
    means = pc.mean(1)
    assert agg["mean_acc"]["mean"] == pytest.approx(means.mean())
    assert agg["mean_acc"]["std"] == pytest.approx(means.std(ddof=1))
    variances = ((pc - pc.mean(1, keepdims=True)) ** 2).mean(1)
    assert agg["class_var"]["mean"] == pytest.approx(variances.mean())
    half = 4.302652729911275 * means.std(ddof=1) / math.sqrt(3)  # t_{0.975, 2}
    assert agg["mean_acc"]["ci95_low"] == pytest.approx(means.mean() - half)
    assert agg["mean_acc"]["n"] == 3


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        fairness_metrics([])
    with pytest.raises(ValueError):
        aggregate_models(np.zeros(3))
