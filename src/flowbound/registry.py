"""A registry of named things: the network variants and the certified bounds.

:data:`flowbound.training.zoo.VARIANTS` and :data:`flowbound.certificates.registry.BOUNDS` are
:class:`Registry` objects: dicts by name that refuse a second item of the
same name and say which names exist when asked for an unknown one.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

__all__ = ["Named", "Registry"]


class Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


class Registry(dict[str, T]):
    """Items by their ``name``; ``what`` ("variant", "bound") names them in errors."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def add(self, item: T) -> T:
        """Register ``item`` under ``item.name`` (names are unique); return it."""
        if item.name in self:
            raise ValueError(f"{self.what} {item.name!r} is already registered")
        self[item.name] = item
        return item

    def named(self, name: str) -> T:
        """The item registered as ``name``, or an error listing the registered names."""
        if name not in self:
            raise ValueError(f"unknown {self.what} {name!r}; choose one of {', '.join(self)}")
        return self[name]
