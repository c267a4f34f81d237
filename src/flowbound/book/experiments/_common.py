"""Helpers shared by the experiment modules."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import torch

from flowbound.book.profiles import load_profile
from flowbound.cache import cached
from flowbound.progress import timed_stage

#: The version every experiment started from (it was one global number until
#: each experiment got its own; starting there keeps the cached results valid).
FIRST_VERSION = 2


def record(name: str) -> dict[str, Any]:
    """The record ``flowbound/records/<name>`` (a JSON file a benchmark's ``--merge``
    wrote): results measured outside the build, which a chapter reads."""
    return json.loads(resources.files("flowbound").joinpath("records", name).read_text())


def to_numpy(value: Any) -> Any:
    """Tensors (at any depth of dicts, lists and tuples) as numpy arrays."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, dict):
        return {k: to_numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_numpy(v) for v in value)
    return value


def cached_experiment(
    name: str,
    versions: dict[str, int],
    config: dict[str, Any],
    compute: Callable[[], tuple[Any, dict[str, Any]]],
    *,
    required: tuple[str, ...] = (),
    as_numpy: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """(value as numpy, meta) of experiment ``name``: computed once, then cached.

    The cache key is ``config`` (the profile slice and the networks it used)
    plus the experiment's name and its own version, ``versions[name]``: bump
    that entry in the experiment's module when its code changes what it
    returns, and only that experiment is recomputed. ``compute()`` returns
    (tensors, meta) as :func:`flowbound.cache.cached` stores them; with
    ``as_numpy=False`` the tensors come back as tensors.
    """
    if name not in versions:
        raise KeyError(f"experiment {name!r} has no version in its module's VERSIONS")
    key = {**config, "experiment": name, "code": versions[name]}

    def announced() -> tuple[Any, dict[str, Any]]:
        with timed_stage(f"computing {experiment_label(name, config)}"):
            return compute()

    value, meta = cached("experiments", key, announced, required=required)
    return (to_numpy(value) if as_numpy else value), meta


#: Settings named in the progress line of a computed experiment, when its key has them.
_LABEL_KEYS = ("kind", "jacobian", "tau", "border", "eps", "threat", "images")


def _short(value: Any) -> str:
    """A setting for a progress line: a long list as its ends and length."""
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f"{value[0]:g} to {value[-1]:g} ({len(value)} values)"
    return str(value)


def experiment_label(name: str, config: dict[str, Any]) -> str:
    """``name`` with the network and the main settings of its cache key, for progress
    lines: "stadv_eval (nt, seed 0, hidden 500; tau 0.05, images 1000)"."""
    model = config.get("model")
    parts = []
    if isinstance(model, dict) and "variant" in model:
        parts.append(f"{model['variant']}, seed {model.get('seed')}")
        if model.get("hidden") is not None:
            parts.append(f"hidden {model['hidden']}")
    settings = [
        f"{k} {_short(config[k])}" for k in _LABEL_KEYS if k in config and config[k] is not None
    ]
    inner = "; ".join(p for p in (", ".join(parts), ", ".join(settings)) if p)
    return f"{name} ({inner})" if inner else name


def profile_dict(profile: str | dict[str, Any]) -> dict[str, Any]:
    """A profile given by name or as a dict."""
    return load_profile(profile) if isinstance(profile, str) else profile


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in eval mode with gradients off for its parameters (attacks need none)."""
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()
