"""RMS_NORM and LAYER_NORM: refq_rms_norm_<in>[_<out>] / refq_layer_norm_<in>[_<out>] for int8 and
int16 codes.

Consumes :class:`refq.kernels.norms.NormParams` as prepared for the profile (every constant:
var_offset, the square root method, the reciprocal numerator and shift, the per-channel affine
``A[c]`` / ``B[c]`` and its shift ``K``); the C adds ``2^(K-1)`` to ``B`` once at generation time
(the reference's round half up) and takes the exact integer square root bit by bit
(templates/kernels/refq_norm.c.j2). uint8 codes are refused.
"""

from __future__ import annotations

import numpy as np

from codegen.emit import c_int_literal
from codegen.lower import KernelSpec, LowerContext, lowering, register_kernel
from refq.graph import Node
from refq.kernels.norms import NormParams

SHORT = {"int8": "s8", "int16": "s16"}
CTYPE = {"int8": "int8_t", "int16": "int16_t"}
SQRT_METHODS = {"exact": 0, "newton10": 1}


def norm_kernel(op: str, in_dtype: str, out_dtype: str) -> str:
    """refq_rms_norm_s8 (same type in and out) or refq_rms_norm_s8_s16 (from, to)."""
    a, b = SHORT[in_dtype], SHORT[out_dtype]
    return f"refq_{op}_norm_{a}" if a == b else f"refq_{op}_norm_{a}_{b}"


for _op in ("rms", "layer"):
    for _in in SHORT:
        for _out in SHORT:
            register_kernel(
                KernelSpec(
                    norm_kernel(_op, _in, _out),
                    code_bytes=960,
                    template="refq_norm",
                    header="refq_norm",
                    context={"op": _op, "in_ctype": CTYPE[_in], "out_ctype": CTYPE[_out]},
                )
            )


@lowering("RMS_NORM", "LAYER_NORM")
def lower_norm(ctx: LowerContext, node: Node, p: NormParams) -> None:
    if p.input_dtype not in SHORT or p.output_dtype not in SHORT:
        raise ctx.unsupported(f"{node.op} {p.input_dtype} -> {p.output_dtype}")
    x = node.inputs[0]
    (y,) = node.outputs
    if ctx.shape(x)[-1] != p.n:
        raise ctx.unsupported(f"{node.op} over an axis of {ctx.shape(x)[-1]}, params for {p.n}")
    bias = np.asarray(p.bias, dtype=np.int64) + (np.int64(1) << np.int64(p.out_shift - 1))
    multiplier = ctx.const(
        f"{node.name}:multiplier", "int32_t", p.multiplier, f"{node.name}: affine A[c]"
    )
    bias_sym = ctx.const(
        f"{node.name}:bias", "int64_t", bias, f"{node.name}: affine B[c] + 2^(K-1)"
    )
    ctx.call(
        norm_kernel("layer" if p.subtract_mean else "rms", p.input_dtype, p.output_dtype),
        [
            ("n", p.n),
            ("subtract_mean", int(p.subtract_mean)),
            ("input_offset", -p.input_zero_point),
            ("var_offset", c_int_literal(int(p.var_offset), "int64_t")),
            ("sqrt_method", SQRT_METHODS[p.sqrt]),
            ("recip_numerator", c_int_literal(int(p.recip_numerator), "int64_t")),
            ("recip_shift", p.recip_shift),
            ("multiplier", multiplier),
            ("bias", bias_sym),
            ("out_shift", p.out_shift),
            ("output_offset", p.output_zero_point),
            ("activation", f"{{{p.qmin}, {p.qmax}}}"),
        ],
        [ctx.count(x) // p.n, ctx.ptr(x), ctx.ptr(y)],
    )
