import dataclasses

import pytest
import torch

from distillery.methods.distill.base import SyntheticSet
from distillery.methods.eval import EvalConfig, evaluate_synset
from tests.conftest import make_tiny_data


def _synset(data, ipc=6):
    idx = torch.cat([torch.nonzero(data.train_y == c).flatten()[:ipc] for c in range(data.num_classes)])
    return SyntheticSet(data.train_x[idx].clone(), data.train_y[idx].clone())


@pytest.mark.parametrize("dsa", [False, True])
def test_vectorized_equals_separate_trainings(dsa):
    data = make_tiny_data()
    syn = _synset(data)
    cfg = EvalConfig(epochs=6, batch_size=8, dsa=dsa, dsa_strategy="crop_scale" if dsa else None, vectorize=True)
    vec = evaluate_synset(syn, data, "convnet", 3, cfg, seed=1, net_options={"width": 8})
    seq = evaluate_synset(syn, data, "convnet", 3, dataclasses.replace(cfg, vectorize=False), seed=1, net_options={"width": 8})
    assert vec.vectorized and not seq.vectorized
    assert vec.per_class.shape == (3, data.num_classes)
    torch.testing.assert_close(vec.per_class, seq.per_class)
    torch.testing.assert_close(vec.overall, seq.overall)


def test_vectorized_final_weights_equal_separate(monkeypatch):
    """Stronger than equal accuracies: the trained parameters themselves agree."""
    from distillery.methods.eval import protocol

    captured = {}
    for name in ("_train_vectorized", "_train_sequential"):
        original = getattr(protocol, name)

        def wrapped(*a, _orig=original, _name=name, **k):
            models = _orig(*a, **k)
            captured[_name] = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in models]
            return models

        monkeypatch.setattr(protocol, name, wrapped)
    data = make_tiny_data()
    syn = _synset(data)
    cfg = EvalConfig(epochs=4, batch_size=8, dsa=False, vectorize=True)
    evaluate_synset(syn, data, "mlp", 2, cfg, seed=3, net_options={"width": 16})
    evaluate_synset(syn, data, "mlp", 2, dataclasses.replace(cfg, vectorize=False), seed=3, net_options={"width": 16})
    for a, b in zip(captured["_train_vectorized"], captured["_train_sequential"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_training_learns_and_models_differ():
    data = make_tiny_data()
    syn = _synset(data, ipc=20)
    res = evaluate_synset(syn, data, "convnet", 2, EvalConfig(epochs=20, batch_size=16, lr=0.05, dsa=False), seed=0, net_options={"width": 16})
    assert res.per_class.mean() > 0.8  # chance is 0.25
    assert 0 <= res.per_class.min() and res.per_class.max() <= 1


def test_same_seed_same_result_and_learned_lr_and_soft_labels():
    data = make_tiny_data()
    syn = _synset(data)
    cfg = EvalConfig(epochs=3, batch_size=8)
    a = evaluate_synset(syn, data, "convnet", 2, cfg, seed=5, net_options={"width": 8})
    b = evaluate_synset(syn, data, "convnet", 2, cfg, seed=5, net_options={"width": 8})
    torch.testing.assert_close(a.per_class, b.per_class)
    syn_lr = dataclasses.replace(syn, lr=0.05)
    assert evaluate_synset(syn_lr, data, "convnet", 1, cfg, seed=5, net_options={"width": 8}).lr == pytest.approx(0.05)
    soft = SyntheticSet(syn.images, torch.nn.functional.one_hot(syn.labels, data.num_classes).float())
    res = evaluate_synset(soft, data, "convnet", 1, cfg, seed=5, net_options={"width": 8})
    assert res.per_class.shape == (1, data.num_classes)


def test_batchnorm_networks_fall_back_to_sequential():
    data = make_tiny_data()
    res = evaluate_synset(_synset(data), data, "convnet_bn", 2, EvalConfig(epochs=2, batch_size=8), seed=0, net_options={"width": 8})
    assert not res.vectorized and res.per_class.shape == (2, data.num_classes)


def test_full_data_uses_full_data_epochs():
    data = make_tiny_data()
    full = SyntheticSet(data.train_x, data.train_y, full_data=True)
    res = evaluate_synset(full, data, "mlp", 1, EvalConfig(epochs=50, full_data_epochs=2, batch_size=16), seed=0)
    assert res.epochs == 2


def test_default_epochs_follow_the_sets_step_size_and_an_explicit_count_applies_to_all():
    """The protocol's epochs go with its lr: 300 at the protocol's 0.01, MTT's 1000 at a set's
    learned step size (~10x smaller), unless the config names a count or ignores the learned lr."""
    data = make_tiny_data()
    hard, learned = _synset(data), dataclasses.replace(_synset(data), lr=0.001)
    full = SyntheticSet(data.train_x, data.train_y, full_data=True)
    cfg = EvalConfig()
    assert (cfg.epochs_for(hard), cfg.epochs_for(learned), cfg.epochs_for(full)) == (300, 1000, cfg.full_data_epochs)
    assert (cfg.lr_for(hard), cfg.lr_for(learned)) == (0.01, 0.001)
    assert EvalConfig(epochs=7).epochs_for(learned) == 7 == EvalConfig(epochs=7).epochs_for(hard)
    assert EvalConfig(use_learned_lr=False).epochs_for(learned) == 300 and EvalConfig(use_learned_lr=False).lr_for(learned) == 0.01
    # the protocol trains what it reports: a tiny MLP, 1000 epochs at the learned step size
    res = evaluate_synset(learned, data, "mlp", 1, dataclasses.replace(cfg, dsa=False, batch_size=64), seed=0, net_options={"width": 4})
    assert (res.epochs, res.lr) == (1000, pytest.approx(0.001))


def test_vectorize_auto_uses_the_loop_on_cpu():
    data = make_tiny_data()
    res = evaluate_synset(_synset(data), data, "mlp", 2, EvalConfig(epochs=1, batch_size=8, dsa=False), seed=0, net_options={"width": 8})
    assert EvalConfig().vectorize is None and not res.vectorized


def _weights_after(syn, data, cfg):
    from distillery.methods.eval import protocol
    from distillery.methods.nets import build_network

    models = [build_network("convnet", data.channels, data.image_size, data.num_classes, seed=5, width=8)]
    train = protocol._train_vectorized if cfg.vectorize else protocol._train_sequential
    trained = train(models, syn.images, syn.labels, cfg.epochs, cfg.lr, cfg, None, 1, "convnet", None)
    return torch.cat([p.detach().flatten() for p in trained[0].parameters()])


@pytest.mark.parametrize("vectorize", [False, True])
def test_soft_labels_train_with_soft_target_cross_entropy(vectorize):
    """One-hot soft labels train exactly like hard labels; other soft labels train differently; the
    metrics still count hard test labels (one row per class, accuracies in [0, 1])."""
    data = make_tiny_data()
    hard = _synset(data)
    one_hot = SyntheticSet(hard.images, torch.nn.functional.one_hot(hard.labels, data.num_classes).float())
    smooth = SyntheticSet(hard.images, 0.6 * one_hot.labels + 0.4 / data.num_classes)
    assert one_hot.soft_labels and torch.equal(one_hot.hard_labels(), hard.labels)
    cfg = EvalConfig(epochs=3, batch_size=8, dsa=False, vectorize=vectorize)
    torch.testing.assert_close(_weights_after(one_hot, data, cfg), _weights_after(hard, data, cfg))
    assert not torch.allclose(_weights_after(smooth, data, cfg), _weights_after(hard, data, cfg))
    res = evaluate_synset(smooth, data, "convnet", 2, cfg, seed=1, net_options={"width": 8})
    assert res.per_class.shape == (2, data.num_classes) and bool(((res.per_class >= 0) & (res.per_class <= 1)).all())


def test_soft_labels_must_be_probabilities_and_the_summary_says_so(tmp_path):
    from distillery.methods.trial import TrialSpec, run_trial

    data = make_tiny_data()
    hard = _synset(data)
    with pytest.raises(ValueError, match=r"probability matrix .* softmax\(logits / temperature\)"):
        SyntheticSet(hard.images, torch.randn(len(hard), data.num_classes))
    soft = SyntheticSet(hard.images, torch.full((len(hard), data.num_classes), 1.0 / data.num_classes))
    restored = SyntheticSet.from_state_dict(soft.state_dict())  # artifacts keep the label matrix
    assert torch.equal(restored.labels, soft.labels)
    spec = TrialSpec(dataset="digits", method="random", ipc=6, n_models=1, eval=EvalConfig(epochs=1, dsa=False),
                     arch_options={"convnet": {"width": 8}})
    summary = run_trial(spec, device="cpu", data=data, synset=soft).summary()
    assert summary.soft_labels and summary.to_dict()["soft_labels"] is True
    assert not run_trial(spec, device="cpu", data=data, synset=hard).summary().soft_labels
