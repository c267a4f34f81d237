"""A training epoch's losses, summed and checked on the device, read once per epoch.

Reading a loss every step (``.item()``, ``bool(isfinite(...))``) makes a GPU wait for
each step before queueing the next; :class:`EpochLoss` keeps the sum and the first
step whose loss was NaN or inf as tensors and reads both in one transfer.

Used in: :func:`flowbound.training.fit.fit`, :func:`flowbound.training.stacking.fit_stacked`.
"""

from __future__ import annotations

import torch

__all__ = ["EpochLoss"]


class EpochLoss:
    """Losses of ``shape`` (``()`` for one network, ``(M,)`` for a stack) over one epoch:
    :meth:`add` each step's, :meth:`read` the sums and first bad steps once."""

    def __init__(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> None:
        self.total = torch.zeros(shape, device=device, dtype=dtype)
        self.first_bad = torch.full(shape, -1, device=device, dtype=torch.long)

    def add(self, step: int, value: torch.Tensor) -> None:
        """Add step ``step``'s loss (no host sync); remember the first NaN or inf."""
        v = value.detach()
        fresh = ~torch.isfinite(v) & (self.first_bad < 0)
        self.first_bad = torch.where(fresh, torch.full_like(self.first_bad, step), self.first_bad)
        self.total = self.total + v.to(self.total.dtype)

    def read(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sums, first bad steps, -1 where none) on the CPU: the epoch's one sync."""
        n = self.total.numel()
        flat = [self.total.reshape(-1), self.first_bad.reshape(-1).to(self.total.dtype)]
        both = torch.cat(flat).cpu()
        return both[:n].reshape(self.total.shape), both[n:].long().reshape(self.total.shape)
