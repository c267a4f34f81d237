"""The former Figure 12 flow attack for one network: ``flow_pgd`` at every eps.

Times ``flowbound.attacks.pgd.flow_pgd`` (float64) at the settings the certifying
chapter used before ``flow_apgd`` replaced it (``local.sides``: steps, restarts,
lr; the first ``local.attack.images`` test digits) and prints the success rate per
eps. With ``--baseline DIR`` the same workload then runs under another checkout's
code (``DIR/src``, e.g. a ``git worktree`` of an earlier commit) in a subprocess,
one after the other, and the ratio and any difference in the outcomes are printed.
``benchmarks/flow_apgd.py`` compares it with the attack that replaced it.

    python benchmarks/flow_pgd.py --variant nt --baseline ../flowbound-old
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _baseline import under


def workload(variant: str, profile: str) -> dict:
    """Seconds and per-eps outcome of flow_pgd under the code on ``sys.path``
    (``success``: misclassified, or fooled within the budget)."""
    from flowbound.attacks.pgd import flow_pgd
    from flowbound.book.experiments._common import frozen
    from flowbound.book.profiles import load_profile
    from flowbound.book.trained import get_model
    from flowbound.data import load_mnist

    p = load_profile(profile)["local"]
    s = p["sides"]
    model = frozen(get_model(variant, profile, section=4, progress=False).model.cpu()).double()
    x, y = load_mnist("test")
    x, y = x[: p["attack"]["images"]].double(), y[: p["attack"]["images"]]
    out = {"seconds": {}, "success": {}}
    for eps in (float(e) for e in p["eps"] if e > 0):
        start = time.perf_counter()
        res = flow_pgd(
            model, x, y, eps=eps, steps=s["steps"], restarts=s["restarts"], lr=s["lr"],
            seed=s["seed"],
        )  # fmt: skip
        out["seconds"][eps] = time.perf_counter() - start
        out["success"][eps] = res.success.int().tolist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="nt")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline", help="another checkout to time the same workload under")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the child
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    now = workload(args.variant, args.profile)
    if args.json:
        print(json.dumps(now))
        return
    print(f"flow_pgd, {args.variant}, {args.threads} threads")
    runs = {"this code": now}
    if args.baseline:
        same = [
            "--variant",
            args.variant,
            "--profile",
            args.profile,
            "--threads",
            str(args.threads),
        ]
        base = under(args.baseline, __file__, same)
        runs["baseline"] = {k: {float(e): v for e, v in d.items()} for k, d in base.items()}
    print("| eps | " + " | ".join(f"{name} (s)" for name in runs) + " | success |")
    print("|---:|" + "---:|" * len(runs) + "---:|")
    for eps in now["seconds"]:
        cells = " | ".join(f"{r['seconds'][eps]:.1f}" for r in runs.values())
        rate = sum(now["success"][eps]) / len(now["success"][eps])
        print(f"| {eps:g} | {cells} | {rate:.3f} |")
    totals = {name: sum(r["seconds"].values()) for name, r in runs.items()}
    print("total: " + ", ".join(f"{name} {t:.1f} s" for name, t in totals.items()))
    if args.baseline:
        base = runs["baseline"]
        flips = sum(
            sum(a != b for a, b in zip(now["success"][e], base["success"][e], strict=True))
            for e in now["success"]
        )
        print(
            f"speed-up {totals['baseline'] / totals['this code']:.2f}x; outcomes differing: {flips}"
        )


if __name__ == "__main__":
    main()
