"""Helpers shared by the experiment modules."""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..profiles import load_profile

#: Bump when an experiment's code changes what it returns (it is in every cache key).
EXPERIMENT_CODE_VERSION = 2


def profile_dict(profile: str | dict[str, Any]) -> dict[str, Any]:
    """A profile given by name or as a dict."""
    return load_profile(profile) if isinstance(profile, str) else profile


def with_seed(profile: dict[str, Any], seed: int) -> dict[str, Any]:
    """A copy of ``profile`` whose networks are trained with ``train.seed = seed``."""
    out = copy.deepcopy(profile)
    out["train"]["seed"] = int(seed)
    return out


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in eval mode with gradients off for its parameters (attacks need none)."""
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()
