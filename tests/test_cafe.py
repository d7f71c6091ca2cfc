"""CAFE on tiny data: the accuracy window, the layer-wise objective, seeding, resume, options."""

from __future__ import annotations

import pytest
import torch

from distillery.methods.distill import get_method
from distillery.methods.distill.cafe import Watcher
from distillery.methods.errors import UserError
from tests.conftest import Stop

CPU = torch.device("cpu")
TINY = {"net_width": 8, "net_depth": 2, "batch_real": 16, "probe_per_class": 8}


pytestmark = pytest.mark.usefixtures("one_thread")


def run(data, ipc=2, seed=0, callback=None, resume=None, **overrides):
    method = get_method("cafe")
    config = method.make_config("tiny", ipc, {**TINY, **overrides})
    return method.distill(data, ipc, config, seed, CPU, callback, resume)


def test_watcher_reports_the_range_of_a_full_window():
    w = Watcher(3)
    assert w.add(0.5) is None and w.add(0.7) is None
    assert w.add(0.6) == pytest.approx(0.2)
    assert w.add(0.65) == pytest.approx(0.1)  # 0.5 dropped: the window is 0.7, 0.6, 0.65


def test_cafe_lowers_its_loss_and_is_seeded(tiny_data):
    losses = []
    syn = run(tiny_data, iterations=6, outer_loop=2, inner_loop=4, watch_window=2, callback=lambda p: losses.append(p.loss))
    assert losses[-1] < losses[0]
    assert torch.equal(syn.images, run(tiny_data, iterations=6, outer_loop=2, inner_loop=4, watch_window=2).images)
    assert not torch.equal(syn.images, run(tiny_data, iterations=6, outer_loop=2, inner_loop=4, watch_window=2, seed=1).images)


def test_cafe_discrimination_and_layer_terms_each_move_the_images(tiny_data):
    start = run(tiny_data, iterations=0).images
    only_disc = run(tiny_data, iterations=1, shallow_weight=0.0, deep_weight=0.0, embed_weight=0.0, disc_weight=1.0).images
    only_layers = run(tiny_data, iterations=1, disc_weight=0.0).images
    nothing = run(tiny_data, iterations=1, shallow_weight=0.0, deep_weight=0.0, embed_weight=0.0, disc_weight=0.0).images
    assert torch.equal(nothing, start)
    assert not torch.equal(only_disc, start) and not torch.equal(only_layers, start)
    assert not torch.equal(only_disc, only_layers)


def test_cafe_resume_equals_uninterrupted(tiny_data):
    opts = {"iterations": 4, "outer_loop": 2, "inner_loop": 3, "watch_window": 2}
    full = run(tiny_data, **opts)
    saved = {}

    def stop(p):
        if p.iteration == 2:
            saved.update(p.state())
            raise Stop

    with pytest.raises(Stop):
        run(tiny_data, callback=stop, **opts)
    resumed = run(tiny_data, resume=saved, **opts)
    assert torch.equal(resumed.images, full.images)


@pytest.mark.parametrize(("option", "value"), [("disc_weight", -1.0), ("watch_window", -1), ("probe_per_class", 0), ("lambda_1", float("nan"))])
def test_cafe_bad_options_name_the_option(tiny_data, option, value):
    with pytest.raises(UserError, match=option):
        run(tiny_data, iterations=1, **{option: value})
