"""SDP bound: flowbound.bounds.sdp_bound against cvxpy (SCS, Clarabel), side by side.

Instances: random A (Gaussian) and slices of a trained f_nt (the first h
hidden units and d pixels of diag(v) W diag(lambda), v = V_0 - V_1), at
n = h + d in {70, 150, 296}; then sdp_bound alone at full size (784 x 500,
n = 1284) and for all 45 class pairs of the trained 784-500-10 network.

    python benchmarks/sdp.py [--sizes 70 150 296] [--clarabel-max 150]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from flowbound.bounds import certify, certify_cholesky, sdp_bound, sdp_bound_cvxpy, sdp_matrix
from flowbound.geometry import aabb_lambda
from flowbound.models import get_model

SHAPES = {70: (30, 40), 150: (60, 90), 296: (128, 168)}


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[70, 150, 296])
    parser.add_argument(
        "--clarabel-max", type=int, default=150, help="largest n to run Clarabel on (it is slow)"
    )
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--rank", type=int, default=None, help="factorisation rank (default: ours)")
    args = parser.parse_args()

    net = get_model("nt", args.profile, section=4).model.cpu()
    w = net.W.weight.detach().double()
    vmat = net.V.weight.detach().double()
    lam = aabb_lambda(28)
    trained = sdp_matrix(w, vmat[0] - vmat[1], lam).numpy()
    rng = np.random.default_rng(0)

    print(
        "| instance | n | ours (s) | ours gap | SCS (s) | SCS value / ours | Clarabel (s) "
        "| Clarabel value / ours | SCS / ours time |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        h, d = SHAPES[n]
        for name, a in (("random", rng.standard_normal((h, d))), ("trained", trained[:h, :d])):
            ours, t_ours = timed(lambda a=a: sdp_bound(torch.from_numpy(a), tol=1e-4))
            scs, t_scs = timed(lambda a=a: sdp_bound_cvxpy(a, solver="SCS", eps=1e-6))
            if n <= args.clarabel_max:
                cl, t_cl = timed(lambda a=a: sdp_bound_cvxpy(a, solver="CLARABEL"))
                cl_cells = f"{t_cl:.2f} | {cl / ours.upper:.6f}"
            else:
                cl_cells = "not run | -"
            print(
                f"| {name} | {n} | {t_ours:.3f} | {ours.gap:.1e} | {t_scs:.2f} "
                f"| {scs / ours.upper:.6f} | {cl_cells} | {t_scs / t_ours:.0f}x |",
                flush=True,
            )

    full, t_full = timed(lambda: sdp_bound(torch.from_numpy(trained), tol=1e-4, rank=args.rank))
    print(
        f"\nfull size (500 x 784, n = 1284), pair (0, 1): {t_full:.3f} s, "
        f"certified gap {full.gap:.1e}, upper {full.upper:.4f}, {full.iterations} sweeps"
    )
    pairs = [(i, j) for i in range(10) for j in range(i + 1, 10)]
    a45 = torch.stack([sdp_matrix(w, vmat[i] - vmat[j], lam) for i, j in pairs])
    res, t45 = timed(lambda: sdp_bound(a45, tol=1e-4, rank=args.rank))
    print(
        f"all 45 pairs, batched: {t45:.2f} s ({t45 / 45:.3f} s per pair), "
        f"max certified gap {res.gap.max():.1e}"
    )

    # The certificate alone, side by side on the 45 final dual vectors: float64
    # eigenvalues (certify) against one shifted float64 Cholesky at the delta the
    # solver tests (certify_cholesky).
    a45n = a45.numpy()
    n = sum(a45n.shape[1:])
    deltas = [0.99 * 1e-4 * res.c[k].sum() / (n * (1 - 1e-4)) for k in range(45)]
    eig, t_eig = timed(lambda: [certify(a45n[k], res.c[k]) for k in range(45)])
    chol, t_chol = timed(
        lambda: [certify_cholesky(a45n[k], res.c[k], deltas[k]) for k in range(45)]
    )
    pairs_ok = [(c, e) for c, e in zip(chol, eig, strict=True) if c is not None]
    excess = max((c - e) / e for c, e in pairs_ok) if pairs_ok else float("nan")
    print(
        f"certificate per pair: eigvalsh {t_eig / 45 * 1e3:.1f} ms, shifted Cholesky "
        f"{t_chol / 45 * 1e3:.1f} ms ({t_eig / t_chol:.1f}x); proved {len(pairs_ok)} of 45; "
        f"largest relative excess over the eigenvalue bound {excess:.1e}"
    )


if __name__ == "__main__":
    main()
