"""Pydantic models derived from the core's option dataclasses, so each option is defined once.

``methods/`` (torch only) owns the options: ``EvalConfig`` (the evaluation protocol) and
``DatasetOptions`` (how a dataset is loaded). The sweep and tuning YAMLs must accept exactly those
fields; hand-written mirrors drifted (a YAML could not set ``eval.momentum`` although ``distillery
trial --set eval.momentum=...`` could). So the config models are generated from the dataclasses'
fields, type hints and defaults; this module adds only what a dataclass cannot say: the bounds a
YAML value is checked against before anything starts, a YAML name where it differs from the field
name, and fields that a config must not set.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, Strict, create_model

#: unknown fields refused, values frozen, and no inf/NaN in any number (``gpu: .inf`` used to pass
#: validation and overflow later)
STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
#: an integer that YAML's ``yes``/``true`` cannot become (lax pydantic turns True into 1)
StrictPositiveInt = Annotated[int, Strict(), Field(gt=0)]
StrictInt = Annotated[int, Strict()]


def dataclass_model(
    name: str,
    source: type,
    doc: str,
    bounds: Mapping[str, Mapping[str, Any]] | None = None,
    renames: Mapping[str, str] | None = None,
    annotations: Mapping[str, Any] | None = None,
    skip: tuple[str, ...] = (),
) -> type[BaseModel]:
    """A frozen, extra-forbidding pydantic model with one field per dataclass field of ``source``.

    ``bounds``: pydantic ``Field`` constraints per field (``{"epochs": {"gt": 0}}``); ``renames``:
    dataclass field -> YAML name; ``annotations``: a narrower type than the dataclass's (e.g. a
    Literal); ``skip``: fields a config does not set (they keep the dataclass default).
    A field added to the dataclass appears in the model with its type and default, unchecked
    beyond its type until a bound is added here."""
    bounds, renames, annotations = bounds or {}, renames or {}, annotations or {}
    hints = typing.get_type_hints(source)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(source):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        fields[renames.get(f.name, f.name)] = (annotations.get(f.name, hints[f.name]), Field(default, **bounds.get(f.name, {})))
    model = create_model(name, __config__=STRICT, __doc__=doc, **fields)
    model.__module__ = __name__
    return model


def dataclass_kwargs(entry: BaseModel, source: type, renames: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The keyword arguments of ``source`` held by ``entry`` (a model made by ``dataclass_model``)."""
    renames = renames or {}
    values = {}
    for f in dataclasses.fields(source):
        key = renames.get(f.name, f.name)
        if key in type(entry).model_fields:
            values[f.name] = getattr(entry, key)
    return values
