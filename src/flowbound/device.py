"""Where tensors live: ``$FLOWBOUND_DEVICE``, else CUDA when present, else CPU."""

from __future__ import annotations

import os

import torch

__all__ = ["default_device"]


def default_device() -> torch.device:
    """The device for training and attacks (certificates stay float64 on the CPU or GPU)."""
    name = os.environ.get("FLOWBOUND_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
