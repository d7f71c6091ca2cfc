"""Parameterised synthetic sets: the multi-formation decoder and the storage budget a set records."""

from __future__ import annotations

import pytest
import torch

from distillery.analysis.load import _storage_ipc
from distillery.methods.distill.base import SyntheticSet
from distillery.methods.distill.decode import Decoder, multiformation, repeat_labels


def test_multiformation_splits_each_image_into_upsampled_tiles_in_order():
    stored = torch.zeros(2, 1, 4, 4)
    # image 0: four constant quadrants 1, 2 (top row), 3, 4 (bottom row); image 1: constant 9
    stored[0, 0, :2, :2], stored[0, 0, :2, 2:], stored[0, 0, 2:, :2], stored[0, 0, 2:, 2:] = 1, 2, 3, 4
    stored[1] = 9
    out = multiformation(stored, 2)
    assert out.shape == (8, 1, 4, 4)
    for row, value in enumerate([1, 2, 3, 4, 9, 9, 9, 9]):
        assert torch.allclose(out[row], torch.full((1, 4, 4), float(value)))
    assert multiformation(stored, 1) is stored


def test_multiformation_rejects_a_factor_that_does_not_divide_the_size():
    with pytest.raises(ValueError, match="does not divide"):
        multiformation(torch.zeros(1, 1, 5, 5), 2)


def test_multiformation_is_differentiable():
    stored = torch.randn(1, 3, 8, 8, requires_grad=True, generator=torch.Generator().manual_seed(0))
    multiformation(stored, 2).sum().backward()
    assert stored.grad is not None and bool((stored.grad != 0).all())


def test_a_plain_set_stores_its_images():
    s = SyntheticSet(torch.zeros(20, 1, 8, 8), torch.arange(10).repeat_interleave(2))
    assert s.stored_floats == 20 * 64
    assert s.storage_ipc(10) == 2.0


def test_a_decoded_set_counts_what_it_stores_and_round_trips(tmp_path):
    stored = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    dec = Decoder("multiformation", {"images": stored}, {"factor": 2})
    labels = repeat_labels(torch.arange(10), 4)
    s = SyntheticSet(dec.decode(), labels, decoder=dec)
    assert len(s) == 40 and s.storage_ipc(10) == 1.0  # 4 decoded images per class, 1 stored
    s.save(str(tmp_path / "set.pt"))
    back = SyntheticSet.load(str(tmp_path / "set.pt"))  # weights_only loading
    assert back.decoder is not None and back.decoder.options == {"factor": 2}
    assert torch.equal(back.decoder.params["images"], stored)
    assert torch.allclose(back.decoder.decode(), back.images)
    assert back.storage_ipc(10) == 1.0


def test_analysis_reads_the_storage_budget_and_falls_back_to_ipc():
    assert _storage_ipc({"ipc": 10, "storage_ipc": 2.5}) == 2.5
    assert _storage_ipc({"ipc": 10, "storage_ipc": None}) == 10.0
    assert _storage_ipc({"ipc": 10}) == 10.0
