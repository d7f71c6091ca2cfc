"""One driver per sweep (or tuning run): a lock file in its storage folder.

Two drivers on one sweep (the same command started twice, two ``--resume``s, a second ``tune
--resume``) would run trials twice, write duplicate MLflow runs and, for tuning, mark the live
driver's running Optuna trials FAIL. ``driver_lock`` takes ``<storage>/<name>/.driver.lock`` with the
``filelock`` package (an OS lock, ``flock`` on Linux) without waiting; a second driver exits 2 naming
the first from the owner file written next to the lock (host, pid, start time, command). The OS drops
the lock with the process that held it, so a driver killed with SIGKILL never blocks the next one;
its stale owner file is simply overwritten.

On a multi-node cluster, start drivers from one host or put the storage path on a file system whose
locks are shared between hosts (NFSv4 is; some older NFS mounts ignore ``flock`` between hosts).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sys
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from distillery.methods.errors import UserError
from distillery.methods.utils.atomic import atomic_write_json

LOCK_NAME = ".driver.lock"
OWNER_NAME = ".driver.owner.json"


def _owner_text(folder: Path) -> str:
    try:
        owner = json.loads((folder / OWNER_NAME).read_text())
        return (f"host {owner.get('host')}, pid {owner.get('pid')}, started {owner.get('started')}: "
                f"{owner.get('command')}")
    except (OSError, ValueError):
        return "its owner file is missing or being written"


@contextlib.contextmanager
def driver_lock(storage_path: str | Path, name: str, kind: str = "sweep") -> Iterator[Path]:
    """Hold the driver lock of ``<storage_path>/<name>`` for the block; UserError if another
    driver holds it."""
    folder = Path(storage_path) / name
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(
            f"{kind} {name!r} is being run by another driver ({_owner_text(folder)}); two drivers would run its "
            "trials twice. Wait for it to finish, or stop it (Ctrl-C) and continue with --resume. A driver that "
            "died releases the lock with its process."
        ) from None
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": dt.datetime.now().isoformat(timespec="seconds"),
             "command": " ".join(["distillery", *sys.argv[1:]]) if sys.argv else kind}
    try:
        atomic_write_json(folder / OWNER_NAME, owner)
        yield folder
    finally:
        with contextlib.suppress(OSError):
            (folder / OWNER_NAME).unlink()
        lock.release()
