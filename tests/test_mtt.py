"""MTT / TESLA and the expert buffer, on tiny data (the whole file runs in well under a minute)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from distillery.methods.aug import DiffAug
from distillery.methods.distill import get_method
from distillery.methods.distill.mtt import buffer as buffer_mod
from distillery.methods.distill.mtt import ExpertBuffer, ExpertJob, FlatNet, MTTConfig, matching_grads, plan_steps, table_row
from distillery.methods.distill.mtt.buffer import ExpertSpec
from distillery.methods.errors import UserError
from distillery.methods.nets import build_network
from distillery.methods.utils.seeding import generator

CPU = torch.device("cpu")

TINY = dict(
    width=4, depth=2, num_experts=2, expert_train_epochs=3, expert_batch=32, syn_steps=3, expert_epochs=1,
    max_start_epoch=2, iterations=4, lr_img=10.0, lr_lr=1e-5, lr_teacher=0.01, scale_lr_teacher=False,
)


def tiny_config(tmp_path, **changes) -> MTTConfig:
    return get_method("mtt").make_config("tiny", 2, {**TINY, "buffer_dir": str(tmp_path / "experts"), **changes})


@pytest.fixture
def count_training(monkeypatch):
    """Counts expert trainings (calls of the per-expert training loop)."""
    calls = []
    real = buffer_mod.train_expert_epochs

    def spy(net, spec, data, index, first_epoch, device, on_epoch, **kw):
        calls.append((index, first_epoch))
        return real(net, spec, data, index, first_epoch, device, on_epoch, **kw)

    monkeypatch.setattr(buffer_mod, "train_expert_epochs", spy)
    return calls


# ------------------------------------------------------------------------------------------
# the objective and its gradients


class TwoParam(nn.Module):
    """logits = [w . x, 0]: a linear model with exactly 2 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def forward(self, x):
        z = x.flatten(1) @ self.w
        return torch.stack([z, torch.zeros_like(z)], 1)


@pytest.mark.parametrize("mode", ["unrolled", "tesla", "tesla_exact"])
def test_loss_and_gradients_equal_a_hand_computation(mode):
    theta0, target, x, alpha = (0.5, -1.0), (0.2, 0.3), (1.0, 2.0), 0.1
    # by hand: one SGD step of CE(label 0) on logits [z, 0], z = w.x
    z = theta0[0] * x[0] + theta0[1] * x[1]
    sig = 1 / (1 + math.exp(-z))
    g = [-(1 - sig) * xi for xi in x]  # dCE/dw
    theta1 = [t - alpha * gi for t, gi in zip(theta0, g)]
    denom = sum((a - b) ** 2 for a, b in zip(theta0, target))
    loss = sum((a - b) ** 2 for a, b in zip(theta1, target)) / denom
    adj = [2 * (a - b) / denom for a, b in zip(theta1, target)]  # dL/dtheta1
    # dg_i/dx_j = -(1 - sig) delta_ij + sig (1 - sig) x_i w_j
    dgdx = [[-(1 - sig) * (i == j) + sig * (1 - sig) * x[i] * theta0[j] for j in range(2)] for i in range(2)]
    grad_x = [sum(adj[i] * -alpha * dgdx[i][j] for i in range(2)) for j in range(2)]
    grad_alpha = -sum(a * gi for a, gi in zip(adj, g))

    net = FlatNet(TwoParam())
    images = torch.tensor(x, dtype=torch.float64).view(1, 1, 1, 2)
    labels = torch.tensor([0])
    steps = plan_steps(1, 1, 1, None, generator(0, "t"), CPU)
    out = matching_grads(mode, net, torch.tensor(theta0, dtype=torch.float64), torch.tensor(target, dtype=torch.float64),
                         images, labels, torch.tensor(alpha, dtype=torch.float64), steps, None)
    torch.testing.assert_close(out[0], torch.tensor(loss, dtype=torch.float64))
    torch.testing.assert_close(out[1].flatten(), torch.tensor(grad_x, dtype=torch.float64))
    torch.testing.assert_close(out[2], torch.tensor(grad_alpha, dtype=torch.float64))


def _segment(dtype=torch.float64, n=8, syn_steps=4, batch_syn=3, seed=0):
    """A tiny ConvNet segment with DSA and minibatches (float64 so the modes compare tightly)."""
    module = build_network("convnet", 3, 8, 4, seed=seed, width=4, depth=2).to(dtype)
    net = FlatNet(module)
    g = torch.Generator().manual_seed(seed)
    start = torch.randn(net.num_params, generator=g, dtype=dtype) * 0.3
    target = start + 0.05 * torch.randn(net.num_params, generator=g, dtype=dtype)
    images = torch.randn(n, 3, 8, 8, generator=g, dtype=dtype)
    labels = torch.arange(4).repeat_interleave(n // 4)
    aug = DiffAug()
    steps = plan_steps(n, syn_steps, batch_syn, aug, generator(seed, "steps"), CPU)
    lr = torch.tensor(0.05, dtype=dtype)
    return net, start, target, images, labels, lr, steps, aug


def test_gradients_reach_images_and_lr():
    args = _segment(dtype=torch.float32)
    loss, gi, gl, _ = matching_grads("unrolled", *args)
    assert loss > 0 and torch.isfinite(gi).all() and torch.isfinite(gl)
    assert (gi.flatten(1).abs().sum(1) > 0).all()  # every image is in some batch and gets a gradient
    assert gl.abs() > 0


def test_constant_memory_gradients_equal_unrolled():
    args = _segment()
    loss_u, gi_u, gl_u, _ = matching_grads("unrolled", *args)
    loss_e, gi_e, gl_e, _ = matching_grads("tesla_exact", *args)  # TESLA two passes + adjoint HVPs
    torch.testing.assert_close(loss_e, loss_u)
    torch.testing.assert_close(gi_e, gi_u)
    torch.testing.assert_close(gl_e, gl_u)
    # published TESLA drops the alpha^2 H terms: same loss, gradient close but not identical ...
    loss_t, gi_t, gl_t, _ = matching_grads("tesla", *args)
    torch.testing.assert_close(loss_t, loss_u)
    cos = torch.nn.functional.cosine_similarity(gi_t.flatten(), gi_u.flatten(), dim=0)
    assert cos > 0.95 and not torch.allclose(gi_t, gi_u)


def test_constant_memory_modes_keep_one_step_of_graph():
    from distillery.methods.distill.mtt.matching import saved_tensor_peak

    peaks = {}
    for mode in ("unrolled", "tesla", "tesla_exact"):
        for n in (2, 8):
            net, start, target, images, labels, lr, _, _ = _segment(dtype=torch.float32)
            aug = DiffAug("crop")  # one family, so every step saves the same tensors
            steps = plan_steps(8, n, 4, aug, generator(0, "steps"), CPU)
            peaks[mode, n] = saved_tensor_peak(lambda: matching_grads(mode, net, start, target, images, labels, lr, steps, aug))[1]
    assert peaks["unrolled", 8] > 3 * peaks["unrolled", 2]
    for mode in ("tesla", "tesla_exact"):
        assert peaks[mode, 8] == peaks[mode, 2] < peaks["unrolled", 2]


def test_auto_memory_mode_unrolls_what_fits_and_falls_back_to_the_exact_constant_memory_mode():
    from distillery.methods.distill.mtt.matching import choose_memory_mode, saved_tensor_peak
    from distillery.methods.utils.device import free_memory_bytes

    net, start, target, images, labels, lr, steps, aug = _segment(dtype=torch.float32)
    big = choose_memory_mode("auto", net, start, images, labels, lr, steps, aug, free_bytes=2**40)
    assert big.mode == "unrolled" and big.unrolled_bytes > 0 and big.meta()["memory_mode"] == "unrolled"
    # the estimate is an upper bound of what the unrolled graph really holds, and grows with the steps
    real = saved_tensor_peak(lambda: matching_grads("unrolled", net, start, target, images, labels, lr, steps, aug))[1]
    assert real <= big.unrolled_bytes < 3 * real
    longer = plan_steps(len(images), 4 * len(steps), 3, aug, generator(0, "steps"), CPU)
    assert choose_memory_mode("auto", net, start, images, labels, lr, longer, aug, 2**40).unrolled_bytes > 3 * big.unrolled_bytes
    small = choose_memory_mode("auto", net, start, images, labels, lr, steps, aug, free_bytes=big.unrolled_bytes)
    assert small.mode == "tesla_exact" and small.free_bytes == big.unrolled_bytes
    assert choose_memory_mode("auto", net, start, images, labels, lr, steps, aug, None).mode == "unrolled"
    assert choose_memory_mode("tesla", net, start, images, labels, lr, steps, aug, 1).mode == "tesla"  # an explicit mode stands
    with pytest.raises(ValueError, match="choose_memory_mode"):
        matching_grads("auto", net, start, target, images, labels, lr, steps, aug)
    assert free_memory_bytes(CPU) is None or free_memory_bytes(CPU) > 0


def test_tesla_equals_unrolled_for_one_step():
    args = _segment(syn_steps=1, batch_syn=8)
    for got, want in zip(matching_grads("tesla", *args)[:3], matching_grads("unrolled", *args)[:3]):
        torch.testing.assert_close(got, want)


# ------------------------------------------------------------------------------------------
# config


def test_default_table_and_transforms():
    m = get_method("mtt")
    c1, c10, c50 = (m.make_config("cifar10", ipc) for ipc in (1, 10, 50))
    assert (c1.syn_steps, c1.expert_epochs, c1.max_start_epoch, c1.lr_lr, c1.zca) == (50, 2, 2, 1e-7, True)
    assert c10.lr_img == 1000.0 and c10.lr_teacher == 0.001 and m.transforms(c10) == ("zca",)
    assert not c50.zca and m.transforms(c50) == ()
    assert m.make_config("cifar100", 50).batch_syn == 125
    assert table_row("cifar10", 5) == table_row("cifar10", 10) and table_row("cifar10", 30) == table_row("cifar10", 50)
    assert not m.make_config("mnist", 1).zca
    # outside the table (or on a training subset) the pixel step is 100 at every IPC, not the full
    # whitened CIFAR-10's 1000
    assert [m.make_config("mnist", ipc).lr_img for ipc in (1, 10, 50)] == [100.0] * 3
    assert m.make_config("cifar10", 10, training_subset=True).lr_img == 100.0
    assert m.make_config("digits", 1).buffer_dir.startswith("/")
    with pytest.raises(UserError, match="memory_mode"):
        m.make_config("digits", 1, {"memory_mode": "x"})
    with pytest.raises(UserError, match="expert_train_epochs"):
        m.make_config("digits", 1, {"expert_train_epochs": 2})  # start 1 + 2 epochs > 2


# ------------------------------------------------------------------------------------------
# buffer


def test_buffer_is_reused_and_partial_experts_are_rebuilt(tmp_path, tiny_data, count_training):
    m = get_method("mtt")
    cfg = tiny_config(tmp_path, iterations=1)
    m.distill(tiny_data, 2, cfg, seed=0, device=CPU)
    assert sorted(count_training) == [(0, 0), (1, 0)]
    buf = m.buffer_for(tiny_data, cfg)
    first = [np.load(buf.expert_path(i)) for i in range(2)]
    assert first[0].shape == (cfg.expert_train_epochs + 1, first[0].shape[1])

    count_training.clear()
    m.distill(tiny_data, 2, cfg, seed=1, device=CPU)  # another trial, same key: builds nothing
    assert count_training == []

    # a missing marker and a truncated array are not trusted; a leftover temp file is not used
    buf.marker_path(1).unlink()
    with open(buf.expert_path(0), "r+b") as f:
        f.truncate(100)
    assert buf.missing(2) == [0, 1]
    m.distill(tiny_data, 2, cfg, seed=0, device=CPU)
    assert sorted(count_training) == [(0, 0), (1, 0)]
    for i in range(2):
        np.testing.assert_array_equal(np.load(buf.expert_path(i)), first[i])  # deterministic rebuild

    other = dataclasses.replace(cfg, buffer_dir=str(tmp_path / "other"))
    obuf = m.buffer_for(tiny_data, other)
    obuf.path.mkdir(parents=True)
    obuf.partial_path(0).write_bytes(b"garbage from a killed job")
    obuf.expert_path(1).write_bytes(b"renamed but never marked")
    assert obuf.missing(2) == [0, 1]
    count_training.clear()
    obuf.ensure(2, tiny_data, CPU)
    assert sorted(count_training) == [(0, 0), (1, 0)]
    for i in range(2):
        np.testing.assert_array_equal(np.load(obuf.expert_path(i)), first[i])


def test_interrupted_expert_resumes_to_the_same_trajectory(tmp_path, tiny_data, monkeypatch):
    spec = ExpertSpec(arch="convnet", net_options=(("depth", 2), ("width", 4)), epochs=3, batch_size=32, dsa_strategy="crop_flip")
    clean = ExpertBuffer(tmp_path / "a", "tiny", "k", spec)
    clean.build(0, tiny_data, CPU)

    real = buffer_mod.train_expert_epochs
    starts = []

    def dies_after_one_epoch(net, spec, data, index, first_epoch, device, on_epoch, **kw):
        starts.append(first_epoch)

        def cb(epoch, *rest):
            on_epoch(epoch, *rest)
            if epoch == 1:
                raise KeyboardInterrupt

        return real(net, spec, data, index, first_epoch, device, cb, **kw)

    monkeypatch.setattr(buffer_mod, "train_expert_epochs", dies_after_one_epoch)
    buf = ExpertBuffer(tmp_path / "b", "tiny", "k", spec)
    with pytest.raises(KeyboardInterrupt):
        buf.build(0, tiny_data, CPU)
    assert not buf.is_done(0) and buf.partial_path(0).exists()
    monkeypatch.setattr(buffer_mod, "train_expert_epochs", real)
    buf.build(0, tiny_data, CPU)
    assert starts == [0] and buf.is_done(0) and not buf.partial_path(0).exists()
    np.testing.assert_array_equal(np.load(buf.expert_path(0)), np.load(clean.expert_path(0)))
    assert json.loads(buf.marker_path(0).read_text())["train_loss"] == pytest.approx(json.loads(clean.marker_path(0).read_text())["train_loss"])


def test_prep_jobs_build_the_buffer_distill_uses(tmp_path, count_training):
    from distillery.methods.data import DatasetOptions
    from distillery.methods.trial import TrialSpec, prepare_data

    m = get_method("mtt")
    cfg = m.make_config("digits", 1, {**TINY, "buffer_dir": str(tmp_path / "experts")})
    options = DatasetOptions(subset_per_class=10, test_subset_per_class=10)
    jobs = m.prep_jobs("digits", options, cfg)
    assert [j.index for j in jobs] == [0, 1] and len({j.key for j in jobs}) == 1
    assert all(isinstance(j, ExpertJob) and j.method == "mtt" for j in jobs)
    import pickle

    assert pickle.loads(pickle.dumps(jobs[0])) == jobs[0]
    assert not any(m.job_done(j) for j in jobs)
    data = jobs[0].load_data()
    for j in jobs:
        m.run_prep_job(j, data, CPU)
    assert all(m.job_done(j) for j in jobs) and len(count_training) == 2
    m.run_prep_job(jobs[0], data, CPU)  # idempotent
    assert len(count_training) == 2
    # the trial runner's data maps to the same buffer: distill trains nothing
    spec = TrialSpec(dataset="digits", method="mtt", ipc=1, method_params={**TINY, "buffer_dir": str(tmp_path / "experts")}, data=options)
    prepared = prepare_data(spec)
    assert m.buffer_for(prepared, cfg).key == jobs[0].key
    m.distill(prepared, 1, dataclasses.replace(cfg, iterations=1), seed=0, device=CPU)
    assert len(count_training) == 2
    assert get_method("random").prep_jobs("digits", DatasetOptions(), None) == []


# ------------------------------------------------------------------------------------------
# distillation


def test_determinism_resume_and_zca_guard(tmp_path, tiny_data):
    m = get_method("mtt")
    cfg = tiny_config(tmp_path)
    states = {}

    def keep(p):
        if p.phase == "distill":
            states[p.iteration] = p.state()

    a = m.distill(tiny_data, 2, cfg, seed=3, device=CPU, progress_callback=keep)
    b = m.distill(tiny_data, 2, cfg, seed=3, device=CPU)
    c = m.distill(tiny_data, 2, cfg, seed=4, device=CPU)
    assert torch.equal(a.images, b.images) and a.lr == b.lr
    assert not torch.equal(a.images, c.images)
    assert a.lr is not None and a.lr != cfg.lr_teacher and not torch.equal(a.images, m.distill(tiny_data, 2, dataclasses.replace(cfg, iterations=0), seed=3, device=CPU).images)
    assert sorted(states) == [1, 2, 3, 4]
    resumed = m.distill(tiny_data, 2, cfg, seed=3, device=CPU, resume_state=states[2])
    assert torch.equal(resumed.images, a.images) and resumed.lr == a.lr
    saved = {k: v for k, v in states[2].items()}  # a round trip through torch.save(weights_only) works
    path = tmp_path / "state.pt"
    torch.save(saved, path)
    again = m.distill(tiny_data, 2, cfg, seed=3, device=CPU, resume_state=torch.load(path, weights_only=True))
    assert torch.equal(again.images, a.images)
    with pytest.raises(UserError, match="not ZCA-whitened"):
        m.distill(tiny_data, 2, dataclasses.replace(cfg, zca=True), seed=3, device=CPU)


def test_memory_modes_distill_to_the_same_set(tmp_path, tiny_data):
    m = get_method("mtt")
    cfg = tiny_config(tmp_path, iterations=2)
    u = m.distill(tiny_data, 2, cfg, seed=0, device=CPU)
    e = m.distill(tiny_data, 2, dataclasses.replace(cfg, memory_mode="tesla_exact"), seed=0, device=CPU)
    t = m.distill(tiny_data, 2, dataclasses.replace(cfg, memory_mode="tesla"), seed=0, device=CPU)
    torch.testing.assert_close(e.images, u.images, rtol=1e-4, atol=1e-4)
    assert cfg.memory_mode == "auto" and u.meta["memory_mode"] == "unrolled" and u.meta["unrolled_gb"] < 1  # a tiny run fits
    assert e.meta["memory_mode"] == "tesla_exact" and "unrolled_gb" not in e.meta
    assert t.images.shape == u.images.shape and torch.isfinite(t.images).all()


def test_trial_cli_runs_mtt(tmp_path, capsys):
    from distillery.orchestrator.cli import main

    sets = [f"{k}={v}" for k, v in TINY.items()] + [f"buffer_dir={tmp_path / 'experts'}", "iterations=2", "net.convnet.width=8",
                                                  "data.subset_per_class=10", "data.test_subset_per_class=10"]
    argv = ["trial", "--dataset", "digits", "--method", "mtt", "--ipc", "1", "--models", "2", "--epochs", "3", "--device", "cpu", "--json", "--quiet"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "mtt" and out["synthetic_images"] == 10
    assert out["learned_lr"] is not None and out["archs"]["convnet"]["lr"] == pytest.approx(out["learned_lr"])
    assert out["method_config"]["memory_mode"] == "auto"


# ------------------------------------------------------------------------------------------
# defaults that work: automatic expert count/length, extension, step-size floor, divergence rule


def test_automatic_expert_count_and_length():
    from distillery.methods.distill.mtt.method import auto_num_experts

    m = get_method("mtt")
    c = m.make_config("cifar10", 1)
    assert c.iterations == 5000 and c.num_experts == 100  # the published buffer at the published budget
    assert c.expert_train_epochs == c.max_start_epoch - 1 + c.expert_epochs == 3  # what a trial reads, not 50
    assert m.make_config("cifar10", 10).expert_train_epochs == 21
    assert m.make_config("digits", 1, {"iterations": 200}).num_experts == 10
    assert [auto_num_experts(n) for n in (0, 200, 501, 1000, 5000, 20000)] == [10, 10, 11, 20, 100, 100]
    assert m.make_config("digits", 1, {"num_experts": 3, "expert_train_epochs": 50}).num_experts == 3
    for option, bad in (("max_backoffs", -1), ("min_syn_lr", -1.0), ("num_experts", 0), ("expert_train_epochs", 0)):
        with pytest.raises(UserError, match=option):
            m.make_config("digits", 1, {option: bad})
    resolved = m.make_config("digits", 1)
    assert m.make_config("digits", 1, dataclasses.asdict(resolved)) == resolved  # idempotent


def test_experts_extend_to_the_bits_of_an_uninterrupted_build(tmp_path, tiny_data, count_training):
    spec = ExpertSpec(arch="convnet", net_options=(("depth", 2), ("width", 4)), epochs=4, batch_size=32, dsa_strategy="crop_flip")
    clean = ExpertBuffer(tmp_path / "a", "tiny", "k", spec)
    clean.build(0, tiny_data, CPU)
    short = ExpertBuffer(tmp_path / "b", "tiny", "k", dataclasses.replace(spec, epochs=2))
    short.build(0, tiny_data, CPU)
    assert np.load(short.expert_path(0)).shape[0] == 3
    longer = ExpertBuffer(tmp_path / "b", "tiny", "k", spec)
    assert not longer.is_done(0) and short.is_done(0)
    count_training.clear()
    reported = []
    longer.ensure(1, tiny_data, CPU, progress=lambda done, total: reported.append((done, total)))
    assert count_training == [(0, 2)]  # trained epochs 3 and 4 only
    assert reported == [(1, 2), (2, 2)]
    np.testing.assert_array_equal(np.load(longer.expert_path(0)), np.load(clean.expert_path(0)))
    assert short.is_done(0)  # a longer expert serves shorter requests
    count_training.clear()
    short.ensure(1, tiny_data, CPU)
    assert count_training == []
    # the epochs are not part of the key: every trial of a dataset shares one buffer
    from distillery.methods.distill.mtt import buffer_key

    assert buffer_key("d", (), spec) == buffer_key("d", (), dataclasses.replace(spec, epochs=50))


def test_distill_reports_the_expert_build_as_a_phase(tmp_path, tiny_data):
    m = get_method("mtt")
    seen = []
    m.distill(tiny_data, 2, tiny_config(tmp_path, iterations=2), seed=0, device=CPU, progress_callback=lambda p: seen.append((p.phase, p.iteration, p.total)))
    experts = [s for s in seen if s[0] == "experts"]
    assert experts[-1] == ("experts", 6, 6) and [s for s in seen if s[0] == "distill"] == [("distill", 1, 2), ("distill", 2, 2)]


def test_step_size_floor_and_divergence_backoff(tmp_path, tiny_data):
    m = get_method("mtt")
    # a huge lr_lr throws the step size around: whenever it is pushed down it stops at the floor
    lrs = []
    for seed in range(4):
        m.distill(tiny_data, 2, tiny_config(tmp_path, lr_lr=1e6, iterations=3), seed=seed, device=CPU,
                  progress_callback=lambda p: lrs.append(float(p.state()["lr"])) if p.phase == "distill" else None)
    assert min(lrs) == pytest.approx(1e-3) and all(lr >= 1e-3 * (1 - 1e-6) for lr in lrs)
    # absurd lr_img: the images blow up, the rule undoes and halves until the run is finite
    cfg = tiny_config(tmp_path, lr_img=1e30, iterations=3)
    out = m.distill(tiny_data, 2, cfg, seed=0, device=CPU)
    assert torch.isfinite(out.images).all() and out.meta["backoffs"] > 0
    again = m.distill(tiny_data, 2, cfg, seed=0, device=CPU)
    assert torch.equal(again.images, out.images)  # the rule is deterministic
    with pytest.raises(UserError, match="lr_img"):
        m.distill(tiny_data, 2, dataclasses.replace(cfg, max_backoffs=0), seed=0, device=CPU)
