"""Threat sets: which flows an attack may use and a certificate must cover, as objects.

A :class:`ThreatSet` knows its flows' shape, the radius a budget eps gives, the
per-pixel box that radius implies (Prop. 2), how much of a budget a flow uses,
and, for the attacks, how to search it: a variable z, the flows it gives, the
projection onto the set and the direction of a step. Two are registered:

- :data:`TIED`: tied flows r (du = dv = r) with ||M r||_2 <= eps (Eq. 3,
  Sections 2-4); z = M r lies in the l2 ball of radius eps;
- :data:`FULL`: flows (du, dv) with ||M du||_2^2 + ||M dv||_2^2 <= 2 eps^2, i.e.
  l_diff(du, dv) <= sqrt(2) eps (Eq. 2), the set stAdv's flows live in; z stacks
  M du and M dv in the l2 ball of radius sqrt(2) eps. It contains the tied set
  (Prop. 1).

Both are ellipsoids in r. A set whose budget is a per-pixel box, |du_i|, |dv_i| <=
eps (``ellipsoid=False``, as in Ruoss et al. 2021), is searched by sign steps in
r itself and certified by the box alone; a test registers one. Every certificate
and flow attack takes a registered set by name or the object itself
(:func:`threat_set`).

Used in: the per-digit certificate, flow_apgd, the bound and attack registries,
the profile schema, Figure 12.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from flowbound.registry import Registry
from flowbound.threat.geometry import aabb_lambda, mtm

__all__ = ["FULL", "THREAT_SETS", "TIED", "ThreatSet", "register_threat_set", "threat_set"]


@dataclass(frozen=True)
class ThreatSet:
    """A set of flows per budget eps.

    ``parts``: flow fields per image, 1 (a tied flow r, shape (s, s)) or 2 (du and
    dv, shape (2, s, s)); ``scale``: the radius per unit of eps (of the l2 ball in
    z = M r stacked over the parts when ``ellipsoid``, else of the per-pixel box);
    ``label`` how figures and prose name it ("tied flows")."""

    name: str
    label: str
    parts: int
    scale: float
    ellipsoid: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"a threat set's name must be an identifier, got {self.name!r}")
        if self.parts not in (1, 2):
            raise ValueError(f"threat set {self.name!r}: parts must be 1 or 2, got {self.parts!r}")
        if not (
            isinstance(self.scale, int | float) and math.isfinite(self.scale) and self.scale > 0
        ):
            raise ValueError(f"threat set {self.name!r}: scale must be > 0, got {self.scale!r}")

    def radius(self, eps: float) -> float:
        """The radius budget eps gives: of the ball in z, or of the per-pixel box."""
        return self.scale * eps

    def box(self, eps: float, side: int) -> np.ndarray:
        """(s * s,) the largest |flow_i| on each pixel (each part): radius lambda_i for an
        ellipsoid (Prop. 2), the radius itself for a box."""
        lam = np.array(aabb_lambda(side)) if self.ellipsoid else np.ones(side * side)
        return self.radius(eps) * lam

    def pixel_scale(self, side: int) -> np.ndarray:
        """(s * s,) the per-pixel box per unit radius: lambda_i, or 1 for a box."""
        return np.array(aabb_lambda(side)) if self.ellipsoid else np.ones(side * side)

    def flow_shape(self, side: int) -> tuple[int, ...]:
        """One image's flow: (s, s) for one part, (2, s, s) for two."""
        return (side, side) if self.parts == 1 else (2, side, side)

    def size(self, flows: torch.Tensor) -> torch.Tensor:
        """(B,) each flow's size in float64, in the units of :meth:`radius`: the l2 norm of
        z = M r over the parts (sqrt(sum_p r_p^T M^T M r_p)), or the largest |flow_i|."""
        n, side = len(flows), flows.shape[-1]
        r = flows.detach().double().reshape(n, self.parts, side * side)
        if not self.ellipsoid:
            return r.abs().amax((1, 2))
        a = torch.from_numpy(mtm(side)).to(r.device)
        return torch.einsum("npi,ij,npj->n", r, a, r).clamp(min=0).sqrt()

    def used(self, flows: torch.Tensor) -> torch.Tensor:
        """(B,) the budget eps each flow (B, *flow_shape) uses, in float64."""
        return self.size(flows) / self.scale

    # --- the search variable z of the flow attacks -------------------------------------

    def flows(self, z: torch.Tensor, side: int, m_inv: torch.Tensor | None) -> torch.Tensor:
        """Flows (B, *flow_shape) from z (B, parts s s): r = M^{-1} z per part for an
        ellipsoid (``m_inv``: M^{-1} in z's dtype), r = z for a box."""
        n = len(z)
        r = z.reshape(n, self.parts, side * side)
        if self.ellipsoid:
            r = r @ m_inv
        r = r.view(n, self.parts, side, side)
        return r[:, 0] if self.parts == 1 else r

    def grad_z(self, g_flow: torch.Tensor, side: int, m_inv: torch.Tensor | None):
        """The gradient in z (B, parts s s) of a function with gradient ``g_flow`` in the
        flow (M^{-1} is symmetric)."""
        n = len(g_flow)
        g = g_flow.reshape(n, self.parts, side * side)
        return (g @ m_inv if self.ellipsoid else g).reshape(n, -1)

    def project(self, z: torch.Tensor, radius: float) -> torch.Tensor:
        """z projected onto the set: the l2 ball of ``radius``, or the box."""
        if not self.ellipsoid:
            return z.clamp(-radius, radius)
        return z * (radius / z.norm(dim=1, keepdim=True).clamp_min(1e-300)).clamp(max=1.0)

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        """A step's direction: the normalised gradient (l2), or its sign (a box)."""
        if not self.ellipsoid:
            return grad.sign()
        return grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-300)

    def start(self, gaussian: torch.Tensor, uniform: torch.Tensor, radius: float):
        """A random start inside the set from one row of draws per image: a point at half
        the radius in a Gaussian direction (l2), or uniform in half the box."""
        if not self.ellipsoid:
            return (2 * uniform - 1) * (0.5 * radius)
        return gaussian * (0.5 * radius / gaussian.norm(dim=1, keepdim=True).clamp_min(1e-300))


#: The registry of threat sets, by name.
THREAT_SETS: Registry[ThreatSet] = Registry("threat set")


def register_threat_set(t: ThreatSet) -> ThreatSet:
    """Add a threat set to :data:`THREAT_SETS` (names are unique)."""
    return THREAT_SETS.add(t)


def threat_set(threat: str | ThreatSet) -> ThreatSet:
    """A registered threat set by name, or the object itself; anything else a ValueError
    listing the registered names."""
    if isinstance(threat, ThreatSet):
        return threat
    if not isinstance(threat, str) or threat not in THREAT_SETS:
        raise ValueError(
            f"threat must be one of {', '.join(THREAT_SETS)} (or a ThreatSet), got {threat!r}"
        )
    return THREAT_SETS[threat]


TIED = register_threat_set(ThreatSet("tied", "tied flows", parts=1, scale=1.0))
FULL = register_threat_set(ThreatSet("full", "full flows", parts=2, scale=math.sqrt(2.0)))
