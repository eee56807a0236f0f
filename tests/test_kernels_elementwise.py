"""Exact-arithmetic properties of refq's element-wise, reduction, activation and data-movement
kernels (no peers; see tests/test_peer_tflm_elementwise.py for those).

Each property restates the kernel's integer algorithm with Python ints (the scalar oracle's
gemmlowp primitives, Fractions for real values) or states a clean mathematical fact: ADD / SUB
of equally quantized inputs is the saturating integer sum of the centred codes; MUL, MEAN, RSQRT
and int8 TANH / LOGISTIC are within one rounding step of the exact real result; GATHER equals an
index-by-index copy.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq import strategies as rs
from refq.errors import (
    InvalidDataError,
    QuantSpecError,
    RefqError,
    ShapeError,
    UnsupportedError,
)
from refq.graph import Graph, Node, Program, TensorInfo
from refq.kernels.activations import SIGMOID_TABLE_Q16, prepare_unary, unary
from refq.kernels.elementwise import binary, checked_log2, mbqm, prepare_binary
from refq.kernels.gather import EmbeddingLookupParams, GatherParams, embedding_lookup, gather
from refq.kernels.reduce import prepare_reduce, reduce
from refq.kernels.shape_ops import resolve_new_shape
from refq.oracle import fixedpoint as oracle
from refq.profiles import get_profile

PROPERTY = settings(max_examples=200, deadline=None)
TFLM = get_profile("tflm")
RANGES = {"int8": (-128, 127), "int16": (-32768, 32767)}


def f32(v: float) -> float:
    return float(np.float32(v))


scales = st.floats(-14.0, 1.0).map(lambda e: f32(2.0**e))
dtypes = st.sampled_from(["int8", "int16"])


def codes_of(dtype: str, size: int = 24):
    lo, hi = RANGES[dtype]
    return st.lists(st.integers(lo, hi), min_size=1, max_size=size)


def clamp(v, lo, hi):
    return max(lo, min(hi, v))


def mbqm_oracle(x: int, m: int, e: int, rounding: str = "double") -> int:
    return oracle.multiply_by_quantized_multiplier(x, m, e, rounding)


# ---------------------------------------------------------------------------------------------
# ADD / SUB / MUL / SQUARED_DIFFERENCE
# ---------------------------------------------------------------------------------------------


@PROPERTY
@given(dtypes, scales, st.data(), st.sampled_from(["ADD", "SUB"]), st.booleans())
def test_equal_scales_add_sub_is_saturating_integer_arithmetic(dtype, s, data, op, relu) -> None:
    """s1 = s2 = s_out: every multiplier is a power of two and the result is exact:
    y = clamp((x1 - z1) +- (x2 - z2) + z_out) (RELU: clamped below at z_out)."""
    lo, hi = RANGES[dtype]
    x1 = data.draw(codes_of(dtype))
    x2 = data.draw(st.lists(st.integers(lo, hi), min_size=len(x1), max_size=len(x1)))
    z = (
        [0, 0, 0]
        if dtype == "int16"
        else data.draw(st.lists(st.integers(lo, hi), min_size=3, max_size=3))
    )
    p = prepare_binary(op, dtype, s, z[0], s, z[1], s, z[2], TFLM, "RELU" if relu else "NONE")
    got = binary(np.array(x1, dtype), np.array(x2, dtype), p)
    sign = 1 if op == "ADD" else -1
    floor = max(lo, z[2]) if relu else lo
    want = [
        clamp((a - z[0]) + sign * (b - z[1]) + z[2], floor, hi) for a, b in zip(x1, x2, strict=True)
    ]
    assert got.tolist() == want


def binary_oracle(op, dtype, x1, x2, s1, z1, s2, z2, so, zo, rounding="double") -> int:
    """One element of ADD / SUB / MUL / SQUARED_DIFFERENCE with Python ints (module formulas)."""
    lo, hi = RANGES[dtype]
    d1, d2 = x1 - z1, x2 - z2
    if op == "MUL":
        m, e = oracle.quantize_multiplier(s1 * s2 / so)
        return clamp(mbqm_oracle(d1 * d2, m, e, rounding) + zo, lo, hi)
    shift = (
        {"ADD": 20, "SUB": 20, "SQUARED_DIFFERENCE": 7}[op]
        if dtype == "int8"
        else {"ADD": 15, "SUB": 15, "SQUARED_DIFFERENCE": 0}[op]
    )
    tm = 2 * max(s1, s2)
    m1, e1 = oracle.quantize_multiplier(s1 / tm)
    m2, e2 = oracle.quantize_multiplier(s2 / tm)
    a = mbqm_oracle(d1 << shift, m1, e1, rounding)
    b = mbqm_oracle(d2 << shift, m2, e2, rounding)
    if op == "SQUARED_DIFFERENCE":
        mo, eo = oracle.quantize_multiplier(tm * tm / ((1 << 2 * shift) * so))
        return clamp(mbqm_oracle((a - b) ** 2, mo, eo, rounding) + zo, lo, hi)
    mo, eo = oracle.quantize_multiplier(tm / ((1 << shift) * so))
    return clamp(mbqm_oracle(a + b if op == "ADD" else a - b, mo, eo, rounding) + zo, lo, hi)


@PROPERTY
@given(
    st.sampled_from(["ADD", "SUB", "MUL", "SQUARED_DIFFERENCE"]),
    dtypes,
    st.data(),
    st.sampled_from(["tflm", "cmsis-nn-single", "litert-ref"]),
)
def test_binary_ops_equal_their_integer_restatement(op, dtype, data, profile) -> None:
    """Random scales / zero points, broadcasting a column against a row: every element equals the
    formula evaluated with Python ints (profile rounding; LiteRT's element-wise kernels round
    twice)."""
    lo, hi = RANGES[dtype]
    s1, s2 = data.draw(scales), data.draw(scales)
    wide = dtype == "int16"
    if op in ("ADD", "SUB"):
        so = f32(max(s1, s2) * data.draw(st.floats(0.25, 8.0)))
    elif op == "MUL":
        so = f32(s1 * s2 * data.draw(st.floats(0.5, 64.0)))
    else:
        so = f32(max(s1, s2) ** 2 * data.draw(st.floats(4.0, 4096.0)))
    zero = wide and (op in ("MUL", "SQUARED_DIFFERENCE") or profile == "litert-ref")
    z = [0, 0, 0] if zero else [data.draw(st.integers(lo // 2, hi // 2)) for _ in range(3)]
    if profile == "litert-ref" and op == "SQUARED_DIFFERENCE" and wide:
        with pytest.raises(UnsupportedError):
            prepare_binary(op, dtype, s1, z[0], s2, z[1], so, z[2], get_profile(profile))
        return
    pot = all(checked_log2(s)[0] for s in (s1, s2, so))
    if profile == "litert-ref" and wide and op in ("ADD", "SUB") and pot:
        with pytest.raises(UnsupportedError, match="power-of-two"):
            prepare_binary(op, dtype, s1, z[0], s2, z[1], so, z[2], get_profile(profile))
        return
    col = data.draw(codes_of(dtype, 6))
    row = data.draw(codes_of(dtype, 6))
    p = prepare_binary(op, dtype, s1, z[0], s2, z[1], so, z[2], get_profile(profile))
    got = binary(np.array(col, dtype)[:, None], np.array(row, dtype)[None, :], p)
    rounding = "double" if profile == "litert-ref" else get_profile(profile).rounding
    want = [
        [binary_oracle(op, dtype, a, b, s1, z[0], s2, z[1], so, z[2], rounding) for b in row]
        for a in col
    ]
    assert got.tolist() == want


@PROPERTY
@given(dtypes, scales, scales, st.floats(0.1, 200.0), st.data())
def test_mul_within_one_rounding_step_of_the_real_product(dtype, s1, s2, ratio, data) -> None:
    """|y - clamp((x1 - z1)(x2 - z2) * s1 s2 / s_out + z_out)| <= 1 + |p| r 2^-30: the double
    rounding (SRDHM then RDBPOT) costs at most one step, the 31-bit multiplier the rest. Products
    whose ``p * 2^shift`` leaves int32 (undefined in the peer's C, wrapped by refq) are skipped."""
    lo, hi = RANGES[dtype]
    so = f32(s1 * s2 * ratio)
    z = [0, 0, 0] if dtype == "int16" else [data.draw(st.integers(lo, hi)) for _ in range(3)]
    x1, x2 = data.draw(codes_of(dtype)), data.draw(codes_of(dtype))
    n = min(len(x1), len(x2))
    p = prepare_binary("MUL", dtype, s1, z[0], s2, z[1], so, z[2], TFLM)
    got = binary(np.array(x1[:n], dtype), np.array(x2[:n], dtype), p)
    r = Fraction(s1) * Fraction(s2) / Fraction(so)
    left = max(oracle.quantize_multiplier(s1 * s2 / so)[1], 0)
    for y, a, b in zip(got.tolist(), x1, x2, strict=False):
        prod = (a - z[0]) * (b - z[1])
        if abs(prod) << left >= 2**31:
            continue
        exact = min(max(prod * r + z[2], Fraction(lo)), Fraction(hi))
        assert abs(y - exact) <= 1 + abs(prod) * r / 2**30


def test_binary_broadcasting_and_shapes() -> None:
    p = prepare_binary("ADD", "int8", 0.1, 0, 0.1, 0, 0.1, 0, TFLM)
    x = np.arange(24, dtype=np.int8).reshape(2, 3, 4)
    y = binary(x, np.array([1, 2, 3, 4], np.int8), p)
    assert y.shape == (2, 3, 4)
    assert np.array_equal(y, x + np.array([1, 2, 3, 4], np.int8))
    with pytest.raises(ShapeError, match=r"\(2, 3, 4\) and \(3,\)"):
        binary(x, np.array([1, 2, 3], np.int8), p)
    with pytest.raises(QuantSpecError, match="int8 codes"):
        binary(x.astype(np.int16), x, p)


def test_binary_prepare_errors_name_the_fault() -> None:
    with pytest.raises(QuantSpecError, match="output"):
        prepare_binary("ADD", "int8", 1.0, 0, 1.0, 0, 1e-9, 0, TFLM)  # multiplier >= 1
    with pytest.raises(QuantSpecError, match=r"'input2'.*got 3"):
        prepare_binary("MUL", "int16", 0.1, 0, 0.1, 3, 0.1, 0, TFLM)
    with pytest.raises(QuantSpecError, match="input1"):
        prepare_binary("ADD", "int8", 0.0, 0, 0.1, 0, 0.1, 0, TFLM)
    with pytest.raises(UnsupportedError, match="onnx"):
        prepare_binary("ADD", "int8", 0.1, 0, 0.1, 0, 0.1, 0, get_profile("onnx"))
    with pytest.raises(UnsupportedError, match="power-of-two"):
        prepare_binary(
            "ADD", "int16", 2.0**-10, 0, 2.0**-9, 0, 2.0**-8, 0, get_profile("litert-ref")
        )
    with pytest.raises(UnsupportedError, match="activation"):
        prepare_binary("SQUARED_DIFFERENCE", "int8", 0.1, 0, 0.1, 0, 0.1, 0, TFLM, "RELU")
    with pytest.raises(UnsupportedError):
        prepare_binary("DIV", "int8", 0.1, 0, 0.1, 0, 0.1, 0, TFLM)


@PROPERTY
@given(
    st.lists(rs.int32_values(), min_size=1, max_size=30),
    rs.int32_values(),
    st.integers(-31, 30),
    st.sampled_from(["double", "single"]),
)
def test_numba_mbqm_equals_the_scalar_oracle(xs, m, shift, rounding) -> None:
    """The one-pass kernel behind every element-wise op, INT32 edges included."""
    got = mbqm(np.array(xs, np.int64), m, shift, rounding).tolist()
    assert got == [mbqm_oracle(x, m, shift, rounding) for x in xs]


def test_checked_log2() -> None:
    assert checked_log2(2.0**-12) == (True, -12)
    assert checked_log2(2.0**-12 * 1.0001)[0]  # TFLite's 1e-3 tolerance on log2
    assert not checked_log2(0.1)[0]


# ---------------------------------------------------------------------------------------------
# MEAN / SUM
# ---------------------------------------------------------------------------------------------

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


@PROPERTY
@given(dtypes, shapes, st.data(), st.sampled_from(["MEAN", "SUM"]))
def test_mean_sum_equal_their_integer_restatement(dtype, shape, data, op) -> None:
    lo, hi = RANGES[dtype]
    rank = len(shape)
    axes = data.draw(st.lists(st.integers(-rank, rank - 1), min_size=0, max_size=rank + 1))
    keep = data.draw(st.booleans())
    s_in = data.draw(scales)
    s_out = f32(s_in * data.draw(st.floats(0.01, 300.0)))
    zi = 0 if dtype == "int16" else data.draw(st.integers(lo, hi))
    zo = 0 if dtype == "int16" else data.draw(st.integers(lo, hi))
    x = np.array(
        data.draw(
            st.lists(st.integers(lo, hi), min_size=math.prod(shape), max_size=math.prod(shape))
        ),
        dtype,
    ).reshape(shape)
    p = prepare_reduce(op, dtype, shape, axes, keep, s_in, zi, s_out, zo, TFLM)
    got = reduce(x, p)
    red = sorted({a % rank for a in axes})
    n = math.prod(shape[a] for a in red)
    m, e = oracle.quantize_multiplier(s_in / s_out)
    if op == "MEAN":
        k = min(n.bit_length() - 1, 32, 31 + e)
        m, e = (m << k) // n, e - k
    total = x.astype(np.int64).sum(axis=tuple(red), keepdims=keep)
    want = [clamp(mbqm_oracle(int(t) - zi * n, m, e) + zo, lo, hi) for t in total.reshape(-1)]
    assert got.shape == total.shape
    assert got.reshape(-1).tolist() == want


@PROPERTY
@given(dtypes, st.integers(1, 64), scales, st.floats(0.05, 20.0), st.data())
def test_mean_within_one_step_of_the_real_mean(dtype, n, s_in, ratio, data) -> None:
    """|y - clamp((mean(x) - z_in) s_in / s_out + z_out)| <= 1 + |S| (r/n) 2^-27, S = sum - z n:
    TFLite's 1/n folding truncates a >= 29-bit multiplier."""
    lo, hi = RANGES[dtype]
    s_out = f32(s_in * ratio)
    zi = 0 if dtype == "int16" else data.draw(st.integers(lo, hi))
    zo = 0 if dtype == "int16" else data.draw(st.integers(lo, hi))
    x = np.array(data.draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)), dtype)
    (y,) = reduce(
        x.reshape(1, n),
        prepare_reduce("MEAN", dtype, (1, n), [1], False, s_in, zi, s_out, zo, TFLM),
    ).tolist()
    r = Fraction(s_in) / Fraction(s_out)
    total = int(x.astype(np.int64).sum()) - zi * n
    exact = min(max(Fraction(total, n) * r + zo, Fraction(lo)), Fraction(hi))
    assert abs(y - exact) <= 1 + abs(total) * r / n / 2**27


def test_mean_edge_cases() -> None:
    x = np.full((2, 70_000), 32767, np.int16)  # the int32 code sum wraps, as in the peer
    p = prepare_reduce("MEAN", "int16", x.shape, [1], True, 0.01, 0, 0.02, 0, TFLM)
    total = (70_000 * 32767 + 2**31) % 2**32 - 2**31
    m, e = oracle.quantize_multiplier(0.01 / 0.02)
    k = min((70_000).bit_length() - 1, 32, 31 + e)
    assert (
        reduce(x, p).tolist()
        == [[clamp(mbqm_oracle(total, (m << k) // 70_000, e - k), -32768, 32767)]] * 2
    )
    empty = prepare_reduce("MEAN", "int8", (3, 0), [1], False, 0.1, 0, 0.1, 0, TFLM)
    assert reduce(np.zeros((3, 0), np.int8), empty).tolist() == [0, 0, 0]
    with pytest.raises(ShapeError, match="axis 2"):
        prepare_reduce("MEAN", "int8", (3, 4), [2], False, 0.1, 0, 0.1, 0, TFLM)
    with pytest.raises(UnsupportedError, match="SUM"):
        prepare_reduce("SUM", "int8", (3, 4), [1], False, 0.1, 0, 0.1, 0, get_profile("litert-ref"))
    with pytest.raises(ShapeError, match="declared"):
        prepare_reduce("MEAN", "int8", (3, 4), [1], False, 0.1, 0, 0.1, 0, TFLM, output_shape=(4,))
    with pytest.raises(ShapeError, match="prepared for"):
        reduce(
            np.zeros((4, 3), np.int8),
            prepare_reduce("MEAN", "int8", (3, 4), [1], False, 0.1, 0, 0.1, 0, TFLM),
        )


# ---------------------------------------------------------------------------------------------
# RSQRT, TANH, LOGISTIC, HARD_SWISH
# ---------------------------------------------------------------------------------------------

ALL8 = np.arange(-128, 128)


@PROPERTY
@given(
    st.floats(-12, 2).map(lambda e: f32(2.0**e)),
    st.integers(-128, 120),
    st.floats(1e-3, 1.0),
    st.integers(-128, 127),
    st.data(),
)
def test_rsqrt_int8_restatement_and_bound(s_in, zi, c, zo, data) -> None:
    """Valid codes equal the scalar oracle's fixed-point RSQRT and lie within 0.6 of
    clamp(1 / sqrt((x - z) s_in) / s_out + z_out) (2^20/sqrt(v) keeps >= 12 bits)."""
    s_out = f32(c / math.sqrt(s_in))
    p = prepare_unary("RSQRT", "int8", s_in, zi, s_out, zo, TFLM)
    x = np.array(data.draw(st.lists(st.integers(zi, 127), min_size=1, max_size=40)))
    got = unary(x.astype(np.int8), p).tolist()
    m, e = oracle.quantize_multiplier(1.0 / (math.sqrt(s_in) * s_out))
    for code, y in zip(x.tolist(), got, strict=True):
        v = code - zi
        if v == 0:
            assert y == 127
            continue
        assert y == clamp(oracle.rsqrt_fixed_point(v, m, e) + zo, -128, 127)
        assert abs(y - clamp(1 / math.sqrt(v * s_in) / s_out + zo, -128, 127)) <= 0.6


@PROPERTY
@given(
    st.floats(-8, 1).map(lambda e: f32(2.0**e)),
    st.integers(-128, 127),
    st.sampled_from(["TANH", "LOGISTIC"]),
    st.data(),
)
def test_tanh_logistic_int8_restatement_and_bound(s_in, zi, op, data) -> None:
    """The gemmlowp Q4.27 algorithm code by code (scalar oracle), and within 0.51 of
    clamp(128 tanh(d s_in)) / clamp(256 sigmoid(d s_in) - 128) inside the input radius."""
    out = (1 / 128, 0) if op == "TANH" else (1 / 256, -128)
    p = prepare_unary(op, "int8", s_in, zi, *out, TFLM)
    xs = data.draw(st.lists(st.integers(-128, 127), min_size=1, max_size=48))
    got = unary(np.array(xs, np.int8), p).tolist()
    q, k = math.frexp(s_in * 2.0**27)
    m = math.floor(q * 2**31 + 0.5)
    radius = math.floor(15 * 2.0**27 / 2.0**k)
    for code, y in zip(xs, got, strict=True):
        d = code - zi
        if d <= -radius:
            assert y == -128
        elif d >= radius:
            assert y == 127
        else:
            t = mbqm_oracle(d, m, k)
            if op == "TANH":
                want = clamp(
                    oracle.rounding_divide_by_pot(oracle.gemmlowp_tanh(t, 4), 24), -128, 127
                )
            else:
                want = clamp(
                    oracle.rounding_divide_by_pot(oracle.gemmlowp_logistic(t, 4), 23) - 128,
                    -128,
                    127,
                )
            assert y == want
            # Inside TFLM's input radius (outside it saturates, even where the real function
            # has not: e.g. s_in = 2, radius 3, logistic(-6) = 0.0025, not 0).
            t = d * s_in
            real = 128 * math.tanh(t) if op == "TANH" else 256 / (1 + math.exp(-t)) - 128
            assert abs(y - clamp(real, -128, 127)) <= 0.51


def sigmoid_table_scalar(op: str, x: int, s_in: float) -> int:
    """int16 TANH / LOGISTIC for one code with Python ints (TFLite's table interpolation)."""
    pot, log2 = checked_log2(s_in)
    left = 12 + log2
    if pot and (left in (0, 1) if op == "TANH" else left == 0):
        mult, left = 3 << left, 0
    else:
        mult, left = s_in * 12288.0, 0
        while mult <= 32767.0 / 2.0 and left <= 30:
            mult, left = mult * 2.0, left + 1
        mult = int(mult)
    v = (x * mult + ((1 << (left - 1)) if left else 0)) >> left
    t = SIGMOID_TABLE_Q16
    bits = 8 if op == "TANH" else 9
    a = abs(v)
    h, f = a >> bits, a & ((1 << bits) - 1)
    if op == "TANH":
        r = 0xFFFF << 8 if h >= 255 else (t[h] << 8) + f * (t[h + 1] - t[h])
        return (r - (1 << 23) + (1 << 7) if v >= 0 else (1 << 23) + (1 << 7) - 1 - r) >> 8
    r = 0x7FFF << 10 if h >= 255 else (t[h] << 9) + f * (t[h + 1] - t[h])
    return (r + (1 << 9) if v >= 0 else (1 << 25) - r + (1 << 9) - 1) >> 10


@PROPERTY
@given(
    st.one_of(
        st.integers(-15, -9).map(lambda e: 2.0**e), st.floats(-17, -8).map(lambda e: f32(2.0**e))
    ),
    st.lists(st.integers(-32768, 32767), min_size=1, max_size=40),
    st.sampled_from(["TANH", "LOGISTIC"]),
)
def test_tanh_logistic_int16_restatement_and_bound(s_in, xs, op) -> None:
    """Each code equals the scalar table interpolation; the table's linear interpolation stays
    within 5 (tanh) / 2 (logistic) LSB of 2^15 tanh(x s) / 2^15 sigmoid(x s)."""
    p = prepare_unary(op, "int16", s_in, 0, 2.0**-15, 0, TFLM)
    got = unary(np.array(xs, np.int16), p).tolist()
    assert got == [sigmoid_table_scalar(op, x, s_in) for x in xs]
    for x, y in zip(xs, got, strict=True):
        if op == "TANH":
            assert abs(y - clamp(32768 * math.tanh(x * s_in), -32768, 32767)) <= 5
        else:
            assert abs(y - min(32768 / (1 + math.exp(-x * s_in)), 32767)) <= 2


def hard_swish_multipliers(s_in: float, s_out: float) -> tuple[int, int, int, int]:
    """(Mo16, eo, Mr16, er): float32 prepare, QuantizeMultiplier, 16-bit downscale."""

    def down(m: int) -> int:
        return 32767 if m >= 2**31 - 1 - 2**15 else (m + 2**15) >> 16

    hires = np.float32(1 / 128) * np.float32(s_in)
    mo, eo = oracle.quantize_multiplier(float(hires / np.float32(s_out)))
    mr, er = oracle.quantize_multiplier(float(hires / np.float32(3 / 32768)))
    return down(mo), eo, down(mr), er


def hard_swish_scalar(x: int, zi: int, zo: int, mults: tuple[int, int, int, int]) -> int:
    def srdhm16(a: int, b: int) -> int:
        return oracle.srdhm(a, b, bits=16)

    def sat16(v: int) -> int:
        return clamp(v, -32768, 32767)

    mo, eo, mr, er = mults
    h = (x - zi) * 128
    pre = srdhm16(h, mo)
    if er > 0:
        r = sat16(srdhm16(sat16(h << (er - 1)), mr) * 2)
    else:
        r = oracle.rounding_divide_by_pot(srdhm16(h, mr), -er)
    r = (r + 32768) >> 1
    prod = r * pre
    out = abs(prod) // 32768 * (1 if prod >= 0 else -1)
    return clamp(oracle.rounding_divide_by_pot(out, -eo) + zo, -128, 127)


@PROPERTY
@given(
    st.floats(-10, -1).map(lambda e: f32(2.0**e)),
    st.floats(-1.5, 1.5),
    st.integers(-128, 127),
    st.integers(-128, 127),
)
def test_hard_swish_restatement_and_bound(s_in, log_ratio, zi, zo) -> None:
    """Code by code the int16 fixed-point steps; within 0.75 of clamp(hs(d s_in) / s_out + z)."""
    s_out = f32(s_in * 2.0**log_ratio)
    p = prepare_unary("HARD_SWISH", "int8", s_in, zi, s_out, zo, TFLM)
    got = unary(ALL8.astype(np.int8), p).tolist()
    mults = hard_swish_multipliers(s_in, s_out)
    assert got == [hard_swish_scalar(x, zi, zo, mults) for x in ALL8.tolist()]
    for x, y in zip(ALL8.tolist(), got, strict=True):
        r = (x - zi) * s_in
        assert abs(y - clamp(r * min(max(r + 3, 0), 6) / 6 / s_out + zo, -128, 127)) <= 0.75


def test_activation_errors_and_tables() -> None:
    p = prepare_unary("RSQRT", "int8", 0.1, 5, 0.1, 0, TFLM)
    with pytest.raises(InvalidDataError, match="code 4 at flat index 1"):
        unary(np.array([[9, 4]], np.int8), p)
    with pytest.raises(QuantSpecError, match=r"scale 0\.0078125"):
        prepare_unary("TANH", "int8", 0.1, 0, 0.02, 0, TFLM)
    with pytest.raises(QuantSpecError, match="LOGISTIC"):
        prepare_unary("LOGISTIC", "int8", 0.1, 0, 0.02, 0, get_profile("litert-ref"))
    with pytest.raises(QuantSpecError, match="2\\^-15"):
        prepare_unary("TANH", "int16", 2.0**-12, 0, 2.0**-14, 0, TFLM)
    with pytest.raises(QuantSpecError, match="got 3"):
        prepare_unary("LOGISTIC", "int16", 2.0**-12, 3, 2.0**-15, 0, TFLM)
    with pytest.raises(QuantSpecError, match="exponent"):
        prepare_unary("HARD_SWISH", "int8", 0.1, 0, 0.0001, 0, TFLM)
    with pytest.raises(UnsupportedError, match="int16"):
        prepare_unary("HARD_SWISH", "int16", 0.1, 0, 0.1, 0, TFLM)
    with pytest.raises(UnsupportedError, match="LiteRT"):
        prepare_unary("RSQRT", "int16", 0.1, 0, 0.1, 0, get_profile("litert-ref"))
    # The int8 tables hold one output code per input code, for the C generator.
    q = prepare_unary("TANH", "int8", 0.05, 3, 1 / 128, 0, TFLM)
    assert q.table.dtype == np.int8 and q.table.shape == (256,)
    assert q.ints["input_left_shift"] >= 0 and q.ints["input_range_radius"] > 0
    assert len(SIGMOID_TABLE_Q16) == 256 and list(SIGMOID_TABLE_Q16) == sorted(SIGMOID_TABLE_Q16)


# ---------------------------------------------------------------------------------------------
# GATHER, EMBEDDING_LOOKUP, CONCATENATION / TRANSPOSE / RESHAPE graphs
# ---------------------------------------------------------------------------------------------


@PROPERTY
@given(shapes, st.data())
def test_gather_is_an_index_by_index_copy(shape, data) -> None:
    rank = len(shape)
    axis = data.draw(st.integers(0, rank - 1))
    bd = data.draw(st.integers(0, axis))
    extra = data.draw(st.lists(st.integers(1, 3), max_size=2))
    ishape = (*shape[:bd], *extra)
    idx = np.array(
        data.draw(
            st.lists(
                st.integers(0, shape[axis] - 1),
                min_size=math.prod(ishape),
                max_size=math.prod(ishape),
            )
        ),
        np.int32,
    ).reshape(ishape)
    x = np.arange(math.prod(shape), dtype=np.int16).reshape(shape)
    got = gather(x, idx, GatherParams("int16", axis, bd))
    assert got.shape == (*shape[:axis], *ishape[bd:], *shape[axis + 1 :])
    for out_index in np.ndindex(got.shape):
        batch = out_index[:bd]
        outer = out_index[bd:axis]
        coord = out_index[axis : axis + len(ishape) - bd]
        inner = out_index[axis + len(ishape) - bd :]
        src = (*batch, *outer, int(idx[(*batch, *coord)]), *inner)
        assert got[out_index] == x[src]


def test_gather_and_embedding_errors() -> None:
    x = np.arange(12, dtype=np.int8).reshape(4, 3)
    with pytest.raises(InvalidDataError, match=r"index 4 at \(1,\)"):
        gather(x, np.array([0, 4], np.int32), GatherParams("int8", 0, 0))
    with pytest.raises(InvalidDataError, match="index -1"):
        gather(x, np.array([-1], np.int32), GatherParams("int8", 0, 0))
    rows = embedding_lookup(
        np.array([3, 0], np.int32), x, EmbeddingLookupParams("int8", "int8", None)
    )
    assert rows.tolist() == [x[3].tolist(), x[0].tolist()]
    deq = embedding_lookup(
        np.array([2], np.int32), x, EmbeddingLookupParams("int8", "float32", 0.1)
    )
    assert deq.dtype == np.float32 and deq.tolist() == [
        [float(np.float32(0.1) * np.float32(v)) for v in x[2]]
    ]
    with pytest.raises(InvalidDataError, match="index 9"):
        embedding_lookup(np.array([9], np.int32), x, EmbeddingLookupParams("int8", "int8", None))


def graph_of(op, ins, outs, attrs=None) -> Graph:
    tensors = {t.name: t for t in (*ins, *outs)}
    node = Node(op, [t.name for t in ins], [t.name for t in outs], dict(attrs or {}))
    return Graph(tensors, [node], [t.name for t in ins if t.data is None], [t.name for t in outs])


def q8(name, shape, scale=0.1, zp=0, data=None) -> TensorInfo:
    return TensorInfo(name, "int8", shape, np.float32(scale), zp, data=data)


def test_shape_op_graphs() -> None:
    a = np.arange(6, dtype=np.int8).reshape(2, 3)
    b = np.arange(8, dtype=np.int8).reshape(2, 4)
    cat = graph_of(
        "CONCATENATION", [q8("a", (2, 3)), q8("b", (2, 4))], [q8("y", (2, 7))], {"axis": -1}
    )
    (y,) = Program(cat).run([a, b])
    assert y.tolist() == [[0, 1, 2, 0, 1, 2, 3], [3, 4, 5, 4, 5, 6, 7]]
    perm = np.array([1, 0], np.int32)
    tr = graph_of(
        "TRANSPOSE", [q8("a", (2, 3)), TensorInfo("p", "int32", (2,), data=perm)], [q8("y", (3, 2))]
    )
    assert Program(tr).run([a])[0].tolist() == a.T.tolist()
    rs = graph_of(
        "RESHAPE",
        [q8("a", (2, 3)), TensorInfo("s", "int32", (2,), data=np.array([-1, 2], np.int32))],
        [q8("y", (3, 2))],
    )
    assert Program(rs).run([a])[0].tolist() == [[0, 1], [2, 3], [4, 5]]
    assert resolve_new_shape([-1, 4], 8, "t") == (2, 4)
    with pytest.raises(ShapeError, match="-1"):
        resolve_new_shape([-1, -1], 8, "t")


def test_graph_errors_name_node_and_tensor() -> None:
    mixed = graph_of(
        "CONCATENATION",
        [q8("a", (2, 3), 0.1), q8("b", (2, 4), 0.2)],
        [q8("y", (2, 7), 0.1)],
        {"axis": 1},
    )
    with pytest.raises(QuantSpecError, match="'b'"):
        Program(mixed)
    bad_shape = graph_of("ADD", [q8("a", (2, 3)), q8("b", (3,))], [q8("y", (2, 4))])
    with pytest.raises(ShapeError, match="'y'"):
        Program(bad_shape)
    gather_q = graph_of(
        "GATHER", [q8("x", (4, 3), 0.1), TensorInfo("i", "int32", (2,))], [q8("y", (2, 3), 0.3)]
    )
    with pytest.raises(QuantSpecError, match="'y'"):
        Program(gather_q)
    axes = TensorInfo("ax", "int32", (1,))  # not constant
    mean = graph_of("MEAN", [q8("x", (2, 3)), axes], [q8("y", (2,))])
    mean.inputs.append("ax")
    with pytest.raises(UnsupportedError, match="'ax'"):
        Program(mean)
    float_add = graph_of(
        "ADD",
        [TensorInfo("a", "float32", (2,)), TensorInfo("b", "float32", (2,))],
        [TensorInfo("y", "float32", (2,))],
    )
    with pytest.raises(RefqError, match="'a'"):
        Program(float_add)
