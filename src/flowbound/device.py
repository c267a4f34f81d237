"""Where tensors live: ``$FLOWBOUND_DEVICE``, else CUDA when present, else CPU.

The batch sizes of the hot paths (:data:`CHUNKS`) are settings a user may edit;
:func:`chunk_size` checks each value where it is read, exactly as an argument is
checked: a size that is not an integer >= 1 is a :class:`~flowbound.checks.SettingError`
naming the entry, never a loop that silently skips work (a certificate that skipped
its flow terms would be unsound).
"""

from __future__ import annotations

import os
import platform

import torch

from flowbound.checks import SettingError

__all__ = ["CHUNKS", "chunk_size", "default_device", "device_text"]

#: The environment variable that overrides :func:`default_device`.
DEVICE_ENV = "FLOWBOUND_DEVICE"


def default_device() -> torch.device:
    """The device for training and attacks (certificates stay float64 on the CPU or GPU):
    ``$FLOWBOUND_DEVICE`` (``cpu``, ``cuda`` or ``cuda:N``) when set, else CUDA when
    present. A value that names no usable device is a SettingError."""
    name = os.environ.get(DEVICE_ENV, "")
    if name:
        try:
            dev = torch.device(name)
        except (RuntimeError, TypeError, ValueError):
            dev = None
        if dev is None or dev.type not in ("cpu", "cuda"):
            raise SettingError(f"{DEVICE_ENV} must be cpu, cuda or cuda:N, got {name!r}")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SettingError(
                f"{DEVICE_ENV} is {name!r} but CUDA is not available here; unset it or set cpu"
            )
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SettingError(
                f"{DEVICE_ENV} is {name!r} but this machine has {torch.cuda.device_count()} "
                f"CUDA device(s)"
            )
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


#: Images per batch of the batched hot paths, by device type (results do not depend
#: on them): a 2-core CPU is fastest with batches whose working set stays in cache
#: (stAdv's L-BFGS histories, measured in benchmarks/RESULTS.md), a GPU with
#: batches large enough to keep it busy. ``certificate``: digits per call of the
#: per-digit certificate's cascade; ``certificate_inner``: digits per product with
#: the eigenvectors of M^T M. Device types other than these use the CPU's size.
CHUNKS: dict[str, dict[str, int]] = {
    "stadv": {"cpu": 256, "cuda": 4096},
    "certificate": {"cpu": 500, "cuda": 4000},
    "certificate_inner": {"cpu": 32, "cuda": 256},
}


def device_text(device: torch.device) -> str:
    """The device a measurement ran on, for a benchmark's first line: its kind and model
    (the GPU's name, or the CPU's), torch's version and its CPU threads."""
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor()
    return f"{dev} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads"


def chunk_size(kind: str, device: str | torch.device) -> int:
    """Batch size of the hot path ``kind`` (a key of :data:`CHUNKS`) on ``device``,
    checked where it is read: an integer >= 1, else a SettingError naming the entry."""
    if not isinstance(kind, str) or kind not in CHUNKS:
        raise ValueError(f"unknown chunk kind {kind!r}; known: {', '.join(CHUNKS)}")
    try:
        where = torch.device(device).type
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device must be a torch.device or a device name such as 'cpu' or 'cuda', "
            f"got {device!r}"
        ) from None
    sizes = CHUNKS[kind]
    if not isinstance(sizes, dict) or "cpu" not in sizes:
        raise SettingError(
            f"device.CHUNKS[{kind!r}] must be a dict of sizes by device type with a 'cpu' "
            f"entry, got {sizes!r}"
        )
    key = where if where in sizes else "cpu"
    value = sizes[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingError(
            f"device.CHUNKS[{kind!r}][{key!r}] must be an integer >= 1 (images per batch), "
            f"got {value!r}"
        )
    return value
