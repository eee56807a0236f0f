"""I-BERT's integer-only nonlinearities (Kim et al., ICML 2021), as exact integer arithmetic.

Written from the paper's formulas (Algorithms 1-4) and the constants of its released
implementation; the published code evaluates these integer formulas on floating-point tensors,
so its float32 runs deviate from them (peer-facts section 7). Here every run-time step is an
integer operation on int64 with its range checked at prepare time; prepare-time constants are
floors of *exact* rational quotients of the float64 values of the coefficients and the scale
(``Fraction``), so they do not depend on float rounding.

``I-POLY`` (Algorithm 1): ``a (x + b)^2 + c`` for ``x = q S``:
    ``q_b = floor(b / S)``, ``q_c = floor(c / (a S^2))``; ``q_out = (q + q_b)^2 + q_c`` with scale
    ``S_out = a S^2``.

``i-GELU`` (Algorithm 2): ``GELU(x) = x/2 (1 + erf(x / sqrt 2))`` with
``erf(x) ~ L(x) = sgn(x) [a (min(|x|, -b) + b)^2 + 1]``, ``a = -0.2888``, ``b = -1.769``:
    ``S' = S / k`` (``k = 1.4142``, the released code's sqrt 2); ``q_b = floor(b / S')``,
    ``q_c = floor((1/a) / S'^2)``; ``L = sgn(q) ((min(|q|, -q_b) + q_b)^2 + q_c)`` with scale
    ``a S'^2``; the released code then floors ``L / 2^n`` (``n = 14``, scale ``a S'^2 2^n``) to
    keep 32-bit-accumulator inputs in range; ``q_1 = floor(1 / S_erf)``;
    ``q_out = q (L + q_1)`` with scale ``S S_erf / 2`` (negative, since ``a < 0``).
    ``erf_shift=0`` is the paper's Algorithm 2 verbatim. With the released ``n = 14`` the
    algorithm needs inputs with tiny scales (32-bit accumulators, ``S <~ 1e-3``, error ~0.02);
    on 8-bit inputs at realistic scales it breaks (error > 1 for ``S >~ 0.02``), see tests.

``i-exp`` (Algorithm 3), ``q <= 0``: ``exp(x) = 2^-z exp(p)`` with ``x = -z ln2 + p``,
``p`` in ``(-ln2, 0]``, ``exp(p) ~ 0.3585 (p + 1.353)^2 + 0.344``:
    ``q_ln2 = floor(ln2 / S)``; ``z = floor(-q / q_ln2)``; ``q_p = q + z q_ln2``;
    ``q_L = I-POLY(q_p)``; ``q_out = q_L >> z`` with scale ``0.3585 S^2``.

softmax: ``q~ = q - max(q)``; ``e = i-exp(q~)``; per row ``f = floor(2^32 / sum e)``;
    ``y = floor(e f / 2^(32 - out_bits))``, output scale ``2^-out_bits``. (The paper divides by
    the sum; the released code's intermediate 16-bit float requantization of ``e`` is not
    integer-only and is left out.)

``i-sqrt`` (Algorithm 4): Newton's iteration ``x <- floor((x + floor(n / x)) / 2)`` from
    ``2^ceil(bits(n) / 2)`` until it stops decreasing. Started above the root, it ends at
    ``floor(sqrt(n))`` exactly, so the LayerNorm of the ``ibert`` profile
    (:mod:`refq.kernels.norms`) takes that value from :func:`refq.fixedpoint.isqrt`
    (tests/test_kernels_ibert_ivit.py checks the algorithm, :func:`refq.oracle.norms.ibert_isqrt`,
    against it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import NDArray

from refq.errors import ExactnessError, InvalidDataError, QuantSpecError, ShapeError
from refq.spec import QDType

GELU_A, GELU_B, GELU_C = -0.2888, -1.769, 1.0
EXP_A, EXP_B, EXP_C = 0.3585, 1.353, 0.344
SQRT2_K = 1.4142
"""The released implementation divides the scale by 1.4142 (the paper writes sqrt 2)."""
ERF_SHIFT = 14
"""The released implementation floors the erf polynomial by 2^14 (absent from Algorithm 2)."""
LN2 = math.log(2.0)
_I64 = (1 << 63) - 1


def _floor(q: Fraction) -> int:
    return math.floor(q)


def _scale(scale: float, what: str) -> Fraction:
    s = float(scale)
    if not (math.isfinite(s) and s > 0):
        raise QuantSpecError(f"{what}: scale must be positive and finite, got {scale!r}")
    return Fraction(s)


def _check_range(bound: int, what: str) -> None:
    if bound > _I64:
        raise ExactnessError(
            f"{what}: intermediate values reach {bound} > 2^63 - 1 for this input range and "
            "scale; the exact integer result does not fit int64"
        )


def i_poly_constants(
    a: float, b: float, c: float, scale: float | Fraction
) -> tuple[int, int, Fraction]:
    """Algorithm 1's constants: ``(q_b, q_c, S_out) = (floor(b/S), floor(c/(a S^2)), a S^2)``."""
    s = Fraction(scale)
    fa, fb, fc = Fraction(a), Fraction(b), Fraction(c)
    return _floor(fb / s), _floor(fc / (fa * s * s)), fa * s * s


def i_poly(q: np.ndarray, q_b: int, q_c: int) -> NDArray[np.int64]:
    """Algorithm 1's run-time part: ``(q + q_b)^2 + q_c`` (int64; the caller bounds the range)."""
    t = np.asarray(q, dtype=np.int64) + q_b
    return t * t + q_c


# --- i-GELU -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IGeluConstants:
    """Prepare-time constants of i-GELU for one input scale."""

    q_b: int  # floor(b / S'), negative
    q_c: int  # floor((1/a) / S'^2), negative
    erf_shift: int
    q_one: int  # floor(1 / S_erf)
    scale_out: Fraction  # S * S_erf / 2 (negative)


def i_gelu_constants(
    scale: float, *, erf_shift: int = ERF_SHIFT, k: float = SQRT2_K
) -> IGeluConstants:
    """Constants of :func:`i_gelu` for input scale ``scale`` (exact rationals, then floors)."""
    s = _scale(scale, "i-GELU")
    if erf_shift < 0:
        raise QuantSpecError(f"i-GELU: erf_shift must be >= 0, got {erf_shift}")
    s_erf_in = s / Fraction(k)
    q_b, q_c, s_l = i_poly_constants(GELU_A, GELU_B, GELU_C, s_erf_in)
    # I-POLY's q_c is floor(c / (a S^2)): with c = 1 that is the released floor((1/a) / S'^2).
    s_erf = s_l * (1 << erf_shift)
    q_one = _floor(1 / s_erf)
    return IGeluConstants(q_b, q_c, erf_shift, q_one, s * s_erf / 2)


def i_gelu_bound(c: IGeluConstants, qmax_abs: int) -> int:
    """Largest ``|q_out|`` for ``|q| <= qmax_abs`` (for the int64 range check)."""
    erf_max = max(abs(c.q_b) ** 2 + abs(c.q_c), abs(c.q_c)) >> c.erf_shift
    return qmax_abs * (erf_max + 1 + abs(c.q_one))


def i_gelu(q: np.ndarray, c: IGeluConstants) -> NDArray[np.int64]:
    """i-GELU of integer inputs ``q``: returns ``q_out`` (int64) with real value
    ``q_out * c.scale_out``."""
    q = np.asarray(q, dtype=np.int64)
    _check_range(i_gelu_bound(c, int(np.abs(q).max(initial=0))), "i-GELU")
    sign = np.sign(q)
    clipped = np.minimum(np.abs(q), -c.q_b)
    erf = sign * i_poly(clipped, c.q_b, c.q_c)
    erf = erf >> c.erf_shift  # floor(L / 2^n)
    return q * (erf + c.q_one)


# --- i-exp and softmax ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IExpConstants:
    q_ln2: int
    q_b: int
    q_c: int
    scale_out: Fraction


def i_exp_constants(scale: float | Fraction) -> IExpConstants:
    """Constants of :func:`i_exp`: ``q_ln2 = floor(ln2 / S)`` and I-POLY's ``q_b``, ``q_c``."""
    s = Fraction(scale)
    q_ln2 = _floor(Fraction(LN2) / s)
    if q_ln2 < 1:
        raise QuantSpecError(
            f"i-exp: scale {float(s)!r} exceeds ln 2; the algorithm needs floor(ln2 / S) >= 1"
        )
    q_b, q_c, s_l = i_poly_constants(EXP_A, EXP_B, EXP_C, s)
    return IExpConstants(q_ln2, q_b, q_c, s_l)


def i_exp(q: np.ndarray, c: IExpConstants) -> NDArray[np.int64]:
    """i-exp of non-positive integers ``q``: ``q_out`` with real value ``q_out * c.scale_out``."""
    q = np.asarray(q, dtype=np.int64)
    if (q > 0).any():
        raise InvalidDataError("i-exp: inputs must be <= 0 (subtract the row maximum first)")
    _check_range(c.q_b**2 + abs(c.q_c) + c.q_ln2, "i-exp")
    z = (-q) // c.q_ln2
    p = q + z * c.q_ln2
    poly = i_poly(p, c.q_b, c.q_c)
    return poly >> np.minimum(z, 63)


@dataclass(frozen=True)
class IBertSoftmaxParams:
    """I-BERT softmax for the SOFTMAX graph op: i-exp constants, output bits and zero point."""

    exp: IExpConstants
    out_bits: int
    output_zero_point: int
    output_dtype: str
    name: str = "softmax"


def ibert_softmax(q: np.ndarray, c: IExpConstants, out_bits: int = 8) -> NDArray[np.int64]:
    """I-BERT softmax over the last axis: ``floor(e * floor(2^32 / sum e) / 2^(32 - out_bits))``
    with ``e = i-exp(q - max q)``; output scale ``2^-out_bits``."""
    q = np.asarray(q, dtype=np.int64)
    if not 1 <= out_bits <= 30:
        raise QuantSpecError(f"I-BERT softmax: out_bits must be in [1, 30], got {out_bits}")
    e = i_exp(q - q.max(axis=-1, keepdims=True), c)
    total = e.sum(axis=-1, keepdims=True)
    if (total <= 0).any():
        raise ExactnessError("I-BERT softmax: a row's exponentials sum to 0 (scale too coarse)")
    factor = (1 << 32) // total
    _check_range(int(e.max(initial=0)) * int(factor.max(initial=0)), "I-BERT softmax")
    return (e * factor) >> (32 - out_bits)


def pow2_exponent(scale: float, what: str) -> int:
    """``k`` of an output scale ``2^-k`` (``k >= 1``; the integer softmaxes' outputs), or
    :class:`QuantSpecError` naming ``what``."""
    m, e = math.frexp(float(scale))
    if m != 0.5 or e > 0:
        raise QuantSpecError(f"{what}: output scale must be 2^-k (k >= 1), got {scale!r}")
    return 1 - e


def prepare_ibert_softmax(t_in: Any, t_out: Any, beta: float, *, name: str) -> IBertSoftmaxParams:
    """SOFTMAX under the ``ibert`` profile: input scale ``s_in * beta``, output scale ``2^-k``."""
    k = pow2_exponent(t_out.scalar_scale(), f"SOFTMAX {name!r} (ibert)")
    c = i_exp_constants(Fraction(t_in.scalar_scale()) * Fraction(beta))
    return IBertSoftmaxParams(c, k, t_out.scalar_zero_point(), t_out.dtype, name)


def ibert_softmax_q(x: np.ndarray, p: IBertSoftmaxParams) -> np.ndarray:
    """Graph form: codes in, ``clamp(ibert_softmax + zp)`` out (zero points cancel in
    ``q - max``)."""
    x = np.asarray(x)
    if x.ndim == 0:
        raise ShapeError(f"SOFTMAX {p.name!r}: input needs an axis")
    y = ibert_softmax(x.astype(np.int64), p.exp, p.out_bits) + p.output_zero_point
    dt = QDType.parse(p.output_dtype)
    return np.clip(y, dt.qmin, dt.qmax).astype(dt.storage)


__all__ = [
    "ERF_SHIFT",
    "EXP_A",
    "EXP_B",
    "EXP_C",
    "GELU_A",
    "GELU_B",
    "GELU_C",
    "SQRT2_K",
    "IBertSoftmaxParams",
    "IExpConstants",
    "IGeluConstants",
    "i_exp",
    "i_exp_constants",
    "i_gelu",
    "i_gelu_bound",
    "i_gelu_constants",
    "i_poly",
    "i_poly_constants",
    "ibert_softmax",
    "ibert_softmax_q",
    "pow2_exponent",
    "prepare_ibert_softmax",
]
