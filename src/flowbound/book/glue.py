"""Glue a chapter's summary in one call (myst-nb's ``glue``, one name per entry)."""

from __future__ import annotations

from typing import Any

__all__ = ["count_noun", "count_word", "decay_text", "glue_all"]

_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def glue_all(values: dict[str, Any]) -> None:
    """``glue(name, value, display=False)`` for every entry: numbers and text that the
    prose cites with ``{glue:text}`name```. Needs the ``book`` extra (myst-nb)."""
    from myst_nb import glue  # optional dependency: only chapters call this

    for name, value in values.items():
        glue(name, value, display=False)


def count_word(n: int) -> str:
    """``n`` as prose writes a small count: "three" (digits from 13 on)."""
    return _WORDS[n] if 0 <= n < len(_WORDS) else str(n)


def count_noun(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and its noun in the right number: "one training seed", "3 digits" (words up to
    twelve with ``count_word``)."""
    return f"{count_word(n)} {noun if n == 1 else (plural or noun + 's')}"


def decay_text(epochs: list[int], factor: float) -> str:
    """A learning-rate step decay in words, as :func:`flowbound.training.fit.step_decay`
    applies it ("multiplied by 0.1 at the start of epochs 10 and 13"; 1-based epochs);
    "" for no decay."""
    marks = [str(e) for e in epochs]
    if not marks:
        return ""
    at = marks[0] if len(marks) == 1 else f"{', '.join(marks[:-1])} and {marks[-1]}"
    noun = "epochs" if len(marks) > 1 else "epoch"
    return f"multiplied by {factor:g} at the start of {noun} {at}"
