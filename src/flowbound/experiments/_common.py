"""Helpers shared by the experiment modules."""

from __future__ import annotations

from typing import Any

import torch

from ..profiles import load_profile

#: Bump when an experiment's code changes what it returns (it is in every cache key).
EXPERIMENT_CODE_VERSION = 2


def profile_dict(profile: str | dict[str, Any]) -> dict[str, Any]:
    """A profile given by name or as a dict."""
    return load_profile(profile) if isinstance(profile, str) else profile


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in eval mode with gradients off for its parameters (attacks need none)."""
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()
