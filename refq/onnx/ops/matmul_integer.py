"""ONNX MatMulInteger, opset 10: ``Y = (A - a_zero_point) @ (B - b_zero_point)`` in int32.

``numpy.matmul`` shapes and broadcasting. Zero points default to 0; ``a_zero_point`` is a scalar
or per row of A (``[M]`` for 2-D A, ``[..., M, 1]`` for N-D), ``b_zero_point`` a scalar or per
column of B (``[N]``, ``[..., 1, N]``). Products are exact; the int32 accumulator wraps ("the
accumulation may overflow if and only if in 32 bits"), computed exactly by
:func:`refq.intmatmul.int_matmul` with ``accumulate="int32_wrap"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import TensorProto

from refq.errors import ShapeError
from refq.intmatmul import int_matmul
from refq.onnx.node import NodeContext
from refq.onnx.tensor import OnnxTensor, make

OP_TYPE = "MatMulInteger"


def row_param(ctx: NodeContext, p: np.ndarray, a_shape: tuple[int, ...], name: str) -> np.ndarray:
    """A scalar or per-row (of the left operand) parameter, shaped to broadcast against it."""
    if p.size == 1 and p.ndim <= 1:
        return p.reshape(())
    if len(a_shape) >= 2 and p.ndim == 1 and p.size == a_shape[-2]:
        return p.reshape(-1, 1)
    if p.ndim == len(a_shape) >= 2 and p.shape[-1] == 1:
        try:
            np.broadcast_shapes(p.shape, a_shape)
            return p
        except ValueError:
            pass
    raise ShapeError(
        f"{ctx.where}: {name!r} of shape {p.shape} is neither a scalar nor per row of an operand "
        f"of shape {a_shape}"
    )


def col_param(ctx: NodeContext, p: np.ndarray, b_shape: tuple[int, ...], name: str) -> np.ndarray:
    """A scalar or per-column (of the right operand) parameter, shaped to broadcast against it."""
    if p.size == 1 and p.ndim <= 1:
        return p.reshape(())
    if len(b_shape) >= 2 and p.ndim == 1 and p.size == b_shape[-1]:
        return p
    if p.ndim == len(b_shape) >= 2 and p.shape[-2] == 1:
        try:
            np.broadcast_shapes(p.shape, b_shape)
            return p
        except ValueError:
            pass
    raise ShapeError(
        f"{ctx.where}: {name!r} of shape {p.shape} is neither a scalar nor per column of an "
        f"operand of shape {b_shape}"
    )


def centered_product(
    ctx: NodeContext,
    a: OnnxTensor,
    b: OnnxTensor,
    a_zero_point: OnnxTensor | None,
    b_zero_point: OnnxTensor | None,
) -> np.ndarray:
    """Exact int32 (wrapping) ``(a - za) @ (b - zb)`` shared by MatMulInteger and QLinearMatMul."""
    av = a.data.astype(np.int16)
    bv = b.data.astype(np.int16)
    if a_zero_point is not None:
        av = av - row_param(ctx, a_zero_point.data, a.shape, "a_zero_point").astype(np.int16)
    if b_zero_point is not None:
        bv = bv - col_param(ctx, b_zero_point.data, b.shape, "b_zero_point").astype(np.int16)
    try:
        return int_matmul(av, bv, accumulate="int32_wrap")
    except ShapeError as exc:
        raise ShapeError(f"{ctx.where}: {exc}") from None


def matmul_integer(
    ctx: NodeContext,
    a: OnnxTensor,
    b: OnnxTensor,
    a_zero_point: OnnxTensor | None = None,
    b_zero_point: OnnxTensor | None = None,
) -> OnnxTensor:
    """MatMulInteger on refq values."""
    return make(TensorProto.INT32, centered_product(ctx, a, b, a_zero_point, b_zero_point))


def run(ctx: NodeContext, inputs: Sequence[OnnxTensor | None]) -> list[OnnxTensor]:
    a, b, *rest = inputs
    rest = [*rest, None, None]
    return [matmul_integer(ctx, a, b, rest[0], rest[1])]
