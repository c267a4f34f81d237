"""The training loop: Adam over shuffled mini-batches, the loss checked once per epoch.

Used in: :func:`flowbound.book.trained.get_model` (on a cache miss), the tests of
every objective.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flowbound.checks import check_int, check_training_plan, check_training_set
from flowbound.progress import bar as progress_bar
from flowbound.training.epoch_loss import EpochLoss
from flowbound.training.zoo import LossFn

__all__ = ["StepDecayed", "TrainingError", "accuracy", "cross_entropy", "fit", "step_decay"]


class TrainingError(RuntimeError):
    """Training diverged (a NaN or inf loss) or learned nothing; nothing is cached."""


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``model`` on (x, y)."""
    return F.cross_entropy(model(x), y)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
    """Fraction of ``x`` classified as ``y``."""
    dev = next(model.parameters()).device
    correct = 0
    for k in range(0, len(x), batch_size):
        pred = model(x[k : k + batch_size].to(dev)).argmax(1).cpu()
        correct += int((pred == y[k : k + batch_size]).sum())
    return correct / len(x)


def _classes(model: nn.Module, x: torch.Tensor) -> int:
    """The number of classes ``model`` scores, from one example of ``x`` (a ValueError
    naming the shape when it cannot score it)."""
    if not isinstance(x, torch.Tensor) or len(x) == 0:
        check_training_set(x, torch.zeros(0, dtype=torch.int64))  # the error for x
    p = next(model.parameters())
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            scores = model(x[:1].to(p.device, p.dtype))
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ValueError(
            f"the model cannot score x of shape {tuple(x.shape)}: "
            f"{' '.join(str(exc).split())[:200]}"
        ) from None
    finally:
        model.train(was)
    if scores.dim() != 2:
        raise ValueError(f"the model must return scores (B, K), got {tuple(scores.shape)}")
    return scores.shape[1]


def step_decay(epochs: Sequence[int], factor: float) -> Callable[[int], float]:
    """The multiplier of a step decay: ``factor`` once for each of ``epochs`` (1-based
    epoch numbers, from which on the learning rate is lower) reached by 0-based epoch e."""
    marks = sorted(int(e) for e in epochs)
    return lambda e: factor ** sum(1 for m in marks if m <= e + 1)


class StepDecayed:
    """``loss`` with a step-decayed learning rate: :func:`fit` multiplies its ``lr`` by
    ``factor`` from each of ``epochs`` (1-based) on (:func:`step_decay`)."""

    def __init__(self, loss: LossFn, epochs: Sequence[int], factor: float) -> None:
        self.loss, self.lr_scale = loss, step_decay(epochs, factor)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(model, x, y)


def fit(
    model: nn.Module,
    loss: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    desc: str = "train",
    progress: bool = True,
) -> nn.Module:
    """Minimise ``loss`` with Adam over shuffled mini-batches; in place, returns ``model``.

    If ``loss`` has a method ``on_epoch_start(model, epoch, x, y)``, it is
    called before every epoch (f_at refreshes its pool of stAdv examples), and
    ``on_fit_start(epochs=, batch_size=)`` once before training (f_cert checks its
    ramp against the plan), and ``lr_scale(epoch)`` (0-based) multiplies ``lr`` in that
    epoch (f_cert's optional step decay, :func:`step_decay`);
    tensors returned by ``loss.extra_parameters(model)`` are optimised by the
    same Adam as the weights (f_sdp's dual vectors). Checked first: the plan (integers
    >= 1, lr > 0, seed >= 0) and the data (finite examples the model can score, labels
    among its classes, at least one).
    """
    epochs, batch_size, lr = check_training_plan(epochs, batch_size, lr)
    seed = check_int("seed", seed, low=0)
    check_training_set(x, y, classes=_classes(model, x))
    start = getattr(loss, "on_fit_start", None)
    if start is not None:  # a loss that needs the plan checks it (f_cert's ramp)
        start(epochs=epochs, batch_size=batch_size)
    dev = next(model.parameters()).device
    torch.manual_seed(seed)  # losses that draw random numbers (PGD starts) are reproducible
    gen = torch.Generator().manual_seed(seed)

    def bad_loss(bad: torch.Tensor, epoch: int) -> str | None:
        if int(bad) < 0:
            return None
        return f"the loss became inf or nan at epoch {epoch}, batch {int(bad) + 1}"

    return run_epochs(
        model, loss, x, y,
        orders=lambda: torch.randperm(len(x), generator=gen).to(dev),
        watch=((), torch.float32), bad_loss=bad_loss,
        epochs=epochs, batch_size=batch_size, lr=lr, desc=desc, progress=progress,
    )  # fmt: skip


def run_epochs(
    model: nn.Module,
    loss: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    orders: Callable[[], torch.Tensor],
    watch: tuple[tuple[int, ...], torch.dtype],
    bad_loss: Callable[[torch.Tensor, int], str | None],
    epochs: int,
    batch_size: int,
    lr: float,
    desc: str,
    progress: bool,
) -> nn.Module:
    """The training loop of :func:`fit` and of ``fit_stacked``: per epoch the learning
    rate lr * ``loss.lr_scale(epoch)`` where the loss has that method, the loss's
    ``on_epoch_start(model, epoch, x, y)`` (in eval mode), a data order from ``orders()``
    ((N,), or (M, N) for M stacked members), Adam steps on the batches of that order
    (the loss summed over members), the losses kept on the device (``watch``: their
    shape and dtype, :class:`~flowbound.training.epoch_loss.EpochLoss`) and read once;
    ``bad_loss(first bad batch per member, epoch)`` says what went wrong (None: all
    finite), raised as a :class:`TrainingError`."""
    dev = x.device if not list(model.parameters()) else next(model.parameters()).device
    scale = getattr(loss, "lr_scale", None)  # f_cert's learning-rate decay
    extra = getattr(loss, "extra_parameters", None)  # f_sdp's dual vectors
    params = list(model.parameters()) + (list(extra(model)) if extra is not None else [])
    opt = torch.optim.Adam(params, lr=lr)
    per_epoch = (len(x) + batch_size - 1) // batch_size
    bar = progress_bar(total=epochs * per_epoch, desc=desc, disable=not progress, unit="batch")
    model.train()
    hook = getattr(loss, "on_epoch_start", None)  # f_at's stAdv pool
    x_dev, y_dev = x.to(dev), y.to(dev)  # resident: no copy from the host per step
    for epoch in range(epochs):
        if scale is not None:
            for group in opt.param_groups:
                group["lr"] = lr * scale(epoch)
        if hook is not None:
            model.eval()
            hook(model, epoch, x, y)
            model.train()
        order = orders()
        losses = EpochLoss(watch[0], dev, watch[1])  # no host sync per step
        for step, k in enumerate(range(0, len(x), batch_size)):
            idx = order[..., k : k + batch_size]
            value = loss(model, x_dev[idx], y_dev[idx])
            losses.add(step, value)
            opt.zero_grad(set_to_none=True)
            value.sum().backward()
            opt.step()
            bar.update(1)
        total, bad = losses.read()
        problem = bad_loss(bad, epoch + 1)
        if problem is not None:
            bar.close()
            raise TrainingError(f"{desc}: {problem}; lower the learning rate (train.lr) and rerun")
        mean = (total / per_epoch).reshape(-1)
        bar.set_postfix(epoch=epoch + 1, loss="/".join(f"{v:.4f}" for v in mean), refresh=False)
    bar.close()
    model.eval()
    return model
