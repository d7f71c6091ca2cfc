"""IDM and multi-formation on tiny data: the mixed init, the decoded set, the queue's replay on
resume, seeding, and option errors."""

from __future__ import annotations

import pytest
import torch

from distillery.methods.distill import get_method
from distillery.methods.distill.decode import multiformation
from distillery.methods.distill.formation import mixed_init, tile
from distillery.methods.errors import UserError
from tests.conftest import Stop

CPU = torch.device("cpu")
TINY = {"net_width": 8, "net_depth": 2, "batch_real": 16, "train_batch": 16, "train_steps": 2, "queue_interval": 2, "queue_size": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def run(data, ipc=1, seed=0, callback=None, resume=None, **overrides):
    method = get_method("idm")
    config = method.make_config("tiny", ipc, {**TINY, **overrides})
    return method.distill(data, ipc, config, seed, CPU, callback, resume)


def test_tile_inverts_the_multiformation_tiling():
    small = torch.arange(2 * 4 * 1 * 2 * 2, dtype=torch.float32).reshape(8, 1, 2, 2)
    stored = tile(small, 2)
    assert stored.shape == (2, 1, 4, 4)
    # tile 1 (row-major: top right) of stored image 0 is small[1]
    assert torch.equal(stored[0, :, :2, 2:], small[1])
    assert torch.equal(stored[1, :, 2:, :2], small[6])
    # decoding an all-constant tile gives that constant everywhere
    const = tile(torch.ones(4, 1, 2, 2) * torch.arange(4.0).reshape(4, 1, 1, 1), 2)
    decoded = multiformation(const, 2)
    assert [float(d.mean()) for d in decoded] == [0.0, 1.0, 2.0, 3.0]


def _tiles(stored: torch.Tensor) -> torch.Tensor:
    """The shrunk images of a factor-2 stored set of 8x8 images, in decoding order."""
    return stored.reshape(-1, 1, 2, 4, 2, 4).permute(0, 2, 4, 1, 3, 5).reshape(-1, 1, 4, 4)


def _sources(tiles: torch.Tensor, data) -> torch.Tensor:
    """For each tile, the index of the training image whose 2x shrink is nearest to it."""
    shrunk = torch.nn.functional.avg_pool2d(data.train_x, 2)
    return ((tiles[:, None] - shrunk[None]) ** 2).flatten(2).sum(-1).argmin(1)


def test_mixed_init_shrinks_distinct_real_images_of_each_class(tiny_data):
    stored = mixed_init(tiny_data, 2, seed=0, factor=2)
    assert stored.shape == (tiny_data.num_classes * 2, *tiny_data.image_shape)
    # every tile is one class-c training image shrunk by 2 (area averaging), and no image repeats
    tiles = _tiles(stored)
    match = _sources(tiles, tiny_data)
    assert torch.allclose(tiles, torch.nn.functional.avg_pool2d(tiny_data.train_x, 2)[match])
    assert tiny_data.train_y[match].tolist() == torch.arange(tiny_data.num_classes).repeat_interleave(8).tolist()
    assert len(set(match.tolist())) == len(match)
    assert torch.equal(stored, mixed_init(tiny_data, 2, seed=0, factor=2))
    assert not torch.equal(stored, mixed_init(tiny_data, 2, seed=1, factor=2))


def test_mixed_init_reuses_a_small_classs_images_only_after_using_each_once(tiny_data):
    """ipc 8 x 4 tiles needs 32 images of a 24-image class: all 24 first, then 8 repeats."""
    match = _sources(_tiles(mixed_init(tiny_data, 8, seed=0, factor=2)), tiny_data)
    for c in range(tiny_data.num_classes):
        ids = match[c * 32:(c + 1) * 32].tolist()
        assert len(set(ids[:24])) == 24 and set(ids[24:]) <= set(ids[:24])
        assert tiny_data.train_y[ids].eq(c).all()


def test_idm_returns_a_decoded_set_whose_budget_is_the_ipc(tiny_data):
    syn = run(tiny_data, ipc=2, iterations=2)
    assert syn.decoder is not None and syn.decoder.name == "multiformation"
    assert len(syn) == tiny_data.num_classes * 2 * 4
    assert syn.labels.tolist() == torch.arange(tiny_data.num_classes).repeat_interleave(8).tolist()
    assert syn.storage_ipc(tiny_data.num_classes) == pytest.approx(2.0)
    assert torch.equal(syn.decoder.decode(), syn.images)
    plain = run(tiny_data, ipc=2, iterations=1, factor=1)
    assert plain.decoder is None and len(plain) == tiny_data.num_classes * 2


def test_idm_moves_the_images_and_is_seeded(tiny_data):
    start = run(tiny_data, iterations=0)
    after = run(tiny_data, iterations=3)
    assert not torch.equal(start.images, after.images)
    assert torch.equal(after.images, run(tiny_data, iterations=3).images)
    assert not torch.equal(after.images, run(tiny_data, iterations=3, seed=1).images)


def test_idm_resume_replays_the_model_queue(tiny_data):
    """The queue is not checkpointed: a run resumed at iteration 3 must replay its pushes and
    training and end with exactly the images of an uninterrupted run."""
    total, stop_at = 5, 3
    full = run(tiny_data, iterations=total)
    saved = {}

    def stop(p):
        if p.iteration == stop_at:
            saved.update(p.state())
            raise Stop

    with pytest.raises(Stop):
        run(tiny_data, iterations=total, callback=stop)
    seen = []
    resumed = run(tiny_data, iterations=total, resume=saved, callback=lambda p: seen.append(p.iteration))
    assert seen == [4, 5]
    assert torch.equal(resumed.images, full.images)


@pytest.mark.parametrize(("option", "value", "needle"), [
    ("factor", 0, "factor"), ("factor", 3, "does not divide"), ("ce_weight", -1.0, "ce_weight"),
    ("queue_start", 9, "queue_start"), ("train_nets", 0, "train_nets"),
])
def test_idm_bad_options_name_the_option(tiny_data, option, value, needle):
    with pytest.raises(UserError, match=needle):
        run(tiny_data, iterations=1, **{option: value})
