"""Per-digit certificates against flows that keep the ellipsoid (beyond the paper).

For f = V relu(W z), an image x of class y and a budget eps, a certified lower
bound of min over the threat set of f_y(g(r; x)) - f_j(g(r; x)) for every class j;
x is certified at eps when it is classified correctly and every bound is > 0.
Two threat sets: tied flows with ||M r||_2 <= eps (Sections 2-4), and full flows
(du, dv) with ||M du||^2 + ||M dv||^2 <= 2 eps^2, i.e. l_diff <= sqrt(2) eps, the
set stAdv's flows live in (Eq. 2); it contains the tied set (Prop. 1).

The construction, every step in float64, one module each:

1. :mod:`~flowbound.certificates.pixels`: each warped pixel bounded over the box
   the ellipsoid implies, g_i = a_i r_i + b_i |r_i| + e_i with e_i in an interval;
2. :mod:`~flowbound.certificates.ellipsoid`: the flow terms' values over the
   threat set (the smaller of ellipsoid and box values; at the kinked level the
   slope and kink terms also jointly, over every sign pattern of the flow; at the
   sloped level each row also with its own slopes between the two chords, at the
   descent level those slopes then stepped towards each row's bound);
3. :mod:`~flowbound.certificates.propagation`: pre-activation bounds and the
   CROWN relaxation of the ReLUs;
4. here: the last step, a term-by-term lower bound of the margin's minimum (the
   slope and kink terms each take their own supremum), and the cascade; at its last
   level, :mod:`~flowbound.certificates.flow_split` takes the last step again for
   each margin still at or below zero with the flow's sign split at the pixels that
   matter most to it.

:func:`certified` tries each digit first with one chord per pixel (the kink
widening each pixel's interval, a third of the products with the eigenvectors of
M^T M), keeps the kink in the ellipsoid only for the digits that level leaves
open, lets each neuron choose its slopes only for those the kinked level leaves
open, and steps those slopes (then splits the flow's sign for the margins still
open) only for those the sloped level leaves open (:data:`CASCADE`); every level
is sound. What each level costs and
adds: ``benchmarks/local_bounds.py``.

Sound by construction: every relaxation is a valid inequality over a superset of
the threat set, and pixel offsets are widened by a rounding allowance. Networks:
flowbound's own architectures (a spatial transformer only with
``classifier_only=True``, its classifier on the transformed digit) and chains of
the layers :data:`flowbound.networks.chain.SUPPORTED` lists (biases, convolutions,
any depth); anything else is refused.

Used in: Beyond the paper: certifying individual digits (Figure 12).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from flowbound.certificates.ellipsoid import ELLIPSOID_TERMS, FlowTerms, support
from flowbound.certificates.flow_split import split_over_threat
from flowbound.certificates.pixels import _pixel_bounds, _side
from flowbound.certificates.propagation import (
    back_substituted,
    chain_pre_activation_bounds,
    over_threat,
)
from flowbound.checks import (
    check_device,
    check_eps_list,
    check_images,
    check_int,
    check_labels,
    check_number,
)
from flowbound.device import chunk_size
from flowbound.networks.chain import chain, is_own
from flowbound.networks.view import certified_classifier, classifier_input, weights
from flowbound.progress import bar as progress_bar
from flowbound.threat.sets import TIED, ThreatSet, threat_set

__all__ = [
    "CASCADE",
    "CASCADE_NAMES",
    "CHORD",
    "DESCENT",
    "KINKED",
    "LEVELS",
    "SLOPED",
    "SPLIT",
    "SPLIT_PIXELS",
    "Level",
    "certified",
    "certified_margins",
    "level_margins",
]


class Level(NamedTuple):
    """One relaxation the certificate can run: ``kink`` whether each pixel keeps the
    warp's kink at zero flow (two one-sided chords) or takes one chord (the kink
    widening its offset interval); ``ellipsoid`` the flow terms (``"linear"``,
    ``"kink"``) whose ellipsoid value is computed, the others taking their box value,
    ``"slopes"`` (with both) each row's own slopes between the two chords, and
    ``"descent"`` (with those) a few steps of those slopes towards each row's bound;
    ``split`` k > 0: the last step of every margin it leaves at or below zero taken
    again over the 2^k sign patterns of the flow at the margin's k most influential
    pixels (:mod:`~flowbound.certificates.flow_split`). Every level is sound."""

    kink: bool
    ellipsoid: frozenset[str]
    split: int = 0


#: One chord per pixel, the slope term in the ellipsoid: the cascade's cheap first level
#: (the certificate before the kink was kept, bit for bit).
CHORD = Level(False, frozenset({"linear"}))
#: The kink kept and in the ellipsoid with the slope: the cascade's second level.
KINKED = Level(True, frozenset({"linear", "kink"}))
#: As KINKED, and each neuron (and each margin) takes its own slope per pixel between
#: the two chords where the kink works against it (``"slopes"``,
#: :meth:`~flowbound.certificates.ellipsoid.FlowTerms.shared`): the third level.
SLOPED = Level(True, frozenset({"linear", "kink", "slopes"}))
#: As SLOPED, and each row's slopes then take a few steps towards the sign of its bound's
#: maximiser (``"descent"``), each row keeping its smallest bound: the fourth level.
DESCENT = Level(True, ELLIPSOID_TERMS)
#: As DESCENT, and each margin it leaves at or below zero bounded again with the flow's
#: sign split at the margin's SPLIT_PIXELS most influential (pixel, axis) pairs: the
#: cascade's fourth level (the split runs on those margins only, so it costs nothing
#: where DESCENT certifies).
SPLIT_PIXELS = 4
SPLIT = Level(True, ELLIPSOID_TERMS, SPLIT_PIXELS)

#: The levels by name, as a profile names them (``local.branch.level``).
LEVELS = {
    "chord": CHORD,
    "kinked": KINKED,
    "sloped": SLOPED,
    "descent": DESCENT,
    "split": SPLIT,
}

#: The levels :func:`certified` tries a digit at, cheapest first: a digit one level
#: certifies is not tried at the next (each level is sound, so either certifying it is
#: a certificate); the answer is at least the last level's, at a fraction of its cost.
#: By name (as the records of a run name the levels it was certified at) and as levels.
CASCADE_NAMES = ("chord", "kinked", "sloped", "split")
CASCADE = tuple(LEVELS[name] for name in CASCADE_NAMES)

#: The most pixels a level may split the flow's sign at (2^12 leaves per open margin).
_MAX_SPLIT = 12

#: How :func:`certified_margins` bounds the layers after the first (``deeper``).
DEEPER = ("crown", "interval")


def _check_modes(modes, d: int) -> int | None:
    """None (all eigenvectors of M^T M), or an int >= 0; values above d mean all d."""
    if modes is None:
        return None
    if isinstance(modes, bool) or not isinstance(modes, numbers.Integral):
        raise TypeError(
            f"modes must be None or an integer 0 <= modes <= {d} (the eigenvectors of M^T M "
            f"used for the ellipsoid), got {type(modes).__name__} {modes!r}"
        )
    if modes < 0:
        raise ValueError(f"modes must be None or an integer 0 <= modes <= {d}, got {modes}")
    return int(modes)


def _check_level(level) -> Level:
    """``level`` as a :class:`Level` whose flow terms the certificate knows."""
    if not isinstance(level, Level) or not isinstance(level.kink, bool):
        raise TypeError(f"level must be a Level (e.g. CHORD or KINKED), got {level!r}")
    if not level.ellipsoid <= ELLIPSOID_TERMS:
        raise ValueError(
            f"level.ellipsoid must name flow terms among {sorted(ELLIPSOID_TERMS)}, got "
            f"{sorted(level.ellipsoid)}"
        )
    if isinstance(level.split, bool) or not isinstance(level.split, numbers.Integral):
        raise TypeError(f"level.split must be an integer >= 0, got {level.split!r}")
    if not 0 <= level.split <= _MAX_SPLIT:
        raise ValueError(
            f"level.split must be between 0 and {_MAX_SPLIT} (2^split leaves per margin), "
            f"got {level.split}"
        )
    return level


class _Checked(NamedTuple):
    net: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    modes: int | None
    device: torch.device | None


def _checked(model, x, y, threat, modes, device, classifier_only=False) -> _Checked:
    """Every argument of a certificate, checked before any work (or early return): the
    network (flowbound's own architectures, a spatial transformer only with
    ``classifier_only=True``; any other network as a chain of supported layers,
    :func:`~flowbound.networks.chain.chain`), square images of the size the network
    takes, labels among its classes, the threat set, ``modes`` and ``device``."""
    threat_set(threat)
    x = check_images("x", x)
    side = _side(x)
    if is_own(model):
        net = certified_classifier(model, classifier_only)
        w, v = weights(net)
        inputs, classes = (v if w is None else w).shape[1], v.shape[0]
        if side * side != inputs:
            raise ValueError(
                f"x has {side} x {side} = {side * side} pixels per image, but the network "
                f"takes {inputs} inputs"
            )
    else:
        if not isinstance(classifier_only, bool):
            raise TypeError(f"classifier_only must be True or False, got {classifier_only!r}")
        net, classes = model, chain(model, side).classes  # refusals and sizes
    y = check_labels("y", y, len(x), classes=classes)
    return _Checked(net, x, y, _check_modes(modes, side * side), check_device("device", device))


def certified_margins(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    threat: str | ThreatSet = TIED,
    modes: int | None = 200,
    chunk: int = 32,
    device: str | torch.device | None = None,
    grad: bool = False,
    kink: bool = True,
    classifier_only: bool = False,
    deeper: str = "crown",
) -> torch.Tensor:
    """Certified lower bounds (N, K) of min over the threat set of f_y(g) - f_j(g) in
    float64 (+inf at j = y); > 0 for every j certifies x at eps. Steps 1-3 of the module
    notes; ``modes`` eigenvectors of M^T M for the ellipsoid (None: all, exact),
    ``chunk`` images at a time; ``device`` defaults to x's.

    A spatial transformer (``models.STNClassifier``) is refused unless
    ``classifier_only=True``: the margins are then those of its classifier on the
    transformed digit, which the flow may move through the transform: they do not
    certify the model itself.

    ``grad=True`` is the training surrogate (f_cert): the same computation on the
    model's own parameters, in their dtype and on their device, differentiable in W
    and V. A certificate is what ``grad=False`` returns (float64, detached).

    Every argument is checked first (:func:`_checked`; ``chunk`` an int >= 1): a
    network the bound cannot represent exactly (a layer outside
    :data:`flowbound.networks.chain.SUPPORTED`) is a TypeError, a bad size or value a
    ValueError naming the argument. An empty batch gives a (0, K) result.
    ``kink=True``: the larger of the margins of the kinked level and the cascade's
    fourth (:data:`KINKED`, :data:`SPLIT`: the slopes stepped, the flow's sign split
    for the margins still at or below zero; each is a lower bound, and the last one's
    tighter flow terms can still move CROWN's ReLU slopes the wrong way); the training
    surrogate takes :data:`KINKED` alone, which the cached networks trained with;
    ``kink=False``: one chord per pixel (the first level of :func:`certified`'s
    cascade; cheaper, looser). ``deeper``: how the pre-activations of the layers after
    the first are bounded, ``"crown"`` (back-substitution) or ``"interval"`` (interval
    arithmetic from the first layer's bounds, as CROWN-IBP trains: sound, looser, far
    cheaper; the margins themselves are back-substituted either way); a network with
    one hidden layer has no such layer."""
    eps = check_number("eps", eps, low=0.0)
    chunk = check_int("chunk", chunk)
    for name, flag in (("grad", grad), ("kink", kink)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if deeper not in DEEPER:
        raise ValueError(f"deeper must be one of {', '.join(DEEPER)}, got {deeper!r}")
    checked = _checked(model, x, y, threat, modes, device, classifier_only)
    if not kink:
        return _margins(model, checked, eps, threat, chunk, grad, CHORD, deeper)
    kinked = _margins(model, checked, eps, threat, chunk, grad, KINKED, deeper)
    if grad:
        return kinked
    # tighter flow terms can still give a smaller margin (CROWN's lower ReLU slopes
    # follow the bounds): each level is a lower bound, so the larger one is too
    last = _margins(model, checked, eps, threat, chunk, grad, SPLIT, deeper)
    return torch.maximum(kinked, last)


def level_margins(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    level: Level,
    *,
    threat: str | ThreatSet = TIED,
    modes: int | None = 200,
    chunk: int = 32,
    classifier_only: bool = False,
) -> torch.Tensor:
    """:func:`certified_margins` at any :class:`Level` (:data:`CHORD` and :data:`KINKED`
    are the cascade's; others, e.g. every flow term at its box value, for comparison),
    in float64. Every argument is checked as there."""
    eps = check_number("eps", eps, low=0.0)
    chunk = check_int("chunk", chunk)
    _check_level(level)
    checked = _checked(model, x, y, threat, modes, None, classifier_only)
    return _margins(model, checked, eps, threat, chunk, False, level)


def _margins(
    model: nn.Module,
    checked: _Checked,
    eps: float,
    threat: str | ThreatSet,
    chunk: int,
    grad: bool,
    level: Level,
    deeper: str = "crown",
) -> torch.Tensor:
    """:func:`certified_margins` on checked arguments at ``level``."""
    net, x, y, modes, dev = checked
    if is_own(model):
        _, x = classifier_input(model, x)  # an STN: its classifier on the transformed images
    side = x.shape[-1]
    if grad:  # the model's own parameters, in their dtype and on their device
        layers = chain(net, side, dtype=None)
        dtype, dev = layers.dtype, layers.device
    else:
        dev = dev if dev is not None else x.device
        layers, dtype = chain(net, side, device=dev), torch.float64
    k = layers.classes
    if len(x) == 0:
        return torch.zeros(0, k, dtype=dtype, device=dev)
    x = x.to(dev, dtype)
    y = y.to(dev)
    n = len(x)
    pb = _pixel_bounds(x, eps, threat, dtype, level.kink)
    flow = FlowTerms(eps, threat, side, dev, modes, dtype, level.ellipsoid)
    idx = support(pb)
    # certificates skip the neurons the box decides; the training surrogate (grad)
    # computes every neuron's value, as it always did
    bounds = chain_pre_activation_bounds(
        layers.stages, pb, flow, idx, chunk, skip=not grad, deeper=deeper
    )
    last = layers.stages[-1]
    a = last.matrix()
    if a is None:
        a = last.back(torch.eye(k, dtype=dtype, device=dev))
    c = a[y][:, None, :] - a[None, :, :]  # (N, K, n): rows of f_y - f_j
    if last.bias is None:
        const = torch.zeros(n, k, dtype=dtype, device=dev)
    else:
        const = last.bias[y][:, None] - last.bias[None, :]
    rho, const = back_substituted(layers.stages, bounds, len(layers.stages) - 1, c, const)
    out = over_threat(rho, const, pb, flow, idx, chunk)
    if level.split and not grad:
        out = _split_margins(out, rho, const, pb, flow, idx, chunk, level.split, y)
    if not grad and not bool(torch.isfinite(out).all()):  # fail closed: never a bound
        raise FloatingPointError(
            "a certified margin came out NaN or infinite (check the network's weights): "
            "no certificate"
        )
    out[torch.arange(n, device=dev), y] = math.inf
    return out


def _split_margins(out, rho, const, pb, flow, idx, chunk, pixels, y) -> torch.Tensor:
    """``out`` (N, K) with every margin j != y at or below zero bounded again with the
    flow's sign split at ``pixels`` pixels (:func:`split_over_threat`), the larger of
    the two kept (each is a lower bound)."""
    cls = torch.arange(out.shape[1], device=out.device)
    open_ = (out <= 0) & (cls[None, :] != y[:, None])
    n_idx, j_idx = torch.nonzero(open_, as_tuple=True)
    if len(n_idx) == 0:
        return out
    again = split_over_threat(
        rho[n_idx, j_idx], const[n_idx, j_idx], pb.of_images(n_idx), flow, idx[n_idx], chunk,
        pixels,
    )  # fmt: skip
    out = out.clone()
    out[n_idx, j_idx] = torch.maximum(out[n_idx, j_idx], again)
    return out


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """(N,) bool: every other class scores strictly below y, in float64 (the certificate
    at eps = 0: a tie is not a certificate); an STN's classifier on its output."""
    with torch.no_grad():
        net = model
        if is_own(model):
            net, x = classifier_input(model, x)
        layers = chain(net, x.shape[-1], device=x.device)
        scores = layers.scores(x.flatten(1).to(torch.float64))
        if not bool(torch.isfinite(scores).all()):
            raise FloatingPointError(
                "the network's scores came out NaN or infinite (check its weights): no certificate"
            )
        yy = y.to(scores.device)
        gap = scores.gather(1, yy[:, None]) - scores
        gap[torch.arange(len(yy), device=gap.device), yy] = math.inf
        return (gap > 0).all(1).cpu().numpy()


def certified(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float] | float,
    *,
    threat: str | ThreatSet = TIED,
    modes: int | None = 200,
    batch: int | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
    kink: bool = True,
    classifier_only: bool = False,
    levels: Sequence[Level] | None = None,
) -> np.ndarray:
    """Whether each image is classified correctly and certified at each eps: (E, N) bool.

    A spatial transformer is refused unless ``classifier_only=True``, which certifies
    its classifier on the transformed digit, not the model (see
    :func:`certified_margins`).

    An image not certified at some eps is not tried at larger ones (the threat
    sets grow with eps, so this only ever reports fewer certificates). At eps = 0
    the threat set is the unwarped digit: certified means classified correctly, and
    no bound is computed. Every
    argument is checked before any work, as in :func:`certified_margins`
    (``batch`` an int >= 1, digits per call; None: by device,
    :func:`~flowbound.device.chunk_size`). ``kink=False``: the first level of the cascade
    alone (one chord per pixel, the kink widening each pixel's offset interval: the
    relaxation before the kink was kept in the ellipsoid, for comparison). ``levels``:
    the levels to try, in order (default :data:`CASCADE`; with ``kink=False``,
    :data:`CHORD` alone), e.g. a prefix of the cascade to see what each level adds."""
    eps_list = check_eps_list("eps", eps)
    if levels is None:
        levels = CASCADE if kink else (CHORD,)
    elif not kink:
        raise ValueError("give either kink=False or levels, not both")
    levels = tuple(levels) if isinstance(levels, Sequence) else levels
    if not isinstance(levels, tuple) or not levels or not all(isinstance(v, Level) for v in levels):
        raise TypeError(
            f"levels must be a non-empty sequence of Level (e.g. CASCADE[:2]), got {levels!r}"
        )
    for v in levels:
        _check_level(v)
    if batch is not None:
        batch = check_int("batch", batch)
    if not isinstance(kink, bool):
        raise TypeError(f"kink must be True or False, got {kink!r}")
    net, x, y, modes, device = _checked(model, x, y, threat, modes, device, classifier_only)
    where = device if device is not None else x.device
    batch = chunk_size("certificate", where) if batch is None else batch
    inner = chunk_size("certificate_inner", where)
    order = np.argsort(eps_list, kind="stable")
    alive = _correct(model, x, y)
    out = np.zeros((len(eps_list), len(x)), dtype=bool)
    steps = [(int(e), eps_list[e]) for e in order]
    bar = progress_bar(
        total=len(steps),
        desc=f"certify ({threat_set(threat).name})",
        disable=not progress,
        unit="eps",
    )
    # digits with similar areas (a proxy for how many pixels a flow moves) share
    # chunks, so little of each chunk is padding
    area = (x.flatten(1) > 0).sum(1).cpu().numpy()
    by_area = np.argsort(area, kind="stable")
    for row, e in steps:
        if e == 0:  # the threat set is the digit itself: certified is classified correctly
            out[row] = alive
            bar.update(1)
            continue
        for level in levels:  # each level: what is left open
            idx = by_area[(alive & ~out[row])[by_area]]
            for s in range(0, len(idx), batch):
                part = torch.from_numpy(idx[s : s + batch])
                checked = _Checked(net, x[part], y[part], modes, device)
                m = _margins(model, checked, e, threat, inner, False, level)
                out[row, idx[s : s + batch]] = (m > 0).all(1).cpu().numpy()
        alive = out[row].copy()
        bar.update(1)
    bar.close()
    return out
