"""Exact scalar definitions of :mod:`refq.fixedpoint`, from the mathematics, one value at a time.

Roundings are written as what they mean on rationals (:class:`~fractions.Fraction`), not as the
peers' bit tricks: ``SRDHM(a, b) = round_half_up(a*b / 2^31)`` with its one saturating case,
``RDBPOT(x, e) = round_half_away(x / 2^e)``, single rounding ``round_half_up(x*M / 2^(31-s))``,
``QuantizeMultiplier`` from the exact binary expansion of the float (no ``frexp``). Where the
peer's C overflows a signed type, :func:`wrap` spells out the two's-complement result that
:mod:`refq.fixedpoint` documents. gemmlowp's ``exp_on_negative_values``, Newton-Raphson
reciprocals, ``tanh`` / ``logistic``, TFLite's log and inverse square root are algorithms; here they
are restated step by step on scalars, and the tests bound their error against the real
functions.

:func:`self_check` compares the vectorized implementation with these definitions on seeded
random and edge-case inputs, for ``refq conformance``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
HALF = Fraction(1, 2)


# --- basic integer semantics -------------------------------------------------------------------


def wrap(v: int, bits: int = 32) -> int:
    """Two's-complement reduction of ``v`` to a signed ``bits``-bit integer."""
    m = 1 << bits
    v %= m
    return v - m if v >= m // 2 else v


def bounds(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def clamp(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else hi if v > hi else v


def round_half_up(q: Fraction) -> int:
    """Nearest integer to ``q``, ties toward +infinity."""
    return math.floor(q + HALF)


def round_half_away(q: Fraction) -> int:
    """Nearest integer to ``q``, ties away from zero."""
    n = math.floor(abs(q) + HALF)
    return n if q >= 0 else -n


# --- gemmlowp primitives ------------------------------------------------------------------------


def srdhm(a: int, b: int, bits: int = 32) -> int:
    """``a*b / 2^(bits-1)`` rounded half up; ``MIN * MIN`` saturates to ``MAX``."""
    lo, hi = bounds(bits)
    if a == b == lo:
        return hi
    return round_half_up(Fraction(a * b, 1 << (bits - 1)))


def rounding_divide_by_pot(x: int, exponent: int) -> int:
    """``x / 2^exponent`` rounded half away from zero."""
    return round_half_away(Fraction(x, 1 << exponent))


def saturating_rounding_multiply_by_pot(x: int, exponent: int, bits: int = 32) -> int:
    """``x * 2^exponent``: saturated when ``exponent >= 0``, rounded half away when negative."""
    lo, hi = bounds(bits)
    if exponent >= 0:
        return clamp(x * (1 << exponent), lo, hi)
    return rounding_divide_by_pot(x, -exponent)


def rounding_half_sum(a: int, b: int) -> int:
    """``(a + b) / 2`` rounded half away from zero."""
    return round_half_away(Fraction(a + b, 2))


def saturating_add(a: int, b: int, bits: int = 32) -> int:
    return clamp(a + b, *bounds(bits))


def saturating_sub(a: int, b: int, bits: int = 32) -> int:
    return clamp(a - b, *bounds(bits))


# --- QuantizeMultiplier -------------------------------------------------------------------------


def binary_exponent(value: Fraction) -> int:
    """The ``e`` with ``2^(e-1) <= |value| < 2^e`` (what ``frexp`` returns), for ``value != 0``."""
    v = abs(value)
    e = v.numerator.bit_length() - v.denominator.bit_length()  # within one of the answer
    while Fraction(2) ** e <= v:
        e += 1
    while Fraction(2) ** (e - 1) > v:
        e -= 1
    return e


def quantize_multiplier(m: float, rounding: str = "double") -> tuple[int, int]:
    """``M = round_half_away(m / 2^e * 2^31)`` with ``2^(e-1) <= |m| < 2^e``; carry, flush, cap."""
    value = Fraction(m)  # the float's exact binary value
    if value == 0:
        return 0, 0
    e = binary_exponent(value)
    fixed = round_half_away(value * Fraction(1 << 31) / Fraction(2) ** e)
    if fixed == 1 << 31:
        fixed, e = 1 << 30, e + 1
    if e < -31:
        return 0, 0
    if rounding == "single" and e > 30:
        return INT32_MAX, 30
    return fixed, e


# --- requantization -------------------------------------------------------------------------------


def multiply_by_quantized_multiplier(x: int, m: int, shift: int, rounding: str = "double") -> int:
    """TFLite MBQM: double = RDBPOT(SRDHM(wrap(x * 2^left), M), right); single = round half up."""
    if rounding == "double":
        left, right = max(shift, 0), max(-shift, 0)
        return rounding_divide_by_pot(srdhm(wrap(x * (1 << left)), m), right)
    return wrap(round_half_up(Fraction(x * m) / Fraction(2) ** (31 - shift)))


def cmsis_requantize(x: int, m: int, shift: int, rounding: str = "double") -> int:
    """CMSIS-NN ``arm_nn_requantize``: like TFLite but no saturation and a two-step final round."""
    if rounding == "double":
        left, right = max(shift, 0), max(-shift, 0)
        high = wrap(round_half_up(Fraction(wrap(x * (1 << left)) * m, 1 << 31)))
        return rounding_divide_by_pot(high, right)
    t = wrap(math.floor(Fraction(x * m) / Fraction(2) ** (30 - shift)))
    return math.floor(Fraction(wrap(t + 1), 2))


def reduce_multiplier(m: int) -> int:
    """``m / 2^16`` rounded half up, capped at 0x7FFF."""
    return min(round_half_up(Fraction(m, 1 << 16)), 0x7FFF)


def multiply_by_quantized_multiplier_s64(x: int, m: int, shift: int) -> int:
    """TFLM int64 MBQM: ``round_half_up(x * reduce(M) / 2^(15 - shift))`` cast to int32."""
    return wrap(round_half_up(Fraction(x * reduce_multiplier(m)) / Fraction(2) ** (15 - shift)))


def cmsis_requantize_s64(acc: int, reduced: int, shift: int) -> int:
    """CMSIS-NN: ``t = int32(floor(acc*m / 2^(14-shift)))``; ``floor(int32(t + 1) / 2)``."""
    t = wrap(math.floor(Fraction(acc * reduced) / Fraction(2) ** (14 - shift)))
    return math.floor(Fraction(wrap(t + 1), 2))


# --- gemmlowp fixed-point functions, step by step ----------------------------------------------

EXP_BARREL = (
    (-2, 1672461947),
    (-1, 1302514674),
    (0, 790015084),
    (1, 290630308),
    (2, 39332535),
    (3, 720401),
    (4, 242),
)


def _const(raw32: int, bits: int) -> int:
    """gemmlowp's fixed-point constants are int32 raw values, rounded by 32 - bits for int16."""
    return rounding_divide_by_pot(raw32, 32 - bits)


def _one(integer_bits: int, bits: int) -> int:
    return bounds(bits)[1] if integer_bits == 0 else 1 << (bits - 1 - integer_bits)


def exp_on_interval_between_negative_one_quarter_and_0_excl(a: int, bits: int = 32) -> int:
    """exp(a) for a in [-1/4, 0): Taylor series to 4th order around -1/8, all values Q0."""
    lo, hi = bounds(bits)
    c = _const(1895147668, bits)  # exp(-1/8)
    third = _const(715827883, bits)  # 1/3
    x = wrap(a + (1 << (bits - 4)), bits)  # a + 1/8
    x2 = srdhm(x, x, bits)
    x3 = srdhm(x2, x, bits)
    x4 = srdhm(x2, x2, bits)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    inner = wrap(srdhm(wrap(x4_over_4 + x3, bits), third, bits) + x2, bits)
    poly = rounding_divide_by_pot(inner, 1)  # x^4/24 + x^3/6 + x^2/2
    total = c + srdhm(c, wrap(x + poly, bits), bits)
    return clamp(total, lo, hi) if bits == 16 else wrap(total, bits)


def exp_on_negative_values(a: int, integer_bits: int, bits: int = 32) -> int:
    """gemmlowp exp for Q(integer_bits) input: Taylor on ``a mod 1/4 - 1/4``, then the barrel."""
    fractional = bits - 1 - integer_bits
    quarter = 1 << (fractional - 2)
    r = (a & (quarter - 1)) - quarter  # a mod 1/4, minus 1/4: in [-1/4, 0)
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_rounding_multiply_by_pot(r, integer_bits, bits), bits
    )
    remainder = wrap(r - a, bits)  # a = r - remainder: the multiples of 1/4 still to apply
    for exponent, multiplier in EXP_BARREL:
        if integer_bits > exponent and (remainder >> (fractional + exponent)) & 1:
            result = srdhm(result, _const(multiplier, bits), bits)
    if integer_bits > 5 and a < _const(-(1 << (36 - integer_bits)), bits):
        result = 0  # below -32
    if a == 0:
        result = _one(0, bits)
    return result


def _newton_half_reciprocal(a: int, bits: int) -> int:
    """x ~ 2/(1+a) in Q2: three Newton steps from 48/17 - 32/17 * d, d = (1+a)/2."""
    d = rounding_half_sum(a, _one(0, bits))
    x = wrap(_const(1515870810, bits) + srdhm(d, _const(-1010580540, bits), bits), bits)
    for _ in range(3):
        e = wrap(_one(2, bits) - srdhm(d, x, bits), bits)
        x = wrap(x + saturating_rounding_multiply_by_pot(srdhm(x, e, bits), 2, bits), bits)
    return x


def one_over_one_plus_x_for_x_in_0_1(a: int, bits: int = 32) -> int:
    return saturating_rounding_multiply_by_pot(_newton_half_reciprocal(a, bits), 1, bits)


def one_minus_x_over_one_plus_x_for_x_in_0_1(a: int, bits: int = 32) -> int:
    x = _newton_half_reciprocal(a, bits)
    return saturating_rounding_multiply_by_pot(wrap(x - _one(2, bits), bits), 2, bits)


def gemmlowp_tanh(a: int, integer_bits: int, bits: int = 32) -> int:
    """tanh(a) = -((1 - exp(2n)) / (1 + exp(2n))) with n = -|a|, sign restored; tanh(0) = 0."""
    if a == 0:
        return 0
    n = a if a < 0 else wrap(-a, bits)
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(
        exp_on_negative_values(n, integer_bits + 1, bits), bits
    )
    return wrap(-t, bits) if a < 0 else t


def gemmlowp_logistic(a: int, integer_bits: int, bits: int = 32) -> int:
    """logistic(|a|) = 1/(1 + exp(-|a|)); negative inputs take One minus it; 1/2 at zero."""
    if a == 0:
        return _const(1 << 30, bits)
    abs_a = a if a > 0 else wrap(-a, bits)
    p = one_over_one_plus_x_for_x_in_0_1(
        exp_on_negative_values(wrap(-abs_a, bits), integer_bits, bits), bits
    )
    return p if a > 0 else wrap(_one(0, bits) - p, bits)


def log_x_for_x_greater_than_or_equal_to_1(z: int, input_integer_bits: int) -> int:
    """TFLite's fixed-point ``ln`` of a Q(ib) value >= 1, Q5.26 out, in a Q6.25 accumulator.

    Exponent: two estimates, ``ib - clz(z) + 1/4`` with mantissa ``2^-1/2 * z * 2^(clz(z)-1)``
    (rescaled to Q0), and ``ib - hb - 1/4`` with mantissa ``z * 2^hb``, ``hb = clz(z 2^-1/2) - 1``;
    keep the smaller mantissa and the larger exponent. Mantissa ``r`` near ``2^-1/4``:
    ``ln r ~ (q r + an q^3) / (1 + p (ai + q + ad q^2) + af q)`` with ``q = 2(r - 2^-1/4)``,
    ``p = (r + 2^-1/4) / 2``. Result ``e ln 2`` plus that, rescaled from Q6 to Q5.
    """
    ib, acc = input_integer_bits, 6
    root2 = 1518500250  # 2^-1/2
    root4 = 1805811301  # 2^-1/4
    pot = saturating_rounding_multiply_by_pot
    quarter = pot(1 << 29, -acc)
    ha = count_leading_zeros(z)
    r_a = pot(srdhm(pot(z, ha - 1), root2), 1)
    e_a = saturating_add(pot(ib - ha, 31 - acc), quarter)
    hb = count_leading_zeros(srdhm(z, root2)) - 1
    r_b = pot(z, hb)
    e_b = saturating_sub(pot(ib - hb, 31 - acc), quarter)
    r, e = min(r_a, r_b), max(e_a, e_b)
    p = rounding_half_sum(r, root4)
    q = wrap(2 * wrap(r - root4))
    q2 = srdhm(q, q)
    num = wrap(srdhm(q, r) + srdhm(srdhm(q, q2), 117049297))
    inner = wrap(wrap(1057819769 + q) + srdhm(127690142, q2))
    x = wrap(srdhm(p, inner) + srdhm(638450708, q))
    total = wrap(srdhm(e, 1488522236) + srdhm(pot(num, -acc), one_over_one_plus_x_for_x_in_0_1(x)))
    return pot(total, 1)


# --- bits, roots -----------------------------------------------------------------------------


def count_leading_zeros(x: int) -> int:
    """Leading zero bits of the 32-bit pattern of ``x``."""
    u = x & 0xFFFFFFFF
    n = 0
    for bit in range(31, -1, -1):
        if (u >> bit) & 1:
            break
        n += 1
    return n


def count_leading_sign_bits(x: int) -> int:
    """Bits after the sign bit equal to it (gcc ``__builtin_clrsb`` on int32)."""
    u = x & 0xFFFFFFFF
    sign = u >> 31
    n = 0
    for bit in range(30, -1, -1):
        if (u >> bit) & 1 != sign:
            break
        n += 1
    return n


def isqrt(n: int) -> int:
    return math.isqrt(n)


def inv_sqrt_quantized_multiplier_exp(x: int, reverse_shift: int = -1) -> tuple[int, int]:
    """TFLite GetInvSqrtQuantizedMultiplierExp, restated on scalars."""
    if x <= 1:
        return INT32_MAX, 0
    shift = 11
    while x >= 1 << 29:
        x //= 4
        shift += 1
    pairs = (count_leading_zeros(x) - 1) // 2 - 1
    shift -= pairs
    x <<= 2 * pairs
    half_input = rounding_divide_by_pot(x >> 1, 1)
    y = 1 << 28  # 1.0 in Q3.28
    for _ in range(5):  # y <- 1.5 y - (x/2) y^3
        y3 = saturating_rounding_multiply_by_pot(srdhm(srdhm(y, y), y), 6)
        y = saturating_rounding_multiply_by_pot(wrap(srdhm(3 << 27, y) - srdhm(half_input, y3)), 3)
    m = srdhm(y, 1518500250)  # times sqrt(2)/2
    if shift < 0:
        m, shift = wrap(m << -shift), 0
    return m, shift * reverse_shift


def rsqrt_fixed_point(value: int, m: int, shift: int, rounding: str = "double") -> int:
    inv_m, inv_s = inv_sqrt_quantized_multiplier_exp(value, -1)
    data = multiply_by_quantized_multiplier(1, inv_m, inv_s + 20, rounding)
    return multiply_by_quantized_multiplier(data, m, shift - 20, rounding)


# --- run-time self-check --------------------------------------------------------------------------


class SelfCheckRow(NamedTuple):
    """One line of the conformance table: ``cases`` values compared, all equal or not."""

    op: str
    variant: str
    cases: int
    bit_exact: bool


EDGE_INT32 = (
    INT32_MIN,
    INT32_MIN + 1,
    -(1 << 30),
    -2,
    -1,
    0,
    1,
    2,
    1 << 30,
    INT32_MAX - 1,
    INT32_MAX,
)


def _int32_sample(rng, n: int) -> list[int]:
    values = list(EDGE_INT32)
    # Mix uniform values with values of random magnitude (uniform int32 are almost all huge).
    for _ in range(n - len(values)):
        if rng.random() < 0.5:
            values.append(int(rng.integers(INT32_MIN, INT32_MAX, endpoint=True)))
        else:
            k = int(rng.integers(0, 32))
            values.append(int(rng.integers(-(1 << k), 1 << k, endpoint=True)) if k < 31 else 0)
    return values[:n]


def self_check(samples: int = 400, seed: int = 0) -> list[SelfCheckRow]:
    """Compare :mod:`refq.fixedpoint` with these definitions on ``samples`` inputs per function.

    Inputs: seeded random int32 values of every magnitude plus INT32_MIN/MAX, 0, +-1, random
    shifts including -31 and 30, real multipliers from 2^-40 to 2^40 including exact powers of
    two. Returns one row per function (and rounding variant).
    """
    import numpy as np

    from refq import fixedpoint as fp

    rng = np.random.default_rng(seed)
    rows: list[SelfCheckRow] = []

    def row(op: str, variant: str, got: object, expected: list[int]) -> None:
        got_list = [int(v) for v in np.asarray(got).ravel()]
        rows.append(SelfCheckRow(op, variant, len(expected), got_list == expected))

    x = _int32_sample(rng, samples)
    y = _int32_sample(rng, samples)[::-1]
    xa, ya = np.array(x), np.array(y)
    shifts = [int(s) for s in rng.integers(-31, 31, samples)]
    shifts[:2] = [-31, 30]
    mults = [int(m) for m in rng.integers(1 << 30, INT32_MAX, samples, endpoint=True)]
    mults[:3] = [0, 1 << 30, INT32_MAX]
    exps = [int(e) for e in rng.integers(0, 32, samples)]
    exps[:2] = [0, 31]

    row("srdhm", "int32", fp.srdhm(xa, ya), [srdhm(a, b) for a, b in zip(x, y, strict=True)])
    row(
        "rounding_divide_by_pot",
        "int32",
        fp.rounding_divide_by_pot(xa, exps),
        [rounding_divide_by_pot(a, e) for a, e in zip(x, exps, strict=True)],
    )
    pots = [e if s % 2 else -e for e, s in zip(exps, shifts, strict=True)]
    row(
        "saturating_rounding_multiply_by_pot",
        "int32",
        fp.saturating_rounding_multiply_by_pot(xa, pots),
        [saturating_rounding_multiply_by_pot(a, e) for a, e in zip(x, pots, strict=True)],
    )
    for rounding in ("double", "single"):
        row(
            "multiply_by_quantized_multiplier",
            rounding,
            fp.multiply_by_quantized_multiplier(xa, mults, shifts, rounding),
            [
                multiply_by_quantized_multiplier(a, m, s, rounding)
                for a, m, s in zip(x, mults, shifts, strict=True)
            ],
        )
        row(
            "cmsis_requantize",
            rounding,
            fp.cmsis_requantize(xa, mults, shifts, rounding),
            [cmsis_requantize(a, m, s, rounding) for a, m, s in zip(x, mults, shifts, strict=True)],
        )
    acc = [int(v) for v in rng.integers(-(1 << 47), 1 << 47, samples)]
    acc[:2] = [-(1 << 47), (1 << 47) - 1]
    s64 = [min(s, 7) for s in shifts]
    row(
        "multiply_by_quantized_multiplier_s64",
        "tflm",
        fp.multiply_by_quantized_multiplier_s64(acc, mults, s64),
        [
            multiply_by_quantized_multiplier_s64(a, m, s)
            for a, m, s in zip(acc, mults, s64, strict=True)
        ],
    )
    reduced = [reduce_multiplier(m) for m in mults]
    row("reduce_multiplier", "cmsis-nn", fp.reduce_multiplier(mults), reduced)
    row(
        "cmsis_requantize_s64",
        "cmsis-nn",
        fp.cmsis_requantize_s64(acc, reduced, s64),
        [cmsis_requantize_s64(a, m, s) for a, m, s in zip(acc, reduced, s64, strict=True)],
    )
    reals = [float(2.0 ** rng.uniform(-40, 40)) for _ in range(samples)]
    reals[:4] = [1.0, 0.5, 2.0**-31, 1.0 - 2.0**-33]
    for rounding in ("double", "single"):
        got_m, got_s = fp.quantize_multipliers(reals, rounding)
        rows.append(
            SelfCheckRow(
                "quantize_multiplier",
                rounding,
                samples,
                all(
                    (int(gm), int(gs))
                    == quantize_multiplier(r, rounding)
                    == fp.quantize_multiplier(r, rounding)
                    for gm, gs, r in zip(got_m, got_s, reals, strict=True)
                ),
            )
        )
    negative = [-abs(v) for v in x]
    row(
        "exp_on_negative_values",
        "int32 Q5.26",
        fp.exp_on_negative_values(negative, 5),
        [exp_on_negative_values(v, 5) for v in negative],
    )
    unit = [abs(v) for v in x if v != INT32_MIN]
    row(
        "one_over_one_plus_x_for_x_in_0_1",
        "int32",
        fp.one_over_one_plus_x_for_x_in_0_1(unit),
        [one_over_one_plus_x_for_x_in_0_1(v) for v in unit],
    )
    row("gemmlowp_tanh", "int32 Q4.27", fp.gemmlowp_tanh(xa, 4), [gemmlowp_tanh(v, 4) for v in x])
    row(
        "gemmlowp_logistic",
        "int32 Q4.27",
        fp.gemmlowp_logistic(xa, 4),
        [gemmlowp_logistic(v, 4) for v in x],
    )
    above_zero = [max(abs(v), 1) for v in x if v != INT32_MIN]
    for ib in (0, 12, 31):
        row(
            "log_x_for_x_greater_than_or_equal_to_1",
            f"int32 Q{ib} -> Q5.26",
            fp.log_x_for_x_greater_than_or_equal_to_1(above_zero, ib),
            [log_x_for_x_greater_than_or_equal_to_1(v, ib) for v in above_zero],
        )
    positive = [abs(v) for v in x if v != INT32_MIN]
    got = fp.inv_sqrt_quantized_multiplier_exp(positive)
    rows.append(
        SelfCheckRow(
            "inv_sqrt_quantized_multiplier_exp",
            "tflm",
            len(positive),
            [(int(m), int(s)) for m, s in zip(*got, strict=True)]
            == [inv_sqrt_quantized_multiplier_exp(v) for v in positive],
        )
    )
    row(
        "count_leading_zeros",
        "uint32",
        fp.count_leading_zeros(xa),
        [count_leading_zeros(v) for v in x],
    )
    row(
        "count_leading_sign_bits",
        "int32",
        fp.count_leading_sign_bits(xa),
        [count_leading_sign_bits(v) for v in x],
    )
    x16 = [wrap(v, 16) for v in x]
    y16 = [wrap(v, 16) for v in y]
    row(
        "srdhm",
        "int16",
        fp.srdhm(x16, y16, bits=16),
        [srdhm(a, b, 16) for a, b in zip(x16, y16, strict=True)],
    )
    row(
        "gemmlowp_tanh",
        "int16 Q3.12",
        fp.gemmlowp_tanh(x16, 3, bits=16),
        [gemmlowp_tanh(v, 3, 16) for v in x16],
    )
    squares = [int(v) for v in rng.integers(0, 1 << 63, samples, dtype=np.int64)]
    squares[:3] = [0, (1 << 63) - 1, (3037000499**2)]
    row("isqrt", "int64", fp.isqrt(squares), [isqrt(v) for v in squares])
    return rows
