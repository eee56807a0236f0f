"""MEAN and SUM over axes of int8 / int16 codes, as TFLM's ``QuantizedMeanOrSum``.

Reproduces the TFLite Micro reference MEAN / SUM (``reference_ops::QuantizedMeanOrSum``), which
the tflite-micro wheel (0.dev20261023) runs for *every* int8 / int16 MEAN: for all axes, with or
without ``keep_dims``, and also when input and output share scale and zero point (older TFLM
sources divided the raw sum there, and had a 4-D special case for axes {1, 2}; the wheel takes
neither: tests/test_peer_tflm_elementwise.py checks equal-quantization cases too). LiteRT 2.3's
reference MEAN computes the same; its SUM does not (see below). Step by step::

    axes  = the axis list with negative entries wrapped and duplicates dropped (ResolveAxis)
    n     = product of the reduced dimensions                      (int64)
    sum   = int32(sum of the raw codes over the axes)              (int32 accumulation, wraps)
    (M, e) = QuantizeMultiplier(double(s_in) / double(s_out))
    MEAN: k = min(floor(log2 n), 32, 31 + e)                       (63 - clz64(n), clamped)
          M = int32((int64(M) << k) / n)   (truncating),   e = e - k
    y = clamp(MBQM(int32(sum - zp_in * n), M, e) + zp_out, qmin, qmax)

``MBQM`` is TFLite's MultiplyByQuantizedMultiplier (the profile's rounding; double under
LiteRT). ``n = 0`` (an empty reduced axis) outputs zeros, as the peer does.

LiteRT's reference SUM (int8 and int16) returns values that match neither TFLM nor the
exact sum (e.g. codes [14, 5, 0, -10], s_in 0.05, zp_in 3, s_out 0.2, zp_out -2: LiteRT 62,
TFLM -3, exact -2.75): refq does not reproduce it and refuses SUM under ``litert-ref``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from refq import fixedpoint as fp
from refq.errors import QuantSpecError, ShapeError, UnsupportedError
from refq.kernels.elementwise import (
    check_codes,
    check_output_shape,
    check_scale,
    check_zero_point,
    is_litert,
    mbqm,
    quantized,
    require_fixedpoint,
)
from refq.kernels.registry import register
from refq.kernels.requant import OUT_RANGES
from refq.profiles import Profile, Rounding

REDUCE_OPS = ("MEAN", "SUM")
DTYPES = ("int8", "int16")


@dataclass(frozen=True)
class ReduceParams:
    """TFLM ``OpDataReduce`` of one MEAN / SUM, with the 1/n folding already applied.

    ``axes`` are resolved (non-negative, unique, in the model's order); ``count`` is ``n``;
    ``multiplier`` / ``shift`` are the folded ones used per element (MEAN) or the plain ones (SUM).
    ``output_shape`` is the reduced shape (or the model's declared shape of the same size: the
    peer writes the results in flat order whatever the declared dims).
    """

    op: str
    dtype: str
    rounding: Rounding
    input_shape: tuple[int, ...]
    axes: tuple[int, ...]
    keep_dims: bool
    count: int
    input_zero_point: int
    output_zero_point: int
    multiplier: int
    shift: int
    act_min: int
    act_max: int
    output_shape: tuple[int, ...]


def resolve_axes(axes: Sequence[int], rank: int, what: str) -> tuple[int, ...]:
    """TFLite ``ResolveAxis``: wrap negative axes, drop duplicates, keep the order."""
    out: list[int] = []
    for a in axes:
        a = int(a)
        r = a + rank if a < 0 else a
        if not 0 <= r < rank:
            raise ShapeError(f"{what}: axis {a} is out of range for a rank-{rank} input")
        if r not in out:
            out.append(r)
    return tuple(out)


def reduced_shape(shape: Sequence[int], axes: Sequence[int], keep_dims: bool) -> tuple[int, ...]:
    """Output shape: reduced axes become 1 (``keep_dims``) or disappear."""
    if keep_dims:
        return tuple(1 if i in axes else int(d) for i, d in enumerate(shape))
    return tuple(int(d) for i, d in enumerate(shape) if i not in axes)


def fold_count(multiplier: int, shift: int, count: int) -> tuple[int, int]:
    """TFLite's folding of ``1/count`` into ``(M, shift)`` for the quantized MEAN (see module)."""
    k = min(int(count).bit_length() - 1, 32, 31 + shift)
    return int((multiplier << k) // count), shift - k


def prepare_reduce(
    op: str,
    dtype: str,
    input_shape: Sequence[int],
    axes: Sequence[int],
    keep_dims: bool,
    input_scale: float,
    input_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    profile: Profile,
    name: str = "",
    output_shape: Sequence[int] | None = None,
) -> ReduceParams:
    """Derive the MEAN / SUM constants (module docstring) for a fixed input shape.

    ``output_shape``: the declared output shape, which must hold as many elements as the
    reduced shape (default: the reduced shape itself).
    """
    what = name or op
    if op not in REDUCE_OPS:
        raise UnsupportedError(f"{what}: op {op!r} is not one of {REDUCE_OPS}")
    if dtype not in DTYPES:
        raise UnsupportedError(f"{what}: {op} on {dtype!r} codes; supported {DTYPES}")
    require_fixedpoint(profile, what)
    if op == "SUM" and is_litert(profile):
        raise UnsupportedError(
            f"{what}: LiteRT 2.3's reference SUM of quantized codes matches neither TFLM nor the "
            "exact sum; refq does not reproduce it (use the tflm profile)"
        )
    shape = tuple(int(d) for d in input_shape)
    if any(d < 0 for d in shape):
        raise ShapeError(f"{what}: input shape {shape} has a negative dimension")
    resolved = resolve_axes(axes, len(shape), what)
    count = int(np.prod([shape[a] for a in resolved], dtype=np.int64))
    s_in = check_scale(input_scale, "input", what)
    s_out = check_scale(output_scale, "output", what)
    zi = check_zero_point(input_zero_point, dtype, "input", what)
    zo = check_zero_point(output_zero_point, dtype, "output", what)
    real = s_in / s_out
    mult, shift = fp.quantize_multiplier(real)
    if not -31 <= shift <= 30:
        raise QuantSpecError(
            f"{what}: s_in / s_out = {real!r} gives shift {shift}, outside [-31, 30]"
        )
    if op == "MEAN" and count > 0:
        mult, shift = fold_count(mult, shift, count)
    out_shape = reduced_shape(shape, resolved, bool(keep_dims))
    if output_shape is not None:
        declared = tuple(int(d) for d in output_shape)
        if int(np.prod(declared, dtype=np.int64)) != int(np.prod(out_shape, dtype=np.int64)):
            raise ShapeError(
                f"{what}: output declared {declared}, the reduction of {shape} over axes "
                f"{resolved} (keep_dims={bool(keep_dims)}) gives {out_shape}"
            )
        out_shape = declared
    lo, hi = OUT_RANGES[dtype]
    return ReduceParams(
        op,
        dtype,
        profile.rounding,
        shape,
        resolved,
        bool(keep_dims),
        count,
        zi,
        zo,
        mult,
        shift,
        lo,
        hi,
        out_shape,
    )


def reduce(x: np.ndarray, p: ReduceParams) -> np.ndarray:
    """Evaluate MEAN / SUM on ``x`` (shape ``p.input_shape``); returns ``p.dtype`` codes."""
    what = p.op
    arr = check_codes(x, p.dtype, "input", what)
    if arr.shape != p.input_shape:
        raise ShapeError(f"{what}: input shape {arr.shape}, prepared for {p.input_shape}")
    out_shape = p.output_shape
    if p.count == 0:
        return np.zeros(out_shape, dtype=p.dtype)
    total = arr.astype(np.int64).sum(axis=p.axes, keepdims=p.keep_dims)
    # The peer sums in int32 and subtracts zp * n in int64 before the int32 cast: both wrap.
    total = fp.wrap(fp.wrap(total) - np.int64(p.input_zero_point) * np.int64(p.count))
    y = mbqm(total, p.multiplier, p.shift, p.rounding) + p.output_zero_point
    return np.clip(y, p.act_min, p.act_max).astype(p.dtype).reshape(out_shape)


def mean(x: np.ndarray, p: ReduceParams) -> np.ndarray:
    """TFLM MEAN (``p.op == "MEAN"``); see :func:`reduce`."""
    return reduce(x, p)


# ---------------------------------------------------------------------------------------------
# Graph adapter: inputs (data, axes constant int32), attr keep_dims
# ---------------------------------------------------------------------------------------------


def _make_prepare(op: str):
    def _prepare(node: Any, tensors: Mapping[str, Any], profile: Profile) -> ReduceParams:
        if len(node.inputs) != 2 or len(node.outputs) != 1:
            raise ShapeError(f"node {node.name!r}: {op} takes (input, axes) and one output")
        x, ax = tensors[node.inputs[0]], tensors[node.inputs[1]]
        out = tensors[node.outputs[0]]
        if not ax.is_constant:
            raise UnsupportedError(
                f"node {node.name!r}: the axes {ax.name!r} of {op} must be a constant tensor"
            )
        if ax.dtype not in ("int32", "int64"):
            raise UnsupportedError(f"node {node.name!r}: axes {ax.name!r} must be int32")
        if x.dtype != out.dtype:
            raise UnsupportedError(
                f"node {node.name!r}: {op} from {x.dtype} to {out.dtype}; dtypes must match"
            )
        if any(d is None for d in x.shape):
            raise ShapeError(f"node {node.name!r}: input {x.name!r} needs a fixed shape {x.shape}")
        s_in, z_in = quantized(x, node.name)
        s_out, z_out = quantized(out, node.name)
        p = prepare_reduce(
            op,
            x.dtype,
            x.shape,
            [int(a) for a in np.asarray(ax.data).reshape(-1)],
            bool(node.attrs.get("keep_dims", False)),
            s_in,
            z_in,
            s_out,
            z_out,
            profile,
            name=f"node {node.name!r} ({op})",
            output_shape=None if None in out.shape else out.shape,
        )
        check_output_shape(out, p.output_shape, node.name)
        return p

    return _prepare


def _run(p: ReduceParams, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    return [reduce(np.asarray(inputs[0]), p)]


for _op in REDUCE_OPS:
    register(_op, prepare=_make_prepare(_op), run=_run)
