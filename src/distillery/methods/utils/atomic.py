"""One way to write a file that is read later: whole or not at all, and durable.

Every file distillery writes for a later reader (checkpoints, trial errors, decoded-data caches,
expert-buffer manifests and progress, PAD's ranking, the calibration cache, the sweep manifest,
the driver's owner file) goes through ``atomic_write``: a temporary file in the same folder, written,
flushed and fsynced, renamed over the target, then the folder fsynced. A crash or a full disk at
any point leaves the old file or the new one, never a torn file that would crash every reader.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable


def fsync_dir(path: Path | str) -> None:
    """Make a rename or a new file in ``path`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], Any]) -> Path:
    """Replace ``path`` with what ``write(f)`` writes to a binary file object, atomically and durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: Path | str, value: Any, **dumps: Any) -> Path:
    return atomic_write_text(path, json.dumps(value, **dumps))
