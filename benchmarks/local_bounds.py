"""Per-digit flow certificate: all Figure 12 budgets on the test set, side by side.

flowbound.certificates.local.certified (low-rank ellipsoid with ``modes`` eigenvectors,
support-restricted) against the same certificate with the exact ellipsoid
value (``modes=None``), in one run, on the same network and digits. With ``--kink``:
the certificate (the kink in the ellipsoid, after one chord per pixel where that
certifies) against one chord per pixel alone (``kink=False``). With
``--baseline DIR`` instead: the book's certificate (``local.modes``) under this
code and under another checkout's (``DIR/src``), one after the other, with the
ratio and the number of (digit, eps) outcomes that differ.

    python benchmarks/local_bounds.py --images 10000 --profile paper
    python benchmarks/local_bounds.py --network cert --baseline ../flowbound-old
    python benchmarks/local_bounds.py --kink    # with and without the kink, one run
    python benchmarks/local_bounds.py --levels --images 1000  # what each level adds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch
from _baseline import under

from flowbound.book.profiles import load_profile
from flowbound.book.trained import get_model
from flowbound.certificates.local import CASCADE, certified
from flowbound.data import load_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--exact-images", type=int, default=1000)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--network", default="nt")
    parser.add_argument("--threats", nargs="+", default=["tied", "full"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline", help="another checkout to time the book's certificate under")
    parser.add_argument(
        "--kink",
        action="store_true",
        help="the certificate with the kink in the ellipsoid against one chord per pixel",
    )
    parser.add_argument(
        "--levels",
        action="store_true",
        help="what each level of the cascade adds: its first 1, 2, ... levels, one run",
    )
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the child
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prof = load_profile(args.profile)
    eps = prof["local"]["eps"]
    model = get_model(args.network, prof, section=4, progress=False).model.cpu().double()
    x, y = load_mnist("test")
    x, y = x[: args.images].double(), y[: args.images]
    if args.json or args.baseline:
        now = {}
        for threat in args.threats:
            start = time.perf_counter()
            ok = certified(model, x, y, eps, threat=threat, modes=prof["local"]["modes"])
            now[threat] = {"seconds": time.perf_counter() - start, "ok": ok.tolist()}
        if args.json:
            print(json.dumps(now))
            return
        same = ["--network", args.network, "--profile", args.profile, "--images", str(len(x))]
        same += ["--threads", str(args.threads), "--threats", *args.threats]
        base = under(args.baseline, __file__, same)
        print(f"f_{args.network}, {len(x)} digits x {len(eps)} eps, {args.threads} threads")
        print("| flows | this code (s) | baseline (s) | speed-up | outcomes differing |")
        print("|---|---:|---:|---:|---:|")
        for threat, r in now.items():
            b = base[threat]
            flips = int((np.array(r["ok"]) != np.array(b["ok"])).sum())
            print(
                f"| {threat} | {r['seconds']:.1f} | {b['seconds']:.1f} | "
                f"{b['seconds'] / r['seconds']:.2f}x | {flips} |"
            )
        return
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    if args.levels:
        shown = [e for e in (0.2, 0.3, 0.4, 0.5, 0.7, 1.0) if e in eps]
        print(f"network f_{args.network}, {len(x)} digits, eps {eps}")
        print(f"| flows | levels | ms per digit | certified at {' / '.join(map(str, shown))} |")
        print("|---|---|---:|---|")
        for threat in args.threats:
            for k in range(1, len(CASCADE) + 1):
                start = time.perf_counter()
                ok = certified(
                    model,
                    x,
                    y,
                    eps,
                    threat=threat,
                    modes=prof["local"]["modes"],
                    levels=CASCADE[:k],
                )
                ms = 1000 * (time.perf_counter() - start) / len(x)
                at = " / ".join(f"{ok[eps.index(e)].mean():.3f}" for e in shown)
                print(f"| {threat} | first {k} | {ms:.1f} | {at} |", flush=True)
        return
    if args.kink:
        shown = [e for e in (0.2, 0.4, 0.5, 0.7, 1.0) if e in eps]
        print(f"network f_{args.network}, {len(x)} digits, eps {eps}")
        at_eps = " / ".join(map(str, shown))
        print(f"| flows | relaxation | time (s) | certified at {at_eps} |")
        print("|---|---|---:|---|")
        for threat in args.threats:
            secs = {}
            for kink in (False, True):
                start = time.perf_counter()
                ok = certified(
                    model, x, y, eps, threat=threat, modes=prof["local"]["modes"], kink=kink
                )
                secs[kink] = time.perf_counter() - start
                name = "kink in the ellipsoid (cascade)" if kink else "one chord per pixel"
                at = " / ".join(f"{ok[eps.index(e)].mean():.3f}" for e in shown)
                print(f"| {threat} | {name} | {secs[kink]:.1f} | {at} |", flush=True)
            print(f"{threat}: kink / chord time = {secs[True] / secs[False]:.2f}x")
        return
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
