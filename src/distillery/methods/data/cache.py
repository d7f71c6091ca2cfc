"""On-disk cache of decoded uint8 tensors, safe under concurrent processes.

Decoding 60k JPEGs takes ~15 s and every Ray trial on a node would otherwise repeat it. The key
covers what determines the decoded bytes: the dataset, the resolved root, every source file's
(relative path, size, mtime) and the resize, so editing/adding/touching a file invalidates the
entry without hashing file contents. Writes go to a temp file renamed into place (atomic on
POSIX), so a reader never sees a half-written entry; a per-key lock file makes concurrent
processes decode once and the others wait and read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..utils.atomic import atomic_write, atomic_write_json
from .source import RawSplits

CACHE_VERSION = 1  # bump when the cached content's meaning changes (e.g. a reader fix)

try:  # POSIX only; elsewhere concurrent misses just decode twice, which is still correct
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


def cache_root(cache_dir: str | None) -> Path:
    return Path(cache_dir or os.environ.get("DISTILLERY_CACHE") or "~/.cache/distillery").expanduser().resolve()


def files_fingerprint(root: Path | None, files: list[str]) -> str:
    """Hash of (path relative to root, size, mtime_ns) of each file: a stat per file, no reads."""
    h = hashlib.blake2b(digest_size=16)
    base = str(root) + os.sep if root is not None else ""
    for name in files:
        st = os.stat(name)
        rel = name[len(base):] if base and name.startswith(base) else name
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_key(dataset: str, root: Path | None, files: list[str], resize: int | None, extra: str = "") -> str:
    ident = {
        "version": CACHE_VERSION, "dataset": dataset, "root": str(root) if root else None,
        "files": files_fingerprint(root, files), "resize": resize, "extra": extra,
    }
    return hashlib.blake2b(json.dumps(ident, sort_keys=True).encode(), digest_size=12).hexdigest()


def cache_path(cache_dir: Path, dataset: str, key: str) -> Path:
    return cache_dir / f"{dataset}-{key}.pt"


def _read(path: Path) -> RawSplits | None:
    """None on a miss or an unreadable entry (e.g. from an incompatible version): rebuild then."""
    if not path.is_file():
        return None
    try:
        return RawSplits.from_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # noqa: BLE001 - any failure to read a cache entry means "rebuild it"
        warnings.warn(f"ignoring unreadable dataset cache {path} ({err}); rebuilding it", stacklevel=3)
        return None


def _write(path: Path, raw: RawSplits) -> None:
    atomic_write(path, lambda f: torch.save(raw.state_dict(), f))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_or_build(cache_dir: Path, dataset: str, key: str, build: Callable[[], RawSplits]) -> RawSplits:
    """The cached entry for ``key``, or ``build()`` stored under it. A cache directory that cannot
    be written only costs speed (warning), never the run."""
    path = cache_path(cache_dir, dataset, key)
    hit = _read(path)
    if hit is not None:
        return hit
    with contextlib.ExitStack() as stack:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(_locked(path.with_name(path.name + ".lock")))
        except OSError as err:
            warnings.warn(f"dataset cache {cache_dir} is not writable ({err}); decoding without caching", stacklevel=2)
            return build()
        hit = _read(path)  # another process may have built it while we waited for the lock
        if hit is not None:
            return hit
        raw = build()
        try:
            _write(path, raw)
        except OSError as err:
            warnings.warn(f"could not write dataset cache {path} ({err}); continuing without it", stacklevel=2)
        return raw
    raise AssertionError("unreachable")  # pragma: no cover (ExitStack does not swallow exceptions)


def write_index(path: Path, raw: RawSplits) -> None:
    """A few bytes of JSON with the training split's class counts, so configs can be checked
    against class sizes (an IPC larger than a class) without reading the cache entry. Best
    effort: an unwritable cache only means that check waits for the trial."""
    if path.is_file():
        return
    counts = torch.bincount(raw.train_y, minlength=len(raw.classes)).tolist()
    try:
        atomic_write_json(path, {"train_class_counts": counts, "classes": list(raw.classes)})
    except OSError:
        return


def read_index(path: Path) -> list[int] | None:
    try:
        counts = json.loads(path.read_text())["train_class_counts"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [int(c) for c in counts] if isinstance(counts, list) and counts else None
