"""Batched L-BFGS: many independent problems minimised side by side.

Each row of ``x`` is its own problem: its own history of (s, y) pairs, its
own backtracking (Armijo) line search, its own stopping test. The objective
is evaluated only on the rows still running, so a row's path never depends
on which other rows share the batch.

Used in: stAdv (:func:`flowbound.attacks.stadv`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

__all__ = ["LBFGSResult", "lbfgs"]

#: fun(x, idx) -> (f, g): values (k,) and gradients (k, D) of problems idx at rows x (k, D).
Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
#: callback(x, f, idx) after every accepted step of problems idx.
Callback = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


class LBFGSResult(NamedTuple):
    """Final points (B, D), values (B,), iterations (B,) and why each row stopped."""

    x: torch.Tensor
    f: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor  # gradient or value-change test met (not the iteration cap)


def _direction(g, act, s_hist, y_hist, rho, gamma, newest_first):
    """Two-loop recursion for rows ``act``, slots visited newest first.

    Pairs with rho = 0 (skipped updates, unused slots) are no-ops.
    """
    q = -g
    alpha = {}
    for k in newest_first:
        sk, rk = s_hist[act, k], rho[act, k]
        alpha[k] = rk * (sk * q).sum(1)
        q = q - alpha[k].unsqueeze(1) * y_hist[act, k]
    r = gamma[act].unsqueeze(1) * q
    for k in reversed(newest_first):
        beta = rho[act, k] * (y_hist[act, k] * r).sum(1)
        r = r + s_hist[act, k] * (alpha[k] - beta).unsqueeze(1)
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
    """
    b, d = x0.shape
    dev, dt = x0.device, x0.dtype
    idx_all = torch.arange(b, device=dev)
    x = x0.clone()
    f, g = fun(x, idx_all)
    f, g = f.detach().clone(), g.detach().clone()
    s_hist = torch.zeros(b, history, d, dtype=dt, device=dev)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros(b, history, dtype=dt, device=dev)
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
        # The recursion runs on every row through views (stopped rows' results are
        # dropped): cheaper than gathering the running rows' histories.
        g_all = torch.zeros_like(g)
        g_all[act] = ga
        direc = _direction(g_all, slice(None), s_hist, y_hist, rho, gamma, newest_first)[act]
        slope = (ga * direc).sum(1)
        bad = slope >= 0  # not a descent direction: restart with steepest descent
        direc[bad] = -ga[bad]
        slope[bad] = -(ga[bad] ** 2).sum(1)
        t = torch.ones(len(act), dtype=dt, device=dev)
        fresh = first[act] | bad
        t[fresh] = torch.clamp(1.0 / ga[fresh].norm(dim=1), max=1.0)
        # Backtracking line search, each row on its own step.
        x_new, f_new, g_new = x[act].clone(), f[act].clone(), ga.clone()
        pending = torch.ones(len(act), dtype=torch.bool, device=dev)
        for _ls in range(max_ls):
            p = pending.nonzero().flatten()
            if len(p) == 0:
                break
            trial = x[act[p]] + t[p].unsqueeze(1) * direc[p]
            ft, gt = fun(trial, act[p])
            ok = ft <= f[act[p]] + c1 * t[p] * slope[p]
            okp = p[ok]
            x_new[okp], f_new[okp], g_new[okp] = trial[ok], ft[ok].detach(), gt[ok].detach()
            pending[okp] = False
            t[p[~ok]] *= 0.5
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
        s_hist[act, slot] = 0.0  # rows whose line search failed push a no-op pair
        y_hist[act, slot] = 0.0
        rho[act, slot] = 0.0
        s_hist[moved, slot] = torch.where(keep.unsqueeze(1), s, torch.zeros_like(s))
        y_hist[moved, slot] = torch.where(keep.unsqueeze(1), y, torch.zeros_like(y))
        rho[moved, slot] = torch.where(keep, 1.0 / sy.where(keep, torch.ones_like(sy)), 0.0)
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
            callback(x[moved], f[moved], moved)
    return LBFGSResult(x, f, iters, converged)
