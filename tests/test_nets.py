import pytest
import torch

from distillery.methods.errors import UserError
from distillery.methods.nets import NETWORKS, FeatureClassifier, build_network, count_parameters
from distillery.methods.registry import UnknownNameError


@pytest.mark.parametrize(
    "arch,channels,size,classes,expected",
    [
        ("convnet", 3, 32, 10, 320_010),
        ("convnet", 3, 32, 100, 504_420),
        ("convnet", 1, 28, 10, 317_706),
        ("alexnet", 3, 32, 10, 1_872_202),
        ("alexnet", 3, 32, 100, 2_148_772),
    ],
)
def test_published_parameter_counts(arch, channels, size, classes, expected):
    assert count_parameters(build_network(arch, channels, size, classes)) == expected


@pytest.mark.parametrize("arch", ["convnet", "convnet_bn", "alexnet", "alexnet_bn", "resnet18", "mlp"])
@pytest.mark.parametrize("shape", [(3, 32), (1, 28), (1, 8)])
def test_every_arch_runs_on_every_input_shape(arch, shape):
    channels, size = shape
    model = build_network(arch, channels, size, 10, seed=0)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10)
    assert model.embed(torch.randn(2, channels, size, size)).ndim == 2


def test_convnet_options_change_structure():
    narrow = build_network("convnet", 3, 32, 10, width=32, depth=2, norm="batchnorm")
    assert count_parameters(narrow) < 320_010
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in narrow.modules())
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in narrow.modules())


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = build_network("convnet", 1, 8, 10, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = build_network("convnet", 1, 8, 10, seed=7)
    c = build_network("convnet", 1, 8, 10, seed=8)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()) if pa.numel() > 100)


def test_unknown_arch_and_option_are_user_errors():
    with pytest.raises(UnknownNameError, match="convnet"):
        build_network("vgg99", 3, 32, 10)
    with pytest.raises(UserError, match="alexnet"):
        build_network("alexnet", 3, 32, 10, depth=3)


def test_alexnet_width_scales_every_layer_and_defaults_to_the_papers():
    """The laptop study narrows AlexNet; width 128 must stay the papers' network."""
    convs = [m for m in build_network("alexnet", 3, 32, 10, width=32).modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 48, 64, 48, 48]
    assert count_parameters(build_network("alexnet", 3, 32, 10, width=128)) == 1_872_202
    with pytest.raises(UserError, match="alexnet option width"):
        build_network("alexnet", 3, 32, 10, width=33)


@pytest.mark.parametrize("arch", NETWORKS.names())
def test_every_registered_network_is_features_then_one_linear_head(arch):
    """DM, DataDAM, CAFE and herding use ``embed``; it must be exactly what the head classifies."""
    model = build_network(arch, 1, 28, 10, seed=0)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    features = model.embed(x)
    assert isinstance(model, FeatureClassifier)
    assert features.shape == (3, model.classifier.in_features)
    assert torch.allclose(model(x), model.classifier(features))


@pytest.mark.parametrize("arch", ["convnet", "alexnet"])
def test_bn_variant_defaults_to_batchnorm_and_an_explicit_norm_wins(arch):
    def norms(model):
        return {type(m).__name__ for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))}

    assert norms(build_network(f"{arch}_bn", 3, 32, 10)) == {"BatchNorm2d"}
    assert "BatchNorm2d" not in norms(build_network(arch, 3, 32, 10))
    assert norms(build_network(f"{arch}_bn", 3, 32, 10, norm="none")) == set()
