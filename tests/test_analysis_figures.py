"""analysis.figures: image denormalisation and figure smoke checks on tiny inputs."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from distillery.analysis.aggregate import aggregate
from distillery.analysis.figures import _display_images, fig_metric_vs_ipc, fig_synthetic_grid, save_figure
from distillery.analysis.load import models_from_per_class


def test_display_images_uses_mean_std_else_min_max():
    rng = np.random.default_rng(0)
    raw = rng.random((4, 3, 5, 5))
    mean, std = [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]
    norm = (raw - np.array(mean)[None, :, None, None]) / np.array(std)[None, :, None, None]
    back = _display_images(norm, {"mean": mean, "std": std})
    assert back.shape == (4, 5, 5, 3) and np.allclose(back, raw.transpose(0, 2, 3, 1))
    mm = _display_images(norm * 7 - 3, {})  # unknown normalisation: per-image min-max
    assert mm.min() == 0.0 and mm.max() == 1.0
    assert np.allclose(mm.reshape(4, -1).min(1), 0) and np.allclose(mm.reshape(4, -1).max(1), 1)


def test_synthetic_grid_soft_labels_and_svg(tmp_path):
    torch = pytest.importorskip("torch")
    labels = torch.nn.functional.one_hot(torch.arange(3).repeat_interleave(2), 3).float()
    state = {"images": torch.randn(6, 1, 6, 6), "labels": labels, "meta": {}}
    png, svg = save_figure(fig_synthetic_grid(state, ["a", "b", "c"], "soft"), tmp_path, "grid")
    assert png.read_bytes()[:4] == b"\x89PNG" and ET.parse(svg).getroot().tag.endswith("svg")


def test_metric_vs_ipc_without_baseline_or_fits(tmp_path):
    frames = []
    for ipc in (1, 10):
        pc = pd.DataFrame([("ConvNet", 0, c, str(c), 0.1 * ipc ** 0.5 + 0.01 * c) for c in range(3)],
                          columns=["arch", "model", "class_index", "class_name", "acc"])
        frames.append(models_from_per_class({"run_id": str(ipc), "dataset": "d", "method": "dm", "ipc": ipc,
                                             "seed": 0, "full_data": False}, pc))
    agg = aggregate(pd.concat(frames, ignore_index=True))
    png, _ = save_figure(fig_metric_vs_ipc(agg, "d", "class_var"), tmp_path, "v")
    assert png.stat().st_size > 1000


def test_parameterised_sets_get_their_decoded_images_and_budget_axes(tmp_path):
    """A multi-formation set (IDM, IDC) at IPC 1 on 3 classes trains on 12 images: the frame and the
    aggregate carry both budgets, and the budget figures plot on either axis."""
    frames = []
    for method, ipc, images in (("idm", 1, 12), ("idm", 2, 24), ("dm", 1, None), ("dm", 2, None)):
        pc = pd.DataFrame([("ConvNet", 0, c, str(c), 0.3 + 0.1 * ipc + 0.01 * c) for c in range(3)],
                          columns=["arch", "model", "class_index", "class_name", "acc"])
        trial = {"run_id": f"{method}{ipc}", "dataset": "d", "method": method, "ipc": ipc, "seed": 0, "full_data": False,
                 "storage_ipc": float(ipc), "synthetic_images": images}
        frames.append(models_from_per_class(trial, pc))
    models = pd.concat(frames, ignore_index=True)
    assert models.set_index("run_id").loc[["idm1", "dm1"], "images"].tolist() == [12, 3]
    agg = aggregate(models).set_index(["method", "ipc"])
    assert agg.loc[("idm", 1), "decoded_ipc"] == 4.0 and agg.loc[("dm", 1), "decoded_ipc"] == 1.0
    assert agg.loc[("idm", 2), "storage_ipc"] == 2.0
    fig = fig_metric_vs_ipc(agg.reset_index(), "d", "mean_acc", x="decoded_ipc")
    xs = sorted({round(float(v), 3) for line in fig.axes[0].lines for v in line.get_xdata()})
    assert xs == [1.0, 2.0, 4.0, 8.0]
    assert "decoded" in fig.axes[0].get_xlabel()
    with pytest.raises(ValueError, match="unknown x axis"):
        fig_metric_vs_ipc(agg.reset_index(), "d", "mean_acc", x="pixels")
