"""IDC on tiny data: the distance by hand, CutMix, the decoded set, clamping, seeding, resume."""

from __future__ import annotations

import pytest
import torch

from distillery.methods.distill import get_method
from distillery.methods.distill.idc import cutmix, matched_grad_distance
from distillery.methods.errors import UserError
from tests.conftest import Stop

CPU = torch.device("cpu")
TINY = {"net_width": 8, "net_depth": 2, "batch_real": 16, "inner_loop": 2, "n_data": 32, "batch_train": 16}


pytestmark = pytest.mark.usefixtures("one_thread")


def run(data, ipc=1, seed=0, callback=None, resume=None, **overrides):
    method = get_method("idc")
    config = method.make_config("tiny", ipc, {**TINY, **overrides})
    return method.distill(data, ipc, config, seed, CPU, callback, resume)


def test_distance_skips_bias_and_fc_and_sums_by_metric():
    conv_r, conv_s = torch.ones(2, 1, 1, 2), torch.zeros(2, 1, 1, 2)
    fc_r, fc_s = torch.ones(3, 4), torch.zeros(3, 4)
    bias_r, bias_s = torch.ones(3), torch.zeros(3)
    real, syn = [conv_r, fc_r, bias_r], [conv_s * 0 - 1, fc_s, bias_s]
    assert float(matched_grad_distance(real, syn, "mse", False, False)) == pytest.approx(4 * 4.0)  # (1 - -1)^2 x 4
    assert float(matched_grad_distance(real, syn, "l1", False, False)) == pytest.approx(4 * 2.0)
    assert float(matched_grad_distance(real, syn, "l1", True, True)) == pytest.approx(8 + 12 + 3)


def test_cutmix_pastes_a_box_and_reports_the_kept_area():
    x = torch.stack([torch.full((1, 8, 8), float(i)) for i in range(4)])
    y = torch.arange(4)
    mixed, ya, yb, kept = cutmix(x, y, torch.Generator().manual_seed(3))
    assert torch.equal(ya, y) and sorted(yb.tolist()) == [0, 1, 2, 3]
    own = (mixed == x).float().mean(dim=(1, 2, 3))
    for i in range(4):
        if yb[i] != y[i]:
            assert float(own[i]) == pytest.approx(kept)
    assert 0.0 <= kept <= 1.0


def test_idc_returns_a_decoded_set_and_keeps_pixels_in_range(tiny_data):
    syn = run(tiny_data, ipc=2, iterations=2)
    assert syn.decoder is not None and len(syn) == tiny_data.num_classes * 2 * 4
    assert syn.storage_ipc(tiny_data.num_classes) == pytest.approx(2.0)
    # tiny data has mean 0 and std 1, so the pixel range [0, 1] is the normalised range; the last
    # iteration's steps may leave it by a little, and the stored images were clamped before them
    stored = syn.decoder.params["images"]
    assert float(stored.min()) > -0.5 and float(stored.max()) < 1.5


def test_idc_moves_the_images_and_is_seeded(tiny_data):
    start = run(tiny_data, iterations=0, clamp=False).images
    after = run(tiny_data, iterations=2, clamp=False).images
    assert not torch.equal(start, after)
    assert torch.equal(after, run(tiny_data, iterations=2, clamp=False).images)
    assert not torch.equal(after, run(tiny_data, iterations=2, clamp=False, seed=1).images)


def test_idc_resume_equals_uninterrupted(tiny_data):
    full = run(tiny_data, iterations=3)
    saved = {}

    def stop(p):
        if p.iteration == 2:
            saved.update(p.state())
            raise Stop

    with pytest.raises(Stop):
        run(tiny_data, iterations=3, callback=stop)
    assert torch.equal(run(tiny_data, iterations=3, resume=saved).images, full.images)


@pytest.mark.parametrize(("option", "value"), [("metric", "cos"), ("mix_p", 1.5), ("inner_loop", 0), ("factor", 3)])
def test_idc_bad_options_name_the_option(tiny_data, option, value):
    with pytest.raises(UserError, match="factor" if option == "factor" else option):
        run(tiny_data, iterations=1, **{option: value})
