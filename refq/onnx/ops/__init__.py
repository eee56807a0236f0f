"""ONNX operators refq executes: one module per quantization operator, plus the plumbing ops.

Each operator module exposes ``OP_TYPE``, a Python function on :class:`refq.onnx.tensor.OnnxTensor`
values (``quantize_linear``, ``qlinear_matmul``...) and ``run(ctx, inputs) -> outputs``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from refq.errors import UnsupportedError
from refq.onnx.node import NodeContext
from refq.onnx.ops import (
    conv_integer,
    dequantize_linear,
    dynamic_quantize_linear,
    matmul_integer,
    plumbing,
    qlinear_conv,
    qlinear_matmul,
    quantize_linear,
)
from refq.onnx.tensor import OnnxTensor

OpFn = Callable[[NodeContext, Sequence[OnnxTensor | None]], list[OnnxTensor]]

QUANTIZATION_OPS: dict[str, OpFn] = {
    m.OP_TYPE: m.run
    for m in (
        quantize_linear,
        dequantize_linear,
        dynamic_quantize_linear,
        matmul_integer,
        qlinear_matmul,
        qlinear_conv,
        conv_integer,
    )
}
"""The seven ONNX quantization operators (the subject of ``refq conformance``)."""

OPS: dict[str, OpFn] = {**QUANTIZATION_OPS, **plumbing.OPS}


def get_op(ctx: NodeContext) -> OpFn:
    """The implementation of ``ctx``'s operator, or :class:`UnsupportedError` naming the node."""
    try:
        return OPS[ctx.op_type]
    except KeyError:
        raise UnsupportedError(
            f"{ctx.where}: refq's ONNX backend does not implement {ctx.op_type}; supported: "
            f"{', '.join(sorted(OPS))}"
        ) from None
