"""SOFTMAX: refq_softmax_s8 (int8 -> int8), refq_softmax_s8_s16 (int8 -> int16) and
refq_softmax_s16 (int16 -> int16), TFLite Micro's integer arithmetic.

Consumes :class:`refq.kernels.softmax.SoftmaxS8Params` / ``SoftmaxS16Params`` as prepared for the
profile: the int8 path's two 256-entry exponential tables (``exp_q31``, ``exp_q12``: the
reference's own arithmetic, evaluated at prepare time; the input multiplier and the rounding
are baked into them), or the int16 path's multiplier, shift, rounding and two 513-entry tables.
The C does per row a maximum, a sum of table entries, one reciprocal and one multiply-shift per
element (templates/kernels/refq_softmax_rows.h). Rows the reference refuses as undefined
(``long_rows="raise"``) get refq's defined ``safe`` values. I-BERT / I-ViT softmax (profiles
``ibert`` / ``ivit``) are refused.
"""

from __future__ import annotations

import numpy as np

from codegen.lower import KernelSpec, LowerContext, lowering, register_kernel
from codegen.ops.common import ROUNDING
from refq.graph import Node
from refq.kernels.softmax import SoftmaxS8Params, SoftmaxS16Params

SUPPORT = ("refq_softmax_rows.h", "refq_requant.h")

_VARIANTS = {
    "s8": {"in_ctype": "int8_t", "out_ctype": "int8_t", "bits": 8},
    "s8_s16": {"in_ctype": "int8_t", "out_ctype": "int16_t", "bits": 16},
    "s16": {"in_ctype": "int16_t", "out_ctype": "int16_t", "bits": 16},
}

for _variant, _ctx in _VARIANTS.items():
    register_kernel(
        KernelSpec(
            f"refq_softmax_{_variant}",
            code_bytes=1100 if _variant == "s16" else 1000,
            template="refq_softmax",
            header="refq_softmax",
            context={
                "variant": _variant,
                **_ctx,
                "qmin": "INT8_MIN" if _ctx["bits"] == 8 else "INT16_MIN",
            },
            support=SUPPORT,
        )
    )


def s8_tables(ctx: LowerContext, p: SoftmaxS8Params, key: str) -> str:
    """The ``refq_softmax_s8_tables`` initializer of ``p``: both tables reversed (entry
    ``255 - d``, see refq_softmax_rows.h). Checks the C path's premises: entries >= 0 and
    ``exp_q12[0]`` = 2^19, so that the final exponent is at least 15."""
    e31 = np.asarray(p.exp_q31, dtype=np.int64)
    e12 = np.asarray(p.exp_q12, dtype=np.int64)
    if e31.shape != (256,) or e12.shape != (256,) or e31.min() < 0 or e12.min() < 0:
        raise ctx.unsupported(f"softmax tables of shape {e31.shape} with negative entries")
    if int(e12[0]) != 1 << 19:
        raise ctx.unsupported(f"softmax table exp_q12[0] = {int(e12[0])} (expected 2^19)")
    t31 = ctx.const(f"{key}:exp_q31", "int32_t", e31[::-1], f"{key}: exp(-d) in Q0.31, d = 255..0")
    t12 = ctx.const(f"{key}:exp_q12", "int32_t", e12[::-1], f"{key}: exp(-d) in Q12.19, d = 255..0")
    return f"{{{t31}, {t12}}}"


def s16_tables(ctx: LowerContext, p: SoftmaxS16Params, key: str) -> str:
    """The ``refq_softmax_s16_tables`` initializer of ``p``."""
    # Keys name the node: equal tables are still emitted once (constants are shared by bytes).
    exp_lut = ctx.const(f"{key}:exp_lut", "int16_t", p.exp_lut, f"{key}: exp on [-10, 0]")
    recip_lut = ctx.const(
        f"{key}:recip_lut", "int16_t", p.one_over_one_plus_x_lut, f"{key}: 1 / (1 + x)"
    )
    return (
        f"{{{int(p.input_multiplier)}, {int(p.input_shift)}, {ROUNDING[p.rounding]}, "
        f"{exp_lut}, {recip_lut}}}"
    )


@lowering("SOFTMAX")
def lower_softmax(ctx: LowerContext, node: Node, p: object) -> None:
    (x,) = node.inputs
    (y,) = node.outputs
    shape = ctx.shape(x)
    if not shape or shape[-1] < 1:
        raise ctx.unsupported(f"SOFTMAX of shape {shape}")
    n = shape[-1]
    if isinstance(p, SoftmaxS8Params):
        function = "refq_softmax_s8" if p.output_bits == 8 else "refq_softmax_s8_s16"
        tables = s8_tables(ctx, p, node.name)
    elif isinstance(p, SoftmaxS16Params):
        function = "refq_softmax_s16"
        tables = s16_tables(ctx, p, node.name)
    else:
        raise ctx.unsupported(f"SOFTMAX with {type(p).__name__}")
    ctx.call(function, [("tables", tables)], [ctx.count(x) // n, n, ctx.ptr(x), ctx.ptr(y)])
