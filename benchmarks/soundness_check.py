"""What the registry's soundness check catches: a bound set below the SDP bound.

The soundness test of every registered global bound (``tests/test_bounds.py``,
``check_no_gradient_search_beats``) runs a gradient search over [0, 1] images of
side 3 and tied flows, on random 9-6-2 networks, and fails when the search lowers
f_0 - f_1 (or f_1 - f_0) by more than eps * Delta. This script measures, side by side
in one run, how often the search of the previous check (4 starts, 60 steps, lr 0.1)
and of the current one (48 starts, half of them at corners of the pixel box, 120
steps, lr 0.1 eps, also at min(eps, 0.3)) reaches a bound set to ``factor`` x the
SDP bound, over ``--draws`` draws of (seed, eps) with eps uniform in [0.1, 3]; and,
for the draws the current search reaches least, what a much stronger search (all 512
corners twice, 1,024 random starts, 400 steps) finds, to tell a weak search from a
sound bound.

    python benchmarks/soundness_check.py --draws 40
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from flowbound.certificates.impossibility import gradient_search
from flowbound.certificates.registry import decrease_bounds
from flowbound.networks.architectures import OneHidden

FACTORS = (0.1, 0.125, 0.15, 0.2, 0.25, 0.3)


def _net(seed: int):
    torch.manual_seed(seed)
    net = OneHidden(d=9, hidden=6, classes=2).double()
    return net, decrease_bounds(net, "sdp", side=3, tol=1e-6)[0, 1]


def previous(seed: int, eps: float) -> float:
    """The largest decrease / (eps * SDP Delta) the previous check's search finds."""
    net, delta = _net(seed)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(4, 3, 3, generator=g, dtype=torch.float64)
    r0 = torch.randn(4, 3, 3, generator=g, dtype=torch.float64) * 0.1
    best = 0.0
    for pair in ((0, 1), (1, 0)):
        f = gradient_search(net, [pair] * 4, eps, x0, r0, steps=60, lr=0.1, side=3,
                            x_range=(0.0, 1.0))  # fmt: skip
        best = max(best, 2 * float(f.exact.max()) / (eps * delta))
    return best


def current(seed: int, eps: float, starts: int = 48, steps: int = 120, corners=False) -> float:
    """The same for the current check's search (``corners``: every corner of the box
    twice plus 2 x 512 random starts, the strong search)."""
    net, delta = _net(seed)
    g = torch.Generator().manual_seed(seed)
    best = 0.0
    for e in sorted({eps, min(eps, 0.3)}):
        for pair in ((0, 1), (1, 0)):
            if corners:
                box = torch.tensor([[int(b) for b in f"{i:09b}"] for i in range(512)])
                box = box.to(torch.float64).reshape(512, 3, 3)
                x0 = torch.cat([box, box, torch.rand(1024, 3, 3, generator=g, dtype=torch.float64)])
            else:
                x0 = torch.rand(starts, 3, 3, generator=g, dtype=torch.float64)
                x0[: starts // 2] = x0[: starts // 2].round()
            r0 = torch.randn(len(x0), 3, 3, generator=g, dtype=torch.float64)
            f = gradient_search(net, [pair] * len(x0), e, x0, r0, steps=steps, lr=0.1 * e,
                                side=3, x_range=(0.0, 1.0))  # fmt: skip
            best = max(best, 2 * float(f.exact.max()) / (e * delta))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=40)
    ap.add_argument("--strong", type=int, default=3, help="weakest draws searched hard")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    draws = [(s, float(rng.uniform(0.1, 3.0))) for s in range(args.draws)]
    for name, fn in (("previous", previous), ("current", current)):
        start = time.perf_counter()
        ratio = np.array([fn(s, e) for s, e in draws])
        per = (time.perf_counter() - start) / len(draws)
        caught = ", ".join(f"{f:g}x: {int((ratio > f).sum())}" for f in FACTORS)
        print(f"{name}: {per:.2f} s per draw; reaches (of {len(draws)}) {caught}; "
              f"min {ratio.min():.3f}, median {np.median(ratio):.3f}")  # fmt: skip
        if name == "current":
            for k in np.argsort(ratio)[: args.strong]:
                s, e = draws[k]
                strong = current(s, e, steps=400, corners=True)
                print(f"  seed {s}, eps {e:.3f}: current {ratio[k]:.3f}, strong {strong:.3f}")


if __name__ == "__main__":
    main()
