"""Figure 6's stAdv workload for one network: every tau of the profile on its images.

Times ``flowbound.attacks.stadv.stadv`` (float64, the book's precision) as the
Possibility chapter runs it for one network and one seed, and prints the
success rate per tau. Run it against another checkout with
``PYTHONPATH=<checkout>/src`` to compare code versions on the same machine.

    python benchmarks/figure6_sweep.py --variant nt --profile paper
"""

from __future__ import annotations

import argparse
import time

import torch

from flowbound.attacks.stadv import stadv
from flowbound.book.experiments._common import frozen
from flowbound.book.profiles import load_profile
from flowbound.book.trained import get_model
from flowbound.data import load_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="nt")
    parser.add_argument("--profile", default="paper")
    args = parser.parse_args()
    prof = load_profile(args.profile)
    images, steps = prof["intro"]["eval_images"], prof["intro"]["eval_steps"]
    model = frozen(get_model(args.variant, prof, section=4).model.cpu())
    x, y = load_mnist("test")
    x, y = x[:images], y[:images]
    total = 0.0
    for tau in prof["possibility"]["taus"]:
        t0 = time.perf_counter()
        res = stadv(model, x, y, tau=tau, steps=steps)
        seconds = time.perf_counter() - t0
        total += seconds
        print(f"tau {tau:<7} {seconds:7.1f} s  success {res.success.float().mean():.3f}  "
              f"final {res.success_final.float().mean():.3f}", flush=True)  # fmt: skip
    print(f"total {total:.1f} s for {len(prof['possibility']['taus'])} taus x {images} images "
          f"({args.variant}, {torch.get_num_threads()} threads)")  # fmt: skip


if __name__ == "__main__":
    main()
