"""SDP bound: flowbound.certificates.bounds.sdp_bound against cvxpy (SCS, Clarabel), side by side.

Instances: random A (Gaussian) and slices of a trained f_nt (the first h
hidden units and d pixels of diag(v) W diag(lambda), v = V_0 - V_1), at
n = h + d in {70, 150, 296}; then sdp_bound alone at full size (784 x 500,
n = 1284) and for all 45 class pairs of the trained 784-500-10 network.
``--full-size-only`` runs just the full-size comparison: the plain mixing method
(momentum 0, checked every 50 sweeps, the solver before its extrapolation step)
against the default, on trained pairs of several networks and Gaussian A, in
units of one float64 eigendecomposition of P timed in the same run.

    python benchmarks/sdp.py [--sizes 70 150 296] [--clarabel-max 150] [--full-size-only]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from flowbound.book.trained import get_model
from flowbound.certificates.bounds import (
    certify,
    certify_cholesky,
    sdp_bound,
    sdp_bound_cvxpy,
    sdp_matrix,
)
from flowbound.threat.geometry import aabb_lambda

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
    parser.add_argument("--full-size-only", action="store_true")
    args = parser.parse_args()
    if args.full_size_only:
        full_size(args.profile)
        return

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


def full_size(profile: str) -> None:
    """Plain against extrapolated mixing method at n = 1284, in eigendecompositions."""
    lam = aabb_lambda(28)
    instances = []
    for variant in ("nt", "at", "fro", "sdp"):
        net = get_model(variant, profile, section=4).model.cpu()
        w, vmat = net.W.weight.detach().double(), net.V.weight.detach().double()
        for i, j in ((0, 1), (3, 8)):
            instances.append((f"{variant} ({i}, {j})", sdp_matrix(w, vmat[i] - vmat[j], lam)))
    rng = np.random.default_rng(0)
    for k in range(3):
        instances.append((f"Gaussian {k}", torch.from_numpy(rng.standard_normal((500, 784)))))
    p = np.block([[np.zeros((500, 500)), instances[0][1].numpy()],
                  [instances[0][1].numpy().T, np.zeros((784, 784))]])  # fmt: skip
    np.linalg.eigvalsh(p)
    _, eig = timed(lambda: [np.linalg.eigvalsh(p) for _ in range(5)])
    eig /= 5
    print(f"one eigvalsh of P (n = 1284): {eig * 1e3:.1f} ms ({torch.get_num_threads()} threads)")
    print(
        "| instance | plain: s (eigh), sweeps | momentum: s (eigh), sweeps "
        "| upper, relative difference |"
    )
    print("|---|---:|---:|---:|")
    for name, a in instances:
        sdp_bound(a[:50, :80])  # warm-up
        old, t_old = timed(lambda a=a: sdp_bound(a, tol=1e-4, momentum=0.0, check_every=50))
        new, t_new = timed(lambda a=a: sdp_bound(a, tol=1e-4))
        print(
            f"| {name} | {t_old:.3f} ({t_old / eig:.1f}), {old.iterations} "
            f"| {t_new:.3f} ({t_new / eig:.1f}), {new.iterations} "
            f"| {new.upper:.6g}, {(new.upper - old.upper) / old.upper:+.1e} |",
            flush=True,
        )
    net = get_model("nt", profile, section=4).model.cpu()
    w, vmat = net.W.weight.detach().double(), net.V.weight.detach().double()
    pairs = [(i, j) for i in range(10) for j in range(i + 1, 10)]
    a45 = torch.stack([sdp_matrix(w, vmat[i] - vmat[j], lam) for i, j in pairs])
    old, t_old = timed(lambda: sdp_bound(a45, tol=1e-4, momentum=0.0, check_every=50))
    new, t_new = timed(lambda: sdp_bound(a45, tol=1e-4))
    change = np.abs(new.upper - old.upper) / old.upper
    print(
        f"\nf_nt, all 45 pairs batched (Figure 5's and the Multi-class chapter's SDPs): "
        f"plain {t_old:.2f} s, momentum {t_new:.2f} s ({t_old / t_new:.1f}x); "
        f"largest relative change of a certified value {change.max():.1e}"
    )


if __name__ == "__main__":
    main()
