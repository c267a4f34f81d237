"""Per-digit flow certificate: all Figure 12 budgets on the test set, side by side.

flowbound.local_bounds.certified (low-rank ellipsoid with ``modes`` eigenvectors,
support-restricted) against the same certificate with the exact ellipsoid
value (``modes=None``), in one run, on the same network and digits.

    python benchmarks/local_bounds.py --images 10000 --profile paper
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from flowbound.data import load_mnist
from flowbound.local_bounds import certified
from flowbound.models import get_model
from flowbound.profiles import load_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--exact-images", type=int, default=1000)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--network", default="nt")
    parser.add_argument("--threats", nargs="+", default=["tied", "full"])
    args = parser.parse_args()
    prof = load_profile(args.profile)
    eps = prof["local"]["eps"]
    model = get_model(args.network, prof, section=4, progress=False).model.cpu().double()
    x, y = load_mnist("test")
    x, y = x[: args.images].double(), y[: args.images]
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"network f_{args.network}, eps {eps}")
    print("| certificate | digits | time (s) | digits x eps / s | certified at 0.2 / 0.4 / 0.7 |")
    print("|---|---:|---:|---:|---|")
    rows = {}
    for threat in args.threats:
        for modes, n in ((prof["local"]["modes"], len(x)), (None, args.exact_images)):
            start = time.perf_counter()
            ok = certified(model, x[:n], y[:n], eps, threat=threat, modes=modes)
            sec = time.perf_counter() - start
            rows[(threat, modes)] = (sec, n)
            at = [ok[eps.index(e)].mean() for e in (0.2, 0.4, 0.7) if e in eps]
            print(
                f"| {threat}, modes = {modes} | {n} | {sec:.1f} | {n * len(eps) / sec:.0f} | "
                + " / ".join(f"{a:.3f}" for a in at)
                + " |",
                flush=True,
            )
    for threat in args.threats:
        fast, slow = rows[(threat, prof["local"]["modes"])], rows[(threat, None)]
        ratio = (slow[0] / slow[1]) / (fast[0] / fast[1])
        print(f"{threat}: exact / low-rank time per digit = {ratio:.1f}x")


if __name__ == "__main__":
    main()
