"""Where the per-digit certificate loses tightness, measured on one network and budget.

Two measurements on the first ``--images`` test digits of f_nt (tied flows,
float64, the exact ellipsoid, the kink in it):

1. **The ReLU lower slopes** (alpha-CROWN): the certificate's adaptive choice
   (alpha = 1 where u > -l) against slopes optimised per digit and class by
   Adam (any alpha in [0, 1] is sound), with the pre-activation bounds fixed:
   the share certified and the median worst margin bound.
2. **The pre-activation bounds**: for the unstable neurons of ``--slack-digits``
   digits, the certificate's bounds on h_k = W_k g(r; x) against the range an
   attack on each neuron alone finds (projected normalised gradient steps on
   z = M r): how much of each bound's width is slack, and which flow term
   (slope, kink, offset interval) the bound spends it on.

    python benchmarks/certificate_slack.py --eps 0.7 --images 200
"""

from __future__ import annotations

import argparse
import math

import torch

import flowbound.certificates.ellipsoid as ell
import flowbound.certificates.pixels as pix
import flowbound.certificates.propagation as prop
from flowbound.book.trained import get_model
from flowbound.data import load_mnist
from flowbound.networks.view import view
from flowbound.threat.geometry import m_inv_tensor
from flowbound.threat.warp import warp


def _relaxed(net, pb, flow, idx, low, up, y, alpha=None):
    """The margin lower bounds (N, K) for given lower slopes of the unstable neurons."""
    lam, const = prop.relaxed_output(low, up, net.v[y][:, None, :] - net.v[None], alpha)
    rho = lam @ net.w
    mid, rad = (pb.lower + pb.upper) / 2, (pb.upper - pb.lower) / 2
    out = const + (rho * mid[:, None]).sum(-1) - (rho.abs() * rad[:, None]).sum(-1)
    v = flow.per_image(rho, pb, idx, 32)
    out = out - v.linear - v.down
    return out.masked_fill(torch.arange(out.shape[1])[None] == y[:, None], math.inf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="nt")
    parser.add_argument("--eps", type=float, default=0.7)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--slack-digits", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="Adam steps for alpha")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = get_model(args.network, "paper", section=4, progress=False).model.cpu().double()
    net = view(model)
    x, y = load_mnist("test")
    x, y = x[: args.images].double(), y[: args.images]
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    eps = args.eps
    pb = pix.pixel_bounds(x, eps)
    flow = ell.FlowTerms(eps, "tied", 28, "cpu", None, torch.float64)
    idx = ell.support(pb)
    low, up = prop.pre_activation_bounds(net, pb, flow, idx, 32, False)
    base = _relaxed(net, pb, flow, idx, low, up, y)
    unstable = ~((low >= 0) | (up <= 0))
    start = torch.where(unstable, (up > -low).double(), torch.zeros_like(up))[:, None]
    logit = torch.logit(start.expand(-1, 10, -1).clamp(0.02, 0.98)).clone().requires_grad_(True)
    opt = torch.optim.Adam([logit], lr=0.3)
    best = base.clone()
    for _ in range(args.steps):
        b = _relaxed(net, pb, flow, idx, low, up, y, torch.sigmoid(logit))
        best = torch.maximum(best, b.detach())  # every alpha is sound: keep the best
        loss = -b.masked_fill(torch.isinf(b), 0).clamp(max=1.0).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, m in (("adaptive CROWN slopes", base), ("optimised slopes (alpha-CROWN)", best)):
        ok = correct & (m > 0).all(1)
        print(
            f"f_{args.network}, eps {eps:g}, {args.images} digits, {name}: certified "
            f"{ok.double().mean():.3f}, median worst margin bound {m.min(1).values.median():.3f}"
        )
    mi = m_inv_tensor(28)
    rad = (pb.upper - pb.lower) / 2
    v = flow.shared(net.w, pb, idx, 32, None)
    print("| digit | unstable | bound width | found width | slack | offset | slope | kink up |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b in range(args.slack_digits):
        uns = unstable[b].nonzero()[:, 0]
        w = net.w[uns]
        found = {}
        for sign in (1.0, -1.0):
            z = (torch.randn(len(uns), 784, dtype=torch.float64) * 0.01).requires_grad_(True)
            top = torch.full((len(uns),), -math.inf, dtype=torch.float64)
            for it in range(200):
                g = warp(x[b].expand(len(uns), 28, 28).contiguous(), (z @ mi).view(-1, 28, 28))
                h = sign * (g.view(len(uns), -1) * w).sum(1)
                top = torch.maximum(top, h.detach())
                (grad,) = torch.autograd.grad(h.sum(), z)
                with torch.no_grad():
                    step = 0.1 * eps * (1 - it / 200) + 0.005
                    z += step * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-30)
                    z *= (eps / z.norm(dim=1, keepdim=True)).clamp(max=1)
            found[sign] = top
        bound_w = float((up[b, uns] - low[b, uns]).mean())
        found_w = float((found[1.0] + found[-1.0]).mean())
        offset = float((rad[b] @ net.w.abs().T)[uns].mean())
        slope, kink = float(v.linear[b, uns].mean()), float(v.up[b, uns].mean())
        print(
            f"| {b} | {len(uns)} | {bound_w:.3f} | {found_w:.3f} | {1 - found_w / bound_w:.2f} | "
            f"{offset:.3f} | {slope:.3f} | {kink:.3f} |"
        )


if __name__ == "__main__":
    main()
