"""A tiny named registry: one per extensible thing (solvers, masks, backends, presets).

Its keys feed the CLI choices, and an unknown key raises a :class:`ConfigError` listing the
valid ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from gaf_trt.errors import unknown_key

T = TypeVar("T")


class Registry(Generic[T]):
    """Mapping of names to entries, with a decorator for registration."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name`` (names are unique)."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = obj

    def alias(self, alias: str, name: str) -> None:
        """Accept ``alias`` as another spelling of the registered ``name`` (not listed)."""
        if alias in self._entries or alias in self._aliases:
            raise ValueError(f"{self.kind} {alias!r} registered twice")
        self._aliases[alias] = name

    def canonical(self, name: str) -> str:
        """The registered name behind ``name`` (itself or the name it aliases)."""
        name = self._aliases.get(name, name)
        if name not in self._entries:
            raise unknown_key(self.kind, name, self._entries)
        return name

    def get(self, name: str) -> T:
        try:
            return self._entries[self._aliases.get(name, name)]
        except (KeyError, TypeError):
            raise unknown_key(self.kind, name, self._entries) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
