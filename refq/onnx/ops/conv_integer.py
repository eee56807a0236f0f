"""ONNX ConvInteger, opset 10: ``Y = conv(X - x_zero_point, W - w_zero_point)`` in int32.

``x_zero_point`` is a scalar; ``w_zero_point`` a scalar or one value per output channel M.
Padding holds ``x_zero_point`` (zero after centering); geometry, groups and ``auto_pad`` as in
:mod:`refq.onnx.ops.conv_geometry`. Products are exact and the int32 accumulator wraps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import TensorProto

from refq.errors import ShapeError
from refq.onnx.node import NodeContext
from refq.onnx.ops.conv_geometry import conv_geometry, int_conv
from refq.onnx.tensor import OnnxTensor, make

OP_TYPE = "ConvInteger"


def centered_input(ctx: NodeContext, x: OnnxTensor, zero_point: OnnxTensor | None) -> np.ndarray:
    """``x - x_zero_point`` (scalar zero point) as int16."""
    xc = x.data.astype(np.int16)
    if zero_point is None:
        return xc
    if zero_point.data.size != 1 or zero_point.data.ndim > 1:
        raise ShapeError(
            f"{ctx.where}: x_zero_point must be a scalar; got shape {zero_point.shape}"
        )
    return xc - zero_point.data.astype(np.int16).reshape(())


def centered_weights(
    ctx: NodeContext, w: OnnxTensor, zero_point: OnnxTensor | None, name: str = "w_zero_point"
) -> np.ndarray:
    """``w - w_zero_point`` with a scalar or per-output-channel zero point, as int16."""
    wc = w.data.astype(np.int16)
    if zero_point is None:
        return wc
    zp = zero_point.data.astype(np.int16)
    if zp.size == 1 and zp.ndim <= 1:
        return wc - zp.reshape(())
    if zp.ndim == 1 and zp.size == w.shape[0]:
        return wc - zp.reshape((-1,) + (1,) * (wc.ndim - 1))
    raise ShapeError(
        f"{ctx.where}: {name!r} of shape {zero_point.shape} is neither a scalar nor one value "
        f"per output channel ({w.shape[0]})"
    )


def conv_integer(
    ctx: NodeContext,
    x: OnnxTensor,
    w: OnnxTensor,
    x_zero_point: OnnxTensor | None = None,
    w_zero_point: OnnxTensor | None = None,
) -> OnnxTensor:
    """ConvInteger on refq values."""
    geometry = conv_geometry(ctx, x.shape, w.shape)
    acc = int_conv(
        centered_input(ctx, x, x_zero_point), centered_weights(ctx, w, w_zero_point), geometry
    )
    return make(TensorProto.INT32, acc)


def run(ctx: NodeContext, inputs: Sequence[OnnxTensor | None]) -> list[OnnxTensor]:
    x, w, *rest = inputs
    rest = [*rest, None, None]
    return [conv_integer(ctx, x, w, rest[0], rest[1])]
