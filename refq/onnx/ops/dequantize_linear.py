"""ONNX DequantizeLinear, opsets 10, 13, 19, 21, 23, 24, 25 and 28.

Spec: ``y = (x - x_zero_point) * x_scale``, output type ``output_dtype`` (opset 23+) or else
``x_scale``'s type. The arithmetic order is the one onnxruntime 1.32 and ``onnx.reference``
share (measured: identical bits on int16 / uint16 / int32 inputs with float32 and float16
scales):

* integer ``x``: ``d = float32(x - zp)``, the difference exact in integers and rounded once
  (int32 inputs beyond 2^24 round here);
* minifloat ``x``: ``d = decode(x)`` (exact in float32); float4 / float6 subtract the decoded
  zero point in float32; float8 zero points must be 0 and are not subtracted (onnxruntime and
  ``onnx.reference`` ignore them; a nonzero one raises :class:`QuantSpecError`);
* ``y = float32(d * float32(x_scale))``, then rounded once more to a float16 / bfloat16 output.

Integer codes (up to 16 bits) with a float32 scale run through :func:`refq.quantize.dequantize`.
A float8e8m0 scale (opset 24+) is ``2^(E-127)``; it needs ``output_dtype``. Granularity as in
QuantizeLinear: per-tensor, per-axis (opset 13+), blocked (opset 21+).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import TensorProto

from refq.errors import ModelFormatError
from refq.onnx.node import NodeContext
from refq.onnx.ops.qparams import (
    FLOAT8_TYPES,
    as_float32,
    check_float8_zero_point,
    check_same_shape,
    check_scale,
    core_params,
    expand_param,
)
from refq.onnx.tensor import OnnxTensor, make, round_to_bfloat16, type_name
from refq.quantize import dequantize

OP_TYPE = "DequantizeLinear"


def output_type(ctx: NodeContext, scale: OnnxTensor) -> int:
    out = int(ctx.attr("output_dtype", 0))
    if out:
        return out
    if scale.elem_type == TensorProto.FLOAT8E8M0:
        raise ModelFormatError(
            f"{ctx.where}: x_scale is float8e8m0, which is not an output type; set output_dtype"
        )
    return scale.elem_type


def dequantize_linear(
    ctx: NodeContext, x: OnnxTensor, x_scale: OnnxTensor, x_zero_point: OnnxTensor | None = None
) -> OnnxTensor:
    """DequantizeLinear on refq values (see the module docstring for the semantics)."""
    out = output_type(ctx, x_scale)
    block_size = int(ctx.attr("block_size", 0))
    axis = int(ctx.attr("axis", 1))
    per_axis = ctx.since_version >= 13
    check_same_shape(ctx, x_scale, x_zero_point, "x_scale", "x_zero_point")

    scale = as_float32(x_scale, ctx, "x_scale").astype(np.float32)
    check_scale(ctx, scale, "x_scale")
    scale = expand_param(ctx, scale, x.shape, axis, block_size, "x_scale", "x", per_axis=per_axis)

    if x.info.kind == "int" and x.info.bits <= 16 and x_scale.elem_type == TensorProto.FLOAT:
        y = _dequantize_core(x, x_scale, x_zero_point, axis, block_size)
    else:
        y = _dequantize_general(ctx, x, scale, x_zero_point, axis, block_size)
    if out == TensorProto.FLOAT:
        return make(out, y)
    if out == TensorProto.FLOAT16:
        with np.errstate(over="ignore"):
            return make(out, y.astype(np.float16))
    if out == TensorProto.BFLOAT16:
        return make(out, round_to_bfloat16(y))
    raise ModelFormatError(f"{ctx.where}: output type {type_name(out)} is not a float type")


def _dequantize_general(
    ctx: NodeContext,
    x: OnnxTensor,
    scale: np.ndarray,
    x_zero_point: OnnxTensor | None,
    axis: int,
    block_size: int,
) -> np.ndarray:
    """float32 ``d * scale`` with ``d`` from integer or minifloat codes (module docstring)."""
    if x.info.kind == "int":
        d = x.data.astype(np.int64)
        if x_zero_point is not None:
            zp = expand_param(
                ctx, x_zero_point.data, x.shape, axis, block_size, "x_zero_point", "x"
            )
            d = d - zp.astype(np.int64)
        d = d.astype(np.float32)  # one rounding of the exact difference
    else:
        d = as_float32(x, ctx, "x")
        if x.elem_type in FLOAT8_TYPES:
            check_float8_zero_point(ctx, x_zero_point, "x_zero_point")
        elif x_zero_point is not None:
            zp = as_float32(x_zero_point, ctx, "x_zero_point")
            zp = expand_param(ctx, zp, x.shape, axis, block_size, "x_zero_point", "x")
            with np.errstate(invalid="ignore", over="ignore"):
                d = d - zp
    with np.errstate(invalid="ignore", over="ignore"):
        return np.broadcast_to(d * scale, x.shape).astype(np.float32)


def _dequantize_core(
    x: OnnxTensor,
    x_scale: OnnxTensor,
    x_zero_point: OnnxTensor | None,
    axis: int,
    block_size: int,
) -> np.ndarray:
    """Integer codes with a float32 scale: :func:`refq.quantize.dequantize` (same formula).

    Shapes and scales are already validated; returns the float32 result.
    """
    params = core_params(x_scale.data, x_zero_point, x.type_name, axis, block_size)
    return dequantize(x.data, params, out_dtype=np.float32)


def run(ctx: NodeContext, inputs: Sequence[OnnxTensor | None]) -> list[OnnxTensor]:
    x, x_scale, *rest = inputs
    zero_point = rest[0] if rest else None
    return [dequantize_linear(ctx, x, x_scale, zero_point)]
