"""SOFTMAX and LOG_SOFTMAX: TFLite Micro's integer kernels; I-BERT / I-ViT under their profiles.

Peer semantics (tflite-micro reference kernels, ``softmax_common.cc`` / ``reference/softmax.h`` /
``reference/log_softmax.h``; the same arithmetic as CMSIS-NN ``arm_softmax_s8``):

int8 SOFTMAX, the gemmlowp path (int8 in; int8 out with scale 1/256 and zero point -128, or int16
out with scale 1/65536 and zero point -32768)
    Prepare: ``m = min(beta * s_in * 2^26, 2^31 - 1)`` (``2^30 - 1`` with single rounding) in
    double; ``(M, ls) = QuantizeMultiplierGreaterThanOne(m)``;
    ``diff_min = -floor(31 * 2^26 / 2^ls)`` (``CalculateInputRadius(5, ls)``).
    Per row of the last axis, with ``d = x - max(row)``; elements with ``d < diff_min`` are
    skipped (they output the minimum code):

    1. ``z = MultiplyByQuantizedMultiplierGreaterThanOne(d, M, ls)``: ``d`` in Q5.26;
    2. ``e = exp_on_negative_values(z)`` in Q0.31;
    3. ``S = sum RoundingDivideByPOT(e, 12)``: the sum of exponentials in Q12.19 (int32);
    4. ``h = clz(S)``; ``r = one_over_one_plus_x_for_x_in_0_1((S << h) - 2^31)`` (``GetReciprocal``:
       ``1 / (S / 2^(31-h))`` in Q0.31);
    5. ``y = clamp(RoundingDivideByPOT(SRDHM(r, e), 12 - h + 31 - bits) + qmin)`` for an output
       of ``bits`` bits (``35 - h`` for int8, ``27 - h`` for int16).

    The exponential depends only on ``d``, which takes 256 values for int8 input: prepare
    tabulates ``e`` (:attr:`SoftmaxS8Params.exp_q31`) and its Q12.19 contribution
    (:attr:`SoftmaxS8Params.exp_q12`), and :func:`softmax_s8` evaluates steps 1-3 by table
    lookup. :func:`softmax_s8_direct` evaluates them per element, literally as TFLM does; the
    two are bit-identical (checked in tests). The generated C uses the tables.

    **Long rows (the s8 hazard).** When ``S >= 2^28`` (at least 512 elements at the row maximum)
    the final exponent ``35 - h`` is 32 or more: gemmlowp's ``RoundingDivideByPOT`` is undefined
    there (shift of an int32 by >= 32) and the TFLM reference aborts the process
    (``TFLITE_CHECK(0 <= exponent && exponent <= 31)``, measured: SIGABRT). When ``S >= 2^31`` the
    Q12.19 sum itself overflows int32 (4096 elements at the maximum), also undefined.
    ``long_rows="raise"`` (default) raises :class:`ExactnessError` naming the row.
    ``long_rows="safe"`` is refq's defined variant, which its generated C implements: ``S`` is
    kept exact in 64 bits and normalized with ``h = 32 - bitlength(S)`` (``h <= 0`` when
    ``S >= 2^31``, the dropped low bits truncated); a final exponent above 31 gives 0, which *is*
    the rounded value: ``SRDHM(r, e) < 2^31``, so ``SRDHM(r, e) / 2^32 < 1/2``. Every
    probability of such a row is at most ``1/512``, i.e. at most half an int8 output step.
    Wherever the reference is defined the two modes are identical.

int16 SOFTMAX (int16 in, int16 out with scale 1/32768, zero point 0)
    Prepare: ``(M, shift) = QuantizeMultiplier(s_in * beta / (10 / 65535))`` (input differences
    ``[-65535, 0]`` cover ``[-10, 0]``). Per row: ``d = x - max``;
    ``v = clamp(MultiplyByQuantizedMultiplier(d, M, shift) + 32767, -32768, 32767)``;
    ``e = LUTLookup(v, exp_lut)`` (Q0.15); ``S = sum e`` (int32, Q16.15); ``h = clz(S)``;
    ``u = clamp((((S << (h - 1)) + 2^13) >> 14) - 98304, -32768, 32767)``;
    ``r = LUTLookup(u, one_over_one_plus_x_lut)``;
    ``y = clamp((e * r + 2^(30 - h)) >> (31 - h), 0, 32767)``.
    ``LUTLookup(v, T) = T[i] + ((T[i+1] - T[i]) * (v & 127) + 64) >> 7`` with
    ``i = 256 + (v >> 7)``, on the peer's int16 types.
    **The tables.** TFLM fills both 513-entry tables at prepare time with ``gen_lut`` in float32,
    calling ``std::exp(float)`` (libm ``expf``) for the exp table: bit-exactness with a peer
    therefore depends on that peer's libm. refq ships the tables as data
    (``refq/data/softmax_s16_tables.npz``) computed once by :func:`tflm_gen_lut_int16` with exp
    evaluated in float64 and rounded to float32 (the correctly rounded ``expf``); on the machine
    that produced them this equals glibc 2.36's ``expf`` at all 1025 sample points, and the
    1/(1+x) table involves no libm call at all. LiteRT builds the same tables in double
    (``gen_lut<double>``, :func:`gen_lut_int16_double`): its 1/(1+x) table differs from TFLM's in
    two entries; refq ships both (attr ``int16_tables``: ``tflm`` default, ``litert``).
    tests/test_kernels_softmax.py re-derives all four.

int8 LOG_SOFTMAX (int8 in; int8 out with scale 16/256, zero point 127)
    Prepare: as SOFTMAX with ``beta = 1``; also
    ``(Mr, sr) = QuantizeMultiplierSmallerThanOneExp(2^(31 - ls) / M)``. Per row: ``S`` as above
    (steps 1-3 with ``MultiplyByQuantizedMultiplier``); ``L = ln(S)`` in Q5.26 (TFLite's
    fixed-point log, :func:`refq.fixedpoint.log_x_for_x_greater_than_or_equal_to_1`);
    ``t = max(diff_min - 1, MultiplyByQuantizedMultiplier(L + INT32_MIN, Mr, sr))``; elements with
    ``d > t`` output ``clamp(RoundingDivideByPOT(z - L, 22) + 127)``, the others -128.
    A Q12.19 sum ``S >= 2^31`` (4096 elements at the maximum) overflows int32 in the peer:
    refq raises :class:`ExactnessError`.

Profiles: ``Profile.rounding`` selects ``MultiplyByQuantizedMultiplier`` and the cap: double
rounding under ``tflm``, ``cmsis-nn`` and ``litert-ref``, single rounding (and the ``2^30 - 1``
cap) under ``cmsis-nn-single``. Measured against LiteRT 2.3's reference kernels: int8 SOFTMAX and
LOG_SOFTMAX, and int16 SOFTMAX with ``int16_tables="litert"`` (double tables), match under
``litert-ref`` and ``tflm`` alike. Under the ``ibert`` and ``ivit`` profiles the SOFTMAX op runs
:func:`refq.kernels.ibert.ibert_softmax` / :func:`refq.kernels.ivit.shiftmax` instead (output
scale ``2^-k``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import numba
import numpy as np
from numpy.typing import NDArray

from refq import fixedpoint as fp
from refq.errors import ExactnessError, QuantSpecError, ShapeError, UnsupportedError
from refq.kernels.registry import register
from refq.profiles import Profile, Rounding

LongRows = Literal["raise", "safe"]
LONG_ROWS: tuple[str, ...] = ("raise", "safe")

SCALED_DIFF_INTEGER_BITS = 5
"""The rescaled input difference is Q5.26: exp(-16) is negligible, exp(-8) is not."""
ACCUMULATION_INTEGER_BITS = 12
"""The sum of exponentials is Q12.19: 4096 elements at the row maximum fit."""
LOG_OUTPUT_INTEGER_BITS = 4
LUT_INT16_SIZE = 513
S16_TABLES_FILE = "softmax_s16_tables.npz"

_INT32_MIN = fp.INT32_MIN


# ---------------------------------------------------------------------------------------------
# Prepare-time helpers (float math on the peers' types, as TFLM's Prepare does)
# ---------------------------------------------------------------------------------------------


def input_beta_multiplier(beta: float, input_scale: float, rounding: Rounding) -> tuple[int, int]:
    """TFLite ``PreprocessSoftmaxScaling(beta, s_in, 5)``: ``(M, left_shift)``.

    ``m = min(beta * s_in * 2^26, cap)`` in double, ``cap = 2^31 - 1`` (``2^30 - 1`` in
    single-rounding builds), then ``QuantizeMultiplierGreaterThanOne(m)``. The peer asserts
    ``m > 1``; refq raises :class:`QuantSpecError`.
    """
    cap = float((1 << 30) - 1) if rounding == "single" else float((1 << 31) - 1)
    real = min(float(beta) * float(input_scale) * float(1 << (31 - SCALED_DIFF_INTEGER_BITS)), cap)
    if not real > 1.0:
        raise QuantSpecError(
            f"softmax: beta * input_scale * 2^26 = {real!r} must be > 1 (beta={beta!r}, "
            f"input scale={input_scale!r}); TFLite's QuantizeMultiplierGreaterThanOne rejects it"
        )
    return fp.quantize_multiplier_greater_than_one(real, rounding)


def input_radius(left_shift: int, integer_bits: int = SCALED_DIFF_INTEGER_BITS) -> int:
    """TFLite ``CalculateInputRadius(integer_bits, left_shift)``:
    ``floor((2^ib - 1) * 2^(31 - ib) / 2^left_shift)`` (exact: powers of two in double)."""
    return ((1 << integer_bits) - 1) * (1 << (31 - integer_bits)) >> left_shift


def _rescale_diffs(
    d: np.ndarray, multiplier: int, left_shift: int, rounding: Rounding
) -> np.ndarray:
    """``MultiplyByQuantizedMultiplierGreaterThanOne(d, M, ls)`` for admitted diffs ``d``.

    Double rounding: ``SRDHM(d * 2^ls, M)``; ``|d| <= radius`` guarantees ``d * 2^ls`` fits int32
    (``ls`` may be 31 when the multiplier is capped; then only ``d = 0`` is admitted).
    Single rounding: ``MultiplyByQuantizedMultiplier(d, M, ls)`` (``ls <= 30`` there).
    """
    d = np.asarray(d, dtype=np.int64)
    if rounding == "double":
        return np.asarray(fp.srdhm(d << left_shift, multiplier), dtype=np.int64)
    return np.asarray(
        fp.multiply_by_quantized_multiplier(d, multiplier, left_shift, "single"), np.int64
    )


def _diff_tables(
    multiplier: int, left_shift: int, diff_min: int, rounding: Rounding
) -> tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.int32]]:
    """For ``d = -i``, ``i = 0..255``: rescaled diff (Q5.26), exp (Q0.31), exp in Q12.19.

    Entries with ``d < diff_min`` are 0 in all three: such elements are skipped by the peer, and
    a zero exponential contributes nothing to the sum and outputs the minimum code, exactly
    like a skipped element.
    """
    d = -np.arange(256, dtype=np.int64)
    admitted = d >= diff_min
    z = np.zeros(256, dtype=np.int64)
    z[admitted] = _rescale_diffs(d[admitted], multiplier, left_shift, rounding)
    e = np.where(admitted, fp.exp_on_negative_values(z, SCALED_DIFF_INTEGER_BITS), 0)
    e12 = np.asarray(fp.rounding_divide_by_pot(e, ACCUMULATION_INTEGER_BITS))
    return z.astype(np.int32), e.astype(np.int32), e12.astype(np.int32)


def _float32(v: float) -> float:
    """A value as the float32 a .tflite file stores (beta, scales), widened back to double."""
    return float(np.float32(v))


# ---------------------------------------------------------------------------------------------
# int8 SOFTMAX (gemmlowp path)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoftmaxS8Params:
    """Constants of int8-input SOFTMAX (TFLM ``SoftmaxParams`` plus refq's tables).

    ``output_bits`` is 8 (int8 out, zero point -128) or 16 (int16 out, zero point -32768);
    ``exp_q31[i]`` / ``exp_q12[i]`` are the exponential of ``d = -i`` in Q0.31 and its Q12.19
    sum contribution (0 where ``-i < diff_min``).
    """

    input_multiplier: int
    input_left_shift: int
    diff_min: int
    output_bits: int
    exp_q31: NDArray[np.int32]
    exp_q12: NDArray[np.int32]
    rounding: Rounding = "double"
    long_rows: LongRows = "raise"
    name: str = "softmax"

    @property
    def output_zero_point(self) -> int:
        return -(1 << (self.output_bits - 1))

    @property
    def output_dtype(self) -> np.dtype:
        return np.dtype(np.int8 if self.output_bits == 8 else np.int16)


def prepare_softmax_s8(
    input_scale: float,
    beta: float = 1.0,
    *,
    output_bits: int = 8,
    rounding: Rounding = "double",
    long_rows: LongRows = "raise",
    name: str = "softmax",
) -> SoftmaxS8Params:
    """Derive :class:`SoftmaxS8Params` from the input scale and beta (TFLM Prepare)."""
    if output_bits not in (8, 16):
        raise UnsupportedError(
            f"{name}: int8 softmax outputs int8 or int16, got {output_bits} bits"
        )
    if long_rows not in LONG_ROWS:
        raise UnsupportedError(f"{name}: long_rows={long_rows!r}; use one of {LONG_ROWS}")
    multiplier, left_shift = input_beta_multiplier(beta, input_scale, rounding)
    diff_min = -input_radius(left_shift)
    _, e31, e12 = _diff_tables(multiplier, left_shift, diff_min, rounding)
    return SoftmaxS8Params(
        multiplier, left_shift, diff_min, output_bits, e31, e12, rounding, long_rows, name
    )


def _rows(x: np.ndarray, dtype: type, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != dtype:
        raise ShapeError(f"{what}: input must be {np.dtype(dtype).name}, got {arr.dtype}")
    if arr.ndim == 0 or arr.shape[-1] == 0:
        raise ShapeError(f"{what}: input needs a non-empty last axis, got shape {arr.shape}")
    return arr.reshape(-1, arr.shape[-1]).astype(np.int32)


def _row_index(flat_row: int, shape: tuple[int, ...]) -> str:
    lead = shape[:-1]
    if not lead:
        return "row 0"
    idx = np.unravel_index(flat_row, lead)
    return f"row {tuple(int(i) for i in idx)}"


def _normalize_sum(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``h = 32 - bitlength(S)`` and ``S`` shifted to ``[2^31, 2^32)`` (truncating if ``h < 0``).

    For ``S < 2^31`` this is TFLite's ``GetReciprocal`` normalization (``h = clz(S)``).
    """
    bits = np.frexp(s.astype(np.float64))[1].astype(np.int64)  # exact: S < 2^53
    h = 32 - bits
    shifted = np.where(h >= 0, s << np.maximum(h, 0), s >> np.maximum(-h, 0))
    return h, shifted


@numba.njit(cache=True, nogil=True)
def _table_row_sums(x, valid, use_valid, exp_q12):  # pragma: no cover - compiled
    """Row maxima and exact Q12.19 sums of the tabulated exponentials (int64)."""
    rows, n = x.shape
    maxima = np.empty(rows, dtype=np.int64)
    sums = np.zeros(rows, dtype=np.int64)
    for r in range(rows):
        top = np.int64(-(1 << 30))
        for c in range(n):
            if (not use_valid or valid[r, c]) and x[r, c] > top:
                top = np.int64(x[r, c])
        maxima[r] = top
        total = np.int64(0)
        for c in range(n):
            if not use_valid or valid[r, c]:
                total += exp_q12[top - x[r, c]]
        sums[r] = total
    return maxima, sums


@numba.njit(cache=True, nogil=True)
def _table_outputs(
    x, valid, use_valid, maxima, exp_q31, recip, exponent, qmin, qmax
):  # pragma: no cover - compiled
    """``clamp(RDBPOT(SRDHM(r, e), exponent) + qmin)`` per element (0 where exponent > 31).

    Both SRDHM operands are non-negative here (``r`` in (2^30, 2^31], ``e`` >= 0), so SRDHM is
    ``(r e + 2^30) >> 31`` without its saturating case, and RDBPOT of a non-negative value is
    ``(v >> s) + ((v & (2^s - 1)) > (2^s - 1) >> 1)``.
    """
    rows, n = x.shape
    out = np.empty((rows, n), dtype=np.int32)
    for r in range(rows):
        s = exponent[r]
        mask = (np.int64(1) << min(s, 31)) - 1
        for c in range(n):
            if use_valid and not valid[r, c]:
                out[r, c] = qmin
                continue
            q = np.int64(0)
            if s <= 31:
                prod = (recip[r] * np.int64(exp_q31[maxima[r] - x[r, c]]) + (1 << 30)) >> 31
                q = (prod >> s) + (1 if (prod & mask) > (mask >> 1) else 0)
            v = q + qmin
            out[r, c] = qmax if v > qmax else v
    return out


def _reciprocal_and_exponent(
    s: np.ndarray, p: SoftmaxS8Params, n_valid: np.ndarray, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: ``GetReciprocal`` of the Q12.19 sum and the final exponent; checks long rows."""
    h, shifted = _normalize_sum(s)
    exponent = ACCUMULATION_INTEGER_BITS - h + 31 - p.output_bits
    undefined = (s > fp.INT32_MAX) | (exponent > 31)
    if p.long_rows == "raise" and undefined.any():
        r = int(np.argmax(undefined))
        why = (
            f"the Q12.19 sum of exponentials {int(s[r])} overflows int32"
            if s[r] > fp.INT32_MAX
            else f"the final RoundingDivideByPOT exponent 12 - clz(S) + 31 - {p.output_bits} = "
            f"{int(exponent[r])} exceeds 31 (sum of exponentials S = {int(s[r])} >= 2^28 in "
            "Q12.19)"
        )
        raise ExactnessError(
            f"SOFTMAX {p.name!r}: {_row_index(r, shape)} (length {int(n_valid[r])}): {why}; the "
            "TFLite reference is undefined there (TFLM aborts). Set long_rows='safe' for refq's "
            "defined variant (output zero point for such rows, the correctly rounded value)."
        )
    recip = np.asarray(fp.one_over_one_plus_x_for_x_in_0_1(shifted - (1 << 31)), dtype=np.int64)
    return recip, exponent


def softmax_rows_s8(
    x2d: np.ndarray,
    p: SoftmaxS8Params,
    valid: np.ndarray | None = None,
    *,
    shape: tuple[int, ...] | None = None,
    direct: bool = False,
) -> NDArray[np.int64]:
    """int8 softmax of each row of ``x2d`` (int codes [R, N]); returns output codes [R, N].

    ``valid`` (bool [R, N]) excludes elements entirely (a causal mask): they neither set the row
    maximum nor enter the sum, and output the minimum code. ``shape`` names rows in errors.
    The default evaluates steps 1-3 by table lookup (compiled loops); ``direct=True`` evaluates
    every step per element with :mod:`refq.fixedpoint`, literally as the peer does.
    """
    x2d = np.asarray(x2d)
    shape = shape if shape is not None else x2d.shape
    if valid is not None and not valid.any(axis=-1).all():
        raise ShapeError(f"{p.name}: a softmax row has no valid element")
    n_valid = np.full(x2d.shape[0], x2d.shape[-1]) if valid is None else valid.sum(axis=-1)
    lo, hi = p.output_zero_point, -p.output_zero_point - 1
    if not direct:
        x32 = x2d.astype(np.int32, copy=False)
        mask = np.zeros((1, 1), np.bool_) if valid is None else np.ascontiguousarray(valid)
        maxima, s = _table_row_sums(x32, mask, valid is not None, p.exp_q12.astype(np.int64))
        recip, exponent = _reciprocal_and_exponent(s, p, n_valid, shape)
        out = _table_outputs(
            x32, mask, valid is not None, maxima, p.exp_q31, recip, exponent, lo, hi
        )
        return out.astype(np.int64)
    x64 = x2d.astype(np.int64)
    if valid is None:
        d = x64 - x64.max(axis=-1, keepdims=True)
        admitted = d >= p.diff_min
    else:
        d = x64 - np.where(valid, x64, -(1 << 20)).max(axis=-1, keepdims=True)
        admitted = (d >= p.diff_min) & valid
    z = np.zeros_like(d)
    z[admitted] = _rescale_diffs(d[admitted], p.input_multiplier, p.input_left_shift, p.rounding)
    e = np.where(admitted, fp.exp_on_negative_values(z, SCALED_DIFF_INTEGER_BITS), 0)
    s = np.asarray(fp.rounding_divide_by_pot(e, ACCUMULATION_INTEGER_BITS), np.int64).sum(-1)
    recip, exponent = _reciprocal_and_exponent(s, p, n_valid, shape)
    prod = np.asarray(fp.srdhm(recip[:, None], e), dtype=np.int64)
    quot = np.asarray(
        fp.rounding_divide_by_pot(prod, np.minimum(exponent, 31)[:, None]), dtype=np.int64
    )
    quot = np.where((exponent > 31)[:, None], 0, quot)  # the safe variant's defined value
    out = np.clip(quot + lo, lo, hi)
    return out if valid is None else np.where(valid, out, lo)


def softmax_s8(x: np.ndarray, p: SoftmaxS8Params) -> np.ndarray:
    """TFLM int8 SOFTMAX over the last axis (tabulated exponentials); int8 or int16 output."""
    rows = _rows(x, np.int8, f"SOFTMAX {p.name!r}")
    out = softmax_rows_s8(rows, p, shape=np.shape(x))
    return out.astype(p.output_dtype).reshape(np.shape(x))


def softmax_s8_direct(x: np.ndarray, p: SoftmaxS8Params) -> np.ndarray:
    """:func:`softmax_s8` with the exponentials computed per element, as the peer's loop does."""
    rows = _rows(x, np.int8, f"SOFTMAX {p.name!r}")
    out = softmax_rows_s8(rows, p, shape=np.shape(x), direct=True)
    return out.astype(p.output_dtype).reshape(np.shape(x))


# ---------------------------------------------------------------------------------------------
# int16 SOFTMAX (LUT path)
# ---------------------------------------------------------------------------------------------


def _round_half_away_f32(v: np.ndarray) -> np.ndarray:
    """``std::round`` of float32 values (exact: done in float64, where ``|v| + 0.5`` is exact)."""
    w = v.astype(np.float64)
    return (np.sign(w) * np.floor(np.abs(w) + 0.5)).astype(np.float32)


def tflm_gen_lut_int16(
    func: Callable[[np.ndarray], np.ndarray],
    input_min: float,
    input_max: float,
    output_min: float,
    output_max: float,
) -> NDArray[np.int16]:
    """TFLite ``gen_lut<float, int16_t, int16_t>``: a 513-entry int16 table of ``func``.

    In float32 throughout (``func`` maps float32 arrays to float32): ``step = (max - min) / 512``;
    for ``i < 512`` with ``a_i = min + i * step``: ``v = round(func(a_i) * k)`` with
    ``k = 65536 / (out_max - out_min)``; the interpolation error at the midpoint
    ``err = round((func(a_{i+1}) * k + v) / 2) - round(func(a_i + step/2) * k)``;
    ``T[i] = clamp(v - round(err / 2))``; ``T[512] = clamp(round(func(max) * k))``.
    ``round`` is ``std::round`` (half away from zero).
    """
    f32 = np.float32
    lo, hi = f32(input_min), f32(input_max)
    step = f32((hi - lo) / f32(512))
    half = f32(step / f32(2))
    k = f32(f32(65536) / f32(f32(output_max) - f32(output_min)))
    i = np.arange(512, dtype=np.float32)
    a = (lo + i * step).astype(np.float32)
    val = func(a).astype(np.float32)
    mid = func((a + half).astype(np.float32)).astype(np.float32)
    nxt = func((lo + (i + f32(1)) * step).astype(np.float32)).astype(np.float32)
    sample = _round_half_away_f32((val * k).astype(np.float32))
    interp = _round_half_away_f32(
        (((nxt * k).astype(np.float32) + sample) / f32(2)).astype(np.float32)
    )
    midpoint = _round_half_away_f32((mid * k).astype(np.float32))
    bias = _round_half_away_f32(((interp - midpoint) / f32(2)).astype(np.float32))
    table = np.clip(sample - bias, -32768, 32767)
    last = np.clip(
        _round_half_away_f32((func(np.array([hi], np.float32)) * k).astype(np.float32)),
        -32768,
        32767,
    )
    return np.concatenate([table, last]).astype(np.int16)


def exp_float32(v: np.ndarray) -> np.ndarray:
    """``expf`` as the correctly rounded float32 of the float64 exponential."""
    return np.exp(v.astype(np.float64)).astype(np.float32)


def one_over_one_plus_x_float32(v: np.ndarray) -> np.ndarray:
    """``1.0f / (1.0f + v)`` in float32 (IEEE, no libm)."""
    v = v.astype(np.float32)
    return (np.float32(1) / (np.float32(1) + v)).astype(np.float32)


def _round_half_away(v: float) -> float:
    return math.copysign(math.floor(abs(v) + 0.5), v)


def gen_lut_int16_double(
    func: Callable[[float], float],
    input_min: float,
    input_max: float,
    output_min: float,
    output_max: float,
) -> NDArray[np.int16]:
    """``gen_lut<double, int16_t, int16_t>``: :func:`tflm_gen_lut_int16` in double precision
    (LiteRT's int16 SOFTMAX builds its tables this way)."""
    step = (input_max - input_min) / 512
    half = step / 2
    k = 65536 / (output_max - output_min)
    out = []
    for i in range(512):
        sample = _round_half_away(func(input_min + i * step) * k)
        nxt = func(input_min + (i + 1) * step) * k
        interp = _round_half_away((nxt + sample) / 2)
        mid = _round_half_away(func(input_min + i * step + half) * k)
        out.append(min(max(sample - _round_half_away((interp - mid) / 2), -32768), 32767))
    out.append(min(max(_round_half_away(func(input_max) * k), -32768), 32767))
    return np.array(out, dtype=np.int16)


S16_TABLE_SETS: dict[str, tuple[str, str]] = {
    "tflm": ("exp", "one_over_one_plus_x"),
    "litert": ("exp_double", "one_over_one_plus_x_double"),
}
"""int16 softmax table pairs: TFLM fills them in float32, LiteRT in double (they differ in two
entries of the 1/(1+x) table)."""


def generate_s16_tables() -> dict[str, NDArray[np.int16]]:
    """The int16-softmax tables: ``exp`` on [-10, 0] and ``1/(1+x)`` on [0, 1], in float32
    (TFLM) and in double (``*_double``, LiteRT)."""
    return {
        "exp": tflm_gen_lut_int16(exp_float32, -10.0, 0.0, -1.0, 1.0),
        "one_over_one_plus_x": tflm_gen_lut_int16(one_over_one_plus_x_float32, 0.0, 1.0, -1.0, 1.0),
        "exp_double": gen_lut_int16_double(math.exp, -10.0, 0.0, -1.0, 1.0),
        "one_over_one_plus_x_double": gen_lut_int16_double(
            lambda v: 1.0 / (1.0 + v), 0.0, 1.0, -1.0, 1.0
        ),
    }


@cache
def s16_tables() -> dict[str, NDArray[np.int16]]:
    """The shipped tables (``refq/data/softmax_s16_tables.npz``), read once."""
    with resources.files("refq.data").joinpath(S16_TABLES_FILE).open("rb") as fh:
        data = np.load(fh)
        names = [n for pair in S16_TABLE_SETS.values() for n in pair]
        tables = {k: np.array(data[k], dtype=np.int16) for k in names}
    for k, t in tables.items():
        if t.shape != (LUT_INT16_SIZE,):
            raise ExactnessError(f"{S16_TABLES_FILE}: table {k!r} has shape {t.shape}, not (513,)")
        t.setflags(write=False)
    return tables


def lut_lookup_int16(v: np.ndarray, table: np.ndarray) -> NDArray[np.int64]:
    """TFLite ``LUTLookup(int16, const int16*)``: linear interpolation in a 513-entry table.

    ``i = 256 + (v >> 7)``, ``o = v & 127``; ``slope = int16(T[i+1] - T[i])``;
    ``int16(T[i] + ((slope * o + 64) >> 7))`` (arithmetic shift: floor).
    """
    v = np.asarray(v, dtype=np.int64)
    t = np.asarray(table, dtype=np.int64)
    i = 256 + (v >> 7)
    base = t[i]
    slope = fp.wrap(t[i + 1] - base, 16)
    return fp.wrap(base + ((slope * (v & 127) + 64) >> 7), 16)


@dataclass(frozen=True)
class SoftmaxS16Params:
    """Constants of int16 SOFTMAX (TFLM): input multiplier and shift, the two 513-entry LUTs."""

    input_multiplier: int
    input_shift: int
    exp_lut: NDArray[np.int16]
    one_over_one_plus_x_lut: NDArray[np.int16]
    rounding: Rounding = "double"
    name: str = "softmax"


def prepare_softmax_s16(
    input_scale: float,
    beta: float = 1.0,
    *,
    rounding: Rounding = "double",
    tables: str = "tflm",
    name: str = "softmax",
) -> SoftmaxS16Params:
    """TFLM Prepare for int16 SOFTMAX: ``QuantizeMultiplier(s_in * beta / (10 / 65535))``;
    ``tables`` = ``tflm`` (float32 tables) or ``litert`` (double tables)."""
    if tables not in S16_TABLE_SETS:
        raise UnsupportedError(
            f"{name}: int16 tables {tables!r}; use one of {tuple(S16_TABLE_SETS)}"
        )
    real = float(input_scale) * float(beta) / (10.0 / 65535.0)
    if not real > 0.0:
        raise QuantSpecError(f"{name}: input scale * beta = {real!r} must be positive")
    multiplier, shift = fp.quantize_multiplier(real, rounding)
    if not -31 <= shift <= 30:
        raise QuantSpecError(
            f"{name}: int16 softmax multiplier {real!r} gives shift {shift} outside [-31, 30]"
        )
    t = s16_tables()
    exp_name, recip_name = S16_TABLE_SETS[tables]
    return SoftmaxS16Params(multiplier, shift, t[exp_name], t[recip_name], rounding, name)


def softmax_rows_s16(
    x2d: np.ndarray,
    p: SoftmaxS16Params,
    valid: np.ndarray | None = None,
    *,
    shape: tuple[int, ...] | None = None,
) -> NDArray[np.int64]:
    """int16 softmax of each row of ``x2d`` (int codes [R, N]); output codes [R, N].

    ``valid`` (bool [R, N]) excludes elements as in :func:`softmax_rows_s8` (output 0).
    """
    x2d = np.asarray(x2d, dtype=np.int64)
    if valid is None:
        d = x2d - x2d.max(axis=-1, keepdims=True)
    else:
        if not valid.any(axis=-1).all():
            raise ShapeError(f"{p.name}: a softmax row has no valid element")
        d = x2d - np.where(valid, x2d, -(1 << 20)).max(axis=-1, keepdims=True)
        d = np.where(valid, d, 0)
    scaled = np.asarray(
        fp.multiply_by_quantized_multiplier(d, p.input_multiplier, p.input_shift, p.rounding),
        dtype=np.int64,
    )
    e = lut_lookup_int16(np.clip(scaled + 32767, -32768, 32767), p.exp_lut)
    if valid is not None:
        e = np.where(valid, e, 0)
    s = e.sum(axis=-1)
    if (s > fp.INT32_MAX).any():
        r = int(np.argmax(s > fp.INT32_MAX))
        where = _row_index(r, shape if shape is not None else x2d.shape)
        raise ExactnessError(
            f"SOFTMAX {p.name!r}: {where}: the int32 sum of Q0.15 exponentials ({int(s[r])}) "
            "overflows; the TFLite reference is undefined there"
        )
    h = 32 - np.frexp(s.astype(np.float64))[1].astype(np.int64)  # clz(S), S >= 1
    shifted = ((s << (h - 1)) + (1 << 13)) >> 14
    u = np.clip(shifted - ((1 << 15) + (1 << 16)), -32768, 32767)
    recip = lut_lookup_int16(u, p.one_over_one_plus_x_lut)
    right = (31 - h)[:, None]
    out = np.clip((e * recip[:, None] + (np.int64(1) << (right - 1))) >> right, 0, 32767)
    return out if valid is None else np.where(valid, out, 0)


def softmax_s16(x: np.ndarray, p: SoftmaxS16Params) -> NDArray[np.int16]:
    """TFLM int16 SOFTMAX over the last axis (output scale 1/32768, zero point 0)."""
    rows = _rows(x, np.int16, f"SOFTMAX {p.name!r}")
    return softmax_rows_s16(rows, p, shape=np.shape(x)).astype(np.int16).reshape(np.shape(x))


# ---------------------------------------------------------------------------------------------
# int8 LOG_SOFTMAX
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogSoftmaxS8Params:
    """Constants of int8 LOG_SOFTMAX (TFLM ``LogSoftmaxOpData``) plus refq's tables.

    ``diff_q5[i]`` / ``exp_q12[i]``: rescaled diff (Q5.26) and Q12.19 exponential of ``d = -i``.
    """

    input_multiplier: int
    input_left_shift: int
    reverse_scaling_divisor: int
    reverse_scaling_right_shift: int
    diff_min: int
    diff_q5: NDArray[np.int32]
    exp_q12: NDArray[np.int32]
    rounding: Rounding = "double"
    name: str = "log_softmax"


LOG_SOFTMAX_OUTPUT_SCALE = 16.0 / 256
LOG_SOFTMAX_OUTPUT_ZERO_POINT = 127


def prepare_log_softmax_s8(
    input_scale: float, *, rounding: Rounding = "double", name: str = "log_softmax"
) -> LogSoftmaxS8Params:
    """TFLM Prepare (``PreprocessLogSoftmaxScalingExp`` with beta 1, ``CalculateInputRadius``)."""
    multiplier, left_shift = input_beta_multiplier(1.0, input_scale, rounding)
    reverse = float(1 << (31 - left_shift)) / float(multiplier)
    divisor, reverse_left = fp.quantize_multiplier_smaller_than_one(reverse, rounding)
    diff_min = -input_radius(left_shift)
    z, _, e12 = _diff_tables(multiplier, left_shift, diff_min, rounding)
    # LOG_SOFTMAX calls the general MultiplyByQuantizedMultiplier(d, M, ls); with ls >= 0 it is
    # the GreaterThanOne form tabulated by _diff_tables (RDBPOT by 0 is the identity).
    return LogSoftmaxS8Params(
        multiplier, left_shift, divisor, -reverse_left, diff_min, z, e12, rounding, name
    )


def log_softmax_rows_s8(
    x2d: np.ndarray, p: LogSoftmaxS8Params, *, shape: tuple[int, ...] | None = None
) -> NDArray[np.int64]:
    """int8 log-softmax of each row (int codes [R, N]); output codes (scale 1/16, zp 127)."""
    x2d = np.asarray(x2d, dtype=np.int64)
    d = x2d - x2d.max(axis=-1, keepdims=True)
    idx = -d
    z = p.diff_q5.astype(np.int64)[idx]
    s = p.exp_q12.astype(np.int64)[idx].sum(axis=-1)
    if (s > fp.INT32_MAX).any():
        r = int(np.argmax(s > fp.INT32_MAX))
        where = _row_index(r, shape if shape is not None else x2d.shape)
        raise ExactnessError(
            f"LOG_SOFTMAX {p.name!r}: {where} (length {x2d.shape[-1]}): the Q12.19 sum of "
            f"exponentials {int(s[r])} overflows int32 (more than 4096 elements near the row "
            "maximum); the TFLite reference is undefined there"
        )
    log_sum = np.asarray(
        fp.log_x_for_x_greater_than_or_equal_to_1(s, ACCUMULATION_INTEGER_BITS), dtype=np.int64
    )
    threshold = np.maximum(
        p.diff_min - 1,
        np.asarray(
            fp.multiply_by_quantized_multiplier(
                fp.wrap(log_sum + _INT32_MIN),
                p.reverse_scaling_divisor,
                -p.reverse_scaling_right_shift,
                p.rounding,
            ),
            dtype=np.int64,
        ),
    )
    taken = d > threshold[:, None]
    diff = z - log_sum[:, None]
    if (taken & (diff < _INT32_MIN)).any():
        r = int(np.argmax((taken & (diff < _INT32_MIN)).any(axis=-1)))
        raise ExactnessError(
            f"LOG_SOFTMAX {p.name!r}: {_row_index(r, shape or x2d.shape)}: Q5.26 difference "
            "overflows int32 (undefined in the reference)"
        )
    shift = 31 - SCALED_DIFF_INTEGER_BITS - LOG_OUTPUT_INTEGER_BITS
    y = np.asarray(fp.rounding_divide_by_pot(np.maximum(diff, _INT32_MIN), shift), np.int64) + 127
    return np.where(taken, np.clip(y, -128, 127), -128)


def log_softmax_s8(x: np.ndarray, p: LogSoftmaxS8Params) -> NDArray[np.int8]:
    """TFLM int8 LOG_SOFTMAX over the last axis (output scale 16/256, zero point 127)."""
    rows = _rows(x, np.int8, f"LOG_SOFTMAX {p.name!r}")
    return log_softmax_rows_s8(rows, p, shape=np.shape(x)).astype(np.int8).reshape(np.shape(x))


# ---------------------------------------------------------------------------------------------
# Graph adapters
# ---------------------------------------------------------------------------------------------


def _io(node: Any, tensors: Mapping[str, Any]) -> tuple[Any, Any]:
    if len(node.inputs) != 1 or len(node.outputs) != 1 or node.inputs[0] is None:
        raise ShapeError(f"{node.op} node {node.name!r} takes one input and one output")
    t_in, t_out = tensors[node.inputs[0]], tensors[node.outputs[0]]
    for t in (t_in, t_out):
        if not t.quantized:
            raise QuantSpecError(
                f"{node.op} node {node.name!r}: tensor {t.name!r} is not quantized"
            )
    return t_in, t_out


def _check_output(node: Any, t_out: Any, dtype: str, scale: float, zp: int, exact: bool) -> None:
    if t_out.dtype != dtype:
        raise UnsupportedError(
            f"{node.op} node {node.name!r}: output {t_out.name!r} must be {dtype} for this input "
            f"type, got {t_out.dtype}"
        )
    s, z = t_out.scalar_scale(), t_out.scalar_zero_point()
    ok = s == np.float32(scale) if exact else abs(s - scale) <= 0.001 * scale
    if not ok or z != zp:
        raise QuantSpecError(
            f"{node.op} node {node.name!r}: output {t_out.name!r} must have scale {scale!r} and "
            f"zero point {zp} (TFLite's fixed output quantization), got {s!r} and {z}"
        )


def prepare_softmax_node(node: Any, tensors: Mapping[str, Any], profile: Profile) -> Any:
    """SOFTMAX: TFLM arithmetic, or I-BERT / I-ViT under the ``ibert`` / ``ivit`` profiles."""
    t_in, t_out = _io(node, tensors)
    beta = _float32(node.attrs.get("beta", 1.0))
    long_rows = node.attrs.get("long_rows", "raise")
    if profile.nonlinear == "ibert":
        from refq.kernels.ibert import prepare_ibert_softmax

        return prepare_ibert_softmax(t_in, t_out, beta, name=node.name)
    if profile.nonlinear == "ivit":
        from refq.kernels.ivit import prepare_shiftmax

        return prepare_shiftmax(t_in, t_out, beta, name=node.name)
    s_in = t_in.scalar_scale()
    if t_in.dtype == "int8":
        if t_out.dtype == "int16":
            _check_output(node, t_out, "int16", 1.0 / 65536, -32768, exact=False)
            bits = 16
        else:
            _check_output(node, t_out, "int8", 1.0 / 256, -128, exact=True)
            bits = 8
        return prepare_softmax_s8(
            s_in,
            beta,
            output_bits=bits,
            rounding=profile.rounding,
            long_rows=long_rows,
            name=node.name,
        )
    if t_in.dtype == "int16":
        if t_in.scalar_zero_point() != 0:
            raise QuantSpecError(
                f"SOFTMAX node {node.name!r}: int16 input {t_in.name!r} must have zero point 0 "
                f"(TFLM checks it), got {t_in.scalar_zero_point()}"
            )
        _check_output(node, t_out, "int16", 1.0 / 32768, 0, exact=False)
        return prepare_softmax_s16(
            s_in,
            beta,
            rounding=profile.rounding,
            tables=str(node.attrs.get("int16_tables", "tflm")),
            name=node.name,
        )
    raise UnsupportedError(
        f"SOFTMAX node {node.name!r}: input {t_in.name!r} of type {t_in.dtype} (int8 or int16)"
    )


def run_softmax_node(params: Any, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    (x,) = inputs
    if isinstance(params, SoftmaxS8Params):
        return [softmax_s8(x, params)]
    if isinstance(params, SoftmaxS16Params):
        return [softmax_s16(x, params)]
    from refq.kernels.ibert import IBertSoftmaxParams, ibert_softmax_q
    from refq.kernels.ivit import ShiftmaxParams, shiftmax_q

    if isinstance(params, IBertSoftmaxParams):
        return [ibert_softmax_q(x, params)]
    if isinstance(params, ShiftmaxParams):
        return [shiftmax_q(x, params)]
    raise UnsupportedError(f"SOFTMAX: unknown params {type(params).__name__}")


def prepare_log_softmax_node(node: Any, tensors: Mapping[str, Any], profile: Profile) -> Any:
    t_in, t_out = _io(node, tensors)
    if t_in.dtype != "int8":
        raise UnsupportedError(
            f"LOG_SOFTMAX node {node.name!r}: input {t_in.name!r} must be int8 (as in TFLM), "
            f"got {t_in.dtype}"
        )
    _check_output(
        node, t_out, "int8", LOG_SOFTMAX_OUTPUT_SCALE, LOG_SOFTMAX_OUTPUT_ZERO_POINT, exact=True
    )
    return prepare_log_softmax_s8(t_in.scalar_scale(), rounding=profile.rounding, name=node.name)


def run_log_softmax_node(params: Any, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    (x,) = inputs
    return [log_softmax_s8(x, params)]


def float_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Float64 softmax (for error bounds in tests and docs)."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


register("SOFTMAX", prepare=prepare_softmax_node, run=run_softmax_node)
register("LOG_SOFTMAX", prepare=prepare_log_softmax_node, run=run_log_softmax_node)

__all__ = [
    "LOG_SOFTMAX_OUTPUT_SCALE",
    "LOG_SOFTMAX_OUTPUT_ZERO_POINT",
    "S16_TABLE_SETS",
    "LogSoftmaxS8Params",
    "SoftmaxS8Params",
    "SoftmaxS16Params",
    "float_softmax",
    "gen_lut_int16_double",
    "generate_s16_tables",
    "input_beta_multiplier",
    "input_radius",
    "log_softmax_rows_s8",
    "log_softmax_s8",
    "lut_lookup_int16",
    "prepare_log_softmax_s8",
    "prepare_softmax_s8",
    "prepare_softmax_s16",
    "s16_tables",
    "softmax_rows_s8",
    "softmax_rows_s16",
    "softmax_s8",
    "softmax_s8_direct",
    "softmax_s16",
    "tflm_gen_lut_int16",
]
