"""LayerNorm / RMSNorm as TFLite builtin ops: the "TFLM-decomposed form".

TFLite Micro has no LayerNorm kernel; converters emit it as a chain of int8 builtin ops, which
this module builds as a :class:`~refq.graph.Graph` (runs under any TFLite-family profile in
:class:`~refq.graph.Program`, and unchanged on the tflite-micro interpreter through
:func:`refq.tflite.writer.write_tflite`)::

    LayerNorm                                         RMSNorm
    mean    = MEAN(x, axis=-1, keep_dims)             sq      = MUL(x, x)
    diff    = SUB(x, mean)                            ms      = MEAN(sq, axis=-1, keep_dims)
    sq      = SQUARED_DIFFERENCE(x, mean)             ms_eps  = ADD(ms, eps)
    var     = MEAN(sq, axis=-1, keep_dims)            rstd    = RSQRT(ms_eps)
    var_eps = ADD(var, eps)                           norm    = MUL(x, rstd)
    rstd    = RSQRT(var_eps)                          y       = MUL(norm, gamma)
    norm    = MUL(diff, rstd)
    scaled  = MUL(norm, gamma)
    y       = ADD(scaled, beta)

Every intermediate is int8 with its own scale and zero point, which a converter would take from
calibration: here from the float ranges of the same chain evaluated in float64 on
``calibration`` (real input samples), asymmetric int8 with TFLite's nudged zero point
(:func:`refq.qparams.choose_qparams`, ``"tflite"``). ``mean`` keeps the input's quantization.
``eps`` is an int8 constant holding code 127 at scale ``eps / 127`` (exact to float32), so a
tiny epsilon is not rounded away before the ADD rescales it. ``gamma`` / ``beta`` are int8
constants, symmetric per tensor (``max |v| / 127``). ``gamma=None`` / ``beta=None`` drop the
MUL / ADD. The arithmetic of each op is that of its kernel module (reduce, elementwise,
activations); the tests compare the whole chain with TFLM bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refq.errors import InvalidDataError, QuantSpecError, ShapeError, UnsupportedError
from refq.graph import Graph, Node, TensorInfo

Shape = tuple[int | None, ...]
QMAX = {"int8": 127, "int16": 32767}


def _range_params(lo: float, hi: float, name: str, dtype: str) -> tuple[np.float32, int]:
    """Scale / zero point of a float range (TFLite converter convention): asymmetric int8,
    symmetric int16 (zero point 0, as TFLite's 16-bit kernels require)."""
    from refq.qparams import choose_qparams
    from refq.spec import QuantSpec

    spec = QuantSpec(dtype, symmetric=dtype == "int16")
    qp = choose_qparams((lo, hi), spec, "tflite", name=name)
    zp = 0 if qp.zero_point is None else int(np.asarray(qp.zero_point).reshape(-1)[0])
    return np.float32(np.asarray(qp.scale).reshape(-1)[0]), zp


def _symmetric_const(
    values: np.ndarray, name: str, shape: tuple[int, ...], dtype: str
) -> TensorInfo:
    """Per-tensor symmetric constant: scale ``max |v| / qmax``, codes ``round(v / scale)``."""
    qmax = QMAX[dtype]
    v = np.asarray(values, dtype=np.float32)
    peak = float(np.abs(v).max()) if v.size else 0.0
    scale = np.float32(peak / qmax) if peak > 0 else np.float32(1.0)
    codes = np.clip(np.rint(v.astype(np.float64) / float(scale)), -qmax, qmax).astype(dtype)
    return TensorInfo(name, dtype, shape, scale=scale, zero_point=0, data=codes.reshape(shape))


def _check_inputs(
    shape: Shape,
    calibration: np.ndarray,
    x_scale: float,
    x_zero_point: int,
    epsilon: float,
    dtype: str,
    what: str,
) -> tuple[int, np.ndarray]:
    if dtype not in QMAX:
        raise UnsupportedError(f"{what}: dtype {dtype!r}; the decomposed form is int8 or int16")
    if dtype == "int16" and x_zero_point != 0:
        raise QuantSpecError(f"{what}: int16 input needs zero point 0, got {x_zero_point}")
    shape = tuple(shape)
    if len(shape) < 2 or shape[-1] is None or any(d is not None and d < 1 for d in shape):
        raise ShapeError(
            f"{what}: shape {shape} needs rank >= 2 (MUL broadcasting of the row statistics) "
            "and a fixed last axis"
        )
    n = int(shape[-1])
    cal = np.asarray(calibration, dtype=np.float64)
    if cal.ndim == 0 or cal.shape[-1] != n or cal.size == 0:
        raise ShapeError(f"{what}: calibration must have shape (..., {n}), got {cal.shape}")
    if not np.isfinite(cal).all():
        raise InvalidDataError(f"{what}: calibration data holds NaN or Inf")
    if not (np.isfinite(x_scale) and x_scale > 0):
        raise QuantSpecError(f"{what}: input scale {x_scale!r} must be positive and finite")
    if not (np.isfinite(epsilon) and epsilon > 0):
        raise QuantSpecError(
            f"{what}: epsilon {epsilon!r} must be > 0 (RSQRT of a zero variance is undefined)"
        )
    return n, cal.reshape(-1, n)


class _Builder:
    def __init__(
        self, name: str, shape: Shape, x_scale: float, x_zero_point: int, dtype: str
    ) -> None:
        self.name = name
        self.dtype = dtype
        self.shape = tuple(shape)
        self.row_shape = (*self.shape[:-1], 1)
        self.g = Graph(tensors={}, nodes=[], inputs=["x"], outputs=[], name=name)
        self.g.add_tensor(
            TensorInfo("x", dtype, self.shape, scale=np.float32(x_scale), zero_point=x_zero_point)
        )
        rank = len(self.shape)
        self.axis = self.const_tensor(
            TensorInfo(f"{name}/axis", "int32", (1,), data=np.array([rank - 1], dtype=np.int32))
        )

    def const_tensor(self, info: TensorInfo) -> str:
        self.g.add_tensor(info)
        return info.name

    def act(self, tag: str, shape: Shape, lo: float, hi: float) -> str:
        name = f"{self.name}/{tag}"
        scale, zp = _range_params(lo, hi, name, self.dtype)
        self.g.add_tensor(TensorInfo(name, self.dtype, shape, scale=scale, zero_point=zp))
        return name

    def out(self, name: str, scale: float, zp: int) -> str:
        self.g.add_tensor(
            TensorInfo(name, self.dtype, self.shape, scale=np.float32(scale), zero_point=zp)
        )
        self.g.outputs = [name]
        return name

    def node(self, op: str, inputs: Sequence[str], output: str, **attrs: object) -> None:
        self.g.nodes.append(Node(op, tuple(inputs), (output,), dict(attrs)))

    def mean(self, x: str, output: str) -> None:
        self.node("MEAN", [x, self.axis], output, keep_dims=True)

    def eps(self, epsilon: float) -> str:
        # Code qmax at scale eps / qmax: eps keeps float32 precision into the ADD.
        qmax = QMAX[self.dtype]
        return self.const_tensor(
            TensorInfo(
                f"{self.name}/eps",
                self.dtype,
                (1,),
                scale=np.float32(epsilon / qmax),
                zero_point=0,
                data=np.array([qmax], dtype=self.dtype),
            )
        )


def _span(values: np.ndarray) -> tuple[float, float]:
    return float(values.min()), float(values.max())


def _finish_affine(
    b: _Builder,
    norm: str,
    norm_real: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    out_scale: float,
    out_zero_point: int,
    n: int,
) -> Graph:
    """``y = norm * gamma + beta`` with the last op writing the output tensor ``y``."""
    current, real = norm, norm_real
    steps = [("gamma", gamma, "MUL"), ("beta", beta, "ADD")]
    steps = [s for s in steps if s[1] is not None]
    for i, (tag, values, op) in enumerate(steps):
        v = np.asarray(values, dtype=np.float32).reshape(-1)
        if v.size != n:
            raise ShapeError(f"{b.name}: {tag} needs {n} values, got {v.size}")
        const = b.const_tensor(_symmetric_const(v, f"{b.name}/{tag}", (n,), b.dtype))
        real = real * v if op == "MUL" else real + v
        last = i == len(steps) - 1
        output = (
            b.out("y", out_scale, out_zero_point)
            if last
            else b.act("scaled", b.shape, *_span(real))
        )
        b.node(op, [current, const], output, activation="NONE")
        current = output
    if not steps:
        # No affine: the normalization itself writes y.
        b.g.nodes[-1].outputs = ("y",)
        del b.g.tensors[norm]
        b.out("y", out_scale, out_zero_point)
    b.g.validate()
    return b.g


def layer_norm_graph(
    shape: Shape,
    *,
    x_scale: float,
    x_zero_point: int,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    epsilon: float,
    out_scale: float,
    out_zero_point: int,
    calibration: np.ndarray,
    dtype: str = "int8",
    name: str = "layer_norm",
) -> Graph:
    """LayerNorm over the last axis of ``x`` (``shape``, leading dims may be ``None``) as
    MEAN / SUB / SQUARED_DIFFERENCE / MEAN / ADD / RSQRT / MUL / MUL / ADD (module docstring).
    ``dtype`` of every activation: ``int8`` or ``int16`` (zero points 0)."""
    what = f"layer_norm_graph {name!r}"
    n, cal = _check_inputs(shape, calibration, x_scale, x_zero_point, epsilon, dtype, what)
    b = _Builder(name, shape, x_scale, x_zero_point, dtype)
    mu = cal.mean(axis=1, keepdims=True)
    diff_r = cal - mu
    var_r = (diff_r * diff_r).mean(axis=1, keepdims=True)
    rstd_r = 1.0 / np.sqrt(var_r + epsilon)
    norm_r = diff_r * rstd_r

    mean = f"{name}/mean"
    b.g.add_tensor(
        TensorInfo(mean, dtype, b.row_shape, scale=np.float32(x_scale), zero_point=x_zero_point)
    )
    b.mean("x", mean)
    diff = b.act("diff", b.shape, *_span(diff_r))
    b.node("SUB", ["x", mean], diff, activation="NONE")
    sq = b.act("sq", b.shape, 0.0, float((diff_r * diff_r).max()))
    b.node("SQUARED_DIFFERENCE", ["x", mean], sq)
    var = b.act("var", b.row_shape, 0.0, float(var_r.max()))
    b.mean(sq, var)
    var_eps = b.act("var_eps", b.row_shape, 0.0, float(var_r.max()) + epsilon)
    b.node("ADD", [var, b.eps(epsilon)], var_eps, activation="NONE")
    rstd = b.act("rstd", b.row_shape, 0.0, float(rstd_r.max()))
    b.node("RSQRT", [var_eps], rstd)
    norm = b.act("norm", b.shape, *_span(norm_r))
    b.node("MUL", [diff, rstd], norm, activation="NONE")
    return _finish_affine(b, norm, norm_r, gamma, beta, out_scale, out_zero_point, n)


def rms_norm_graph(
    shape: Shape,
    *,
    x_scale: float,
    x_zero_point: int,
    gamma: np.ndarray | None,
    epsilon: float,
    out_scale: float,
    out_zero_point: int,
    calibration: np.ndarray,
    beta: np.ndarray | None = None,
    dtype: str = "int8",
    name: str = "rms_norm",
) -> Graph:
    """RMSNorm over the last axis of ``x`` as MUL / MEAN / ADD / RSQRT / MUL / MUL (module
    docstring); ``x_zero_point`` is the code of real 0. ``dtype``: ``int8`` or ``int16``."""
    what = f"rms_norm_graph {name!r}"
    n, cal = _check_inputs(shape, calibration, x_scale, x_zero_point, epsilon, dtype, what)
    b = _Builder(name, shape, x_scale, x_zero_point, dtype)
    sq_r = cal * cal
    ms_r = sq_r.mean(axis=1, keepdims=True)
    rstd_r = 1.0 / np.sqrt(ms_r + epsilon)
    norm_r = cal * rstd_r

    sq = b.act("sq", b.shape, 0.0, float(sq_r.max()))
    b.node("MUL", ["x", "x"], sq, activation="NONE")
    ms = b.act("ms", b.row_shape, 0.0, float(ms_r.max()))
    b.mean(sq, ms)
    ms_eps = b.act("ms_eps", b.row_shape, 0.0, float(ms_r.max()) + epsilon)
    b.node("ADD", [ms, b.eps(epsilon)], ms_eps, activation="NONE")
    rstd = b.act("rstd", b.row_shape, 0.0, float(rstd_r.max()))
    b.node("RSQRT", [ms_eps], rstd)
    norm = b.act("norm", b.shape, *_span(norm_r))
    b.node("MUL", ["x", rstd], norm, activation="NONE")
    return _finish_affine(b, norm, norm_r, gamma, beta, out_scale, out_zero_point, n)
