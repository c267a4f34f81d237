"""The networks (one hidden layer, linear, STN), their architectures, cached training.

The paper's networks have no biases: f(x) = V relu(W x) (Section 3.1) and
f(x) = V x (appendix 6.4). Every bound in the paper (Theorems 1-2, the SDP
of Section 4.1) is derived for that form, so the models here have none.

Used in: every chapter that trains or evaluates a network.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .cache import cached, load_cached, store
from .checks import check_int, check_training_plan, check_training_set
from .data import load_mnist
from .device import default_device
from .epoch_loss import EpochLoss
from .profiles import load_profile, validate_profile, with_seed
from .progress import bar as progress_bar
from .progress import finished, stage
from .stacking import Stacked, fit_stacked, stacks_training
from .zoo import VARIANTS, LossFn, Variant, register

__all__ = [
    "ARCHS",
    "VARIANTS",
    "Linear",
    "OneHidden",
    "STNClassifier",
    "TrainedModel",
    "TrainingError",
    "Variant",
    "accuracy",
    "binary_head",
    "binary_heads",
    "cross_entropy",
    "fit",
    "get_model",
    "register",
]

#: Bump when the training code changes in a way that changes the weights.
TRAIN_CODE_VERSION = 1

#: A trained variant whose test accuracy is below this (twice chance on ten
#: classes) did not learn: an error, never a cached network.
MIN_TRAINED_ACCURACY = 0.2


#: What a cached network's record must hold.
_NEED = ("test_accuracy", "train_seconds")


class TrainingError(RuntimeError):
    """Training diverged (a NaN or inf loss) or learned nothing; nothing is cached."""


class OneHidden(nn.Module):
    """f(x) = V relu(W x): W is (hidden, d), V is (classes, hidden); no biases."""

    def __init__(self, d: int = 784, hidden: int = 512, classes: int = 10) -> None:
        super().__init__()
        self.W = nn.Linear(d, hidden, bias=False)
        self.V = nn.Linear(hidden, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (B, classes) for images (B, H, W) or vectors (B, d)."""
        return self.V(torch.relu(self.W(x.flatten(1))))


class Linear(nn.Module):
    """f(x) = V x: V is (classes, d); no bias (appendix 6.4)."""

    def __init__(self, d: int = 784, classes: int = 10) -> None:
        super().__init__()
        self.V = nn.Linear(d, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (B, classes) for images (B, H, W) or vectors (B, d)."""
        return self.V(x.flatten(1))


class STNClassifier(nn.Module):
    """A spatial transformer (Jaderberg et al., 2015) in front of a OneHidden classifier.

    The localisation network has three layers (784 -> h -> h -> 6, ReLU) and
    starts at the identity transform; the classifier sees the transformed
    image. A bound computed from ``classifier`` alone covers the classifier
    applied to the STN's output, not the whole pipeline.
    """

    def __init__(self, hidden: int = 500, stn_hidden: int = 100) -> None:
        super().__init__()
        self.localisation = nn.Sequential(
            nn.Linear(784, stn_hidden),
            nn.ReLU(),
            nn.Linear(stn_hidden, stn_hidden),
            nn.ReLU(),
            nn.Linear(stn_hidden, 6),
        )
        last = self.localisation[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
        self.classifier = OneHidden(784, hidden, 10)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The STN's output images (B, 28, 28)."""
        img = x.reshape(-1, 1, 28, 28)
        theta = self.localisation(img.flatten(1)).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(img.shape), align_corners=False)
        return F.grid_sample(img, grid, align_corners=False)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (B, 10) of the classifier on the transformed images."""
        return self.classifier(self.transform(x))


def binary_head(model: nn.Module, i: int, j: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The binary network f = (V_i - V_j)^T relu(W x) of classes i (+) and j (-).

    Returns a callable mapping (B, H, W) images to (B,) scores f_i - f_j
    (Readings table, point 15).
    """
    if i == j:
        raise ValueError(f"a binary head needs two different classes, got i = j = {i}")

    def f(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return out[:, i] - out[:, j]

    return f


def binary_heads(
    model: nn.Module, i: torch.Tensor, j: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-image binary networks f_b = (V_{i_b} - V_{j_b})^T relu(W x), b < B.

    The callable maps (m * B, H, W) images to (m * B,) scores; row k * B + b
    is scored with image b's pair, so a batch repeated m times (as the
    midpoint rule does) keeps each image's classes.
    """
    if i.shape != j.shape or i.dim() != 1:
        raise ValueError(f"i and j must be equal-length 1-D tensors, got {i.shape}, {j.shape}")
    if bool((i == j).any()):
        raise ValueError("a binary head needs two different classes for every image")

    def f(x: torch.Tensor) -> torch.Tensor:
        if len(x) % len(i):
            raise ValueError(f"batch of {len(x)} is not a multiple of {len(i)} images")
        out = model(x)
        row = torch.arange(len(x), device=out.device)
        image = row % len(i)
        return out[row, i.to(out.device)[image]] - out[row, j.to(out.device)[image]]

    return f


#: Architectures by name: build(hidden, settings) -> module mapping images to (B, 10).
ARCHS: dict[str, Callable[[int, dict[str, Any]], nn.Module]] = {
    "one_hidden": lambda hidden, settings: OneHidden(784, hidden, 10),
    "linear": lambda hidden, settings: Linear(784, 10),
    "stn": lambda hidden, settings: STNClassifier(hidden, settings.get("stn_hidden", 100)),
}


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``model`` on (x, y)."""
    return F.cross_entropy(model(x), y)


class TrainedModel(NamedTuple):
    """A network with where it came from."""

    model: nn.Module
    variant: str
    config: dict[str, Any]
    test_accuracy: float
    train_seconds: float
    from_cache: bool


def _build(arch: str, hidden: int, seed: int, settings: dict[str, Any]) -> nn.Module:
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
        return ARCHS[arch](hidden, settings)
    finally:
        torch.random.set_rng_state(gen_state)


def _subset(x: torch.Tensor, y: torch.Tensor, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    return (x, y) if n is None else (x[:n], y[:n])


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
    """Fraction of ``x`` classified as ``y``."""
    dev = next(model.parameters()).device
    correct = 0
    for k in range(0, len(x), batch_size):
        pred = model(x[k : k + batch_size].to(dev)).argmax(1).cpu()
        correct += int((pred == y[k : k + batch_size]).sum())
    return correct / len(x)


def _classes(model: nn.Module, x: torch.Tensor) -> int:
    """The number of classes ``model`` scores, from one example of ``x`` (a ValueError
    naming the shape when it cannot score it)."""
    if not isinstance(x, torch.Tensor) or len(x) == 0:
        check_training_set(x, torch.zeros(0, dtype=torch.int64))  # the error for x
    p = next(model.parameters())
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            scores = model(x[:1].to(p.device, p.dtype))
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ValueError(
            f"the model cannot score x of shape {tuple(x.shape)}: "
            f"{' '.join(str(exc).split())[:200]}"
        ) from None
    finally:
        model.train(was)
    if scores.dim() != 2:
        raise ValueError(f"the model must return scores (B, K), got {tuple(scores.shape)}")
    return scores.shape[1]


def fit(
    model: nn.Module,
    loss: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    desc: str = "train",
    progress: bool = True,
) -> nn.Module:
    """Minimise ``loss`` with Adam over shuffled mini-batches; in place, returns ``model``.

    If ``loss`` has a method ``on_epoch_start(model, epoch, x, y)``, it is
    called before every epoch (f_at refreshes its pool of stAdv examples), and
    ``on_fit_start(epochs=, batch_size=)`` once before training (f_cert checks its
    ramp against the plan);
    tensors returned by ``loss.extra_parameters(model)`` are optimised by the
    same Adam as the weights (f_sdp's dual vectors). Checked first: the plan (integers
    >= 1, lr > 0, seed >= 0) and the data (finite examples the model can score, labels
    among its classes, at least one).
    """
    epochs, batch_size, lr = check_training_plan(epochs, batch_size, lr)
    seed = check_int("seed", seed, low=0)
    check_training_set(x, y, classes=_classes(model, x))
    start = getattr(loss, "on_fit_start", None)
    if start is not None:  # a loss that needs the plan checks it (f_cert's ramp)
        start(epochs=epochs, batch_size=batch_size)
    dev = next(model.parameters()).device
    torch.manual_seed(seed)  # losses that draw random numbers (PGD starts) are reproducible
    extra = getattr(loss, "extra_parameters", None)
    params = list(model.parameters()) + (list(extra(model)) if extra is not None else [])
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    bar = progress_bar(total=steps, desc=desc, disable=not progress, unit="batch")
    model.train()
    hook = getattr(loss, "on_epoch_start", None)
    per_epoch = (len(x) + batch_size - 1) // batch_size
    x_dev, y_dev = x.to(dev), y.to(dev)  # resident: no copy from the host per step
    for epoch in range(epochs):
        if hook is not None:
            model.eval()
            hook(model, epoch, x, y)
            model.train()
        order = torch.randperm(len(x), generator=gen).to(dev)
        watch = EpochLoss((), dev, torch.float32)  # no host sync per step
        for step, k in enumerate(range(0, len(x), batch_size)):
            idx = order[k : k + batch_size]
            value = loss(model, x_dev[idx], y_dev[idx])
            watch.add(step, value)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            bar.update(1)
        total, bad = watch.read()
        if int(bad) >= 0:
            bar.close()
            raise TrainingError(
                f"{desc}: the loss became inf or nan at epoch {epoch + 1}, batch "
                f"{int(bad) + 1}; lower the learning rate (train.lr) and rerun"
            )
        bar.set_postfix(epoch=epoch + 1, loss=f"{float(total) / per_epoch:.4f}", refresh=False)
    bar.close()
    model.eval()
    return model


def _settings(v: Variant, profile: dict[str, Any]) -> dict[str, Any]:
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
        config["settings"] = _settings(v, profile)
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
    settings = _settings(v, prof)
    model = _build(v.arch, hidden, train["seed"], settings).to(default_device())
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
    :func:`stack_seeds` not yet in the cache (:mod:`flowbound.stacking`); store those,
    return this one's (state, meta). Each member's meta records the stack's size and
    its share of the time."""
    train, settings = prof["train"], _settings(v, prof)
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
    members = [_build(v.arch, hidden, s, settings).to(default_device()) for s in seeds]
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
    profile : a profile name or dict (see :mod:`flowbound.profiles`).
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
    model = _build(v.arch, hidden, 0, _settings(v, prof))
    model.load_state_dict(state)
    model.eval()
    model.to(default_device())
    return TrainedModel(
        model, variant, config, meta["test_accuracy"], meta["train_seconds"], not fresh
    )
