"""The networks of the book: one hidden layer, linear, and a spatial transformer.

The paper's networks have no biases: f(x) = V relu(W x) (Section 3.1) and
f(x) = V x (appendix 6.4). Every bound in the paper (Theorems 1-2, the SDP of
Section 4.1) is derived for that form, so the models here have none.
:data:`ARCHS` builds them by name.

Used in: every chapter that trains or evaluates a network.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ARCHS",
    "INITS",
    "binary_head",
    "binary_heads",
    "build",
    "initialised",
    "Linear",
    "OneHidden",
    "STNClassifier",
]


class OneHidden(nn.Module):
    """f(x) = V relu(W x): W is (hidden, d), V is (classes, hidden); no biases."""

    def __init__(self, d: int = 784, hidden: int = 512, classes: int = 10) -> None:
        super().__init__()
        self.W = nn.Linear(d, hidden, bias=False)
        self.V = nn.Linear(hidden, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (B, classes) for images (B, H, W) or vectors (B, d)."""
        return self.V(torch.relu(self.W(x.flatten(1))))


class Linear(nn.Module):
    """f(x) = V x: V is (classes, d); no bias (appendix 6.4)."""

    def __init__(self, d: int = 784, classes: int = 10) -> None:
        super().__init__()
        self.V = nn.Linear(d, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (B, classes) for images (B, H, W) or vectors (B, d)."""
        return self.V(x.flatten(1))


class STNClassifier(nn.Module):
    """A spatial transformer (Jaderberg et al., 2015) in front of a OneHidden classifier.

    The localisation network has three layers (784 -> h -> h -> 6, ReLU) and
    starts at the identity transform; the classifier sees the transformed
    image. A bound computed from ``classifier`` alone covers the classifier
    applied to the STN's output, not the whole pipeline.
    """

    def __init__(self, hidden: int = 500, stn_hidden: int = 100) -> None:
        super().__init__()
        self.localisation = nn.Sequential(
            nn.Linear(784, stn_hidden),
            nn.ReLU(),
            nn.Linear(stn_hidden, stn_hidden),
            nn.ReLU(),
            nn.Linear(stn_hidden, 6),
        )
        last = self.localisation[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
        self.classifier = OneHidden(784, hidden, 10)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The STN's output images (B, 28, 28)."""
        img = x.reshape(-1, 1, 28, 28)
        theta = self.localisation(img.flatten(1)).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(img.shape), align_corners=False)
        return F.grid_sample(img, grid, align_corners=False)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (B, 10) of the classifier on the transformed images."""
        return self.classifier(self.transform(x))


def binary_head(model: nn.Module, i: int, j: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The binary network f = (V_i - V_j)^T relu(W x) of classes i (+) and j (-).

    Returns a callable mapping (B, H, W) images to (B,) scores f_i - f_j
    (Readings table, point 15).
    """
    if i == j:
        raise ValueError(f"a binary head needs two different classes, got i = j = {i}")

    def f(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return out[:, i] - out[:, j]

    return f


def binary_heads(
    model: nn.Module, i: torch.Tensor, j: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-image binary networks f_b = (V_{i_b} - V_{j_b})^T relu(W x), b < B.

    The callable maps (m * B, H, W) images to (m * B,) scores; row k * B + b
    is scored with image b's pair, so a batch repeated m times (as the
    midpoint rule does) keeps each image's classes.
    """
    if i.shape != j.shape or i.dim() != 1:
        raise ValueError(f"i and j must be equal-length 1-D tensors, got {i.shape}, {j.shape}")
    if bool((i == j).any()):
        raise ValueError("a binary head needs two different classes for every image")

    def f(x: torch.Tensor) -> torch.Tensor:
        if len(x) % len(i):
            raise ValueError(f"batch of {len(x)} is not a multiple of {len(i)} images")
        out = model(x)
        row = torch.arange(len(x), device=out.device)
        image = row % len(i)
        return out[row, i.to(out.device)[image]] - out[row, j.to(out.device)[image]]

    return f


#: Initialisations a variant's settings may name (``init``); "default" is torch's.
INITS = ("default", "ibp")


def initialised(model: OneHidden, init: str) -> OneHidden:
    """``model`` with its hidden layer redrawn as ``init`` says: "default" leaves torch's
    uniform draw; "ibp" draws W from N(0, 2 pi / d^2) (Shi et al., 2021, IBP
    initialisation: an interval's width neither grows nor shrinks through the layer at
    the start; the last layer is left as drawn)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if init == "ibp":
        with torch.no_grad():
            model.W.weight.normal_(0.0, math.sqrt(2 * math.pi) / model.W.in_features)
    return model


#: Architectures by name: build(hidden, settings) -> module mapping images to (B, 10).
ARCHS: dict[str, Callable[[int, dict[str, Any]], nn.Module]] = {
    "one_hidden": lambda hidden, settings: initialised(
        OneHidden(784, hidden, 10), settings.get("init", "default")
    ),
    "linear": lambda hidden, settings: Linear(784, 10),
    "stn": lambda hidden, settings: STNClassifier(hidden, settings.get("stn_hidden", 100)),
}


def build(arch: str, hidden: int, seed: int, settings: dict[str, Any]) -> nn.Module:
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
        return ARCHS[arch](hidden, settings)
    finally:
        torch.random.set_rng_state(gen_state)
