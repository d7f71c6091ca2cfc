"""HaBa on tiny data: the hallucinator decoder, the stored budget, seeding and resume, options."""

from __future__ import annotations

import pytest
import torch

from distillery.methods.distill import get_method
from distillery.methods.distill.decode import Decoder
from distillery.methods.distill.mtt.haba import decode_all, hallucinate, init_hallucinators
from distillery.methods.errors import UserError

CPU = torch.device("cpu")
TINY = dict(
    width=4, depth=2, num_experts=2, expert_train_epochs=3, expert_batch=32, syn_steps=3, expert_epochs=1,
    max_start_epoch=2, iterations=4, lr_img=10.0, lr_lr=1e-5, lr_teacher=0.01, scale_lr_teacher=False,
    n_halluc=3, adv_width=4, lr_halluc=1.0,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def config(tmp_path, **changes):
    return get_method("haba").make_config("tiny", 2, {**TINY, "buffer_dir": str(tmp_path / "experts"), **changes})


def test_hallucinators_decode_every_pair_base_major():
    bases = torch.randn(4, 1, 8, 8)
    params = init_hallucinators(3, 1, (8, 8), 3, seed=0)
    out = decode_all(bases, params, 3)
    assert out.shape == (12, 1, 8, 8)
    assert torch.allclose(out[1 * 3 + 2], hallucinate(bases, params, 2)[1], atol=1e-5)  # batch-size-dependent conv kernels
    assert torch.equal(params["h0.enc_w"], init_hallucinators(3, 1, (8, 8), 3, seed=0)["h0.enc_w"])
    assert not torch.equal(params["h0.enc_w"], params["h1.enc_w"])


def test_haba_distills_a_decoded_set_that_counts_its_hallucinators(tmp_path, tiny_data):
    m = get_method("haba")
    states = {}
    a = m.distill(tiny_data, 2, config(tmp_path), seed=1, device=CPU,
                  progress_callback=lambda p: states.__setitem__(p.iteration, p.state()) if p.phase == "distill" else None)
    assert len(a) == tiny_data.num_classes * 2 * 3
    assert a.labels.tolist() == torch.arange(tiny_data.num_classes).repeat_interleave(6).tolist()
    assert torch.isfinite(a.images).all() and a.lr is not None
    per_image = 1 * 8 * 8
    halluc = sum(v.numel() for k, v in a.decoder.params.items() if k != "bases")
    assert a.storage_ipc(tiny_data.num_classes) == pytest.approx(2 + halluc / (per_image * tiny_data.num_classes))
    back = Decoder.from_state_dict(a.decoder.state_dict())
    assert torch.allclose(back.decode(), a.images)
    # seeded and resumable: a run resumed at iteration 2 ends where the uninterrupted one did
    b = m.distill(tiny_data, 2, config(tmp_path), seed=1, device=CPU, resume_state=states[2])
    assert torch.equal(a.images, b.images) and a.lr == b.lr
    start = m.distill(tiny_data, 2, config(tmp_path, iterations=0), seed=1, device=CPU)
    assert not torch.equal(start.images, a.images)


def test_hallucinations_keep_the_bases_scale_whatever_the_hallucinators_weights():
    """The decoder standardises each hallucinator's output to the bases' per-channel statistics:
    hallucinator weights that grew 1000-fold (what diverged at digits IPC 10) decode to images of
    the bases' scale, not 1000x (or 1e6x) it."""
    g = torch.Generator().manual_seed(0)
    bases = torch.randn(6, 3, 8, 8, generator=g) * torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1, 1) + 0.3
    params = init_hallucinators(2, 3, (8, 8), 3, seed=0)
    grown = {k: v * 1000 for k, v in params.items()}
    for p in (params, grown):
        out = decode_all(bases, p, 2)
        for i in range(2):
            h = out[i::2]  # hallucinator i's images (base-major rows)
            assert torch.allclose(h.mean((0, 2, 3)), bases.mean((0, 2, 3)), atol=1e-4)
            assert torch.allclose(h.std((0, 2, 3), unbiased=False), bases.std((0, 2, 3), unbiased=False), rtol=1e-3)
    assert not torch.allclose(decode_all(bases, params, 2), bases.repeat_interleave(2, 0))  # still a transformation


def test_haba_rows_are_the_references_not_mtts():
    """HaBa's scripts use lr_img 100 at every IPC (MTT's IPC 10 and 50 rows: 1000); datasets outside
    the table borrow CIFAR-10's row with MTT's outside-table rule (no ZCA, lr_teacher scaled)."""
    m = get_method("haba")
    for ipc in (1, 10, 50):
        assert m.default_config("cifar10", ipc).lr_img == 100.0
    assert get_method("mtt").default_config("cifar10", 10).lr_img == 1000.0
    digits = m.default_config("digits", 10)
    assert digits.lr_img == 100.0 and not digits.zca and digits.scale_lr_teacher
    assert (digits.halluc_init, digits.halluc_grad) == ("identity", "mean")
    assert (m.default_config("cifar10", 10).halluc_init, m.default_config("cifar10", 10).halluc_grad) == ("random", "sum")
    assert m.default_config("cifar10", 50).max_start_epoch == 20


def test_mean_gradient_divides_the_hallucinator_step_by_the_bases(tmp_path, tiny_data):
    """halluc_grad mean with lr_halluc L moves the hallucinators exactly as sum with L / bases does
    (8 bases here: 4 classes x ipc 2), and the bases the same in both."""
    m = get_method("haba")
    a = m.distill(tiny_data, 2, config(tmp_path, iterations=2, halluc_grad="mean", lr_halluc=8.0), seed=0, device=CPU)
    b = m.distill(tiny_data, 2, config(tmp_path, iterations=2, halluc_grad="sum", lr_halluc=1.0), seed=0, device=CPU)
    c = m.distill(tiny_data, 2, config(tmp_path, iterations=2, halluc_grad="sum", lr_halluc=8.0), seed=0, device=CPU)
    for k in a.decoder.params:
        assert torch.allclose(a.decoder.params[k], b.decoder.params[k], atol=1e-6), k
    assert not torch.allclose(a.decoder.params["h0.enc_w"], c.decoder.params["h0.enc_w"])


def test_identity_hallucinators_start_as_their_bases():
    bases = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = decode_all(bases, init_hallucinators(3, 1, (8, 8), 3, seed=0, init="identity"), 3)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # a valid 3x3 conv loses the border
    for i in range(3):
        assert torch.nn.functional.cosine_similarity(out[i::3][inner].flatten(1), bases[inner].flatten(1)).min() > 0.9


@pytest.mark.parametrize(("option", "value"), [("n_halluc", 0), ("halluc_kernel", 99), ("lr_halluc", -1.0), ("halluc_init", "zeros"), ("halluc_grad", "max")])
def test_haba_bad_options_name_the_option(tmp_path, tiny_data, option, value):
    with pytest.raises(UserError, match=option):
        get_method("haba").distill(tiny_data, 2, config(tmp_path, **{option: value}), seed=0, device=CPU)
