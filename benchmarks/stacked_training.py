"""Training the seeds of a variant stacked against one by one, side by side.

For each variant named (default the stacking ones of Section 4: nt, fro, spe, at,
at_pgd, sdp), the profile's seeds (``train.seed`` and ``possibility.seeds``) are trained at the
profile's settings twice on this machine's default device, in one run: one after
the other with ``flowbound.training.fit.fit`` (the CPU's path) and together with
``flowbound.training.stacking.fit_stacked`` (the default on CUDA). Prints the seconds of each,
the ratio, the largest weight difference between a member and the same seed
trained alone, and the test accuracies of both. In float64 a member equals the network
trained alone to about 1e-14 (``tests/test_stacking.py``); in float32 the batched
products round differently and Adam amplifies that over thousands of steps, as it does
between a CPU and a GPU run, so compare the accuracies. ``--epochs`` shortens the runs
(the ratio is per step).

    python benchmarks/stacked_training.py --variants nt fro spe at at_pgd sdp --epochs 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from flowbound.book.profiles import load_profile
from flowbound.book.trained import stack_seeds
from flowbound.data import load_mnist
from flowbound.device import default_device, device_text
from flowbound.networks.architectures import build
from flowbound.training.fit import accuracy, fit
from flowbound.training.stacking import Stacked, fit_stacked
from flowbound.training.zoo import VARIANTS


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stacking = ["nt", "fro", "spe", "at", "at_pgd", "sdp"]
    parser.add_argument("--variants", nargs="+", default=stacking)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--epochs", type=int, help="default: the profile's train.epochs")
    parser.add_argument("--json", help="write the timings here")
    args = parser.parse_args()
    prof = load_profile(args.profile)
    train = dict(prof["train"])
    if args.epochs is not None:
        train["epochs"] = args.epochs
    seeds = stack_seeds(prof)
    dev = default_device()
    print(device_text(dev))
    x, y = load_mnist("train")
    if train["train_subset"] is not None:
        x, y = x[: train["train_subset"]], y[: train["train_subset"]]
    plan = {"epochs": train["epochs"], "batch_size": train["batch_size"], "lr": train["lr"]}
    rows = {}
    for variant in args.variants:
        v = VARIANTS.named(variant)
        if v.make_stacked_loss is None:
            raise SystemExit(f"{variant} does not stack (no make_stacked_loss)")
        settings = dict(prof["variants"].get(variant, {}))
        hidden = prof["hidden"]["section4"]
        _sync(dev)
        start = time.perf_counter()
        alone = []
        for s in seeds:
            net = build(v.arch, hidden, s, settings).to(dev)
            fit(net, v.loss_factory()(settings), x, y, seed=s, progress=False, **plan)
            alone.append(net)
        _sync(dev)
        t_alone = time.perf_counter() - start
        members = [build(v.arch, hidden, s, settings).to(dev) for s in seeds]
        start = time.perf_counter()
        net = Stacked(members)
        fit_stacked(net, v.stacked_loss_factory()(settings), x, y, seeds=seeds,
                    progress=False, **plan)  # fmt: skip
        net.write_back(members)
        _sync(dev)
        t_stack = time.perf_counter() - start
        diff = max(
            float((p - q).detach().abs().max())
            for a, b in zip(alone, members, strict=True)
            for p, q in zip(a.parameters(), b.parameters(), strict=True)
        )
        xt, yt = load_mnist("test")
        acc_alone = [accuracy(n, xt, yt) for n in alone]
        acc_stack = [accuracy(n, xt, yt) for n in members]
        rows[variant] = {
            "alone": t_alone,
            "stacked": t_stack,
            "max_weight_diff": diff,
            "accuracy_alone": acc_alone,
            "accuracy_stacked": acc_stack,
        }
        print(
            f"{variant}: {len(seeds)} seeds x {plan['epochs']} epochs: one by one {t_alone:.1f} s, "
            f"stacked {t_stack:.1f} s ({t_alone / t_stack:.2f}x); largest weight difference "
            f"{diff:.1e}; test accuracy alone {' / '.join(f'{a:.4f}' for a in acc_alone)}, "
            f"stacked {' / '.join(f'{a:.4f}' for a in acc_stack)}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(dev), "seeds": seeds, "plan": plan, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
