"""Reading config YAML strictly and applying ``--set a.b=c`` overrides to it.

PyYAML's safe loader lets a key written twice silently take its last value, which turns a
copy-paste slip (two ``methods:`` blocks) into a sweep that runs something else. The loader here
refuses duplicates, naming the key and both lines. ``--set`` paths and values get the same care:
every failure is a UserError that names the override and the fix, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from distillery.methods.errors import UserError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a mapping key written twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:  # type: ignore[override]
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: let SafeLoader give its own error
                continue
            line = key_node.start_mark.line + 1
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is written twice (lines {first} and {line}); keep one", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """``text`` parsed with duplicate keys rejected; UserError naming ``source`` otherwise."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: not valid YAML: {_one_line(exc)}") from None


def _one_line(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line with the position (line and column, 1-based)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        context = f"{exc.context}; " if exc.context else ""
        return f"{context}{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def read_yaml(path: str | Path, overrides: Mapping[str, Any] | None, kind: str, example: str) -> dict[str, Any]:
    """A config file as a dict with ``--set a.b=c`` overrides applied; UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} not found; pass the path of a {kind} YAML such as {example}")
    raw = parse_yaml(path.read_text(), str(path)) or {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the top level must be a mapping of {kind} fields (name, datasets, methods, ...)")
    for key, value in (overrides or {}).items():
        parsed = parse_yaml(value, f"--set {key}={value}") if isinstance(value, str) else value
        set_path(raw, key, parsed)
    return raw


def _index(node: list, key: str, dotted: str) -> int:
    try:
        i = int(key)
    except ValueError:
        raise UserError(f"--set {dotted}: {key!r} is not a list index (the list has {len(node)} entries: use 0..{len(node) - 1})") from None
    if not -len(node) <= i < len(node):
        raise UserError(f"--set {dotted}: index {i} is out of range (the list has {len(node)} entries: use 0..{len(node) - 1})")
    return i


def set_path(raw: dict, dotted: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``dotted = "a.b.c"``; list entries are addressed by index
    (``datasets.0.root``), and missing sections are created. Mutates ``raw`` (a fresh parse)."""
    keys = dotted.split(".")
    if any(not k for k in keys):
        raise UserError(f"--set {dotted}: empty field name; write e.g. --set eval.epochs=50")
    node: Any = raw
    for k in keys[:-1]:
        if isinstance(node, list):
            i = _index(node, k, dotted)
            if isinstance(node[i], str):  # shorthand entry such as `datasets: [digits]`
                node[i] = {"name": node[i]}
            nxt = node[i]
        else:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
        if not isinstance(nxt, (dict, list)):
            raise UserError(f"--set {dotted}: {k!r} is a value ({nxt!r}), not a section")
        node = nxt
    if isinstance(node, list):
        node[_index(node, keys[-1], dotted)] = value
    else:
        node[keys[-1]] = value
