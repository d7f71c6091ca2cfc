"""Dataset registry and the single entry point ``load_dataset``.

load_dataset = locate files -> decode (through the disk cache) -> resize -> statistics on the
full training split -> per-class subsets -> normalize. Loaders (torchvision_sets.py,
imagefolder.py, digits.py) only locate and decode; everything a user can set lives in
DatasetOptions and is handled here once, for all of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import UserError
from . import digits as _digits  # noqa: F401  (each import registers loaders)
from . import imagefolder as _imagefolder  # noqa: F401
from . import mhist as _mhist  # noqa: F401
from . import torchvision_sets as _torchvision_sets  # noqa: F401
from .base import ImageData
from .cache import cache_key, cache_root, load_or_build, read_index, write_index
from .preprocess import channel_stats, normalize, resize_uint8, subset_per_class
from .source import DATASETS, DatasetSource, MissingDataError, RawSplits

log = logging.getLogger(__name__)

FORMATS = ("imagefolder",)  # loaders that can read any named dataset (DatasetOptions.format)
TEST_SUBSET_SEED = 0  # test subsets ignore options.seed: trials with different seeds share a test set
VALIDATION_SEED = 0  # the validation split is fixed too: every tuning trial of a cell scores on the same images


@dataclass(frozen=True)
class DatasetOptions:
    """How to load a dataset. Part of a trial's identity, so keep it hashable and plain.

    Validated on construction, so a bad config value fails when the config is read, not
    minutes later inside a trial.
    """

    root: str | None = None            # where the raw files are (default per dataset, e.g. ./data/<name>)
    download: bool = False             # torchvision download when files are missing (needs internet)
    subset_per_class: int | None = None  # keep at most this many training images per class (seeded)
    test_subset_per_class: int | None = None  # same for the test split (None = full test set; fixed seed)
    resize: int | None = None          # resize images to resize x resize (None: the dataset's default, see DatasetSource.default_resize)
    seed: int = 0                      # seed of the training-subset draw
    #: carve this many training images per class out as the evaluation split, which then replaces
    #: the test split (tuning must never select on test data); None = evaluate on the test split
    validation_per_class: int | None = None
    cache_dir: str | None = None       # decoded-tensor cache (default: ~/.cache/distillery or $DISTILLERY_CACHE)
    #: read a named dataset from files in another loader's layout, keeping the name (and with it
    #: every per-dataset default: DSA without flip for mnist, the methods' tables): "imagefolder"
    #: reads ``<root>/train/<class>/*`` and ``<root>/test/<class>/*``. None: the dataset's own format
    format: str | None = None

    @property
    def training_subset(self) -> bool:
        """Whether the training split is a per-class subset: the methods' published tables assume
        the full split, so trajectory methods take their defaults by rule instead (see make_config)."""
        return self.subset_per_class is not None

    def __post_init__(self) -> None:
        for opt in ("subset_per_class", "test_subset_per_class", "resize", "validation_per_class"):
            value = getattr(self, opt)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UserError(f"dataset option {opt} must be an integer >= 1 (or null for none), got {value!r}")
        if self.validation_per_class is not None and self.test_subset_per_class is not None:
            raise UserError(
                "dataset options validation_per_class and test_subset_per_class are both set, but with a validation "
                "split the test split is not used; drop test_subset_per_class"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise UserError(f"dataset option seed must be an integer, got {self.seed!r}")
        if not isinstance(self.download, bool):
            raise UserError(f"dataset option download must be true or false, got {self.download!r}")
        if self.format is not None and self.format not in FORMATS:
            raise UserError(f"dataset option format must be one of {', '.join(FORMATS)} (or null: the dataset's own format), got {self.format!r}")
        for opt in ("root", "cache_dir"):
            value = getattr(self, opt)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise UserError(f"dataset option {opt} must be a path string, got {value!r}")


def dataset_names() -> list[str]:
    return DATASETS.names()


def default_root(name: str) -> Path:
    return Path("data", name.lower()).resolve()


def resolve_options(name: str, options: DatasetOptions | None = None) -> DatasetOptions:
    """Options with root (defaulted if unset), resize (the dataset's default if unset) and a given
    cache_dir made absolute. Call this in the driver before shipping options to workers: Ray
    trials run in their own working directory, where ./data means something else. An unset
    cache_dir stays unset, so each worker uses its own $DISTILLERY_CACHE or home. Idempotent."""
    options = options or DatasetOptions()
    DATASETS.get(name)  # an unknown name fails here, with the valid ones
    source = DATASETS.get(options.format or name)
    root = None
    if source.needs_root:
        root = str(Path(options.root).expanduser().resolve()) if options.root is not None else str(default_root(name))
    cache_dir = str(Path(options.cache_dir).expanduser().resolve()) if options.cache_dir is not None else None
    resize = options.resize if options.resize is not None else source.default_resize
    return replace(options, root=root, cache_dir=cache_dir, resize=resize)


def dataset_fingerprint(name: str, options: DatasetOptions | None = None) -> str:
    """Short stable hash of what determines the loaded tensors (name, resolved root, subsets,
    resize, and the seed only when a training subset is drawn). Excludes download and cache_dir,
    which change how the data is obtained but not what it is. Touches no files."""
    opts = resolve_options(name, options)
    ident = {
        "dataset": name.lower(),
        "root": opts.root,
        "subset_per_class": opts.subset_per_class,
        "test_subset_per_class": opts.test_subset_per_class,
        "resize": opts.resize,
        "seed": opts.seed if opts.training_subset else None,
    }
    if opts.format is not None:  # other files (the hash of the default format stays as it was)
        ident["format"] = opts.format
    if opts.validation_per_class is not None:  # other training images: experts etc. must not see the held-out ones
        ident["validation_per_class"] = opts.validation_per_class
    return hashlib.blake2b(json.dumps(ident, sort_keys=True).encode(), digest_size=6).hexdigest()


def _missing(name: str, source: DatasetSource, options: DatasetOptions, root: Path, err: MissingDataError,
             after_download: bool = False) -> MissingDataError:
    how = "given root" if options.root is not None else f"default root ./data/{name}, resolved against the working directory"
    fixes = [f"pass --data-root PATH for a folder laid out as {source.layout}"]
    if source.can_download and not after_download:
        fixes.append("set download: true to fetch it with torchvision (needs internet)")
    lead = "after downloading, " if after_download else ""
    return MissingDataError(
        err.path, err.expected,
        f"dataset {name!r}: {lead}{err.path} is missing ({err.expected}); root is {root} ({how}). "
        f"Fix: {' or '.join(fixes)}",
    )


def _locate(name: str, source: DatasetSource, options: DatasetOptions, root: Path | None) -> list[Path]:
    try:
        return source.locate(root)
    except MissingDataError as err:
        assert root is not None
        if not (options.download and source.can_download):
            raise _missing(name, source, options, root, err) from None
    root.mkdir(parents=True, exist_ok=True)
    log.info("downloading dataset %s into %s", name, root)
    source.download(root)
    try:
        return source.locate(root)
    except MissingDataError as err:
        raise _missing(name, source, options, root, err, after_download=True) from None


def _check_labels(name: str, raw: RawSplits, root: Path | None) -> None:
    n = len(raw.classes)
    for split, y in (("train", raw.train_y), ("test", raw.test_y)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n):
            raise UserError(
                f"dataset {name!r} at {root}: {split} labels range {int(y.min())}..{int(y.max())} but there are "
                f"{n} class names; the files are inconsistent, re-download them"
            )
    if raw.train_x.shape[0] == 0:
        raise UserError(f"dataset {name!r} at {root}: the training split is empty")


def load_raw(name: str, options: DatasetOptions | None = None) -> RawSplits:
    """Decoded (and resized) uint8 splits, through the cache: the part of load_dataset worth
    caching, exposed for tools that want pixels rather than normalized tensors."""
    given = options or DatasetOptions()
    options = resolve_options(name, given)
    key_name = name.lower()
    source = DATASETS.get(options.format or name)(key_name)  # resolve_options already checked the name
    root = Path(options.root) if source.needs_root else None  # type: ignore[arg-type]
    files = _locate(key_name, source, given, root)  # the given options: errors say whether the root was defaulted

    def build() -> RawSplits:
        t0 = time.perf_counter()
        raw = source.decode(root, files, options.resize)
        if options.resize is not None:
            raw = RawSplits(resize_uint8(raw.train_x, options.resize), raw.train_y,
                            resize_uint8(raw.test_x, options.resize), raw.test_y, raw.classes)
        log.info("decoded dataset %s from %s in %.1fs", key_name, root, time.perf_counter() - t0)
        return raw

    if not source.cacheable:
        raw = build()
    else:
        key = cache_key(key_name, root, files, options.resize)
        raw = load_or_build(cache_root(options.cache_dir), key_name, key, build)
        write_index(_index_path(options, key_name, root, files), raw)
    _check_labels(key_name, raw, root)
    return raw


def _index_path(options: DatasetOptions, key_name: str, root: Path | None, files: list[str]) -> Path:
    """Where the class-count index of these files lives: next to their decoded-tensor cache entry
    (the same key, without the resize, which does not change the counts)."""
    key = cache_key(key_name, root, files, None, extra="index")
    return cache_root(options.cache_dir) / f"{key_name}-{key}.index.json"


def train_class_counts(name: str, options: DatasetOptions | None = None) -> list[int] | None:
    """Training images per class of the full training split (before subsets), without decoding
    images: from the loader when it can count cheaply (file names, a label file), else from the
    index a previous load wrote; None when neither knows. Raises the loader's MissingDataError
    when the files are absent, so it doubles as the check that a dataset root is usable."""
    options = resolve_options(name, options)
    key_name = name.lower()
    source = DATASETS.get(options.format or name)(key_name)
    root = Path(options.root) if source.needs_root else None  # type: ignore[arg-type]
    files = source.locate(root)
    counts = source.train_class_counts(root, files)
    if counts is not None or not source.cacheable:
        return counts
    return read_index(_index_path(options, key_name, root, files))


def load_dataset(name: str, options: DatasetOptions | None = None) -> ImageData:
    """The named dataset as normalized in-memory tensors (see ImageData)."""
    options = options or DatasetOptions()
    raw = load_raw(name, options)
    mean, std = channel_stats(raw.train_x)  # full training split, before subsetting
    train_x, train_y, test_x, test_y = raw.train_x, raw.train_y, raw.test_x, raw.test_y
    n = len(raw.classes)
    eval_split = "test"
    if options.validation_per_class is not None:
        test_x, test_y, train_x, train_y = _validation_split(name, train_x, train_y, options.validation_per_class, n)
        eval_split = "validation"
    if options.subset_per_class is not None:
        keep = subset_per_class(train_y, options.subset_per_class, n, options.seed, "train")
        train_x, train_y = train_x[keep], train_y[keep]
    if options.test_subset_per_class is not None:
        keep = subset_per_class(test_y, options.test_subset_per_class, n, TEST_SUBSET_SEED, "test")
        test_x, test_y = test_x[keep], test_y[keep]
    return ImageData(
        name=name.lower(),
        train_x=normalize(train_x, mean, std),
        train_y=train_y,
        test_x=normalize(test_x, mean, std),
        test_y=test_y,
        classes=raw.classes,
        mean=mean,
        std=std,
        eval_split=eval_split,
    )


def _validation_split(name: str, x, y, k: int, num_classes: int):
    """(val_x, val_y, rest_x, rest_y): k seeded training images per class held out. Drawn before
    any training subset, so the validation images do not depend on the subset seed."""
    counts = torch.bincount(y, minlength=num_classes)
    smallest = int(counts.min())
    if k >= smallest:
        raise UserError(
            f"dataset {name!r}: validation_per_class={k} would leave no training images for a class with {smallest}; "
            f"use a value below {smallest}"
        )
    held = subset_per_class(y, k, num_classes, VALIDATION_SEED, "validation")
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[held] = False
    return x[held], y[held], x[mask], y[mask]


__all__ = [
    "DATASETS", "DatasetOptions", "dataset_fingerprint", "dataset_names", "default_root", "load_dataset",
    "load_raw", "resolve_options", "train_class_counts",
]
