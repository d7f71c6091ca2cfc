"""DC, DSA, DM and DataDAM on tiny data: objectives by hand, learning, seeding, resumption, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from distillery.methods.distill import get_method
from distillery.methods.distill.dc import loops_for
from distillery.methods.distill.init import initial_images
from distillery.methods.distill.matching import attention_map, gradient_distance, layer_distance, mean_distance
from distillery.methods.errors import UserError

CPU = torch.device("cpu")
METHODS = ("dc", "dsa", "dm", "datadam")
# ConvNet depth 2 on 8x8 inputs: depth 3 leaves 2x2 maps whose instance norm erases most signal
TINY_NET = {"net_width": 8, "net_depth": 2}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops are dominated by OpenMP synchronisation; with other processes on the machine two
    threads are up to 30x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(data, name, ipc=2, seed=0, callback=None, resume=None, **overrides):
    method = get_method(name)
    config = method.make_config("tiny", ipc, {**TINY_NET, **overrides})
    return method.distill(data, ipc, config, seed, CPU, callback, resume)


# ---------------------------------------------------------------------------------------------
# objectives


def _cos_dist(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return 1.0 - dot / (na * nb + 1e-6)


def test_dc_distance_matches_hand_computation():
    # a conv weight gradient [out=2, in=1, 1, 2]: one row of 2 numbers per output channel
    conv_s = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]])
    conv_r = torch.tensor([[[[1.0, 1.0]]], [[[0.0, -2.0]]]])
    # a linear weight gradient [out=2, in=3]: rows are output units
    lin_s = torch.tensor([[1.0, 2.0, 2.0], [3.0, 0.0, 4.0]])
    lin_r = torch.tensor([[2.0, 4.0, 4.0], [0.0, 5.0, 0.0]])
    bias_s, bias_r = torch.tensor([1.0, -1.0]), torch.tensor([-3.0, 2.0])  # 1-D: ignored

    expected_conv = _cos_dist([1, 0], [1, 1]) + _cos_dist([0, 1], [0, -2])  # (1 - 1/sqrt2) + 2
    expected_lin = _cos_dist([1, 2, 2], [2, 4, 4]) + _cos_dist([3, 0, 4], [0, 5, 0])  # 0 + 1
    assert expected_conv == pytest.approx(1 - 1 / math.sqrt(2) + 2, abs=1e-5)
    assert expected_lin == pytest.approx(1.0, abs=1e-5)

    assert float(layer_distance(conv_s, conv_r)) == pytest.approx(expected_conv, abs=1e-6)
    assert float(layer_distance(lin_s, lin_r)) == pytest.approx(expected_lin, abs=1e-6)
    assert float(layer_distance(bias_s, bias_r)) == 0.0
    total = gradient_distance([conv_s, bias_s, lin_s], [conv_r, bias_r, lin_r])
    assert float(total) == pytest.approx(expected_conv + expected_lin, abs=1e-6)


def test_attention_map_and_mean_distance_by_hand():
    act = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]], [[1.0, 0.0], [0.0, -1.0]]]])  # [1, 2, 2, 2]
    amap = attention_map(act, power=1.0)  # channel sums of |a|: [2, 2, 0, 4], norm sqrt(24)
    assert torch.allclose(amap, torch.tensor([[2.0, 2.0, 0.0, 4.0]]) / math.sqrt(24.0))
    amap2 = attention_map(act, power=2.0)  # [2, 4, 0, 10], norm sqrt(120)
    assert torch.allclose(amap2, torch.tensor([[2.0, 4.0, 0.0, 10.0]]) / math.sqrt(120.0))
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean [2, 3]
    syn = torch.tensor([[0.0, 1.0]])
    assert float(mean_distance(real, syn)) == pytest.approx(4.0 + 4.0)


# ---------------------------------------------------------------------------------------------
# the methods learn


@pytest.mark.parametrize("name", METHODS)
def test_loss_decreases(tiny_data, name):
    losses = []
    iterations = 16 if name in ("dc", "dsa") else 30
    run(tiny_data, name, iterations=iterations, init="noise", callback=lambda p: losses.append(p.loss))
    assert len(losses) == iterations and all(math.isfinite(v) for v in losses)
    k = iterations // 4
    early, late = sum(losses[:k]) / k, sum(losses[-k:]) / k
    assert late < 0.9 * early, (early, late)


@pytest.mark.parametrize("name", METHODS)
def test_gradients_reach_every_synthetic_image(tiny_data, name):
    states = []
    syn = run(tiny_data, name, iterations=1, callback=lambda p: states.append(p.state()))
    grad = states[0]["optimizer"]["state"][0]["momentum_buffer"]  # after one step: the gradient
    assert grad.shape == syn.images.shape
    assert (grad.flatten(1).abs().sum(1) > 0).all()
    init = initial_images(tiny_data, 2, 0, get_method(name).make_config("tiny", 2).init)
    assert not torch.equal(syn.images, init)
    assert not syn.images.requires_grad and syn.images.grad_fn is None
    assert syn.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_real_init_is_randoms_own_draw(tiny_data):
    """Every method that starts from real images starts from `random`'s set for the seed, so its row
    against `random` is paired; another seed draws other images."""
    random = get_method("random")
    baseline = random.distill(tiny_data, 2, random.make_config("tiny", 2, {}), 3, CPU)
    assert torch.equal(initial_images(tiny_data, 2, 3, "real"), baseline.images)
    assert not torch.equal(initial_images(tiny_data, 2, 4, "real"), baseline.images)
    for name in ("dsa", "dm", "datadam"):  # their default init; zero iterations return the start
        assert torch.equal(run(tiny_data, name, iterations=0, seed=3).images, baseline.images), name


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_set(tiny_data, name):
    a = run(tiny_data, name, iterations=2, seed=3)
    b = run(tiny_data, name, iterations=2, seed=3)
    c = run(tiny_data, name, iterations=2, seed=4)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


class Stop(Exception):
    pass


@pytest.mark.parametrize("name", METHODS)
def test_resume_equals_uninterrupted(tiny_data, name):
    total, stop_at = 4, 2
    reports = []
    full = run(tiny_data, name, iterations=total, callback=lambda p: reports.append((p.iteration, p.total, p.loss, p.elapsed)))
    assert [r[0] for r in reports] == [1, 2, 3, 4] and all(r[1] == total for r in reports)
    assert all(r[3] >= 0 for r in reports)

    saved = {}

    def stop(p):
        if p.iteration == stop_at:
            saved.update(p.state())
            raise Stop

    with pytest.raises(Stop):
        run(tiny_data, name, iterations=total, callback=stop)
    assert saved["iteration"] == stop_at and saved["images"].device.type == "cpu"
    seen = []
    resumed = run(tiny_data, name, iterations=total, resume=saved, callback=lambda p: seen.append(p.iteration))
    assert seen == [3, 4]
    assert torch.equal(resumed.images, full.images)


def test_resume_state_is_checked(tiny_data):
    saved = {}
    run(tiny_data, "dm", iterations=1, callback=lambda p: saved.update(p.state()))
    with pytest.raises(UserError, match="saved by method 'dm'"):
        run(tiny_data, "datadam", iterations=2, resume=saved)
    with pytest.raises(UserError, match="seed"):
        run(tiny_data, "dm", iterations=2, seed=9, resume=saved)


# ---------------------------------------------------------------------------------------------
# configuration


def test_published_defaults():
    dc = get_method("dc").make_config("cifar10", 10)
    assert (dc.outer_loop, dc.inner_loop, dc.iterations, dc.lr_img, dc.lr_net, dc.batch_real, dc.init, dc.dsa) == (10, 50, 1000, 0.1, 0.01, 256, "real", False)
    assert [loops_for(i) for i in (1, 10, 20, 30, 40, 50)] == [(1, 1), (10, 50), (20, 25), (30, 20), (40, 15), (50, 10)]
    assert loops_for(5) == (5, 23) and loops_for(100) == (50, 10)
    dsa = get_method("dsa").make_config("cifar10", 1)
    assert (dsa.outer_loop, dsa.inner_loop, dsa.init, dsa.dsa) == (1, 1, "real", True)
    dm = get_method("dm").make_config("cifar10", 10)
    assert (dm.iterations, dm.lr_img, dm.momentum_img, dm.batch_real, dm.init) == (20000, 1.0, 0.5, 256, "real")
    assert get_method("dm").make_config("cifar10", 100).lr_img == 10.0
    assert get_method("dm").make_config("cifar100", 100).lr_img == 1.0
    dam = get_method("datadam").make_config("cifar10", 10)
    assert (dam.iterations, dam.lr_img, dam.batch_real, dam.att_weight, dam.mmd_weight, dam.att_power) == (20000, 1.0, 64, 100.0, 1.0, 1.0)
    over = get_method("dm").make_config("cifar10", 10, {"iterations": "7", "net_width": "32", "dsa": "false"})
    assert (over.iterations, over.net_width, over.dsa) == (7, 32, False)


@pytest.mark.parametrize(
    "name,overrides,message",
    [
        ("dm", {"lr_img": -1.0}, "'lr_img'"),
        ("dm", {"init": "zeros"}, "'init'"),
        ("dc", {"net_norm": "weird"}, "'net_norm'"),
        ("dc", {"net": "nope"}, "'net'"),
        ("dsa", {"dsa_strategy": "color_blur"}, "blur"),
        ("dc", {"momentum_net": 1.5}, "'momentum_net'"),
        ("datadam", {"att_weight": 0.0, "mmd_weight": 0.0}, "att_weight"),
        ("dm", {"iterations": -1}, "'iterations'"),
        ("dm", {"batch_real": 0}, "'batch_real'"),
    ],
)
def test_bad_options_name_the_option(tiny_data, name, overrides, message):
    with pytest.raises(UserError, match=message):
        run(tiny_data, name, **overrides)


def test_dm_class_chunks_agree(tiny_data):
    """Without batch norm the class grouping of forward passes must not change the result."""
    a = run(tiny_data, "dm", iterations=3, class_chunk=1)
    b = run(tiny_data, "dm", iterations=3, class_chunk=4)
    assert torch.allclose(a.images, b.images, atol=1e-5)


def test_batchnorm_networks_run(tiny_data):
    for name in METHODS:
        syn = run(tiny_data, name, iterations=1, net_norm="batchnorm")
        assert torch.isfinite(syn.images).all()


def test_cli_trial_dm(capsys):
    from distillery.orchestrator.cli import main

    rc = main([
        "trial", "--dataset", "digits", "--method", "dm", "--ipc", "1", "--models", "2", "--epochs", "3",
        "--set", "iterations=3", "--set", "net_width=8", "--set", "net_depth=2", "--set", "net.convnet.width=8",
        "--json", "--quiet", "--device", "cpu",
    ])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "dm" and out["synthetic_images"] == 10
    assert out["method_config"]["iterations"] == 3 and 0.0 <= out["mean_acc"] <= 1.0


def test_cli_reports_bad_option(capsys):
    from distillery.orchestrator.cli import main

    rc = main(["trial", "--dataset", "digits", "--method", "dc", "--ipc", "1", "--set", "lr_img=abc", "--quiet"])
    assert rc == 2 and "lr_img" in capsys.readouterr().err
