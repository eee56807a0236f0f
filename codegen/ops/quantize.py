"""QUANTIZE and REQUANTIZE between integer types: refq_requantize_<in>[_<out>].

Consumes :class:`refq.kernels.quantize_ops.QuantizeParams` of mode ``requant`` (TFLM
``Requantize``: fixed-point multiplier of ``s_in / s_out`` with the profile's rounding), per
tensor or per channel along the last axis, from int8 / uint8 / int16 / int32 to int8 / uint8 /
int16. Float QUANTIZE / DEQUANTIZE and the ONNX float chain are refused.
"""

from __future__ import annotations

import numpy as np

from codegen.lower import KernelSpec, LowerContext, lowering, register_kernel
from codegen.ops.common import requant_fields
from refq.graph import Node
from refq.kernels.quantize_ops import QuantizeParams

SHORT = {"int8": "s8", "uint8": "u8", "int16": "s16", "int32": "s32"}
CTYPE = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t"}


def requantize_kernel(in_dtype: str, out_dtype: str) -> str:
    """refq_requantize_s8 (same type) or refq_requantize_s8_s16 (from, to)."""
    a, b = SHORT[in_dtype], SHORT[out_dtype]
    return f"refq_requantize_{a}" if a == b else f"refq_requantize_{a}_{b}"


for _in in SHORT:
    for _out in ("int8", "uint8", "int16"):
        register_kernel(
            KernelSpec(
                requantize_kernel(_in, _out),
                code_bytes=750,
                template="refq_requantize",
                header="refq_requantize",
                context={"in_ctype": CTYPE[_in], "out_ctype": CTYPE[_out]},
                support=("refq_requant.h",),
            )
        )


@lowering("QUANTIZE", "REQUANTIZE")
def lower_requantize(ctx: LowerContext, node: Node, p: QuantizeParams) -> None:
    if p.mode != "requant" or p.requant is None:
        raise ctx.unsupported(f"{node.op} in mode {p.mode!r} ({p.input_dtype} -> {p.output_dtype})")
    if p.input_dtype not in SHORT or p.output_dtype not in ("int8", "uint8", "int16"):
        raise ctx.unsupported(f"{node.op} {p.input_dtype} -> {p.output_dtype}")
    (x,) = node.inputs
    (y,) = node.outputs
    offsets = -np.asarray(p.input_zero_point, dtype=np.int64).reshape(-1)
    channels = max(int(offsets.size), int(p.requant.channels))
    offsets = np.broadcast_to(offsets, (channels,))
    kernel = requantize_kernel(p.input_dtype, p.output_dtype)
    ctx.call(
        kernel,
        [
            ("channels", channels),
            ("input_offset", ctx.const(f"{node.name}:input_offset", "int32_t", offsets, "-zp_in")),
            ("requant", requant_fields(ctx, p.requant, node.name, node.op)),
        ],
        [ctx.count(x), ctx.ptr(x), ctx.ptr(y)],
    )
