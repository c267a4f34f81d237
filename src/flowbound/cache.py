"""Content-addressed, atomic, verified cache for trained weights and results.

A value is stored as ``<kind>/<hash>.pt`` (torch.save) beside a JSON record
``<kind>/<hash>.json`` holding the full configuration, the SHA-256 of the
``.pt`` file and any metadata. A file that is missing, truncated, altered or
recorded under another configuration is recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["cache_dir", "config_hash", "cached", "load_cached", "store"]


def cache_dir() -> Path:
    """The cache root: ``$FLOWBOUND_CACHE`` or ``~/.cache/flowbound``."""
    root = os.environ.get("FLOWBOUND_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "flowbound"


def config_hash(config: dict[str, Any]) -> str:
    """A stable 16-hex-digit hash of a JSON-serialisable configuration."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _paths(kind: str, config: dict[str, Any]) -> tuple[Path, Path]:
    h = config_hash(config)
    base = cache_dir() / kind
    return base / f"{h}.pt", base / f"{h}.json"


def store(
    kind: str, config: dict[str, Any], value: Any, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``value`` atomically under ``config``; return the ``.pt`` path."""
    pt, js = _paths(kind, config)
    _atomic_write(pt, lambda fh: torch.save(value, fh), "wb")
    record = {"config": config, "sha256": _sha256(pt), "meta": meta or {}}
    _atomic_write(js, lambda fh: json.dump(record, fh, indent=2, sort_keys=True), "w")
    return pt


def load_cached(kind: str, config: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
    """Return ``(value, meta)`` if a verified entry exists for ``config``, else None."""
    pt, js = _paths(kind, config)
    try:
        record = json.loads(js.read_text())
        if record["config"] != json.loads(json.dumps(config)) or record["sha256"] != _sha256(pt):
            return None
        value = torch.load(pt, map_location="cpu", weights_only=True)
    except Exception:  # missing, truncated, unreadable: recompute
        return None
    return value, record.get("meta", {})


def cached(
    kind: str, config: dict[str, Any], compute: Callable[[], tuple[Any, dict[str, Any]]]
) -> tuple[Any, dict[str, Any]]:
    """Load ``(value, meta)`` for ``config`` or compute, store and return it."""
    hit = load_cached(kind, config)
    if hit is not None:
        return hit
    value, meta = compute()
    store(kind, config, value, meta)
    return value, meta
