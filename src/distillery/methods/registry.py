"""A tiny name -> object registry shared by datasets, networks and distillation methods.

Registries replace if/elif factories: adding a dataset, network or method is one decorated
definition, and every lookup failure produces the same actionable message (the unknown name and
the names that do exist).
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """Raised for a name that is not registered; its message lists the valid choices."""

    def __init__(self, kind: str, name: str, choices: list[str]) -> None:
        self.kind, self.name, self.choices = kind, name, choices
        super().__init__(name)

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return f"unknown {self.kind} {self.name!r}; choose one of: {', '.join(self.choices)}"


class Registry(Generic[T]):
    """Maps lower-case names to registered objects (classes or factory functions)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        key = name.lower()

        def decorator(obj: T) -> T:
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name.lower()]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
