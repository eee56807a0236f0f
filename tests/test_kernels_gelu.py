"""GELU (LiteRT table, bit-exact against ai-edge-litert), SiLU and SwiGLU (exact Python-int
restatements and float error bounds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.errors import QuantSpecError, ShapeError, UnsupportedError
from refq.graph import Graph, Node, Program, TensorInfo
from refq.kernels import gelu as gl
from refq.kernels import silu as sl
from refq.oracle import fixedpoint as of
from refq.tflite.writer import write_tflite
from tests.conftest import require_module
from tests.peers import run_litert

PROPERTY = settings(max_examples=220, deadline=None)
scales = st.floats(-9, 0).map(lambda e: float(np.float32(2.0**e)))
zps = st.integers(-128, 127)


def _unary(op: str, s_in, zp_in, s_out, zp_out, shape=(1, 256), attrs=None, dt_out="int8"):
    t = {
        "x": TensorInfo("x", "int8", shape, np.float32(s_in), zp_in),
        "y": TensorInfo("y", dt_out, shape, np.float32(s_out), zp_out),
    }
    return Graph(t, [Node(op, ("x",), ("y",), attrs or {})], ["x"], ["y"])


# --- GELU: LiteRT --------------------------------------------------------------------------------


def test_litert_gelu_int8_bit_exact(checked) -> None:
    """Every int8 code through LiteRT's GELU (exact and tanh forms) for random quantizations."""
    require_module("ai_edge_litert.interpreter")
    rng = np.random.default_rng(41)
    cases = 0
    for i in range(300):
        s_in, s_out = (float(np.float32(2.0 ** rng.uniform(-9, 1))) for _ in range(2))
        zp_in, zp_out = (int(v) for v in rng.integers(-128, 128, 2))
        graph = _unary("GELU", s_in, zp_in, s_out, zp_out, (4, 64), {"approximate": bool(i % 2)})
        x = rng.permutation(np.arange(-128, 128)).astype(np.int8).reshape(4, 64)
        peer = run_litert(write_tflite(graph), [x])[0]
        for profile in ("litert-ref", "tflm"):
            assert np.array_equal(Program(graph, profile).run([x])[0], peer), (s_in, zp_in, i)
        cases += 1
    checked("LiteRT GELU int8 (every code, exact + tanh forms)", cases, cases * 256)


@PROPERTY
@given(scales, zps, scales, zps)
def test_litert_gelu_table_is_rounded_gelu(s_in, zp_in, s_out, zp_out) -> None:
    """Each entry is round(GELU(s_in (v - zp_in)) / s_out) + zp_out, clamped, up to float32
    rounding (within 0.5 + 2^-10 output steps of the exact value)."""
    p = gl.prepare_gelu_litert(s_in, zp_in, s_out, zp_out)
    codes = np.arange(-128, 128)
    exact = gl.float_gelu((codes - zp_in) * s_in) / s_out + zp_out
    got = p.table.astype(np.float64)
    inside = (got > -128) & (got < 127)
    assert (np.abs(got - exact)[inside] <= 0.5 + 2.0**-10).all()
    assert (exact[got == 127] >= 126.5 - 2.0**-10).all()
    assert (exact[got == -128] <= -127.5 + 2.0**-10).all()


def test_gelu_rejects_what_litert_does_not_have() -> None:
    g = _unary("GELU", 0.1, 0, 0.1, 0, dt_out="int16")
    with pytest.raises(UnsupportedError, match="int8 -> int8"):
        Program(g, "tflm")
    t = {"x": TensorInfo("x", "int8", (1, 4)), "y": TensorInfo("y", "int8", (1, 4), 0.1, 0)}
    with pytest.raises(QuantSpecError, match="'x' is not quantized"):
        Program(Graph(t, [Node("GELU", ("x",), ("y",))], ["x"], ["y"]), "tflm")


# --- SiLU ----------------------------------------------------------------------------------------


def oracle_sigmoid_q31(v: int, s_in: float) -> int:
    m, shift = of.quantize_multiplier(s_in * float(1 << 27))
    radius = (15 << 27) >> shift
    if v <= -radius:
        return 0
    if v >= radius:
        return (1 << 31) - 1
    return of.gemmlowp_logistic(of.multiply_by_quantized_multiplier(v, m, shift), 4)


def oracle_silu(code: int, s_in, zp_in, s_out, zp_out) -> int:
    v = code - zp_in
    t = of.srdhm(v * (1 << 23), oracle_sigmoid_q31(v, s_in))
    m, shift = of.quantize_multiplier(s_in / (s_out * float(1 << 23)))
    return of.clamp(of.multiply_by_quantized_multiplier(t, m, shift) + zp_out, -128, 127)


@PROPERTY
@given(scales, zps, scales, zps, st.integers(0, 2**32 - 1))
def test_silu_fixedpoint_equals_scalar_oracle(s_in, zp_in, s_out, zp_out, seed) -> None:
    p = sl.prepare_silu(s_in, zp_in, s_out, zp_out)
    codes = np.random.default_rng(seed).integers(-128, 128, 48).astype(np.int8)
    got = sl.silu(codes, p).tolist()
    assert got == [oracle_silu(int(c), s_in, zp_in, s_out, zp_out) for c in codes]


@PROPERTY
@given(scales, zps, scales, zps, st.sampled_from(["fixedpoint", "table"]))
def test_silu_close_to_float(s_in, zp_in, s_out, zp_out, method) -> None:
    """Both forms are within 0.5 + 2^-10 output steps of silu(x) (clamped codes aside), plus, for
    the fixed-point form beyond LOGISTIC's saturation radius (sigmoid taken as 0 or 1), the
    dropped |x| sigmoid(-|x|) (at most 0.0042 in real terms)."""
    p = sl.prepare_silu(s_in, zp_in, s_out, zp_out, method=method)
    codes = np.arange(-128, 128)
    y = sl.silu(codes.astype(np.int8), p).astype(np.float64)
    x = (codes - zp_in) * s_in
    exact = sl.float_silu(x) / s_out + zp_out
    saturated = np.abs(codes - zp_in) >= p.sigmoid.input_radius
    if method == "fixedpoint":
        assert (np.abs(x[saturated]) >= 7.5 - s_in - 1e-9).all()
    sat = np.where(saturated & (method == "fixedpoint"), np.abs(x) / (1 + np.exp(np.abs(x))), 0)
    bound = 0.5 + 2.0**-10 + sat / s_out
    inside = (y > -128) & (y < 127)
    assert (np.abs(y - exact)[inside] <= bound[inside]).all()
    assert (exact[y == 127] >= 126.5 - bound[y == 127]).all()
    assert (exact[y == -128] <= -127.5 + bound[y == -128]).all()


# --- SwiGLU --------------------------------------------------------------------------------------


def oracle_swiglu(g: int, u: int, q) -> int:
    s_g, zp_g, s_u, zp_u, s_o, zp_o = q
    v = g - zp_g
    h = of.rounding_divide_by_pot(of.srdhm(v * (1 << 23), oracle_sigmoid_q31(v, s_g)), 16)
    m, shift = of.quantize_multiplier(s_g * s_u / (128.0 * s_o))
    return of.clamp(of.multiply_by_quantized_multiplier(h * (u - zp_u), m, shift) + zp_o, -128, 127)


@PROPERTY
@given(scales, zps, scales, zps, scales, zps, st.integers(0, 2**32 - 1))
def test_swiglu_fixedpoint_equals_scalar_oracle(s_g, zp_g, s_u, zp_u, s_o, zp_o, seed) -> None:
    rng = np.random.default_rng(seed)
    gate = rng.integers(-128, 128, 64).astype(np.int8)
    up = rng.integers(-128, 128, 64).astype(np.int8)
    p = sl.prepare_swiglu(s_g, zp_g, s_u, zp_u, s_o, zp_o)
    q = (s_g, zp_g, s_u, zp_u, s_o, zp_o)
    expected = [oracle_swiglu(int(a), int(b), q) for a, b in zip(gate, up, strict=True)]
    assert sl.swiglu(gate, up, p).tolist() == expected


@PROPERTY
@given(scales, zps, scales, zps, scales, zps, st.sampled_from(["fixedpoint", "table"]))
def test_swiglu_close_to_float(s_g, zp_g, s_u, zp_u, s_o, zp_o, method) -> None:
    """|y - silu(g) u / s_out - zp| <= 0.5 + |u| s_g / (256 s_out) + 2^-10 + e: h keeps silu(g)
    to half of 2^-7 gate steps, the rest is the final rounding, whose double rounding (SRDHM,
    then RoundingDivideByPOT by r = -shift) can add e = 2^-(r+1); plus the saturation term of
    test_silu_close_to_float."""
    g, u = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128, 7))
    p = sl.prepare_swiglu(s_g, zp_g, s_u, zp_u, s_o, zp_o, method=method)
    y = sl.swiglu(g.astype(np.int8), u.astype(np.int8), p).astype(np.float64)
    u_real = (u - zp_u) * s_u
    x = (g - zp_g) * s_g
    exact = sl.float_silu(x) * u_real / s_o + zp_o
    saturated = (np.abs(g - zp_g) >= p.sigmoid.input_radius) & (method == "fixedpoint")
    sat = np.where(saturated, np.abs(x) / (1 + np.exp(np.abs(x))), 0)  # see test_silu_close...
    double = 2.0 ** (p.output_shift - 1) if p.output_shift < 0 else 0.0
    bound = 0.5 + np.abs(u_real) * (s_g / 256 + sat) / s_o + 2.0**-10 + double
    inside = (y > -128) & (y < 127)
    assert (np.abs(y - exact)[inside] <= bound[inside]).all()
    assert (exact[y == 127] >= 126.5 - bound[y == 127]).all()
    assert (exact[y == -128] <= -127.5 + bound[y == -128]).all()


def test_silu_and_swiglu_graph_ops() -> None:
    rng = np.random.default_rng(9)
    x = rng.integers(-128, 128, (3, 7)).astype(np.int8)
    g = _unary("SILU", 0.05, 3, 0.03, -20, (3, 7), {"method": "fixedpoint"})
    s_in, s_out = float(np.float32(0.05)), float(np.float32(0.03))
    expected = [[oracle_silu(int(c), s_in, 3, s_out, -20) for c in row] for row in x]
    assert Program(g, "tflm").run([x])[0].tolist() == expected
    t = {
        "g": TensorInfo("g", "int8", (3, 7), np.float32(0.05), 3),
        "u": TensorInfo("u", "int8", (3, 7), np.float32(0.02), -1),
        "y": TensorInfo("y", "int8", (3, 7), np.float32(0.01), 0),
    }
    graph = Graph(t, [Node("SWIGLU", ("g", "u"), ("y",))], ["g", "u"], ["y"])
    up = rng.integers(-128, 128, (3, 7)).astype(np.int8)
    q = (s_in, 3, float(np.float32(0.02)), -1, float(np.float32(0.01)), 0)
    expected = [
        [oracle_swiglu(int(a), int(b), q) for a, b in zip(r1, r2, strict=True)]
        for r1, r2 in zip(x, up, strict=True)
    ]
    assert Program(graph, "tflm").run([x, up])[0].tolist() == expected
    with pytest.raises(UnsupportedError, match="method"):
        Program(_unary("SILU", 0.05, 0, 0.03, 0, attrs={"method": "poly"}))
    with pytest.raises(ShapeError, match="differ"):
        sl.swiglu(x, up[:, :3], Program(graph).steps[0][2])
    assert math.isclose(sl.float_silu(np.array([1.0]))[0], 1 / (1 + math.exp(-1)))
