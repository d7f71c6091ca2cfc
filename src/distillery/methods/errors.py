"""User-facing errors: the CLI prints these as one line and exits 2 (no traceback)."""

from __future__ import annotations

from .registry import UnknownNameError


class UserError(ValueError):
    """Bad input a user can fix (a value, a path, a file). The message must say how."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, UnknownNameError)
