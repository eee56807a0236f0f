"""Shared pieces of the ONNX quantization operators: parameter shapes and float views.

Granularity follows the QuantizeLinear / DequantizeLinear spec (opset 21+), decided by the
scale's shape: a scalar (or one-element 1-D tensor) is per-tensor; a 1-D tensor of length
``D[axis]`` is per-axis; with ``block_size = B > 0`` the scale has the input's rank, equal dims
except ``axis`` where it has ``ceil(D[axis] / B)`` entries, each repeated ``B`` times (the last
block may be shorter).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from refq import floatfmt
from refq.errors import QuantSpecError, ShapeError, UnsupportedError
from refq.onnx.node import NodeContext
from refq.onnx.tensor import OnnxTensor, round_to_bfloat16
from refq.spec import (
    PerAxis,
    PerBlock,
    PerTensor,
    QuantParams,
    QuantSpec,
    ceil_div,
    normalize_axis,
)

# Precisions (TensorProto codes) refq computes in, and the NumPy dtype of that arithmetic.
FLOAT_PRECISIONS = {
    TensorProto.FLOAT: np.float32,
    TensorProto.FLOAT16: np.float16,
    TensorProto.DOUBLE: np.float64,
    TensorProto.BFLOAT16: np.float32,  # bfloat16: float32 arithmetic, then one rounding to bf16
}


FLOAT8_TYPES = (
    TensorProto.FLOAT8E4M3FN,
    TensorProto.FLOAT8E4M3FNUZ,
    TensorProto.FLOAT8E5M2,
    TensorProto.FLOAT8E5M2FNUZ,
)


def check_float8_zero_point(ctx: NodeContext, zp: OnnxTensor | None, name: str) -> None:
    """float8 zero points must be +-0: the peers ignore them, the spec would add them."""
    if zp is None:
        return
    values = floatfmt.decode(zp.data, zp.type_name).reshape(-1)
    bad = values != 0  # NaN counts as nonzero
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise QuantSpecError(
            f"{ctx.where}: {name!r} has {float(values[i])!r} at flat index {i}; float8 zero "
            f"points must be 0 (onnxruntime and onnx.reference ignore them)"
        )


def expand_param(
    ctx: NodeContext,
    param: np.ndarray,
    x_shape: tuple[int, ...],
    axis_attr: int,
    block_size: int,
    pname: str,
    xname: str,
    *,
    per_axis: bool = True,
) -> np.ndarray:
    """Reshape / repeat a scale or zero point so that it broadcasts against ``x_shape``."""
    rank = len(x_shape)
    if param.ndim == 0 or (param.ndim == 1 and param.size == 1 and not block_size):
        return param.reshape(())
    if not per_axis:
        raise ShapeError(
            f"{ctx.where}: {pname!r} must be a scalar in opset {ctx.opset}; got shape {param.shape}"
        )
    try:
        axis = normalize_axis(axis_attr, max(rank, 1), f"{ctx.where} input {xname!r}")
    except QuantSpecError as exc:
        raise QuantSpecError(str(exc)) from None
    if rank == 0:
        raise ShapeError(f"{ctx.where}: {pname!r} has shape {param.shape} for scalar {xname!r}")
    if not block_size:
        if param.ndim != 1 or param.size != x_shape[axis]:
            raise ShapeError(
                f"{ctx.where}: {pname!r} of shape {param.shape} is neither a scalar nor a 1-D "
                f"tensor of length {x_shape[axis]} (axis {axis} of {xname!r}, shape {x_shape})"
            )
        dims = [1] * rank
        dims[axis] = param.size
        return param.reshape(dims)
    if block_size < 0:
        raise QuantSpecError(f"{ctx.where}: block_size must be positive, got {block_size}")
    want = list(x_shape)
    want[axis] = ceil_div(x_shape[axis], block_size)
    if param.shape != tuple(want):
        raise ShapeError(
            f"{ctx.where}: blocked {pname!r} must have shape {tuple(want)} for {xname!r} of "
            f"shape {x_shape}, axis {axis}, block_size {block_size}; got {param.shape}"
        )
    return np.repeat(param, block_size, axis=axis).take(np.arange(x_shape[axis]), axis=axis)


def as_float32(t: OnnxTensor, ctx: NodeContext, name: str) -> np.ndarray:
    """Exact float32 values of a float or minifloat tensor (float64 stays float64)."""
    kind = t.info.kind
    if kind == "code":
        return floatfmt.decode(t.data, t.type_name)
    if kind == "float":
        return t.data if t.data.dtype == np.float64 else t.data.astype(np.float32)
    raise UnsupportedError(f"{ctx.where}: {name!r} of type {t.type_name} is not a float tensor")


def precision_values(t: OnnxTensor, precision: int, ctx: NodeContext, name: str) -> np.ndarray:
    """A tensor's values rounded to ``precision`` (the arithmetic type of the op)."""
    # int32 inputs widen exactly to float64 and are rounded once by to_precision.
    v = t.data.astype(np.float64) if t.info.kind == "int" else as_float32(t, ctx, name)
    return to_precision(v, precision)


def to_precision(v: np.ndarray, precision: int) -> np.ndarray:
    """Round float values once (ties to even) to a precision type; bfloat16 held in float32."""
    if precision != TensorProto.BFLOAT16:
        with np.errstate(over="ignore"):  # overflow to +-inf is the IEEE result
            return v.astype(FLOAT_PRECISIONS[precision])  # one rounding, to nearest even
    if v.dtype != np.float64:
        return round_to_bfloat16(v.astype(np.float32))
    # float64 inputs here are int32 values (|v| < 2^31): round the significand to bfloat16's
    # 8 bits directly, since float64 -> float32 -> bfloat16 would round twice.
    f, k = np.frexp(v)
    return np.ldexp(np.rint(np.ldexp(f, 8)), k - 8).astype(np.float32)


def requant_multiplier(*scales: np.ndarray) -> np.ndarray:
    """ONNX Runtime's requantization multiplier ``float32(float32(s1 * s2) / s3)``.

    Scales are widened to float32 first (float16 / bfloat16 scales too: measured against
    onnxruntime 1.32 QLinearMatMul with float16 scales).
    """
    s1, s2, s3 = (np.asarray(s, dtype=np.float32) for s in scales)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return (s1 * s2) / s3


def requantize(
    acc: np.ndarray, multiplier: np.ndarray, zero_point: np.ndarray, lo: int, hi: int, where: str
) -> np.ndarray:
    """``clip(round_half_even(float32(acc) * M) + zp, lo, hi)`` (ONNX Runtime's output stage).

    ``float32(acc)`` rounds int32 sums beyond 2^24 to nearest even, as the runtime's cast does.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        y = np.rint(acc.astype(np.float32) * multiplier)
    if np.isnan(y).any():
        raise QuantSpecError(
            f"{where}: requantization produced NaN (the multiplier overflowed to infinity)"
        )
    y = np.clip(y.astype(np.float64) + zero_point.astype(np.float64), lo, hi)
    return y


def check_scale(ctx: NodeContext, scale: np.ndarray, name: str) -> None:
    """ONNX allows negative scales (onnxruntime's int4 ``absmax / -8``), not zero or non-finite."""
    flat = np.asarray(scale, dtype=np.float64).reshape(-1)
    bad = ~np.isfinite(flat) | (flat == 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise QuantSpecError(
            f"{ctx.where}: scale {name!r} has {float(flat[i])!r} at flat index {i}; scales must "
            f"be nonzero and finite"
        )


def first_nan(x: np.ndarray) -> int | None:
    """Flat index of the first NaN, or None."""
    nan = np.isnan(x.reshape(-1))
    return int(np.flatnonzero(nan)[0]) if nan.any() else None


def check_same_shape(
    ctx: NodeContext, scale: OnnxTensor, zero_point: OnnxTensor | None, sname: str, zname: str
) -> None:
    """Scale and zero point shapes must match (a scalar and a 1-element 1-D tensor are alike)."""
    if zero_point is None or zero_point.shape == scale.shape:
        return
    if (
        zero_point.data.size == 1
        and scale.data.size == 1
        and max(scale.data.ndim, zero_point.data.ndim) <= 1
    ):
        return
    raise ShapeError(
        f"{ctx.where}: {zname!r} has shape {zero_point.shape} but {sname!r} has shape "
        f"{scale.shape}; they must match"
    )


def core_params(
    scale: np.ndarray,
    zero_point: OnnxTensor | None,
    type_name: str,
    axis: int,
    block_size: int,
) -> QuantParams:
    """:class:`refq.spec.QuantParams` of an ONNX (already validated) float32 scale and integer
    zero point, for :mod:`refq.quantize`: the granularity is decided by the scale's shape, as in
    this module's docstring (negative scales allowed, as ONNX allows them)."""
    scale = scale.astype(np.float32)
    if block_size:
        granularity = PerBlock(axis, block_size)
    elif scale.size == 1 and scale.ndim <= 1:
        granularity, scale = PerTensor(), scale.reshape(())
    else:
        granularity = PerAxis(axis)
    zp = None if zero_point is None else zero_point.data.reshape(scale.shape).astype(np.int32)
    spec = QuantSpec(type_name, symmetric=False, granularity=granularity)
    return QuantParams(scale, zp, spec, name="x", allow_negative_scale=True)
