"""Check a value from a config file against a dataclass field's annotation.

Values from YAML arrive typed (``dsa: 7`` is an int), and ``dataclasses.replace`` accepts
anything, so without this a non-boolean flag or a string where a number belongs would be carried
into every trial and fail there, or worse, be truthy and silently change the run. Only the
annotation forms our configs use are understood (bool, int, float, str, None, unions, Literal,
tuple/list, dict); anything else is accepted as is.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import types
import typing
from typing import Any, Literal, Union


@functools.lru_cache(maxsize=None)
def field_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass (empty when they cannot be resolved)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an unresolvable annotation only disables the check
        return {}


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` is acceptable for a field annotated ``hint``."""
    if hint is Any or hint is typing.Any:
        return True
    if hint is type(None) or hint is None:
        return value is None
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return any(matches(value, arm) for arm in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return len(set(args)) != 1 or all(matches(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        return isinstance(value, dict)
    return True


def describe(hint: Any) -> str:
    """A short, readable name of an annotation for error messages ("an integer or null")."""
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return " or ".join(describe(a) for a in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (tuple, list):
        return "a list"
    if origin is dict:
        return "a mapping"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def check_field(config_cls: type, key: str, value: Any) -> str | None:
    """None when ``value`` fits ``config_cls.key``'s annotation, else what was expected."""
    if not dataclasses.is_dataclass(config_cls):
        return None
    hint = field_hints(config_cls).get(key)
    if hint is None or matches(value, hint):
        return None
    return describe(hint)
