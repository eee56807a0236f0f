"""The requantization step every integer kernel ends with: accumulator -> output code.

One :class:`RequantParams` holds every constant (the C generator emits them as they are) and
:func:`requantize` applies it, per tensor or per channel along the accumulator's last axis::

    x = acc + offset[c]                   offset: bias / kernel sums, optional, int64
    fixedpoint (int32 accumulator):        x is wrapped to int32 (C int32 accumulation)
        double  r = RDBPOT(SRDHM(x << max(s, 0), M), max(-s, 0))      TFLM reference, CMSIS-NN
        single  r = (x*M + 2^(30-s)) >> (31-s)                        TFLITE_SINGLE_ROUNDING
    s64 (16x8, int64 accumulator in [-2^47, 2^47)):
                r = (x*m16 + 2^(14-s)) >> (15-s),  m16 = M < 0x7FFF0000 ? (M + 2^15) >> 16 : 0x7FFF
    float32 (ONNX / onnxruntime):
                r = round_half_even(float32(x) * M_f32)               float32 product
    float64 (LiteRT 2.3 reference FULLY_CONNECTED, measured):
                r = round_half_away(double(x) * double(real))         x int32 or int64
    y = clamp(r + zero_point, act_min, act_max)

``(M, shift)`` come from TFLite ``QuantizeMultiplier`` of a real multiplier
(:func:`refq.fixedpoint.quantize_multipliers`); how each kernel forms that real multiplier
(double or float32 products of the scales) is the kernel's business. The float32 form clamps
before rounding as onnxruntime's MLAS does; with integer bounds that equals clamping after.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numba
import numpy as np
from numpy.typing import ArrayLike

from refq.errors import ExactnessError, QuantSpecError, ShapeError, UnsupportedError
from refq.fixedpoint import S64_ACC_MAX, quantize_multipliers
from refq.profiles import Rounding

RequantKind = Literal["fixedpoint", "s64", "float32", "float64"]

OUT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
    "uint16": (0, 65535),
    "int32": (-(1 << 31), (1 << 31) - 1),
}

_KINDS = {"fixedpoint": 0, "s64": 1, "float32": 2, "float64": 3}


@dataclass(frozen=True, eq=False)
class RequantParams:
    """Constants of one requantization (per tensor: 0-d arrays; per channel: one per channel).

    ``multiplier`` / ``shift`` are TFLite's int32 ``(M, shift)`` (kinds ``fixedpoint`` / ``s64``);
    ``scale`` is the float32 multiplier of kind ``float32`` (float64 real multiplier of kind
    ``float64``). Unused arrays are empty.
    """

    kind: RequantKind
    rounding: Rounding
    multiplier: np.ndarray
    shift: np.ndarray
    scale: np.ndarray
    zero_point: int
    act_min: int
    act_max: int
    out_dtype: str
    accumulator: str = "int32"
    """``int32`` (wrapped like C's int32 sums before requantizing) or ``int64`` (16x8 kernels)."""

    @property
    def channels(self) -> int:
        """1 for per-tensor parameters, else the number of channels."""
        arr = self.scale if self.kind in ("float32", "float64") else self.multiplier
        return int(arr.size)

    @cached_property
    def kernel_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(multiplier, shift, scale)`` as the contiguous vectors the element loop reads,
        converted once (a decode step requantizes hundreds of times)."""
        return (
            _vec(self.multiplier, np.int32),
            _vec(self.shift, np.int32),
            _vec(self.scale, np.float64 if self.kind == "float64" else np.float32),
        )

    @property
    def reduced_multiplier(self) -> np.ndarray:
        """The 16-bit multiplier of the s64 form (CMSIS-NN ``REDUCE_MULTIPLIER``)."""
        m = self.multiplier.astype(np.int64)
        return np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF).astype(np.int32)


def _range(out_dtype: str, act_min: int | None, act_max: int | None) -> tuple[int, int]:
    if out_dtype not in OUT_RANGES:
        raise UnsupportedError(f"requantization to {out_dtype!r}; use one of {list(OUT_RANGES)}")
    lo, hi = OUT_RANGES[out_dtype]
    lo = lo if act_min is None else int(act_min)
    hi = hi if act_max is None else int(act_max)
    if not OUT_RANGES[out_dtype][0] <= lo <= hi <= OUT_RANGES[out_dtype][1]:
        raise QuantSpecError(
            f"activation range [{lo}, {hi}] is empty or outside {out_dtype} {OUT_RANGES[out_dtype]}"
        )
    return lo, hi


def fixedpoint_requant(
    real_multiplier: ArrayLike,
    *,
    rounding: Rounding,
    zero_point: int,
    out_dtype: str,
    act_min: int | None = None,
    act_max: int | None = None,
    s64: bool = False,
    what: str = "requantization",
) -> RequantParams:
    """TFLite ``QuantizeMultiplier`` of each real multiplier (float64, as the peers do).

    ``s64=True``: the 16x8 int64-accumulator form, whose shift must lie in [-31, 7].
    """
    real = np.asarray(real_multiplier, dtype=np.float64)
    if real.ndim > 1:
        raise ShapeError(f"{what}: multipliers must be a scalar or one per channel: {real.shape}")
    bad = ~np.isfinite(real) | (real <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        raise QuantSpecError(
            f"{what}: real multiplier {real.reshape(-1)[i]!r} (channel {i}) must be positive "
            "and finite; check the scales"
        )
    m, s = quantize_multipliers(real, rounding)
    if s64 and (s.min() < -31 or s.max() > 7):
        i = int(np.flatnonzero(((s < -31) | (s > 7)).reshape(-1))[0])
        raise QuantSpecError(
            f"{what}: shift {int(s.reshape(-1)[i])} (channel {i}, real multiplier "
            f"{real.reshape(-1)[i]!r}) is outside [-31, 7], the domain of the int64 "
            "MultiplyByQuantizedMultiplier of the 16x8 kernels"
        )
    if not s64 and (s.min() < -31 or s.max() > 30):
        i = int(np.flatnonzero(((s < -31) | (s > 30)).reshape(-1))[0])
        raise QuantSpecError(
            f"{what}: shift {int(s.reshape(-1)[i])} (channel {i}, real multiplier "
            f"{real.reshape(-1)[i]!r}) is outside [-31, 30], the domain of "
            "MultiplyByQuantizedMultiplier"
        )
    lo, hi = _range(out_dtype, act_min, act_max)
    return RequantParams(
        "s64" if s64 else "fixedpoint",
        rounding,
        m,
        s,
        np.zeros(0, np.float32),
        int(zero_point),
        lo,
        hi,
        out_dtype,
        "int64" if s64 else "int32",
    )


def float64_requant(
    real_multiplier: ArrayLike,
    *,
    zero_point: int,
    out_dtype: str,
    act_min: int | None = None,
    act_max: int | None = None,
    accumulator: str = "int32",
    what: str = "requantization",
) -> RequantParams:
    """LiteRT 2.3's reference FULLY_CONNECTED: ``round_half_away(double(acc) * real)``."""
    real = np.asarray(real_multiplier, dtype=np.float64)
    if real.ndim > 1 or not (np.isfinite(real).all() and (real > 0).all()):
        raise QuantSpecError(f"{what}: real multipliers must be positive and finite: {real}")
    lo, hi = _range(out_dtype, act_min, act_max)
    empty = np.zeros(0, np.int32)
    return RequantParams(
        "float64", "double", empty, empty, real, int(zero_point), lo, hi, out_dtype, accumulator
    )


def float32_requant(
    scale: ArrayLike,
    *,
    zero_point: int,
    out_dtype: str,
    act_min: int | None = None,
    act_max: int | None = None,
    what: str = "requantization",
) -> RequantParams:
    """ONNX / onnxruntime requantization by a float32 multiplier (formed by the caller)."""
    sc = np.asarray(scale)
    if sc.dtype != np.float32:
        raise QuantSpecError(f"{what}: the float32 multiplier must be float32, got {sc.dtype}")
    if sc.ndim > 1:
        raise ShapeError(f"{what}: multipliers must be a scalar or one per channel: {sc.shape}")
    bad = ~np.isfinite(sc) | (sc <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        raise QuantSpecError(
            f"{what}: float32 multiplier {sc.reshape(-1)[i]!r} (channel {i}) must be positive "
            "and finite"
        )
    lo, hi = _range(out_dtype, act_min, act_max)
    empty = np.zeros(0, np.int32)
    return RequantParams("float32", "double", empty, empty, sc, int(zero_point), lo, hi, out_dtype)


# ---------------------------------------------------------------------------------------------
# The element loop (one pass: offset, wrap, multiply, round, zero point, clamp, store)
# ---------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _requant_kernel(
    acc, offset, mult, shift, scale, kind, single, wide, zp, lo, hi, out
):  # pragma: no cover
    # acc (R, C) of any integer dtype, or float holding exact integers (the BLAS products);
    # offset (C,) or (1,) int64; mult / shift / scale (C,) or (1,). Returns the flat index of
    # the first s64 accumulator outside [-2^47, 2^47), else -1.
    rows, cols = acc.shape
    n_off = offset.shape[0]
    n_par = scale.shape[0] if kind >= 2 else mult.shape[0]
    for i in range(rows):
        for j in range(cols):
            x = np.int64(acc[i, j]) + offset[j if n_off > 1 else 0]
            p = j if n_par > 1 else 0
            if kind == 3:
                if not wide:
                    x = ((x + 2147483648) & 4294967295) - 2147483648
                v = np.float64(x) * np.float64(scale[p])
                a = min(abs(v), 4.0e18)  # beyond any output range; keeps the cast defined
                f = np.floor(a)
                r = np.int64(f) + (1 if a - f >= 0.5 else 0)  # half away; a - f is exact
                r = -r if v < 0 else r
            elif kind == 1:
                if x < -140737488355328 or x > 140737488355327:
                    return i * cols + j
                m = np.int64(mult[p])
                m16 = (m + 32768) >> 16 if m < 0x7FFF0000 else np.int64(0x7FFF)
                total = 15 - np.int64(shift[p])
                r = (x * m16 + (np.int64(1) << (total - 1))) >> total
                r = ((r + 2147483648) & 4294967295) - 2147483648
            else:
                # The peers accumulate in int32: C's wrap (gcc / clang) of the exact sum.
                x = ((x + 2147483648) & 4294967295) - 2147483648
                if kind == 2:
                    v = np.float32(x) * scale[p]
                    flo = np.float32(lo - zp)
                    fhi = np.float32(hi - zp)
                    v = v if v > flo else flo
                    v = v if v < fhi else fhi
                    r = np.int64(np.rint(v))
                elif single:
                    s = np.int64(shift[p])
                    total = 31 - s
                    r = (x * np.int64(mult[p]) + (np.int64(1) << (total - 1))) >> total
                    r = ((r + 2147483648) & 4294967295) - 2147483648
                else:
                    s = np.int64(shift[p])
                    m = np.int64(mult[p])
                    left = s if s > 0 else 0
                    right = -s if s < 0 else 0
                    v = x << left
                    v = ((v + 2147483648) & 4294967295) - 2147483648
                    if v == -2147483648 and m == -2147483648:
                        h = np.int64(2147483647)
                    else:
                        # floor((v*M + 2^30) / 2^31) is gemmlowp's SRDHM (refq.fixedpoint).
                        h = (v * m + 1073741824) >> 31
                    mask = (np.int64(1) << right) - 1
                    rem = h & mask
                    thr = (mask >> 1) + (1 if h < 0 else 0)
                    r = (h >> right) + (1 if rem > thr else 0)
            r += zp
            r = r if r > lo else lo
            r = r if r < hi else hi
            out[i, j] = r
    return -1


_ZERO_OFFSET = np.zeros(1, np.int64)  # read only by the kernel


def _vec(a: np.ndarray, dtype: type) -> np.ndarray:
    return (
        np.ascontiguousarray(np.asarray(a, dtype=dtype).reshape(-1))
        if a.size
        else np.zeros(1, dtype)
    )


def requantize_into(
    acc: np.ndarray, rq: RequantParams, offset: np.ndarray | None = None, what: str = "requantize"
) -> np.ndarray:
    """:func:`requantize` without the dtype check: ``acc`` may also be a float array holding
    exact integers (the output of refq's exact BLAS products)."""
    if acc.ndim == 0:
        acc = acc.reshape(1)
    cols = acc.shape[-1]
    ch = rq.channels
    if ch not in (1, cols):
        raise ShapeError(
            f"{what}: {ch} per-channel multipliers for an accumulator whose last axis has {cols}"
        )
    off = _ZERO_OFFSET if offset is None else _vec(offset, np.int64)
    if off.size not in (1, cols):
        raise ShapeError(f"{what}: offset of size {off.size} for {cols} channels")
    acc2 = np.ascontiguousarray(acc.reshape(-1, cols) if acc.size else acc.reshape(0, cols))
    out = np.empty(acc2.shape, dtype=np.dtype(rq.out_dtype))
    if acc2.size:
        mult, shift, scale = rq.kernel_args
        bad = _requant_kernel(
            acc2,
            off,
            mult,
            shift,
            scale,
            _KINDS[rq.kind],
            rq.rounding == "single",
            rq.accumulator == "int64",
            rq.zero_point,
            rq.act_min,
            rq.act_max,
            out,
        )
        if bad >= 0:
            value = int(acc2.reshape(-1)[bad]) + int(off[bad % cols if off.size > 1 else 0])
            raise ExactnessError(
                f"{what}: int64 accumulator {value} at flat index {bad} is outside [-2^47, 2^47), "
                "the domain of TFLM / CMSIS-NN's 16x8 requantization"
            )
    return out.reshape(acc.shape)


def requantize(
    acc: ArrayLike, rq: RequantParams, offset: ArrayLike | None = None, what: str = "requantize"
) -> np.ndarray:
    """Requantize integer accumulators (last axis = channels) to ``rq.out_dtype`` codes.

    ``offset`` (int64, per channel or scalar) is added to ``acc`` first, exactly, before the
    int32 wrap of the fixed-point kinds (e.g. the bias, or CMSIS-NN kernel sums).
    """
    a = np.asarray(acc)
    if a.dtype.kind not in "iu":
        raise UnsupportedError(f"{what}: accumulators must be integers, got dtype {a.dtype}")
    if a.dtype == np.uint64 and a.size and int(a.max()) > S64_ACC_MAX:
        raise ExactnessError(f"{what}: uint64 accumulator {int(a.max())} does not fit in int64")
    return requantize_into(a, rq, None if offset is None else np.asarray(offset), what)


ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def activation_range(
    activation: str, scale: float, zero_point: int, out_dtype: str, what: str = "activation"
) -> tuple[int, int]:
    """TFLite ``CalculateActivationRangeQuantized``: the fused activation as a code range.

    ``q(f) = zero_point + round_half_away(float32(f) / float32(scale))`` (float32 division);
    RELU: ``[max(qmin, q(0)), qmax]``; RELU6: ``[max(qmin, q(0)), min(qmax, q(6))]``;
    RELU_N1_TO_1: ``[max(qmin, q(-1)), min(qmax, q(1))]``; NONE: ``[qmin, qmax]``. A bound whose
    ``f / scale`` leaves int32 is undefined behaviour in the peer's C cast: refused here.
    """
    if out_dtype not in OUT_RANGES:
        raise UnsupportedError(f"{what}: output dtype {out_dtype!r} has no integer range")
    qmin, qmax = OUT_RANGES[out_dtype]
    if activation not in ACTIVATIONS:
        raise UnsupportedError(
            f"{what}: fused activation {activation!r} is not supported; use one of {ACTIVATIONS}"
        )

    def q(f: float) -> int:
        v = float(np.float32(f) / np.float32(scale))
        r = np.floor(abs(v) + 0.5)  # exact in float64: |v| is a float32 value
        if not r < 2.0**31:
            raise QuantSpecError(
                f"{what}: {activation} bound {f} / output scale {scale!r} = {v!r} does not fit "
                "in int32 (undefined in the peer's cast)"
            )
        return int(zero_point) + int(r if v >= 0 else -r)

    if activation == "NONE":
        return qmin, qmax
    if activation == "RELU":
        return max(qmin, q(0.0)), qmax
    if activation == "RELU6":
        return max(qmin, q(0.0)), min(qmax, q(6.0))
    return max(qmin, q(-1.0)), min(qmax, q(1.0))
