"""Any feed-forward ReLU network as a chain of affine stages: what the certificate reads.

A chain is f = A_L relu(... relu(A_1 relu(A_0 x))): each stage A_k an affine map made
of one or more layers: ``nn.Linear`` (with or without bias), ``nn.Conv2d``,
``nn.AvgPool2d``, ``nn.Flatten`` and ``nn.BatchNorm1d/2d`` in eval mode (a per-channel
affine map: the same as folding it into the layer before); ``nn.Identity`` and
``nn.Dropout`` in eval mode are dropped. :func:`chain` builds it from flowbound's own
networks, from an ``nn.Sequential`` (nested ones flattened) or from a module that
``torch.fx`` traces to such a sequence. Anything else is a TypeError that names the
module and lists what is supported (:data:`SUPPORTED`), never an approximation; a
module in training mode or a first layer of the wrong size is a ValueError, NaN
weights a FloatingPointError.

Images are (N, s, s) in [0, 1]: a network whose first computing layer is
``nn.Conv2d``, ``nn.AvgPool2d`` or ``nn.BatchNorm2d`` reads them as (N, 1, s, s), any
other as (N, s * s); :func:`image_model` wraps a network so that it takes the images
as they are (the attacks' and the book's calling convention).

Used in: :mod:`flowbound.certificates.local`, :mod:`flowbound.attacks.flow_apgd`,
Certifying your own network.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from flowbound.networks.architectures import Linear, OneHidden, STNClassifier

__all__ = ["SUPPORTED", "Chain", "Stage", "chain", "image_model", "is_own", "reads_images"]

#: The layers a chain may hold, as the refusals list them.
SUPPORTED = (
    "nn.Linear (with or without bias)",
    "nn.Conv2d (groups 1, dilation 1, zero padding)",
    "nn.AvgPool2d (ceil_mode False, no divisor_override)",
    "nn.Flatten (start_dim 1, end_dim -1)",
    "nn.ReLU",
    "nn.BatchNorm1d / nn.BatchNorm2d (eval mode, with running statistics)",
    "nn.Dropout / nn.Identity (eval mode)",
)

#: A stage's dense matrix is formed when it has at most this many entries; a larger
#: stage is applied layer by layer (convolutions as convolutions).
DENSE_ENTRIES = 1 << 22

_IMAGE_FIRST = (nn.Conv2d, nn.AvgPool2d, nn.BatchNorm2d)
_VECTOR_FIRST = (nn.Linear, nn.BatchNorm1d)
_DROPPED = (nn.Identity, nn.Dropout)


class Op(NamedTuple):
    """One affine layer: ``linear`` its linear part on a batch (B, *in_shape), ``back``
    its transpose on rows (R, *out_shape) -> (R, *in_shape), ``bias`` (out_shape) or
    None, ``matrix`` (out, in) when the layer is a dense one."""

    linear: Callable[[torch.Tensor], torch.Tensor]
    back: Callable[[torch.Tensor], torch.Tensor]
    bias: torch.Tensor | None
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    matrix: torch.Tensor | None = None


class Stage:
    """An affine map x -> A x + b made of layers (:class:`Op`), on flattened vectors:
    :meth:`forward` (N, n_in) -> (N, n_out), :meth:`back` rows c (..., n_out) -> c A
    (..., n_in), ``bias`` b (n_out,) or None, :meth:`matrix` A (n_out, n_in)."""

    def __init__(self, ops: list[Op], in_shape: tuple[int, ...], dtype, device) -> None:
        self.ops, self.in_shape = ops, in_shape
        self.out_shape = ops[-1].out_shape if ops else in_shape
        self.n_in, self.n_out = math.prod(in_shape), math.prod(self.out_shape)
        self.dtype, self.device = dtype, device
        self._matrix: torch.Tensor | None = None
        self.bias = self._bias()

    def _bias(self) -> torch.Tensor | None:
        b = None
        for op in self.ops:
            if b is not None:
                b = op.linear(b[None])[0]
            if op.bias is not None:
                b = op.bias if b is None else b + op.bias
        return None if b is None else b.reshape(-1)

    def matrix(self) -> torch.Tensor | None:
        """A (n_out, n_in), formed once; None above :data:`DENSE_ENTRIES` entries."""
        if self._matrix is None:
            if len(self.ops) == 1 and self.ops[0].matrix is not None:
                self._matrix = self.ops[0].matrix
            elif self.n_in * self.n_out <= DENSE_ENTRIES:
                eye = torch.eye(self.n_out, dtype=self.dtype, device=self.device)
                self._matrix = self._back_layers(eye)
        return self._matrix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A x + b for x (N, n_in)."""
        h = x.reshape(len(x), *self.in_shape)
        for op in self.ops:
            h = op.linear(h)
            if op.bias is not None:
                h = h + op.bias
        return h.reshape(len(x), self.n_out)

    def _back_layers(self, rows: torch.Tensor) -> torch.Tensor:
        lead = rows.shape[:-1]
        h = rows.reshape(-1, *self.out_shape)
        for op in reversed(self.ops):
            h = op.back(h)
        return h.reshape(*lead, self.n_in)

    def back(self, rows: torch.Tensor) -> torch.Tensor:
        """c A for rows c (..., n_out): by the dense matrix where there is one (a single
        dense layer: its own weight, exactly), else layer by layer."""
        if not self.ops:
            return rows
        a = self.matrix()
        return rows @ a if a is not None else self._back_layers(rows)


class Chain(NamedTuple):
    """f = A_L relu(... relu(A_0 x)) on flattened images x (N, s * s): ``stages`` A_0 ...
    A_L (:class:`Stage`), ``classes`` K = A_L's outputs."""

    stages: tuple[Stage, ...]

    @property
    def classes(self) -> int:
        """K, the number of scores."""
        return self.stages[-1].n_out

    @property
    def dtype(self) -> torch.dtype:
        return self.stages[0].dtype

    @property
    def device(self) -> torch.device:
        return self.stages[0].device

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) (N, K) for flattened images x (N, s * s)."""
        h = x
        for k, stage in enumerate(self.stages):
            h = stage.forward(h if k == 0 else h.clamp(min=0))
        return h


def is_own(model: nn.Module) -> bool:
    """Whether ``model`` is one of flowbound's own architectures (exactly those classes)."""
    return type(model) in (OneHidden, Linear, STNClassifier)


def _modules(model: nn.Module) -> list[nn.Module]:
    """The layers of a sequential network in order: nested ``nn.Sequential`` flattened,
    any other module traced with ``torch.fx`` (it must trace to a chain of modules,
    ``relu`` and ``flatten(x, 1)`` calls)."""
    if type(model) is nn.Sequential:
        return [m for sub in model for m in _modules(sub)]
    if isinstance(model, (*_IMAGE_FIRST, *_VECTOR_FIRST, *_DROPPED, nn.ReLU, nn.Flatten)):
        return [model]
    if type(model).__module__.startswith("torch.nn"):  # a torch layer we cannot represent
        raise _refused(f"{type(model).__name__} is not supported")
    return _traced(model)


def _refused(what: str) -> TypeError:
    return TypeError(
        f"{what}: the certificate represents only these layers exactly: "
        f"{'; '.join(SUPPORTED)}; build the network from them (an nn.Sequential, or a "
        f"module whose forward is a plain chain of them)"
    )


def _traced(model: nn.Module) -> list[nn.Module]:
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as err:  # noqa: BLE001 - any tracing failure is a refusal
        raise _refused(
            f"{type(model).__name__} is not an nn.Sequential and torch.fx cannot trace it "
            f"({type(err).__name__}: {err})"
        ) from None
    out: list[nn.Module] = []
    prev = None
    for node in graph.nodes:
        if node.op == "placeholder":
            if prev is not None:
                raise _refused(f"{type(model).__name__} takes more than one input")
            prev = node
            continue
        if node.op == "output":
            if node.args[0] is not prev:
                raise _refused(f"{type(model).__name__} does not return its last layer's output")
            break
        tensors = [a for a in node.args if isinstance(a, torch.fx.Node)]
        tensors += [a for a in node.kwargs.values() if isinstance(a, torch.fx.Node)]
        if tensors != [prev] or node.args[:1] != (prev,):
            raise _refused(
                f"{type(model).__name__} is not a chain: {node.name} does not read exactly the "
                f"layer before it"
            )
        rest, kw = node.args[1:], dict(node.kwargs)
        kw.pop("inplace", None)
        if node.op == "call_module":
            out.extend(_modules(model.get_submodule(node.target)))
        elif node.target in (torch.relu, F.relu, "relu") and not rest and not kw:
            out.append(nn.ReLU())
        elif node.target in (torch.flatten, "flatten") and (rest in ((1,), (1, -1))) and not kw:
            out.append(nn.Flatten())
        else:
            raise _refused(f"{type(model).__name__} calls {node.target!r} ({node.name})")
        prev = node
    return out


def _reads_images(layers) -> bool:
    """Whether the first computing layer among ``layers`` reads (C, H, W) inputs."""
    for m in layers:
        if isinstance(m, _IMAGE_FIRST):
            return True
        if isinstance(m, _VECTOR_FIRST):
            return False
    return False


def reads_images(model: nn.Module) -> bool:
    """Whether the network reads (N, 1, s, s) (its first computing layer is a convolution,
    an average pool or a 2-d batch norm) rather than (N, s * s)."""
    return not is_own(model) and _reads_images(model.modules())


class _Images(nn.Module):
    """A network that takes images (N, s, s) as they are (module notes)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.image = reads_images(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(1) if self.image else x.flatten(1))


def image_model(model: nn.Module) -> nn.Module:
    """A network that takes images (N, s, s) as they are: ``model`` itself for flowbound's
    own networks and for any module that is not a chain (it reads what it reads); an
    ``nn.Sequential``, or a module ``torch.fx`` traces to a chain, wrapped so that it
    receives the images in the shape its first computing layer reads."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if is_own(model) or isinstance(model, _Images):
        return model
    if type(model) is not nn.Sequential:
        try:
            _modules(model)
        except TypeError:
            return model
    return _Images(model)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _conv_op(weight, stride, padding, groups, shape, bias) -> Op:
    """A convolution as a convolution: its transpose by ``conv_transpose2d`` with the
    output padding that gives back the input's size."""
    c, h, w = shape
    kh, kw = weight.shape[-2:]
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (w + 2 * padding[1] - kw) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"a {kh} x {kw} window does not fit a {h} x {w} input")
    extra = tuple(
        size - ((o - 1) * st - 2 * p + kk)
        for size, o, st, p, kk in zip((h, w), (oh, ow), stride, padding, (kh, kw), strict=True)
    )

    def linear(x):
        return F.conv2d(x, weight, None, stride, padding, 1, groups)

    def back(r):
        return F.conv_transpose2d(r, weight, None, stride, padding, extra, groups)

    out = (weight.shape[0] if groups == 1 else c, oh, ow)
    b = None if bias is None else bias[:, None, None].expand(out)
    return Op(linear, back, b, shape, out)


def _op(m: nn.Module, shape: tuple[int, ...], cast) -> Op:
    """The affine layer ``m`` on inputs of ``shape`` (flowbound's refusal rules)."""
    name = type(m).__name__
    if isinstance(m, nn.Linear):
        if shape != (m.in_features,):
            raise ValueError(
                f"{name}({m.in_features}, {m.out_features}) receives inputs of shape {shape}: "
                f"it needs {m.in_features} features (put nn.Flatten before it, or fix its size)"
            )
        w = cast(m.weight)
        return Op(lambda x: x @ w.T, lambda r: r @ w, None if m.bias is None else cast(m.bias),
                  shape, (m.out_features,), w)  # fmt: skip
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise _refused(f"nn.Flatten(start_dim={m.start_dim}, end_dim={m.end_dim})")
        n = math.prod(shape)
        return Op(lambda x: x.reshape(len(x), n), lambda r: r.reshape(len(r), *shape), None,
                  shape, (n,))  # fmt: skip
    if isinstance(m, nn.Conv2d):
        if len(shape) != 3 or shape[0] != m.in_channels:
            raise ValueError(
                f"{name} with {m.in_channels} input channels receives inputs of shape {shape}"
            )
        if m.groups != 1 or _pair(m.dilation) != (1, 1) or m.padding_mode != "zeros":
            raise _refused(
                f"{name} with groups={m.groups}, dilation={m.dilation}, padding_mode="
                f"{m.padding_mode!r}"
            )
        if isinstance(m.padding, str) and m.padding != "valid":
            raise _refused(f"{name} with padding={m.padding!r}")
        pad = (0, 0) if isinstance(m.padding, str) else _pair(m.padding)
        return _conv_op(cast(m.weight), _pair(m.stride), pad, 1, shape,
                        None if m.bias is None else cast(m.bias))  # fmt: skip
    if isinstance(m, nn.AvgPool2d):
        if len(shape) != 3:
            raise ValueError(f"{name} receives inputs of shape {shape}, not (C, H, W)")
        k = _pair(m.kernel_size)
        stride = _pair(m.stride if m.stride is not None else m.kernel_size)
        pad = _pair(m.padding)
        if m.ceil_mode or m.divisor_override is not None or (any(pad) and not m.count_include_pad):
            raise _refused(
                f"{name} with ceil_mode={m.ceil_mode}, divisor_override={m.divisor_override}, "
                f"count_include_pad={m.count_include_pad}"
            )
        c = shape[0]
        weight = cast(torch.full((c, 1, *k), 1.0 / (k[0] * k[1]), dtype=torch.float64))
        return _conv_op(weight, stride, pad, c, shape, None)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if m.training:
            raise ValueError(f"{name} is in training mode: call model.eval() before certifying")
        if m.running_mean is None or m.running_var is None:
            raise _refused(f"{name} without running statistics (track_running_stats=False)")
        want = 1 if isinstance(m, nn.BatchNorm1d) else 3
        if len(shape) != want or shape[0] != m.num_features:
            raise ValueError(f"{name}({m.num_features}) receives inputs of shape {shape}")
        mean, var = cast(m.running_mean), cast(m.running_var)
        scale = 1.0 / torch.sqrt(var + m.eps)
        if m.weight is not None:
            scale = scale * cast(m.weight)
        shift = -mean * scale
        if m.bias is not None:
            shift = shift + cast(m.bias)
        view = (-1,) + (1,) * (len(shape) - 1)
        s, b = scale.view(view), shift.view(view).expand(shape)
        return Op(lambda x: x * s, lambda r: r * s, b, shape, shape)
    raise _refused(f"{name} is not supported")


def _own_modules(model: nn.Module) -> list[nn.Module]:
    net = model.classifier if type(model) is STNClassifier else model
    return [net.W, nn.ReLU(), net.V] if type(net) is OneHidden else [net.V]


def chain(
    model: nn.Module,
    side: int,
    *,
    dtype: torch.dtype | None = torch.float64,
    device: str | torch.device | None = "cpu",
) -> Chain:
    """The network as a :class:`Chain` on images with ``side`` x ``side`` pixels, its
    weights detached in ``dtype`` on ``device``; ``dtype=None``: the model's own
    parameters, differentiable (the training surrogate). flowbound's own networks as
    they are (an STN: its classifier); :func:`image_model`'s wrapper as the network it
    wraps; anything else by the rules of the module notes."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, _Images):
        model = model.net
    mods = _own_modules(model) if is_own(model) else _modules(model)
    for m in mods:
        if isinstance(m, nn.Dropout) and m.training and m.p > 0:
            raise ValueError(
                f"{type(m).__name__} is in training mode: call model.eval() before certifying"
            )
    params = [p for m in mods for p in m.parameters(recurse=False)]
    params += [b for m in mods for b in m.buffers(recurse=False) if b.is_floating_point()]
    for p in params if dtype is not None else ():  # the surrogate keeps its NaN (training)
        if not bool(torch.isfinite(p).all()):
            raise FloatingPointError(
                "the network has NaN or infinite weights (check its training): no certificate"
            )
    if dtype is None:
        ref = params[0] if params else torch.empty(0)
        dtype, device = ref.dtype, ref.device

        def cast(t):
            return t.to(device, dtype)
    else:
        dev = device if device is not None else (params[0].device if params else "cpu")

        def cast(t):
            return t.detach().to(dev, dtype)

        device = torch.device(dev)
    shape: tuple[int, ...] = (1, side, side) if _reads_images(mods) else (side * side,)
    stages: list[Stage] = []
    ops: list[Op] = []
    start = shape
    for m in mods:
        if isinstance(m, _DROPPED):
            continue
        if isinstance(m, nn.ReLU):
            stages.append(Stage(ops, start, dtype, device))
            ops, start = [], shape
            continue
        op = _op(m, shape, cast)
        ops.append(op)
        shape = op.out_shape
    stages.append(Stage(ops, start, dtype, device))
    if len(shape) != 1:
        raise ValueError(
            f"the network's output has shape {shape} per image: it must be K scores (end with "
            f"nn.Flatten and nn.Linear)"
        )
    if shape[0] < 2:
        raise ValueError(f"the network must score at least 2 classes, got {shape[0]}")
    return Chain(tuple(stages))
