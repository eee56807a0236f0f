"""BATCH_MATMUL on int8: refq_batch_matmul_s8.

Consumes :class:`refq.kernels.batch_matmul.BatchMatmulParams` (offsets, adj_x / adj_y, the
per-tensor requantization with the profile's rounding for BATCH_MATMUL); the batch dimensions'
broadcast is resolved here (strides in matrices). int16 and the ONNX profiles are refused.
"""

from __future__ import annotations

import numpy as np

from codegen.lower import KernelSpec, LowerContext, lowering, register_kernel
from codegen.ops.common import requant_fields
from codegen.ops.elementwise import broadcast_field, broadcast_strides
from refq.graph import Node
from refq.kernels.batch_matmul import BatchMatmulParams

register_kernel(
    KernelSpec(
        "refq_batch_matmul_s8",
        code_bytes=4000,
        support=("refq_requant.h", "refq_elementwise.h"),
    )
)


@lowering("BATCH_MATMUL")
def lower_batch_matmul(ctx: LowerContext, node: Node, p: BatchMatmulParams) -> None:
    if p.dtype != "int8":
        raise ctx.unsupported(f"BATCH_MATMUL on {p.dtype}")
    lhs, rhs = node.inputs
    (y,) = node.outputs
    ls, rs, ys = ctx.shape(lhs), ctx.shape(rhs), ctx.shape(y)
    m, k = (ls[-1], ls[-2]) if p.adj_x else (ls[-2], ls[-1])
    n = rs[-2] if p.adj_y else rs[-1]
    try:
        shape, s1, s2 = broadcast_strides(ls[:-2], rs[:-2], ys[:-2], ctx.where())
    except ValueError as exc:
        raise ctx.unsupported(str(exc)) from None
    if int(np.prod(shape)) * m * n != ctx.count(y):
        raise ctx.unsupported(f"output {y!r} {ys} for a batch {shape} of {m} x {n} products")
    ctx.call(
        "refq_batch_matmul_s8",
        [
            ("m", m),
            ("k", k),
            ("n", n),
            ("lhs_offset", p.lhs_offset),
            ("rhs_offset", p.rhs_offset),
            ("adj_x", int(p.adj_x)),
            ("adj_y", int(p.adj_y)),
            ("requant", requant_fields(ctx, p.requant, node.name, "BATCH_MATMUL")),
            ("batch", broadcast_field(shape, s1, s2)),
        ],
        [ctx.ptr(lhs), ctx.ptr(rhs), ctx.ptr(y)],
        scratch=4 * n,
    )
