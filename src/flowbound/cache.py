"""Content-addressed, atomic, verified cache for trained weights and results.

A value is stored as ``<kind>/<hash>.pt`` (torch.save) beside a JSON record
``<kind>/<hash>.json`` holding the full configuration, the SHA-256 of the
``.pt`` file and any metadata. A file that is missing, truncated, altered or
recorded under another configuration is recomputed, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: writes stay atomic, only the per-key lock is skipped
    fcntl = None

import torch

__all__ = [
    "CacheError",
    "cache_dir",
    "cached",
    "check_cache_dir",
    "config_hash",
    "load_cached",
    "store",
]


def cache_dir() -> Path:
    """The cache root: ``$FLOWBOUND_CACHE`` or ``~/.cache/flowbound``."""
    root = os.environ.get("FLOWBOUND_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "flowbound"


def config_hash(config: dict[str, Any]) -> str:
    """A stable 16-hex-digit hash of a JSON-serialisable configuration."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CacheError(OSError):
    """The cache folder cannot be used (a regular file, or not writable)."""


def _check_writable(folder: Path, what: str) -> None:
    """CacheError unless ``folder`` (created if missing) takes a new file."""
    if folder.exists() and not folder.is_dir():
        raise CacheError(f"{what} {folder} is a regular file; set FLOWBOUND_CACHE to a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise CacheError(
            f"cannot write to {what} {folder} ({exc.strerror}); make it writable or set "
            "FLOWBOUND_CACHE to a writable folder"
        ) from None


def check_cache_dir() -> Path:
    """The cache root, created if missing; CacheError if it, or any folder already in
    it (``models/``, ``results/``, ...), cannot take a new file: checked before any work
    starts, so nothing computed is lost at the write."""
    root = cache_dir()
    _check_writable(root, "the cache folder")
    for sub in sorted(root.iterdir()):
        if sub.is_dir():
            _check_writable(sub, "the cache folder")
    return root


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_orphans(path: Path) -> None:
    """Temporary files of ``path`` left by writers that died (their pid is in the name)."""
    for tmp in path.parent.glob(f".{path.name}.*"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _key_lock(base: Path, exclusive: bool) -> Iterator[None]:
    """A per-key advisory lock: a record and its value are written and read as one unit."""
    if fcntl is None:
        yield
        return
    base.parent.mkdir(parents=True, exist_ok=True)
    with open(base.with_suffix(".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.")
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
    buf = io.BytesIO()
    torch.save(value, buf)
    data = buf.getvalue()
    record = {"config": config, "sha256": hashlib.sha256(data).hexdigest(), "meta": meta or {}}
    with _key_lock(pt, exclusive=True):
        _atomic_write(pt, lambda fh: fh.write(data), "wb")
        _atomic_write(js, lambda fh: json.dump(record, fh, indent=2, sort_keys=True), "w")
    return pt


def load_cached(
    kind: str, config: dict[str, Any], *, required: tuple[str, ...] = ()
) -> tuple[Any, dict[str, Any]] | None:
    """Return ``(value, meta)`` if a verified entry exists for ``config``, else None.

    The value's bytes are read once, hashed and loaded from that same copy, so
    a load returns one writer's value with that writer's record. A record
    whose meta lacks a key in ``required`` (an older format, a hand edit) is
    a miss.
    """
    pt, js = _paths(kind, config)
    try:
        with _key_lock(pt, exclusive=False):
            record = json.loads(js.read_text())
            data = pt.read_bytes()
        if record["config"] != json.loads(json.dumps(config)):
            return None
        if record["sha256"] != hashlib.sha256(data).hexdigest():
            return None
        meta = record.get("meta", {})
        if any(key not in meta for key in required):
            return None
        value = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # missing, truncated, unreadable: recompute
        return None
    return value, meta


def cached(
    kind: str,
    config: dict[str, Any],
    compute: Callable[[], tuple[Any, dict[str, Any]]],
    *,
    required: tuple[str, ...] = (),
) -> tuple[Any, dict[str, Any]]:
    """Load ``(value, meta)`` for ``config`` or compute, store and return it."""
    hit = load_cached(kind, config, required=required)
    if hit is not None:
        return hit
    _check_writable(cache_dir() / kind, "the cache folder")  # before the work, not after
    value, meta = compute()
    store(kind, config, value, meta)
    return value, meta
