"""Branch and bound over the hidden ReLUs: the certificate's last resort (beyond the paper).

For a digit the cascade leaves open, each margin f_y - f_j still bounded at or below
zero (a *problem*) is split on its unstable hidden neurons z_k = W_k g + b_k, most
influential first: on a leaf where z_k >= 0 the neuron is exact (relu z_k = z_k), on
one where z_k <= 0 it is zero. A leaf's lower bound is the cascade's last step on the
leaf's relaxation plus a Lagrange term for each split (beta-CROWN, Wang et al. 2021):

    min over {r in the threat set, s_k z_k(r) >= 0} of F(r)
        >= min over the threat set of F(r) - sum_k beta_k s_k z_k(r),   beta_k >= 0,

with s_k = +1 on the active side, -1 on the inactive one. The term is linear in z, so
it joins the hidden layer's row before the row is carried to the flow terms: the leaf
is bounded by exactly the computation of :func:`~flowbound.certificates.local.level_margins`
on another row. The lower ReLU slopes alpha (any in [0, 1], alpha-CROWN) and the betas
(any >= 0) are chosen per leaf by a few Adam steps on the kinked level's flow terms
(cheaper, and differentiable at a fraction of the dearer levels' cost); the leaf's bound
is the larger of ``level``'s value at the default slopes with beta 0 and at the slopes
and betas found, each a sound float64 bound. A problem is certified when every
leaf's bound is > 0 (the leaves cover the threat set: each split is z_k >= 0 or
z_k <= 0); a leaf still at or below zero is split on the problem's next neuron, until
``depth`` splits or ``leaves`` leaves per problem (a work budget per digit). A
problem's bound is the best, over the rounds, of the least bound over the leaves that
cover the threat set (a child can bound lower than its parent: either is sound). A
digit is certified when all its problems are.

One hidden layer only (flowbound's own networks, a two-stage chain with or without
biases): each leaf may read the cascade's own pre-activation bounds, those of the whole
threat set. A split is also a constraint on the flow, so inside a leaf the other
neurons' bounds can be narrower (``Branching.tighten``: the leaves of the first splits
bound them again with the split's multiplier, :func:`_narrowed`); measured on f_nt's
open digits this moved the margins little for its cost, and the default is off
(``benchmarks/RESULTS.md``). At a level with a ``split``, each leaf still at or below
zero takes its last step again with the flow's sign split
(:mod:`~flowbound.certificates.flow_split`): the neuron splits and the flow's are
constraints on the same threat set, so the leaves of both cover it. Any other network
is refused.

Used in: Beyond the paper: certifying individual digits (branch and bound on the digits
Figure 12 leaves open).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from flowbound.certificates.ellipsoid import FlowTerms, support
from flowbound.certificates.flow_split import split_over_threat
from flowbound.certificates.local import KINKED, Level, _check_level, _checked, _correct
from flowbound.certificates.pixels import _pixel_bounds
from flowbound.certificates.propagation import (
    _relaxed_output,
    chain_pre_activation_bounds,
    over_threat,
)
from flowbound.checks import check_eps_list, check_int, check_number
from flowbound.networks.chain import chain, is_own
from flowbound.networks.view import classifier_input
from flowbound.threat.sets import TIED, ThreatSet

__all__ = ["BRANCH", "Branching", "branched", "branched_margins"]


class Branching(NamedTuple):
    """How far a problem is split: ``depth`` neurons at most (``leaves`` leaves at
    most), ``steps`` Adam steps of the slopes and betas per round at rate ``rate``;
    the leaves of the first ``tighten`` splits narrow the other neurons' bounds
    (:func:`_narrowed`; 0: every leaf keeps the threat set's bounds); at a level with a
    ``split``, the leaves the first ``split_rounds`` rounds leave open take the flow's
    sign split (1: the root alone; each such leaf costs 2^split last steps)."""

    depth: int = 12
    leaves: int = 256
    steps: int = 8
    rate: float = 0.1
    tighten: int = 0
    split_rounds: int = 1


#: The multipliers tried for each neuron's narrowed bound in a leaf (:func:`_narrowed`):
#: the bound is concave in beta, and any beta >= 0 is sound; the best of these is kept.
NARROW_BETAS = (0.0, 0.1, 0.3, 1.0, 3.0)


#: The default branching, the paper profile's (``benchmarks/branch_levels.py`` measures
#: others: the frontier of digits closed against seconds).
BRANCH = Branching()


class _Problem(NamedTuple):
    digit: torch.Tensor  # (P,) the image each problem reads
    row: torch.Tensor  # (P, h) the hidden layer's row c = A_1[y] - A_1[j]
    const: torch.Tensor  # (P,) the last layer's bias difference
    order: torch.Tensor  # (P, depth) neurons to split, most influential first (-1: none)


def _ranked(low, up, row, depth: int) -> torch.Tensor:
    """(P, depth) each problem's unstable neurons by the area of their relaxation's
    triangle weighted by |c_k| (BaBSR's intercept score), -1 past the last one."""
    unstable = (low < 0) & (up > 0)
    width = torch.where(unstable, up - low, torch.ones_like(up))
    score = torch.where(unstable, row.abs() * up * (-low) / width, -torch.ones_like(up))
    top = score.topk(min(depth, score.shape[1]), dim=1)
    out = torch.where(top.values > 0, top.indices, -torch.ones_like(top.indices))
    pad = torch.full((len(out), depth - out.shape[1]), -1, dtype=out.dtype, device=out.device)
    return torch.cat([out, pad], 1)


def _narrowed(first, pb, flow, idx, chunk, low, up, digit, neuron) -> torch.Tensor:
    """(2, 2, S, h) bounds of every neuron's pre-activation inside the two leaves of
    each split (``digit`` (S,), ``neuron`` (S,)): [side (active, inactive), (lower,
    upper)]. By weak duality, min {z_k : s z_j >= 0} >= min over the threat set of
    z_k - beta s z_j for any beta >= 0 (the best of :data:`NARROW_BETAS`), the same
    step as a leaf's bound on another row; a leaf inside several splits may take the
    tightest of each. Neurons stable over the threat set keep their bounds."""
    h = low.shape[1]
    out = torch.stack([low[digit], up[digit]])[None].repeat(2, 1, 1, 1)
    for s_at, (d, j) in enumerate(zip(digit.tolist(), neuron.tolist(), strict=True)):
        k = torch.nonzero((low[d] < 0) & (up[d] > 0)).squeeze(1)
        k = k[k != j]
        if len(k) == 0:
            continue
        unit = torch.zeros(len(k), h, dtype=low.dtype, device=low.device)
        unit[torch.arange(len(k)), k] = 1.0
        rows = []
        for side in (1.0, -1.0):
            for beta in NARROW_BETAS:
                r = torch.cat([unit, -unit])  # lower bounds of z_k and of -z_k
                r[:, j] -= beta * side
                rows.append(r)
        rows = torch.cat(rows)
        const = rows @ first.bias if first.bias is not None else rows.new_zeros(len(rows))
        at = torch.tensor([d], device=low.device)
        v = over_threat(first.back(rows)[None], const[None], pb.of_images(at), flow,
                        idx[at], chunk)[0]  # fmt: skip
        v = v.view(2, len(NARROW_BETAS), 2, len(k)).amax(1)  # (side, lower/-upper, k)
        out[:, 0, s_at, k] = torch.maximum(out[:, 0, s_at, k], v[:, 0])
        out[:, 1, s_at, k] = torch.minimum(out[:, 1, s_at, k], -v[:, 1])
    return out


def _leaf_bounds(
    prob: _Problem, lo, hi, leaf_prob, signs, first, pb, flow, idx, chunk, alpha, beta
) -> torch.Tensor:
    """(L,) lower bounds of each leaf's margin (:func:`_leaf_rows`, then the last step
    per image, :func:`_by_digit`)."""
    rows, const, d = _leaf_rows(prob, lo, hi, leaf_prob, signs, first, alpha, beta)
    return _by_digit(rows, const, d, pb, flow, idx, chunk)


def _leaf_rows(prob: _Problem, lo, hi, leaf_prob, signs, first, alpha, beta):
    """Each leaf's margin as a linear function of the warped pixels, (rows (L, n),
    const (L,), image (L,)): the split neurons fixed on their side, the others relaxed
    with lower slopes ``alpha`` (L, h) between the leaf's bounds ``lo``, ``hi`` (L, h),
    the splits' Lagrange terms with ``beta`` (L, D) >= 0; ``signs`` (L, D) +1 active,
    -1 inactive, 0 not split."""
    order = prob.order[leaf_prob]  # (L, D)
    d = prob.digit[leaf_prob]
    h = lo.shape[1]
    split = (signs != 0) & (order >= 0)
    col = order.clamp(min=0)
    side = torch.zeros_like(lo).scatter_add(1, col, torch.where(split, signs, 0).to(lo.dtype))
    lo = torch.where(side > 0, lo.clamp(min=0), lo)
    hi = torch.where(side < 0, hi.clamp(max=0), hi)
    lam, c0 = _relaxed_output(lo, hi, prob.row[leaf_prob][:, None, :], alpha[:, None, :])
    lagrange = torch.zeros(len(lo), h, dtype=lo.dtype, device=lo.device).scatter_add(
        1, col, torch.where(split, -signs.to(lo.dtype) * beta, 0)
    )
    rows = lam[:, 0] + lagrange  # (L, h): the row on z = W g + b
    const = prob.const[leaf_prob] + c0[:, 0]
    if first.bias is not None:
        const = const + rows @ first.bias
    return first.back(rows), const, d


def _by_digit(rows, const, d, pb, flow, idx, chunk) -> torch.Tensor:
    """(L,) lower bounds over the threat set of rows (L, n) . g + const (L,), leaf l on
    image d[l]: the leaves of one image go through the last step together (one product
    with the eigenvectors per image, not per leaf), zero rows padding the others."""
    images, at = torch.unique(d, return_inverse=True)
    order = torch.argsort(at, stable=True)
    sorted_at = at[order]
    counts = torch.bincount(sorted_at, minlength=len(images))
    pos = torch.arange(len(d), device=d.device) - (torch.cumsum(counts, 0) - counts)[sorted_at]
    shape = (len(images), int(counts.max()))
    padded = rows.new_zeros(*shape, rows.shape[1]).index_put((sorted_at, pos), rows[order])
    konst = const.new_zeros(shape).index_put((sorted_at, pos), const[order])
    out = over_threat(padded, konst, pb.of_images(images), flow, idx[images], chunk)
    return out[sorted_at, pos][torch.argsort(order)]  # back to the leaves' order


def _optimised(
    prob, lo, hi, leaf_prob, signs, first, pb, flows, idx, chunk, b: Branching, split: int = 0
):
    """(L,) each leaf's bound, the larger of two values of the certificate's own flow
    terms (``flows[0]``): at the default slopes with beta 0, and at the slopes (logits)
    and betas (projected onto >= 0) that ``b.steps`` Adam steps on the cheaper search
    terms (``flows[1]``, the kinked level's) found best for the leaf: any slopes and
    betas are sound, so where they were found does not matter. ``lo``, ``hi`` (L, h):
    each leaf's pre-activation bounds."""
    main, search = flows
    default = (hi > -lo).to(lo.dtype)
    zero = torch.zeros(signs.shape, dtype=lo.dtype, device=lo.device)

    def value(flow, alpha, beta):
        return _leaf_bounds(prob, lo, hi, leaf_prob, signs, first, pb, flow, idx, chunk,
                            alpha, beta)  # fmt: skip

    with torch.no_grad():
        best = value(main, default, zero)
    if b.steps == 0:
        return _split(prob, lo, hi, leaf_prob, signs, first, pb, main, idx, chunk, default,
                      zero, best, split)  # fmt: skip
    logit = torch.logit(default.clamp(0.02, 0.98)).requires_grad_(True)
    beta = zero.clone().requires_grad_(True)
    opt = torch.optim.Adam([logit, beta], lr=b.rate)
    found = torch.full_like(best, -math.inf)
    keep_logit, keep_beta = logit.detach().clone(), zero.clone()
    for _ in range(b.steps):
        v = value(search, torch.sigmoid(logit), beta)
        with torch.no_grad():  # each leaf keeps the slopes and betas it did best with
            better = v > found
            found = torch.where(better, v, found)
            keep_logit[better], keep_beta[better] = logit[better], beta[better]
        opt.zero_grad()
        (-v.clamp(max=1.0).sum()).backward()
        opt.step()
        with torch.no_grad():
            beta.clamp_(min=0)
    with torch.no_grad():
        best = torch.maximum(best, value(main, torch.sigmoid(keep_logit), keep_beta))
        return _split(prob, lo, hi, leaf_prob, signs, first, pb, main, idx, chunk,
                      torch.sigmoid(keep_logit), keep_beta, best, split)  # fmt: skip


def _split(prob, lo, hi, leaf_prob, signs, first, pb, flow, idx, chunk, alpha, beta, best,
           pixels: int) -> torch.Tensor:  # fmt: skip
    """``best`` (L,) with each leaf still at or below zero bounded again with the flow's
    sign split at ``pixels`` pixels (the level's ``split``,
    :func:`~flowbound.certificates.flow_split.split_over_threat`) at the slopes and
    betas found, the larger kept."""
    open_ = torch.nonzero(best <= 0).squeeze(1)
    if pixels == 0 or len(open_) == 0:
        return best
    rows, const, d = _leaf_rows(
        prob, lo[open_], hi[open_], leaf_prob[open_], signs[open_], first, alpha[open_],
        beta[open_],
    )  # fmt: skip
    again = split_over_threat(rows, const, pb.of_images(d), flow, idx[d], chunk, pixels)
    best = best.clone()
    best[open_] = torch.maximum(best[open_], again)
    return best


def _branch_margins(layers, x, y, eps, threat, modes, level: Level, b: Branching, chunk):
    """(N, K) lower bounds of each digit's margins by branch and bound (+inf at y): per
    problem the best over the rounds of the smallest bound over the leaves that cover
    the threat set (those certified in earlier rounds and this round's)."""
    dev, dtype = x.device, torch.float64
    first, last = layers.stages
    pb = _pixel_bounds(x, eps, threat, dtype, level.kink)
    flow = FlowTerms(eps, threat, x.shape[-1], dev, modes, dtype, level.ellipsoid)
    cheap = level.ellipsoid & KINKED.ellipsoid  # the search's terms (the same pixels)
    search = FlowTerms(eps, threat, x.shape[-1], dev, modes, dtype, cheap)
    idx = support(pb)
    ((low, up),) = chain_pre_activation_bounds(layers.stages, pb, flow, idx, chunk, skip=True)
    k = layers.classes
    a = last.matrix()
    if a is None:
        a = last.back(torch.eye(k, dtype=dtype, device=dev))
    n = len(x)
    digit = torch.arange(n, device=dev).repeat_interleave(k)
    cls = torch.arange(k, device=dev).repeat(n)
    keep = cls != y[digit]
    digit, cls = digit[keep], cls[keep]
    row = a[y[digit]] - a[cls]
    const = torch.zeros(len(digit), dtype=dtype, device=dev)
    if last.bias is not None:
        const = last.bias[y[digit]] - last.bias[cls]
    prob = _Problem(digit, row, const, _ranked(low[digit], up[digit], row, max(b.depth, 1)))
    p = len(digit)
    leaf_prob = torch.arange(p, device=dev)
    signs = torch.zeros(p, max(b.depth, 1), dtype=torch.long, device=dev)
    done = torch.full((p,), math.inf, dtype=dtype, device=dev)  # certified leaves' least
    best = torch.full((p,), -math.inf, dtype=dtype, device=dev)
    flows = (flow, search)
    lo, hi = low[digit], up[digit]  # each leaf's bounds: the threat set's at the root
    for depth in range(b.depth + 1):
        split = level.split if depth < b.split_rounds else 0
        value = _optimised(prob, lo, hi, leaf_prob, signs, first, pb, flows, idx, chunk, b, split)
        least = done.scatter_reduce(0, leaf_prob, value, "amin")
        here = torch.zeros(p, dtype=torch.bool, device=dev)
        here[leaf_prob] = True  # a problem with no leaf this round keeps its bound
        best = torch.where(here, torch.maximum(best, least), best)
        won = value > 0
        done = done.scatter_reduce(0, leaf_prob[won], value[won], "amin")
        leaf_prob, signs, lo, hi = leaf_prob[~won], signs[~won], lo[~won], hi[~won]
        if depth == b.depth or len(leaf_prob) == 0:
            break
        # split each open leaf on its problem's next neuron, while the problem has one
        # and stays within its leaves; the others end here (their bound is kept)
        counts = torch.bincount(leaf_prob, minlength=p)
        goes = (prob.order[leaf_prob, depth] >= 0) & (2 * counts[leaf_prob] <= b.leaves)
        stop = torch.zeros(p, dtype=torch.bool, device=dev)
        stop[leaf_prob[~goes]] = True  # one leaf that cannot split: the problem stops
        keep = ~stop[leaf_prob]
        leaf_prob, signs, lo, hi = leaf_prob[keep], signs[keep], lo[keep], hi[keep]
        if len(leaf_prob) == 0:
            break
        on, off = signs.clone(), signs.clone()
        on[:, depth], off[:, depth] = 1, -1
        if depth < b.tighten:  # the children's bounds inside their split, with the parent's
            pairs = torch.stack([prob.digit[leaf_prob], prob.order[leaf_prob, depth]], 1)
            split, at = torch.unique(pairs, dim=0, return_inverse=True)
            inside = _narrowed(first, pb, search, idx, chunk, low, up, split[:, 0], split[:, 1])
            lo = torch.cat(
                [torch.maximum(lo, inside[0, 0, at]), torch.maximum(lo, inside[1, 0, at])]
            )
            hi = torch.cat(
                [torch.minimum(hi, inside[0, 1, at]), torch.minimum(hi, inside[1, 1, at])]
            )
        else:
            lo, hi = torch.cat([lo, lo]), torch.cat([hi, hi])
        leaf_prob = torch.cat([leaf_prob, leaf_prob])
        signs = torch.cat([on, off])
    out = torch.full((n, k), math.inf, dtype=dtype, device=dev)
    out[digit, cls] = best
    return out


def _prepared(model, x, y, threat, modes, level, branching, classifier_only):
    """Every argument checked (as :func:`~flowbound.certificates.local.certified` does,
    and ``level``, ``branching``): (the network's chain, float64 images the chain reads,
    labels, modes, the classifier itself)."""
    _check_level(level)
    if not isinstance(branching, Branching):
        raise TypeError(
            f"branching must be a Branching (e.g. Branching(depth=8)), got {branching!r}"
        )
    for name, low in (("depth", 0), ("leaves", 1), ("steps", 0), ("tighten", 0),
                      ("split_rounds", 0)):  # fmt: skip
        check_int(f"branching.{name}", getattr(branching, name), low=low)
    check_number("branching.rate", branching.rate, low=0.0)
    net, x, y, modes, _ = _checked(model, x, y, threat, modes, None, classifier_only)
    if is_own(model):
        _, x = classifier_input(model, x)  # an STN: its classifier on the transformed digit
    x = x.to(torch.float64)
    layers = chain(net, x.shape[-1], device=x.device)
    if len(layers.stages) != 2:
        raise TypeError(
            f"branch and bound splits the hidden ReLUs of one-hidden-layer networks; this "
            f"network has {len(layers.stages) - 1} hidden layers (use local.certified)"
        )
    return layers, x, y.to(x.device), modes, net


def branched_margins(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    threat: str | ThreatSet = TIED,
    modes: int | None = 200,
    level: Level = KINKED,
    branching: Branching = BRANCH,
    batch: int = 8,
    classifier_only: bool = False,
) -> torch.Tensor:
    """Certified lower bounds (N, K) of min over the threat set of f_y - f_j in float64
    (+inf at j = y) by branch and bound over the hidden ReLUs (module notes) on
    ``level``'s relaxation of the flow terms with ``modes`` eigenvectors of M^T M;
    ``batch`` images at a time. Each bound is at least ``level``'s own
    (:func:`~flowbound.certificates.local.level_margins`: the first round, default
    slopes and no split). Arguments are checked as in
    :func:`~flowbound.certificates.local.certified_margins`; a network with other than
    one hidden layer is a TypeError."""
    eps = check_number("eps", eps, low=0.0)
    batch = check_int("batch", batch)
    layers, x, y, modes, _ = _prepared(
        model, x, y, threat, modes, level, branching, classifier_only
    )
    return _batched(layers, x, y, eps, threat, modes, level, branching, batch)


def _batched(layers, x, y, eps, threat, modes, level, branching, batch) -> torch.Tensor:
    """:func:`_branch_margins` ``batch`` images at a time, failing closed: NaN or -inf
    anywhere is an error, never a bound."""
    parts = [
        _branch_margins(
            layers, x[s : s + batch], y[s : s + batch], eps, threat, modes, level, branching, 32
        )  # fmt: skip
        for s in range(0, len(x), batch)
    ]
    if not parts:
        return torch.zeros(0, layers.classes, dtype=torch.float64, device=x.device)
    out = torch.cat(parts)
    if not bool(torch.isfinite(out.masked_fill(torch.isinf(out) & (out > 0), 0)).all()):
        raise FloatingPointError(
            "a branched margin came out NaN or -inf (check the network's weights): no certificate"
        )
    return out


def branched(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float] | float,
    *,
    threat: str | ThreatSet = TIED,
    modes: int | None = 200,
    level: Level = KINKED,
    branching: Branching = BRANCH,
    batch: int = 8,
    classifier_only: bool = False,
) -> np.ndarray:
    """(E, N) bool: each image classified correctly and every margin certified at each
    eps by :func:`branched_margins` (at eps = 0: classified correctly). Arguments are
    checked as there."""
    eps_list = check_eps_list("eps", eps)
    batch = check_int("batch", batch)
    layers, x, y, modes, net = _prepared(
        model, x, y, threat, modes, level, branching, classifier_only
    )
    alive = _correct(net, x, y)
    out = np.zeros((len(eps_list), len(x)), dtype=bool)
    for row, e in enumerate(eps_list):
        if e == 0:
            out[row] = alive
            continue
        todo = torch.from_numpy(np.nonzero(alive)[0]).to(x.device)
        m = _batched(layers, x[todo], y[todo], e, threat, modes, level, branching, batch)
        out[row, todo.cpu().numpy()] = (m > 0).all(1).cpu().numpy()
    return out
