"""Would a split narrow the other neurons' bounds inside its leaf? Measured, not adopted.

Branch and bound (:mod:`flowbound.certificates.branch`) keeps, in every leaf, the
pre-activation bounds of the whole threat set. A split s z_j >= 0 is a constraint on
the flow, so inside the leaf another neuron's bounds may be narrower: by weak duality
min {z_k : s z_j >= 0} >= min over the threat set of z_k - beta s z_j for any
beta >= 0, the same step as a leaf's bound on another row. For the open digits of
f_nt's cached Figure 12 run at ``--eps`` on ``--threat`` flows (the chapter's level,
the exact ellipsoid), this splits each digit on its most influential unstable neuron
(BaBSR's score, the largest over the digit's margins) and bounds every other unstable
neuron on both sides with the best of ``--betas``: the mean and median narrowing of
their widths, the neurons that become stable, and the seconds per split against one
leaf bound's.

    python benchmarks/leaf_bounds.py --eps 0.4 --threat tied --digits 8
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from flowbound.book.experiments import certify_digits as cd
from flowbound.book.profiles import load_profile
from flowbound.certificates import local
from flowbound.certificates.branch import _ranked
from flowbound.certificates.ellipsoid import FlowTerms, support
from flowbound.certificates.pixels import _pixel_bounds
from flowbound.certificates.propagation import chain_pre_activation_bounds, over_threat
from flowbound.data import load_mnist
from flowbound.networks.chain import chain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, default=0.4)
    parser.add_argument("--threat", default="tied", choices=["tied", "full"])
    parser.add_argument("--digits", type=int, default=8)
    parser.add_argument("--level", default="descent", choices=list(local.LEVELS))
    parser.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.03, 0.1, 0.3, 1.0, 3.0])
    args = parser.parse_args()
    prof = load_profile("paper")
    p = prof["local"]
    trained, value = cd.cached_run(prof, "nt")
    model = cd.frozen(trained.model).double()
    x, y = load_mnist("test")
    n = min(p["attack"]["images"], len(x))
    row = [float(e) for e in p["eps"]].index(args.eps)
    left = cd.open_on_attacked(value, p["kinds"], args.threat, n)
    digits = np.nonzero(left[row])[0][: args.digits]
    level = local.LEVELS[args.level]
    first, last = chain(model, x.shape[-1]).stages
    xs = x[digits].double()
    pb = _pixel_bounds(xs, args.eps, args.threat, torch.float64, level.kink)
    flow = FlowTerms(
        args.eps, args.threat, x.shape[-1], torch.device("cpu"), None, torch.float64,
        level.ellipsoid,
    )  # fmt: skip
    idx = support(pb)
    ((low, up),) = chain_pre_activation_bounds((first, last), pb, flow, idx, 32, skip=True)
    a = last.matrix()
    betas = torch.tensor(args.betas, dtype=torch.float64)
    print(f"f_nt, {args.threat} flows, eps {args.eps:g}, {len(digits)} open digits")
    for i, digit in enumerate(digits):
        lo, hi = low[i], up[i]
        unstable = torch.nonzero((lo < 0) & (hi > 0)).squeeze(1)
        label = int(y[digit])
        rows = (a[label] - a)[torch.arange(len(a)) != label]
        score = _ranked(lo.expand(len(rows), -1), hi.expand(len(rows), -1), rows, 1)[:, 0]
        lo_, hi_ = lo.expand(len(rows), -1), hi.expand(len(rows), -1)
        weight = rows.abs() * hi_ * (-lo_) / (hi_ - lo_).clamp(min=1e-12)
        j = int(score[int(weight.gather(1, score.clamp(min=0)[:, None]).argmax())])
        others = unstable[unstable != j]
        pixels = pb.of_images(torch.tensor([i]))
        start = time.perf_counter()
        one = torch.zeros(1, lo.shape[0], dtype=torch.float64)
        one[0, j] = 1.0
        over_threat(first.back(one)[None], torch.zeros(1, 1), pixels, flow, idx[[i]], 32)
        leaf_seconds = time.perf_counter() - start
        start = time.perf_counter()
        out = []
        for side in (1, -1):
            new_lo, new_hi = lo[others].clone(), hi[others].clone()
            e = torch.zeros(len(others), lo.shape[0], dtype=torch.float64)
            e[torch.arange(len(others)), others] = 1.0
            for beta in betas:
                r = torch.cat([e, -e])
                r[:, j] -= beta * side
                const = r @ first.bias if first.bias is not None else torch.zeros(len(r))
                v = over_threat(first.back(r)[None], const[None], pixels, flow, idx[[i]], 32)[0]
                new_lo = torch.maximum(new_lo, v[: len(others)])
                new_hi = torch.minimum(new_hi, -v[len(others) :])
            narrowing = 1 - (new_hi - new_lo).clamp(min=0) / (hi[others] - lo[others])
            stable = int(((new_lo >= 0) | (new_hi <= 0)).sum())
            out.append(f"{narrowing.mean():.3f} / {narrowing.median():.3f} / {stable}")
        seconds = time.perf_counter() - start
        print(
            f"digit {digit}: {len(unstable)} unstable, split on {j}; narrowing mean / median / "
            f"newly stable: active side {out[0]}, inactive side {out[1]}; {seconds:.2f} s for "
            f"both sides = {seconds / leaf_seconds:.0f} leaf bounds of {leaf_seconds:.3f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
