"""DSA augmentation and ZCA whitening (methods/aug)."""

from __future__ import annotations

import math

import pytest
import torch

from distillery.methods.aug import (
    DEFAULT_STRATEGY,
    FAMILIES,
    FLIP_FREE_STRATEGY,
    ZCA,
    AugDraw,
    DiffAug,
    DSAParams,
    apply_transforms,
    default_strategy,
    fit_zca,
    parse_strategy,
    to_pixels,
)
from distillery.methods.data.base import ImageData
from distillery.methods.errors import UserError


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int, seed: int = 0, c: int = 3, h: int = 16, w: int = 16) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=gen(1000 + seed))


# ------------------------------------------------------------------------------------------- DSA


def test_params_defaults_are_the_published_ones() -> None:
    p = DSAParams()
    assert (p.brightness, p.saturation, p.contrast) == (1.0, 2.0, 0.5)
    assert (p.crop_pad, p.cutout, p.flip_prob, p.scale, p.rotate) == (0.125, 0.5, 0.5, 1.2, 15.0)
    with pytest.raises(UserError):
        DSAParams(scale=0.9)
    with pytest.raises(UserError):
        DSAParams(flip_prob=1.5)


def test_strategy_validation() -> None:
    assert parse_strategy(DEFAULT_STRATEGY) == FAMILIES
    assert parse_strategy("none") == parse_strategy("") == parse_strategy(None) == ()
    with pytest.raises(UserError) as e:
        DiffAug("color_crop_blur")
    msg = str(e.value)
    assert "'blur'" in msg and all(f in msg for f in FAMILIES)
    with pytest.raises(UserError):
        DiffAug("crop_crop")
    with pytest.raises(UserError):
        DiffAug(mode="X")


def test_default_strategy_drops_flip_for_digits_only() -> None:
    for name in ("mnist", "MNIST", "svhn", "SVHN", "digits", "usps"):
        assert default_strategy(name) == FLIP_FREE_STRATEGY
        assert "flip" not in parse_strategy(default_strategy(name))
    for name in ("cifar10", "CIFAR100", "fashionmnist", "FashionMNIST", "tinyimagenet"):
        assert default_strategy(name) == DEFAULT_STRATEGY


def test_identity_strategy() -> None:
    x = images(4)
    for strategy in ("none", ""):
        aug = DiffAug(strategy)
        assert not aug.enabled
        assert torch.equal(aug(x, gen(0)), x)
        assert all(torch.equal(a, b) for a, b in zip(aug.siamese(x, x[:2], generator=gen(0)), (x, x[:2])))


@pytest.mark.parametrize("strategy", [DEFAULT_STRATEGY, *FAMILIES])
def test_shapes_dtypes_preserved(strategy: str) -> None:
    aug = DiffAug(strategy)
    for dtype in (torch.float32, torch.float64):
        x = images(6).to(dtype)
        for seed in range(4):
            y = aug(x, gen(seed))
            assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
            assert torch.isfinite(y).all()
    x1 = torch.randn(3, 1, 28, 28, generator=gen(5))  # 1-channel, non-32 size
    assert aug(x1, gen(0)).shape == x1.shape


def test_same_seed_same_output_different_seed_different_output() -> None:
    aug = DiffAug()
    x = images(8)
    for seed in range(5):
        assert torch.equal(aug(x, gen(seed)), aug(x, gen(seed)))
    outs = [aug(x, gen(seed)) for seed in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    # per family too: two seeds give different parameters
    for family in FAMILIES:
        a, b = DiffAug(family)(x, gen(1)), DiffAug(family)(x, gen(2))
        assert not torch.equal(a, b), family


def test_siamese_same_transform_for_batches_of_different_sizes() -> None:
    aug = DiffAug()
    real = images(10)
    syn = real[:3].clone()  # the same images in a smaller batch
    for seed in range(12):  # covers every family in S mode
        r, s = aug.siamese(real, syn, generator=gen(seed))
        assert r.shape == real.shape and s.shape == syn.shape
        torch.testing.assert_close(r[:3], s, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_siamese_draw_is_shared_by_all_samples(family: str) -> None:
    aug = DiffAug(family)
    one = images(1)
    batch = one.expand(7, -1, -1, -1).contiguous()  # 7 copies of one image
    for seed in range(3):
        (y,) = aug.siamese(batch, generator=gen(seed))
        assert torch.equal(y, y[:1].expand_as(y)), family  # every copy transformed identically
        draw = aug.sample(50, gen(seed), siamese=True)
        assert draw.n == 1 and all(v.shape[0] == 1 for s in draw.steps for v in s.values.values())
    # without siamese, copies get different per-sample parameters
    y = aug(batch, gen(0))
    assert any(not torch.equal(y[0], y[i]) for i in range(1, 7)), family


def test_siamese_equals_apply_of_one_draw_and_matches_generator_stream() -> None:
    aug = DiffAug()
    a, b = images(5), images(9, seed=1)
    ya, yb = aug.siamese(a, b, generator=gen(3))
    draw = aug.sample(1, gen(3), siamese=True)
    assert torch.equal(ya, aug.apply(a, draw)) and torch.equal(yb, aug.apply(b, draw))
    with pytest.raises(ValueError):
        aug.apply(a, aug.sample(4, gen(0)))  # a per-sample draw must match the batch size


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_flows_through_each_family(family: str) -> None:
    aug = DiffAug(family)
    w = torch.randn(4, 3, 16, 16, generator=gen(9))
    for seed in range(3):
        x = images(4).requires_grad_(True)
        y = aug(x, gen(seed))
        (y * w).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        assert x.grad.abs().sum() > 0, family
        assert (x.grad.flatten(1).abs().sum(1) > 0).all(), family  # every sample gets gradient
        # siamese path too
        x2 = images(2, seed=3).requires_grad_(True)
        (y2,) = aug.siamese(x2, generator=gen(seed))
        y2.square().sum().backward()
        assert torch.isfinite(x2.grad).all() and x2.grad.abs().sum() > 0, family


def test_flip_free_strategy_never_flips() -> None:
    # an asymmetric image: a ramp brighter on the right. Crop/cutout/scale/rotate/colour keep the
    # left/right ordering of mean brightness; a flip reverses it.
    ramp = torch.linspace(-1.0, 1.0, 16).view(1, 1, 1, 16).expand(1, 3, 16, 16)
    x = ramp.expand(32, -1, -1, -1).contiguous()

    def right_brighter(y: torch.Tensor) -> torch.Tensor:
        # compare the outer columns (cutout zeroes at most half of them, crop shifts by <= 2 px)
        left, right = y[..., :4].mean(dim=(1, 2, 3)), y[..., -4:].mean(dim=(1, 2, 3))
        return right >= left

    aug = DiffAug(FLIP_FREE_STRATEGY, mode="M")  # every family each call
    for seed in range(10):
        assert right_brighter(aug(x, gen(seed))).all()
    flip = DiffAug("flip")
    flipped = [(~right_brighter(flip(x, gen(s)))).float().mean().item() for s in range(5)]
    assert 0.2 < sum(flipped) / len(flipped) < 0.8  # the checker does detect flips (prob 0.5)


def test_family_choice_covers_all_families() -> None:
    aug = DiffAug()
    g = gen(123)
    counts = {f: 0 for f in FAMILIES}
    n = 1200
    for _ in range(n):
        (family,) = aug.sample(2, g).families
        counts[family] += 1
    expected = n / len(FAMILIES)
    for f, c in counts.items():
        assert abs(c - expected) < 5 * math.sqrt(expected), (f, counts)


def test_mode_m_applies_every_family_in_order() -> None:
    aug = DiffAug("color_crop_flip", mode="M")
    draw = aug.sample(3, gen(0))
    assert draw.families == ("color", "crop", "flip")
    x = images(3)
    assert aug.apply(x, draw).shape == x.shape


def test_parameters_within_published_ranges() -> None:
    p = DSAParams()
    aug = DiffAug(DEFAULT_STRATEGY, mode="M")
    draw = aug.sample(4000, gen(4))
    v = {k: t for s in draw.steps for k, t in s.values.items()}
    assert v["sx"].min() >= 1 / p.scale and v["sx"].max() <= p.scale
    assert v["angle"].abs().max() <= math.radians(p.rotate) + 1e-6
    assert 0.4 < v["flip"].float().mean() < 0.6
    # crop offsets: integers in [-4, 4] on 32 px, roughly uniform
    x = torch.zeros(4000, 1, 32, 32)
    x[:, :, 16, 16] = 1.0  # one bright pixel; crop moves it by the drawn offset
    assert draw.steps[1].family == "crop"
    y = DiffAug("crop").apply(x, AugDraw((draw.steps[1],), 4000, False))
    pos = y.flatten(1).argmax(1)
    dy, dx = 16 - pos // 32, 16 - pos % 32
    assert dy.min() == -4 and dy.max() == 4 and dx.min() == -4 and dx.max() == 4
    assert torch.bincount(dy + 4).min() > 300  # 9 values, 4000 draws: ~444 each


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_with_cuda_images() -> None:
    aug = DiffAug()
    x = images(6)
    for seed in range(8):
        cpu = aug(x, gen(seed))
        cuda = aug(x.cuda(), gen(seed))  # same CPU generator stream -> same draw
        assert cuda.device.type == "cuda"
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-5, atol=1e-5)
        g = torch.Generator(device="cuda").manual_seed(seed)
        r, s = aug.siamese(x.cuda(), x[:2].cuda(), generator=g)
        torch.testing.assert_close(r[:2], s)


# ------------------------------------------------------------------------------------------- ZCA


def correlated(n: int, c: int = 3, h: int = 4, w: int = 4, seed: int = 0) -> torch.Tensor:
    d = c * h * w
    g = gen(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    scales = torch.logspace(-1.5, 0.5, d, dtype=torch.float64)
    return ((z * scales) @ mix + 0.3).reshape(n, c, h, w).float()


def kornia_style_target(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Covariance of kornia-whitened data, from its own formula (unbiased cov, SVD)."""
    flat = x.double().flatten(1)
    xc = flat - flat.mean(0, keepdim=True)
    cov = xc.T @ xc / (flat.shape[0] - 1)
    u, s, _ = torch.linalg.svd(cov)
    t = u @ torch.diag(torch.rsqrt(s + eps)) @ u.T
    return t, u @ torch.diag(s / (s + eps)) @ u.T


def test_zca_covariance_matches_kornia_convention() -> None:
    x = correlated(3000)
    for eps in (0.1, 1e-2):
        zca = ZCA.fit(x, eps=eps)
        t_ref, target = kornia_style_target(x, eps)
        torch.testing.assert_close(zca.matrix, t_ref, rtol=1e-6, atol=1e-6)
        y = zca.transform(x.double()).flatten(1)
        assert y.mean(0).abs().max() < 1e-8  # centred: the mean is subtracted at transform time
        cov = y.T @ y / (y.shape[0] - 1)
        torch.testing.assert_close(cov, target, rtol=0, atol=1e-8)
    # eps -> 0: whitened
    zca = ZCA.fit(x, eps=1e-12)
    y = zca.transform(x.double()).flatten(1)
    cov = y.T @ y / (y.shape[0] - 1)
    torch.testing.assert_close(cov, torch.eye(cov.shape[0], dtype=cov.dtype), rtol=0, atol=1e-5)


def test_zca_inverse_and_chunking() -> None:
    x = correlated(500, seed=1)
    zca = ZCA.fit(x, eps=0.1, chunk_size=64)
    zca_one = ZCA.fit(x, eps=0.1, chunk_size=10_000)
    torch.testing.assert_close(zca.matrix, zca_one.matrix, rtol=1e-10, atol=1e-10)
    y = zca.transform(x, chunk_size=37)
    assert y.shape == x.shape and y.dtype == torch.float32
    torch.testing.assert_close(y, zca.transform(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(zca.inverse(y), x, rtol=1e-4, atol=1e-4)
    other = correlated(50, seed=2)  # inverse also holds off the fitted set
    torch.testing.assert_close(zca.inverse(zca.transform(other.double())), other.double())
    # out= path (in place) equals the functional path
    buf = x.clone()
    zca.transform(buf, out=buf, chunk_size=64)
    torch.testing.assert_close(buf, y, rtol=1e-5, atol=1e-5)
    # differentiable w.r.t. the input
    xi = x[:4].clone().requires_grad_(True)
    zca.transform(xi).square().sum().backward()
    assert torch.isfinite(xi.grad).all() and xi.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        zca.transform(torch.zeros(2, 3, 5, 5))
    with pytest.raises(UserError):
        ZCA.fit(x[:1])


def make_data(n_train: int = 400, n_test: int = 60) -> ImageData:
    pix_train = correlated(n_train, seed=3).clamp(0, 1)
    pix_test = correlated(n_test, seed=4).clamp(0, 1)
    mean, std = (0.49, 0.48, 0.45), (0.20, 0.21, 0.19)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return ImageData(
        name="toy",
        train_x=(pix_train - m) / s,
        train_y=torch.arange(n_train) % 10,
        test_x=(pix_test - m) / s,
        test_y=torch.arange(n_test) % 10,
        classes=tuple(str(i) for i in range(10)),
        mean=mean,
        std=std,
    )


def test_apply_transforms_zca() -> None:
    data = make_data()
    out = apply_transforms(data, ("zca",))
    assert out.transform == ("zca",) and data.transform == ()
    assert torch.equal(out.train_y, data.train_y) and torch.equal(out.test_y, data.test_y)
    assert out.classes == data.classes and out.mean == data.mean and out.std == data.std
    assert out.train_x.shape == data.train_x.shape and out.train_x.dtype == torch.float32
    assert out.test_x.shape == data.test_x.shape
    # MTT fits on un-normalized pixels with eps 0.1
    zca = fit_zca(data)
    assert zca.eps == 0.1
    ref = ZCA.fit(to_pixels(data, data.train_x), eps=0.1)
    torch.testing.assert_close(zca.matrix, ref.matrix)
    torch.testing.assert_close(out.train_x, ref.transform(to_pixels(data, data.train_x)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.test_x, ref.transform(to_pixels(data, data.test_x)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(zca.inverse(out.test_x), to_pixels(data, data.test_x), rtol=1e-4, atol=1e-4)
    assert apply_transforms(data, ()) is data
    with pytest.raises(UserError) as e:
        apply_transforms(data, ("pca",))
    assert "'pca'" in str(e.value) and "zca" in str(e.value)
    with pytest.raises(UserError):
        apply_transforms(out, ("zca",))
    with pytest.raises(UserError):
        apply_transforms(data, ("zca", "zca"))
