"""Commands printed for the user to copy, spelled so that they run as printed.

The README installs into a virtual environment without activating it, so a bare ``mlflow`` or
``distillery`` in a printed hint may not be on PATH. A tool of the running interpreter's
environment is printed by its full path unless PATH already finds that same file.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def tool(name: str) -> str:
    """``name`` when PATH resolves it to this environment's executable, else its absolute path."""
    local = Path(sys.executable).parent / name
    if not local.exists():
        return name
    found = shutil.which(name)
    if found and os.path.realpath(found) == os.path.realpath(local):
        return name
    return str(local)


def command(name: str, *args: str) -> str:
    """A shell command line for ``name args...`` that runs as printed."""
    return " ".join([shlex.quote(tool(name)), *(shlex.quote(a) for a in args)])
