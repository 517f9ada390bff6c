"""One generic name -> definition table, used for every extensible thing.

Layers, losses, optimizers, schedules, regularizers, metrics, datasets and VJP rules each
own one `Registry`; looking up an unknown name raises a located error with a suggestion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from dnnspec.errors import Span, did_you_mean, error

T = TypeVar("T")


class Registry(Generic[T]):
    """Named definitions of one kind (`kind` is used in messages: 'layer', 'loss', ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def add(self, name: str, item: T, aliases: tuple[str, ...] = ()) -> T:
        if name in self._items or name in self._aliases:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        self._items[name] = item
        for alias in aliases:
            self._aliases[alias] = name
        return item

    def register(self, name: str, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator form of `add`."""

        def deco(item: T) -> T:
            return self.add(name, item, aliases)

        return deco

    def canonical(self, name: str) -> str | None:
        if name in self._items:
            return name
        return self._aliases.get(name)

    def __contains__(self, name: str) -> bool:
        return self.canonical(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def names(self) -> list[str]:
        """Every accepted spelling, for suggestions."""
        return sorted([*self._items, *self._aliases])

    def get(self, name: str, span: Span | None = None) -> T:
        """The definition for `name` (or an alias); a located did-you-mean error otherwise."""
        canonical = self.canonical(name)
        if canonical is None:
            raise error(
                f"unknown {self.kind} '{name}'", span, help=did_you_mean(name, self.names())
            )
        return self._items[canonical]
