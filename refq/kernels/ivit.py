"""I-ViT's integer-only nonlinearities (Li & Gu, ICCV 2023): Shiftmax, ShiftGELU, I-LayerNorm sqrt.

Exact integer restatements of the published formulas with the constants of the released
implementation (which evaluates them on float tensors; its float32 runs deviate, e.g. where
``2^31 - 1`` rounds to ``2^31``: peer-facts section 7). All run-time steps are integer shifts,
adds, multiplies and one division per row; ``>>`` is an arithmetic shift (floor).

Shift-exp ``ShiftExp(x, S, n)`` for ``x <= 0`` (``exp(x S) = 2^(x S log2 e)``):
    ``x' = x + (x >> 1) - (x >> 4)`` (``x log2 e``, ``log2 e ~ 1 + 1/2 - 1/16``);
    ``x0 = floor(-1 / S)`` (minus one in units of ``S``); ``x' = max(x', n x0)``;
    ``q = floor(x' / x0)``, ``r = x' - q x0`` in ``(x0, 0]`` (``2^(x' S) = 2^-q 2^(r S)``);
    ``2^(r S) ~ 1 + r S / 2`` gives ``e = (r / 2 - x0) 2^(n - q) = ((r - 2 x0) << (n - q)) >> 1``
    with scale ``S / 2^n``. The clamp at ``n x0`` bounds the shift (``q <= n``).

Shiftmax (``n = 15``): ``e = ShiftExp(q - max q, S)``; ``Z = min(sum e, 2^31 - 1)``;
    ``y = floor(e floor((2^31 - 1) / Z) / 2^(32 - out_bits))``, scale ``2^(1 - out_bits)``.

ShiftGELU (``n = 23``), ``GELU(x) ~ x sigmoid(1.702 x)``, with the row maximum ``m`` (last axis)
keeping the exponents non-positive: ``S_s = 1.702 S``;
    ``e = ShiftExp(q - m, S_s)``, ``e_m = ShiftExp(-m, S_s)`` (``sigmoid(1.702x) =
    e^(1.702(x - m)) / (e^(1.702(x - m)) + e^(-1.702 m))``); ``Z = min(e + e_m, 2^31 - 1)``;
    ``s = floor(e floor((2^31 - 1) / Z) / 2^(32 - out_bits))`` (scale ``2^(1 - out_bits)``);
    output ``q s`` with scale ``S 2^(1 - out_bits)``. ``-m`` may be positive (``m < 0``): the
    formulas extend (``q < 0``, a longer left shift); values that would exceed int64 are
    saturated at ``2^62``, which is exact for the result since ``Z`` is capped at ``2^31 - 1``.
    The clamp at ``23 x0`` makes the sigmoid 1/2 (63/128 after the floors) when both ``x - m``
    and ``-m`` are below ``-23 / (1.702 log2 e)`` in real terms (very negative inputs in a row
    with a large maximum): ShiftGELU then returns about ``x / 2`` (tests demonstrate this
    regime). The reciprocal ``floor((2^31 - 1) / Z)`` keeps few bits when ``Z`` is large (small
    scales: ``|x0| 2^23`` near ``2^28`` leaves ~3 bits), which costs up to ~20% of the sigmoid.

I-LayerNorm's square root: exactly 10 Newton steps ``k <- floor((k + floor(v / k)) / 2)`` from
``k = 2^16`` (:func:`ivit_sqrt`). Measured against ``floor(sqrt(v))``: wrong for 51,100 of the
``v < 183,184`` (by more than one up to ``v = 34,595``: the iteration has not come down from
2^16, ``v = 100`` gives 64, not 10) and from ``v ~ 2^44`` on (every ``v >= 2^46``: not
converged from below); in between it is the root or, at many ``v = r^2 - 1``, one more (the
floor iteration stopping on ``r`` instead of ``r - 1``).
Profile ``ivit-exact`` replaces it by ``floor(sqrt(v))`` (:func:`integer_sqrt` dispatches on
``Profile.sqrt``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import NDArray

from refq import fixedpoint as fp
from refq.errors import ExactnessError, InvalidDataError, QuantSpecError, ShapeError
from refq.kernels.ibert import pow2_exponent
from refq.profiles import Rounding, Sqrt
from refq.spec import QDType

SHIFTMAX_N = 15
SHIFTGELU_N = 23
SIGMOID_SLOPE = 1.702
SUM_CAP = (1 << 31) - 1
_SATURATE = 1 << 62


def exp_unit(scale: float | Fraction) -> int:
    """``x0 = floor(-1 / S)``: minus one in units of ``S`` (needs ``S <= 1``)."""
    s = Fraction(scale)
    if not s > 0:
        raise QuantSpecError(f"I-ViT shift-exp: scale must be positive, got {float(s)!r}")
    x0 = math.floor(-1 / s)
    return x0


def shift_exp(x: np.ndarray, x0: int, n: int) -> NDArray[np.int64]:
    """``ShiftExp`` (module docstring) of integers ``x`` with ``x0 = floor(-1/S)``; scale ``S/2^n``.

    Results at or above ``2^62`` are returned as ``2^62`` (only reachable for ``x > 0``).
    """
    x = np.asarray(x, dtype=np.int64)
    if x0 >= 0:
        raise QuantSpecError(f"I-ViT shift-exp: x0 = floor(-1/S) must be negative, got {x0}")
    t = x + (x >> 1) - (x >> 4)
    t = np.maximum(t, n * x0)
    q = t // x0  # floor division, x0 < 0
    r = t - q * x0
    base = r - 2 * x0  # in (-x0, -2 x0]
    shift = n - q  # >= 0 since t >= n x0
    too_big = shift + np.frexp(base.astype(np.float64))[1] > 62
    value = (base << np.minimum(shift, 62)) >> 1
    return np.where(too_big, _SATURATE, value)


def _row_normalize(e: np.ndarray, total: np.ndarray, out_bits: int) -> NDArray[np.int64]:
    z = np.minimum(total, SUM_CAP)
    factor = SUM_CAP // z
    return (e * factor) >> (32 - out_bits)


def shiftmax(
    q: np.ndarray, scale: float | Fraction, out_bits: int = 8, n: int = SHIFTMAX_N
) -> NDArray[np.int64]:
    """Shiftmax over the last axis of integer inputs with scale ``scale``; output scale
    ``2^(1 - out_bits)``."""
    q = np.asarray(q, dtype=np.int64)
    x0 = exp_unit(scale)
    e = shift_exp(q - q.max(axis=-1, keepdims=True), x0, n)
    if int(e.max(initial=0)) >= 1 << 31:
        raise ExactnessError("Shiftmax: an exponential exceeds int32 (scale too coarse)")
    return _row_normalize(e, e.sum(axis=-1, keepdims=True), out_bits)


def shift_gelu(
    q: np.ndarray, scale: float | Fraction, out_bits: int = 8, n: int = SHIFTGELU_N
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """ShiftGELU over rows (last axis): returns ``(q * s, s)`` where ``s`` is the integer sigmoid
    (scale ``2^(1 - out_bits)``); the product has scale ``S 2^(1 - out_bits)``."""
    q = np.asarray(q, dtype=np.int64)
    x0 = exp_unit(Fraction(scale) * Fraction(SIGMOID_SLOPE))
    m = q.max(axis=-1, keepdims=True)
    e = shift_exp(q - m, x0, n)
    e_m = shift_exp(-m, x0, n)
    sig = _row_normalize(e, e + e_m, out_bits)
    return q * sig, sig


@dataclass(frozen=True)
class ShiftmaxParams:
    """Shiftmax for the SOFTMAX graph op (profile ``ivit``)."""

    x0: int
    n: int
    out_bits: int
    output_zero_point: int
    output_dtype: str
    name: str = "softmax"


def prepare_shiftmax(t_in: Any, t_out: Any, beta: float, *, name: str) -> ShiftmaxParams:
    """SOFTMAX under ``ivit``: input scale ``s_in * beta``; output scale ``2^-k`` means
    ``out_bits = k + 1``."""
    k = pow2_exponent(t_out.scalar_scale(), f"SOFTMAX {name!r} (ivit)")
    x0 = exp_unit(Fraction(t_in.scalar_scale()) * Fraction(beta))
    return ShiftmaxParams(x0, SHIFTMAX_N, k + 1, t_out.scalar_zero_point(), t_out.dtype, name)


def shiftmax_q(x: np.ndarray, p: ShiftmaxParams) -> np.ndarray:
    """Graph form of :func:`shiftmax` (codes in; ``clamp(y + zp)`` out)."""
    x = np.asarray(x)
    if x.ndim == 0:
        raise ShapeError(f"SOFTMAX {p.name!r}: input needs an axis")
    xi = x.astype(np.int64)
    e = shift_exp(xi - xi.max(axis=-1, keepdims=True), p.x0, p.n)
    y = _row_normalize(e, e.sum(axis=-1, keepdims=True), p.out_bits) + p.output_zero_point
    dt = QDType.parse(p.output_dtype)
    return np.clip(y, dt.qmin, dt.qmax).astype(dt.storage)


@dataclass(frozen=True)
class ShiftGeluParams:
    """ShiftGELU for the GELU graph op (profile ``ivit``): sigmoid constants and the output
    requantization ``y = clamp(MBQM((x - zp_in) * s, M, shift) + zp_out)``."""

    x0: int
    n: int
    out_bits: int
    input_zero_point: int
    output_multiplier: int
    output_shift: int
    output_zero_point: int
    output_dtype: str
    rounding: Rounding = "double"
    name: str = "gelu"


def prepare_shift_gelu(
    s_in: float,
    zp_in: int,
    s_out: float,
    zp_out: int,
    output_dtype: str,
    *,
    rounding: Rounding = "double",
    out_bits: int = 8,
    name: str = "gelu",
) -> ShiftGeluParams:
    """Constants of ShiftGELU with the released ``out_bits = 8`` sigmoid (scale 1/128)."""
    x0 = exp_unit(Fraction(s_in) * Fraction(SIGMOID_SLOPE))
    real = float(Fraction(s_in) / (Fraction(s_out) * (1 << (out_bits - 1))))
    m, sh = fp.quantize_multiplier(real, rounding)
    if not -31 <= sh <= 30:
        raise QuantSpecError(f"GELU {name!r}: output multiplier {real!r} out of range")
    return ShiftGeluParams(
        x0, SHIFTGELU_N, out_bits, zp_in, m, sh, zp_out, output_dtype, rounding, name
    )


def shift_gelu_q(x: np.ndarray, p: ShiftGeluParams) -> np.ndarray:
    """Graph form of ShiftGELU: codes in, requantized codes out (rows: the last axis)."""
    x = np.asarray(x)
    if x.ndim == 0:
        raise ShapeError(f"GELU {p.name!r}: input needs an axis (ShiftGELU uses the row maximum)")
    q = x.astype(np.int64) - p.input_zero_point
    m = q.max(axis=-1, keepdims=True)
    e = shift_exp(q - m, p.x0, p.n)
    e_m = shift_exp(-m, p.x0, p.n)
    prod = q * _row_normalize(e, e + e_m, p.out_bits)
    y = fp.multiply_by_quantized_multiplier(prod, p.output_multiplier, p.output_shift, p.rounding)
    dt = QDType.parse(p.output_dtype)
    return np.clip(np.asarray(y, np.int64) + p.output_zero_point, dt.qmin, dt.qmax).astype(
        dt.storage
    )


# --- square roots ------------------------------------------------------------------------------


def ivit_sqrt(
    v: np.ndarray | int, steps: int = 10, start: int = 1 << 16
) -> NDArray[np.int64] | int:
    """I-ViT's I-LayerNorm root: ``steps`` Newton iterations ``k <- (k + v // k) // 2`` from
    ``start`` (released: 10 from 2^16). Not ``floor(sqrt(v))`` in general (module docstring)."""
    scalar = isinstance(v, int | np.integer) and not isinstance(v, bool)
    arr = np.asarray(v, dtype=np.int64)
    if (arr < 0).any():
        raise InvalidDataError("I-ViT sqrt: inputs must be >= 0")
    k = np.full(arr.shape, start, dtype=np.int64)
    for _ in range(steps):
        if (k == 0).any():
            raise ExactnessError("I-ViT sqrt: the iteration reached 0 (division by zero)")
        k = (k + arr // k) // 2
    return int(k) if scalar else k


def integer_sqrt(v: np.ndarray | int, method: Sqrt = "exact") -> NDArray[np.int64] | int:
    """The integer square root a profile uses: ``exact`` = ``floor(sqrt(v))``
    (:func:`refq.fixedpoint.isqrt`), ``newton10`` = :func:`ivit_sqrt`."""
    if method == "exact":
        return fp.isqrt(v)
    if method == "newton10":
        return ivit_sqrt(v)
    raise QuantSpecError(f"integer_sqrt: unknown method {method!r} (exact or newton10)")


__all__ = [
    "SHIFTGELU_N",
    "SHIFTMAX_N",
    "SIGMOID_SLOPE",
    "ShiftGeluParams",
    "ShiftmaxParams",
    "exp_unit",
    "integer_sqrt",
    "ivit_sqrt",
    "prepare_shift_gelu",
    "prepare_shiftmax",
    "shift_exp",
    "shift_gelu",
    "shift_gelu_q",
    "shiftmax",
    "shiftmax_q",
]
