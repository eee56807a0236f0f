"""Fixed-point arithmetic of gemmlowp, TFLite / TFLite Micro and CMSIS-NN, vectorized and exact.

Every public function reproduces one scalar C function of a peer (named in its docstring) on
NumPy arrays, with the result the scalar C code returns for every element, including INT32_MIN
operands and shifts of +-31.

Conventions
-----------
* Inputs are Python ints, NumPy integer scalars or integer arrays of any dtype; array arguments
  broadcast together (a per-channel multiplier ``M[:, None]`` against ``x[C, N]``, or one shift
  per element). Values must lie in the range of the C parameter they stand for (int32 unless a
  docstring says otherwise): data out of range raises :class:`InvalidDataError`, a multiplier,
  shift, exponent or ``integer_bits`` out of the peer's domain raises :class:`QuantSpecError`,
  both naming the function, the argument, the value and its index.
* Outputs are int32 arrays (int16 for ``bits=16``), or a Python ``int`` when every argument is
  a scalar.
* Integer arithmetic only, in int64 intermediates. The one place where a float enters is
  ``quantize_multiplier*``, which, like the peers, turns a real multiplier into ``(M, shift)``
  at prepare time with ``frexp`` on a float64.
* Overflow. Where the peer's C overflows a signed type (undefined behaviour in C) refq returns
  the two's-complement wrap that gcc and clang produce on Arm and x86: ``x * (1 << left_shift)``
  in the double-rounding multiply, the int32 cast of an out-of-range single-rounding or int64
  result, CMSIS-NN's ``(result + 1) >> 1`` at INT32_MAX, ``Add``/``Sub``/``Neg`` inside gemmlowp's
  ``FixedPoint`` functions. Shifts whose amount is out of range are never executed: they raise.
  Generated C must avoid the UB and reproduce these values explicitly.

Rounding identities (used throughout; each is tested against exact arithmetic)
--------------------------------------------------------------------------------
* gemmlowp ``SaturatingRoundingDoublingHighMul`` adds ``2^30`` (product >= 0) or ``1 - 2^30``
  (product < 0) and divides by ``2^31`` truncating toward zero; for every integer product ``p``
  that is ``floor((p + 2^30) / 2^31)``, a round half up of ``a*b / 2^31``.
* ``RoundingDivideByPOT`` rounds ``x / 2^e`` half away from zero.
* Double rounding ``RDBPOT(SRDHM(x, M), r)`` and single rounding ``round_half_up(x*M / 2^(31+r))``
  (shift ``s = -r <= 0``, ``M >= 0``) differ by exactly one in a thin band around the single
  rounding's ties. With ``P = x*M``, ``D = 2^(31+r)``, ``R = (P + D/2) mod D``:
  double - single = +1 if ``P >= -2^30`` and ``R >= D - 2^30``; -1 if ``P < -2^30`` and
  ``R < 2^30``; 0 otherwise (proof: nested floors, ``floor(floor(a/b)/c) = floor(a/(bc))``).
  For ``s >= 0`` they are equal unless ``x * 2^s`` overflows int32.

Where the kernels use them
-------------------------
The formulas are in each kernel's docstring; tests/test_fixedpoint.py runs these functions
against the tflite-micro wheel directly, tests/test_peer_*.py the kernels.

* int8 TANH / LOGISTIC (:mod:`refq.kernels.activations`): :func:`gemmlowp_tanh` /
  :func:`gemmlowp_logistic` with 4 integer bits on ``MultiplyByQuantizedMultiplier(x - zp_in)``;
  int8 RSQRT: :func:`rsqrt_fixed_point`. (int16 TANH / LOGISTIC use no gemmlowp function: they
  interpolate TFLite's measured sigmoid table, see that module.)
* int8 SOFTMAX / LOG_SOFTMAX (:mod:`refq.kernels.softmax`): :func:`exp_on_negative_values` in
  Q5.26, :func:`one_over_one_plus_x_for_x_in_0_1`, :func:`log_x_for_x_greater_than_or_equal_to_1`.
* Every requantization: :func:`multiply_by_quantized_multiplier` (:mod:`refq.kernels.requant`).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from refq.errors import InvalidDataError, QuantSpecError, UnsupportedError
from refq.profiles import Rounding

INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
UINT32_MAX = (1 << 32) - 1
S64_ACC_MIN, S64_ACC_MAX = -(1 << 47), (1 << 47) - 1
"""TFLM / CMSIS-NN domain of the int64 accumulator of the 16x8 requantization."""

IntResult = NDArray[np.int32] | int


# ---------------------------------------------------------------------------------------------
# Argument handling
# ---------------------------------------------------------------------------------------------


def _where(arr: np.ndarray, mask: np.ndarray) -> tuple[int, str]:
    """First offending value and a description of its position."""
    flat = int(np.argmax(mask.ravel()))
    value = arr.ravel()[flat]
    if arr.ndim == 0:
        return int(value), ""
    index = tuple(int(i) for i in np.unravel_index(flat, arr.shape))
    return int(value), f" at index {index[0] if len(index) == 1 else index}"


def _ints(
    value: ArrayLike,
    name: str,
    func: str,
    lo: int,
    hi: int,
    error: type[Exception] = InvalidDataError,
) -> NDArray[np.int64]:
    """``value`` as an int64 array after checking it holds integers within ``[lo, hi]``."""
    arr = np.asarray(value)
    if arr.dtype.kind == "O":
        # Python ints beyond int64 (or mixed objects): check in Python, then convert.
        items = list(arr.ravel())
        for i, v in enumerate(items):
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise error(f"{func}: {name} must hold integers, got {v!r} at flat index {i}")
            if not lo <= int(v) <= hi:
                raise error(f"{func}: {name} = {int(v)} at flat index {i} is outside [{lo}, {hi}]")
        return np.array([int(v) for v in items], dtype=np.int64).reshape(arr.shape)
    if arr.dtype.kind not in "iu":
        raise error(f"{func}: {name} must be integers, got dtype {arr.dtype}")
    info = np.iinfo(arr.dtype)
    if (info.min < lo or info.max > hi) and arr.size:
        bad = (arr < lo) | (arr > hi)
        if bad.any():
            v, at = _where(arr, bad)
            raise error(f"{func}: {name} = {v}{at} is outside [{lo}, {hi}]")
    return arr.astype(np.int64, copy=False)


def _param(value: ArrayLike, name: str, func: str, lo: int, hi: int) -> NDArray[np.int64]:
    """A multiplier / shift / exponent parameter: out of the peer's domain is a spec error."""
    return _ints(value, name, func, lo, hi, QuantSpecError)


def _is_scalar(*values: ArrayLike) -> bool:
    return all(np.ndim(v) == 0 for v in values)


def _out(result: np.ndarray, scalar: bool, bits: int = 32) -> IntResult:
    """int32 (int16) array, or a Python int for all-scalar calls."""
    if scalar:
        return int(result)
    return result.astype(np.int16 if bits == 16 else np.int32)


def _wrap(x: np.ndarray, bits: int = 32) -> NDArray[np.int64]:
    """Two's-complement wrap of int64 values to ``bits`` (what a C cast / overflow produces)."""
    narrow = np.int16 if bits == 16 else np.int32 if bits == 32 else None
    if narrow is None:
        raise UnsupportedError(f"raw fixed-point width must be 16 or 32 bits, got {bits}")
    return np.asarray(x, dtype=np.int64).astype(narrow).astype(np.int64)


def wrap(x: ArrayLike, bits: int = 32) -> NDArray[np.int64]:
    """Two's-complement reduction of integer values to ``bits`` (16 or 32), as int64: what a C
    cast to ``int16_t`` / ``int32_t`` (or an overflowing add in that type) gives on gcc / clang."""
    return _wrap(np.asarray(x), bits)


def _check_bits(bits: int, func: str) -> tuple[int, int]:
    if bits not in (16, 32):
        raise UnsupportedError(f"{func}: bits must be 16 or 32 (gemmlowp raw types), got {bits!r}")
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _check_rounding(rounding: str, func: str) -> None:
    if rounding not in ("double", "single"):
        raise UnsupportedError(f"{func}: rounding must be 'double' or 'single', got {rounding!r}")


# ---------------------------------------------------------------------------------------------
# QuantizeMultiplier (prepare time, from a float64)
# ---------------------------------------------------------------------------------------------


def _check_real(m: float, func: str) -> float:
    try:
        value = float(m)
    except (TypeError, ValueError):
        raise QuantSpecError(f"{func}: real multiplier must be a number, got {m!r}") from None
    if not math.isfinite(value):
        raise QuantSpecError(f"{func}: real multiplier must be finite, got {value!r}")
    return value


def quantize_multiplier(m: float, rounding: Rounding = "double") -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: ``m`` as ``(M, shift)`` with ``m ~ M * 2^(shift - 31)``.

    ``(q, e) = frexp(m)`` (float64); ``M = round_half_away(q * 2^31)``; ``M == 2^31`` becomes
    ``(2^30, e + 1)``; ``e < -31`` flushes to ``(0, 0)``; ``m == 0`` gives ``(0, 0)``. With
    ``rounding="single"`` (TFLITE_SINGLE_ROUNDING builds) ``shift > 30`` saturates to
    ``(2^31 - 1, 30)``. Negative multipliers are accepted as the peer accepts them (``M < 0``).
    """
    _check_rounding(rounding, "quantize_multiplier")
    value = _check_real(m, "quantize_multiplier")
    if value == 0.0:
        return 0, 0
    q, shift = math.frexp(value)
    # q * 2^31 is exact (power-of-two scaling) with |q * 2^31| in [2^30, 2^31), so adding 0.5
    # and flooring the magnitude is an exact round-half-away (std::round).
    scaled = q * float(1 << 31)
    magnitude = math.floor(abs(scaled) + 0.5)
    fixed = magnitude if scaled > 0 else -magnitude
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if rounding == "single" and shift > 30:
        return INT32_MAX, 30
    return int(fixed), int(shift)


def quantize_multiplier_smaller_than_one(
    m: float, rounding: Rounding = "double"
) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplierSmallerThanOneExp``: ``0 < m < 1``, returns ``(M, shift <= 0)``.

    The peer CHECK-fails when ``m`` is not in (0, 1) or when rounding pushes the shift above 0
    (``m >= 1 - 2^-32``); refq raises :class:`QuantSpecError` in both cases.
    """
    value = _check_real(m, "quantize_multiplier_smaller_than_one")
    if not 0.0 < value < 1.0:
        raise QuantSpecError(
            f"quantize_multiplier_smaller_than_one: multiplier {value!r} is not in (0, 1)"
        )
    fixed, shift = quantize_multiplier(value, rounding)
    if shift > 0:
        raise QuantSpecError(
            f"quantize_multiplier_smaller_than_one: multiplier {value!r} rounds to 1.0 "
            f"(shift {shift} > 0)"
        )
    return fixed, shift


def quantize_multiplier_greater_than_one(
    m: float, rounding: Rounding = "double"
) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplierGreaterThanOne``: ``m > 1``, returns ``(M, shift >= 0)``."""
    value = _check_real(m, "quantize_multiplier_greater_than_one")
    if not value > 1.0:
        raise QuantSpecError(
            f"quantize_multiplier_greater_than_one: multiplier {value!r} is not > 1"
        )
    return quantize_multiplier(value, rounding)


def quantize_multipliers(
    m: ArrayLike, rounding: Rounding = "double"
) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """Vectorized :func:`quantize_multiplier` (TFLite ``QuantizeMultiplierArray``, per channel).

    Returns ``(M, shift)`` int32 arrays of ``m``'s shape; equal elementwise to the scalar form.
    """
    _check_rounding(rounding, "quantize_multipliers")
    values = np.asarray(m, dtype=np.float64)
    if not np.isfinite(values).all():
        flat = int(np.argmax(~np.isfinite(values.ravel())))
        at = np.unravel_index(flat, values.shape) if values.ndim else ()
        raise QuantSpecError(
            f"quantize_multipliers: multiplier {values.ravel()[flat]!r} at index {at} is not finite"
        )
    q, shift = np.frexp(values)
    scaled = q * float(1 << 31)  # exact, see quantize_multiplier
    fixed = np.trunc(scaled + np.copysign(0.5, scaled)).astype(np.int64)
    shift = shift.astype(np.int64)
    carry = fixed == (1 << 31)
    fixed = np.where(carry, fixed // 2, fixed)
    shift = np.where(carry, shift + 1, shift)
    flush = shift < -31
    fixed = np.where(flush, 0, fixed)
    shift = np.where(flush, 0, shift)
    if rounding == "single":
        saturate = shift > 30
        fixed = np.where(saturate, INT32_MAX, fixed)
        shift = np.where(saturate, 30, shift)
    return fixed.astype(np.int32), shift.astype(np.int32)


# ---------------------------------------------------------------------------------------------
# gemmlowp primitives
# ---------------------------------------------------------------------------------------------


def _srdhm(a: np.ndarray, b: np.ndarray, bits: int = 32) -> NDArray[np.int64]:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    # floor((a*b + 2^(bits-2)) / 2^(bits-1)) == gemmlowp's nudge-and-truncate (module docstring).
    result = (a * b + (1 << (bits - 2))) >> (bits - 1)
    return np.where((a == lo) & (b == lo), hi, result)


def _rdbpot(x: np.ndarray, exponent: np.ndarray) -> NDArray[np.int64]:
    mask = np.left_shift(np.int64(1), exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def _srmbpot(x: np.ndarray, exponent: np.ndarray, bits: int = 32) -> NDArray[np.int64]:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    left = np.maximum(exponent, 0)
    right = np.maximum(-exponent, 0)
    threshold = np.left_shift(np.int64(1), bits - 1 - left) - 1
    shifted = np.where(x > threshold, hi, np.where(x < -threshold, lo, x << left))
    return np.where(exponent > 0, shifted, _rdbpot(x, right))


def srdhm(a: ArrayLike, b: ArrayLike, bits: int = 32) -> IntResult:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` (ARM ``VQRDMULH``), int32 or int16.

    ``floor((a*b + 2^30) / 2^31)`` (round half up of ``a*b / 2^31``), except
    ``a == b == INT32_MIN -> INT32_MAX``, the only result that does not fit. ``bits=16``: the
    int16 specialization (``2^14``, ``2^15``, INT16 bounds).
    """
    lo, hi = _check_bits(bits, "srdhm")
    av, bv = _ints(a, "a", "srdhm", lo, hi), _ints(b, "b", "srdhm", lo, hi)
    return _out(_srdhm(av, bv, bits), _is_scalar(a, b), bits)


def rounding_divide_by_pot(x: ArrayLike, exponent: ArrayLike, bits: int = 32) -> IntResult:
    """gemmlowp ``RoundingDivideByPOT`` (CMSIS-NN ``arm_nn_divide_by_power_of_two``).

    ``mask = 2^e - 1``; ``(x >> e) + ((x & mask) > (mask >> 1) + (x < 0))``: ``x / 2^e`` rounded
    half away from zero. ``exponent`` in [0, 31] (gemmlowp asserts it), scalar or per element.
    """
    lo, hi = _check_bits(bits, "rounding_divide_by_pot")
    xv = _ints(x, "x", "rounding_divide_by_pot", lo, hi)
    ev = _param(exponent, "exponent", "rounding_divide_by_pot", 0, 31)
    return _out(_rdbpot(xv, ev), _is_scalar(x, exponent), bits)


def saturating_rounding_multiply_by_pot(
    x: ArrayLike, exponent: ArrayLike, bits: int = 32
) -> IntResult:
    """gemmlowp ``SaturatingRoundingMultiplyByPOT<exponent>`` (also TFLite's ``...POTParam``).

    ``exponent > 0``: ``x * 2^e`` saturated to the raw type (``x > 2^(bits-1-e) - 1`` gives MAX,
    ``x < -(2^(bits-1-e) - 1)`` gives MIN); ``exponent < 0``: ``RoundingDivideByPOT(x, -e)``;
    ``exponent == 0``: ``x``. ``exponent`` in [-(bits-1), bits-1].
    """
    lo, hi = _check_bits(bits, "saturating_rounding_multiply_by_pot")
    func = "saturating_rounding_multiply_by_pot"
    xv = _ints(x, "x", func, lo, hi)
    ev = _param(exponent, "exponent", func, -(bits - 1), bits - 1)
    return _out(_srmbpot(xv, ev, bits), _is_scalar(x, exponent), bits)


def rounding_half_sum(a: ArrayLike, b: ArrayLike, bits: int = 32) -> IntResult:
    """gemmlowp ``RoundingHalfSum`` (``VRHADD``-like): ``(a + b) / 2`` rounded half away from zero.

    C form: ``sum = a + b`` (wide); ``(sum + sign(sum)) / 2`` truncated toward zero, with
    ``sign(0) = +1``.
    """
    lo, hi = _check_bits(bits, "rounding_half_sum")
    av = _ints(a, "a", "rounding_half_sum", lo, hi)
    bv = _ints(b, "b", "rounding_half_sum", lo, hi)
    return _out(_rounding_half_sum(av, bv), _is_scalar(a, b), bits)


def _rounding_half_sum(a: np.ndarray, b: np.ndarray) -> NDArray[np.int64]:
    total = a + b
    t = total + np.where(total >= 0, 1, -1)
    # C division truncates toward zero; NumPy's // floors.
    return np.where(t >= 0, t // 2, -((-t) // 2))


def saturating_add(a: ArrayLike, b: ArrayLike, bits: int = 32) -> IntResult:
    """``a + b`` clamped to the raw type: gemmlowp ``SaturatingAdd`` (int16) and TFLite
    ``SaturatingAddNonGemmlowp`` (int32)."""
    lo, hi = _check_bits(bits, "saturating_add")
    av, bv = _ints(a, "a", "saturating_add", lo, hi), _ints(b, "b", "saturating_add", lo, hi)
    return _out(np.clip(av + bv, lo, hi), _is_scalar(a, b), bits)


def saturating_sub(a: ArrayLike, b: ArrayLike, bits: int = 32) -> IntResult:
    """TFLite ``SaturatingSub`` (int16 / int32): ``a - b`` clamped to the raw type."""
    lo, hi = _check_bits(bits, "saturating_sub")
    av, bv = _ints(a, "a", "saturating_sub", lo, hi), _ints(b, "b", "saturating_sub", lo, hi)
    return _out(np.clip(av - bv, lo, hi), _is_scalar(a, b), bits)


def rescale(
    x: ArrayLike, src_integer_bits: int, dst_integer_bits: int, bits: int = 32
) -> IntResult:
    """gemmlowp ``Rescale<dst>(FixedPoint<raw, src>)``: ``SaturatingRoundingMultiplyByPOT`` by
    ``src - dst`` (a saturating left shift when the format loses integer bits)."""
    return saturating_rounding_multiply_by_pot(x, src_integer_bits - dst_integer_bits, bits)


# ---------------------------------------------------------------------------------------------
# MultiplyByQuantizedMultiplier and the CMSIS-NN requantize functions
# ---------------------------------------------------------------------------------------------


def _mbqm_double(x: np.ndarray, m: np.ndarray, shift: np.ndarray) -> NDArray[np.int64]:
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    # x * (1 << left) overflows int32 in the peer for large x: wrap like the hardware does.
    return _rdbpot(_srdhm(_wrap(x << left), m), right)


def _mbqm_single(x: np.ndarray, m: np.ndarray, shift: np.ndarray) -> NDArray[np.int64]:
    total = 31 - shift  # 1..62; |x*M| <= 2^62 and the nudge <= 2^61, so int64 never overflows
    return _wrap((x * m + np.left_shift(np.int64(1), total - 1)) >> total)


def multiply_by_quantized_multiplier(
    x: ArrayLike, multiplier: ArrayLike, shift: ArrayLike, rounding: Rounding = "double"
) -> IntResult:
    """TFLite / TFLM ``MultiplyByQuantizedMultiplier(int32 x, int32 M, int shift)``.

    ``rounding="double"`` (default build, TFLM reference kernels):
    ``RDBPOT(SRDHM(x * 2^max(shift, 0), M), max(-shift, 0))``, the left shift wrapping in int32.
    ``rounding="single"`` (TFLITE_SINGLE_ROUNDING / CMSIS_NN_USE_SINGLE_ROUNDING):
    ``(x*M + 2^(30-shift)) >> (31-shift)`` in int64, cast to int32: one round half up of
    ``x*M / 2^(31-shift)``. ``shift`` in [-31, 30]; ``multiplier`` and ``shift`` may be arrays
    (per channel or per element) broadcasting against ``x``. When the two roundings differ: see
    the module docstring. ``MultiplyByQuantizedMultiplierSmallerThanOneExp`` /
    ``...GreaterThanOne`` are this function with ``shift <= 0`` / ``shift >= 0``. Measured:
    TFLM's reference kernels use "double", and so do LiteRT 2.3's, except its FULLY_CONNECTED,
    which rounds ``double(acc) * real`` once, half away (:mod:`refq.kernels.requant`).
    """
    func = "multiply_by_quantized_multiplier"
    _check_rounding(rounding, func)
    xv = _ints(x, "x", func, INT32_MIN, INT32_MAX)
    mv = _param(multiplier, "multiplier", func, INT32_MIN, INT32_MAX)
    sv = _param(shift, "shift", func, -31, 30)
    core = _mbqm_double if rounding == "double" else _mbqm_single
    return _out(core(xv, mv, sv), _is_scalar(x, multiplier, shift))


def cmsis_requantize(
    x: ArrayLike, multiplier: ArrayLike, shift: ArrayLike, rounding: Rounding = "double"
) -> IntResult:
    """CMSIS-NN ``arm_nn_requantize(val, multiplier, shift)``.

    Double rounding: ``arm_nn_divide_by_power_of_two(arm_nn_doubling_high_mult_no_sat(
    x * 2^left, M), right)`` where ``doubling_high_mult_no_sat = (x*M + 2^30) >> 31`` cast to
    int32: TFLite's value except ``x * 2^left == M == INT32_MIN`` (no saturation: INT32_MIN).
    Single rounding: ``t = int32((x*M) >> (30 - shift))``; ``(t + 1) >> 1`` in int32: TFLite's
    value whenever ``floor(x*M / 2^(30-shift))`` lies in [INT32_MIN, INT32_MAX).
    """
    func = "cmsis_requantize"
    _check_rounding(rounding, func)
    xv = _ints(x, "x", func, INT32_MIN, INT32_MAX)
    mv = _param(multiplier, "multiplier", func, INT32_MIN, INT32_MAX)
    sv = _param(shift, "shift", func, -31, 30)
    if rounding == "double":
        left = np.maximum(sv, 0)
        right = np.maximum(-sv, 0)
        high = _wrap((_wrap(xv << left) * mv + (1 << 30)) >> 31)
        result = _rdbpot(high, right)
    else:
        t = _wrap((xv * mv) >> (30 - sv))
        result = _wrap(t + 1) >> 1
    return _out(result, _is_scalar(x, multiplier, shift))


def reduce_multiplier(multiplier: ArrayLike) -> IntResult:
    """CMSIS-NN ``REDUCE_MULTIPLIER`` / TFLM's 16-bit multiplier for int64 inputs.

    ``M < 0x7FFF0000 ? (M + 2^15) >> 16 : 0x7FFF``: round half up of ``M / 2^16``, capped at
    0x7FFF. ``multiplier`` in [0, INT32_MAX] (both peers assume ``M >= 0``).
    """
    mv = _param(multiplier, "multiplier", "reduce_multiplier", 0, INT32_MAX)
    return _out(_reduce(mv), _is_scalar(multiplier))


def _reduce(m: np.ndarray) -> NDArray[np.int64]:
    return np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)


def multiply_by_quantized_multiplier_s64(
    x: ArrayLike, multiplier: ArrayLike, shift: ArrayLike
) -> IntResult:
    """TFLM ``MultiplyByQuantizedMultiplier(int64 x, int32 M, int shift)`` (16x8 kernels).

    Same formula in the double- and single-rounding builds: ``m = reduce_multiplier(M)``;
    ``(x*m + 2^(14-shift)) >> (15-shift)`` in int64, cast to int32: one round half up of
    ``x*m / 2^(15-shift)``. Peer domain (asserted): ``x`` in [-2^47, 2^47), ``M >= 0``,
    ``shift`` in [-31, 7].
    """
    func = "multiply_by_quantized_multiplier_s64"
    xv = _ints(x, "x", func, S64_ACC_MIN, S64_ACC_MAX)
    mv = _param(multiplier, "multiplier", func, 0, INT32_MAX)
    sv = _param(shift, "shift", func, -31, 7)
    total = 15 - sv
    result = _wrap((xv * _reduce(mv) + np.left_shift(np.int64(1), total - 1)) >> total)
    return _out(result, _is_scalar(x, multiplier, shift))


def cmsis_requantize_s64(
    acc: ArrayLike, reduced_multiplier: ArrayLike, shift: ArrayLike
) -> IntResult:
    """CMSIS-NN ``arm_nn_requantize_s64(val, reduced_multiplier, shift)`` (s16 kernels).

    ``t = int32((acc * m) >> (14 - shift))``; ``(t + 1) >> 1`` in int32, with
    ``m = reduce_multiplier(M)`` computed by the caller as in CMSIS-NN. Equals
    :func:`multiply_by_quantized_multiplier_s64` whenever ``floor(acc*m / 2^(14-shift))`` lies in
    [INT32_MIN, INT32_MAX); outside, the peer wraps (reproduced here). Domain: ``acc`` in
    [-2^47, 2^47), ``m`` in [0, 0x7FFF], ``shift`` in [-31, 7].
    """
    func = "cmsis_requantize_s64"
    av = _ints(acc, "acc", func, S64_ACC_MIN, S64_ACC_MAX)
    mv = _param(reduced_multiplier, "reduced_multiplier", func, 0, 0x7FFF)
    sv = _param(shift, "shift", func, -31, 7)
    t = _wrap((av * mv) >> (14 - sv))
    return _out(_wrap(t + 1) >> 1, _is_scalar(acc, reduced_multiplier, shift))


# ---------------------------------------------------------------------------------------------
# gemmlowp fixed-point math functions (exp, 1/(1+x), tanh, logistic), int32 or int16 raw values
# ---------------------------------------------------------------------------------------------

_EXP_BARREL = (
    (-2, 1672461947),  # exp(-1/4) in Q0.31
    (-1, 1302514674),  # exp(-1/2)
    (0, 790015084),  # exp(-1)
    (1, 290630308),  # exp(-2)
    (2, 39332535),  # exp(-4)
    (3, 720401),  # exp(-8)
    (4, 242),  # exp(-16)
)
"""(exponent, multiplier): exp(-2^exponent) as an int32 Q0.31 constant (gemmlowp's barrel)."""

EXP_MINUS_ONE_EIGHTH_Q31 = 1895147668
ONE_THIRD_Q31 = 715827883
FORTY_EIGHT_OVER_SEVENTEEN_Q2_29 = 1515870810
MINUS_THIRTY_TWO_OVER_SEVENTEEN_Q2_29 = -1010580540
HALF_SQRT2_Q31 = 1518500250


class _Raw:
    """Arithmetic of gemmlowp ``FixedPoint<intN_t, *>`` raw values, N = 16 or 32, in int64."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.min = -(1 << (bits - 1))
        self.max = (1 << (bits - 1)) - 1

    def wrap(self, x: np.ndarray) -> NDArray[np.int64]:
        return _wrap(x, self.bits)

    def mul(self, a: np.ndarray, b: np.ndarray) -> NDArray[np.int64]:
        return _srdhm(a, b, self.bits)

    def pot(self, x: np.ndarray, exponent: int) -> NDArray[np.int64]:
        return _srmbpot(x, np.int64(exponent), self.bits)

    def const(self, raw32: int) -> int:
        """``GEMMLOWP_CHECKED_FIXEDPOINT_CONSTANT``: int32 constants are RDBPOT'd by 32 - N."""
        return int(_rdbpot(np.int64(raw32), np.int64(32 - self.bits)))

    def one(self, integer_bits: int) -> int:
        """``FixedPoint::One()``: the max raw value for 0 integer bits, else ``1 << fractional``."""
        return self.max if integer_bits == 0 else 1 << (self.bits - 1 - integer_bits)


def _exp_interval(r: _Raw, a: np.ndarray) -> NDArray[np.int64]:
    """``exp_on_interval_between_negative_one_quarter_and_0_excl`` (Q0 in, Q0 out)."""
    constant = r.const(EXP_MINUS_ONE_EIGHTH_Q31)
    third = r.const(ONE_THIRD_Q31)
    x = r.wrap(a + (1 << (r.bits - 4)))  # Taylor around -1/8: x = a + 1/8
    x2 = r.mul(x, x)
    x3 = r.mul(x2, x)
    x4 = r.mul(x2, x2)
    x4_over_4 = r.pot(x4, -2)
    poly = r.pot(r.wrap(r.mul(r.wrap(x4_over_4 + x3), third) + x2), -1)
    tail = r.mul(constant, r.wrap(x + poly))
    if r.bits == 16:  # AddSaturatingIf16Bit
        return np.clip(constant + tail, r.min, r.max)
    return r.wrap(constant + tail)


def _exp_on_negative_values(r: _Raw, a: np.ndarray, integer_bits: int) -> NDArray[np.int64]:
    fractional = r.bits - 1 - integer_bits
    quarter = 1 << (fractional - 2)
    a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter
    result = _exp_interval(r, r.pot(a_mod_quarter_minus_quarter, integer_bits))
    remainder = r.wrap(a_mod_quarter_minus_quarter - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = (remainder & (1 << (fractional + exponent))) != 0
            result = np.where(bit, r.mul(result, np.int64(r.const(multiplier))), result)
    if integer_bits > 5:
        clamp = r.const(-(1 << (36 - integer_bits)))  # -32 in Q(integer_bits)
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, r.one(0), result)


def _newton_reciprocal_half(r: _Raw, a: np.ndarray) -> NDArray[np.int64]:
    """Shared Newton-Raphson core: x ~ 1 / half_denominator in Q2, half_denominator = (1+a)/2."""
    half_denominator = _rounding_half_sum(a, np.int64(r.one(0)))
    one_q2 = r.one(2)
    x = r.wrap(
        r.const(FORTY_EIGHT_OVER_SEVENTEEN_Q2_29)
        + r.mul(half_denominator, np.int64(r.const(MINUS_THIRTY_TWO_OVER_SEVENTEEN_Q2_29)))
    )
    for _ in range(3):
        error = r.wrap(one_q2 - r.mul(half_denominator, x))
        x = r.wrap(x + r.pot(r.mul(x, error), 2))
    return x


def _check_integer_bits(integer_bits: int, bits: int, func: str, extra: int = 0) -> None:
    # ConstantPOT<-2>() needs kFractionalBits >= 2; the barrel's shift amount must fit.
    if not isinstance(integer_bits, int | np.integer) or not 0 <= integer_bits <= bits - 3 - extra:
        raise QuantSpecError(
            f"{func}: integer_bits must be an int in [0, {bits - 3 - extra}], got {integer_bits!r}"
        )


def exp_on_negative_values(a: ArrayLike, integer_bits: int, bits: int = 32) -> IntResult:
    """gemmlowp ``exp_on_negative_values(FixedPoint<intN_t, integer_bits>)``: ``exp(a)`` in Q0.

    Input Q(integer_bits).(N-1-integer_bits), meaningful for ``a <= 0``; output Q0.(N-1).
    ``a mod 1/4 - 1/4`` goes through a 4th-order Taylor expansion around -1/8 (constants
    ``exp(-1/8) = 1895147668``, ``1/3 = 715827883``); each set bit of the remaining multiple of
    1/4 multiplies in ``exp(-2^k)`` (1672461947, 1302514674, 790015084, 290630308, 39332535,
    720401, 242 for k = -2..4, only for ``k < integer_bits``); inputs below -32 give 0 when
    ``integer_bits > 5``; ``a == 0`` gives the max raw value (INT32_MAX). ``bits=16`` is the
    int16 instantiation (constants rounded by 16 bits, saturating final add). Positive inputs
    are computed exactly as the C code does, which is meaningless but defined.
    """
    func = "exp_on_negative_values"
    lo, hi = _check_bits(bits, func)
    _check_integer_bits(integer_bits, bits, func)
    av = _ints(a, "a", func, lo, hi)
    return _out(_exp_on_negative_values(_Raw(bits), av, int(integer_bits)), _is_scalar(a), bits)


def one_over_one_plus_x_for_x_in_0_1(a: ArrayLike, bits: int = 32) -> IntResult:
    """gemmlowp ``one_over_one_plus_x_for_x_in_0_1``: ``1 / (1 + a)``, ``a`` in [0, 1), Q0 in/out.

    ``d = RoundingHalfSum(a, One)`` (``(1+a)/2``); Newton-Raphson in Q2.29 from
    ``x0 = 48/17 - 32/17 * d`` (1515870810, -1010580540), three steps
    ``x += Rescale<2>(x * (1 - d*x))``; result ``Rescale<0>(x / 2)`` i.e. ``x`` saturating-shifted
    left by one.
    """
    func = "one_over_one_plus_x_for_x_in_0_1"
    lo, hi = _check_bits(bits, func)
    r = _Raw(bits)
    av = _ints(a, "a", func, lo, hi)
    return _out(r.pot(_newton_reciprocal_half(r, av), 1), _is_scalar(a), bits)


def one_minus_x_over_one_plus_x_for_x_in_0_1(a: ArrayLike, bits: int = 32) -> IntResult:
    """gemmlowp ``one_minus_x_over_one_plus_x_for_x_in_0_1``: ``(1 - a) / (1 + a)``, Q0 in/out.

    The Newton-Raphson reciprocal of :func:`one_over_one_plus_x_for_x_in_0_1`, then
    ``Rescale<0>(x - 1)`` (a saturating left shift by 2 of ``x - 1`` in Q2.29).
    """
    func = "one_minus_x_over_one_plus_x_for_x_in_0_1"
    lo, hi = _check_bits(bits, func)
    r = _Raw(bits)
    av = _ints(a, "a", func, lo, hi)
    x = _newton_reciprocal_half(r, av)
    return _out(r.pot(r.wrap(x - r.one(2)), 2), _is_scalar(a), bits)


def gemmlowp_tanh(a: ArrayLike, integer_bits: int, bits: int = 32) -> IntResult:
    """gemmlowp ``tanh(FixedPoint<intN_t, integer_bits>)``: Q(integer_bits) in, Q0 out.

    ``n = a < 0 ? a : -a`` (wrapping); ``t = one_minus_x_over_one_plus_x(exp_on_negative_values(
    n as Q(integer_bits + 1)))`` (``ExactMulByPot<1>``: ``exp(2n)``); result ``0`` for ``a == 0``,
    ``-t`` for ``a < 0``, ``t`` otherwise. TFLM's int8 TANH uses ``integer_bits = 4``.
    """
    func = "gemmlowp_tanh"
    lo, hi = _check_bits(bits, func)
    _check_integer_bits(integer_bits, bits, func, extra=1)
    r = _Raw(bits)
    av = _ints(a, "a", func, lo, hi)
    negative = av < 0
    n = np.where(negative, av, r.wrap(-av))
    e = _exp_on_negative_values(r, n, int(integer_bits) + 1)
    x = _newton_reciprocal_half(r, e)
    t = r.pot(r.wrap(x - r.one(2)), 2)
    result = np.where(av == 0, 0, np.where(negative, r.wrap(-t), t))
    return _out(result, _is_scalar(a), bits)


def gemmlowp_logistic(a: ArrayLike, integer_bits: int, bits: int = 32) -> IntResult:
    """gemmlowp ``logistic(FixedPoint<intN_t, integer_bits>)``: ``1 / (1 + exp(-a))``, Q0 out.

    ``p = one_over_one_plus_x(exp_on_negative_values(-|a|))`` (``|a|`` and ``-|a|`` wrapping);
    result ``p`` for ``a > 0``, ``One - p`` for ``a < 0``, ``2^(N-2)`` (one half) for ``a == 0``.
    TFLM's int8 LOGISTIC uses ``integer_bits = 4``.
    """
    func = "gemmlowp_logistic"
    lo, hi = _check_bits(bits, func)
    _check_integer_bits(integer_bits, bits, func)
    r = _Raw(bits)
    av = _ints(a, "a", func, lo, hi)
    positive = av > 0
    abs_input = np.where(positive, av, r.wrap(-av))
    e = _exp_on_negative_values(r, r.wrap(-abs_input), int(integer_bits))
    p = r.pot(_newton_reciprocal_half(r, e), 1)
    result = np.where(av == 0, r.const(1 << 30), np.where(positive, p, r.wrap(r.one(0) - p)))
    return _out(result, _is_scalar(a), bits)


# TFLite's fixed-point natural log (its own addition to gemmlowp's functions), Q5.26 result.
LOG_2_Q31 = 1488522236  # ln 2
SQRT_SQRT_HALF_Q31 = 1805811301  # 2^(-1/4)
ONE_QUARTER_Q31 = 1 << 29
LOG_ALPHA_N_Q31 = 117049297  # 11/240 * 2^(1/4)
LOG_ALPHA_D_Q31 = 127690142  # 1/20 * 2^(1/4)
LOG_ALPHA_I_Q31 = 1057819769  # 2 / 2^(1/4) - 2^(1/4)
LOG_ALPHA_F_Q31 = 638450708  # 1/4 * 2^(1/4)
LOG_OUTPUT_INTEGER_BITS = 5


def log_x_for_x_greater_than_or_equal_to_1(z: ArrayLike, input_integer_bits: int) -> IntResult:
    """TFLite ``log_x_for_x_greater_than_or_equal_to_1<5>(FixedPoint<int32, ib>)``: ``ln(z)``.

    Input: raw int32 ``z > 0`` read as Q(ib).(31-ib) (meaningful for ``z >= 1.0``, i.e.
    ``z >= 2^(31-ib)``); output: Q5.26 raw int32. All sums below are gemmlowp ``FixedPoint``
    adds (wrapping in int32) unless marked saturating; products are SRDHM; the accumulator
    format is Q6.25 (one more integer bit than the output):

    1. The binary exponent, estimated twice: ``ha = clz(z)``, mantissa
       ``r_a = 2 * SRDHM(z << (ha - 1), 2^-1/2)`` (saturating doubling) with exponent
       ``ib - ha + 1/4``; and, from ``z * 2^-1/2``, ``hb = clz(z * 2^-1/2) - 1``,
       ``r_b = z << hb`` (saturating) with exponent ``ib - hb - 1/4`` (both exponents saturating
       adds in Q6.25). ``r = min(r_a, r_b)`` and the exponent ``e = max`` of the two.
    2. ``q = 2 (r - 2^-1/4)``, ``p = RoundingHalfSum(r, 2^-1/4)``; the log of the mantissa is
       the rational approximation ``(q r + alpha_n q^3) / (1 + p (alpha_i + q + alpha_d q^2) +
       alpha_f q)`` with gemmlowp's Newton ``1 / (1 + x)`` (constants ``LOG_ALPHA_*``).
    3. Result ``Rescale<5>(e ln2 + Rescale<6>(numerator) / (1 + x))``.

    ``z`` in [1, INT32_MAX]; ``input_integer_bits`` in [0, 31]. TFLM's int8 LOG_SOFTMAX calls
    it with ``ib = 12`` on the Q12.19 sum of exponentials.
    """
    func = "log_x_for_x_greater_than_or_equal_to_1"
    if not isinstance(input_integer_bits, int | np.integer) or not 0 <= input_integer_bits <= 31:
        raise QuantSpecError(
            f"{func}: input_integer_bits must be an int in [0, 31], got {input_integer_bits!r}"
        )
    zv = _ints(z, "z", func, 1, INT32_MAX)
    ib = int(input_integer_bits)
    r = _Raw(32)
    acc_bits = LOG_OUTPUT_INTEGER_BITS + 1
    quarter = int(r.pot(np.int64(ONE_QUARTER_Q31), -acc_bits))  # 1/4 in Q6.25
    ha = 32 - _bit_length(zv)
    r_a = r.pot(r.mul(_srmbpot(zv, ha - 1), np.int64(HALF_SQRT2_Q31)), 1)
    e_a = np.clip(_srmbpot(ib - ha, np.int64(31 - acc_bits)) + quarter, INT32_MIN, INT32_MAX)
    hb = 32 - _bit_length(r.mul(zv, np.int64(HALF_SQRT2_Q31))) - 1
    r_b = _srmbpot(zv, hb)
    e_b = np.clip(_srmbpot(ib - hb, np.int64(31 - acc_bits)) - quarter, INT32_MIN, INT32_MAX)
    mantissa = np.minimum(r_a, r_b)
    exponent = np.maximum(e_a, e_b)
    p = _rounding_half_sum(mantissa, np.int64(SQRT_SQRT_HALF_Q31))
    q = r.wrap(mantissa - SQRT_SQRT_HALF_Q31)
    q = r.wrap(q + q)
    q2 = r.mul(q, q)
    num = r.wrap(r.mul(q, mantissa) + r.mul(r.mul(q, q2), np.int64(LOG_ALPHA_N_Q31)))
    inner = r.wrap(r.wrap(LOG_ALPHA_I_Q31 + q) + r.mul(np.int64(LOG_ALPHA_D_Q31), q2))
    denom_minus_one = r.wrap(r.mul(p, inner) + r.mul(np.int64(LOG_ALPHA_F_Q31), q))
    recip = r.pot(_newton_reciprocal_half(r, denom_minus_one), 1)  # 1 / (1 + x), Q0.31
    total = r.wrap(r.mul(exponent, np.int64(LOG_2_Q31)) + r.mul(r.pot(num, -acc_bits), recip))
    return _out(r.pot(total, acc_bits - LOG_OUTPUT_INTEGER_BITS), _is_scalar(z))


# ---------------------------------------------------------------------------------------------
# Bit counting, inverse square root, integer square root
# ---------------------------------------------------------------------------------------------


def _bit_length(u: np.ndarray) -> NDArray[np.int64]:
    """Exact bit length of non-negative values below 2^53 (frexp of an exact float64)."""
    return np.frexp(u.astype(np.float64))[1].astype(np.int64)


def count_leading_zeros(x: ArrayLike) -> IntResult:
    """TFLite ``CountLeadingZeros(uint32)`` (``__builtin_clz`` with clz(0) = 32).

    Accepts uint32 values and int32 values (read as their two's-complement uint32 bits, as
    ``static_cast<uint32_t>`` does): ``x`` in [INT32_MIN, UINT32_MAX].
    """
    xv = _ints(x, "x", "count_leading_zeros", INT32_MIN, UINT32_MAX)
    return _out(32 - _bit_length(xv & UINT32_MAX), _is_scalar(x))


def count_leading_sign_bits(x: ArrayLike) -> IntResult:
    """TFLite ``CountLeadingSignBits(int32)`` (gcc ``__builtin_clrsb``): redundant sign bits.

    ``clz(x ^ (x >> 31)) - 1``; 31 for 0 and -1, 0 for INT32_MIN and INT32_MAX.
    """
    xv = _ints(x, "x", "count_leading_sign_bits", INT32_MIN, INT32_MAX)
    return _out(31 - _bit_length(xv ^ (xv >> 31)), _is_scalar(x))


def isqrt(n: ArrayLike) -> IntResult | NDArray[np.int64]:
    """Exact ``floor(sqrt(n))`` for non-negative int64 arrays (int64 result) or Python ints.

    A float64 estimate (within one of the root) is corrected with exact uint64 squares (roots
    of int64 values are below 2^31.5, so ``(r + 1)^2 < 2^64``) until ``r^2 <= n < (r + 1)^2``.
    Python ints of any size go to :func:`math.isqrt`.
    """
    if isinstance(n, int) and not isinstance(n, bool):
        if n < 0:
            raise InvalidDataError(f"isqrt: n = {n} is negative")
        return math.isqrt(n)
    nv = _ints(n, "n", "isqrt", 0, INT64_MAX)
    scalar = _is_scalar(n)
    target = nv.astype(np.uint64)
    root = np.floor(np.sqrt(nv.astype(np.float64))).astype(np.uint64)
    while True:
        too_big = root * root > target
        nxt = root + np.uint64(1)
        too_small = nxt * nxt <= target
        if not (too_big.any() or too_small.any()):
            break
        root = np.where(too_big, root - np.uint64(1), np.where(too_small, nxt, root))
    result = root.astype(np.int64)
    return int(result) if scalar else result


def _inv_sqrt(x: np.ndarray, reverse_shift: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    small = x <= 1
    v = np.maximum(x, 2)  # the x <= 1 lanes are replaced at the end
    # while (v >= 2^29) v /= 4: for int32 inputs this runs at most once.
    big = v >= (1 << 29)
    v = np.where(big, v >> 2, v)
    shift = 11 + big.astype(np.int64)
    pairs = (32 - _bit_length(v) - 1) // 2 - 1  # (clz - 1) / 2 - 1, all >= 0 here
    shift = shift - pairs
    v = v << (2 * pairs)  # now in [2^27, 2^29)
    r = _Raw(32)
    half_input = r.pot(v >> 1, -1)  # Q3.28 input / 2
    half_three = (1 << 28) + (1 << 27)  # 1.5 in Q3.28
    est = np.full_like(v, 1 << 28)  # F3::One()
    for _ in range(5):
        est3 = r.pot(r.mul(r.mul(est, est), est), 6)
        est = r.pot(r.wrap(r.mul(np.int64(half_three), est) - r.mul(half_input, est3)), 3)
    multiplier = r.mul(est, np.int64(HALF_SQRT2_Q31))
    negative = shift < 0
    multiplier = np.where(negative, _wrap(multiplier << np.maximum(-shift, 0)), multiplier)
    shift = np.where(negative, 0, shift)
    multiplier = np.where(small, INT32_MAX, multiplier)
    shift = np.where(small, 0, shift) * reverse_shift
    return multiplier, shift


def inv_sqrt_quantized_multiplier_exp(
    x: ArrayLike, reverse_shift: int = -1
) -> tuple[IntResult, IntResult]:
    """TFLite ``GetInvSqrtQuantizedMultiplierExp(input, reverse_shift, &M, &shift)``.

    ``1/sqrt(x) ~ M * 2^(-31 + shift*reverse_shift)`` for ``x >= 2``; ``x <= 1`` gives
    ``(INT32_MAX, 0)``. Steps: ``x`` divided by 4 (truncating) while ``>= 2^29`` (shift
    ``11 + #divisions``), shifted left by bit pairs into [2^27, 2^29) (shift decreases by the
    pair count); five Newton steps ``y = Rescale<3>(1.5*y - (x/2) * Rescale<3>(y^3))`` in Q3.28
    from ``y = 1``; ``M = y * sqrt(2)/2`` (1518500250, Q0.31); a negative shift moves into ``M``
    (wrapping left shift) and becomes 0; finally ``shift *= reverse_shift`` (TFLite passes
    ``kReverseShift = -1``, giving a left-shift exponent for MultiplyByQuantizedMultiplier).
    ``x`` in [0, INT32_MAX].
    """
    func = "inv_sqrt_quantized_multiplier_exp"
    if reverse_shift not in (-1, 1):
        raise QuantSpecError(f"{func}: reverse_shift must be -1 or 1, got {reverse_shift!r}")
    xv = _ints(x, "x", func, 0, INT32_MAX)
    multiplier, shift = _inv_sqrt(xv, int(reverse_shift))
    scalar = _is_scalar(x)
    return _out(multiplier, scalar), _out(shift, scalar)


RSQRT_KSHIFT = 20
"""TFLM RSQRT's ``kShift``: the intermediate 1/sqrt is kept as an integer scaled by 2^20."""


def rsqrt_fixed_point(
    value: ArrayLike, multiplier: ArrayLike, shift: ArrayLike, rounding: Rounding = "double"
) -> IntResult:
    """Per-element core of TFLM's quantized RSQRT (``RsqrtEvalQuantized``), before ``+ zp_out``.

    For ``value = x - zp_in >= 1``: ``(Mi, si) = GetInvSqrtQuantizedMultiplierExp(value, -1)``;
    ``data = MBQM(1, Mi, si + 20)`` (``2^20 / sqrt(value)``); returns
    ``MBQM(data, multiplier, shift - 20)`` where ``(multiplier, shift) =
    QuantizeMultiplier(1 / (sqrt(double(s_in)) * double(s_out)))``. The kernel then outputs
    ``clamp(result + zp_out, qmin, qmax)``, maps ``value == 0`` to ``qmax`` and rejects
    ``value < 0``; here ``value`` must be >= 1 (:class:`InvalidDataError` otherwise) and
    ``shift - 20`` must stay >= -31.
    """
    func = "rsqrt_fixed_point"
    _check_rounding(rounding, func)
    vv = _ints(value, "value", func, 1, INT32_MAX)
    mv = _param(multiplier, "multiplier", func, INT32_MIN, INT32_MAX)
    sv = _param(shift, "shift", func, -31 + RSQRT_KSHIFT, 30)
    inv_m, inv_s = _inv_sqrt(vv, -1)
    core = _mbqm_double if rounding == "double" else _mbqm_single
    data = core(np.int64(1), inv_m, inv_s + RSQRT_KSHIFT)
    return _out(core(data, mv, sv - RSQRT_KSHIFT), _is_scalar(value, multiplier, shift))
