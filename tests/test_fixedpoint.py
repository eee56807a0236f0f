"""Property tests of refq.fixedpoint against exact integer / Fraction arithmetic, and peer checks.

Primitives are checked against their mathematical definitions, written out here with Python
ints and Fractions on refq.oracle.fixedpoint's round_half_up / round_half_away / wrap; the
gemmlowp algorithms (exp, Newton reciprocal, tanh, logistic, inverse sqrt, TFLite's log) against
the step-by-step scalar oracle plus error bounds against the real functions; the vectorized forms
elementwise against scalar calls. Peer tests run the same arithmetic through
TFLite Micro (double rounding) and LiteRT's reference FULLY_CONNECTED (a float64 product).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from refq import fixedpoint as fp
from refq import strategies as rs
from refq.errors import InvalidDataError, QuantSpecError, RefqError, UnsupportedError
from refq.kernels.requant import float64_requant, requantize
from refq.oracle import fixedpoint as oracle
from tests.conftest import require_module
from tests.peers import run_litert, run_tflm

INT32_MIN, INT32_MAX = fp.INT32_MIN, fp.INT32_MAX
PROPERTY = settings(max_examples=250, deadline=None)
HALF = Fraction(1, 2)


def lists(strategy, max_size: int = 12):
    return st.lists(strategy, min_size=1, max_size=max_size)


def as_ints(values) -> list[int]:
    return [int(v) for v in np.asarray(values).ravel()]


# --- SRDHM, RDBPOT, SaturatingRoundingMultiplyByPOT ----------------------------------------------


@PROPERTY
@given(st.data())
@example(None)
def test_srdhm_is_round_half_up_of_product_over_2_31(data) -> None:
    if data is None:  # the saturating case and its neighbours, always
        a, b = [INT32_MIN, INT32_MIN, INT32_MIN, INT32_MAX, -1], [INT32_MIN, INT32_MAX, 1, -1, 1]
    else:
        a = data.draw(lists(rs.int32_values()))
        b = data.draw(st.lists(rs.int32_values(), min_size=len(a), max_size=len(a)))
    got = as_ints(fp.srdhm(np.array(a), np.array(b)))
    for x, y, g in zip(a, b, got, strict=True):
        expected = (
            INT32_MAX if x == y == INT32_MIN else oracle.round_half_up(Fraction(x * y, 1 << 31))
        )
        assert g == expected, (x, y)
        assert INT32_MIN <= g <= INT32_MAX
    assert fp.srdhm(INT32_MIN, INT32_MIN) == INT32_MAX


@PROPERTY
@given(st.data())
def test_srdhm_int16_is_round_half_up_of_product_over_2_15(data) -> None:
    a = data.draw(lists(rs.int16_values()))
    b = data.draw(st.lists(rs.int16_values(), min_size=len(a), max_size=len(a)))
    got = fp.srdhm(np.array(a, np.int16), np.array(b, np.int16), bits=16)
    assert got.dtype == np.int16
    for x, y, g in zip(a, b, as_ints(got), strict=True):
        expected = 32767 if x == y == -32768 else oracle.round_half_up(Fraction(x * y, 1 << 15))
        assert g == expected


@PROPERTY
@given(st.data())
def test_rounding_divide_by_pot_rounds_half_away_from_zero(data) -> None:
    x = data.draw(lists(rs.int32_values()))
    e = data.draw(st.lists(rs.pot_exponents(), min_size=len(x), max_size=len(x)))
    got = as_ints(fp.rounding_divide_by_pot(np.array(x), np.array(e)))
    assert got == [oracle.round_half_away(Fraction(v, 1 << k)) for v, k in zip(x, e, strict=True)]


def test_rounding_divide_by_pot_edges() -> None:
    # Exact ties go away from zero; exponent 31 on INT32_MIN is -1 (exactly -1), 0 is identity.
    assert fp.rounding_divide_by_pot([5, -5, 6, -6, 7, -7], 1).tolist() == [3, -3, 3, -3, 4, -4]
    assert fp.rounding_divide_by_pot(INT32_MIN, 31) == -1
    assert fp.rounding_divide_by_pot(INT32_MAX, 31) == 1
    assert fp.rounding_divide_by_pot(-(1 << 30), 31) == -1  # -1/2 -> away
    assert fp.rounding_divide_by_pot((1 << 30) - 1, 31) == 0
    assert fp.rounding_divide_by_pot(123, 0) == 123


@PROPERTY
@given(st.data())
def test_saturating_rounding_multiply_by_pot(data) -> None:
    x = data.draw(lists(rs.int32_values()))
    e = data.draw(st.lists(st.integers(-31, 31), min_size=len(x), max_size=len(x)))

    def exact(v: int, k: int) -> int:
        if k >= 0:
            return min(max(v * (1 << k), INT32_MIN), INT32_MAX)
        return oracle.round_half_away(Fraction(v, 1 << -k))

    got = as_ints(fp.saturating_rounding_multiply_by_pot(np.array(x), np.array(e)))
    assert got == [exact(v, k) for v, k in zip(x, e, strict=True)]
    # gemmlowp Rescale<dst>(FixedPoint<src>): the same operation by src - dst
    src, dst = data.draw(st.integers(0, 31)), data.draw(st.integers(0, 31))
    assert as_ints(fp.rescale(np.array(x), src, dst)) == [exact(v, src - dst) for v in x]


@PROPERTY
@given(st.data())
def test_rounding_half_sum_and_saturating_add_sub(data) -> None:
    a = data.draw(lists(rs.int32_values()))
    b = data.draw(st.lists(rs.int32_values(), min_size=len(a), max_size=len(a)))
    av, bv = np.array(a), np.array(b)
    assert as_ints(fp.rounding_half_sum(av, bv)) == [
        oracle.round_half_away(Fraction(x + y, 2)) for x, y in zip(a, b, strict=True)
    ]
    clip = [min(max(x + y, INT32_MIN), INT32_MAX) for x, y in zip(a, b, strict=True)]
    assert as_ints(fp.saturating_add(av, bv)) == clip
    clip = [min(max(x - y, INT32_MIN), INT32_MAX) for x, y in zip(a, b, strict=True)]
    assert as_ints(fp.saturating_sub(av, bv)) == clip


# --- QuantizeMultiplier --------------------------------------------------------------------------


@PROPERTY
@given(lists(rs.real_multipliers()), st.sampled_from(["double", "single"]))
def test_quantize_multiplier_reconstruction(reals, rounding) -> None:
    got_m, got_s = fp.quantize_multipliers(reals, rounding)
    for m, vm, vs in zip(reals, got_m.tolist(), got_s.tolist(), strict=True):
        fixed, shift = fp.quantize_multiplier(m, rounding)
        assert (fixed, shift) == (vm, vs)  # vectorized == scalar
        exact = Fraction(m)
        # The 2^31 carry comes first: values within 2^-32 (relative) below a power of two
        # count as that power. Flushed when the exponent is then below -31 ...
        below = 1 - Fraction(1, 1 << 32)
        if exact < Fraction(1, 1 << 32) * below:
            assert (fixed, shift) == (0, 0)
            continue
        # ... saturated (single rounding) when it exceeds 30.
        if rounding == "single" and exact >= (1 << 30) * below:
            assert (fixed, shift) == (INT32_MAX, 30)
            continue
        assert 1 << 30 <= fixed <= INT32_MAX
        # M is the nearest integer (ties away) to m * 2^(31 - shift) ...
        assert fixed == oracle.round_half_away(exact * Fraction(2) ** (31 - shift))
        # ... so the reconstruction is within 2^-31 relative of m.
        error = abs(fixed * Fraction(2) ** (shift - 31) - exact) / exact
        assert error <= Fraction(1, 1 << 31)


def test_quantize_multiplier_special_cases() -> None:
    assert fp.quantize_multiplier(0.0) == (0, 0)
    for e in range(-31, 31):  # powers of two are exact: M = 2^30, shift = e + 1
        assert fp.quantize_multiplier(2.0**e) == (1 << 30, e + 1)
    assert fp.quantize_multiplier(2.0**-32) == (1 << 30, -31)  # 0.5 * 2^-31: kept
    assert fp.quantize_multiplier(2.0**-33) == (0, 0)  # 0.5 * 2^-32: flushed
    # the carry happens before the flush: just below 2^-32 rounds up to 2^-32 and survives
    assert fp.quantize_multiplier(math.ldexp(1.0 - 2.0**-53, -32)) == (1 << 30, -31)
    assert fp.quantize_multiplier(1.0 - 2.0**-33) == (1 << 30, 1)  # rounds to 2^31: carry
    tie = math.ldexp(2 * (1 << 30) + 1, -32)  # q * 2^31 = 2^30 + 1/2 exactly
    assert fp.quantize_multiplier(tie) == ((1 << 30) + 1, 0)
    assert fp.quantize_multiplier(-0.75) == (-(3 << 29), 0)  # negative multipliers as the peer
    assert fp.quantize_multiplier(2.0**40) == (1 << 30, 41)
    assert fp.quantize_multiplier(2.0**40, "single") == (INT32_MAX, 30)
    assert fp.quantize_multiplier_smaller_than_one(0.75) == (3 << 29, 0)
    assert fp.quantize_multiplier_greater_than_one(3.0) == (3 << 29, 2)
    for bad in (float("nan"), float("inf"), "x"):
        with pytest.raises(QuantSpecError):
            fp.quantize_multiplier(bad)
    with pytest.raises(QuantSpecError, match="not in"):
        fp.quantize_multiplier_smaller_than_one(1.0)
    with pytest.raises(QuantSpecError, match=r"rounds to 1\.0"):
        fp.quantize_multiplier_smaller_than_one(1.0 - 2.0**-34)
    with pytest.raises(QuantSpecError, match="not > 1"):
        fp.quantize_multiplier_greater_than_one(0.5)
    with pytest.raises(QuantSpecError, match="index"):
        fp.quantize_multipliers([1.0, float("nan")])
    with pytest.raises(UnsupportedError):
        fp.quantize_multiplier(0.5, "triple")


# --- MultiplyByQuantizedMultiplier ---------------------------------------------------------------


def exact_double(x: int, m: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    scaled = oracle.wrap(x << left)  # the peer's int32 x * (1 << left) wraps
    high = (
        INT32_MAX
        if scaled == m == INT32_MIN
        else oracle.round_half_up(Fraction(scaled * m, 1 << 31))
    )
    return oracle.round_half_away(Fraction(high, 1 << right))


def exact_single(x: int, m: int, shift: int) -> int:
    return oracle.wrap(oracle.round_half_up(Fraction(x * m) / Fraction(2) ** (31 - shift)))


def _both_roundings(cases) -> tuple[list[int], list[int]]:
    """MultiplyByQuantizedMultiplier of ``[(x, (M, shift))]``, vectorized: (double, single)."""
    x = np.array([c[0] for c in cases])
    m = np.array([c[1][0] for c in cases])
    s = np.array([c[1][1] for c in cases])
    return tuple(
        as_ints(fp.multiply_by_quantized_multiplier(x, m, s, r)) for r in ("double", "single")
    )


@PROPERTY
@given(lists(st.tuples(rs.int32_values(), rs.quantized_multipliers())))
def test_multiply_by_quantized_multiplier_both_roundings(cases) -> None:
    double, single = _both_roundings(cases)
    for (v, (mm, sh)), d, g in zip(cases, double, single, strict=True):
        assert d == exact_double(v, mm, sh)
        assert g == exact_single(v, mm, sh)


def expected_double_minus_single(x: int, m: int, shift: int) -> int:
    """Derived from exact arithmetic (M >= 0); see refq.fixedpoint's module docstring.

    shift < 0 (r = -shift): with P = x*M, D = 2^(31+r), both results are floors of
    (P + c) / D; single uses c = D/2, double c = D/2 + 2^30 (P >= -2^30) or D/2 - 2^30. So they
    differ exactly when a multiple of D falls between the two numerators.
    shift = 0: both are round_half_up(P / 2^31). shift > 0: double computes with x*2^s wrapped
    by k*2^32, i.e. single - 2kM, compared after the single result's own int32 wrap.
    """
    if shift == 0:
        return 0
    if shift > 0:
        scaled = x << shift
        k = (scaled - oracle.wrap(scaled)) >> 32
        return oracle.wrap(-2 * k * m)
    p, d = x * m, 1 << (31 - shift)
    r = (p + d // 2) % d
    if p >= -(1 << 30):
        return 1 if r >= d - (1 << 30) else 0
    return -1 if r < (1 << 30) else 0


@PROPERTY
@given(lists(st.tuples(rs.int32_values(), rs.quantized_multipliers())))
def test_single_and_double_rounding_differ_exactly_where_derived(cases) -> None:
    double, single = _both_roundings(cases)
    for (v, (mm, sh)), d, g in zip(cases, double, single, strict=True):
        assert oracle.wrap(d - g) == expected_double_minus_single(v, mm, sh), (v, mm, sh)


def test_single_and_double_rounding_near_ties_all_shifts() -> None:
    """Seeded inputs aimed at the single rounding's ties, every shift: the derived condition
    holds both ways and both outcomes (agree / differ) really occur."""
    rng = np.random.default_rng(12)
    outcomes = {0: 0, 1: 0, -1: 0, "wrap": 0}
    for shift in range(-31, 31):
        m = rng.integers(1 << 30, INT32_MAX, 64, endpoint=True)
        denominator = 2.0 ** (31 - shift)
        k = rng.integers(-(1 << 20), 1 << 20, 64)
        x = np.rint((k + 0.5) * denominator / m) + rng.integers(-2, 3, 64)
        x = np.clip(x, INT32_MIN, INT32_MAX).astype(np.int64)
        d = fp.multiply_by_quantized_multiplier(x, m, shift, "double").astype(np.int64)
        g = fp.multiply_by_quantized_multiplier(x, m, shift, "single").astype(np.int64)
        for v, mm, dv, gv in zip(x.tolist(), m.tolist(), d.tolist(), g.tolist(), strict=True):
            want = expected_double_minus_single(v, mm, shift)
            assert oracle.wrap(dv - gv) == want
            outcomes["wrap" if shift > 0 and want else want] += 1
    assert all(count > 0 for count in outcomes.values()), outcomes


@PROPERTY
@given(lists(st.tuples(rs.int32_values(), rs.int32_values(), rs.shifts())))
def test_mixed_per_element_parameters_equal_scalar_calls(cases) -> None:
    x, m, s = (np.array(c) for c in zip(*cases, strict=True))
    for rounding in ("double", "single"):
        vec = as_ints(fp.multiply_by_quantized_multiplier(x, m, s, rounding))
        assert vec == [
            fp.multiply_by_quantized_multiplier(int(a), int(b), int(c), rounding)
            for a, b, c in cases
        ]
        vec = as_ints(fp.cmsis_requantize(x, m, s, rounding))
        assert vec == [oracle.cmsis_requantize(a, b, c, rounding) for a, b, c in cases]
    e = np.abs(s)
    assert as_ints(fp.rounding_divide_by_pot(x, e)) == [
        fp.rounding_divide_by_pot(int(a), int(b)) for a, b in zip(x, e, strict=True)
    ]
    assert as_ints(fp.saturating_rounding_multiply_by_pot(x, s)) == [
        fp.saturating_rounding_multiply_by_pot(int(a), int(b)) for a, b in zip(x, s, strict=True)
    ]


def test_per_channel_broadcasting() -> None:
    x = np.arange(-630, 630, 7, dtype=np.int32).reshape(3, -1)
    m = np.array([1 << 30, 1518500250, INT32_MAX])
    s = np.array([-3, 0, 2])
    got = fp.multiply_by_quantized_multiplier(x, m[:, None], s[:, None])
    assert got.dtype == np.int32 and got.shape == x.shape
    for c in range(3):
        assert as_ints(got[c]) == [exact_double(int(v), int(m[c]), int(s[c])) for v in x[c]]


@PROPERTY
@given(lists(st.tuples(rs.int32_values(), rs.quantized_multipliers())))
@example([(1, (INT32_MAX, 30)), (-1, (INT32_MAX, 30)), (INT32_MIN, (INT32_MAX, 30))])
def test_cmsis_requantize_against_exact_and_tflite(cases) -> None:
    x, m, s = (np.array(c) for c in zip(*[(a, b, c) for a, (b, c) in cases], strict=True))
    single = as_ints(fp.cmsis_requantize(x, m, s, "single"))
    double = as_ints(fp.cmsis_requantize(x, m, s, "double"))
    tfl_double = as_ints(fp.multiply_by_quantized_multiplier(x, m, s, "double"))
    tfl_single = as_ints(fp.multiply_by_quantized_multiplier(x, m, s, "single"))
    for i, (v, (mm, sh)) in enumerate(cases):
        t = math.floor(Fraction(v * mm) / Fraction(2) ** (30 - sh))
        assert single[i] == math.floor(Fraction(oracle.wrap(oracle.wrap(t) + 1), 2))
        # Same as TFLite's single rounding exactly when t fits int32 with room for the +1.
        assert (single[i] == tfl_single[i]) == (
            INT32_MIN <= t < INT32_MAX or (t + 1 - oracle.wrap(t + 1)) >> 32 & 1 == 0
        )
        assert double[i] == tfl_double[i]  # M >= 0: never the INT32_MIN * INT32_MIN case


# --- int64 (16x8) requantization -----------------------------------------------------------------


@PROPERTY
@given(lists(st.tuples(rs.int64_accumulators(), rs.quantized_multipliers(-31, 7))))
@example(  # t = INT32_MAX (CMSIS-NN's t + 1 wraps), t + 1 = INT32_MIN, t + 1 = INT32_MIN - 1
    [(2**38 - 123, (1 << 30, -7)), (-(2**38) - 128, (1 << 30, -7)), (-(2**38) - 256, (1 << 30, -7))]
)
def test_s64_requantization_against_fractions(cases) -> None:
    acc = np.array([c[0] for c in cases], dtype=np.int64)
    m = np.array([c[1][0] for c in cases])
    s = np.array([c[1][1] for c in cases])
    reduced = as_ints(fp.reduce_multiplier(m))
    tflm = as_ints(fp.multiply_by_quantized_multiplier_s64(acc, m, s))
    cmsis = as_ints(fp.cmsis_requantize_s64(acc, np.array(reduced), s))
    for i, (a, (mm, sh)) in enumerate(cases):
        assert reduced[i] == min(oracle.round_half_up(Fraction(mm, 1 << 16)), 0x7FFF)
        assert tflm[i] == oracle.wrap(
            oracle.round_half_up(Fraction(a * reduced[i]) / Fraction(2) ** (15 - sh))
        )
        t = math.floor(Fraction(a * reduced[i]) / Fraction(2) ** (14 - sh))
        assert cmsis[i] == math.floor(Fraction(oracle.wrap(oracle.wrap(t) + 1), 2))
        # CMSIS-NN == TFLM unless t + 1 leaves int32 an odd number of times 2^32.
        odd_wrap = ((t + 1 - oracle.wrap(t + 1)) >> 32) & 1
        assert (cmsis[i] == tflm[i]) == (not odd_wrap), (a, mm, sh)


def test_s64_domain_and_extremes() -> None:
    lo, hi = -(1 << 47), (1 << 47) - 1
    got = fp.multiply_by_quantized_multiplier_s64([lo, hi, 0, -1], INT32_MAX, 7)
    rm = 0x7FFF
    assert as_ints(got) == [
        oracle.wrap(oracle.round_half_up(Fraction(v * rm, 1 << 8))) for v in (lo, hi, 0, -1)
    ]
    assert fp.reduce_multiplier([0, 0x7FFEFFFF, 0x7FFF0000, INT32_MAX]).tolist() == [
        0,
        0x7FFF,
        0x7FFF,
        0x7FFF,
    ]
    with pytest.raises(
        InvalidDataError, match=r"multiply_by_quantized_multiplier_s64: x = 140737488355328"
    ):
        fp.multiply_by_quantized_multiplier_s64(1 << 47, 1 << 30, 0)
    with pytest.raises(QuantSpecError, match="shift = 8"):
        fp.multiply_by_quantized_multiplier_s64(1, 1 << 30, 8)
    with pytest.raises(QuantSpecError, match="reduced_multiplier = 32768"):
        fp.cmsis_requantize_s64(1, 1 << 15, 0)


# --- gemmlowp exp / reciprocal / tanh / logistic -------------------------------------------------


@PROPERTY
@given(st.data(), st.sampled_from([32, 16]))
def test_gemmlowp_functions_match_scalar_oracle(data, bits) -> None:
    values = rs.int32_values() if bits == 32 else rs.int16_values()
    a = data.draw(lists(values))
    ib = data.draw(st.integers(0, bits - 4))
    arr = np.array(a)
    neg = [-abs(v) for v in a if -abs(v) >= -(1 << (bits - 1))]
    unit = [abs(v) for v in a if abs(v) < (1 << (bits - 1))]
    assert as_ints(fp.exp_on_negative_values(np.array(neg, dtype=np.int64), ib, bits)) == [
        oracle.exp_on_negative_values(v, ib, bits) for v in neg
    ]
    assert as_ints(fp.one_over_one_plus_x_for_x_in_0_1(np.array(unit, dtype=np.int64), bits)) == [
        oracle.one_over_one_plus_x_for_x_in_0_1(v, bits) for v in unit
    ]
    assert as_ints(
        fp.one_minus_x_over_one_plus_x_for_x_in_0_1(np.array(unit, dtype=np.int64), bits)
    ) == [oracle.one_minus_x_over_one_plus_x_for_x_in_0_1(v, bits) for v in unit]
    assert as_ints(fp.gemmlowp_tanh(arr, ib, bits)) == [
        oracle.gemmlowp_tanh(v, ib, bits) for v in a
    ]
    assert as_ints(fp.gemmlowp_logistic(arr, ib, bits)) == [
        oracle.gemmlowp_logistic(v, ib, bits) for v in a
    ]


def test_gemmlowp_special_values() -> None:
    assert fp.exp_on_negative_values(0, 5) == INT32_MAX  # One() of Q0.31
    assert fp.exp_on_negative_values(INT32_MIN, 6) == 0  # -64 < -32: clamped to zero
    assert fp.exp_on_negative_values(INT32_MIN, 0) == oracle.exp_on_negative_values(INT32_MIN, 0)
    assert fp.gemmlowp_tanh(0, 4) == 0
    assert fp.gemmlowp_logistic(0, 4) == 1 << 30
    assert fp.gemmlowp_logistic(0, 4, bits=16) == 1 << 14
    assert fp.gemmlowp_tanh(INT32_MIN, 4) == oracle.gemmlowp_tanh(INT32_MIN, 4)
    assert fp.one_over_one_plus_x_for_x_in_0_1(0) == INT32_MAX  # 1/(1+0) saturates to ~1
    for func, args in ((fp.exp_on_negative_values, (-1, 30)), (fp.gemmlowp_tanh, (-1, 29))):
        with pytest.raises(QuantSpecError, match="integer_bits"):
            func(*args)


@PROPERTY
@given(lists(rs.int32_values(1, INT32_MAX)), st.integers(0, 31))
@example([1, 2, 3, 1 << 19, (1 << 19) + 1, INT32_MAX], 12)
def test_log_matches_scalar_oracle(values, integer_bits) -> None:
    got = fp.log_x_for_x_greater_than_or_equal_to_1(np.array(values), integer_bits)
    assert as_ints(got) == [
        oracle.log_x_for_x_greater_than_or_equal_to_1(v, integer_bits) for v in values
    ]
    assert fp.log_x_for_x_greater_than_or_equal_to_1(values[0], integer_bits) == as_ints(got)[0]


@PROPERTY
@given(st.integers(1, 28), st.data())
def test_log_within_4_lsb_of_ln(integer_bits, data) -> None:
    """Inputs >= 1.0 (``z >= 2^(31 - ib)``): ``|L / 2^26 - ln(z / 2^(31 - ib))| <= 4 * 2^-26``
    (measured maximum 3.03 LSB over ib 1..28; ib 12 is LOG_SOFTMAX's Q12.19 sum). For ib >= 29
    the smallest inputs are badly off (ib 31, z = 1: 0.16), as in the peer's algorithm."""
    one = 1 << (31 - integer_bits)
    values = data.draw(lists(st.integers(one, INT32_MAX), max_size=20))
    got = as_ints(fp.log_x_for_x_greater_than_or_equal_to_1(np.array(values), integer_bits))
    for z, g in zip(values, got, strict=True):
        assert abs(g / 2.0**26 - math.log(z / one)) <= 4 * 2.0**-26, (z, integer_bits)


@PROPERTY
@given(lists(st.integers(-(1 << 62), 1 << 62)), st.sampled_from([16, 32]))
def test_wrap_is_twos_complement(values, bits) -> None:
    got = fp.wrap(np.array(values, dtype=np.int64), bits)
    assert got.dtype == np.int64
    assert got.tolist() == [oracle.wrap(v, bits) for v in values]


def test_log_domain() -> None:
    assert fp.log_x_for_x_greater_than_or_equal_to_1(1 << 19, 12) == 0  # ln 1
    with pytest.raises(InvalidDataError, match=r"z = 0 .* outside \[1, "):
        fp.log_x_for_x_greater_than_or_equal_to_1(np.array([5, 0]), 12)
    with pytest.raises(QuantSpecError, match="input_integer_bits"):
        fp.log_x_for_x_greater_than_or_equal_to_1(5, 32)


def _error_lsb(exact: np.ndarray, got: np.ndarray, bits: int) -> float:
    diff = np.abs(exact * 2.0 ** (bits - 1) - np.asarray(got, dtype=np.float64))
    return float(diff.max()) if diff.size else 0.0


def _real_errors(bits: int, integer_bits: int, x: np.ndarray) -> dict[str, float]:
    """Largest error of each function over ``x`` (raw values), in output LSBs."""
    one = 2.0 ** (bits - 1)
    scale = 2.0 ** (bits - 1 - integer_bits)
    x = x.astype(np.int64)
    neg = -np.abs(x)
    neg = neg[neg >= -(1 << (bits - 1))]
    unit = np.abs(x)
    unit = unit[unit < (1 << (bits - 1))]
    u = unit / one
    with np.errstate(over="ignore"):
        sigmoid = 1 / (1 + np.exp(-x / scale))
    return {
        "exp": _error_lsb(
            np.exp(neg / scale), fp.exp_on_negative_values(neg, integer_bits, bits), bits
        ),
        "tanh": _error_lsb(np.tanh(x / scale), fp.gemmlowp_tanh(x, integer_bits, bits), bits),
        "logistic": _error_lsb(sigmoid, fp.gemmlowp_logistic(x, integer_bits, bits), bits),
        "recip": _error_lsb(1 / (1 + u), fp.one_over_one_plus_x_for_x_in_0_1(unit, bits), bits),
        "one_minus": _error_lsb(
            (1 - u) / (1 + u), fp.one_minus_x_over_one_plus_x_for_x_in_0_1(unit, bits), bits
        ),
    }


# Error bounds against the real functions, in output LSBs (2^-31, 2^-15). int32:
# exp_on_negative_values < 3e-7 and tanh < 1.5e-7 are the tolerances of gemmlowp's own tests;
# the others (not bounded there) are the measured maxima over 4 M random inputs, rounded up.
# gemmlowp's 6e-9 for (1-x)/(1+x) is exceeded by its own algorithm (13.6 LSB = 6.34e-9 at
# x = 68264865 / 2^31), hence 16 LSB. int16: the exhaustive maxima (every input), rounded up.
BOUNDS_LSB = {
    32: {"exp": 3e-7 * 2**31, "tanh": 1.5e-7 * 2**31, "logistic": 216, "recip": 8, "one_minus": 16},
    16: {"exp": 2, "tanh": 13, "logistic": 7, "recip": 6, "one_minus": 12},
}


@PROPERTY
@given(st.lists(rs.int32_values(), min_size=1, max_size=64), st.integers(0, 12))
@example([68264865, -68264865, INT32_MIN, INT32_MAX, 0, 1, -1], 4)
def test_gemmlowp_int32_error_bounds_hypothesis(values, integer_bits) -> None:
    errors = _real_errors(32, integer_bits, np.array(values))
    for name, err in errors.items():
        assert err <= BOUNDS_LSB[32][name], (name, integer_bits, err)


@pytest.mark.parametrize("integer_bits", [0, 1, 4, 5, 8])
def test_gemmlowp_int32_error_bounds_dense(integer_bits) -> None:
    rng = np.random.default_rng(100 + integer_bits)
    x = rng.integers(INT32_MIN, INT32_MAX, 100_000, endpoint=True)
    small = rng.integers(INT32_MIN, INT32_MAX, 50_000, endpoint=True) >> rng.integers(0, 31, 50_000)
    errors = _real_errors(32, integer_bits, np.concatenate([x, small]))
    for name, err in errors.items():
        assert err <= BOUNDS_LSB[32][name], (name, err)


@pytest.mark.parametrize("integer_bits", [0, 3, 4, 5, 12])
def test_gemmlowp_int16_error_bounds_exhaustive(integer_bits) -> None:
    errors = _real_errors(16, integer_bits, np.arange(-(1 << 15), 1 << 15))
    for name, err in errors.items():
        assert err <= BOUNDS_LSB[16][name], (name, err)


# --- inverse square root, RSQRT core, isqrt, bit counts ------------------------------------------


@PROPERTY
@given(lists(rs.int32_values(0, INT32_MAX), max_size=24))
@example([0, 1, 2, 3, 4, (1 << 27) - 1, 1 << 27, (1 << 29) - 1, 1 << 29, INT32_MAX])
def test_inv_sqrt_multiplier_matches_oracle_and_sqrt(values) -> None:
    m, s = fp.inv_sqrt_quantized_multiplier_exp(np.array(values))
    got = list(zip(as_ints(m), as_ints(s), strict=True))
    assert got == [oracle.inv_sqrt_quantized_multiplier_exp(v) for v in values]
    for v, (mm, sh) in zip(values, got, strict=True):
        assert sh <= 0  # reverse_shift = -1: a right shift, given as a non-positive exponent
        if v <= 1:
            assert (mm, sh) == (INT32_MAX, 0)
            continue
        # M * 2^(sh - 31) approximates 1/sqrt(v): relative error below 2e-6 (measured 1.24e-6,
        # five Newton steps from 1 in Q3.28 plus the truncating /4 of inputs >= 2^29).
        approx = Fraction(mm) * Fraction(2) ** (sh - 31)
        assert abs(approx * approx * v - 1) < Fraction(4, 1_000_000)


@PROPERTY
@given(
    lists(rs.int32_values(1, 1 << 20)),
    rs.quantized_multipliers(-11, 30),
    st.sampled_from(["double", "single"]),
)
def test_rsqrt_fixed_point_matches_oracle(values, mult, rounding) -> None:
    m, s = mult
    got = as_ints(fp.rsqrt_fixed_point(np.array(values), m, s, rounding))
    assert got == [oracle.rsqrt_fixed_point(v, m, s, rounding) for v in values]


def test_rsqrt_fixed_point_rejects_non_positive_values() -> None:
    with pytest.raises(InvalidDataError, match=r"value = 0 at index 1"):
        fp.rsqrt_fixed_point([4, 0], 1 << 30, 0)
    with pytest.raises(QuantSpecError, match="shift = -12"):
        fp.rsqrt_fixed_point(4, 1 << 30, -12)


@PROPERTY
@given(
    lists(
        st.one_of(st.integers(0, (1 << 63) - 1), st.integers(0, 3037000499).map(lambda r: r * r)),
        16,
    )
)
@example([0, 1, 2, 3, (1 << 63) - 1, 3037000499**2, 3037000499**2 - 1, (1 << 62), (1 << 62) - 1])
def test_isqrt_is_exact(values) -> None:
    got = fp.isqrt(np.array(values, dtype=np.int64))
    assert got.dtype == np.int64
    assert as_ints(got) == [math.isqrt(v) for v in values]
    assert [fp.isqrt(v) for v in values] == [math.isqrt(v) for v in values]
    assert fp.isqrt(10**40) == 10**20  # Python ints of any size
    with pytest.raises(InvalidDataError, match="negative"):
        fp.isqrt(-1)
    with pytest.raises(InvalidDataError, match="n = -4 at index 1"):
        fp.isqrt(np.array([4, -4]))


@PROPERTY
@given(lists(rs.int32_values(), 32))
def test_count_leading_zeros_and_sign_bits(values) -> None:
    arr = np.array(values)
    assert as_ints(fp.count_leading_zeros(arr)) == [
        32 - (v & 0xFFFFFFFF).bit_length() for v in values
    ]
    as_unsigned = np.array(values).astype(np.uint32)  # same bits, read as uint32
    assert as_ints(fp.count_leading_zeros(as_unsigned)) == as_ints(fp.count_leading_zeros(arr))
    # redundant sign bits: bit length of the magnitude in one's complement
    expected = [31 - (v if v >= 0 else ~v).bit_length() for v in values]
    assert as_ints(fp.count_leading_sign_bits(arr)) == expected


# --- argument checking ---------------------------------------------------------------------------


def test_bad_arguments_raise_refq_errors_naming_the_value() -> None:
    with pytest.raises(InvalidDataError, match=r"srdhm: a = 2147483648 at index 1 is outside"):
        fp.srdhm(np.array([0, 1 << 31]), 1)
    with pytest.raises(InvalidDataError, match="must be integers, got dtype float64"):
        fp.srdhm(np.array([0.5]), 1)
    with pytest.raises(InvalidDataError, match="flat index 0"):
        fp.srdhm(np.array([1 << 70], dtype=object), 1)
    with pytest.raises(QuantSpecError, match=r"exponent = 32 is outside \[0, 31\]"):
        fp.rounding_divide_by_pot(1, 32)
    with pytest.raises(QuantSpecError, match=r"shift = 31 at index 2"):
        fp.multiply_by_quantized_multiplier([1, 2, 3], 1 << 30, [0, 1, 31])
    with pytest.raises(UnsupportedError, match="bits must be 16 or 32"):
        fp.srdhm(1, 1, bits=8)
    with pytest.raises(UnsupportedError, match="rounding"):
        fp.multiply_by_quantized_multiplier(1, 1 << 30, 0, rounding="banker")
    with pytest.raises(InvalidDataError):
        fp.srdhm(1 << 15, 1, bits=16)
    assert issubclass(InvalidDataError, RefqError) and issubclass(QuantSpecError, ValueError)
    # scalars in -> Python int out; arrays in -> int32 arrays
    assert type(fp.srdhm(3, 4)) is int
    assert fp.srdhm([3], [4]).dtype == np.int32


def test_self_check_rows_are_all_bit_exact(checked) -> None:
    rows = oracle.self_check(samples=300, seed=7)
    assert {r.op for r in rows} >= {"srdhm", "multiply_by_quantized_multiplier", "isqrt"}
    assert all(r.bit_exact for r in rows), [r for r in rows if not r.bit_exact]
    checked("fixedpoint self-check vs scalar oracle", len(rows), sum(r.cases for r in rows))


# --- peers: TFLite Micro (double rounding) and LiteRT's reference FULLY_CONNECTED (float64) -----


def _model_editor():
    me = require_module("tflite_micro.tensorflow.lite.micro.compression.model_editor")
    schema = require_module("tflite_micro.tensorflow.lite.micro.python.schema_py_generated")
    return me, schema


def _unary_model(op: str, s_in: float, zp_in: int, s_out: float, zp_out: int) -> bytes:
    """One int8 [256] -> int8 [256] op, no options."""
    me, schema = _model_editor()
    sg = me.Subgraph()
    q_in, q_out = me.Quantization([s_in], [zp_in]), me.Quantization([s_out], [zp_out])
    x = sg.add_tensor(shape=(256,), dtype=schema.TensorType.INT8, quantization=q_in, name="x")
    y = sg.add_tensor(shape=(256,), dtype=schema.TensorType.INT8, quantization=q_out, name="y")
    sg.add_operator(opcode=getattr(schema.BuiltinOperator, op), inputs=[x], outputs=[y])
    sg.inputs, sg.outputs = [x], [y]
    return bytes(me.Model(subgraphs=[sg]).build())


def _requant_probe_model(
    acc: np.ndarray, s_in: float, s_w: float, s_out: float, zp_out: int, int16: bool
) -> bytes:
    """FULLY_CONNECTED with one input feature equal to its zero point and weights of 1: output
    channel c is requantize(bias[c]) + zp_out, so the bias probes the requantization directly."""
    me, schema = _model_editor()
    types = schema.TensorType
    act, bias_type, bias_np = (
        (types.INT16, types.INT64, np.int64) if int16 else (types.INT8, types.INT32, np.int32)
    )
    n = len(acc)
    sg = me.Subgraph()
    x = sg.add_tensor(shape=(1, 1), dtype=act, quantization=me.Quantization([s_in], [0]), name="x")
    w = sg.add_tensor(
        shape=(n, 1),
        dtype=types.INT8,
        quantization=me.Quantization([s_w], [0]),
        name="w",
        data=np.ones((n, 1), np.int8).tobytes(),
    )
    b = sg.add_tensor(
        shape=(n,),
        dtype=bias_type,
        quantization=me.Quantization([s_in * s_w], [0]),
        name="b",
        data=np.asarray(acc, bias_np).tobytes(),
    )
    q_out = me.Quantization([s_out], [zp_out])
    y = sg.add_tensor(shape=(1, n), dtype=act, quantization=q_out, name="y")
    op = sg.add_operator(
        opcode=schema.BuiltinOperator.FULLY_CONNECTED, inputs=[x, w, b], outputs=[y]
    )
    op._fb.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
    op._fb.builtinOptions = schema.FullyConnectedOptionsT()
    sg.inputs, sg.outputs = [x], [y]
    return bytes(me.Model(subgraphs=[sg]).build())


def _f32(v: float) -> float:
    return float(np.float32(v))


def test_tflm_int8_tanh_logistic_rsqrt_are_these_primitives(checked) -> None:
    """TFLM's int8 TANH / LOGISTIC (gemmlowp tanh / logistic, Q4.27) and RSQRT (inverse-sqrt
    multiplier) on all 256 codes, as written in refq.fixedpoint's module docstring."""
    codes = np.arange(-128, 128, dtype=np.int8)
    rng = np.random.default_rng(2024)
    configs = 24
    for _ in range(configs):
        s_in = _f32(2.0 ** rng.uniform(-8, 1))
        zp = int(rng.integers(-128, 128))
        q, shift = math.frexp(s_in * 2.0**27)
        m = math.floor(q * 2**31 + 0.5)  # frexp + round, no carry (see the module docstring)
        radius = math.floor(15 * 2.0**27 / 2.0**shift)
        d = codes.astype(np.int64) - zp
        q4 = fp.multiply_by_quantized_multiplier(np.clip(d, 1 - radius, radius - 1), m, shift)

        low, high = d <= -radius, d >= radius  # saturated before any arithmetic
        tanh = np.clip(fp.rounding_divide_by_pot(fp.gemmlowp_tanh(q4, 4), 24), -128, 127)
        tanh = np.where(low, -128, np.where(high, 127, tanh))
        got = run_tflm(_unary_model("TANH", s_in, zp, 1 / 128, 0), [codes])[0]
        assert np.array_equal(got, tanh)
        logistic = fp.rounding_divide_by_pot(fp.gemmlowp_logistic(q4, 4), 23).astype(np.int64)
        logistic = np.where(low, -128, np.where(high, 127, np.clip(logistic - 128, -128, 127)))
        got = run_tflm(_unary_model("LOGISTIC", s_in, zp, 1 / 256, -128), [codes])[0]
        assert np.array_equal(got, logistic)

        s_out, zp_out = _f32(2.0 ** rng.uniform(-6, 2)), int(rng.integers(-128, 128))
        out_m, out_s = fp.quantize_multiplier(1.0 / (math.sqrt(s_in) * s_out))
        valid = codes[codes >= zp]  # RSQRT rejects inputs below the zero point
        value = valid.astype(np.int64) - zp
        core = fp.rsqrt_fixed_point(np.maximum(value, 1), out_m, out_s).astype(np.int64)
        rsqrt = np.where(value == 0, 127, np.clip(core + zp_out, -128, 127))
        x = np.full(256, valid[0], dtype=np.int8)
        x[: len(valid)] = valid
        got = run_tflm(_unary_model("RSQRT", s_in, zp, s_out, zp_out), [x])[0][: len(valid)]
        assert np.array_equal(got, rsqrt)
    checked("TFLM int8 TANH/LOGISTIC/RSQRT vs refq.fixedpoint", 3 * configs, 3 * 256 * configs)


def test_requantization_matches_tflm_double_and_litert_float64(checked) -> None:
    """Accumulators aimed at rounding ties: TFLM's reference FULLY_CONNECTED requantizes with
    double rounding, bit for bit; LiteRT 2.3's reference kernel uses no (M, shift) at all but
    ``round_half_away(double(acc) * double(real))`` (refq.kernels.requant.float64_requant, the
    ``litert-ref`` rule; tests/test_peer_litert.py separates it from single rounding)."""
    rng = np.random.default_rng(77)
    configs, differ = 16, 0
    for _ in range(configs):
        s_in, s_w = _f32(2.0 ** rng.uniform(-6, 0)), _f32(2.0 ** rng.uniform(-6, 0))
        s_out = _f32(s_in * s_w * 2.0 ** rng.uniform(0.2, 6))
        real = s_in * s_w / s_out  # both peers form it in double (peer-facts 1)
        zp_out = int(rng.integers(-20, 20))
        acc = np.rint((rng.integers(-100, 100, 256) + 0.5) / real) + rng.integers(-2, 3, 256)
        acc = acc.astype(np.int64)
        model = _requant_probe_model(acc, s_in, s_w, s_out, zp_out, int16=False)
        x = np.zeros((1, 1), np.int8)
        expected = {}
        for rounding in ("double", "single"):
            m, s = fp.quantize_multiplier(real, rounding)
            y = fp.multiply_by_quantized_multiplier(acc, m, s, rounding).astype(np.int64)
            expected[rounding] = np.clip(y + zp_out, -128, 127)
        rule = float64_requant(real, zero_point=zp_out, out_dtype="int8")
        assert np.array_equal(run_tflm(model, [x])[0].ravel(), expected["double"])
        assert np.array_equal(run_litert(model, [x])[0].ravel(), requantize(acc, rule))
        differ += int((expected["double"] != expected["single"]).sum())
    assert differ > 0  # the probe does reach the cases where the two roundings disagree
    checked(
        "TFLM (double) / LiteRT ref (float64) requantization probes", 2 * configs, 512 * configs
    )


def test_s64_requantization_matches_tflm_16x8(checked) -> None:
    """int16 activations, int64 bias: TFLM requantizes with the reduced 16-bit multiplier."""
    rng = np.random.default_rng(78)
    configs = 12
    for _ in range(configs):
        s_in, s_w = _f32(2.0 ** rng.uniform(-12, -4)), _f32(2.0 ** rng.uniform(-8, -2))
        s_out = _f32(s_in * s_w * 2.0 ** rng.uniform(1, 20))
        real = s_in * s_w / s_out
        acc = np.rint((rng.integers(-30000, 30000, 256) + 0.5) / real) + rng.integers(-3, 4, 256)
        acc = np.clip(acc, -(1 << 47), (1 << 47) - 1).astype(np.int64)
        model = _requant_probe_model(acc, s_in, s_w, s_out, 0, int16=True)
        m, s = fp.quantize_multiplier(real)
        expected = np.clip(fp.multiply_by_quantized_multiplier_s64(acc, m, s), -32768, 32767)
        assert np.array_equal(run_tflm(model, [np.zeros((1, 1), np.int16)])[0].ravel(), expected)
    checked("TFLM 16x8 int64 requantization probes", configs, 256 * configs)
