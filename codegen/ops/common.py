"""Helpers shared by the op lowerings: requantization constants and checks."""

from __future__ import annotations

import numpy as np

from codegen.lower import LowerContext
from refq.kernels.requant import RequantParams

ROUNDING = {"double": "REFQ_ROUNDING_DOUBLE", "single": "REFQ_ROUNDING_SINGLE"}
"""C constants of the rounding field (templates/kernels/refq_requant.h)."""


def wrap32(values: np.ndarray) -> np.ndarray:
    """int64 values wrapped to int32 (the peers' int32 accumulators; kernels add mod 2^32)."""
    v = np.asarray(values, dtype=np.int64)
    return ((v + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32)


def requant_fields(
    ctx: LowerContext, rq: RequantParams, key: str, what: str, *, int64: bool = False
) -> str:
    """The ``refq_requant_params`` initializer of ``rq`` (templates/kernels/refq_requant.h).

    Fixed point (M, shift) per tensor or per channel, double or single rounding; kind
    ``float64`` (LiteRT's reference FULLY_CONNECTED) as the bits of the double multipliers.
    ``int64``: the caller's kernel has an int64 accumulator (16x8) and reads kind ``s64``
    (M, shift) or ``float64`` through ``refq_requant_channel_s64``; without it those are
    refused. ONNX's float32 requantization is refused."""
    if rq.kind == "float32":
        raise ctx.unsupported(f"{what}: float32 requantization (ONNX / onnxruntime profiles)")
    accumulator = getattr(rq, "accumulator", "int32")
    wanted = "int64" if int64 else "int32"
    kinds = ("s64", "float64") if int64 else ("fixedpoint", "float64")
    if rq.kind not in kinds:
        raise ctx.unsupported(f"{what}: {rq.kind} requantization ({accumulator} accumulators)")
    if accumulator != wanted:
        raise ctx.unsupported(f"{what}: {accumulator} accumulators")
    fields: dict[str, str] = {}
    if rq.kind == "float64":
        real = np.asarray(rq.scale, dtype=np.float64).reshape(-1)
        bits = real.view(np.uint64)
        zero = ctx.const("zero:int32", "int32_t", np.zeros(1, np.int64), "unused multiplier")
        fields["multiplier"] = zero
        fields["shift"] = zero
        fields["real_multiplier"] = ctx.const(
            f"{key}:real_multiplier", "uint64_t", bits, f"{key} real multipliers (double bits)"
        )
        channels = real.size
    else:
        mult = np.asarray(rq.multiplier, dtype=np.int64).reshape(-1)
        shift = np.asarray(rq.shift, dtype=np.int64).reshape(-1)
        if mult.size and int(mult.min()) < 0:
            raise ctx.unsupported(f"{what}: a negative multiplier")
        fields["multiplier"] = ctx.const(f"{key}:multiplier", "int32_t", mult, f"{key} multipliers")
        fields["shift"] = ctx.const(f"{key}:shift", "int32_t", shift, f"{key} shifts")
        fields["real_multiplier"] = "NULL"
        channels = mult.size
    fields["per_channel"] = str(int(channels > 1))
    fields["rounding"] = ROUNDING[rq.rounding]
    fields["output_offset"] = str(int(rq.zero_point))
    fields["activation"] = f"{{{int(rq.act_min)}, {int(rq.act_max)}}}"
    body = ", ".join(f".{k} = {v}" for k, v in fields.items())
    return f"{{{body}}}"
