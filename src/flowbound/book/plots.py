"""One function per figure: draws from experiment data, returns the Figure.

:func:`save_figure` writes ``<figures dir>/<name>.png`` and ``.pdf``, where
the folder is ``$FLOWBOUND_FIGURES`` or ``_build/figures``. Figures are
plain :class:`matplotlib.figure.Figure` objects (no pyplot state), so they
display only where a chapter shows or glues them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from flowbound.certificates.registry import BOUNDS
from flowbound.threat.loss import JACOBIAN_TITLES
from flowbound.threat.sets import TIED
from flowbound.training.zoo import VARIANTS

__all__ = [
    "JACOBIAN_TITLES",
    "figures_dir",
    "plot_budget_attack",
    "plot_figure6",
    "plot_growth_beyond",
    "plot_aabb",
    "plot_zero_one",
    "network_color",
    "plot_convergence",
    "plot_figure1",
    "plot_figure12",
    "plot_lower_bounds",
    "plot_samples",
    "plot_jacobians_at_zero",
    "plot_lambda_map",
    "plot_midpoint_convergence",
    "plot_warp_demo",
    "save_figure",
]


def figures_dir() -> Path:
    """Where figures are saved: ``$FLOWBOUND_FIGURES`` or ``_build/figures``."""
    return Path(os.environ.get("FLOWBOUND_FIGURES", "_build/figures"))


def save_figure(fig: Figure, name: str) -> Path:
    """Save ``fig`` as ``<figures dir>/<name>.png`` (and ``.pdf``); return the PNG path.
    The PDF carries no creation date, so an unchanged figure is byte-identical."""
    folder = figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    fig.savefig(png, dpi=150, bbox_inches="tight")
    fig.savefig(folder / f"{name}.pdf", bbox_inches="tight", metadata={"CreationDate": None})
    return png


def _image(ax: Axes, img: np.ndarray, title: str, **kw: Any) -> None:
    ax.imshow(img, cmap=kw.pop("cmap", "gray"), **kw)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _quiver(ax: Axes, du: np.ndarray, dv: np.ndarray, title: str, step: int = 2) -> None:
    side = du.shape[0]
    rows, cols = np.mgrid[0:side:step, 0:side:step]
    ax.quiver(
        cols,
        rows,
        du[::step, ::step],
        dv[::step, ::step],
        angles="xy",
        scale_units="xy",
        scale=0.25,
        width=0.005,
    )
    ax.set_xlim(-1, side)
    ax.set_ylim(side, -1)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_warp_demo(d: dict[str, Any]) -> Figure:
    """Digit, its (du, dv) flow as arrows (x4), the warped digit, and the tied warp."""
    fig = Figure(figsize=(10, 2.8))
    axes = fig.subplots(1, 4)
    _image(axes[0], d["image"], f"benign x (label {d['label']})", vmin=0, vmax=1)
    _quiver(axes[1], d["flow"][0], d["flow"][1], "flow (du, dv), arrows x4")
    _image(axes[2], d["warped"], f"g(r; x), l_diff = {d['l_diff']:.2f}", vmin=0, vmax=1)
    _image(axes[3], d["warped_tied"], f"tied flow, l_diff = {d['l_diff_tied']:.2f}", vmin=0, vmax=1)
    fig.tight_layout()
    return fig


def plot_lambda_map(d: dict[str, Any]) -> Figure:
    """lambda_i over the image grid (Prop. 2): the box half-widths per unit eps."""
    fig = Figure(figsize=(3.6, 3.0))
    ax = fig.subplots()
    im = ax.imshow(d["lambda_map"], cmap="viridis")
    fig.colorbar(im, ax=ax, label=r"$\lambda_i$")
    ax.set_title(rf"$\lambda$ on {d['side']}x{d['side']}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_jacobians_at_zero(d: dict[str, Any]) -> Figure:
    """Dg(0; x) as printed (equal to x) beside the exact derivative."""
    fig = Figure(figsize=(7.5, 2.6))
    axes = fig.subplots(1, 3)
    lim = float(np.abs(d["true"]).max())
    _image(axes[0], d["image"], "x", vmin=0, vmax=1)
    _image(axes[1], d["paper"], "Dg(0; x) as printed", cmap="RdBu_r", vmin=-lim, vmax=lim)
    _image(axes[2], d["true"], "exact Dg(0; x)", cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.tight_layout()
    return fig


def plot_midpoint_convergence(d: dict[str, Any]) -> Figure:
    """Mean |midpoint estimate - exact l_adv| against n, both Jacobians, log-log."""
    fig = Figure(figsize=(4.8, 3.4))
    ax = fig.subplots()
    ax.loglog(d["n"], d["abs_err_true"], "o-", label="exact Jacobian")
    ax.loglog(d["n"], d["abs_err_paper"], "s--", label="Dg as printed")
    ax.axhline(d["mean_abs_exact"], color="gray", lw=0.8, ls=":", label=r"mean $|\ell_{adv}|$")
    ax.set_xlabel("midpoint intervals n")
    ax.set_ylabel(r"mean |estimate $-\ \ell_{adv}$|")
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    return fig


def plot_figure1(d: dict[str, Any]) -> Figure:
    """Figure 1: (a) benign, (b) PGD, (c) stAdv adversarial input, (d) the stAdv flow."""
    fig = Figure(figsize=(10, 2.9))
    axes = fig.subplots(1, 4)
    _image(axes[0], d["benign"], f"(a) benign: {d['pred_benign']}", vmin=0, vmax=1)
    _image(axes[1], d["pgd"], f"(b) PGD: {d['pred_pgd']}", vmin=0, vmax=1)
    _image(axes[2], d["stadv"], f"(c) stAdv: {d['pred_stadv']}", vmin=0, vmax=1)
    _quiver(axes[3], d["flow"][0], d["flow"][1], "(d) flow (du, dv), arrows x4")
    fig.tight_layout()
    return fig


#: How each reading of Dg is named in figures and tables.


def plot_lower_bounds(
    data: dict[str, dict[str, dict[str, Any]]],
    *,
    theorem: str,
    ceilings: dict[str, float] | None = None,
) -> Figure:
    """Figures 2 and 8: best lower bound over class pairs against eps, one panel per
    Jacobian; solid: the algorithm, dashed: the theorem's pair (both evaluated
    exactly), dotted: the theorem's linearised value (an estimate); thin
    horizontal lines: each network's loss ceiling (``ceilings``), which no
    flow can exceed."""
    jacs = list(next(iter(data.values())))
    fig = Figure(figsize=(5.2 * len(jacs), 5.0))
    axes = np.atleast_1d(fig.subplots(1, len(jacs), sharey=True))
    colors = {}
    for ax, jac in zip(axes, jacs, strict=True):
        for k, (net, by_jac) in enumerate(data.items()):
            d = by_jac[jac]
            c = colors.setdefault(net, f"C{k}")
            keep = d["eps"] > 0
            e = d["eps"][keep]
            ax.semilogy(e, d["exact"].max(1)[keep], "o-", color=c, label=f"{net}: algorithm")
            ax.semilogy(
                e, d["thm_exact"].max(1)[keep], "s--", color=c, ms=4, label=f"{net}: {theorem} pair"
            )
            ax.semilogy(
                e,
                d["thm_linear"].max(1)[keep],
                ":",
                color=c,
                lw=1,
                label=f"{net}: {theorem}, linearised",
            )
            if ceilings and net in ceilings:
                ax.axhline(ceilings[net], color=c, lw=0.8, ls="-.", label=f"{net}: ceiling")
        ax.set_title(JACOBIAN_TITLES[jac], fontsize=10)
        ax.set_xlabel(r"$\epsilon$ (bound on $\|Mr\|$)")
    axes[0].set_ylabel(r"lower bound on $\sup \ell_{adv}$")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=len(data), frameon=False)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    return fig


def plot_growth_beyond(curves: list[dict[str, Any]], paper_eps: float) -> Figure:
    """Beyond Figure 2: the lower bound far past the paper's eps grid (log-log):
    solid, the best exact value found at any budget up to eps; dotted,
    Algorithm 1's value at eps itself; dash-dotted, each network's ceiling."""
    fig = Figure(figsize=(6.2, 4.0))
    ax = fig.subplots()
    for k, d in enumerate(curves):
        c = f"C{k}"
        ax.loglog(d["eps"], d["best"], "o-", color=c, ms=3, label=f"{d['network']} ({d['shape']})")
        ax.loglog(d["eps"], d["exact"], ":", color=c, lw=1)
        ax.axhline(d["ceiling"], color=c, lw=0.8, ls="-.")
    ax.axvline(paper_eps, color="0.5", lw=0.8, ls=":", label="end of the paper's grid")
    ax.set_xlabel(r"$\epsilon$ (bound on $\|Mr\|$)")
    ax.set_ylabel(r"lower bound on $\sup \ell_{adv}$ (exact values)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_samples(by_jac: dict[str, dict[str, Any]], eps_index: int) -> Figure:
    """Figures 3, 9, 10: x_*, g(r_*; x_*) and the flow r_* of the best pair, per Jacobian."""
    import torch

    from flowbound.threat.warp import warp

    fig = Figure(figsize=(8.4, 2.9 * len(by_jac)))
    axes = np.atleast_2d(fig.subplots(len(by_jac), 3))
    for row, (jac, d) in zip(axes, by_jac.items(), strict=True):
        x = d["x"][eps_index]
        r = d["r"][eps_index]
        adv = warp(torch.from_numpy(x)[None], torch.from_numpy(r)[None])[0].numpy()
        i, j = d["pair"][eps_index]
        _image(row[0], x, f"x* ({JACOBIAN_TITLES[jac]}; pair {i} vs {j})", vmin=-1, vmax=1)
        _image(row[1], adv, "g(r*; x*)", vmin=-1, vmax=1)
        lim = float(np.abs(r).max())
        _image(
            row[2], r, f"tied flow r*, max |r| = {lim:.2f} px", cmap="RdBu_r", vmin=-lim, vmax=lim
        )
    fig.tight_layout()
    return fig


def plot_convergence(curves: list[dict[str, Any]]) -> Figure:
    """Figure 4: exact l_adv (solid) and the method's estimate (dashed) per iteration."""
    fig = Figure(figsize=(9, 3.6))
    axes = fig.subplots(1, 2)
    for ax, jac in zip(axes, ("paper", "true"), strict=True):
        for k, c in enumerate(x for x in curves if x["jacobian"] == jac):
            ax.plot(c["exact"], "-", color=f"C{k}", label=c["label"])
            ax.plot(c["estimate"], "--", color=f"C{k}", lw=0.8)
        ax.set_title(f"{JACOBIAN_TITLES[jac]} (solid: exact, dashed: estimate)", fontsize=9)
        ax.set_xlabel("iteration")
    axes[0].set_ylabel(r"$\ell_{adv}$ at the current pair")
    axes[1].legend(fontsize=6, loc="center right")
    fig.tight_layout()
    return fig


def network_color(name: str) -> str:
    """The colour of network ``name`` in every Section-4 figure: the one-hidden-layer
    variants take the colour cycle in the variant registry's order (f_nt first), any
    other name a stable entry of its own."""
    order = [n for n, v in VARIANTS.items() if v.arch != "linear"]
    if name in order and order.index(name) < 10:
        return f"C{order.index(name)}"
    return f"C{sum(map(ord, name)) % 10}"


def plot_zero_one(d: Any) -> Figure:
    """Figures 5 and 11: certified 0/1 adversarial loss against eps, one panel per
    bound (small multiples), one colour per network."""
    kinds = list(dict.fromkeys(k for by_kind in d.losses.values() for k in by_kind))
    fig = Figure(figsize=(3.4 * len(kinds) + 1.6, 3.3))
    axes = np.atleast_1d(fig.subplots(1, len(kinds), sharey=True))
    for ax, kind in zip(axes, kinds, strict=True):
        for name, by_kind in d.losses.items():
            if kind in by_kind:
                ax.plot(d.eps, by_kind[kind], "-", color=network_color(name), label=name)
        ax.set_title(BOUNDS.named(kind).label, fontsize=9)
        ax.set_xlabel(r"$\epsilon$ (bound on $\|Mr\|$)")
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("certified 0/1 adversarial loss")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return fig


def plot_figure12(d: Any) -> Figure:
    """Figure 12: certified accuracy against eps, one panel per network (its colour),
    one line per certificate, the accuracy that survives flow_apgd on tied flows (grey,
    95% Wilson band) and on full flows (dashed), an upper bound on the truth, and the
    tied-flow bracket shaded: attack >= truth >= certificate on the attacked digits."""
    names = list(d.accuracy)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(2.9 * cols + 1.8, 2.6 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True)).ravel()
    eps = d.eps
    for ax, name in zip(axes, names, strict=False):
        colour = network_color(name)
        lo, hi = d.attack_ci[name].T
        ax.fill_between(
            eps,
            d.certified_attacked[name][TIED.name],
            d.attack[name],
            color=colour,
            alpha=0.18,
            lw=0,
            label="bracket, tied flows (attacked digits)",
        )
        ax.fill_between(eps, lo, hi, color="k", alpha=0.12, lw=0)
        ax.plot(eps, d.attack[name], color="k", lw=1.0, label="survives flow_apgd, tied")
        ax.plot(
            eps, d.attack_full[name], color="k", lw=1.0, ls="--",
            label="survives flow_apgd, full",
        )  # fmt: skip
        for kind, acc in d.accuracy[name].items():
            b = BOUNDS.named(kind)  # label, line style and marker from the registry
            ax.plot(eps, acc, color=colour, ms=3, label=b.label, ls=b.style, marker=b.marker)
        ax.set_title(f"f_{name}", fontsize=9, color=colour)
        ax.set_ylim(-0.02, 1.02)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    for ax in axes[(rows - 1) * cols :]:
        ax.set_xlabel(r"$\epsilon$ (bound on $\|Mr\|$)")
    for ax in axes[::cols]:
        ax.set_ylabel("certified accuracy")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right")
    fig.tight_layout(rect=(0, 0, 1 - 1.7 / (2.9 * cols + 1.8), 1))
    return fig


def plot_aabb(d: dict[str, Any]) -> Figure:
    """Figure 7: the ellipse, its mirror image, the region of diag(s) r, and the box."""
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.subplots()
    ax.fill_between(
        d["a_grid"],
        -d["b_max"],
        d["b_max"],
        color="C0",
        alpha=0.15,
        hatch="//",
        label=r"diag(s) r, $\|s\|_\infty \leq 1$",
    )
    ax.plot(*d["ellipse"], color="C0", label=r"$\|Mr\| = \epsilon$ (projection)")
    ax.plot(*d["mirror"], "--", color="C1", label="mirror image")
    lx, ly = d["eps"] * d["lambda"]
    ax.plot(
        [-lx, lx, lx, -lx, -lx],
        [-ly, -ly, ly, ly, -ly],
        "k-",
        lw=1,
        label=r"box $[-\epsilon\lambda_i, \epsilon\lambda_i]$",
    )
    (r1, c1), (r2, c2) = d["pixels"]
    ax.set_xlabel(f"r at pixel ({r1}, {c1})")
    ax.set_ylabel(f"r at pixel ({r2}, {c2})")
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def plot_figure6(d: Any) -> Figure:
    """Figure 6: (a) stAdv success rate and (b) accuracy under stAdv against tau;
    the last point of (b), at "inf", is the clean accuracy. Solid: an image
    counts as fooled when any iterate fools it (shaded: 95% Wilson interval);
    dashed: only when the last iterate does; dotted: the same as solid with the
    flow loss's symmetric border, for the networks in ``d.symmetric``;
    vertical bars: the range over training seeds (``d.seed_runs``), any iterate."""
    fig = Figure(figsize=(10.0, 3.9))
    ax_a, ax_b = fig.subplots(1, 2)
    taus = d.taus
    pos = np.arange(len(taus) + 1)
    for k, name in enumerate(d.success):
        c = network_color(name)
        for ax, key, x in ((ax_a, "success", pos[:-1]), (ax_b, "accuracy", pos[:-1])):
            ax.plot(x, d.rates(key)[name], "o-", color=c, ms=3, label=name)
            lo, hi = d.intervals(key)[name].T
            ax.fill_between(x, lo, hi, color=c, alpha=0.15, lw=0)
            ax.plot(x, d.rates(key + "_final")[name], "--", color=c, lw=1)
            runs = d.seed_runs.get(key, {}).get(name)
            if runs is not None and len(runs) > 1:  # min-max over training seeds
                off = 0.06 * (k - len(d.success) / 2)
                ax.vlines(x + off, runs.min(0), runs.max(0), color=c, lw=1.2, alpha=0.8)
            if name in d.symmetric:
                sym = d.symmetric[name][key]
                ax.plot(x, sym, ":", color=c, lw=1.5, label=f"{name}, symmetric border")
        ax_b.plot(pos[-2:], [d.accuracy[name][-1], d.clean[name]], ":", color=c, lw=0.8)
        ax_b.plot(pos[-1], d.clean[name], "o", color=c, ms=3)
    labels = [f"{t:g}" for t in taus]
    ax_a.set_xticks(pos[:-1], labels)
    ax_b.set_xticks(pos, [*labels, "inf"])
    ax_a.set_title("(a) stAdv success rate (solid: any iterate, dashed: last)", fontsize=9)
    ax_b.set_title("(b) accuracy under stAdv", fontsize=9)
    for ax in (ax_a, ax_b):
        ax.set_xlabel(r"$\tau$")
        ax.set_ylim(-0.02, 1.02)
    ax_b.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def plot_budget_attack(d: dict[str, Any]) -> Figure:
    """Success of the budgeted flow attack against the budget eps = ||M r||, per variant."""
    fig = Figure(figsize=(5.0, 3.4))
    ax = fig.subplots()
    for name, succ in d["success"].items():
        ax.plot(d["eps"], succ, "o-", color=network_color(name), label=name)
        lo, hi = d["success_ci"][name].T
        ax.fill_between(d["eps"], lo, hi, color=network_color(name), alpha=0.15, lw=0)
    ax.set_xlabel(r"budget $\epsilon$ ($\|Mr\|_2$)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
