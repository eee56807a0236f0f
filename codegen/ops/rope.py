"""ROPE: refq_rope_s8, rotary position embedding of int8 codes.

Consumes :class:`refq.kernels.rope.RopeParams` as prepared for the profile: the Q15 cos / sin
tables ``[max_positions, D/2]`` (emitted once and shared by every ROPE node with the same
tables), the pairing convention, the zero points and the output multiplier / shift with the
profile's rounding. The position comes from the graph's int32 ``position`` tensor at run time;
a position outside the tables makes the kernel return ``REFQ_ARG_ERROR`` (the reference raises).
"""

from __future__ import annotations

from codegen.lower import KernelSpec, LowerContext, lowering, register_kernel
from codegen.ops.common import ROUNDING
from refq.graph import Node
from refq.kernels.rope import RopeParams

register_kernel(KernelSpec("refq_rope_s8", code_bytes=860, support=("refq_requant.h",)))


@lowering("ROPE")
def lower_rope(ctx: LowerContext, node: Node, p: RopeParams) -> None:
    if p.output_dtype != "int8":
        raise ctx.unsupported(f"ROPE to {p.output_dtype}")
    x = node.inputs[0]
    position = node.inputs[1] if len(node.inputs) > 1 else None
    (y,) = node.outputs
    shape = ctx.shape(x)
    if len(shape) not in (2, 3) or shape[0] < 1 or ctx.count(x) % (shape[0] * p.head_dim):
        raise ctx.unsupported(f"ROPE of shape {shape} (head_dim {p.head_dim})")
    if position is None:
        pos = ctx.const("rope:position0", "int32_t", [0], "position 0")
    else:
        if ctx.info(position).dtype != "int32" or ctx.count(position) != 1:
            raise ctx.unsupported(f"ROPE position {position!r} that is not one int32")
        pos = ctx.ptr(position)
    tables = f"{p.max_positions}x{p.head_dim // 2}:theta={p.theta!r}"
    cos = ctx.const(f"rope:{tables}:cos", "int16_t", p.cos_q15, f"RoPE cos Q15 [{tables}]")
    sin = ctx.const(f"rope:{tables}:sin", "int16_t", p.sin_q15, f"RoPE sin Q15 [{tables}]")
    tokens = shape[0]
    ctx.call(
        "refq_rope_s8",
        [
            ("head_dim", p.head_dim),
            ("max_positions", p.max_positions),
            ("interleaved", int(p.convention == "interleaved")),
            ("cos_q15", cos),
            ("sin_q15", sin),
            ("input_offset", -p.input_zero_point),
            ("output_multiplier", p.output_multiplier),
            ("output_shift", p.output_shift),
            ("output_offset", p.output_zero_point),
            ("rounding", ROUNDING[p.rounding]),
        ],
        [tokens, ctx.count(x) // (tokens * p.head_dim), pos, ctx.ptr(x), ctx.ptr(y)],
    )
