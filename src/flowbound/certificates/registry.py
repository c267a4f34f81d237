"""Certified 0/1 adversarial loss of a multi-class network (Figure 5, appendix 6.7).

For a test input x of class y and another class i, let f = f_y - f_i
(v = V_y - V_i). A flow can flip y to i only if it lowers f by more than the
margin m_i(x) = f_y(x) - f_i(x). The largest possible decrease is
2 sup l_adv of the reversed pair (l_adv carries the 1/2 of Section 2.2), and
P^{iy}, P^{yi} give the same SDP value (flip the sign of s), so one bound per
unordered pair serves both directions. x is certified at eps when it is
classified correctly and m_i(x) > Delta_{iy}(eps) for every i != y, where
Delta is the bound on the decrease:

- ``"sdp"``: Delta = 2 * (D / 4) eps SDP(A^{iy}) = eps SDP for [0, 1] images
  (D = 2), A = diag(V_y - V_i) W diag(lambda);
- ``"spectral"`` / ``"frobenius"`` (sound): Delta = D eps ||W|| ||v|| ||M^{-1}||_2;
- ``"spectral_printed"`` / ``"frobenius_printed"``: Delta = eps ||W|| ||v||, the
  appendix's formulas read as bounds on the decrease (they drop D, 1/2 and
  ||M^{-1}||_2, Readings table, point 12), shown for comparison only;
- ``"linear"``: for f = v^T x, Delta = D eps ||v * lambda||_1 (Eq. 16 with the 1/2);
- ``"local_tied"`` / ``"local_full"`` (beyond the paper): per-image certificates that
  keep the ellipsoid (:mod:`flowbound.certificates.local`), for tied and full flows.

Every Delta is linear in eps, so it is computed once at eps = 1. A new bound is
one :func:`register_bound` call and its name in the profile's ``kinds``: Figures 5
and 12 draw it (label and style from here), and the soundness tests check every
registered bound with ``sound=True`` (CONTRIBUTING.md, "Adding a bound").

Used in: Possibility results (Figures 5, 11).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from flowbound.certificates.bounds import (
    frobenius_bound,
    linear_bound,
    sdp_adversarial_bound,
    sdp_bound,
    sdp_matrix,
    spectral_bound,
)
from flowbound.certificates.local import CASCADE, Level
from flowbound.certificates.local import certified as local_certified
from flowbound.checks import check_eps_list, check_images, check_labels
from flowbound.networks.chain import chain, is_own
from flowbound.networks.view import (
    NetView,
    binary_weights,
    certified_classifier,
    classifier_input,
    unordered_pairs,
    view,
)
from flowbound.registry import Registry
from flowbound.threat.geometry import aabb_lambda
from flowbound.threat.sets import FULL, THREAT_SETS, TIED

__all__ = [
    "BOUNDS",
    "Bound",
    "bound",
    "certified_digits",
    "certified_fraction",
    "decrease_bounds",
    "margins",
    "register_bound",
    "sound_bounds",
]

#: The flows a bound may cover (``Bound.threat``): tied flows with ||M r|| <= eps,
#: or (du, dv) with l_diff <= sqrt(2) eps.
#: (the threat sets a bound may cover: :data:`flowbound.threat.sets.THREAT_SETS`)

#: The network shapes a bound may apply to (``Bound.applies_to``).
#: ``"chain"``: any other network the per-digit certificate reads as a chain of
#: supported layers (:func:`flowbound.networks.chain.chain`: biases, deeper MLPs, CNNs).
ARCHITECTURES = ("one_hidden", "linear", "chain")

#: Pairwise decrease bounds at eps = 1 (B,) from a network view, unordered pairs,
#: the image side and the solver tolerance.
DecreaseFn = Callable[[NetView, list[tuple[int, int]], int, float], np.ndarray]


class CertifyFn(Protocol):
    """An input-dependent certificate: (E, N) bool, True where the image is classified
    correctly and certified at that eps. ``modes`` is the number of eigenvectors of
    M^T M the per-digit certificates keep (the profile's ``local.modes``; a certificate
    without such a setting ignores it); ``classifier_only`` lets a spatial transformer
    through, certifying its classifier on the transformed digit (refused otherwise)."""

    def __call__(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: list[float],
        *,
        modes: int | None = 200,
        classifier_only: bool = False,
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class Bound:
    """A certificate against flows: a global bound on the decrease, or a per-image one.

    A global bound sets ``decrease(net, pairs, side, tol)``: Delta per unordered
    pair at eps = 1, linear in eps (every global bound here is) and sound for
    [0, 1] images. An input-dependent one sets ``certify(model, x, y, eps)``
    instead. ``applies_to`` names the networks it accepts (``"one_hidden"``,
    ``"linear"``); ``threat`` the name of the registered threat set it covers
    (:mod:`flowbound.threat.sets`: tied flows, Sections 2-4; full flows), the threat set
    of the attack its soundness is checked against; ``sound`` whether it is a bound
    at all (False for the appendix's formulas as printed, shown for comparison: the
    soundness tests check every bound with ``sound=True``); ``label``, ``style`` and
    ``marker`` (matplotlib's) are how figures show it, ``short`` how prose names it in
    a list ("Frobenius, spectral, SDP"; the name by default). A per-image certificate
    may offer ``refine``, a dearer and tighter one of the same signature (and
    threat set) that Figure 12 runs only on the attacked digits its attack leaves open
    (with the profile's ``modes``, and with every eigenvector where few are left).
    """

    name: str
    label: str
    decrease: DecreaseFn | None = None
    style: str = "-"
    applies_to: tuple[str, ...] = ("one_hidden",)
    certify: CertifyFn | None = None
    threat: str = TIED.name
    sound: bool = True
    marker: str | None = "^"
    short: str = ""
    refine: CertifyFn | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"a bound's name must be an identifier, got {self.name!r}")
        if (self.decrease is None) == (self.certify is None):
            raise TypeError(
                f"bound {self.name!r} must set exactly one of decrease (a global bound: "
                f"Delta per class pair) and certify (a per-image certificate), got "
                f"{'both' if self.decrease is not None else 'neither'}"
            )
        if self.refine is not None and self.certify is None:
            raise TypeError(f"bound {self.name!r}: refine needs a per-image certify")
        for what, fn in (
            ("decrease", self.decrease), ("certify", self.certify), ("refine", self.refine)
        ):  # fmt: skip
            if fn is not None and not callable(fn):
                raise TypeError(f"bound {self.name!r}: {what} must be callable, got {fn!r}")
        if self.threat not in THREAT_SETS:
            raise ValueError(
                f"bound {self.name!r}: threat must be one of {', '.join(THREAT_SETS)}, got "
                f"{self.threat!r}"
            )
        if not self.applies_to or any(a not in ARCHITECTURES for a in self.applies_to):
            raise ValueError(
                f"bound {self.name!r}: applies_to must name some of {', '.join(ARCHITECTURES)}, "
                f"got {self.applies_to!r}"
            )
        if not isinstance(self.sound, bool):
            raise TypeError(f"bound {self.name!r}: sound must be True or False")
        if not self.short:
            object.__setattr__(self, "short", self.name)

    @property
    def local(self) -> bool:
        """Whether the certificate depends on the input (no pairwise Delta)."""
        return self.certify is not None


#: The registry of bounds, by name (Figures 5 and 11 iterate over the profile's kinds).
BOUNDS: Registry[Bound] = Registry("bound")


def register_bound(b: Bound) -> Bound:
    """Add a bound to :data:`BOUNDS` (names are unique)."""
    return BOUNDS.add(b)


def bound(name: str) -> Bound:
    """The registered bound ``name``, or an error listing the registered ones."""
    return BOUNDS.named(name)


def sound_bounds(arch: str | None = None) -> list[str]:
    """The registered bounds with ``sound=True`` (those that applies to ``arch``, when
    given), in registration order: what the soundness tests check."""
    return [
        name for name, b in BOUNDS.items() if b.sound and (arch is None or arch in b.applies_to)
    ]


def _sdp(net: NetView, pairs, side: int, tol: float) -> np.ndarray:
    a = sdp_matrix(net.w, binary_weights(net.v, pairs), aabb_lambda(side))
    res = sdp_bound(a, tol=tol)
    return np.array([2 * sdp_adversarial_bound(u, 1.0, domain="unit") for u in res.upper])


def _norm(formula, form: str) -> DecreaseFn:
    # the sound forms bound l_adv = decrease / 2; the printed ones are read as
    # bounds on the decrease itself (Readings table, point 12)
    factor = 2.0 if form == "sound" else 1.0

    def decrease(net: NetView, pairs, side: int, tol: float) -> np.ndarray:
        heads = binary_weights(net.v, pairs).numpy()
        return factor * formula(net.w.numpy(), heads, 1.0, form=form, side=side)

    return decrease


def _linear(net: NetView, pairs, side: int, tol: float) -> np.ndarray:
    return 2.0 * linear_bound(binary_weights(net.v, pairs).numpy(), 1.0, side=side)


def _local(
    threat: str, levels: tuple[Level, ...], exact: tuple[Level, ...] | None = None
) -> CertifyFn:
    """The per-digit certificate on ``threat`` at ``levels`` of the cascade, and at
    ``exact`` (default ``levels``) where it is asked for the exact ellipsoid
    (``modes=None``): its first two levels for every digit (``certify``); the others
    (``refine``, run on the attacked digits the attack and the first two levels leave
    open) each neuron's own slopes, and where the exact ellipsoid runs (few digits,
    where the truth is nearly known) those slopes stepped too where
    :data:`EXACT_LEVELS` says, several times dearer per digit."""

    def certify(
        model, x, y, eps, *, modes: int | None = 200, classifier_only: bool = False
    ) -> np.ndarray:
        chosen = levels if modes is not None or exact is None else exact
        return local_certified(
            model, x.double(), y, eps, threat=threat, modes=modes, levels=chosen,
            progress=chosen == CASCADE[:2], classifier_only=classifier_only,
        )  # fmt: skip

    return certify


register_bound(Bound("sdp", "SDP (Section 4.1)", _sdp, ":", marker=None, short="SDP"))
register_bound(
    Bound("spectral", "spectral (sound)", _norm(spectral_bound, "sound"), "-.", marker=None)
)
register_bound(
    Bound(
        "frobenius",
        "Frobenius (sound)",
        _norm(frobenius_bound, "sound"),
        ":",
        marker="x",
        short="Frobenius",
    )
)
for _name, _label, _formula in (
    ("spectral", "spectral", spectral_bound),
    ("frobenius", "Frobenius", frobenius_bound),
):
    register_bound(
        Bound(
            f"{_name}_printed",
            f"{_label} (as printed)",
            _norm(_formula, "printed"),
            "-.",
            sound=False,  # Readings table, point 12: not a bound on the decrease
        )
    )
register_bound(
    Bound("linear", "linear (Eq. 16)", _linear, "-", applies_to=("linear",), marker=None)
)
#: The cascade's levels each threat set's refinement runs with the exact ellipsoid: the
#: fourth (the own slopes stepped, then the flow's sign split for the margins still
#: open) on tied flows only, where the steps narrow f_nt's bracket by up to 2.3 points
#: at eps 0.2-0.5 for about 23 s per network and the split by up to 0.5 more for a few
#: seconds; on full flows the steps would add about 114 s per network for 1 point at
#: 0.3, past the certifying chapter's cost cap (``benchmarks/RESULTS.md``).
#: ``certified`` runs every level on either set.
EXACT_LEVELS = {TIED.name: CASCADE[2:], FULL.name: CASCADE[2:3]}

for _threat, _style, _marker in ((TIED.name, "-", "o"), (FULL.name, "--", "s")):
    register_bound(
        Bound(
            f"local_{_threat}",
            f"per digit, {_threat} flows",
            style=_style,
            marker=_marker,
            applies_to=("one_hidden", "linear", "chain"),
            certify=_local(_threat, CASCADE[:2]),
            refine=_local(_threat, CASCADE[2:3], exact=EXACT_LEVELS[_threat]),
            threat=_threat,
        )
    )


def decrease_bounds(model: torch.nn.Module, kind: str, *, side: int = 28, tol: float = 1e-4):
    """Delta at eps = 1 for every class pair: a symmetric (K, K) array (0 on the diagonal)."""
    b = bound(kind)
    if b.local:
        raise ValueError(f"the {kind!r} certificate depends on the input: it has no Delta")
    net = view(model)
    arch = "linear" if net.w is None else "one_hidden"
    if arch not in b.applies_to:
        raise ValueError(
            f"the {kind!r} bound applies to {', '.join(b.applies_to)} networks, not {arch}"
        )
    k = net.classes
    pairs = unordered_pairs(k)
    vals = np.asarray(b.decrease(net, pairs, side, tol), dtype=np.float64)
    out = np.zeros((k, k))
    for (i, j), val in zip(pairs, vals, strict=True):
        out[i, j] = out[j, i] = val
    return out


@torch.no_grad()
def margins(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """m_i(x) = f_y(x) - f_i(x) for every class i (N, K); the classifier's view for an STN."""
    net, x = classifier_input(model, x)  # an STN: its classifier on the transformed images
    scores = net(x.to(next(net.parameters()).device)).double().cpu()
    return (scores.gather(1, y.view(-1, 1).cpu()) - scores).numpy()


def _checked_delta(delta, k: int) -> np.ndarray:
    """A global bound's pairwise Delta as given: (K, K), finite, >= 0, symmetric."""
    try:
        d = np.asarray(delta, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"delta must be a (K, K) array of numbers, got {type(delta).__name__}"
        ) from None
    if d.shape != (k, k):
        raise ValueError(f"delta must have shape ({k}, {k}) for a {k}-class network, got {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("delta has NaN or inf entries")
    if (d < 0).any():
        raise ValueError(
            "delta must be >= 0: it bounds how much a flow can lower a margin, and a negative "
            "bound would certify digits no bound covers"
        )
    if not np.array_equal(d, d.T):
        raise ValueError("delta must be symmetric (one bound per unordered class pair)")
    return d


def certified_digits(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps,
    kind: str = "sdp",
    *,
    side: int = 28,
    delta: np.ndarray | None = None,
    tol: float = 1e-4,
    modes: int | None = 200,
    classifier_only: bool = False,
) -> np.ndarray:
    """(E, N) bool: each digit classified correctly and certified by ``kind`` at each
    eps. ``delta`` reuses a global bound's pairwise Delta from :func:`decrease_bounds`
    (computed here otherwise; checked: (K, K), finite, >= 0, symmetric); an
    input-dependent certificate is run per image, with ``modes`` (:class:`CertifyFn`).
    Images must lie in [0, 1] (every bound here is sound for that domain), labels among
    the network's classes, eps be finite and >= 0; an empty batch gives (E, 0). A spatial
    transformer is refused unless ``classifier_only=True`` (its classifier is certified
    on the transformed digit, not the model)."""
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a bound's name (a string), got {type(kind).__name__}")
    b = bound(kind)
    check_images("x", x, domain="unit")
    if is_own(model):
        certified_classifier(model, classifier_only)
        k = view(model).classes
    else:
        if "chain" not in b.applies_to:
            raise ValueError(
                f"the {kind!r} bound applies to {', '.join(b.applies_to)} networks (flowbound's "
                f"own); {type(model).__name__} is certified by the per-digit certificates "
                f"({', '.join(n for n, o in BOUNDS.items() if 'chain' in o.applies_to)})"
            )
        if not isinstance(classifier_only, bool):
            raise TypeError(f"classifier_only must be True or False, got {classifier_only!r}")
        k = chain(model, x.shape[-1]).classes
    check_labels("y", y, len(x), classes=k)
    eps = np.asarray(check_eps_list("eps", eps))
    if len(x) == 0:
        return np.zeros((len(eps), 0), dtype=bool)
    if b.local:
        ok = b.certify(
            model, x, y, [float(e) for e in eps], modes=modes, classifier_only=classifier_only
        )
        ok = np.asarray(ok)
        if ok.shape != (len(eps), len(x)) or ok.dtype != bool:
            raise TypeError(
                f"the {kind!r} certificate must return an (E, N) = ({len(eps)}, {len(x)}) bool "
                f"array, got {ok.dtype} of shape {ok.shape}"
            )
        return ok
    if delta is None:
        delta = decrease_bounds(model, kind, side=side, tol=tol)
    delta = _checked_delta(delta, k)
    m = margins(model, x, y)
    yy = y.cpu().numpy()
    need = delta[yy]  # (N, K): Delta_{y, i} per image
    m = m.copy()
    m[np.arange(len(yy)), yy] = np.inf  # the true class itself never flips
    correct = (m > 0).all(1)
    return np.stack([correct & (m > e * need).all(1) for e in eps])


def certified_fraction(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps, kind: str = "sdp", **options
) -> np.ndarray:
    """The 0/1 adversarial loss at each eps: the fraction of (x, y) that are
    misclassified or not certified (Figure 5); ``options`` as for
    :func:`certified_digits`."""
    return 1.0 - certified_digits(model, x, y, eps, kind, **options).mean(1)
