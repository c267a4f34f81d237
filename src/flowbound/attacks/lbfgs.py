"""Batched L-BFGS: many independent problems minimised side by side.

Each row of ``x`` is its own problem: its own history of (s, y) pairs, its
own backtracking (Armijo) line search, its own stopping test. The objective
is evaluated only on the rows still running, so a row's path never depends
on which other rows share the batch.

Used in: stAdv (:func:`flowbound.attacks.stadv.stadv`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

__all__ = ["LBFGSResult", "lbfgs"]

#: fun(x, idx) -> (f, g) or (f, g, aux): values (k,), gradients (k, D) and, optionally,
#: anything per row (k,) of problems idx at rows x (k, D); idx may repeat a problem
#: (several line-search trials in one call).
Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]
#: callback(x, f, idx, aux) after every accepted step of problems idx (aux: the
#: objective's third output at the accepted points, or None).
Callback = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], None]

#: Line-search rounds with at most this many rows left evaluate several halvings of
#: each row's step in one call (see :func:`lbfgs`).
SPECULATE_ROWS = 48
#: At most this many steps per row in one speculative call.
SPECULATE_STEPS = 8


class LBFGSResult(NamedTuple):
    """Final points (B, D), values (B,), iterations (B,) and why each row stopped."""

    x: torch.Tensor
    f: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor  # gradient or value-change test met (not the iteration cap)


def _direction(g, s_hist, y_hist, rho, gamma, newest_first):
    """Two-loop recursion, every row at once; slots visited newest first.

    ``g`` (B, D); ``s_hist``, ``y_hist`` (history, B, D); ``rho`` (history, B);
    ``gamma`` (B,). Pairs with rho = 0 (skipped updates, unused slots) are no-ops.
    """
    q = -g
    alpha = {}
    for k in newest_first:
        alpha[k] = rho[k] * torch.linalg.vecdot(s_hist[k], q)
        q.addcmul_(y_hist[k], alpha[k].unsqueeze(1), value=-1.0)
    r = q.mul_(gamma.unsqueeze(1))
    for k in reversed(newest_first):
        beta = rho[k] * torch.linalg.vecdot(y_hist[k], r)
        r.addcmul_(s_hist[k], (alpha[k] - beta).unsqueeze(1))
    return r


def lbfgs(
    fun: Objective,
    x0: torch.Tensor,
    *,
    max_iter: int = 100,
    history: int = 10,
    gtol: float = 1e-5,
    ftol: float = 2.2e-9,
    c1: float = 1e-4,
    max_ls: int = 25,
    callback: Callback | None = None,
) -> LBFGSResult:
    """Minimise B independent objectives from x0 (B, D).

    Stops a row when ||g||_inf <= gtol, when the relative decrease
    (f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol (the tests of scipy's
    L-BFGS-B, with its default tolerances), when its line search finds no
    decrease in ``max_ls`` halvings, or after ``max_iter`` iterations. A pair
    with s^T y <= 0 is not stored (its slot holds a no-op pair).

    Every running row pushes one pair per iteration (a no-op pair when the
    curvature test fails) and a stopped row never reads its history again,
    so one ring pointer serves all rows and nothing is shifted or copied.

    The line search halves each row's step until the Armijo test holds. When
    few rows are still searching (at most ``SPECULATE_ROWS``), one call
    evaluates several of their next halvings at once (t, t/2, t/4, ...) and
    each row takes the first that passes: the step a one-at-a-time search
    would accept, in fewer calls (a call on a few rows costs mostly its fixed
    overhead).
    """
    b, d = x0.shape
    dev, dt = x0.device, x0.dtype
    idx_all = torch.arange(b, device=dev)
    x = x0.clone()
    f, g = (out.detach().clone() for out in fun(x, idx_all)[:2])
    s_hist = torch.zeros(history, b, d, dtype=dt, device=dev)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros(history, b, dtype=dt, device=dev)
    gamma = torch.ones(b, dtype=dt, device=dev)
    iters = torch.zeros(b, dtype=torch.long, device=dev)
    done = g.abs().amax(1) <= gtol
    converged = done.clone()
    first = torch.ones(b, dtype=torch.bool, device=dev)
    for it in range(max_iter):
        act = (~done).nonzero().flatten()
        if len(act) == 0:
            break
        ga = g[act]
        used = min(it, history)
        newest_first = [(it - 1 - j) % history for j in range(used)]
        if 2 * len(act) >= b:  # on every row (stopped rows' results are dropped)
            g_all = torch.zeros_like(g)
            g_all[act] = ga
            direc = _direction(g_all, s_hist, y_hist, rho, gamma, newest_first)[act]
        else:  # few rows left: gather their histories
            direc = _direction(
                ga, s_hist[:, act], y_hist[:, act], rho[:, act], gamma[act], newest_first
            )
        slope = (ga * direc).sum(1)
        bad = slope >= 0  # not a descent direction: restart with steepest descent
        direc[bad] = -ga[bad]
        slope[bad] = -(ga[bad] ** 2).sum(1)
        t = torch.ones(len(act), dtype=dt, device=dev)
        fresh = first[act] | bad
        t[fresh] = torch.clamp(1.0 / ga[fresh].norm(dim=1), max=1.0)
        # Backtracking line search, each row on its own step.
        x_new, f_new, g_new = x[act].clone(), f[act].clone(), ga.clone()
        aux_new = None
        pending = torch.ones(len(act), dtype=torch.bool, device=dev)
        tried = 0  # halvings tried so far, the same for every row still searching
        while tried < max_ls:
            p = pending.nonzero().flatten()
            if len(p) == 0:
                break
            k = 1 if len(p) > SPECULATE_ROWS else SPECULATE_STEPS
            k = max(1, min(k, SPECULATE_ROWS // len(p), max_ls - tried))
            scale = 0.5 ** torch.arange(k, dtype=dt, device=dev)
            rows = p.repeat_interleave(k)
            steps = (t[p].unsqueeze(1) * scale).reshape(-1)
            trial = x[act[rows]] + steps.unsqueeze(1) * direc[rows]
            out = fun(trial, act[rows])
            ft, gt = out[0].detach(), out[1].detach()
            ok = (ft <= f[act[rows]] + c1 * steps * slope[rows]).view(len(p), k)
            passed = ok.any(1)
            first_ok = (ok.cumsum(1) == 0).sum(1)  # leading failures: the first pass
            pick = (torch.arange(len(p), device=dev) * k + first_ok)[passed]
            okp = p[passed]
            x_new[okp], f_new[okp], g_new[okp] = trial[pick], ft[pick], gt[pick]
            if len(out) > 2:
                if aux_new is None:
                    aux_new = torch.zeros(len(act), dtype=out[2].dtype, device=dev)
                aux_new[okp] = out[2][pick]
            pending[okp] = False
            t[p[~passed]] *= 0.5**k
            tried += k
        failed = act[pending]
        done[failed] = True
        moved = act[~pending]
        if len(moved) == 0:
            continue
        sel = ~pending
        s = x_new[sel] - x[moved]
        y = g_new[sel] - g[moved]
        sy = (s * y).sum(1)
        keep = sy > 1e-10 * (s.norm(dim=1) * y.norm(dim=1)).clamp_min(1e-30)
        slot = it % history
        s_hist[slot, act] = 0.0  # rows whose line search failed push a no-op pair
        y_hist[slot, act] = 0.0
        rho[slot, act] = 0.0
        s_hist[slot, moved] = torch.where(keep.unsqueeze(1), s, torch.zeros_like(s))
        y_hist[slot, moved] = torch.where(keep.unsqueeze(1), y, torch.zeros_like(y))
        rho[slot, moved] = torch.where(keep, 1.0 / sy.where(keep, torch.ones_like(sy)), 0.0)
        gamma[moved] = torch.where(keep, sy / (y * y).sum(1).clamp_min(1e-30), gamma[moved])
        f_old = f[moved]
        x[moved], f[moved], g[moved] = x_new[sel], f_new[sel], g_new[sel]
        iters[moved] += 1
        first[moved] = False
        rel = (f_old - f[moved]) / torch.maximum(
            torch.maximum(f_old.abs(), f[moved].abs()), torch.ones_like(f_old)
        )
        stop = (g[moved].abs().amax(1) <= gtol) | (rel <= ftol)
        converged[moved[stop]] = True
        done[moved[stop]] = True
        if callback is not None:
            callback(x[moved], f[moved], moved, None if aux_new is None else aux_new[sel])
    return LBFGSResult(x, f, iters, converged)
