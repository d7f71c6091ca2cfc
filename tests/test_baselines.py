import pytest
import torch

from distillery.methods.distill import get_method
from distillery.methods.distill.baselines import herding_select
from distillery.methods.errors import UserError
from distillery.methods.registry import UnknownNameError


def test_random_is_seeded_per_class_real_images(tiny_data):
    m = get_method("random")
    a = m.distill(tiny_data, 3, m.make_config("tiny", 3), seed=1, device=torch.device("cpu"))
    b = m.distill(tiny_data, 3, m.make_config("tiny", 3), seed=1, device=torch.device("cpu"))
    c = m.distill(tiny_data, 3, m.make_config("tiny", 3), seed=2, device=torch.device("cpu"))
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for img, label in zip(a.images, a.labels):  # every image is a real training image of its class
        match = (tiny_data.train_x == img).flatten(1).all(1)
        assert match.any() and tiny_data.train_y[match][0] == label


def test_herding_selection_tracks_the_mean():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(200, 5, generator=g)
    sel = herding_select(feats, 10)
    assert len(set(sel.tolist())) == 10
    herd_err = (feats[sel].mean(0) - feats.mean(0)).norm()
    rand_err = torch.stack([(feats[torch.randperm(200, generator=g)[:10]].mean(0) - feats.mean(0)).norm() for _ in range(50)]).mean()
    assert herd_err < rand_err / 3


def test_herding_distill(tiny_data):
    m = get_method("herding")
    cfg = m.make_config("tiny", 2, {"embed_epochs": 1, "embed_width": 8})
    syn = m.distill(tiny_data, 2, cfg, seed=0, device=torch.device("cpu"))
    assert syn.images.shape == (8, 1, 8, 8)


def test_full_returns_whole_train_set(tiny_data):
    from distillery.methods.distill.baselines import FULL_DATA
    from distillery.methods.trial import TrialSpec

    syn = FULL_DATA.distill(tiny_data, None, None, seed=0, device=torch.device("cpu"))
    assert syn.full_data and len(syn) == len(tiny_data.train_x)
    # the baseline is a cell kind (ipc null), not a registered method: no method loop meets it
    with pytest.raises(UnknownNameError):
        get_method("full")
    assert TrialSpec(method="full", ipc=None).method_impl() is FULL_DATA
    for method, ipc in (("full", 10), ("random", None)):
        with pytest.raises(UserError, match="the full-data baseline is the cell with ipc null"):
            TrialSpec(method=method, ipc=ipc).validate()


def test_ipc_bounds_and_unknown_options(tiny_data):
    m = get_method("random")
    with pytest.raises(UserError, match="exceeds the 24 training images"):
        m.distill(tiny_data, 25, m.make_config("tiny", 25), seed=0, device=torch.device("cpu"))
    with pytest.raises(UserError, match="ipc must be >= 1"):
        m.distill(tiny_data, 0, m.make_config("tiny", 0), seed=0, device=torch.device("cpu"))
    with pytest.raises(UserError, match="no option 'lr_img'"):
        get_method("herding").make_config("tiny", 1, {"lr_img": 1})
    with pytest.raises(UnknownNameError, match="unknown method 'nope'"):
        get_method("nope")


def test_synthetic_set_round_trips_weights_only(tmp_path, tiny_data):
    m = get_method("random")
    syn = m.distill(tiny_data, 2, m.make_config("tiny", 2), seed=0, device=torch.device("cpu"))
    syn.meta["nested"] = {"a": (1, 2)}
    path = tmp_path / "syn.pt"
    syn.save(str(path))
    raw = torch.load(path, weights_only=True)
    assert set(raw) >= {"images", "labels", "lr", "meta"}
    back = type(syn).load(str(path))
    assert torch.equal(back.images, syn.images) and back.meta["nested"] == {"a": [1, 2]}
