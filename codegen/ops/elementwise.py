"""ADD, SUB, MUL on int8 and int16: refq_add_s8, refq_sub_s8, refq_mul_s8, refq_add_s16,
refq_sub_s16, refq_mul_s16 (with broadcasting).

The parameters are :class:`refq.kernels.elementwise.BinaryParams` as prepared for the profile
(TFLite ArithmeticParams: offsets, left shift, the three (multiplier, shift) pairs, activation
range, rounding); broadcasting is resolved here into the output shape and per-input strides
(templates/kernels/refq_elementwise.h). The int16 kernels are the int8 templates without the
256-entry input tables (int16 MUL has zero points 0). SQUARED_DIFFERENCE is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from codegen.lower import KernelSpec, LowerContext, lowering, register_kernel
from codegen.ops.common import ROUNDING
from refq import fixedpoint as fp
from refq.graph import Node
from refq.kernels.elementwise import BinaryParams

MAX_RANK = 6
TABLE_MIN_COUNT = 64
"""ADD / SUB with at least this many output elements get their two input-stage tables
(2 x 1 KB of flash, shared between nodes with equal input quantization): about 15 instead of
about 70 instructions per element on Cortex-M."""

for _op, _template in (
    ("add", "refq_add_sub_s8"),
    ("sub", "refq_add_sub_s8"),
    ("mul", "refq_mul_s8"),
):
    for _short, _ctype in (("s8", "int8_t"), ("s16", "int16_t")):
        register_kernel(
            KernelSpec(
                f"refq_{_op}_{_short}",
                code_bytes=(2700 if _short == "s8" else 1400) if _op != "mul" else 950,
                template=_template,
                header="refq_binary_s8",
                context={
                    "op": _op,
                    "sign": "-" if _op == "sub" else "+",
                    "ctype": _ctype,
                    "max_offset": 255 if _short == "s8" else 0,
                },
                support=("refq_elementwise.h",),
            )
        )


def broadcast_strides(
    shape1: Sequence[int], shape2: Sequence[int], out: Sequence[int], what: str = "broadcast"
) -> tuple[list[int], list[int], list[int]]:
    """(shape, strides of input 1, strides of input 2) in elements, broadcast dims stride 0,
    adjacent dims merged where both inputs are contiguous across them; rank >= 1."""
    rank = len(out)
    s1 = _strides(shape1, out)
    s2 = _strides(shape2, out)
    dims = [(int(out[d]), s1[d], s2[d]) for d in range(rank) if int(out[d]) != 1]
    merged: list[tuple[int, int, int]] = []
    for n, a, b in dims:
        if merged:
            pn, pa, pb = merged[-1]
            if pa == a * n and pb == b * n:
                merged[-1] = (pn * n, a, b)
                continue
        merged.append((n, a, b))
    if not merged:
        merged = [(1, 0, 0)]
    if len(merged) > MAX_RANK:
        raise ValueError(f"{what}: {len(merged)} dimensions after merging (at most {MAX_RANK})")
    return [m[0] for m in merged], [m[1] for m in merged], [m[2] for m in merged]


def _strides(shape: Sequence[int], out: Sequence[int]) -> list[int]:
    shape = [1] * (len(out) - len(shape)) + [int(d) for d in shape]
    strides = [0] * len(out)
    step = 1
    for d in range(len(out) - 1, -1, -1):
        strides[d] = 0 if shape[d] == 1 and int(out[d]) != 1 else step
        step *= shape[d]
    return strides


def broadcast_field(shape: list[int], s1: list[int], s2: list[int]) -> str:
    """The ``refq_broadcast`` initializer."""

    def arr(values: list[int]) -> str:
        return "{" + ", ".join(str(v) for v in values + [0] * (MAX_RANK - len(values))) + "}"

    return f"{{{len(shape)}, {arr(shape)}, {arr(s1)}, {arr(s2)}}}"


def input_table(p: BinaryParams, which: int) -> np.ndarray:
    """t(x) = MBQM((x + offset) * 2^left_shift, M, s) for the 256 int8 codes (refq.fixedpoint,
    the function the NumPy kernel applies)."""
    offset = p.input1_offset if which == 1 else p.input2_offset
    mult = p.input1_multiplier if which == 1 else p.input2_multiplier
    shift = p.input1_shift if which == 1 else p.input2_shift
    codes = np.arange(-128, 128, dtype=np.int64)
    return np.asarray(
        fp.multiply_by_quantized_multiplier(
            (codes + offset) << p.left_shift, mult, shift, p.rounding
        ),
        dtype=np.int64,
    )


@lowering("ADD", "SUB", "MUL")
def lower_binary(ctx: LowerContext, node: Node, p: BinaryParams) -> None:
    if p.dtype not in ("int8", "int16"):
        raise ctx.unsupported(f"{p.op} on {p.dtype}")
    if p.dtype == "int16" and p.op == "MUL" and (p.input1_offset or p.input2_offset):
        raise ctx.unsupported("int16 MUL with nonzero input zero points")
    a, b = node.inputs
    (y,) = node.outputs
    try:
        shape, s1, s2 = broadcast_strides(ctx.shape(a), ctx.shape(b), ctx.shape(y), ctx.where())
    except ValueError as exc:
        raise ctx.unsupported(str(exc)) from None
    if int(np.prod(shape)) != ctx.count(y):
        raise ctx.unsupported(
            f"output {y!r} of shape {ctx.shape(y)} for inputs broadcast to {shape}"
        )
    tables = ["NULL", "NULL"]
    if p.dtype == "int8" and p.op in ("ADD", "SUB") and ctx.count(y) >= TABLE_MIN_COUNT:
        t1, t2 = input_table(p, 1), input_table(p, 2)
        # The output stage's SMMULR needs 2 (t1 +- t2) inside int32.
        if max(int(np.abs(t1).max()), int(np.abs(t2).max())) < 1 << 29:
            tables = [
                ctx.const(f"{a}:{p.op}_table{i}", "int32_t", t, f"{p.op} input {i} stage")
                for i, (a, t) in enumerate(((a, t1), (b, t2)), start=1)
            ]
    short = "s8" if p.dtype == "int8" else "s16"
    ctx.call(
        f"refq_{p.op.lower()}_{short}",
        [
            ("input1_offset", p.input1_offset),
            ("input2_offset", p.input2_offset),
            ("left_shift", p.left_shift),
            ("input1_multiplier", p.input1_multiplier),
            ("input1_shift", p.input1_shift),
            ("input2_multiplier", p.input2_multiplier),
            ("input2_shift", p.input2_shift),
            ("output_multiplier", p.output_multiplier),
            ("output_shift", p.output_shift),
            ("output_offset", p.output_offset),
            ("activation", f"{{{p.act_min}, {p.act_max}}}"),
            ("rounding", ROUNDING[p.rounding]),
            ("input1_table", tables[0]),
            ("input2_table", tables[1]),
            ("shape", broadcast_field(shape, s1, s2)),
        ],
        [ctx.ptr(a), ctx.ptr(b), ctx.ptr(y)],
        params_type=f"refq_binary_{short}_params",
    )
