"""ONNX QLinearConv, opset 10 (int8 / uint8), requantized like onnxruntime 1.32::

    acc[n, m, ...] = conv(x - zx, w - zw[m]) + B[m]                     exact, int32 (wrapping)
    M[m]           = float32(float32(sx * sw[m]) / sy)                   float32 arithmetic
    y              = clip(round_half_even(float32(acc) * M[m]) + zy, qmin, qmax)

``x_scale`` / ``x_zero_point`` / ``y_scale`` / ``y_zero_point`` are scalars; ``w_scale`` and
``w_zero_point`` scalars or one value per output channel; ``B`` is an optional int32 bias per
output channel. Geometry as in :mod:`refq.onnx.ops.conv_geometry` (padding holds zx).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refq.errors import ShapeError
from refq.onnx.node import NodeContext
from refq.onnx.ops.conv_geometry import conv_geometry, int_conv
from refq.onnx.ops.conv_integer import centered_input, centered_weights
from refq.onnx.ops.qparams import as_float32, check_scale, requant_multiplier, requantize
from refq.onnx.tensor import OnnxTensor, make

OP_TYPE = "QLinearConv"


def _scalar(ctx: NodeContext, t: OnnxTensor, name: str) -> np.ndarray:
    if t.data.size != 1 or t.data.ndim > 1:
        raise ShapeError(f"{ctx.where}: {name!r} must be a scalar; got shape {t.shape}")
    return t.data.reshape(())


def qlinear_conv(
    ctx: NodeContext,
    x: OnnxTensor,
    x_scale: OnnxTensor,
    x_zero_point: OnnxTensor,
    w: OnnxTensor,
    w_scale: OnnxTensor,
    w_zero_point: OnnxTensor,
    y_scale: OnnxTensor,
    y_zero_point: OnnxTensor,
    bias: OnnxTensor | None = None,
) -> OnnxTensor:
    """QLinearConv on refq values (see the module docstring)."""
    geometry = conv_geometry(ctx, x.shape, w.shape)
    m = w.shape[0]
    acc = int_conv(
        centered_input(ctx, x, x_zero_point), centered_weights(ctx, w, w_zero_point), geometry
    )
    shape_m = (1, m) + (1,) * (acc.ndim - 2)
    if bias is not None:
        if bias.shape != (m,):
            raise ShapeError(f"{ctx.where}: B must have shape ({m},); got {bias.shape}")
        # int32 accumulator: the bias joins the wrapping sum.
        acc = (acc.astype(np.int64) + bias.data.astype(np.int64).reshape(shape_m)).astype(np.int32)
    sx = _scalar(ctx, x_scale, "x_scale").astype(np.float32)
    sy = _scalar(ctx, y_scale, "y_scale").astype(np.float32)
    sw = as_float32(w_scale, ctx, "w_scale")
    if sw.size == 1 and sw.ndim <= 1:
        sw = sw.reshape(())
    elif sw.shape == (m,):
        sw = sw.reshape(shape_m)
    else:
        raise ShapeError(
            f"{ctx.where}: w_scale of shape {w_scale.shape} is neither a scalar nor one value per "
            f"output channel ({m})"
        )
    for name, s in (("x_scale", sx), ("w_scale", sw), ("y_scale", sy)):
        check_scale(ctx, s, name)
    out = y_zero_point.info
    zy = _scalar(ctx, y_zero_point, "y_zero_point")
    y = requantize(acc, requant_multiplier(sx, sw, sy), zy, out.lo, out.hi, ctx.where)
    return make(out.code, np.broadcast_to(y, acc.shape))


def run(ctx: NodeContext, inputs: Sequence[OnnxTensor | None]) -> list[OnnxTensor]:
    return [qlinear_conv(ctx, *inputs)]
