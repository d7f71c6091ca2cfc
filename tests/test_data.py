"""Dataset loaders, cache, preprocessing and error messages, on small files written per test."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from distillery.methods.data import DATASETS, DatasetOptions, ImageData, dataset_fingerprint, dataset_names, load_dataset
from distillery.methods.data import cache as cache_mod
from distillery.methods.data import formats, imagefolder, torchvision_sets
from distillery.methods.errors import UserError
from distillery.methods.registry import UnknownNameError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may touch ~/.cache or ./data of the checkout."""
    monkeypatch.setenv("DISTILLERY_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


# ---------------------------------------------------------------- fixture writers


def _rng(seed: int = 0) -> np.random.RandomState:
    return np.random.RandomState(seed)


def _dump(path: Path, obj: dict, protocol: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def write_cifar10(root: Path, per_class: int = 2, test_per_class: int = 1) -> dict[str, np.ndarray]:
    """Real CIFAR-10 python layout; batches alternate pickle protocols 2 and 5 (bytes keys like the
    original Python 2 files in half of them)."""
    rng, folder = _rng(1), root / "cifar-10-batches-py"
    xs, ys = [], []
    for i in range(1, 6):
        y = np.repeat(np.arange(10), per_class)
        x = rng.randint(0, 256, size=(len(y), 3072), dtype=np.uint8)
        obj = {b"data": x, b"labels": y.tolist(), b"batch_label": b"x"} if i % 2 else {"data": x, "labels": y.tolist()}
        _dump(folder / f"data_batch_{i}", obj, 2 if i % 2 else 5)
        xs.append(x)
        ys.append(y)
    ty = np.repeat(np.arange(10), test_per_class)
    tx = rng.randint(0, 256, size=(len(ty), 3072), dtype=np.uint8)
    _dump(folder / "test_batch", {"data": tx, "labels": ty.tolist()}, 4)
    _dump(folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_NAMES]}, 2)
    return {"train_x": np.concatenate(xs).reshape(-1, 3, 32, 32), "train_y": np.concatenate(ys),
            "test_x": tx.reshape(-1, 3, 32, 32), "test_y": ty}


def write_cifar100(root: Path) -> None:
    rng, folder = _rng(2), root / "cifar-100-python"
    for split, n in (("train", 2), ("test", 1)):
        y = np.repeat(np.arange(100), n)
        _dump(folder / split, {"data": rng.randint(0, 256, size=(len(y), 3072), dtype=np.uint8),
                               "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist()}, 4)
    _dump(folder / "meta", {"fine_label_names": [f"class{i:03d}" for i in range(100)],
                            "coarse_label_names": [f"super{i}" for i in range(20)]}, 4)


def _idx_bytes(arr: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def write_mnist(root: Path, folder: str = "MNIST", gz: bool = True, size: int = 28) -> dict[str, np.ndarray]:
    """Train files gzip-compressed (as downloaded), test files plain (as extracted), when gz."""
    rng, raw = _rng(3), root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", 3), ("t10k", 2)):
        y = np.repeat(np.arange(10), n)
        x = rng.randint(0, 256, size=(len(y), size, size), dtype=np.uint8)
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            name = f"{prefix}-{kind}-ubyte"
            if gz and prefix == "train":
                with gzip.open(raw / f"{name}.gz", "wb") as f:
                    f.write(_idx_bytes(arr))
            else:
                (raw / name).write_bytes(_idx_bytes(arr))
        out[prefix] = x
    return out


def write_svhn(root: Path) -> dict[str, np.ndarray]:
    rng, out = _rng(4), {}
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 3), ("test", 2)):
        digits = np.repeat(np.arange(10), n)
        x = rng.randint(0, 256, size=(32, 32, 3, len(digits)), dtype=np.uint8)
        y = np.where(digits == 0, 10, digits).reshape(-1, 1).astype(np.uint8)
        scipy.io.savemat(str(root / f"{split}_32x32.mat"), {"X": x, "y": y})
        out[split] = x
    return out


def write_imagefolder(root: Path, classes=("cat", "dog", "emu"), n_train: int = 4, n_test: int = 2,
                      mode: str = "RGB", size: int = 8, fmt: str = "png") -> None:
    rng = _rng(5)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                shape = (size, size) if mode == "L" else (size, size, 3)
                arr = rng.randint(0, 256, size=shape, dtype=np.uint8)
                ext = fmt if fmt != "mixed" else ("png" if i % 2 else "jpg")
                Image.fromarray(arr, mode).save(root / split / c / f"{i}.{ext}")


def _opts(root: Path | None = None, **kw) -> DatasetOptions:
    return DatasetOptions(root=str(root) if root is not None else None, **kw)


def _assert_normalized(d: ImageData) -> None:
    m = d.train_x.mean(dim=(0, 2, 3))
    s = d.train_x.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(m, torch.zeros_like(m), atol=1e-4), m
    assert torch.allclose(s, torch.ones_like(s), atol=1e-4), s
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    assert len(d.mean) == len(d.std) == d.channels


# ---------------------------------------------------------------- torchvision formats


def test_registry_names() -> None:
    assert dataset_names() == ["cifar10", "cifar100", "digits", "fashionmnist", "imagefolder", "mhist", "mnist", "svhn"]
    assert "CIFAR10" in DATASETS
    with pytest.raises(UnknownNameError, match="unknown dataset 'nope'.*cifar10"):
        load_dataset("nope")


def test_cifar10_reads_torchvision_layout(tmp_path: Path) -> None:
    ref = write_cifar10(tmp_path / "c10")
    d = load_dataset("cifar10", _opts(tmp_path / "c10"))
    assert d.name == "cifar10" and d.classes == tuple(CIFAR10_NAMES)
    assert d.train_x.shape == (100, 3, 32, 32) and d.test_x.shape == (10, 3, 32, 32)
    assert d.train_y.tolist() == ref["train_y"].tolist() and d.test_y.tolist() == ref["test_y"].tolist()
    # pixels survive the round trip: denormalize gives back the stored bytes / 255
    expect = torch.from_numpy(ref["train_x"]).float() / 255
    assert torch.allclose(d.denormalize(d.train_x), expect, atol=1e-5)
    # statistics are this data's training split, not CIFAR-10's published constants
    np.testing.assert_allclose(d.mean, (ref["train_x"] / 255.0).mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(d.std, (ref["train_x"] / 255.0).std(axis=(0, 2, 3)), atol=1e-6)
    _assert_normalized(d)


def test_cifar10_root_may_point_at_inner_folder(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "c10")
    d = load_dataset("cifar10", _opts(tmp_path / "c10" / "cifar-10-batches-py"))
    assert d.train_x.shape[0] == 100


def test_cifar100(tmp_path: Path) -> None:
    write_cifar100(tmp_path / "c100")
    d = load_dataset("cifar100", _opts(tmp_path / "c100"))
    assert d.num_classes == 100 and d.classes[7] == "class007"
    assert d.train_x.shape == (200, 3, 32, 32) and d.test_x.shape == (100, 3, 32, 32)
    assert d.class_counts() == [2] * 100
    _assert_normalized(d)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_plain_and_gz(tmp_path: Path, gz: bool) -> None:
    ref = write_mnist(tmp_path / "m", gz=gz)
    d = load_dataset("mnist", _opts(tmp_path / "m"))
    assert d.image_shape == (1, 28, 28) and d.classes == tuple("0123456789")
    assert d.train_x.shape[0] == 30 and d.test_x.shape[0] == 20
    assert d.train_y.tolist() == np.repeat(np.arange(10), 3).tolist()
    assert torch.allclose(d.denormalize(d.test_x)[:, 0], torch.from_numpy(ref["t10k"]).float() / 255, atol=1e-5)
    _assert_normalized(d)


def test_fashionmnist(tmp_path: Path) -> None:
    write_mnist(tmp_path / "f", folder="FashionMNIST", gz=False)
    d = load_dataset("fashionmnist", _opts(tmp_path / "f"))
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"
    with pytest.raises(UserError, match=r"FashionMNIST/raw/train-images-idx3-ubyte"):
        load_dataset("fashionmnist", _opts(tmp_path / "empty"))


def test_svhn_mat(tmp_path: Path) -> None:
    ref = write_svhn(tmp_path / "s")
    d = load_dataset("svhn", _opts(tmp_path / "s"))
    assert d.train_x.shape == (30, 3, 32, 32) and d.test_x.shape == (20, 3, 32, 32)
    assert d.train_y.tolist() == np.repeat(np.arange(10), 3).tolist()  # label 10 became digit 0
    pixels = d.denormalize(d.train_x[5:6])[0] * 255  # image 5: X[h, w, c, 5] -> x[c, h, w]
    assert torch.allclose(pixels, torch.from_numpy(ref["train"][:, :, :, 5]).permute(2, 0, 1).float(), atol=1e-3)


def test_corrupt_and_malicious_files_name_the_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "c10")
    batch = tmp_path / "c10" / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"data_batch_3 is not a valid CIFAR pickle"):
        load_dataset("cifar10", _opts(tmp_path / "c10"))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    batch.write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(UserError, match=r"refusing to load global"):
        load_dataset("cifar10", _opts(tmp_path / "c10"))

    write_mnist(tmp_path / "m", gz=False)
    (tmp_path / "m" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte is not a valid idx file"):
        load_dataset("mnist", _opts(tmp_path / "m"))


def test_download_is_used_only_when_files_are_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_download(name: str, root: Path, kwargs: list[dict]) -> None:
        calls.append((name, root))
        write_cifar10(root)

    monkeypatch.setattr(torchvision_sets, "_torchvision_download", fake_download)
    d = load_dataset("cifar10", _opts(tmp_path / "new", download=True))
    assert calls == [("CIFAR10", tmp_path / "new")] and d.train_x.shape[0] == 100
    load_dataset("cifar10", _opts(tmp_path / "new", download=True))
    assert len(calls) == 1


# ---------------------------------------------------------------- imagefolder


def test_imagefolder_rgb_png_and_jpeg(tmp_path: Path) -> None:
    write_imagefolder(tmp_path / "f", fmt="mixed")
    d = load_dataset("imagefolder", _opts(tmp_path / "f"))
    assert d.classes == ("cat", "dog", "emu") and d.image_shape == (3, 8, 8)
    assert d.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and d.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    _assert_normalized(d)


def test_imagefolder_grayscale_stays_one_channel(tmp_path: Path) -> None:
    write_imagefolder(tmp_path / "g", mode="L")
    (tmp_path / "g" / "train" / "cat" / "notes.txt").write_text("ignored: not an image")
    d = load_dataset("imagefolder", _opts(tmp_path / "g"))
    assert d.image_shape == (1, 8, 8) and d.train_x.shape[0] == 12
    png = np.array(Image.open(tmp_path / "g" / "train" / "dog" / "0.png"))
    assert torch.allclose(d.denormalize(d.train_x[4:5])[0, 0] * 255, torch.from_numpy(png).float(), atol=1e-3)
    # one RGB image in the tree makes everything RGB (gray replicated into 3 channels)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8), "RGB").save(tmp_path / "g" / "test" / "emu" / "rgb.png")
    assert load_dataset("imagefolder", _opts(tmp_path / "g")).channels == 3


def test_named_dataset_read_from_an_imagefolder_tree(tmp_path: Path) -> None:
    """format: imagefolder keeps the dataset's name, so its per-dataset defaults apply (e.g. no
    DSA flip for mnist), and its identity differs from the torchvision files'."""
    from distillery.methods.aug import default_strategy

    write_imagefolder(tmp_path / "m", classes=tuple(str(d) for d in range(3)), mode="L", size=28)
    d = load_dataset("mnist", _opts(tmp_path / "m", format="imagefolder"))
    assert d.name == "mnist" and d.image_shape == (1, 28, 28) and d.classes == ("0", "1", "2") and d.train_x.shape[0] == 12
    assert "flip" not in default_strategy(d.name)
    assert dataset_fingerprint("mnist", _opts(tmp_path / "m", format="imagefolder")) != dataset_fingerprint("mnist", _opts(tmp_path / "m"))
    with pytest.raises(UserError, match="format"):
        DatasetOptions(format="zip")
    with pytest.raises(UserError, match=r"train"):  # the imagefolder layout's own message
        load_dataset("mnist", _opts(tmp_path / "nothing", format="imagefolder"))


def test_imagefolder_mixed_sizes_need_resize(tmp_path: Path) -> None:
    write_imagefolder(tmp_path / "f", size=8)
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(tmp_path / "f" / "train" / "cat" / "big.png")
    with pytest.raises(UserError, match=r"big\.png is 10x12.*resize"):
        load_dataset("imagefolder", _opts(tmp_path / "f"))
    d = load_dataset("imagefolder", _opts(tmp_path / "f", resize=6))
    assert d.image_shape == (3, 6, 6) and d.train_x.shape[0] == 13


def test_resize_torchvision_format(tmp_path: Path) -> None:
    write_mnist(tmp_path / "m", gz=False)
    d = load_dataset("mnist", _opts(tmp_path / "m", resize=14))
    assert d.image_shape == (1, 14, 14) and d.test_x.shape == (20, 1, 14, 14)
    _assert_normalized(d)  # statistics are computed after resizing


def test_imagefolder_errors_name_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        load_dataset("imagefolder", _opts(tmp_path / "nothing"))
    assert str(tmp_path / "nothing") in str(e.value) and "<root>/train/<class>/*" in str(e.value)
    assert "--data-root" in str(e.value) and "download" not in str(e.value)

    (tmp_path / "only_test" / "test" / "a").mkdir(parents=True)
    with pytest.raises(UserError) as e:
        load_dataset("imagefolder", _opts(tmp_path / "only_test"))
    assert f"{tmp_path / 'only_test' / 'train'} is missing" in str(e.value) and "<root>/train/<class>/*" in str(e.value)

    write_imagefolder(tmp_path / "f")
    (tmp_path / "f" / "test" / "emu").rename(tmp_path / "f" / "test" / "yak")
    with pytest.raises(UserError, match=r"same class folders.*missing in test: emu; not in train: yak"):
        load_dataset("imagefolder", _opts(tmp_path / "f"))

    write_imagefolder(tmp_path / "c")
    bad = tmp_path / "c" / "train" / "dog" / "1.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match=rf"cannot decode image {bad}.*delete or replace"):
        load_dataset("imagefolder", _opts(tmp_path / "c"))


def test_default_root_is_data_name_in_cwd(tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        load_dataset("cifar10")
    msg = str(e.value)
    assert str(tmp_path / "data" / "cifar10" / "cifar-10-batches-py" / "data_batch_1") in msg
    assert "./data/cifar10" in msg and "--data-root PATH" in msg and "download: true" in msg
    write_cifar10(tmp_path / "data" / "cifar10")
    assert load_dataset("cifar10").train_x.shape[0] == 100


# ---------------------------------------------------------------- cache


def _count_calls(monkeypatch: pytest.MonkeyPatch, module, name: str) -> list:
    calls: list = []
    original = getattr(module, name)

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


def test_cache_hit_skips_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_imagefolder(tmp_path / "f")
    calls = _count_calls(monkeypatch, imagefolder, "decode_image")
    first = load_dataset("imagefolder", _opts(tmp_path / "f"))
    assert len(calls) == 18
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.suffix == ".pt")
    assert len(entries) == 1 and entries[0].startswith("imagefolder-")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tmp")]  # atomic write left nothing
    second = load_dataset("imagefolder", _opts(tmp_path / "f"))
    assert len(calls) == 18
    assert torch.equal(first.train_x, second.train_x) and first.classes == second.classes

    # a changed file (new size/mtime) or a different resize is a different entry
    img = tmp_path / "f" / "test" / "dog" / "0.png"
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    load_dataset("imagefolder", _opts(tmp_path / "f"))
    assert len(calls) == 36
    load_dataset("imagefolder", _opts(tmp_path / "f", resize=4))
    assert len(calls) == 54


def test_cache_dir_option_and_corrupt_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar10(tmp_path / "c10")
    calls = _count_calls(monkeypatch, formats, "read_cifar_batch")
    load_dataset("cifar10", _opts(tmp_path / "c10", cache_dir=str(tmp_path / "mycache")))
    (entry,) = (tmp_path / "mycache").glob("cifar10-*.pt")
    assert len(calls) == 6 and not (tmp_path / "cache").exists()
    entry.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="unreadable dataset cache"):
        d = load_dataset("cifar10", _opts(tmp_path / "c10", cache_dir=str(tmp_path / "mycache")))
    assert len(calls) == 12 and d.train_x.shape[0] == 100
    torch.load(entry, weights_only=True)  # rebuilt and readable again


def test_unwritable_cache_only_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_imagefolder(tmp_path / "f")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(UserWarning, match="not writable"):
        d = load_dataset("imagefolder", _opts(tmp_path / "f", cache_dir=str(blocker / "sub")))
    assert d.train_x.shape[0] == 12


def test_cache_key_depends_on_files_not_content_reads(tmp_path: Path) -> None:
    write_imagefolder(tmp_path / "f")
    files = sorted(str(p) for p in (tmp_path / "f").rglob("*.png"))
    k1 = cache_mod.cache_key("imagefolder", tmp_path / "f", files, None)
    assert k1 == cache_mod.cache_key("imagefolder", tmp_path / "f", files, None)
    assert k1 != cache_mod.cache_key("imagefolder", tmp_path / "f", files[:-1], None)
    assert k1 != cache_mod.cache_key("imagefolder", tmp_path / "f", files, 16)


# ---------------------------------------------------------------- subsets, digits, options


def test_subset_per_class_is_seeded_and_keeps_full_stats(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "c10", per_class=2)  # 10 per class in train
    full = load_dataset("cifar10", _opts(tmp_path / "c10"))
    a = load_dataset("cifar10", _opts(tmp_path / "c10", subset_per_class=3, seed=1))
    b = load_dataset("cifar10", _opts(tmp_path / "c10", subset_per_class=3, seed=1))
    c = load_dataset("cifar10", _opts(tmp_path / "c10", subset_per_class=3, seed=2))
    assert a.class_counts() == [3] * 10 and torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.train_x, c.train_x)
    assert a.mean == full.mean and a.std == full.std  # statistics from the full training split
    assert torch.equal(a.test_x, full.test_x)
    bigger = load_dataset("cifar10", _opts(tmp_path / "c10", subset_per_class=50, seed=1))
    assert bigger.class_counts() == [10] * 10  # "at most"

    t1 = load_dataset("cifar10", _opts(tmp_path / "c10", test_subset_per_class=1, seed=1))
    t2 = load_dataset("cifar10", _opts(tmp_path / "c10", test_subset_per_class=1, seed=2))
    assert t1.test_y.tolist() == list(range(10)) and torch.equal(t1.test_x, t2.test_x)  # test subset ignores seed


def test_digits_split_is_fixed_and_stratified() -> None:
    d = load_dataset("digits")
    assert d.train_x.shape[0] + d.test_x.shape[0] == 1797
    # the default is 16x16 (native 8x8 is degenerate for ConvNet-3); resize: 8 keeps the native size
    assert d.image_shape == (1, 16, 16) and d.num_classes == 10 and d.classes == tuple("0123456789")
    assert load_dataset("digits", DatasetOptions(resize=8)).image_shape == (1, 8, 8)
    test_counts = torch.bincount(d.test_y, minlength=10)
    assert d.test_x.shape[0] == 539 and int(test_counts.min()) >= 52 and int(test_counts.max()) <= 55
    other = load_dataset("digits", DatasetOptions(seed=7, root="/ignored"))
    assert torch.equal(d.test_x, other.test_x) and torch.equal(d.train_y, other.train_y)
    _assert_normalized(d)
    assert load_dataset("digits", DatasetOptions(resize=16)).image_shape == (1, 16, 16)
    # the default resize is part of the resolved options, so the explicit and the default spelling are one dataset
    assert dataset_fingerprint("digits", DatasetOptions(resize=16)) == dataset_fingerprint("digits")


def test_default_dataset_with_default_network_is_not_degenerate() -> None:
    """Defaults are the product: the ConvNet's degenerate-geometry warning never fires for the
    default dataset with default options (it did at native 8x8)."""
    import warnings

    from distillery.methods.nets import build_network

    d = load_dataset("digits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_network("convnet", d.channels, d.image_size, d.num_classes, seed=0)
    with pytest.warns(UserWarning, match="resize"):
        native = load_dataset("digits", DatasetOptions(resize=8))
        build_network("convnet", native.channels, native.image_size, native.num_classes, seed=0)


@pytest.mark.parametrize("field,value", [
    ("subset_per_class", 0), ("test_subset_per_class", -1), ("resize", 0), ("resize", 2.5), ("seed", "x"),
])
def test_bad_options_name_the_option(field: str, value: object) -> None:
    with pytest.raises(UserError, match=field):
        DatasetOptions(**{field: value})


def test_dataset_fingerprint(tmp_path: Path) -> None:
    base = dataset_fingerprint("cifar10", _opts(tmp_path / "x"))  # no files needed
    assert base == dataset_fingerprint("CIFAR10", _opts(tmp_path / "x", download=True, cache_dir="/c"))
    assert base == dataset_fingerprint("cifar10", _opts(tmp_path / "x", seed=5))  # seed unused without a subset
    assert len({base,
                dataset_fingerprint("cifar10", _opts(tmp_path / "y")),
                dataset_fingerprint("cifar100", _opts(tmp_path / "x")),
                dataset_fingerprint("cifar10", _opts(tmp_path / "x", resize=16)),
                dataset_fingerprint("cifar10", _opts(tmp_path / "x", subset_per_class=10, seed=0)),
                dataset_fingerprint("cifar10", _opts(tmp_path / "x", subset_per_class=10, seed=1))}) == 6
    assert dataset_fingerprint("cifar10") == dataset_fingerprint("cifar10", _opts(tmp_path / "data" / "cifar10"))
    assert dataset_fingerprint("digits", DatasetOptions(root="/a")) == dataset_fingerprint("digits")
    with pytest.raises(UnknownNameError):
        dataset_fingerprint("nope")


def test_concurrent_misses_build_once(tmp_path: Path) -> None:
    """Two loaders racing on one key (Ray trials on a node): one decodes, the other waits and reads."""
    import threading
    import time

    from distillery.methods.data.source import RawSplits

    raw = RawSplits(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]),
                    torch.zeros(1, 1, 4, 4, dtype=torch.uint8), torch.tensor([1]), ("a", "b"))
    builds: list[int] = []

    def build() -> RawSplits:
        builds.append(1)
        time.sleep(0.2)
        return raw

    results: list[RawSplits] = []
    threads = [threading.Thread(target=lambda: results.append(cache_mod.load_or_build(tmp_path / "cc", "x", "k", build)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(results) == 2 and all(r.classes == ("a", "b") for r in results)


def test_resolve_options_pins_paths_for_workers(tmp_path: Path) -> None:
    from distillery.methods.data import resolve_options

    opts = resolve_options("cifar10", DatasetOptions(root="rel", cache_dir="c"))
    assert opts.root == str(tmp_path / "rel") and opts.cache_dir == str(tmp_path / "c")
    assert resolve_options("cifar10").root == str(tmp_path / "data" / "cifar10")
    assert resolve_options("digits", DatasetOptions(root="x")).root is None


# ---------------------------------------------------------------- MHIST (annotations CSV + images folder)


def write_mhist(root: Path, rows: list[tuple[str, str, str]], size: int = 12, extra_columns: bool = True) -> dict[str, np.ndarray]:
    """MHIST's public layout: annotations.csv and images/<name>.png (RGB); returns the pixels by name."""
    (root / "images").mkdir(parents=True)
    rng = _rng(3)
    header = ["Image Name", "Majority Vote Label", "Number of Annotators who Selected SSA (Out of 7)", "Partition"]
    lines = [",".join(header if extra_columns else [header[0], header[1], header[3]])]
    pixels = {}
    for name, label, part in rows:
        arr = rng.randint(0, 256, size=(size, size, 3)).astype(np.uint8)
        Image.fromarray(arr).save(root / "images" / name)
        pixels[name] = arr
        lines.append(",".join([name, label, "5" if label == "SSA" else "1", part] if extra_columns else [name, label, part]))
    (root / "annotations.csv").write_text("\n".join(lines) + "\n")
    return pixels


MHIST_ROWS = [("MHIST_aaa.png", "SSA", "train"), ("MHIST_aab.png", "HP", "train"), ("MHIST_aac.png", "HP", "test"),
              ("MHIST_aad.png", "HP", "train"), ("MHIST_aae.png", "SSA", "test"), ("MHIST_aaf.png", "SSA", "train")]


def test_mhist_reads_the_release_layout(tmp_path: Path) -> None:
    from distillery.methods.data import load_raw, train_class_counts

    pixels = write_mhist(tmp_path / "mhist", MHIST_ROWS)
    (tmp_path / "mhist" / "images" / "unlisted.png").write_bytes(b"not an image")  # not in the CSV: ignored
    raw = load_raw("mhist", _opts(tmp_path / "mhist"))
    assert raw.classes == ("hyperplastic polyp (HP)", "sessile serrated adenoma (SSA)")
    assert raw.train_x.shape == (4, 3, 12, 12) and raw.test_x.shape == (2, 3, 12, 12)
    assert raw.train_y.tolist() == [1, 0, 0, 1] and raw.test_y.tolist() == [0, 1]  # HP = 0, SSA = 1, CSV order
    assert torch.equal(raw.train_x[0], torch.from_numpy(pixels["MHIST_aaa.png"]).permute(2, 0, 1))
    assert torch.equal(raw.test_x[1], torch.from_numpy(pixels["MHIST_aae.png"]).permute(2, 0, 1))
    assert train_class_counts("mhist", _opts(tmp_path / "mhist")) == [2, 2]
    d = load_dataset("mhist", DatasetOptions(root=str(tmp_path / "mhist"), resize=8))
    assert d.num_classes == 2 and d.image_shape == (3, 8, 8)


def test_mhist_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    root = tmp_path / "m"
    with pytest.raises(UserError, match=r"annotations.csv is missing .*mhist expects <root>/annotations.csv") as err:
        load_dataset("mhist", _opts(root))
    assert "cannot be downloaded" not in str(err.value) and "download: true" not in str(err.value)
    write_mhist(root, MHIST_ROWS)
    (root / "images" / "MHIST_aac.png").unlink()
    with pytest.raises(UserError, match=r"MHIST_aac.png is missing \(an image named in annotations.csv; restore it or remove its row\)"):
        load_dataset("mhist", _opts(root))
    bad = tmp_path / "bad"
    write_mhist(bad, [("x.png", "TA", "train")])
    with pytest.raises(UserError, match=r"annotations.csv line 2: label 'TA' is not one of HP, SSA"):
        load_dataset("mhist", _opts(bad))
    (bad / "annotations.csv").write_text("Image Name,Majority Vote Label,Partition\nx.png,HP,train,\n")
    with pytest.raises(UserError, match=r"annotations.csv line 2: more fields than the header's 3"):
        load_dataset("mhist", _opts(bad))
    (bad / "annotations.csv").write_text("name,label\nx.png,HP\n")
    with pytest.raises(UserError, match=r"has no column\(s\) 'Image Name', 'Majority Vote Label', 'Partition'"):
        load_dataset("mhist", _opts(bad))
    lean = tmp_path / "lean"  # only the three columns the loader reads
    write_mhist(lean, MHIST_ROWS[:3], extra_columns=False)
    assert load_raw_counts(lean) == [1, 1]


def load_raw_counts(root: Path) -> list[int]:
    from distillery.methods.data import load_raw

    return torch.bincount(load_raw("mhist", _opts(root)).train_y, minlength=2).tolist()
