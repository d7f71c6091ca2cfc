"""analysis.pareto: fronts against brute force, hypervolume against hand and grid-count cases."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from distillery.analysis.pareto import hypervolume, pareto_mask, pareto_table


def _brute_front(points, senses):
    """Definition, loop by loop: i is dominated if some j is >= everywhere and > somewhere (in 'better')."""
    signs = np.array([1 if s == "max" else -1 for s in senses])
    better = points * signs
    out = []
    for i in range(len(points)):
        dominated = any(np.all(better[j] >= better[i]) and np.any(better[j] > better[i])
                        for j in range(len(points)) if j != i)
        out.append(not dominated)
    return np.array(out)


@pytest.mark.parametrize("dim,senses", [(2, ("max", "min")), (3, ("max", "min", "min"))])
def test_pareto_front_equals_brute_force(dim, senses):
    rng = np.random.default_rng(dim)
    for trial in range(25):
        n = int(rng.integers(1, 40))
        pts = rng.integers(0, 6, size=(n, dim)).astype(float)  # small ints: ties and duplicates on purpose
        if trial % 2:
            pts = rng.random((n, dim))
        assert np.array_equal(pareto_mask(pts, senses), _brute_front(pts, senses))


def test_hypervolume_hand_computed_2d():
    # maximise accuracy, minimise variance; ref (acc 0, var 1).
    pts = np.array([[0.5, 0.5], [0.8, 0.7], [0.3, 0.2], [0.4, 0.6]])  # last one dominated by the first
    # boxes in (x = acc from 0, y = 1 - var): union of [0,.8]x[0,.3], [0,.5]x[0,.5], [0,.3]x[0,.8]
    expected = 0.8 * 0.3 + 0.5 * (0.5 - 0.3) + 0.3 * (0.8 - 0.5)
    assert hypervolume(pts, (0.0, 1.0), ("max", "min")) == pytest.approx(expected)
    assert hypervolume(pts[:1], (0.0, 1.0), ("max", "min")) == pytest.approx(0.25)
    assert hypervolume(np.array([[0.0, 0.5]]), (0.0, 1.0), ("max", "min")) == 0.0  # on the reference: no volume


def test_hypervolume_hand_computed_3d():
    # minimisation, ref (4, 4, 4): boxes 3x1x2=... use inclusion-exclusion by hand
    pts = np.array([[1.0, 2.0, 3.0], [2.0, 1.0, 2.0]])
    a = 3 * 2 * 1  # (4-1)(4-2)(4-3)
    b = 2 * 3 * 2  # (4-2)(4-1)(4-2)
    inter = 2 * 2 * 1  # max coords (2,2,3)
    assert hypervolume(pts, (4, 4, 4), ("min",) * 3) == pytest.approx(a + b - inter)


@pytest.mark.parametrize("dim", [2, 3])
def test_hypervolume_equals_grid_count(dim):
    """Integer points: the dominated volume is exactly the number of dominated unit cells."""
    rng = np.random.default_rng(10 + dim)
    ref = np.full(dim, 7)
    for _ in range(10):
        pts = rng.integers(0, 7, size=(int(rng.integers(1, 12)), dim))
        count = sum(any(np.all(p <= np.array(cell)) for p in pts)
                    for cell in itertools.product(range(7), repeat=dim))
        assert hypervolume(pts.astype(float), ref, ("min",) * dim) == pytest.approx(count)


def test_pareto_table_groups_and_excludes_baseline():
    agg = pd.DataFrame({
        "dataset": "toy", "arch": "ConvNet", "method": ["dc", "dc", "mtt", "mtt", "full"],
        "ipc": [1, 10, 1, 10, 5000], "is_baseline": [False, False, False, False, True],
        "mean_acc": [0.3, 0.5, 0.4, 0.6, 0.9], "class_var": [0.01, 0.03, 0.005, 0.02, 0.001],
        "images": [10, 100, 10, 100, 50000],
    })
    res = pareto_table(agg)
    assert set(res.points["method"]) == {"dc", "mtt"}
    front = res.points[res.points["on_front"]]
    assert set(zip(front["method"], front["ipc"])) == {("mtt", 1), ("mtt", 10)}
    assert res.summary.iloc[0]["hypervolume"] == pytest.approx(
        hypervolume(front[["mean_acc", "class_var"]].to_numpy(), (0, 0.25), ("max", "min")))
    assert "class_var=0.25" in res.summary.iloc[0]["reference"]
    res3 = pareto_table(agg, cost="images")
    assert res3.objectives == ("mean_acc", "class_var", "images") and res3.summary.iloc[0]["hypervolume"] > 0
