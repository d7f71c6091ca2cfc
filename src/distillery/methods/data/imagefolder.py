"""Any ``<root>/{train,test}/<class>/<image>`` tree, decoded with PIL.

This is how datasets without a torchvision reader (and the real sets on machines without
internet) get in. Class order is the sorted train folder names, as in torchvision's ImageFolder,
so labels agree with models trained there.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from .source import DATASETS, DatasetSource, MissingDataError, RawSplits

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp", ".gif"})
GRAY_MODES = frozenset({"1", "L", "LA"})
LAYOUT = "<root>/train/<class>/* and <root>/test/<class>/*"
_READ_THREADS = 8
_READ_CHUNK = 128  # files per read task: per-task executor overhead is ~60 us, a warm small-file read ~10 us


def _visible_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _images_in(folder: Path) -> list[str]:
    """Image files by extension; other files (README, .DS_Store, Thumbs.db) are ignored."""
    base = str(folder)
    names = sorted(
        e.name for e in os.scandir(folder)
        if e.is_file() and not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
    )
    return [os.path.join(base, n) for n in names]


def decode_image(path: str, size: int | None, data: bytes | None = None) -> np.ndarray:
    """uint8 [H, W] for grayscale files, [H, W, 3] otherwise; resized with PIL's antialiased
    bilinear filter when ``size`` is given (needed when the tree mixes image sizes).
    ``data`` is the file's content when already read (see _decode_all)."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            im = im.convert("L" if im.mode in GRAY_MODES else "RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"dataset 'imagefolder': cannot decode image {path} ({err}); delete or replace the file") from None


def _read_all(paths: list[str]) -> list[bytes]:
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append(f.read())
    return out


def _decode_all(paths: list[str], size: int | None) -> list[np.ndarray]:
    """Reads files in a few threads, decodes in this one. File reads release the GIL and dominate
    a first (cold page cache) load of 60k small files; decoding small images is mostly
    Python-level PIL code holding the GIL, where a thread pool measured 1.4x slower than a loop.
    The result is cached, so this runs once per dataset and machine."""
    if len(paths) < 2 * _READ_CHUNK:
        return [decode_image(p, size) for p in paths]
    chunks = [paths[i:i + _READ_CHUNK] for i in range(0, len(paths), _READ_CHUNK)]
    out: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=_READ_THREADS) as pool:
        for chunk, contents in zip(chunks, pool.map(_read_all, chunks)):  # in order; holds <= the tree's bytes
            out.extend(decode_image(p, size, data) for p, data in zip(chunk, contents))
    return out


def _stack(arrays: list[np.ndarray], paths: list[str], gray: bool) -> torch.Tensor:
    if not gray:
        arrays = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    first = arrays[0].shape
    for a, p in zip(arrays, paths):
        if a.shape[:2] != first[:2]:
            raise UserError(
                f"dataset 'imagefolder': images differ in size ({paths[0]} is {first[1]}x{first[0]}, {p} is "
                f"{a.shape[1]}x{a.shape[0]}); set resize: N to bring them all to N x N"
            )
    x = np.stack(arrays)
    x = x[:, None] if gray else x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x))


@DATASETS.register("imagefolder")
class ImageFolder(DatasetSource):
    layout = LAYOUT

    def locate(self, root: Path | None) -> list[str]:
        assert root is not None
        for folder, what in ((root, "the dataset folder"), (root / "train", "the training split's class folders"),
                             (root / "test", "the test split's class folders")):
            if not folder.is_dir():
                raise MissingDataError(folder, f"{what}; imagefolder expects {LAYOUT}")
        train_classes = _visible_dirs(root / "train")
        if not train_classes:
            raise UserError(f"dataset 'imagefolder': {root / 'train'} has no class folders; imagefolder expects {LAYOUT}")
        test_classes = _visible_dirs(root / "test")
        if test_classes != train_classes:
            missing = sorted(set(train_classes) - set(test_classes))
            extra = sorted(set(test_classes) - set(train_classes))
            raise UserError(
                f"dataset 'imagefolder': {root / 'test'} must have the same class folders as {root / 'train'}"
                + (f"; missing in test: {', '.join(missing)}" if missing else "")
                + (f"; not in train: {', '.join(extra)}" if extra else "")
                + f" (imagefolder expects {LAYOUT})"
            )
        files: list[str] = []
        for split in ("train", "test"):
            for c in train_classes:
                images = _images_in(root / split / c)
                if not images and split == "train":
                    raise UserError(
                        f"dataset 'imagefolder': class folder {root / split / c} has no images "
                        f"(extensions {', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the folder"
                    )
                files.extend(images)
        return files

    def train_class_counts(self, root: Path | None, files: list[str]) -> list[int] | None:
        assert root is not None
        prefix = len(str(root)) + 1
        counts: dict[str, int] = {}
        for p in files:
            split, c, *_ = p[prefix:].split(os.sep)
            if split == "train":
                counts[c] = counts.get(c, 0) + 1
        return [counts[c] for c in sorted(counts)]

    def decode(self, root: Path | None, files: list[str], resize: int | None) -> RawSplits:
        assert root is not None
        prefix = len(str(root)) + 1
        parts = [p[prefix:].split(os.sep) for p in files]  # [split, class, file...]
        classes = sorted({c for split, c, *_ in parts if split == "train"})
        index = {c: i for i, c in enumerate(classes)}
        arrays = _decode_all(files, resize)
        gray = all(a.ndim == 2 for a in arrays)
        x = _stack(arrays, files, gray)
        del arrays
        y = torch.tensor([index[c] for _, c, *_ in parts], dtype=torch.int64)
        is_train = torch.tensor([split == "train" for split, *_ in parts])
        return RawSplits(x[is_train], y[is_train], x[~is_train], y[~is_train], tuple(classes))
