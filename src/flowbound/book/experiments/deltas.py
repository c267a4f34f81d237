"""The pairwise decrease bounds of the global certificates, computed once per network.

Figure 5, the mean decrease bounds, the attack-vs-certificate check and Figure 12
read the same Delta (and so the same SDPs) through :func:`decrease_of`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from flowbound.book.trained import TrainedModel
from flowbound.certificates.registry import decrease_bounds

from ._common import FIRST_VERSION, cached_experiment

__all__ = ["decrease_of"]

#: The experiment's code version (in its cache key).
VERSIONS = {"decrease_bounds": FIRST_VERSION}


def decrease_of(trained: TrainedModel, kind: str, tol: float) -> np.ndarray:
    """Delta at eps = 1 for every class pair of a trained network under the global bound
    ``kind`` (:func:`~flowbound.certificates.registry.decrease_bounds`, a symmetric (K, K)
    array), computed once per network, kind and tolerance."""
    config = {"model": trained.config, "kind": kind, "tol": tol}

    def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {"delta": torch.from_numpy(decrease_bounds(trained.model, kind, tol=tol))}, {}

    return cached_experiment("decrease_bounds", VERSIONS, config, compute)[0]["delta"]
