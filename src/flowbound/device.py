"""Where tensors live: ``$FLOWBOUND_DEVICE``, else CUDA when present, else CPU."""

from __future__ import annotations

import os

import torch

__all__ = ["CHUNKS", "chunk_size", "default_device"]


def default_device() -> torch.device:
    """The device for training and attacks (certificates stay float64 on the CPU or GPU)."""
    name = os.environ.get("FLOWBOUND_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


#: Images per batch of the batched hot paths, by device type (results do not depend
#: on them): a 2-core CPU is fastest with batches whose working set stays in cache
#: (stAdv's L-BFGS histories, measured in benchmarks/RESULTS.md), a GPU with
#: batches large enough to keep it busy. ``certificate``: digits per call of the
#: per-digit certificate's cascade; ``certificate_inner``: digits per product with
#: the eigenvectors of M^T M.
CHUNKS: dict[str, dict[str, int]] = {
    "stadv": {"cpu": 256, "cuda": 4096},
    "certificate": {"cpu": 500, "cuda": 4000},
    "certificate_inner": {"cpu": 32, "cuda": 256},
}


def chunk_size(kind: str, device: str | torch.device) -> int:
    """Batch size of the hot path ``kind`` (a key of :data:`CHUNKS`) on ``device``."""
    if kind not in CHUNKS:
        raise ValueError(f"unknown chunk kind {kind!r}; known: {', '.join(CHUNKS)}")
    sizes = CHUNKS[kind]
    return sizes.get(torch.device(device).type, sizes["cpu"])
