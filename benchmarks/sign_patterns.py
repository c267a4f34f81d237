"""How much could the exact sup over sign patterns buy over the joint bound?

For a neuron's row c, the slope and kink terms a = c a_pix, b = (c b_pix)_+ (the part
with the bound) are bounded jointly by eps sqrt(J), J = u G u + 2 b^T |G u| + b G b
(G = (M^T M)^{-1}, u the row's own slopes u = a - q sign(G a) where the kink works
against it, as the cascade's third level). The exact sup over the ellipsoid of
u^T r + b^T |r| is eps sqrt(max_s (u + s b)^T G (u + s b)) over sign patterns s
(a ferromagnetic Ising problem: G >= 0). Greedy single flips from three starts give
a lower bound E of that max, so 1 - sqrt(E / J) bounds from above what the exact
value could save. Printed per digit the certificate leaves open (f_nt, tied flows,
the first ``--images`` test digits, all four levels, exact ellipsoid), over its
neurons near their decision (|z| < 1.5 eps sqrt(J) at the unwarped digit).

    python benchmarks/sign_patterns.py --eps 0.4 0.7 --images 150 --digits 6
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from flowbound.book.trained import get_model
from flowbound.certificates.local import certified
from flowbound.certificates.pixels import pixel_bounds
from flowbound.data import load_mnist
from flowbound.networks.view import weights
from flowbound.threat.geometry import mtm


def _flipped(u, b, g, sweeps: int = 400) -> torch.Tensor:
    """Per row a lower bound of max_s (u + s b)^T G (u + s b): greedy single flips
    from s = sign(G u), all +1 and all -1, the best kept."""
    gu = u @ g
    h = b * gu
    best = None
    for s0 in (torch.sign(gu), torch.ones_like(gu), -torch.ones_like(gu)):
        s = torch.where(s0 == 0, torch.ones_like(s0), s0)
        for _ in range(sweeps):
            field = h + b * ((b * s) @ g) - b * b * g.diagonal() * s
            gain = -4 * s * field  # the change of the value when s_i flips
            k = gain.argmax(1)
            up = gain.gather(1, k[:, None])[:, 0] > 1e-12
            if not bool(up.any()):
                break
            s[up, k[up]] *= -1
        value = (u * gu).sum(1) + 2 * (s * h).sum(1) + (((b * s) @ g) * (b * s)).sum(1)
        best = value if best is None else torch.maximum(best, value)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", nargs="+", type=float, default=[0.4, 0.7])
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--digits", type=int, default=6, help="open digits per eps")
    args = parser.parse_args()
    net = get_model("nt", "paper", progress=False).model.double()
    w = weights(net)[0]
    x, y = load_mnist("test")
    x, y = x[: args.images].double(), y[: args.images]
    g_all = torch.from_numpy(np.linalg.inv(mtm(28)))
    print("| eps | digit | neurons | median | 90% quantile | largest |")
    print("|---:|---:|---:|---:|---:|---:|")
    for eps in args.eps:
        ok = certified(net, x, y, [eps], modes=None)[0]
        right = (net(x).argmax(1) == y).numpy()
        for i in np.nonzero(right & ~ok)[0][: args.digits]:
            pb = pixel_bounds(x[i : i + 1], eps)
            a_pix, b_pix = pb.slope_u[0], pb.kink_u[0]
            on = torch.nonzero((a_pix != 0) | (b_pix != 0)).squeeze(1)
            g = g_all[on][:, on]
            z = x[i].reshape(-1) @ w.T
            saved = []
            for sign in (1.0, -1.0):  # the upper and the lower bound of each neuron
                c = sign * w[:, on]
                kb = c * b_pix[on]
                b, q = kb.clamp(min=0), (-kb).clamp(min=0)
                a = c * a_pix[on]
                u = a - q * torch.sign(a @ g)
                gu = u @ g
                j = (u * gu).sum(1) + 2 * (b * gu.abs()).sum(1) + ((b @ g) * b).sum(1)
                near = z.abs() < 1.5 * eps * j.sqrt()
                found = _flipped(u[near], b[near], g)
                saved.append(1 - (found / j[near]).sqrt())
            s = torch.cat(saved)
            print(
                f"| {eps:g} | {i} | {len(s)} | {s.median():.2%} | {s.quantile(0.9):.2%} "
                f"| {s.max():.2%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
