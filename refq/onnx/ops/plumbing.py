"""The few non-quantization ONNX ops the node tests need (DynamicQuantizeLinear's function body).

Constant, Identity, Cast, Clip, Min, Max, Sub, Div, Round, ReduceMin, ReduceMax; element-wise
ops broadcast as NumPy (ONNX multidirectional broadcasting). Float arithmetic is IEEE in the
tensor's own type (NumPy's float16 operations are correctly rounded; bfloat16 is computed in
float32 and rounded once to bfloat16, which is exact for one +, -, * or /). Integer Sub wraps,
integer Div truncates toward zero (division by zero raises). Cast follows the ONNX Cast rules:
float -> integer truncates toward zero and raises where the spec leaves the result undefined
(NaN, infinities, out of range); integer -> integer wraps; -> float rounds to nearest even;
-> float8 / float4 / float6 per the Cast tables and ``saturate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from onnx import TensorProto, numpy_helper

from refq import floatfmt
from refq.errors import InvalidDataError, ModelFormatError, UnsupportedError
from refq.onnx.node import NodeContext
from refq.onnx.ops.qparams import as_float32, to_precision
from refq.onnx.tensor import OnnxTensor, elem_type, from_numpy, make, round_to_bfloat16

Inputs = Sequence[OnnxTensor | None]


def _float_result(t_type: int, values: np.ndarray) -> OnnxTensor:
    if t_type == TensorProto.BFLOAT16:
        return make(t_type, round_to_bfloat16(values))
    return make(t_type, values)


def constant(ctx: NodeContext, inputs: Inputs) -> list[OnnxTensor]:
    a = ctx.attrs
    if a.get("value") is not None:
        proto = a["value"]
        return [from_numpy(numpy_helper.to_array(proto), proto.data_type, name=ctx.name)]
    if a.get("value_float") is not None:
        return [make(TensorProto.FLOAT, np.float32(a["value_float"]))]
    if a.get("value_floats") is not None:
        return [make(TensorProto.FLOAT, np.array(a["value_floats"], np.float32))]
    if a.get("value_int") is not None:
        return [make(TensorProto.INT64, np.int64(a["value_int"]))]
    if a.get("value_ints") is not None:
        return [make(TensorProto.INT64, np.array(a["value_ints"], np.int64))]
    raise UnsupportedError(f"{ctx.where}: only tensor / float / int Constant values are supported")


def identity(ctx: NodeContext, inputs: Inputs) -> list[OnnxTensor]:
    return [inputs[0]]


def _elementwise(fn: Callable[[NodeContext, np.ndarray, np.ndarray], np.ndarray]):
    def run(ctx: NodeContext, inputs: Inputs) -> list[OnnxTensor]:
        a, b = inputs
        if a.info.kind == "code":
            raise UnsupportedError(f"{ctx.where}: arithmetic on {a.type_name} is not supported")
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            values = fn(ctx, a.data, b.data)
        if a.info.kind == "float":
            return [_float_result(a.elem_type, values)]
        return [make(a.elem_type, values)]

    return run


def _sub(ctx: NodeContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        return (a.astype(np.int64) - b.astype(np.int64)).astype(a.dtype)  # wraps
    return a - b


def _div(ctx: NodeContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        if np.any(b == 0):
            raise InvalidDataError(f"{ctx.where}: integer division by zero")
        q = np.abs(a.astype(np.int64)) // np.abs(b.astype(np.int64))
        return (np.sign(a.astype(np.int64)) * np.sign(b.astype(np.int64)) * q).astype(a.dtype)
    return a / b


sub = _elementwise(_sub)
div = _elementwise(_div)


def _variadic(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    def run(ctx: NodeContext, inputs: Inputs) -> list[OnnxTensor]:
        first = inputs[0]
        values = first.data
        for t in inputs[1:]:
            values = fn(values, t.data)
        return [make(first.elem_type, values)]

    return run


min_ = _variadic(np.minimum)
max_ = _variadic(np.maximum)


def round_(ctx: NodeContext, inputs: Inputs) -> list[OnnxTensor]:
    x = inputs[0]
    return [make(x.elem_type, np.rint(x.data))]  # half to even; exact for bfloat16 values too


def clip(ctx: NodeContext, inputs: Inputs) -> list[OnnxTensor]:
    x = inputs[0]
    if ctx.since_version < 11:
        lo, hi = ctx.attr("min"), ctx.attr("max")
    else:
        lo, hi = [*inputs[1:], None, None][:2]
        lo = None if lo is None else lo.data
        hi = None if hi is None else hi.data
    y = x.data
    if lo is not None:
        y = np.maximum(y, np.asarray(lo, dtype=y.dtype))
    if hi is not None:
        y = np.minimum(y, np.asarray(hi, dtype=y.dtype))
    return [make(x.elem_type, y)]


def _reduce(fn: Callable[..., np.ndarray]):
    def run(ctx: NodeContext, inputs: Inputs) -> list[OnnxTensor]:
        x = inputs[0]
        if ctx.since_version >= 18:
            axes_t = inputs[1] if len(inputs) > 1 else None
            axes = None if axes_t is None else [int(a) for a in axes_t.data.reshape(-1)]
        else:
            axes = ctx.attr("axes")
        if not axes:
            if ctx.attr("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.data.ndim))
        rank = x.data.ndim
        if any(not -rank <= a < max(rank, 1) for a in axes):
            raise ModelFormatError(f"{ctx.where}: axes {axes} out of range for rank {rank}")
        if x.data.size == 0:
            raise InvalidDataError(f"{ctx.where}: reduction of an empty tensor")
        keep = bool(ctx.attr("keepdims", 1))
        axis = tuple(a % max(rank, 1) for a in axes) if rank else None
        return [make(x.elem_type, fn(x.data, axis=axis, keepdims=keep))]

    return run


reduce_min = _reduce(np.min)
reduce_max = _reduce(np.max)


def _float_to_int(ctx: NodeContext, v: np.ndarray, out) -> np.ndarray:
    t = np.trunc(v.astype(np.float64))
    bad = ~np.isfinite(t) | (t < out.lo) | (t > out.hi)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        raise InvalidDataError(
            f"{ctx.where}: {float(v.reshape(-1)[i])!r} at flat index {i} is out of range for "
            f"{out.name}; ONNX leaves that Cast undefined"
        )
    return t


def cast(ctx: NodeContext, inputs: Inputs) -> list[OnnxTensor]:
    x = inputs[0]
    out = elem_type(int(ctx.attr("to")), where=ctx.where)
    src = x.info
    if src.kind == "int":
        values = x.data.astype(np.int64) if src.signed or src.bits < 64 else x.data
    else:
        values = as_float32(x, ctx, "input")
    if out.kind == "int":
        if src.kind == "int":
            if out.bits >= 64:
                return [make(out.code, values.astype(out.storage))]
            # Two's complement wrap into the target width (also int4 / int2).
            w = (values.astype(np.int64) - out.lo) % (1 << out.bits) + out.lo
            return [make(out.code, w)]
        return [make(out.code, _float_to_int(ctx, values, out))]
    if out.kind == "float":
        v = values.astype(np.float64) if src.kind == "int" else values
        if out.code == TensorProto.BFLOAT16:
            return [make(out.code, to_precision(v, out.code))]
        with np.errstate(over="ignore"):
            return [make(out.code, v.astype(out.storage))]
    saturate = bool(ctx.attr("saturate", 1))
    return [make(out.code, floatfmt.encode(values, out.name, saturate=saturate))]


OPS = {
    "Constant": constant,
    "Identity": identity,
    "Cast": cast,
    "Clip": clip,
    "Min": min_,
    "Max": max_,
    "Sub": sub,
    "Div": div,
    "Round": round_,
    "ReduceMin": reduce_min,
    "ReduceMax": reduce_max,
}
