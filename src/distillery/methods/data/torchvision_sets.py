"""CIFAR-10/100, MNIST, Fashion-MNIST and SVHN in the directory layout torchvision downloads.

Download goes through torchvision (so ``download: true`` produces exactly torchvision's layout);
reading goes through formats.py (no checksum verification, see there). Each loader also accepts
``root`` pointing directly at the inner folder (e.g. .../cifar-10-batches-py), since users often
pass that.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from ..errors import UserError
from . import formats
from .source import DATASETS, DatasetSource, MissingDataError, RawSplits


def _resolve_dir(root: Path, subdir: str, probe: str) -> Path:
    """root/subdir (torchvision's layout), or root itself when the user pointed at the inner folder."""
    canonical = root / subdir
    if canonical.is_dir():
        return canonical
    if (root / probe).exists() or (root / f"{probe}.gz").exists():
        return root
    return canonical


def _require(path: Path, expected: str) -> str:
    if not path.is_file():
        raise MissingDataError(path, expected)
    return str(path)


def _torchvision_download(name: str, root: Path, calls: list[dict]) -> None:
    """Run torchvision's downloader; it verifies checksums and extracts into root."""
    import torchvision.datasets as tvd  # deferred: importing torchvision costs ~1 s

    cls = getattr(tvd, name)
    try:
        for kwargs in calls:
            cls(str(root), download=True, **kwargs)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; torchvision raises RuntimeError on bad md5
        raise UserError(
            f"downloading {name} into {root} failed ({err}); check the internet connection, or download "
            f"the files yourself and pass --data-root PATH"
        ) from None


class _Cifar(DatasetSource):
    can_download = True
    subdir: ClassVar[str]
    train_files: ClassVar[tuple[str, ...]]
    test_file: ClassVar[str]
    meta_file: ClassVar[str]
    names_key: ClassVar[str]
    label_key: ClassVar[str]
    torchvision_name: ClassVar[str]

    def locate(self, root: Path | None) -> list[str]:
        assert root is not None
        folder = _resolve_dir(root, self.subdir, self.meta_file)
        expected = f"the {self.torchvision_name} python-version files: {', '.join((*self.train_files, self.test_file, self.meta_file))}"
        return [_require(folder / f, expected) for f in (*self.train_files, self.test_file, self.meta_file)]

    def decode(self, root: Path | None, files: list[str], resize: int | None) -> RawSplits:
        *train_paths, test_path, meta_path = map(Path, files)
        train = [formats.read_cifar_batch(p, self.label_key) for p in train_paths]
        test_x, test_y = formats.read_cifar_batch(test_path, self.label_key)
        classes = formats.read_cifar_names(meta_path, self.names_key)
        return RawSplits(
            torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), test_x, test_y, classes
        )

    def download(self, root: Path) -> None:
        _torchvision_download(self.torchvision_name, root, [{"train": True}, {"train": False}])


@DATASETS.register("cifar10")
class Cifar10(_Cifar):
    layout = "<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}"
    subdir = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_file, meta_file = "test_batch", "batches.meta"
    names_key, label_key = "label_names", "labels"
    torchvision_name = "CIFAR10"


@DATASETS.register("cifar100")
class Cifar100(_Cifar):
    layout = "<root>/cifar-100-python/{train, test, meta}"
    subdir = "cifar-100-python"
    train_files = ("train",)
    test_file, meta_file = "test", "meta"
    names_key, label_key = "fine_label_names", "fine_labels"
    torchvision_name = "CIFAR100"


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class _Mnist(DatasetSource):
    can_download = True
    torchvision_name: ClassVar[str]
    classes: ClassVar[tuple[str, ...]]

    def locate(self, root: Path | None) -> list[str]:
        assert root is not None
        folder = _resolve_dir(root, f"{self.torchvision_name}/raw", _MNIST_FILES[0])
        found = []
        for base in _MNIST_FILES:
            plain, gz = folder / base, folder / f"{base}.gz"
            if not (plain.is_file() or gz.is_file()):
                raise MissingDataError(plain, f"the {self.torchvision_name} idx files {', '.join(_MNIST_FILES)} (plain or .gz)")
            found.append(str(plain if plain.is_file() else gz))
        return found

    def decode(self, root: Path | None, files: list[str], resize: int | None) -> RawSplits:
        train_x, train_y, test_x, test_y = map(Path, files)
        return RawSplits(
            formats.read_idx_images(train_x), formats.read_idx_labels(train_y),
            formats.read_idx_images(test_x), formats.read_idx_labels(test_y), self.classes,
        )

    def train_class_counts(self, root: Path | None, files: list[str]) -> list[int] | None:
        labels = formats.read_idx_labels(Path(files[1]))  # 60 KB: no images decoded
        return torch.bincount(labels, minlength=len(self.classes)).tolist()

    def download(self, root: Path) -> None:
        _torchvision_download(self.torchvision_name, root, [{"train": True}, {"train": False}])


@DATASETS.register("mnist")
class Mnist(_Mnist):
    layout = "<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
    torchvision_name = "MNIST"
    classes = tuple(str(d) for d in range(10))


@DATASETS.register("fashionmnist")
class FashionMnist(_Mnist):
    layout = "<root>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
    torchvision_name = "FashionMNIST"
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@DATASETS.register("svhn")
class Svhn(DatasetSource):
    """SVHN cropped digits (train split only; 'extra' is not used). torchvision keeps the .mat
    files directly in root."""

    can_download = True
    layout = "<root>/{train_32x32.mat, test_32x32.mat}"

    def locate(self, root: Path | None) -> list[str]:
        assert root is not None
        expected = "the SVHN cropped-digit files train_32x32.mat and test_32x32.mat"
        return [_require(root / "train_32x32.mat", expected), _require(root / "test_32x32.mat", expected)]

    def decode(self, root: Path | None, files: list[str], resize: int | None) -> RawSplits:
        (train_x, train_y), (test_x, test_y) = (formats.read_svhn_mat(Path(p)) for p in files)
        return RawSplits(train_x, train_y, test_x, test_y, tuple(str(d) for d in range(10)))

    def download(self, root: Path) -> None:
        _torchvision_download("SVHN", root, [{"split": "train"}, {"split": "test"}])
