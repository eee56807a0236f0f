"""ONNX QuantizeLinear, opsets 10, 13, 19, 21, 23, 24, 25 and 28.

Spec: ``y = saturate(round_half_even(x / y_scale) + y_zero_point)``.

* The division happens in the *precision* type: the ``precision`` attribute (opset 23+) or else
  ``y_scale``'s type (opset 23+ spec). ``x`` is first rounded to that type (onnxruntime 1.32 does
  this for float32 ``x`` with float16 ``y_scale``; ``onnx.reference`` instead lets NumPy
  promote). Opsets 19 / 21 do not say; there refq divides float16 / bfloat16 in float32, as
  onnxruntime 1.32 does (measured: float16 ``x`` and scale give different integers in
  QuantizeLinear-21 and -23).
  A float8e8m0 scale (opset 24+) without ``precision`` divides in float32; an int32 scale needs
  a float ``precision`` (the spec defines no integer division).
* Integer outputs (int2 ... uint16): the zero point is added exactly to the rounded quotient,
  then saturated to the type's range (infinities too). NaN has no defined integer result:
  :class:`InvalidDataError`.
* Minifloat outputs: ``x / y_scale`` in the precision type, rounded once to the format; float8
  follows the ``saturate`` attribute (ONNX Cast tables), float4e2m1 / float6 always saturate.
  float8 zero points are not added: onnxruntime 1.32 and ``onnx.reference`` both ignore them
  (so ``-0`` stays ``-0``), and refq raises :class:`QuantSpecError` for a nonzero one rather
  than pick a meaning. float4 / float6 zero points are added in the precision type, as
  ``onnx.reference`` does (the float4 node test expects ``-0 / s + 0 = +0``).
* float32 ``x`` and scale to an integer type run through :func:`refq.quantize.quantize`.
* Granularity by the scale's shape: per-tensor; per-axis (opset 13+); blocked (opset 21+,
  ``block_size``). ``y_zero_point`` has the scale's shape; without it the output type is
  ``output_dtype`` (opset 21+) or uint8.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import TensorProto

from refq import floatfmt
from refq.errors import InvalidDataError, ModelFormatError, UnsupportedError
from refq.onnx.node import NodeContext
from refq.onnx.ops.qparams import (
    FLOAT8_TYPES,
    FLOAT_PRECISIONS,
    as_float32,
    check_float8_zero_point,
    check_same_shape,
    check_scale,
    core_params,
    expand_param,
    first_nan,
    precision_values,
    to_precision,
)
from refq.onnx.tensor import ElemType, OnnxTensor, elem_type, make, type_name
from refq.quantize import quantize

OP_TYPE = "QuantizeLinear"


def output_type(ctx: NodeContext, zero_point: OnnxTensor | None) -> int:
    """``y``'s element type: the zero point's, else ``output_dtype``, else uint8."""
    out = int(ctx.attr("output_dtype", 0))
    if zero_point is not None:
        if out and out != zero_point.elem_type:
            raise ModelFormatError(
                f"{ctx.where}: output_dtype {type_name(out)} differs from y_zero_point's type "
                f"{zero_point.type_name}"
            )
        return zero_point.elem_type
    return out or TensorProto.UINT8


def division_precision(ctx: NodeContext, scale: OnnxTensor) -> int:
    precision = int(ctx.attr("precision", 0))
    if precision:
        if precision not in FLOAT_PRECISIONS:
            raise UnsupportedError(
                f"{ctx.where}: precision {type_name(precision)} is not a float type refq divides in"
            )
        return precision
    if scale.elem_type == TensorProto.FLOAT8E8M0:
        return TensorProto.FLOAT
    if ctx.since_version < 23 and scale.elem_type in FLOAT_PRECISIONS:
        # Opsets 19 / 21 leave the precision open; onnxruntime 1.32 divides float16 in float32.
        return TensorProto.FLOAT
    if scale.elem_type not in FLOAT_PRECISIONS:
        raise UnsupportedError(
            f"{ctx.where}: y_scale of type {scale.type_name} without a float 'precision' "
            f"attribute: the spec defines no division in that type"
        )
    return scale.elem_type


def quantize_linear(
    ctx: NodeContext, x: OnnxTensor, y_scale: OnnxTensor, y_zero_point: OnnxTensor | None = None
) -> OnnxTensor:
    """QuantizeLinear on refq values (see the module docstring for the semantics)."""
    out = elem_type(output_type(ctx, y_zero_point), where=ctx.where)
    precision = division_precision(ctx, y_scale)
    block_size = int(ctx.attr("block_size", 0))
    axis = int(ctx.attr("axis", 1))
    per_axis = ctx.since_version >= 13

    scale_values = precision_values(y_scale, precision, ctx, "y_scale")
    check_scale(ctx, scale_values, "y_scale")
    scale = expand_param(
        ctx, scale_values, x.shape, axis, block_size, "y_scale", "x", per_axis=per_axis
    )
    check_same_shape(ctx, y_scale, y_zero_point, "y_scale", "y_zero_point")

    if out.kind == "int" and x.elem_type == TensorProto.FLOAT and precision == TensorProto.FLOAT:
        return _quantize_core(ctx, x, scale_values, y_zero_point, out, axis, block_size)

    xv = precision_values(x, precision, ctx, "x")
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        q = xv / scale
    if precision == TensorProto.BFLOAT16:
        q = to_precision(q, precision)  # float32 quotient of bf16 values, rounded once more

    if out.kind == "int":
        bad = first_nan(np.broadcast_to(q, x.shape))
        if bad is not None:
            raise InvalidDataError(
                f"{ctx.where}: x has NaN (or x / y_scale is NaN) at flat index {bad}; "
                f"QuantizeLinear defines no integer for NaN"
            )
        r = np.rint(q).astype(np.float64)
        if y_zero_point is not None:
            zp = expand_param(
                ctx, y_zero_point.data, x.shape, axis, block_size, "y_zero_point", "x"
            )
            r = r + zp.astype(np.float64)  # exact: |r| < 2^53 or already far out of range
        y = np.clip(r, out.lo, out.hi)
        return make(out.code, np.broadcast_to(y, x.shape))

    v = q
    if out.code in FLOAT8_TYPES:
        check_float8_zero_point(ctx, y_zero_point, "y_zero_point")
    elif y_zero_point is not None:
        zp = to_precision(as_float32(y_zero_point, ctx, "y_zero_point"), precision)
        zp = expand_param(ctx, zp, x.shape, axis, block_size, "y_zero_point", "x")
        with np.errstate(over="ignore", invalid="ignore"):
            v = to_precision(v + zp, precision)
    saturate = bool(ctx.attr("saturate", 1))
    codes = floatfmt.encode(np.broadcast_to(v, x.shape), out.name, saturate=saturate)
    return make(out.code, codes)


def _quantize_core(
    ctx: NodeContext,
    x: OnnxTensor,
    scale: np.ndarray,
    y_zero_point: OnnxTensor | None,
    out: ElemType,
    axis: int,
    block_size: int,
) -> OnnxTensor:
    """float32 data and scale to an integer type: :func:`refq.quantize.quantize` (same formula).

    Shapes and scales are already validated. NaN raises here; infinities saturate (the core's
    ``nonfinite="clamp"``, which is ONNX's saturation for them).
    """
    bad = first_nan(x.data)
    if bad is not None:
        raise InvalidDataError(
            f"{ctx.where}: x has NaN at flat index {bad}; QuantizeLinear defines no integer for NaN"
        )
    # ``scale``: the scale's values (float32, or decoded float8e8m0).
    params = core_params(scale, y_zero_point, out.name, axis, block_size)
    return make(out.code, quantize(x.data, params, nonfinite="clamp"))


def run(ctx: NodeContext, inputs: Sequence[OnnxTensor | None]) -> list[OnnxTensor]:
    x, y_scale, *rest = inputs
    zero_point = rest[0] if rest else None
    return [quantize_linear(ctx, x, y_scale, zero_point)]
