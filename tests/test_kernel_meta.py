"""The kernel (KIP, FRePo, RFAD) and meta-learning (DD, LD) families: their kernels against Monte
Carlo, ridge regression's algebra, resumption, label export and option errors, on tiny data."""

from __future__ import annotations

import math

import pytest
import torch

from distillery.methods.distill.base import get_method
from distillery.methods.distill.kernel.krr import fc_kernel, krr_predict
from distillery.methods.distill.meta.bptt import stalled
from distillery.methods.errors import UserError

from conftest import make_tiny_data

NEW = ("kip", "frepo", "rfad", "dd", "ld")
SMALL = {"kip": {}, "frepo": {"net_width": 16, "pool_size": 3, "max_online_steps": 2}, "rfad": {"net_width": 16, "n_models": 2},
         "dd": {"net_width": 16, "unroll_steps": 2, "unroll_epochs": 1, "batch_real": 64}, "ld": {"net_width": 16, "online_patience": 2, "batch_real": 64}}


def _distill(name: str, iterations: int, data=None, resume=None, seed: int = 0, **changes):
    data = data or make_tiny_data(size=16)
    method = get_method(name)
    config = method.make_config("tiny", 2, {**SMALL[name], "iterations": iterations, **changes})
    states, losses = [], []

    def record(p):
        states.append(p.state())
        losses.append(p.loss)

    out = method.distill(data, 2, config, seed, torch.device("cpu"), progress_callback=record, resume_state=resume)
    return out, states, losses


def test_fc_nngp_matches_a_wide_random_network():
    """The arc-cosine recursion is the covariance of a wide ReLU network's output (Monte Carlo)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 12, generator=g)
    width, sw2, sb2 = 20000, 2.0, 0.01
    w1 = torch.randn(12, width, generator=g) * math.sqrt(sw2 / 12)
    b1 = torch.randn(width, generator=g) * math.sqrt(sb2)
    u = x @ w1 + b1
    h = torch.relu(u)
    empirical = sw2 * (h @ h.T) / width + sb2  # E over the readout weights, in closed form
    exact = fc_kernel(x, x, depth=1, sigma_w2=sw2, sigma_b2=sb2, kind="nngp")
    assert torch.allclose(exact, empirical, rtol=0.05, atol=0.02)
    # the NTK adds the first layer's gradient products: K0 * sigma_w^2 * E[relu'(u) relu'(u')]
    k0 = sw2 * (x @ x.T) / 12 + sb2
    active = (u > 0).float()
    empirical_ntk = empirical + k0 * sw2 * (active @ active.T) / width
    ntk = fc_kernel(x, x, depth=1, sigma_w2=sw2, sigma_b2=sb2, kind="ntk")
    assert torch.allclose(ntk, empirical_ntk, rtol=0.05, atol=0.03)
    assert torch.allclose(ntk, ntk.T) and float(torch.linalg.eigvalsh(ntk).min()) > 0


def test_krr_interpolates_its_support_and_regularises():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 10, generator=g)
    y = torch.randn(6, 3, generator=g)
    k = fc_kernel(x, x)
    assert torch.allclose(krr_predict(k, k, y, 1e-9), y, atol=1e-4)
    shrunk = krr_predict(k, k, y, 10.0)
    assert float(shrunk.norm()) < 0.5 * float(y.norm())  # a large ridge pulls predictions to 0


@pytest.mark.parametrize("name", NEW)
def test_resume_repeats_an_uninterrupted_run(name):
    full, states, losses = _distill(name, 4)
    assert all(math.isfinite(l) for l in losses)
    resumed, _, _ = _distill(name, 4, resume=states[1])
    assert torch.equal(full.images, resumed.images) and torch.equal(full.labels, resumed.labels)
    other, _, _ = _distill(name, 4, seed=1)
    assert not torch.equal(full.images, other.images) or not torch.equal(full.labels, other.labels)


@pytest.mark.parametrize("name", NEW)
def test_learned_labels_are_probability_rows_with_the_hard_class_on_top(name):
    out, _, _ = _distill(name, 3, learn_labels=True)
    assert out.soft_labels and out.meta["learned_labels"]
    assert torch.allclose(out.labels.sum(1), torch.ones(len(out)), atol=1e-4)
    assert torch.equal(out.hard_labels(), torch.arange(4).repeat_interleave(2))


def test_kip_learns_on_tiny_data():
    _, _, losses = _distill("kip", 30, batch_real=96)
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])


@pytest.mark.parametrize(("name", "lr"), [("kip", {}), ("rfad", {"lr_img": 0.1})])
def test_kernel_methods_keep_pixels_within_max_shift_of_their_start_and_resume_exactly(name, lr):
    """The bound binds (some pixel sits on it, none beyond), the paper's unbounded update moves
    further, and a run resumed mid-way clamps against the same start as an uninterrupted one."""
    data = make_tiny_data(size=16)
    start = get_method("random").distill(data, 2, get_method("random").make_config("tiny", 2, {}), 0, torch.device("cpu")).images
    bounded, states, _ = _distill(name, 6, data=data, max_shift=0.05, **lr)
    shift = (bounded.images - start).abs()
    assert float(shift.max()) <= 0.05 + 1e-6 and float(shift.max()) >= 0.05 - 1e-6
    free, _, _ = _distill(name, 6, data=data, max_shift=None, **lr)
    assert float((free.images - start).abs().max()) > 0.1
    resumed, _, _ = _distill(name, 6, data=data, resume=states[2], max_shift=0.05, **lr)
    assert torch.equal(resumed.images, bounded.images)


def test_dd_learns_its_step_sizes():
    out, _, _ = _distill("dd", 3)
    assert out.meta["learned_lr_mean"] != pytest.approx(0.02, abs=1e-7) and out.meta["learned_lr_min"] > 0
    fixed, _, _ = _distill("dd", 3, learn_lr=False)
    assert fixed.meta["learned_lr_mean"] == pytest.approx(0.02, rel=1e-5)


@pytest.mark.parametrize("soft", (False, True))
def test_dd_stepwise_gradient_is_the_unrolled_one_in_one_steps_memory(soft):
    """stepwise_loss has unrolled_loss's value and gradients (pixels, step sizes, soft labels),
    in float64 to 1e-12, while its graph holds a fraction of the unrolled one's."""
    from distillery.methods.distill.meta.bptt import stepwise_loss, unrolled_loss
    from distillery.methods.nets.registry import build_network
    from distillery.methods.utils.memory import saved_tensor_peak

    g = torch.Generator().manual_seed(0)
    net = build_network("convnet", 1, 8, 3, seed=0, width=8, depth=2, norm="instancenorm").double()
    params = {k: v.detach() for k, v in net.named_parameters()}
    x = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64).requires_grad_(True)
    y = torch.softmax(torch.randn(6, 3, generator=g, dtype=torch.float64), 1).requires_grad_(True) if soft else torch.arange(6) % 3
    raw = torch.linspace(-2.0, -0.5, 8, dtype=torch.float64).requires_grad_(True)
    x_real, y_real = torch.randn(12, 1, 8, 8, generator=g, dtype=torch.float64), torch.arange(12) % 3
    results = []
    for fn in (unrolled_loss, stepwise_loss):
        def run():
            loss = fn(net, {k: v.clone().requires_grad_(True) for k, v in params.items()}, {}, x, y, torch.nn.functional.softplus(raw), x_real, y_real)
            loss.backward()
            return float(loss.detach())
        value, peak = saved_tensor_peak(run)
        inputs = (x, raw, y) if soft else (x, raw)
        results.append((value, [t.grad.clone() for t in inputs], peak))
        for t in inputs:
            t.grad = None
    (v0, g0, p0), (v1, g1, p1) = results
    assert v1 == pytest.approx(v0, abs=1e-12)
    for a, b in zip(g0, g1):
        assert float(a.abs().max()) > 1e-6 and torch.allclose(a, b, rtol=0, atol=1e-12)
    assert p1 < p0 / 3


def test_dd_memory_modes_run_the_same_and_auto_records_its_choice():
    """Both modes give the same set (float rounding apart); auto picks unrolled on tiny data, where
    it fits, and says so with its estimate in the set's meta.

    "Rounding apart" is measured against how far the set moved: in float32 the two modes sum in a
    different order, and over 3 iterations a pixel can drift by ~3e-5 (seen on one CPU; another gave
    under 1e-5), while a wrong gradient moves pixels by as much as the distillation does."""
    data = make_tiny_data(size=16)
    unrolled, _, _ = _distill("dd", 3, data=data, memory_mode="unrolled")
    stepwise, _, _ = _distill("dd", 3, data=data, memory_mode="stepwise")
    auto, states, _ = _distill("dd", 3, data=data)
    moved = (stepwise.images - _distill("dd", 0, data=data)[0].images).abs()
    apart = (unrolled.images - stepwise.images).abs()
    assert float(moved.max()) > 1e-3
    assert float(apart.max()) < 0.01 * float(moved.max()) and float(apart.mean()) < 1e-4 * float(moved.mean())
    assert (unrolled.meta["memory_mode"], stepwise.meta["memory_mode"], auto.meta["memory_mode"]) == ("unrolled", "stepwise", "unrolled")
    assert auto.meta["unrolled_gb"] >= 0 and "unrolled_gb" not in stepwise.meta
    assert torch.equal(auto.images, unrolled.images)
    resumed, _, _ = _distill("dd", 3, data=data, resume=states[1], memory_mode="auto")
    assert torch.equal(resumed.images, auto.images)


def test_ld_keeps_its_real_images():
    out, _, _ = _distill("ld", 3)
    first = get_method("ld").init_tensors(make_tiny_data(size=16), 2, get_method("ld").make_config("tiny", 2, SMALL["ld"]), 0, torch.device("cpu"))
    assert torch.equal(out.images, first["images"]) and out.soft_labels


@pytest.mark.parametrize("name", ("frepo", "ld"))
def test_a_snapshot_exports_the_set_the_run_returns(name):
    """set_from_state on the last Progress state is the returned set (labels exported alike)."""
    data = make_tiny_data(size=16)
    out, states, _ = _distill(name, 2, data=data)
    method = get_method(name)
    again = method.set_from_state(states[-1], data, 2, method.make_config("tiny", 2, {**SMALL[name], "iterations": 2}), 0)
    assert torch.equal(again.images, out.images) and torch.equal(again.labels, out.labels) and again.soft_labels


@pytest.mark.parametrize("name", NEW)
def test_real_init_is_randoms_own_draw(name):
    """Zero iterations return `random`'s set for the seed (a paired comparison), and another seed
    draws other images."""
    data = make_tiny_data(size=16)
    baseline = get_method("random").distill(data, 2, get_method("random").make_config("tiny", 2, {}), 3, torch.device("cpu"))
    out, _, _ = _distill(name, 0, data=data, seed=3)
    assert torch.equal(out.images, baseline.images)
    other, _, _ = _distill(name, 0, data=data, seed=4)
    assert not torch.equal(other.images, baseline.images)


@pytest.mark.parametrize(("name", "change", "word"), [
    ("kip", {"kernel": "rbf"}, "kernel"),
    ("kip", {"max_shift": -0.1}, "max_shift.*or none for the unbounded update"),
    ("kip", {"max_shift": float("nan")}, "max_shift"),
    ("rfad", {"max_shift": "far"}, "max_shift"),
    ("kip", {"learn_images": False, "learn_labels": False}, "learn_images"),
    ("rfad", {"loss_type": "hinge"}, "loss_type"),
    ("frepo", {"pool_size": 0}, "pool_size"),
    ("rfad", {"net": "nosuchnet"}, "net"),
    ("dd", {"lr_inner": -1.0}, "lr_inner"),
    ("dd", {"memory_mode": "tesla"}, "memory_mode.*auto, unrolled, stepwise"),
    ("ld", {"label_temperature": 0}, "label_temperature"),
])
def test_bad_options_name_the_option(name, change, word):
    with pytest.raises(UserError, match=word):
        get_method(name).make_config("digits", 1, change)


def test_ld_restarts_its_online_network_only_when_it_stops_learning():
    """The reference's rule: a falling error never restarts; a flat one restarts after the window
    fills (patience steps) and patience more steps bring no new minimum."""
    falling = {"errors": [], "lowest": math.inf, "since_lowest": 0}
    assert not any(stalled(falling, 1.0 - 0.01 * i, 3) for i in range(50))
    flat = {"errors": [], "lowest": math.inf, "since_lowest": 0}
    restarts = [i for i in range(20) if stalled(flat, 0.5, 3)]
    assert restarts[0] == 6  # 3 to fill the window, then 3 more without a new minimum, then the 7th


def test_ld_resume_across_an_online_restart_repeats_the_run():
    full, states, _ = _distill("ld", 14, online_patience=1)
    generations = [s["extra"]["online"]["generation"] for s in states]
    assert generations[-1] > 0  # the tiny run's online network did restart (at iteration 11)
    before = generations.index(1) - 1  # the last state before the first restart
    resumed, _, _ = _distill("ld", 14, online_patience=1, resume=states[before])
    assert torch.equal(full.labels, resumed.labels)


def test_ld_returns_the_best_scoring_labels_it_saw_and_resumes_exactly():
    """With select_every 2 a 6-iteration run scores its labels at 2, 4 and 6 and exports the best
    (the reference returns its best-validated labels, not the last); resuming repeats it."""
    full, states, _ = _distill("ld", 6, select_every=2, select_steps=3, select_images=40)
    chosen = full.meta["selected_iteration"]
    assert chosen in (2, 4, 6) and 0.0 <= full.meta["selection_error"] <= 1.0
    at_chosen = states[chosen - 1]["tensors"]["labels"]
    assert torch.allclose(full.labels, at_chosen / at_chosen.sum(1, keepdim=True))
    resumed, _, _ = _distill("ld", 6, select_every=2, select_steps=3, select_images=40, resume=states[2])
    assert torch.equal(full.labels, resumed.labels) and resumed.meta["selected_iteration"] == chosen


def test_label_error_ranks_right_labels_above_wrong_ones():
    from distillery.methods.distill.init import labels_for, real_init
    from distillery.methods.distill.meta.selection import label_error, scoring_images

    data = make_tiny_data(size=16)
    method = get_method("ld")
    config = method.make_config("tiny", 4, SMALL["ld"])
    images, hard = real_init(data, 4, 0), labels_for(data.num_classes, 4)  # random's set, as LD's
    score_x, score_y = scoring_images(data, 4, 0, 60)
    assert len(score_y) >= 30 and not any(bool((score_x == img).all(dim=(1, 2, 3)).any()) for img in images)

    def error(labels):
        return label_error(lambda: method.seeded_net(data, config, 0, "select"), images, labels, 30, 8, 1e-3,
                           lambda step: torch.Generator().manual_seed(step), score_x, score_y)

    right = torch.nn.functional.one_hot(hard, data.num_classes).float()
    wrong = right.roll(1, dims=1)  # every row names the next class
    assert error(right) < error(wrong)
    assert error(right) == error(right.clone())  # the same network and batches every time


@pytest.mark.parametrize("option,value", [("select_every", -1), ("select_steps", 0), ("select_images", "all")])
def test_ld_selection_options_are_checked(option, value):
    with pytest.raises(UserError, match=option):
        get_method("ld").make_config("tiny", 2, {option: value})
