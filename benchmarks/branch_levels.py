"""Branch and bound over the hidden ReLUs on the digits Figure 12's refinement leaves open.

Figure 12 certifies every digit with the cascade's first two levels and refines the
attacked digits the attack leaves open with the later ones. This takes the digits
still open after that refinement (neither certified nor broken by the attack) in the
cached run (``benchmarks/bracket.py`` or a build stores it; computed here if it is
not there) and runs :func:`~flowbound.certificates.branch.branched` on them at each
``--eps`` and each ``--setting`` (level, eigenvectors, depth, leaves per problem, Adam
steps, and optionally how many first splits narrow the other neurons' bounds in their
leaves, ``Branching.tighten``, and at the ``split`` level how many rounds take the
flow's sign split, ``Branching.split_rounds``): per setting the digits it closes, the bracket before
and after, and the seconds per open digit, a frontier of bracket against seconds. A
budget with more than ``--most`` open digits is skipped.

    python benchmarks/branch_levels.py --variants nt --threat tied --eps 0.4 0.5 \\
        --setting descent:exact:8:64:8 kinked:200:8:64:8
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from flowbound.book.experiments import certify_digits as cd
from flowbound.book.profiles import load_profile
from flowbound.certificates import local
from flowbound.certificates.branch import Branching, branched
from flowbound.data import load_mnist
from flowbound.device import default_device, device_text


def _setting(text: str) -> tuple[str, local.Level, int | None, Branching]:
    """``level:modes:depth:leaves:steps[:tighten[:split_rounds]]`` (modes an int or
    ``exact``; at the ``split`` level, ``split_rounds`` rounds take the flow's split)."""
    level, modes, depth, leaves, steps, *more = text.split(":")
    m = None if modes == "exact" else int(modes)
    tighten, rounds = (int(v) for v in (more + ["0", "1"][len(more) :])[:2])
    branching = Branching(int(depth), int(leaves), int(steps), tighten=tighten,
                          split_rounds=rounds)  # fmt: skip
    return text, local.LEVELS[level], m, branching


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["nt"])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--threat", nargs="+", default=["tied"], choices=["tied", "full"])
    parser.add_argument("--eps", nargs="+", type=float, default=[0.4, 0.5])
    parser.add_argument("--setting", nargs="+", default=["descent:exact:8:64:8"])
    parser.add_argument("--json", help="append one JSON line per result here")
    parser.add_argument(
        "--most", type=int, default=100, help="skip a budget with more open digits than this"
    )
    args = parser.parse_args()
    settings = [_setting(s) for s in args.setting]
    prof = load_profile(args.profile)
    p = prof["local"]
    eps = [float(e) for e in p["eps"]]
    x, y = load_mnist("test")
    n = min(p["attack"]["images"], len(x))
    dev = default_device()
    print(device_text(dev))
    for variant in args.variants:
        trained, value = cd.cached_run(prof, variant)  # computed here if it is not there
        model = cd.frozen(trained.model).to(dev).double()
        xd, yd = x[:n].double().to(dev), y[:n].to(dev)
        for threat in args.threat:
            left = cd.open_on_attacked(value, p["kinds"], threat, n)
            for e in args.eps:
                r = eps.index(e)
                open_ = np.nonzero(left[r])[0]
                before = len(open_) / n
                if len(open_) > args.most:
                    print(f"{variant} {threat} {e:g}: {len(open_)} open digits, skipped")
                    continue
                for text, level, modes, branching in settings:
                    idx = torch.from_numpy(open_).to(dev)
                    start = time.perf_counter()
                    got = branched(model, xd[idx], yd[idx], [e], threat=threat, modes=modes,
                                   level=level, branching=branching,
                                   classifier_only=True)[0]  # fmt: skip
                    seconds = time.perf_counter() - start
                    row = {
                        "variant": variant, "threat": threat, "eps": e, "setting": text,
                        "open": len(open_), "closed": int(got.sum()),
                        "bracket_before": round(float(before), 4),
                        "bracket_after": round(float(before - got.sum() / n), 4),
                        "seconds": round(seconds, 1),
                        "seconds_per_digit": round(seconds / max(1, len(open_)), 2),
                    }  # fmt: skip
                    print(json.dumps(row), flush=True)
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
