"""ONNX QLinearMatMul, opsets 10 and 21 (int8 / uint8 operands).

Integer path, without dequantizing::

    acc[m, n] = sum_k (a[m, k] - za[m]) * (b[k, n] - zb[n])            exact, int32 (wrapping)
    M[m, n]   = float32(float32(sa[m] * sb[n]) / sy)                    float32 arithmetic
    y[m, n]   = clip(round_half_even(float32(acc) * M) + zy, qmin, qmax)

This is onnxruntime 1.32's order of operations (scales, including opset 21's float16 / bfloat16
scales, are widened to float32 first: measured). ``onnx.reference`` multiplies in float64 and
can differ by one where ``float32(acc) * M`` rounds across a .5. Parameters of ``a`` are scalars
or per row, those of ``b`` scalars or per column; ``y``'s broadcast against the output.

Opset 21 also lists float8 operand types, but no peer defines that arithmetic (onnxruntime has
no kernel; ``onnx.reference`` truncates float8 values to int32): refq raises
:class:`UnsupportedError` rather than guess.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refq.errors import ShapeError, UnsupportedError
from refq.onnx.node import NodeContext
from refq.onnx.ops.matmul_integer import centered_product, col_param, row_param
from refq.onnx.ops.qparams import as_float32, check_scale, requant_multiplier, requantize
from refq.onnx.tensor import OnnxTensor, make

OP_TYPE = "QLinearMatMul"


def qlinear_matmul(
    ctx: NodeContext,
    a: OnnxTensor,
    a_scale: OnnxTensor,
    a_zero_point: OnnxTensor,
    b: OnnxTensor,
    b_scale: OnnxTensor,
    b_zero_point: OnnxTensor,
    y_scale: OnnxTensor,
    y_zero_point: OnnxTensor,
) -> OnnxTensor:
    """QLinearMatMul on refq values (see the module docstring)."""
    for name, t in (("a", a), ("b", b), ("y_zero_point", y_zero_point)):
        if t.info.kind != "int":
            raise UnsupportedError(
                f"{ctx.where}: {name!r} has type {t.type_name}; refq implements QLinearMatMul for "
                f"int8 / uint8 only (no peer defines the float8 arithmetic)"
            )
    acc = centered_product(ctx, a, b, a_zero_point, b_zero_point)
    sa = row_param(ctx, as_float32(a_scale, ctx, "a_scale"), a.shape, "a_scale")
    sb = col_param(ctx, as_float32(b_scale, ctx, "b_scale"), b.shape, "b_scale")
    sy = as_float32(y_scale, ctx, "y_scale")
    for name, s in (("a_scale", sa), ("b_scale", sb), ("y_scale", sy)):
        check_scale(ctx, s, name)
    if a.data.ndim == 1:  # 1-D a has no row axis in the output
        sa = sa.reshape(sa.shape[:-2] + sa.shape[-1:]) if sa.ndim >= 2 else sa
    if b.data.ndim == 1:
        sb = sb.reshape(sb.shape[:-1]) if sb.ndim >= 1 else sb
    multiplier = requant_multiplier(sa, sb, sy)
    zy = y_zero_point.data
    try:
        fits = np.broadcast_shapes(multiplier.shape, zy.shape, acc.shape) == acc.shape
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(
            f"{ctx.where}: scales / zero points of shapes {multiplier.shape} and {zy.shape} do "
            f"not broadcast against the output shape {acc.shape}"
        )
    out = y_zero_point.info
    y = requantize(acc, multiplier, zy, out.lo, out.hi, ctx.where)
    return make(out.code, np.broadcast_to(y, acc.shape))


def run(ctx: NodeContext, inputs: Sequence[OnnxTensor | None]) -> list[OnnxTensor]:
    return [qlinear_matmul(ctx, *inputs)]
