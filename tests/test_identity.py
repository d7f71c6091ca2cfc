"""A trial's identity carries what shapes its result beyond its options: a changed code default is a
new trial, never a reused result."""

from __future__ import annotations

from distillery.methods.nets import NETWORKS
from distillery.methods.nets.convnet import ConvNet
from distillery.orchestrator.config import validate_config
from distillery.orchestrator.grid import expand, identity
from tests.sweep_helpers import tiny_sweep


class _WiderByDefault(ConvNet):
    def __init__(self, channels, image_size, num_classes, width: int = 256, depth: int = 3, norm: str = "instancenorm",
                 act: str = "relu", pooling: str = "avgpool") -> None:
        super().__init__(channels, image_size, num_classes, width, depth, norm, act, pooling)


def test_a_changed_network_default_is_a_new_trial(tmp_path, monkeypatch):
    raw = tiny_sweep("ident", eval={"archs": ["convnet"], "models": 2, "epochs": 4})  # no width set: the default applies
    before = expand(validate_config(raw, base_dir=tmp_path))
    assert identity(before[0].spec)["arch_options"]["convnet"]["width"] == 128
    monkeypatch.setitem(NETWORKS._items, "convnet", _WiderByDefault)
    after = expand(validate_config(raw, base_dir=tmp_path))
    assert identity(after[0].spec)["arch_options"]["convnet"]["width"] == 256
    assert {p.trial_hash for p in before}.isdisjoint({p.trial_hash for p in after})  # the store is hash-addressed


def test_the_evaluation_rule_and_the_result_format_are_in_the_identity(tmp_path, monkeypatch):
    import distillery.orchestrator.grid as grid

    raw = tiny_sweep("ident2")
    before = expand(validate_config(raw, base_dir=tmp_path))[0]
    assert identity(before.spec)["eval"]["default_epochs"] == 300 and identity(before.spec)["result_format"] >= 1
    monkeypatch.setattr(grid, "DEFAULT_EPOCHS", 500)
    assert grid.trial_hash(before.spec) != before.trial_hash
    monkeypatch.undo()
    monkeypatch.setattr(grid, "RESULT_FORMAT", 99)
    assert grid.trial_hash(before.spec) != before.trial_hash
