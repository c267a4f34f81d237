"""Figure 12's flow attack against the one it replaced, side by side, every eps.

On the first ``local.attack.images`` test digits of one network (float64, this
CPU): ``flow_apgd`` at the chapter's settings (``local.attack``) and
``flow_pgd`` at the former ones (``local.sides``), each eps on its own (no
digit is carried from a smaller eps), tied flows; then ``flow_apgd`` on full
flows, which ``flow_pgd`` cannot attack. Prints per eps the seconds, the digits
broken (misclassified or fooled within the budget), digits broken per second,
and how many digits each attack breaks that the other does not.

    python benchmarks/flow_apgd.py --variant nt --images 1000
"""

from __future__ import annotations

import argparse
import time

import torch

from flowbound.attacks.flow_apgd import flow_apgd
from flowbound.attacks.pgd import flow_pgd
from flowbound.book.experiments._common import frozen
from flowbound.book.profiles import load_profile
from flowbound.book.trained import get_model
from flowbound.data import load_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="nt")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--images", type=int, default=None, help="default: local.attack.images")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    p = load_profile(args.profile)["local"]
    a, s = p["attack"], p["sides"]
    n = args.images or a["images"]
    model = frozen(get_model(args.variant, args.profile, section=4, progress=False).model)
    model = model.cpu().double()
    x, y = load_mnist("test")
    x, y = x[:n].double(), y[:n]

    def apgd(eps, threat):
        return flow_apgd(
            model, x, y, eps=eps, threat=threat, steps=a["steps"], restarts=a["restarts"],
            targets=a["targets"], seed=a["seed"],
        ).success  # fmt: skip

    def pgd(eps, threat):
        return flow_pgd(
            model, x, y, eps=eps, steps=s["steps"], restarts=s["restarts"], lr=s["lr"],
            seed=s["seed"],
        ).success  # fmt: skip

    print(f"f_{args.variant}, {n} digits, {args.threads} threads")
    print("| flows | eps | flow_pgd (s) | broken | per s | flow_apgd (s) | broken | per s |"
          " only flow_apgd | only flow_pgd |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    totals = {"pgd": 0.0, "apgd": 0.0, "full": 0.0}
    for threat in ("tied", "full"):
        for eps in (float(e) for e in p["eps"] if e > 0):
            cells = []
            found = {}
            for name, attack in (("pgd", pgd), ("apgd", apgd)):
                if name == "pgd" and threat == "full":
                    cells.append("- | - | -")
                    continue
                start = time.perf_counter()
                found[name] = attack(eps, threat)
                sec = time.perf_counter() - start
                totals["full" if threat == "full" else name] += sec
                k = int(found[name].sum())
                cells.append(f"{sec:.1f} | {k} | {k / sec:.1f}")
            if "pgd" in found:
                more = int((found["apgd"] & ~found["pgd"]).sum())
                less = int((found["pgd"] & ~found["apgd"]).sum())
            else:
                more = less = "-"
            print(f"| {threat} | {eps:g} | {' | '.join(cells)} | {more} | {less} |", flush=True)
    print(
        f"total, tied flows: flow_pgd {totals['pgd']:.1f} s, flow_apgd {totals['apgd']:.1f} s "
        f"({totals['apgd'] / totals['pgd']:.2f}x); full flows, flow_apgd {totals['full']:.1f} s"
    )


if __name__ == "__main__":
    main()
