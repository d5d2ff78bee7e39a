"""One registry mechanism for everything looked up by name: methods, tasks, formats.

A name registered twice is refused: two implementations answering to one name would make
stored circuits ambiguous. Lookups of an unknown name fail with the known names listed.
Iteration is in registration order (formats detect in that order); ``names()`` is sorted.
Pure Python with no imports of ours, so the torch-free API and the workers share it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Items of one kind by name; ``error`` (and ``duplicate_error``) are what refusals raise."""

    def __init__(
        self,
        kind: str,
        *,
        error: Callable[[str], Exception] = KeyError,
        duplicate_error: Callable[[str], Exception] | None = None,
        sort_names: bool = True,
    ) -> None:
        self.kind = kind
        self._error = error
        self._duplicate_error = duplicate_error or error
        self._sort_names = sort_names
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` as ``name``; refused if the name is taken."""
        if name in self._items:
            raise self._duplicate_error(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """The item called ``name``; the refusal lists the known names."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            message = f"unknown {self.kind} {name!r}; known {self.kind}s: {known}"
            raise self._error(message) from None

    def names(self) -> list[str]:
        """Registered names (sorted, or in registration order where order matters)."""
        return sorted(self._items) if self._sort_names else list(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)
