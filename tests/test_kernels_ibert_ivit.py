"""I-BERT and I-ViT integer nonlinearities: exact rational restatements, float error bounds, and the
documented failure regimes (peer-facts section 7).

The oracles restate the published formulas one value at a time with Fractions and Python ints
(unbounded, so they also check refq's int64 saturation argument in ShiftGELU).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from refq import fixedpoint as fp
from refq.errors import ExactnessError, InvalidDataError, QuantSpecError
from refq.graph import Graph, Node, Program, TensorInfo
from refq.kernels import ibert, ivit
from refq.kernels.gelu import float_gelu
from refq.kernels.softmax import float_softmax
from refq.oracle import norms as norms_oracle

PROPERTY = settings(max_examples=220, deadline=None)
F = Fraction


def floor(q) -> int:
    return math.floor(q)


# --- oracles -------------------------------------------------------------------------------------


def oracle_i_gelu(q: int, s: float, n: int) -> tuple[int, Fraction]:
    """Algorithm 2 with the released constants (k = 1.4142, floor by 2^n), exactly."""
    sp = F(s) / F(1.4142)
    a = F(-0.2888)
    q_b = floor(F(-1.769) / sp)
    q_c = floor(F(1.0) / (a * sp * sp))
    sign = (q > 0) - (q < 0)
    t = min(abs(q), -q_b)
    erf = floor(F(sign * ((t + q_b) ** 2 + q_c), 2**n))
    s_erf = a * sp * sp * 2**n
    return q * (erf + floor(1 / s_erf)), F(s) * s_erf / 2


def oracle_i_exp(q: int, s: float) -> tuple[int, Fraction]:
    """Algorithm 3 exactly: x = -z ln2 + p, exp(p) ~ 0.3585 (p + 1.353)^2 + 0.344."""
    s = F(s)
    q_ln2 = floor(F(math.log(2.0)) / s)
    z = floor(F(-q, q_ln2))
    p = q + z * q_ln2
    q_b = floor(F(1.353) / s)
    q_c = floor(F(0.344) / (F(0.3585) * s * s))
    return floor(F((p + q_b) ** 2 + q_c, 2**z)), F(0.3585) * s * s


def oracle_shift_exp(x: int, x0: int, n: int) -> int:
    t = x + floor(F(x, 2)) - floor(F(x, 16))
    t = max(t, n * x0)
    q = floor(F(t, x0))
    r = t - x0 * q
    return floor((F(r, 2) - x0) * F(2) ** (n - q))


def oracle_shiftmax(row: list[int], s: float, out_bits: int) -> list[int]:
    x0 = floor(-1 / F(s))
    top = max(row)
    e = [oracle_shift_exp(v - top, x0, 15) for v in row]
    z = min(sum(e), 2**31 - 1)
    factor = (2**31 - 1) // z
    return [floor(F(v * factor, 2 ** (32 - out_bits))) for v in e]


def oracle_shift_gelu(row: list[int], s: float) -> list[int]:
    x0 = floor(-1 / (F(s) * F(1.702)))
    top = max(row)
    e_m = oracle_shift_exp(-top, x0, 23)
    out = []
    for v in row:
        e = oracle_shift_exp(v - top, x0, 23)
        z = min(e + e_m, 2**31 - 1)
        out.append(v * floor(F(e * ((2**31 - 1) // z), 2**24)))
    return out


# --- I-BERT --------------------------------------------------------------------------------------


scales_small = st.floats(-14, -3).map(lambda e: float(np.float32(2.0**e)))
scales_8bit = st.floats(-9, -2).map(lambda e: float(np.float32(2.0**e)))


@PROPERTY
@given(st.data(), st.sampled_from([0, 14]))
def test_i_gelu_equals_exact_restatement(data, n) -> None:
    s = data.draw(st.one_of(scales_small, scales_8bit))
    lim = min(int(8 / s), 1 << 20)
    qs = data.draw(st.lists(st.integers(-lim, lim), min_size=1, max_size=30))
    c = ibert.i_gelu_constants(s, erf_shift=n)
    got = ibert.i_gelu(np.array(qs), c)
    for q, g in zip(qs, got.tolist(), strict=True):
        expected, scale = oracle_i_gelu(q, s, n)
        assert g == expected
        assert scale == c.scale_out


@pytest.mark.parametrize("s", [1e-5, 1e-4, 2.5e-4, 1e-3])
def test_i_gelu_error_with_32bit_inputs_and_tiny_scales(s) -> None:
    """The regime I-BERT targets (int32 accumulators, tiny scales): |error| <= 0.025 on
    [-8, 8] (the paper's polynomial is within ~0.018 of erf-GELU; the rest is the floor by 2^14
    and the coarse constants)."""
    q = np.unique(np.linspace(-8 / s, 8 / s, 40001).astype(np.int64))
    c = ibert.i_gelu_constants(s)
    y = ibert.i_gelu(q, c).astype(np.float64) * float(c.scale_out)
    assert c.scale_out < 0  # I-BERT's output scale is negative (a < 0)
    assert np.abs(y - float_gelu(q * s)).max() <= 0.025


def test_i_gelu_breaks_on_8bit_inputs_at_realistic_scales() -> None:
    """Released form (floor by 2^14) on int8 inputs: error > 1 for scales >= 0.02; the paper's
    Algorithm 2 (erf_shift=0) stays within 0.035 up to scale 0.1."""
    q = np.arange(-128, 128)
    errs = {}
    for s in (0.005, 0.02, 0.05, 0.1):
        for n in (0, 14):
            c = ibert.i_gelu_constants(s, erf_shift=n)
            y = ibert.i_gelu(q, c) * float(c.scale_out)
            errs[s, n] = float(np.abs(y - float_gelu(q * s)).max())
    assert errs[0.02, 14] > 1 and errs[0.05, 14] > 10 and errs[0.1, 14] > 100
    assert errs[0.005, 14] < 0.05
    assert max(errs[s, 0] for s in (0.005, 0.02, 0.05, 0.1)) <= 0.035


def test_i_gelu_refuses_int64_overflow() -> None:
    c = ibert.i_gelu_constants(1e-7, erf_shift=0)
    with pytest.raises(ExactnessError, match="int64"):
        ibert.i_gelu(np.array([(1 << 31) - 1]), c)


@PROPERTY
@given(st.data())
def test_i_exp_equals_exact_restatement(data) -> None:
    s = data.draw(st.floats(-14, -1).map(lambda e: float(np.float32(2.0**e))))
    lim = min(int(30 / s), 1 << 24)
    qs = data.draw(st.lists(st.integers(-lim, 0), min_size=1, max_size=30))
    c = ibert.i_exp_constants(s)
    got = ibert.i_exp(np.array(qs), c)
    for q, g in zip(qs, got.tolist(), strict=True):
        expected, scale = oracle_i_exp(q, s)
        assert (g, c.scale_out) == (expected, scale)


@pytest.mark.parametrize("s", [1e-4, 1e-3, 1e-2])
def test_i_exp_error(s) -> None:
    """exp(p) ~ 0.3585 (p + 1.353)^2 + 0.344 is within 2e-3 on [-ln2, 0]; with the floors of the
    constants, |i-exp - exp| <= 2e-3 + 200 s on [-10, 0]."""
    q = -np.arange(int(10 / s) + 1)
    c = ibert.i_exp_constants(s)
    y = ibert.i_exp(q, c) * float(c.scale_out)
    assert np.abs(y - np.exp(q * s)).max() <= 2e-3 + 200 * s
    with pytest.raises(InvalidDataError):
        ibert.i_exp(np.array([1]), c)
    with pytest.raises(QuantSpecError):
        ibert.i_exp_constants(0.8)  # floor(ln2 / S) = 0


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_ibert_softmax_close_to_float(data) -> None:
    """Outputs (scale 2^-8) within 2^-8 + 0.004 + delta*S of the float softmax for S <= 0.03.

    2^-8 is the output step, 0.004 the second-order polynomial's error. delta*S comes from
    the integer ln2: i-exp writes x = -z*q_ln2*S + p with q_ln2 = floor(ln2 / S), so each of the
    z halvings is off by delta*S = ln2 - q_ln2*S (delta in [0, 1)); an element 2^-z of the row
    maximum is then off by a factor exp(-z*delta*S), i.e. by at most z*2^-z*delta*S <= delta*S/2
    absolutely, and normalizing at most doubles that."""
    s = data.draw(st.floats(-9, math.log2(0.03)).map(lambda e: float(np.float32(2.0**e))))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    q = rng.integers(-128, 128, (2, int(rng.integers(1, 200))))
    consts = ibert.i_exp_constants(s)
    y = ibert.ibert_softmax(q, consts, 8) / 256
    delta_s = math.log(2) - consts.q_ln2 * s
    assert np.abs(y - float_softmax(q * s)).max() <= 2.0**-8 + 0.004 + delta_s


# --- square roots --------------------------------------------------------------------------------


int64_values = st.one_of(
    st.integers(0, (1 << 63) - 1),
    st.integers(0, 1 << 20),
    st.integers(1, 3037000499).map(lambda r: r * r),
    st.integers(2, 3037000499).map(lambda r: r * r - 1),
    st.sampled_from([0, 1, 2, 3, 4, (1 << 62), (1 << 63) - 1, (1 << 53) + 1]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(int64_values, min_size=1, max_size=20))
@example([0, 1, (1 << 63) - 1, 3037000499**2, 3037000499**2 - 1])
def test_i_sqrt_is_floor_sqrt(values) -> None:
    """I-BERT's Algorithm 4 ends at floor(sqrt(n)): the value refq.fixedpoint.isqrt gives the
    ibert profile's LayerNorm."""
    assert [norms_oracle.ibert_isqrt(v) for v in values] == [math.isqrt(v) for v in values]
    got = fp.isqrt(np.array(values, dtype=np.int64))
    assert got.tolist() == [math.isqrt(v) for v in values]
    assert fp.isqrt(values[0]) == math.isqrt(values[0])


def test_ivit_sqrt_fails_on_small_variances() -> None:
    """10 Newton steps from 2^16: not come down for small v (6.4x too large at v = 100), not
    converged for v >= 2^47; exact in between."""
    v = np.arange(1, 200_000, dtype=np.int64)
    got = ivit.ivit_sqrt(v)
    exact = fp.isqrt(v)
    assert (got[v < 30_000] > exact[v < 30_000]).all()
    assert got[v == 100][0] >= 64  # sqrt(100) = 10
    assert np.max(got[v >= 100] / exact[v >= 100]) > 6.0
    assert (got[v >= 184_000] == exact[v >= 184_000]).all()
    wrong = np.mean(ivit.ivit_sqrt(np.arange(1 << 20)) != fp.isqrt(np.arange(1 << 20)))
    assert 0.03 < wrong < 0.08  # ~4.9% of [0, 2^20): everything below ~1.8e5
    mid = np.random.default_rng(1).integers(1 << 20, 1 << 44, 5000)
    assert np.array_equal(ivit.ivit_sqrt(mid), fp.isqrt(mid))
    big = np.random.default_rng(2).integers(1 << 47, 1 << 62, 5000)
    assert (ivit.ivit_sqrt(big) != fp.isqrt(big)).all()  # not converged from below
    assert ivit.integer_sqrt(100, "exact") == 10 and ivit.integer_sqrt(100, "newton10") >= 64


def test_ivit_sqrt_off_by_one_just_below_squares() -> None:
    """Between the two failure regimes the ten steps stay within one of the root but are not
    exact: at v = r^2 - 1 the floor iteration can stop on r (the ceiling) instead of r - 1.
    The kernel equals the scalar restatement (refq.oracle.norms.newton10) there."""
    r = np.arange(430, 1 << 13, dtype=np.int64)  # v from 184,899 (past the first regime)
    v = r * r - 1
    got = ivit.ivit_sqrt(v)
    assert got.tolist() == [norms_oracle.newton10(int(x)) for x in v]
    off = got - fp.isqrt(v)
    assert set(off.tolist()) == {0, 1}
    assert int(off.sum()) > 1000  # not rare: a large share of these r


# --- I-ViT Shiftmax and ShiftGELU ----------------------------------------------------------------


@PROPERTY
@given(st.data())
def test_shiftmax_equals_exact_restatement(data) -> None:
    s = data.draw(st.floats(-9, 0).map(lambda e: float(np.float32(2.0**e))))
    row = data.draw(st.lists(st.integers(-128, 127), min_size=1, max_size=40))
    out_bits = data.draw(st.sampled_from([8, 9]))
    got = ivit.shiftmax(np.array([row]), s, out_bits)[0].tolist()
    assert got == oracle_shiftmax(row, s, out_bits)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_shiftmax_close_to_float(data) -> None:
    """Shift-exp approximates log2 e by 1.4375 and 2^r by 1 + r/2 (up to 6% low): |p_hat - p|
    <= 0.07 for int8 rows at scales <= 0.1 (outputs with scale 2^-8; 0.059 seen in 3000 rows)."""
    s = data.draw(st.floats(-8, math.log2(0.1)).map(lambda e: float(np.float32(2.0**e))))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    q = rng.integers(-128, 128, (2, int(rng.integers(1, 200))))
    y = ivit.shiftmax(q, s, 9) / 256
    assert np.abs(y - float_softmax(q * s)).max() <= 0.07


@PROPERTY
@given(st.data())
def test_shift_gelu_equals_exact_restatement(data) -> None:
    """Including rows whose maximum is negative (exp of -m > 0, values beyond int64: refq
    saturates them, which the unbounded oracle shows is exact)."""
    s = data.draw(st.floats(-9, 0).map(lambda e: float(np.float32(2.0**e))))
    row = data.draw(st.lists(st.integers(-128, 127), min_size=1, max_size=40))
    if data.draw(st.booleans()):
        row = [min(v, -1) for v in row]
    prod, _ = ivit.shift_gelu(np.array([row]), s)
    assert prod[0].tolist() == oracle_shift_gelu(row, s)


def test_shift_gelu_error_and_its_regimes() -> None:
    """ShiftGELU ~ x sigmoid(1.702 x) on full int8 rows (-128..127):

    * scales 0.03-0.06: within 6% of |x| plus 0.1;
    * scales 0.01-0.02: the reciprocal floor((2^31 - 1) / Z) keeps only ~3 bits when
      Z ~ |x0| 2^23 ~ 2^28, so the sigmoid is off by up to ~20% (within 22% of |x| plus 0.1);
    * a large row maximum puts very negative inputs under the clamp at 23 x0 together with
      exp(-max): their sigmoid is 1/2 (63/128), and GELU(-10) comes out as -4.92.
    """
    q = np.arange(-128, 128)[None]
    for s, rel in ((0.03, 0.06), (0.04, 0.06), (0.06, 0.06), (0.01, 0.22), (0.02, 0.22)):
        prod, _ = ivit.shift_gelu(q, s)
        err = np.abs(prod * s / 128 - float_gelu(q * s))
        assert (err <= rel * np.abs(q * s) + 0.1).all(), s
        if rel > 0.1:
            assert (err > 0.06 * np.abs(q * s) + 0.1).any(), s  # the regime is real
    s = 0.1
    row = np.array([[-100, -90, 0, 100]])  # x = -10, -9, 0, 10
    prod, sig = ivit.shift_gelu(row, s)
    # Both clamped: the same sigmoid, floor((2^31 - 1) / 2e) e / 2^24 = 63 (1/2 less one step).
    assert sig[0, 0] == sig[0, 1] == 63
    assert prod[0, 0] * s / 128 == pytest.approx(-4.92, abs=0.01)
    assert abs(float_gelu(np.array([-10.0]))[0]) < 1e-20


# --- graph ops under the profiles ----------------------------------------------------------------


def _graph(op: str, s_in: float, s_out: float, zp_out: int, attrs=None) -> Graph:
    t = {
        "x": TensorInfo("x", "int8", (2, 16), np.float32(s_in), 0),
        "y": TensorInfo("y", "int8", (2, 16), np.float32(s_out), zp_out),
    }
    return Graph(t, [Node(op, ("x",), ("y",), attrs or {})], ["x"], ["y"])


def test_softmax_op_under_ibert_and_ivit_profiles() -> None:
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (2, 16)).astype(np.int8)
    s = float(np.float32(0.05))
    g = _graph("SOFTMAX", 0.05, 1 / 256, -128)
    y_ibert = Program(g, "ibert").run([x])[0].astype(np.int64)
    expected = [
        [min(v, 255) - 128 for v in row]
        for row in (ibert.ibert_softmax(x.astype(np.int64), ibert.i_exp_constants(s), 8)).tolist()
    ]
    assert y_ibert.tolist() == expected
    y_ivit = Program(g, "ivit").run([x])[0].astype(np.int64)
    assert y_ivit.tolist() == [
        [min(v, 255) - 128 for v in oracle_shiftmax(row, s, 9)] for row in x.tolist()
    ]
    with pytest.raises(QuantSpecError, match="2\\^-k"):
        Program(_graph("SOFTMAX", 0.05, 1 / 200, -128), "ibert")


def test_gelu_op_under_ibert_and_ivit_profiles() -> None:
    x = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    s_in, s_out = float(np.float32(0.01)), float(np.float32(0.02))
    t = {
        "x": TensorInfo("x", "int8", (16, 16), np.float32(0.01), 0),
        "y": TensorInfo("y", "int8", (16, 16), np.float32(0.02), 5),
    }
    g = Graph(t, [Node("GELU", ("x",), ("y",), {"erf_shift": 0})], ["x"], ["y"])
    y = Program(g, "ibert").run([x])[0].astype(np.int64)
    for code, out in zip(x.ravel().tolist(), y.ravel().tolist(), strict=True):
        q_out, scale = oracle_i_gelu(code, s_in, 0)
        real = q_out * scale / F(s_out)
        rounded = floor(abs(real) + F(1, 2)) * (1 if real >= 0 else -1)
        assert out == max(-128, min(127, rounded + 5))
    assert np.abs((y - 5) * s_out - float_gelu(x * s_in)).max() <= 0.02 / 2 + 0.02
    y_ivit = Program(g, "ivit").run([x])[0].astype(np.int64)
    for r, row in enumerate(x.tolist()):
        prods = oracle_shift_gelu(row, s_in)
        m, sh = fp.quantize_multiplier(float(F(s_in) / (F(s_out) * 128)))
        expected = [
            max(-128, min(127, fp.multiply_by_quantized_multiplier(p, m, sh) + 5)) for p in prods
        ]
        assert y_ivit[r].tolist() == expected
