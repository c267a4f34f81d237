"""Glue a chapter's summary in one call (myst-nb's ``glue``, one name per entry)."""

from __future__ import annotations

from typing import Any

__all__ = ["glue_all"]


def glue_all(values: dict[str, Any]) -> None:
    """``glue(name, value, display=False)`` for every entry: numbers and text that the
    prose cites with ``{glue:text}`name```. Needs the ``book`` extra (myst-nb)."""
    from myst_nb import glue  # optional dependency: only chapters call this

    for name, value in values.items():
        glue(name, value, display=False)
