"""Checks on what public functions are given: one clear error, never a plausible number.

Every numeric entry point (bounds, certificates, attacks, the warp) calls
these before computing: a NaN, an inf, a complex or wrongly shaped array, an
image outside its declared pixel domain, or a parameter out of range raises a
``ValueError`` or ``TypeError`` that names the argument, says what was
expected, and what was given.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

__all__ = [
    "DOMAINS",
    "SettingError",
    "check_device",
    "check_eps_list",
    "check_images",
    "check_int",
    "check_labels",
    "check_number",
    "check_training_plan",
    "check_training_set",
    "finite_float64",
]


class SettingError(ValueError):
    """A setting read from the environment or a settings table (``$FLOWBOUND_DEVICE``,
    ``$FLOWBOUND_STACK``, :data:`flowbound.device.CHUNKS`) that flowbound cannot use:
    names the setting, what it must be and what it is."""


#: Pixel domains: "unit" is [0, 1] (MNIST as loaded), "symmetric" is [-1, 1] (Section 3).
DOMAINS: dict[str, tuple[float, float]] = {"unit": (0.0, 1.0), "symmetric": (-1.0, 1.0)}


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the stated range, else ValueError/TypeError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | np.floating | np.integer):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
            value = value.item()
        else:
            raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {v}")
    if high is not None and (v >= high if high_open else v > high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {v}")
    return v


def check_int(name: str, value: Any, *, low: int = 1) -> int:
    """``value`` as an int >= ``low`` (bools and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return int(value)


def check_device(name: str, device: Any) -> torch.device | None:
    """``device`` (None, a string or a torch.device) as a usable CPU or CUDA device."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"{name} must be None, 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        ) from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"{name} must be a CPU or CUDA device, got {device!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"{name} is {device!r} but CUDA is not available here; pass 'cpu'")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"{name} is {device!r} but this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return dev


def finite_float64(name: str, x: Any, *, ndims: tuple[int, ...]) -> np.ndarray:
    """A real, finite, non-empty float64 array with one of ``ndims`` dimensions."""
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{name} must be real, got a complex tensor")
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got a complex array")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has {int((~np.isfinite(arr)).sum())} NaN or inf entries")
    return arr


def check_images(name: str, x: Any, *, domain: str = "unit") -> torch.Tensor:
    """Images (B, H, W), real, finite and inside the pixel ``domain`` (B may be 0)."""
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {sorted(DOMAINS)}, got {domain!r}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, H, W), got {type(x).__name__}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (B, H, W), got {tuple(x.shape)}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} has NaN or inf pixels")
    lo, hi = DOMAINS[domain]
    if x.numel() and (float(x.min()) < lo - 1e-6 or float(x.max()) > hi + 1e-6):
        raise ValueError(
            f"{name} must lie in [{lo:g}, {hi:g}] (domain={domain!r}), got values in "
            f"[{float(x.min()):g}, {float(x.max()):g}]; rescale 0-255 images by 1/255, or pass "
            f"domain='symmetric' for [-1, 1] images"
        )
    return x


def check_labels(name: str, y: Any, batch: int, classes: int | None = None) -> torch.Tensor:
    """Integer labels (B,) for a batch of ``batch`` images, each in [0, classes)."""
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be an int64 tensor of labels, got {getattr(y, 'dtype', y)}")
    if y.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},), got {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or (classes is not None and int(y.max()) >= classes)):
        raise ValueError(f"{name} must lie in [0, {classes}), got [{int(y.min())}, {int(y.max())}]")
    return y


def check_training_set(
    x: Any, y: Any, *, inputs: int | None = None, classes: int | None = None
) -> None:
    """A training set: images (N, H, W) or vectors (N, d), real floating point and
    finite, N >= 1, with ``inputs`` values each when given; labels int64 (N,) in
    [0, ``classes``)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.is_complex():
        raise TypeError(f"x must be a real floating-point tensor, got {getattr(x, 'dtype', x)!r}")
    if x.dim() not in (2, 3):
        raise ValueError(f"x must have shape (N, H, W) or (N, d), got {tuple(x.shape)}")
    if len(x) == 0:
        raise ValueError("x is empty: training needs at least one example")
    if inputs is not None and x[0].numel() != inputs:
        raise ValueError(
            f"x has {x[0].numel()} values per example (shape {tuple(x.shape)}), but the "
            f"network takes {inputs} inputs"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x has NaN or inf entries")
    check_labels("y", y, len(x), classes=classes)


def check_training_plan(epochs: Any, batch_size: Any, lr: Any) -> tuple[int, int, float]:
    """(epochs, batch_size, lr) checked: integers >= 1 and a learning rate > 0."""
    return (
        check_int("epochs", epochs),
        check_int("batch_size", batch_size),
        check_number("lr", lr, low=0.0, low_open=True),
    )


def check_eps_list(name: str, eps: Any) -> list[float]:
    """One budget or a non-empty sequence of them, each finite and >= 0, as floats."""
    values = np.atleast_1d(np.asarray(eps, dtype=object))
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"{name} must be a number or a non-empty list of numbers, got {eps!r}")
    return [check_number(name, e, low=0.0) for e in values]
