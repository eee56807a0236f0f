"""A small reverse-mode autograd over NumPy, for the ops a Llama-style LM needs.

A :class:`Tensor` holds ``data`` and, after :meth:`Tensor.backward`, ``grad``. Every op records
its inputs and a closure that adds the op's vector-Jacobian product to their ``grad``;
``backward`` walks the recorded graph (the tape) in reverse topological order. Ops keep the
dtype of their inputs (float32 for training, float64 for gradient checks).

Ops: :func:`add`, :func:`mul`, :func:`scale`, :func:`matmul` (broadcasting), :func:`linear`,
:func:`embedding`, :func:`rmsnorm`, :func:`rope`, :func:`causal_softmax`, :func:`silu`,
:func:`cross_entropy`, :func:`reshape`, :func:`transpose`, :func:`sum`, and
:func:`fake_quant_ste` for quantization-aware training.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence

import numpy as np

from refq.errors import QuantSpecError, ShapeError
from refq.models.llama import sigmoid


class Tensor:
    """An array with an optional gradient and the op that produced it."""

    __slots__ = ("_backward", "_parents", "data", "grad", "name", "requires_grad")

    def __init__(
        self,
        data: np.ndarray,
        requires_grad: bool = False,
        parents: Sequence[Tensor] = (),
        backward: Callable[[np.ndarray], None] | None = None,
        name: str = "",
    ) -> None:
        self.data = np.asarray(data)
        self.requires_grad = requires_grad
        self.grad: np.ndarray | None = None
        self._parents = tuple(parents)
        self._backward = backward
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def __repr__(self) -> str:
        return f"Tensor({self.name or '?'}, shape={self.shape}, dtype={self.data.dtype})"

    def _accumulate(self, g: np.ndarray) -> None:
        if self.grad is None:
            self.grad = g.astype(self.data.dtype, copy=True)
        else:
            self.grad += g

    def backward(self, grad: np.ndarray | None = None) -> None:
        """Reverse-mode sweep from this tensor (a scalar loss unless ``grad`` is given)."""
        if grad is None:
            if self.data.size != 1:
                raise ShapeError(
                    f"backward() of non-scalar tensor {self!r} needs an output gradient"
                )
            grad = np.ones_like(self.data)
        order: list[Tensor] = []
        seen: set[int] = set()
        stack: list[tuple[Tensor, bool]] = [(self, False)]
        while stack:  # iterative DFS: deep graphs must not hit the recursion limit
            t, done = stack.pop()
            if done:
                order.append(t)
                continue
            if id(t) in seen:
                continue
            seen.add(id(t))
            stack.append((t, True))
            stack.extend((p, False) for p in t._parents if p.requires_grad)
        self._accumulate(grad)
        for t in reversed(order):
            if t._backward is not None and t.grad is not None:
                t._backward(t.grad)
                if t._parents:  # intermediate gradients are not kept: saves memory
                    t.grad = None


def tensor(data: np.ndarray, requires_grad: bool = False, name: str = "") -> Tensor:
    return Tensor(np.asarray(data), requires_grad=requires_grad, name=name)


def _make(
    data: np.ndarray, parents: Sequence[Tensor], backward: Callable[[np.ndarray], None]
) -> Tensor:
    needs = builtins.any(p.requires_grad for p in parents)
    return Tensor(
        data,
        requires_grad=needs,
        parents=parents if needs else (),
        backward=backward if needs else None,
    )


def _unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``g`` over the axes that broadcasting added or stretched to reach ``shape``."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def add(a: Tensor, b: Tensor) -> Tensor:
    def back(g: np.ndarray) -> None:
        if a.requires_grad:
            a._accumulate(_unbroadcast(g, a.shape))
        if b.requires_grad:
            b._accumulate(_unbroadcast(g, b.shape))

    return _make(a.data + b.data, (a, b), back)


def mul(a: Tensor, b: Tensor) -> Tensor:
    def back(g: np.ndarray) -> None:
        if a.requires_grad:
            a._accumulate(_unbroadcast(g * b.data, a.shape))
        if b.requires_grad:
            b._accumulate(_unbroadcast(g * a.data, b.shape))

    return _make(a.data * b.data, (a, b), back)


def scale(a: Tensor, c: float) -> Tensor:
    """``a * c`` for a constant ``c``."""
    c = a.data.dtype.type(c)

    def back(g: np.ndarray) -> None:
        a._accumulate(g * c)

    return _make(a.data * c, (a,), back)


def sum(a: Tensor) -> Tensor:
    """Sum of all elements (a scalar)."""

    def back(g: np.ndarray) -> None:
        a._accumulate(np.broadcast_to(g, a.shape))

    return _make(np.asarray(a.data.sum()), (a,), back)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for ndim >= 2 with NumPy broadcasting of the batch axes."""
    if a.data.ndim < 2 or b.data.ndim < 2:
        raise ShapeError(f"matmul needs ndim >= 2 operands, got {a.shape} and {b.shape}")

    def back(g: np.ndarray) -> None:
        if a.requires_grad:
            a._accumulate(_unbroadcast(g @ np.swapaxes(b.data, -1, -2), a.shape))
        if b.requires_grad:
            b._accumulate(_unbroadcast(np.swapaxes(a.data, -1, -2) @ g, b.shape))

    return _make(a.data @ b.data, (a, b), back)


def linear(x: Tensor, w: Tensor) -> Tensor:
    """``x @ w.T`` with ``w`` of shape (out, in) and ``x`` of shape (..., in)."""
    lead = x.shape[:-1]
    x2 = x.data.reshape(-1, x.shape[-1])

    def back(g: np.ndarray) -> None:
        g2 = g.reshape(-1, g.shape[-1])
        if x.requires_grad:
            x._accumulate((g2 @ w.data).reshape(x.shape))
        if w.requires_grad:
            w._accumulate(g2.T @ x2)

    return _make((x2 @ w.data.T).reshape(*lead, w.shape[0]), (x, w), back)


def embedding(w: Tensor, idx: np.ndarray) -> Tensor:
    """Rows ``w[idx]``; the gradient scatters back with repeated indices summed."""
    idx = np.asarray(idx)

    def back(g: np.ndarray) -> None:
        gw = np.zeros_like(w.data)
        np.add.at(gw, idx.reshape(-1), g.reshape(-1, w.shape[1]))
        w._accumulate(gw)

    return _make(w.data[idx], (w,), back)


def rmsnorm(x: Tensor, w: Tensor, eps: float) -> Tensor:
    """``y = x * r * w`` with ``r = 1/sqrt(mean(x^2) + eps)`` over the last axis.

    VJP: ``dw = sum(g * x * r)``, ``dx = r * (g*w) - x * r^3 * mean((g*w) * x)``."""
    r = 1.0 / np.sqrt(np.mean(x.data * x.data, axis=-1, keepdims=True) + x.data.dtype.type(eps))
    xr = x.data * r

    def back(g: np.ndarray) -> None:
        if w.requires_grad:
            w._accumulate((g * xr).reshape(-1, w.shape[0]).sum(axis=0))
        if x.requires_grad:
            gw = g * w.data
            x._accumulate(r * gw - xr * (r * np.mean(gw * xr, axis=-1, keepdims=True)))

    return _make(xr * w.data, (x, w), back)


def rope(x: Tensor, cos: np.ndarray, sin: np.ndarray) -> Tensor:
    """Interleaved-pair RoPE on the last axis of ``x`` (..., T, hd) with tables (T, hd/2).

    The rotation is orthogonal, so the VJP rotates the gradient by the opposite angle."""

    def rot(a: np.ndarray, s: np.ndarray) -> np.ndarray:
        out = np.empty_like(a)
        a0, a1 = a[..., 0::2], a[..., 1::2]
        out[..., 0::2] = a0 * cos - a1 * s
        out[..., 1::2] = a0 * s + a1 * cos
        return out

    def back(g: np.ndarray) -> None:
        x._accumulate(rot(g, -sin))

    return _make(rot(x.data, sin), (x,), back)


def causal_softmax(scores: Tensor) -> Tensor:
    """Softmax over the last axis of (..., T, T) scores, key ``j > query i`` masked out.

    VJP: ``ds = p * (g - sum(g * p, -1))``."""
    T = scores.shape[-1]
    mask = np.triu(np.ones((T, T), dtype=bool), k=1)
    s = np.where(mask, -np.inf, scores.data)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)

    def back(g: np.ndarray) -> None:
        scores._accumulate(p * (g - np.sum(g * p, axis=-1, keepdims=True)))

    return _make(p, (scores,), back)


def silu(x: Tensor) -> Tensor:
    """``x * sigmoid(x)``; VJP ``g * (s + x * s * (1 - s))``."""
    s = sigmoid(x.data)

    def back(g: np.ndarray) -> None:
        x._accumulate(g * (s * (1.0 + x.data * (1.0 - s))))

    return _make(x.data * s, (x,), back)


def cross_entropy(logits: Tensor, targets: np.ndarray) -> Tensor:
    """Mean of ``-log softmax(logits)[target]`` over all leading positions (nats).

    VJP: ``(softmax - onehot(target)) / N``."""
    V = logits.shape[-1]
    z = logits.data.reshape(-1, V)
    t = np.asarray(targets).reshape(-1)
    if t.size != z.shape[0]:
        raise ShapeError(f"cross_entropy: {t.size} targets for {z.shape[0]} positions")
    m = z.max(axis=-1, keepdims=True)
    e = np.exp(z - m)
    ssum = e.sum(axis=-1, keepdims=True)
    logp_t = (z[np.arange(t.size), t] - m[:, 0]) - np.log(ssum[:, 0])
    loss = np.asarray(-logp_t.mean(), dtype=logits.data.dtype)

    def back(g: np.ndarray) -> None:
        d = e / ssum
        d[np.arange(t.size), t] -= 1.0
        logits._accumulate((d * (g / t.size)).reshape(logits.shape))

    return _make(loss, (logits,), back)


def reshape(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    def back(g: np.ndarray) -> None:
        x._accumulate(g.reshape(x.shape))

    return _make(x.data.reshape(shape), (x,), back)


def transpose(x: Tensor, axes: tuple[int, ...]) -> Tensor:
    inv = tuple(np.argsort(axes))

    def back(g: np.ndarray) -> None:
        x._accumulate(g.transpose(inv))

    return _make(x.data.transpose(axes), (x,), back)


def fake_quant_ste(
    x: Tensor,
    scale: np.ndarray | float,
    zp: np.ndarray | int,
    qmin: int,
    qmax: int,
) -> Tensor:
    """Uniform fake quantization with a clipped straight-through estimator.

    Forward: ``q = clip(round_half_even(x / scale) + zp, qmin, qmax)``, ``y = (q - zp) * scale``
    (ONNX QuantizeLinear / DequantizeLinear rounding). ``scale`` and ``zp`` broadcast against
    ``x`` (per-tensor scalars or per-channel arrays shaped for broadcasting). Backward: the
    gradient passes unchanged where ``round(x / scale) + zp`` lies in ``[qmin, qmax]`` and is
    zero where the value was clipped (the STE of Bengio et al. 2013, as used for QAT)."""
    s = np.asarray(scale, dtype=x.data.dtype)
    z = np.asarray(zp)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise QuantSpecError(f"fake_quant_ste: scale must be positive and finite, got {s}")
    if qmin >= qmax:
        raise QuantSpecError(f"fake_quant_ste: qmin {qmin} must be < qmax {qmax}")
    if np.any(z < qmin) or np.any(z > qmax) or np.any(z != np.round(z)):
        raise QuantSpecError(
            f"fake_quant_ste: zero point {z} must be an integer in [{qmin}, {qmax}]"
        )
    z = z.astype(x.data.dtype)
    q = np.round(x.data / s) + z
    inside = (q >= qmin) & (q <= qmax)
    y = ((np.clip(q, qmin, qmax) - z) * s).astype(x.data.dtype)

    def back(g: np.ndarray) -> None:
        x._accumulate(np.where(inside, g, 0))

    return _make(y, (x,), back)
