"""BATCH_MATMUL: integer ``y = requant(lhs @ rhs)`` with broadcast batch dims, as TFLM.

Reproduces TFLM's ``BATCH_MATMUL`` (``reference_ops::BatchMatMul``; int8 with int32
accumulator, int16 with int64 accumulator) and, under ``onnx``, onnxruntime's QLinearMatMul on
two run-time operands. Step by step::

    a = adj_x ? swap_last_two(lhs) : lhs                  (..., M, K)
    b = adj_y ? swap_last_two(rhs) : rhs                  (..., K, N)
    acc[..., m, n] = sum_k (a[..., m, k] - zp_lhs) * (b[..., k, n] - zp_rhs)     exact
    y = clamp(requant(acc) + zp_out, qmin, qmax)          per-tensor multiplier, no activation

Batch dims broadcast as NumPy / TFLite do (ranks 2 to 5 in TFLite). The real multiplier:
``double(s_lhs) * double(s_rhs) / double(s_out)`` in the tflite-micro wheel (``tflm``);
``double(float32(s_lhs * s_rhs)) / double(s_out)`` in LiteRT 2.3's reference kernel and the
TFLM source (``litert-ref``, ``tflm-f32``: ``Profile.bmm_product_float32``; measured on
multipliers whose two forms differ); ``onnx``: float32 ``M = (s_lhs * s_rhs) / s_out``.
int8 requantizes with the profile's rounding for BATCH_MATMUL on an int32 accumulator (LiteRT's
reference kernel rounds twice, as TFLM); int16 with TFLM's int64
``MultiplyByQuantizedMultiplier`` (reduced 16-bit multiplier) in both peers. The products go
through exact chunked BLAS (:func:`refq.intmatmul.plan_float_matmul`) on operands centered in
float, bounded by their dtype ranges (no data pass).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from refq.errors import QuantSpecError, ShapeError, UnsupportedError
from refq.intmatmul import float_matmul_exact, plan_float_matmul
from refq.kernels.fully_connected import fc_multipliers
from refq.kernels.registry import register
from refq.kernels.requant import (
    OUT_RANGES,
    RequantParams,
    fixedpoint_requant,
    float32_requant,
    requantize_into,
)
from refq.profiles import Profile

DTYPES = ("int8", "uint8", "int16")


@dataclass(frozen=True, eq=False)
class BatchMatmulParams:
    """Constants of one BATCH_MATMUL (TFLM ``OpData``: offsets, multiplier, shift)."""

    dtype: str
    lhs_offset: int
    rhs_offset: int
    output_offset: int
    adj_x: bool
    adj_y: bool
    requant: RequantParams
    lhs_bound: int
    """max |lhs - zp_lhs| over the dtype's range (the exactness bound of the products)."""
    rhs_bound: int


def _bound(dtype: str, zp: int) -> int:
    lo, hi = OUT_RANGES[dtype]
    return max(hi - zp, zp - lo)


def prepare_batch_matmul(
    *,
    dtype: str,
    lhs_scale: float,
    lhs_zero_point: int,
    rhs_scale: float,
    rhs_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    profile: Profile,
    adj_x: bool = False,
    adj_y: bool = False,
    name: str = "BATCH_MATMUL",
) -> BatchMatmulParams:
    """Derive the constants (one dtype for both operands and the output, as TFLM requires)."""
    if dtype not in DTYPES:
        raise UnsupportedError(f"{name}: dtype {dtype!r}; supported {DTYPES}")
    wide = dtype == "int16"
    if wide and profile.requant == "float32":
        raise UnsupportedError(f"{name}: profile {profile.name!r} (ONNX) has no int16 matmul")
    for what, s in (("lhs", lhs_scale), ("rhs", rhs_scale), ("output", output_scale)):
        if not (np.isfinite(s) and s > 0):
            raise QuantSpecError(f"{name}: {what} scale {s!r} must be positive and finite")
    lo, hi = OUT_RANGES[dtype]
    for what, z in (
        ("lhs", lhs_zero_point),
        ("rhs", rhs_zero_point),
        ("output", output_zero_point),
    ):
        if not lo <= z <= hi:
            raise QuantSpecError(f"{name}: {what} zero point {z} outside {dtype} [{lo}, {hi}]")
    mult = fc_multipliers(
        lhs_scale, np.float32(rhs_scale), output_scale, profile, profile.bmm_product_float32
    )
    if profile.requant == "float32":
        rq = float32_requant(
            np.asarray(mult, np.float32).reshape(()),
            zero_point=output_zero_point,
            out_dtype=dtype,
            what=name,
        )
    else:
        rq = fixedpoint_requant(
            np.asarray(mult).reshape(()),
            rounding=profile.rounding,
            zero_point=output_zero_point,
            out_dtype=dtype,
            s64=wide,
            what=name,
        )
    return BatchMatmulParams(
        dtype,
        -int(lhs_zero_point),
        -int(rhs_zero_point),
        int(output_zero_point),
        bool(adj_x),
        bool(adj_y),
        rq,
        _bound(dtype, lhs_zero_point),
        _bound(dtype, rhs_zero_point),
    )


def batch_matmul_accumulators(lhs: np.ndarray, rhs: np.ndarray, p: BatchMatmulParams):
    """Exact ``sum_k (a - zp_lhs)(b - zp_rhs)`` (float64 / float32 / int64 holding integers)."""
    for what, t in (("lhs", lhs), ("rhs", rhs)):
        if t.dtype != np.dtype(p.dtype):
            raise ShapeError(f"BATCH_MATMUL: {what} must be {p.dtype}, got {t.dtype}")
        if t.ndim < 2:
            raise ShapeError(f"BATCH_MATMUL: {what} must have rank >= 2, got shape {t.shape}")
    a = np.swapaxes(lhs, -1, -2) if p.adj_x else lhs
    b = np.swapaxes(rhs, -1, -2) if p.adj_y else rhs
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(
            f"BATCH_MATMUL: inner dimensions differ: lhs {lhs.shape} (adj_x={p.adj_x}) and "
            f"rhs {rhs.shape} (adj_y={p.adj_y})"
        )
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ShapeError(
            f"BATCH_MATMUL: batch dimensions of {lhs.shape} and {rhs.shape} do not broadcast"
        ) from None
    plan = plan_float_matmul(a.shape[-1], p.lhs_bound, p.rhs_bound)
    # Centering in float is exact: |code - zp| <= 65535.
    af = a.astype(plan.dtype)
    bf = b.astype(plan.dtype)
    if p.lhs_offset:
        af += plan.dtype.type(p.lhs_offset)
    if p.rhs_offset:
        bf += plan.dtype.type(p.rhs_offset)
    return float_matmul_exact(af, bf, plan)


def batch_matmul(lhs: np.ndarray, rhs: np.ndarray, p: BatchMatmulParams) -> np.ndarray:
    """The BATCH_MATMUL output codes (see the module docstring)."""
    acc = batch_matmul_accumulators(lhs, rhs, p)
    return requantize_into(acc, p.requant, None, "BATCH_MATMUL")


def _prepare(node: Any, tensors: Mapping[str, Any], profile: Profile) -> BatchMatmulParams:
    if len(node.inputs) != 2:
        raise ShapeError(f"node {node.name!r}: BATCH_MATMUL takes (lhs, rhs)")
    a, b = (tensors[n] for n in node.inputs)
    y = tensors[node.outputs[0]]
    for t in (a, b, y):
        if not t.quantized:
            raise UnsupportedError(f"node {node.name!r}: tensor {t.name!r} is not quantized")
        if t.per_channel:
            raise UnsupportedError(
                f"node {node.name!r}: tensor {t.name!r} is per-channel; BATCH_MATMUL is per tensor"
            )
    if not a.dtype == b.dtype == y.dtype:
        raise UnsupportedError(
            f"node {node.name!r}: BATCH_MATMUL needs one dtype, got {a.dtype}, {b.dtype}, {y.dtype}"
        )
    return prepare_batch_matmul(
        dtype=a.dtype,
        lhs_scale=a.scalar_scale(),
        lhs_zero_point=a.scalar_zero_point(),
        rhs_scale=b.scalar_scale(),
        rhs_zero_point=b.scalar_zero_point(),
        output_scale=y.scalar_scale(),
        output_zero_point=y.scalar_zero_point(),
        profile=profile,
        adj_x=node.attrs.get("adj_x", False),
        adj_y=node.attrs.get("adj_y", False),
        name=f"node {node.name!r} (BATCH_MATMUL)",
    )


def _run(p: BatchMatmulParams, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    return [batch_matmul(np.asarray(inputs[0]), np.asarray(inputs[1]), p)]


register("BATCH_MATMUL", prepare=_prepare, run=_run)
