"""Named profiles (``smoke``, ``paper``): plain JSON data, part of every cache key.

Used in: every chapter (its ``profile`` papermill parameter) and the CLI.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["PROFILES", "load_profile"]

#: Profile names, smallest first.
PROFILES: tuple[str, ...] = ("smoke", "paper")


@cache
def _read(name: str) -> dict[str, Any]:
    text = resources.files("flowbound").joinpath("profile_data", f"{name}.json").read_text()
    return json.loads(text)


def load_profile(name: str) -> dict[str, Any]:
    """Return a fresh copy of the profile called ``name`` (``smoke`` or ``paper``)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return copy.deepcopy(_read(name))
