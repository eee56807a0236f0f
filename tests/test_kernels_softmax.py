"""SOFTMAX / LOG_SOFTMAX kernels against exact Python-int restatements and error bounds.

The oracles below restate TFLite Micro's algorithms one element at a time with Python ints and the
exact scalar fixed-point definitions of refq.oracle.fixedpoint (not with refq.kernels). The peer
itself is checked in tests/test_peer_tflm_softmax.py.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.errors import ExactnessError, QuantSpecError, ShapeError, UnsupportedError
from refq.graph import Graph, Node, Program, TensorInfo
from refq.kernels import softmax as sm
from refq.oracle import fixedpoint as of

PROPERTY = settings(max_examples=220, deadline=None)


def clz32(v: int) -> int:
    return 32 - v.bit_length()


# --- oracles -------------------------------------------------------------------------------------


def oracle_s8_constants(s_in: float, beta: float, rounding: str = "double") -> tuple[int, int, int]:
    cap = (1 << 30) - 1 if rounding == "single" else (1 << 31) - 1
    real = min(beta * s_in * float(1 << 26), float(cap))
    m, ls = of.quantize_multiplier(real, rounding)
    diff_min = -math.floor(Fraction(31 * (1 << 26), 1 << ls))
    return m, ls, diff_min


def oracle_softmax_s8_row(row, s_in: float, beta: float, bits: int) -> tuple[list[int], int]:
    """TFLM int8 softmax of one row, scalar; returns (outputs, Q12.19 sum)."""
    m, ls, diff_min = oracle_s8_constants(s_in, beta)
    top = max(row)
    exps = []
    total = 0
    for x in row:
        d = int(x) - int(top)
        if d >= diff_min:
            e = of.exp_on_negative_values(of.srdhm(d * (1 << ls), m), 5)
            total += of.rounding_divide_by_pot(e, 12)
            exps.append(e)
        else:
            exps.append(None)
    h = clz32(total)
    recip = of.one_over_one_plus_x_for_x_in_0_1((total << h) - (1 << 31))
    exponent = 12 - h + 31 - bits
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    out = [
        qmin
        if e is None
        else of.clamp(of.rounding_divide_by_pot(of.srdhm(recip, e), exponent) + qmin, qmin, qmax)
        for e in exps
    ]
    return out, total


def oracle_lut(v: int, table) -> int:
    i = 256 + (v >> 7)
    base = int(table[i])
    slope = of.wrap(int(table[i + 1]) - base, 16)
    return of.wrap(base + ((slope * (v & 127) + 64) >> 7), 16)


def oracle_softmax_s16_row(row, s_in: float, beta: float) -> list[int]:
    """TFLM int16 softmax of one row, scalar, on the shipped tables."""
    tables = sm.s16_tables()
    m, shift = of.quantize_multiplier(s_in * beta / (10.0 / 65535.0))
    top = max(int(v) for v in row)
    exps = []
    for x in row:
        scaled = of.multiply_by_quantized_multiplier(int(x) - top, m, shift)
        exps.append(oracle_lut(of.clamp(scaled + 32767, -32768, 32767), tables["exp"]))
    total = sum(exps)
    h = clz32(total)
    shifted = ((total << (h - 1)) + (1 << 13)) >> 14
    recip = oracle_lut(
        of.clamp(shifted - (1 << 15) - (1 << 16), -32768, 32767), tables["one_over_one_plus_x"]
    )
    right = 31 - h
    return [of.clamp((e * recip + (1 << (right - 1))) >> right, 0, 32767) for e in exps]


# --- strategies ----------------------------------------------------------------------------------


scales_s8 = st.floats(-10, 2).map(lambda e: float(np.float32(2.0**e)))
betas = st.sampled_from([1.0, 0.5, 2.0, 0.25, 1.3])


@st.composite
def int8_rows(draw, max_rows: int = 3, max_len: int = 40):
    """Rows of random codes: uniform, narrow (all near one value) or with a block at the max."""
    rows = draw(st.integers(1, max_rows))
    n = draw(st.integers(1, max_len))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["uniform", "narrow", "block"]))
    if kind == "uniform":
        x = rng.integers(-128, 128, (rows, n))
    elif kind == "narrow":
        c = int(rng.integers(-120, 120))
        x = np.clip(c + rng.integers(-4, 5, (rows, n)), -128, 127)
    else:
        x = rng.integers(-128, 60, (rows, n))
        x[:, rng.random(n) < rng.random()] = 60
    return x.astype(np.int8)


# --- int8 softmax --------------------------------------------------------------------------------


@PROPERTY
@given(int8_rows(), scales_s8, betas, st.sampled_from([8, 16]))
def test_softmax_s8_equals_scalar_oracle(x, s_in, beta, bits) -> None:
    p = sm.prepare_softmax_s8(s_in, beta, output_bits=bits)
    got = sm.softmax_s8(x, p)
    assert got.dtype == (np.int8 if bits == 8 else np.int16)
    for r in range(x.shape[0]):
        expected, _ = oracle_softmax_s8_row(x[r].tolist(), s_in, beta, bits)
        assert got[r].tolist() == expected


@PROPERTY
@given(st.data(), scales_s8, betas, st.sampled_from(["double", "single"]))
def test_tabulated_softmax_is_bit_identical_to_direct(data, s_in, beta, rounding) -> None:
    """The 256-entry exp table gives the same result as per-element exp_on_negative_values."""
    x = data.draw(int8_rows(max_rows=3, max_len=120))
    p = sm.prepare_softmax_s8(s_in, beta, rounding=rounding, long_rows="safe")
    assert np.array_equal(sm.softmax_s8(x, p), sm.softmax_s8_direct(x, p))
    # Every table entry is the direct value of its difference d = -i (0 when d < diff_min).
    m, ls = p.input_multiplier, p.input_left_shift
    for i in data.draw(st.lists(st.integers(0, 255), min_size=4, max_size=4)):
        if -i < p.diff_min:
            assert p.exp_q31[i] == 0 and p.exp_q12[i] == 0
        elif rounding == "double":
            e = of.exp_on_negative_values(of.srdhm(-i * (1 << ls), m), 5)
            assert (p.exp_q31[i], p.exp_q12[i]) == (e, of.rounding_divide_by_pot(e, 12))


def test_exp_tables_equal_the_direct_exponentials_on_every_difference() -> None:
    """The tabulated formulation's whole premise: for each of the 256 int8 differences the table
    holds exactly the gemmlowp exponential (Python-int oracle) and its Q12.19 contribution."""
    rng = np.random.default_rng(12)
    for _ in range(40):
        s_in, beta = float(np.float32(2.0 ** rng.uniform(-10, 2))), float(rng.uniform(0.1, 3))
        p = sm.prepare_softmax_s8(s_in, beta)
        m, ls, diff_min = oracle_s8_constants(s_in, beta)
        for i in range(256):
            if -i < diff_min:
                assert p.exp_q31[i] == p.exp_q12[i] == 0
                continue
            e = of.exp_on_negative_values(of.srdhm(-i * (1 << ls), m), 5)
            assert (int(p.exp_q31[i]), int(p.exp_q12[i])) == (e, of.rounding_divide_by_pot(e, 12))


def test_prepare_constants_match_definitions() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        s_in, beta = float(np.float32(2.0 ** rng.uniform(-12, 3))), float(rng.uniform(0.05, 5))
        for rounding in ("double", "single"):
            p = sm.prepare_softmax_s8(s_in, beta, rounding=rounding)
            assert (p.input_multiplier, p.input_left_shift, p.diff_min) == oracle_s8_constants(
                s_in, beta, rounding
            )


def _hazard_row(n_at_max: int, n: int, rng) -> np.ndarray:
    x = rng.integers(-128, 0, (1, n))
    x[0, :n_at_max] = 100
    return x.astype(np.int8)


def test_hazard_rows_raise_naming_the_row() -> None:
    rng = np.random.default_rng(6)
    p = sm.prepare_softmax_s8(0.05, 1.0, name="attn_softmax")
    x = np.concatenate([_hazard_row(10, 600, rng), _hazard_row(512, 600, rng)])[None]
    with pytest.raises(ExactnessError, match=r"'attn_softmax'.*row \(0, 1\).*exceeds 31"):
        sm.softmax_s8(x, p)
    # 511 elements at the maximum: the last defined case, final shift exactly 31.
    y = sm.softmax_s8(np.full((1, 511), 100, np.int8), p)
    assert (y == -127).all()  # 256 / 511 = 0.501: one output step
    # int16 output: the shift hazard cannot occur, the int32 sum overflows at 4096 at the max.
    p16 = sm.prepare_softmax_s8(0.05, 1.0, output_bits=16)
    assert sm.softmax_s8(np.full((1, 4095), 3, np.int8), p16).shape == (1, 4095)
    with pytest.raises(ExactnessError, match="overflows int32"):
        sm.softmax_s8(np.full((1, 4097), 3, np.int8), p16)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_safe_mode_equals_reference_where_defined(data) -> None:
    s_in = data.draw(scales_s8)
    x = data.draw(int8_rows(max_rows=3, max_len=200))
    ref = sm.prepare_softmax_s8(s_in, 1.0)
    safe = sm.prepare_softmax_s8(s_in, 1.0, long_rows="safe")
    assert np.array_equal(sm.softmax_s8(x, ref), sm.softmax_s8(x, safe))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_safe_mode_error_bound_against_exact_rationals(data) -> None:
    """Long rows in safe mode: |y + 128 - min(256 e_i / E, 255)| <= 1/2 + 256 (e_i / E) (n + 64)
    2^-20,
    where e_i are the row's Q0.31 exponentials and E their exact sum (Python-int rationals).

    The slack covers the Q12.19 truncation of each exponential in the peer's sum (at most 2^11
    per element against E >= 2^31) and the Newton reciprocal's error."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n = data.draw(st.integers(400, 5000))
    at_max = data.draw(st.integers(1, n))
    s_in = data.draw(st.floats(-9, -2).map(lambda e: float(np.float32(2.0**e))))
    x = rng.integers(-128, 100, n)
    x[rng.choice(n, at_max, replace=False)] = 100
    x = x.astype(np.int8)[None]
    p = sm.prepare_softmax_s8(s_in, 1.0, long_rows="safe")
    y = sm.softmax_s8(x, p)[0].astype(np.int64) + 128
    e = p.exp_q31.astype(np.int64)[100 - x[0].astype(np.int64)]
    big_e = int(e.sum())
    # The largest code is 127: the target is min(256 e_i / E, 255).
    target = np.minimum(256 * e.astype(object), 255 * big_e)
    lhs = np.abs(y.astype(object) * big_e - target) * (1 << 20)
    rhs = big_e * (1 << 19) + 256 * e.astype(object) * (n + 64) + big_e
    assert (lhs <= rhs).all()
    if int(p.exp_q12.astype(np.int64)[100 - x[0].astype(np.int64)].sum()) >= 1 << 28:
        assert (y == 0).all()  # past the hazard every output is the zero point


@settings(max_examples=200, deadline=None)
@given(int8_rows(max_rows=2, max_len=600), scales_s8, betas)
def test_softmax_s8_close_to_float_softmax(x, s_in, beta) -> None:
    """|y + 128 - min(256 softmax(beta s x), 255)| <= 1/2 + 256 p (n + 64) 2^-20 + 2^-12 (plus exp's
    fixed-point error, far below 2^-12 for these scales)."""
    p = sm.prepare_softmax_s8(s_in, beta, long_rows="safe")
    y = sm.softmax_s8(x, p).astype(np.float64) + 128
    ref = sm.float_softmax(x.astype(np.float64) * float(np.float32(s_in)) * beta)
    n = x.shape[-1]
    bound = 0.5 + 256 * ref * (n + 64) * 2.0**-20 + 2.0**-12
    skipped = (x.astype(np.int64) - x.max(axis=-1, keepdims=True)) < p.diff_min
    target = np.minimum(256 * ref, 255)  # the largest code is 127
    assert (np.abs(y - target)[~skipped] <= bound[~skipped]).all()
    assert (256 * ref[skipped] <= 0.5).all()  # skipped elements really are negligible


def test_masked_rows_ignore_masked_elements() -> None:
    """``valid`` removes elements entirely: same result as softmax over the kept prefix."""
    rng = np.random.default_rng(8)
    p = sm.prepare_softmax_s8(0.07, 1.0)
    for _ in range(50):
        n = int(rng.integers(2, 80))
        x = rng.integers(-128, 128, (3, n))
        lengths = rng.integers(1, n + 1, 3)
        valid = np.arange(n)[None, :] < lengths[:, None]
        got = sm.softmax_rows_s8(x, p, valid)
        for r in range(3):
            k = int(lengths[r])
            assert np.array_equal(got[r, :k], sm.softmax_rows_s8(x[r : r + 1, :k], p)[0])
            assert (got[r, k:] == -128).all()


# --- int16 softmax -------------------------------------------------------------------------------


@PROPERTY
@given(st.data())
def test_softmax_s16_equals_scalar_oracle(data) -> None:
    rows, n = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 40))
    hi = data.draw(st.sampled_from([32767, 2000, 100]))
    flat = data.draw(st.lists(st.integers(-hi - 1, hi), min_size=rows * n, max_size=rows * n))
    x = np.array(flat, dtype=np.int16).reshape(rows, n)
    s_in = data.draw(st.floats(-16, -3).map(lambda e: float(np.float32(2.0**e))))
    beta = data.draw(betas)
    got = sm.softmax_s16(x, sm.prepare_softmax_s16(s_in, beta))
    for r in range(rows):
        assert got[r].tolist() == oracle_softmax_s16_row(x[r].tolist(), s_in, beta)


def _gen_lut_scalar(func, lo: float, hi: float, omin: float, omax: float) -> list[int]:
    """TFLite gen_lut<float, int16_t, int16_t>, one float32 operation at a time."""
    f = np.float32

    def rnd(v):  # std::round on a float32
        return f(math.copysign(math.floor(abs(float(v)) + 0.5), float(v)))

    lo, hi = f(lo), f(hi)
    step = f((hi - lo) / f(512))
    half = f(step / f(2))
    k = f(f(65536) / f(f(omax) - f(omin)))
    out = []
    for i in range(512):
        a = f(lo + f(f(i) * step))
        val, mid = func(a), func(f(a + half))
        nxt = func(f(lo + f(f(i + 1) * step)))
        sample = rnd(f(val * k))
        interp = rnd(f(f(f(nxt * k) + sample) / f(2)))
        bias = rnd(f(f(interp - rnd(f(mid * k))) / f(2)))
        out.append(int(min(max(f(sample - bias), -32768.0), 32767.0)))
    out.append(int(min(max(rnd(f(func(hi) * k)), -32768.0), 32767.0)))
    return out


def test_shipped_s16_tables_are_tflm_gen_lut() -> None:
    """The shipped tables equal TFLM's gen_lut in float32: with float64-rounded expf, and with
    this machine's libm expf (the peer's dependency) where libm is available."""
    tables = sm.s16_tables()
    f = np.float32
    recip = _gen_lut_scalar(lambda v: f(f(1) / f(f(1) + v)), 0.0, 1.0, -1.0, 1.0)
    assert tables["one_over_one_plus_x"].tolist() == recip
    exp64 = _gen_lut_scalar(lambda v: f(math.exp(float(v))), -10.0, 0.0, -1.0, 1.0)
    assert tables["exp"].tolist() == exp64
    name = ctypes.util.find_library("m")
    if name is not None:
        libm = ctypes.CDLL(name)
        libm.expf.restype, libm.expf.argtypes = ctypes.c_float, [ctypes.c_float]
        expf = _gen_lut_scalar(lambda v: f(libm.expf(float(v))), -10.0, 0.0, -1.0, 1.0)
        assert tables["exp"].tolist() == expf
    # And they are what they claim to be: exp and 1/(1+x) in Q0.15 within two steps (gen_lut
    # shifts entries by half the midpoint interpolation error, up to ~1.5 steps here).
    xs = -10.0 + 10.0 * np.arange(513) / 512
    assert np.abs(tables["exp"] - np.minimum(np.exp(xs) * 32768, 32767)).max() <= 2.0
    us = np.arange(513) / 512
    assert np.abs(tables["one_over_one_plus_x"] - np.minimum(32768 / (1 + us), 32767)).max() <= 2
    assert np.array_equal(sm.generate_s16_tables()["exp"], tables["exp"])


def _gen_lut_double(func, lo: float, hi: float, omin: float, omax: float) -> list[int]:
    """gen_lut<double, ...> (LiteRT) with exact rationals for the steps, then float64 func."""

    def rnd(v: float) -> int:
        return math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)

    step = (hi - lo) / 512
    k = 65536 / (omax - omin)
    out = []
    for i in range(512):
        sample = rnd(func(lo + i * step) * k)
        interp = rnd((func(lo + (i + 1) * step) * k + sample) / 2)
        bias = rnd((interp - rnd(func(lo + i * step + step / 2) * k)) / 2)
        out.append(max(-32768, min(32767, sample - bias)))
    out.append(max(-32768, min(32767, rnd(func(hi) * k))))
    return out


def test_shipped_litert_tables_are_double_gen_lut() -> None:
    tables = sm.s16_tables()
    recip = _gen_lut_double(lambda v: 1.0 / (1.0 + v), 0.0, 1.0, -1.0, 1.0)
    assert tables["one_over_one_plus_x_double"].tolist() == recip
    assert tables["exp_double"].tolist() == _gen_lut_double(math.exp, -10.0, 0.0, -1.0, 1.0)
    # The two builds differ in exactly two entries of 1/(1+x), not in exp.
    diff = tables["one_over_one_plus_x_double"] != tables["one_over_one_plus_x"]
    assert int(diff.sum()) == 2
    assert np.array_equal(tables["exp_double"], tables["exp"])
    with pytest.raises(UnsupportedError, match="int16 tables"):
        sm.prepare_softmax_s16(0.001, tables="onnx")


def test_softmax_s16_sum_overflow_raises() -> None:
    p = sm.prepare_softmax_s16(0.001, 1.0)
    with pytest.raises(ExactnessError, match="overflows"):
        sm.softmax_s16(np.zeros((1, 70000), np.int16), p)


# --- LOG_SOFTMAX (its fixed-point log is tested in tests/test_fixedpoint.py) -------------------


@settings(max_examples=200, deadline=None)
@given(int8_rows(max_rows=3, max_len=300), scales_s8)
def test_log_softmax_close_to_float(x, s_in) -> None:
    """Outputs above -128 are within 1/32 + 2^-12 of the float log-softmax (scale 1/16)."""
    p = sm.prepare_log_softmax_s8(s_in)
    y = sm.log_softmax_s8(x, p).astype(np.float64)
    xf = x.astype(np.float64) * float(np.float32(s_in))
    ref = xf - xf.max(axis=-1, keepdims=True)
    ref = ref - np.log(np.exp(ref).sum(axis=-1, keepdims=True))
    kept = y > -128
    assert (np.abs((y - 127) / 16 - ref)[kept] <= 1 / 32 + 2.0**-12).all()
    assert ((ref * 16 + 127)[~kept] <= -127.5 + 2.0**-8).all()  # clamped ones belong there


# --- graph adapter -------------------------------------------------------------------------------


def _graph(dt_in, dt_out, s_out, zp_out, zp_in=0, attrs=None) -> Graph:
    t = {
        "x": TensorInfo("x", dt_in, (2, 5), np.float32(0.1), zp_in),
        "y": TensorInfo("y", dt_out, (2, 5), np.float32(s_out), zp_out),
    }
    return Graph(t, [Node("SOFTMAX", ("x",), ("y",), attrs or {})], ["x"], ["y"])


def test_graph_checks_output_quantization_and_types() -> None:
    with pytest.raises(QuantSpecError, match=r"'y'.*0\.00390625"):
        Program(_graph("int8", "int8", 1 / 128, -128))
    with pytest.raises(QuantSpecError, match="zero point 0"):
        Program(_graph("int16", "int16", 1 / 32768, 0, zp_in=3))
    with pytest.raises(UnsupportedError, match="long_rows"):
        Program(_graph("int8", "int8", 1 / 256, -128, attrs={"long_rows": "clip"}))
    prog = Program(_graph("int8", "int8", 1 / 256, -128, attrs={"beta": 0.7}))
    x = np.arange(10, dtype=np.int8).reshape(2, 5)
    expected = [
        oracle_softmax_s8_row(r, float(np.float32(0.1)), float(np.float32(0.7)), 8)[0]
        for r in x.tolist()
    ]
    assert prog.run([x])[0].tolist() == expected
    with pytest.raises(ShapeError):
        sm.softmax_s8(np.zeros((2, 0), np.int8), prog.steps[0][2])
