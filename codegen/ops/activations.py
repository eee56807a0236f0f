"""Per-code activations of int8 codes: SILU, GELU, TANH, LOGISTIC, HARD_SWISH, RSQRT as one table
lookup (refq_lut_s8, refq_lut_s8_s16), and SWIGLU (refq_swiglu_s8, refq_swiglu_s8_s16).

Each of these ops' output is a function of one int8 input code, so the generator evaluates the
reference's own arithmetic on all 256 codes (the params the NumPy reference runs with: the SiLU
fixed-point or table method, LiteRT's GELU table or I-BERT's i-GELU, TFLM's gemmlowp tanh /
logistic, HARD_SWISH and RSQRT tables) and the C looks the result up. SWIGLU tabulates
``h = silu(gate)`` (int16, 7 fractional bits) the same way and keeps the multiplication by
``up - zp_up`` and the requantization (multiplier, shift, the profile's rounding) in C.
int16 TANH / LOGISTIC (TFLM's interpolation in the 256-entry sigmoid table) run as that
interpolation (refq_tanh_s16, refq_logistic_s16). I-ViT's ShiftGELU (row-dependent) and the other
int16 inputs (65536-entry tables) are refused.
"""

from __future__ import annotations

import numpy as np

from codegen.lower import KernelSpec, LowerContext, lowering, register_kernel
from codegen.ops.common import ROUNDING
from refq.graph import Node
from refq.kernels.activations import SIGMOID_TABLE_Q16, UnaryParams
from refq.kernels.gelu import GeluLutParams
from refq.kernels.silu import SiluParams, SwigluParams, silu, swiglu_h

CODES = np.arange(-128, 128, dtype=np.int64)
"""The int8 input codes, in table order (index x + 128)."""

CTYPE = {"int8": "int8_t", "int16": "int16_t"}
RANGES = {"int8": (-128, 127), "int16": (-32768, 32767)}

for _suffix, _out in (("s8", "int8"), ("s8_s16", "int16")):
    register_kernel(
        KernelSpec(
            f"refq_lut_{_suffix}",
            code_bytes=160,
            template="refq_lut",
            header="refq_lut",
            context={"in_ctype": "int8_t", "out_ctype": CTYPE[_out]},
        )
    )
    register_kernel(
        KernelSpec(
            f"refq_swiglu_{_suffix}",
            code_bytes=480,
            template="refq_swiglu",
            header="refq_swiglu",
            context={"out_ctype": CTYPE[_out]},
            support=("refq_requant.h",),
        )
    )


for _op, _bits in (("tanh", 8), ("logistic", 9)):
    register_kernel(
        KernelSpec(
            f"refq_{_op}_s16",
            code_bytes=300,
            template="refq_sigmoid_s16",
            header="refq_sigmoid_s16",
            context={"op": _op, "bits": _bits},
        )
    )


def lut_kernel(out_dtype: str) -> str:
    return "refq_lut_s8" if out_dtype == "int8" else "refq_lut_s8_s16"


def _table(ctx: LowerContext, node: Node, p: object) -> tuple[np.ndarray, str, int]:
    """(256 output codes, output dtype, smallest valid input code) of a per-code op."""
    if isinstance(p, SiluParams):
        table = silu(CODES.astype(np.int8), p)
        return np.asarray(table, np.int64), p.output_dtype, -128
    if isinstance(p, GeluLutParams):
        if p.code_min != -128 or np.asarray(p.table).size != 256:
            raise ctx.unsupported(f"GELU ({p.method}) on {np.asarray(p.table).size} input codes")
        return np.asarray(p.table, np.int64), p.output_dtype, -128
    if isinstance(p, UnaryParams):
        if p.dtype != "int8":
            raise ctx.unsupported(f"{p.op} on {p.dtype} (a {1 << 16}-entry table)")
        return np.asarray(p.table, np.int64), p.dtype, int(p.min_code)
    raise ctx.unsupported(f"{node.op} with {type(p).__name__}")


@lowering("SILU", "GELU", "TANH", "LOGISTIC", "HARD_SWISH", "RSQRT")
def lower_lut(ctx: LowerContext, node: Node, p: object) -> None:
    (x,) = node.inputs
    (y,) = node.outputs
    if (
        isinstance(p, UnaryParams)
        and p.method == "sigmoid_table"
        and ctx.info(x).dtype == ctx.info(y).dtype == "int16"
    ):
        _lower_sigmoid_s16(ctx, node, p)
        return
    if ctx.info(x).dtype != "int8":
        raise ctx.unsupported(f"{node.op} of {ctx.info(x).dtype} input")
    table, out_dtype, min_code = _table(ctx, node, p)
    if out_dtype not in CTYPE or ctx.info(y).dtype != out_dtype:
        raise ctx.unsupported(f"{node.op} to {out_dtype}")
    lo, hi = RANGES[out_dtype]
    if table.shape != (256,) or table.min() < lo or table.max() > hi:
        raise ctx.unsupported(f"{node.op} table of shape {table.shape} outside {out_dtype}")
    symbol = ctx.const(
        f"{node.name}:table", CTYPE[out_dtype], table, f"{node.op} {node.name}: y of x = -128..127"
    )
    ctx.call(
        lut_kernel(out_dtype),
        [("table", symbol), ("min_code", min_code)],
        [ctx.count(x), ctx.ptr(x), ctx.ptr(y)],
    )


def _lower_sigmoid_s16(ctx: LowerContext, node: Node, p: UnaryParams) -> None:
    """int16 TANH / LOGISTIC: the interpolation itself (templates/kernels/refq_sigmoid_s16)."""
    (x,) = node.inputs
    (y,) = node.outputs
    table = np.asarray((*SIGMOID_TABLE_Q16, SIGMOID_TABLE_Q16[-1]), dtype=np.int64)
    symbol = ctx.const("sigmoid_table_q16", "uint16_t", table, "sigmoid(i / 24) in Q0.16")
    ctx.call(
        f"refq_{p.op.lower()}_s16",
        [
            ("table", symbol),
            ("input_multiplier", int(p.ints["input_multiplier"])),
            ("input_left_shift", int(p.ints["input_left_shift"])),
        ],
        [ctx.count(x), ctx.ptr(x), ctx.ptr(y)],
    )


@lowering("SWIGLU")
def lower_swiglu(ctx: LowerContext, node: Node, p: SwigluParams) -> None:
    gate, up = node.inputs
    (y,) = node.outputs
    if p.output_dtype not in CTYPE:
        raise ctx.unsupported(f"SWIGLU to {p.output_dtype}")
    if ctx.shape(gate) != ctx.shape(up) or ctx.count(gate) != ctx.count(y):
        raise ctx.unsupported(f"SWIGLU of shapes {ctx.shape(gate)} and {ctx.shape(up)}")
    h = np.asarray(swiglu_h(CODES.astype(np.int8), p), dtype=np.int64)
    h_table = ctx.const(f"{node.name}:h", "int16_t", h, f"SWIGLU {node.name}: silu(gate) Q7")
    lo, hi = RANGES[p.output_dtype]
    ctx.call(
        "refq_swiglu_s8" if p.output_dtype == "int8" else "refq_swiglu_s8_s16",
        [
            ("h_table", h_table),
            ("up_offset", -p.up_zero_point),
            ("output_multiplier", p.output_multiplier),
            ("output_shift", p.output_shift),
            ("rounding", ROUNDING[p.rounding]),
            ("output_offset", p.output_zero_point),
            ("activation", f"{{{lo}, {hi}}}"),
        ],
        [ctx.count(gate), ctx.ptr(gate), ctx.ptr(up), ctx.ptr(y)],
    )
