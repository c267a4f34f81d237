"""The networks (one hidden layer, linear, STN), their architectures, cached training.

The paper's networks have no biases: f(x) = V relu(W x) (Section 3.1) and
f(x) = V x (appendix 6.4). Every bound in the paper (Theorems 1-2, the SDP
of Section 4.1) is derived for that form, so the models here have none.

Used in: every chapter that trains or evaluates a network."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import torch
from torch import nn

from flowbound.book.profiles import load_profile, validate_profile, with_seed
from flowbound.cache import cached, load_cached, store
from flowbound.data import load_mnist
from flowbound.device import default_device
from flowbound.networks.architectures import build
from flowbound.progress import finished, stage
from flowbound.training.fit import TrainingError, accuracy, fit
from flowbound.training.stacking import Stacked, fit_stacked, stacks_training
from flowbound.training.zoo import VARIANTS, Variant

__all__ = ["get_model", "TrainedModel", "variant_settings"]


#: Bump when the training code changes in a way that changes the weights.
TRAIN_CODE_VERSION = 1


#: A trained variant whose test accuracy is below this (twice chance on ten
#: classes) did not learn: an error, never a cached network.
MIN_TRAINED_ACCURACY = 0.2


#: What a cached network's record must hold.
_NEED = ("test_accuracy", "train_seconds")


class TrainedModel(NamedTuple):
    """A network with where it came from."""

    model: nn.Module
    variant: str
    config: dict[str, Any]
    test_accuracy: float
    train_seconds: float
    from_cache: bool


def _subset(x: torch.Tensor, y: torch.Tensor, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    return (x, y) if n is None else (x[:n], y[:n])


def variant_settings(v: Variant, profile: dict[str, Any]) -> dict[str, Any]:
    return dict(profile.get("variants", {}).get(v.name, {}))


def _model_config(v: Variant, hidden: int, profile: dict[str, Any]) -> dict[str, Any]:
    train = profile["train"]
    config: dict[str, Any] = {
        "variant": v.name,
        "variant_version": v.version,
        "arch": v.arch,
        "hidden": None if v.arch == "linear" else hidden,
        "seed": train["seed"],
        "eval": profile["eval"],
        "code": TRAIN_CODE_VERSION,
    }
    if v.make_loss is not None:
        config["train"] = train
        config["settings"] = variant_settings(v, profile)
    return config


def _label(v: Variant, seeds: list[int], hidden: int, prof: dict[str, Any]) -> str:
    which = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"
    return f"training {v.name} ({which}, hidden {hidden}, {prof['name']} profile)"


def _trained_meta(model: nn.Module, v: Variant, prof: dict[str, Any], seconds: float):
    """(state, meta) of a freshly trained network; refuses one that learned nothing."""
    xt, yt = _subset(*load_mnist("test"), prof["eval"]["test_subset"])
    acc = accuracy(model, xt, yt)
    if v.make_loss is not None and acc < MIN_TRAINED_ACCURACY:
        raise TrainingError(
            f"{v.name} ({prof['name']}) reached a test accuracy of {acc:.3f}, about chance: "
            f"training did not learn, so nothing was cached; check the profile's train "
            f"settings (epochs, batch_size, lr)"
        )
    meta = {"test_accuracy": acc, "train_seconds": seconds, "device": str(default_device())}
    return {k: t.detach().cpu() for k, t in model.state_dict().items()}, meta


def _plan(train: dict[str, Any]) -> dict[str, Any]:
    """The profile's ``train`` settings that :func:`fit` and ``fit_stacked`` take."""
    return {key: train[key] for key in ("epochs", "batch_size", "lr")}


def _train_one(v: Variant, hidden: int, prof: dict[str, Any], progress: bool):
    """Train (or build, f_rd) the profile's network of ``v``: (state, meta)."""
    train = prof["train"]
    label = _label(v, [train["seed"]], hidden, prof)
    stage(f"{label} ...")
    settings = variant_settings(v, prof)
    model = build(v.arch, hidden, train["seed"], settings).to(default_device())
    start = time.perf_counter()
    if v.make_loss is not None:
        x, y = _subset(*load_mnist("train"), train["train_subset"])
        loss = v.loss_factory()(settings)
        desc = f"{v.name} ({prof['name']})"
        fit(model, loss, x, y, seed=train["seed"], desc=desc, progress=progress, **_plan(train))
    seconds = time.perf_counter() - start
    state, meta = _trained_meta(model, v, prof, seconds)
    finished(label, seconds, f"test accuracy {meta['test_accuracy']:.4f}")
    return state, meta


def stack_seeds(prof: dict[str, Any], variant: str | None = None, section: int = 4) -> list[int]:
    """The seeds a variant's networks are trained with in ``prof``: ``train.seed``, and
    ``possibility.seeds`` for the Section-4 networks the book compares over seeds
    (``possibility.variants`` and ``beyond_variants``; every variant when ``variant`` is
    None). Trained together where a variant stacks."""
    own = int(prof["train"]["seed"])
    p = prof.get("possibility", {})
    compared = [*p.get("variants", []), *p.get("beyond_variants", [])]
    if section != 4 or (variant is not None and variant not in compared):
        return [own]
    return sorted({own, *(int(s) for s in p.get("seeds", []))})


def _train_stack(v: Variant, hidden: int, prof: dict[str, Any], progress: bool, section: int):
    """Train the profile's network of ``v`` together with the other seeds of
    :func:`stack_seeds` not yet in the cache (:mod:`flowbound.training.stacking`); store those,
    return this one's (state, meta). Each member's meta records the stack's size and
    its share of the time."""
    train, settings = prof["train"], variant_settings(v, prof)
    own = int(train["seed"])
    seeds = [own] + [
        s
        for s in stack_seeds(prof, v.name, section)
        if s != own
        and load_cached("models", _model_config(v, hidden, with_seed(prof, s)), required=_NEED)
        is None
    ]
    if len(seeds) == 1:  # nothing to train beside it
        return _train_one(v, hidden, prof, progress)
    label = _label(v, seeds, hidden, prof)
    stage(f"{label}, stacked ...")
    members = [build(v.arch, hidden, s, settings).to(default_device()) for s in seeds]
    net = Stacked(members)
    x, y = _subset(*load_mnist("train"), train["train_subset"])
    start = time.perf_counter()
    loss = v.stacked_loss_factory()(settings)
    desc = f"{v.name} x {len(seeds)} ({prof['name']})"
    fit_stacked(net, loss, x, y, seeds=seeds, desc=desc, progress=progress, **_plan(train))
    seconds = time.perf_counter() - start
    net.write_back(members)
    out = []
    for seed, model in zip(seeds, members, strict=True):
        model.eval()
        state, meta = _trained_meta(model, v, prof, seconds / len(seeds))
        meta["stacked"] = len(seeds)
        out.append((state, meta))
        if seed != own:
            store("models", _model_config(v, hidden, with_seed(prof, seed)), state, meta)
    accs = ", ".join(f"{m['test_accuracy']:.4f}" for _, m in out)
    finished(label, seconds, f"test accuracy {accs}")
    return out[0]


def get_model(
    variant: str,
    profile: str | dict[str, Any],
    *,
    section: int = 4,
    progress: bool = True,
) -> TrainedModel:
    """The network of ``variant`` under ``profile``, trained once and then cached.

    Parameters
    ----------
    variant : a name in :data:`VARIANTS` (``"nt"``, ``"rd"``, ...).
    profile : a profile name or dict (see :mod:`flowbound.book.profiles`).
    section : 3 or 4, picking the paper's hidden width for that section
        (512 and 500 in the ``paper`` profile; Readings table, point 16).

    The cache key is the full configuration; a missing, truncated or altered
    cache file is retrained. The test accuracy is stored beside the weights.
    """
    v = VARIANTS.named(variant)
    if section not in (3, 4):
        raise ValueError(f"section must be 3 or 4, got {section!r}")
    if isinstance(profile, str):
        prof = load_profile(profile)
    else:
        prof = validate_profile(profile, f"the profile {profile.get('name', '')!r} (a dict)")
    hidden = prof["hidden"][f"section{section}"]
    config = _model_config(v, hidden, prof)
    fresh = []

    def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        fresh.append(True)
        if v.make_stacked_loss is not None and stacks_training(default_device()):
            return _train_stack(v, hidden, prof, progress, section)
        return _train_one(v, hidden, prof, progress)

    state, meta = cached("models", config, compute, required=_NEED)
    model = build(v.arch, hidden, 0, variant_settings(v, prof))
    model.load_state_dict(state)
    model.eval()
    model.to(default_device())
    return TrainedModel(
        model, variant, config, meta["test_accuracy"], meta["train_seconds"], not fresh
    )
