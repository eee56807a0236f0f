"""FULLY_CONNECTED: refq_fully_connected_s8 (int8 weights, int8 or int16 output:
refq_fully_connected_s8_s16), refq_fully_connected_s4 (int4) and refq_fully_connected_s16
(16x8: int16 input and output, int8 weights, int64 accumulator).

All consume :class:`refq.kernels.fully_connected.FullyConnectedParams` as prepared for the
profile: the weights arranged by :mod:`codegen.layouts`, the kernel sums ``bias + input_offset *
sum (w + filter_offset)`` (wrapped to int32; int64 for 16x8), ``-zp_w`` per channel when the
weights are asymmetric, and the requantization constants (per tensor or per channel, double or
single rounding, LiteRT's float64; 16x8: TFLM's int64 form with the 16-bit reduced multiplier,
or LiteRT's float64). The ONNX profiles (float32 requantization) are refused.
"""

from __future__ import annotations

import numpy as np

from codegen.layouts import arrange_fc_s4, arrange_fc_s8, arrange_fc_s16, fc_s8_padded_k
from codegen.lower import KernelSpec, LowerContext, lowering, register_kernel
from codegen.ops.common import requant_fields, wrap32
from refq.graph import Node
from refq.kernels.fully_connected import FullyConnectedParams

for _suffix, _out in (("s8", "int8"), ("s8_s16", "int16")):
    register_kernel(
        KernelSpec(
            f"refq_fully_connected_{_suffix}",
            code_bytes=5000,
            template="refq_fully_connected_s8",
            header="refq_fully_connected_s8",
            context={"out_ctype": f"{_out}_t", "out_short": "s8" if _out == "int8" else "s16"},
            support=("refq_requant.h",),
        )
    )
register_kernel(
    KernelSpec("refq_fully_connected_s16", code_bytes=2600, support=("refq_requant.h",))
)
register_kernel(KernelSpec("refq_fully_connected_s4", code_bytes=4400, support=("refq_requant.h",)))


def fc_s8_buffer_size(k: int, n: int) -> int:
    """refq_fully_connected_s8_get_buffer_size(k, n): an int16 input row padded to a multiple of
    16 features and int32 outputs padded to an even count."""
    return fc_s8_padded_k(k) * 2 + ((n + 1) // 2) * 2 * 4


def fc_s4_buffer_size(k: int, n: int) -> int:
    """refq_fully_connected_s4_get_buffer_size(k, n): an int16 input row padded to a multiple
    of 8 features, and int32 outputs padded to a multiple of 4 rows."""
    return ((k + 7) // 8) * 8 * 2 + ((n + 3) // 4) * 4 * 4


@lowering("FULLY_CONNECTED")
def lower_fully_connected(ctx: LowerContext, node: Node, p: FullyConnectedParams) -> None:
    wide = p.input_dtype == "int16"
    requant = requant_fields(ctx, p.requant, node.name, "FULLY_CONNECTED", int64=wide)
    if p.accumulate != "exact":
        raise ctx.unsupported(f"{p.accumulate} accumulation")
    outputs = ("int16",) if wide else ("int8", "int16")
    if p.input_dtype not in ("int8", "int16") or p.output_dtype not in outputs:
        raise ctx.unsupported(f"FULLY_CONNECTED {p.input_dtype} -> {p.output_dtype}")
    if p.weights_dtype not in (("int8",) if wide else ("int8", "int4")):
        raise ctx.unsupported(
            f"FULLY_CONNECTED {p.input_dtype} input with {p.weights_dtype} weights"
        )
    if p.weights_dtype == "int4" and p.output_dtype != "int8":
        raise ctx.unsupported(f"FULLY_CONNECTED with int4 weights to {p.output_dtype}")
    x, y = node.inputs[0], node.outputs[0]
    rows = ctx.count(x) // p.k
    if rows * p.k != ctx.count(x) or rows * p.n != ctx.count(y):
        raise ctx.unsupported(
            f"input {x!r} {ctx.shape(x)} / output {y!r} {ctx.shape(y)} that are not rows of "
            f"K={p.k} / N={p.n}"
        )
    key = node.inputs[1]
    if wide:
        _lower_fc_s16(ctx, node, p, requant, rows)
        return
    if p.weights_dtype == "int8":
        function = "refq_fully_connected_s8" + ("_s16" if p.output_dtype == "int16" else "")
        pad = 2 * ((p.n + 1) // 2)
        weights = ctx.const(
            f"{key}:s8", "int8_t", arrange_fc_s8(p.weights), f"weights {key} (s8 layout)"
        )
        scratch = fc_s8_buffer_size(p.k, p.n)
    else:
        function = "refq_fully_connected_s4"
        pad = 4 * ((p.n + 3) // 4)
        weights = ctx.const(
            f"{key}:s4", "int8_t", arrange_fc_s4(p.weights), f"weights {key} (s4 layout)"
        )
        scratch = fc_s4_buffer_size(p.k, p.n)
    sums = np.zeros(pad, dtype=np.int64)
    sums[: p.n] = wrap32(p.kernel_sums)
    kernel_sums = ctx.const(f"{node.name}:kernel_sums", "int32_t", sums, "kernel sums")
    filter_offset = _filter_offset(ctx, key, p)
    ctx.call(
        function,
        [
            ("k", p.k),
            ("n", p.n),
            ("weights", weights),
            ("kernel_sums", kernel_sums),
            ("filter_offset", filter_offset),
            ("requant", requant),
        ],
        [rows, ctx.ptr(x), ctx.ptr(y)],
        scratch=scratch,
    )


def _filter_offset(ctx: LowerContext, key: str, p: FullyConnectedParams) -> str:
    """The per-channel ``-zp`` of asymmetric weights as a constant, or ``NULL`` (symmetric)."""
    f_off = np.broadcast_to(np.asarray(p.weights_offset, dtype=np.int64), (p.n,))
    if not f_off.any():
        return "NULL"
    return ctx.const(f"{key}:filter_offset", "int32_t", f_off, "-zp of the weights")


def _lower_fc_s16(
    ctx: LowerContext, node: Node, p: FullyConnectedParams, requant: str, rows: int
) -> None:
    """16x8: int64 kernel sums, the s16 weight layout, no scratch."""
    key = node.inputs[1]
    weights = ctx.const(
        f"{key}:s16", "int8_t", arrange_fc_s16(p.weights), f"weights {key} (s16 layout)"
    )
    kernel_sums = ctx.const(
        f"{node.name}:kernel_sums", "int64_t", np.asarray(p.kernel_sums, np.int64), "kernel sums"
    )
    filter_offset = _filter_offset(ctx, key, p)
    ctx.call(
        "refq_fully_connected_s16",
        [
            ("k", p.k),
            ("n", p.n),
            ("weights", weights),
            ("kernel_sums", kernel_sums),
            ("filter_offset", filter_offset),
            ("requant", requant),
        ],
        [rows, ctx.ptr(node.inputs[0]), ctx.ptr(node.outputs[0])],
    )
