"""One view of a network's layers: the only module that knows where they live.

Every network in the book is f(x) = V relu(W x) (one hidden layer, no
biases) or f(x) = V x (linear), possibly behind a spatial transformer (the
STN variant, whose ``classifier`` is such a network). Bounds, lower bounds
and training losses read W and V through :func:`weights` or :func:`view`,
build the binary heads v = V_i - V_j of class pairs with
:func:`binary_weights`, and list pairs with :func:`ordered_pairs` /
:func:`unordered_pairs`. A bound computed from the view covers the
classifier applied to the transform's output, not the transform (as in
Figure 5).

Used in: certify, impossibility, the training losses, the Possibility,
Multi-class and Proofs chapters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from flowbound.networks.architectures import Linear, OneHidden, STNClassifier

__all__ = [
    "NetView",
    "binary_weights",
    "certified_classifier",
    "classifier_input",
    "classifier_of",
    "ordered_pairs",
    "pair_layers",
    "unordered_pairs",
    "view",
    "weights",
]


class NetView(NamedTuple):
    """The layers of f = V relu(W x) (``w`` None for f = V x), detached and in one
    dtype on one device, and the ``transform`` in front of them (None, or the
    STN's image-to-image map)."""

    w: torch.Tensor | None
    v: torch.Tensor
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def classes(self) -> int:
        """The number of classes K (rows of V)."""
        return self.v.shape[0]


def classifier_of(model: nn.Module) -> nn.Module:
    """The bias-free network whose layers the bounds read: ``model`` itself, or the
    classifier behind a spatial transformer.

    Only flowbound's own architectures are accepted (``models.OneHidden``,
    ``models.Linear``, and ``models.STNClassifier``'s classifier), exactly those
    classes, with bias-free ``nn.Linear`` layers: the bounds read W and V alone, so a
    bias, another layer or an overridden ``forward`` would be certified as if it
    were not there. Anything else is a TypeError, never an approximation."""

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    net = model.classifier if type(model) is STNClassifier else model
    if type(net) not in (OneHidden, Linear):
        biased = any(getattr(m, "bias", None) is not None for m in net.modules())
        raise TypeError(
            f"{type(model).__name__} is not one of flowbound's architectures"
            f"{' (and it has biases)' if biased else ''}: the bounds "
            f"cover f = V relu(W x) or f = V x without biases and read only W and V, so "
            f"they cannot represent its layers exactly; build the network as "
            f"models.OneHidden, models.Linear or models.STNClassifier (subclasses are "
            f"refused too: they may change forward)"
        )
    for name in ("W", "V") if type(net) is OneHidden else ("V",):
        layer = getattr(net, name, None)
        if type(layer) is not nn.Linear:
            raise TypeError(
                f"{type(model).__name__}.{name} must be a torch.nn.Linear layer, got "
                f"{type(layer).__name__}"
            )
        if layer.bias is not None:
            raise TypeError(
                f"{type(model).__name__}.{name} has a bias: flowbound's bounds are for "
                f"bias-free networks (Section 3.1) and would certify it as if the bias "
                f"were not there; build the layer with bias=False"
            )
    return net


def certified_classifier(model: nn.Module, classifier_only: bool) -> nn.Module:
    """:func:`classifier_of` for a certificate: a spatial transformer only when the
    caller asks for its classifier alone (``classifier_only=True``). A certificate of
    the classifier on the transformed digit is not one of the model: the transform
    moves with the flow, so a digit certified this way may still be flipped through
    the transform."""
    if not isinstance(classifier_only, bool):
        raise TypeError(f"classifier_only must be True or False, got {classifier_only!r}")
    net = classifier_of(model)
    if net is not model and not classifier_only:
        raise TypeError(
            f"{type(model).__name__} puts a spatial transformer in front of its classifier: "
            f"the certificate covers the classifier on the transformed digit, not the whole "
            f"model, so a digit it certifies may still be flipped through the transform; pass "
            f"classifier_only=True to certify the classifier alone (as Figures 5 and 12 do)"
        )
    return net


@torch.no_grad()
def classifier_input(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """(the classifier the bounds cover, the images it sees): ``model`` and ``x``, or an
    STN's classifier and the STN's output (the transform is not certified)."""
    net = classifier_of(model)
    if net is model:
        return net, x
    p = next(model.parameters())  # the transform runs in the STN's own dtype and device
    return net, model.transform(x.to(p.device, p.dtype))


def weights(model: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(W or None, V) as the model's own parameters (differentiable; training losses)."""
    net = classifier_of(model)
    w = net.W.weight if hasattr(net, "W") else None
    return w, net.V.weight


def view(
    model: nn.Module,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = "cpu",
) -> NetView:
    """The model's layers detached, in ``dtype`` on ``device`` (None: where they are)."""
    w, v = weights(model)

    def cast(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to(dtype)
        return t if device is None else t.to(device)

    transform = getattr(model, "transform", None) if hasattr(model, "classifier") else None
    return NetView(None if w is None else cast(w), cast(v), transform)


def ordered_pairs(k: int = 10) -> list[tuple[int, int]]:
    """All k (k - 1) ordered class pairs (i, j), i != j, in row-major order."""
    return [(i, j) for i in range(k) for j in range(k) if i != j]


def unordered_pairs(k: int = 10) -> list[tuple[int, int]]:
    """All k (k - 1) / 2 class pairs (i, j) with i < j, in row-major order."""
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def binary_weights(v: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """The binary heads V_i - V_j of f_i - f_j, one row per pair: (K, h) -> (B, h), or
    (M, K, h) -> (M, B, h) for M stacked networks; keeps gradients (Readings table,
    point 15)."""
    if not pairs:
        return v[..., :0, :]
    i = torch.tensor([p[0] for p in pairs], device=v.device)
    j = torch.tensor([p[1] for p in pairs], device=v.device)
    if bool((i == j).any()):
        raise ValueError(f"a binary head needs two different classes, got pairs {pairs}")
    return v[..., i, :] - v[..., j, :]


def pair_layers(
    model: nn.Module, pairs: list[tuple[int, int]]
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(W (h, d) or None, the binary heads V_i - V_j (B, h or d)) in float64 on the CPU."""
    net = view(model)
    return net.w, binary_weights(net.v, pairs)
