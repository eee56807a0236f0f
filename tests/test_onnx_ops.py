"""refq's ONNX quantization operators against exact definitions (Fraction / Python int).

Each property draws shapes, types, scales and zero points with hypothesis and compares every
element with tests/onnx_exact.py, which restates the ONNX formulas in exact arithmetic.
"""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from refq import floatfmt
from refq.onnx.backend import RefqBackend
from refq.onnx.tensor import BY_NAME, ELEM_TYPES, onnx_numpy_dtype, type_name
from tests import onnx_exact as ex

N = 200  # examples per property

INT_OUT = {  # name -> (TensorProto code, first opset allowing it in QuantizeLinear)
    "int8": (TensorProto.INT8, 10),
    "uint8": (TensorProto.UINT8, 10),
    "int16": (TensorProto.INT16, 21),
    "uint16": (TensorProto.UINT16, 21),
    "int4": (TensorProto.INT4, 21),
    "uint4": (TensorProto.UINT4, 21),
    "int2": (TensorProto.INT2, 25),
    "uint2": (TensorProto.UINT2, 25),
}

f32 = st.floats(width=32, allow_nan=False)
f32_finite = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def scales(draw, n: int, width: int = 32):
    exps = st.integers(-20, 20) if width == 32 else st.integers(-13, 13)
    out = []
    for _ in range(n):
        m = draw(st.floats(0.5, 2.0, width=width))
        s = float(np.dtype(f"float{width}").type(math.ldexp(m, draw(exps))))
        out.append(-s if draw(st.integers(0, 7)) == 0 else s)  # ONNX allows negative scales
    return out


@st.composite
def granularity(draw, shape: tuple[int, ...]):
    """(axis, block_size, param_shape, index map elem -> param index)."""
    kind = draw(st.sampled_from(["tensor", "axis", "block"]))
    if kind == "tensor" or not shape:
        return 1, 0, ()
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    a = axis % len(shape)
    if kind == "axis":
        return axis, 0, (shape[a],)
    block = draw(st.integers(1, shape[a] + 1))
    pshape = list(shape)
    pshape[a] = -(-shape[a] // block)
    return axis, block, tuple(pshape)


def param_index(idx: tuple[int, ...], axis: int, block: int, pshape: tuple[int, ...]):
    if not pshape:
        return ()
    a = axis % len(idx)
    if not block:
        return (idx[a],)
    j = list(idx)
    j[a] //= block
    return tuple(j)


def near_tie(data, scale: float, dtype) -> float:
    """A value of ``dtype`` next to ``(k + 1/2) * scale``: x / s rounds near a .5 tie."""
    k = data.draw(st.integers(-40000, 40000))
    with np.errstate(over="ignore"):
        v = dtype((k + 0.5) * scale)
        for _ in range(abs(steps := data.draw(st.integers(-2, 2)))):
            v = np.nextafter(v, dtype(math.copysign(np.inf, steps)))
    return float(v) if np.isfinite(v) else float(dtype(0.5 * scale))


def quantize_node(opset: int, **attrs):
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], **attrs)
    return node


@settings(max_examples=N, deadline=None)
@given(st.data())
def test_quantize_linear_integer_types(data):
    name = data.draw(st.sampled_from(sorted(INT_OUT)))
    code, first = INT_OUT[name]
    opset = data.draw(st.sampled_from([o for o in (10, 13, 19, 21, 23, 25, 28) if o >= first]))
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    axis, block, pshape = data.draw(granularity(shape))
    if opset < 13 or (opset < 21 and block):
        axis, block, pshape = 1, 0, ()  # per-tensor only before 13, no blocks before 21
    info = ELEM_TYPES[code]
    n = int(np.prod(shape))
    np_ = int(np.prod(pshape)) if pshape else 1
    s = np.array(data.draw(scales(np_)), np.float32).reshape(pshape)
    x = np.array(data.draw(st.lists(f32, min_size=n, max_size=n)), np.float32).reshape(shape)
    for idx in np.ndindex(*shape):  # a third of the values near a rounding tie of x / s
        if data.draw(st.integers(0, 2)) == 0:
            x[idx] = near_tie(data, float(s[param_index(idx, axis, block, pshape)]), np.float32)
    z = np.array(
        data.draw(st.lists(st.integers(info.lo, info.hi), min_size=np_, max_size=np_)),
        info.storage,
    ).reshape(pshape)
    attrs = {"axis": axis} if opset >= 13 else {}
    if block:
        attrs["block_size"] = block
    zarr = z.astype(onnx_numpy_dtype(code))
    y = RefqBackend.run_node(quantize_node(opset, **attrs), [x, s, zarr], opset_version=opset)[0]
    got = np.asarray(y).astype(np.int64)
    for idx in np.ndindex(*shape):
        p = param_index(idx, axis, block, pshape)
        want = ex.quantize_int(float(x[idx]), float(s[p]), int(z[p]), info.lo, info.hi)
        assert int(got[idx]) == want, (idx, x[idx], s[p], z[p])


@settings(max_examples=N, deadline=None)
@given(st.data())
def test_quantize_linear_float16_and_precision(data):
    """float16 scales divide in float16 from opset 23 (x rounded to float16 first), in float32
    before (onnxruntime); the ``precision`` attribute overrides."""
    n = data.draw(st.integers(1, 12))
    s16 = np.float16(data.draw(scales(1, width=16))[0])
    x = np.array(data.draw(st.lists(f32_finite, min_size=n, max_size=n)), np.float32)
    for i in range(n):
        if data.draw(st.integers(0, 2)) == 0:
            x[i] = near_tie(data, float(s16), data.draw(st.sampled_from([np.float16, np.float32])))
    opset = data.draw(st.sampled_from([21, 23, 25]))
    precision = data.draw(st.sampled_from([0, TensorProto.FLOAT, TensorProto.FLOAT16]))
    precision = precision if opset >= 23 else 0
    z = np.int16(data.draw(st.integers(-32768, 32767)))
    attrs = {"precision": precision} if precision else {}
    if opset == 21:  # x and y_scale share one type there
        with np.errstate(over="ignore"):
            x = x.astype(np.float16)
    y = RefqBackend.run_node(quantize_node(opset, **attrs), [x, s16, z], opset_version=opset)[0]
    # opset 21: float32 division (onnxruntime); 23+: the scale's type unless ``precision``
    fmt = ex.F32 if precision == TensorProto.FLOAT or opset == 21 else ex.F16
    for i in range(n):
        xi = float(x[i])
        xv = xi if math.isinf(xi) else ex.fl(Fraction(xi), fmt)
        if math.isinf(xv):
            want = 32767 if (xv > 0) == (float(s16) > 0) else -32768
        else:
            want = ex.quantize_int(xv, float(s16), int(z), -32768, 32767, fmt)
        assert int(y[i]) == want


@settings(max_examples=N, deadline=None)
@given(st.data())
def test_quantize_linear_other_scale_types(data):
    """float8e8m0 scales (2^(E-127)), bfloat16 x and scale, int32 scales with ``precision``."""
    kind = data.draw(st.sampled_from(["e8m0", "bf16", "int32"]))
    n = data.draw(st.integers(1, 10))
    x = np.array(data.draw(st.lists(f32_finite, min_size=n, max_size=n)), np.float32)
    z = np.int8(data.draw(st.integers(-128, 127)))
    attrs, fmt = {}, ex.F32
    if kind == "e8m0":
        code = data.draw(st.integers(100, 154))
        s = np.array(code, np.uint8).view(ml_dtypes.float8_e8m0fnu)
        scale, opset = math.ldexp(1.0, code - 127), 24
    elif kind == "bf16":
        opset = data.draw(st.sampled_from([21, 23]))
        s = np.array(data.draw(scales(1))[0], np.float32).astype(ml_dtypes.bfloat16)
        x = x.astype(ml_dtypes.bfloat16)
        scale = float(s)
        fmt = ex.BF16 if opset >= 23 else ex.F32  # opset 21: float32 division (onnxruntime)
    else:
        s = np.int32(data.draw(st.integers(1, 2**20)) * data.draw(st.sampled_from([1, -1])))
        scale, opset = float(s), 24
        attrs = {"precision": TensorProto.FLOAT}
    y = RefqBackend.run_node(quantize_node(opset, **attrs), [x, s, z], opset_version=opset)[0]
    for i in range(n):
        xv = float(x[i])
        if math.isinf(xv):
            q = math.copysign(math.inf, xv * scale)
        else:
            q = ex.fl(Fraction(xv) / Fraction(scale), fmt)
        if math.isinf(q):
            want = 127 if q > 0 else -128
        else:
            want = ex.clamp(ex.rne(q) + int(z), -128, 127)
        assert int(y[i]) == want, (kind, xv, scale)
    if kind == "e8m0":
        node = helper.make_node(
            "DequantizeLinear", ["y", "s"], ["r"], output_dtype=TensorProto.FLOAT
        )
        r = RefqBackend.run_node(node, [y, s], opset_version=24)[0]
        assert [float(v) for v in r] == [ex.dequantize_int(int(v), 0, scale) for v in y]


# --- minifloats ---------------------------------------------------------------------------------

FLOAT8 = (
    TensorProto.FLOAT8E4M3FN,
    TensorProto.FLOAT8E4M3FNUZ,
    TensorProto.FLOAT8E5M2,
    TensorProto.FLOAT8E5M2FNUZ,
)
LAYOUTS = {  # code -> (ebits, mbits, bias, fnuz, e4m3fn-style NaN only at all-ones, has inf)
    TensorProto.FLOAT8E4M3FN: (4, 3, 7, False, True, False),
    TensorProto.FLOAT8E4M3FNUZ: (4, 3, 8, True, False, False),
    TensorProto.FLOAT8E5M2: (5, 2, 15, False, False, True),
    TensorProto.FLOAT8E5M2FNUZ: (5, 2, 16, True, False, False),
    TensorProto.FLOAT4E2M1: (2, 1, 1, False, False, False),
    TensorProto.FLOAT6E2M3: (2, 3, 1, False, False, False),
    TensorProto.FLOAT6E3M2: (3, 2, 3, False, False, False),
}


def layout_value(code: int, c: int) -> float:
    """Value of code ``c`` from the bit layout (the formula in the ONNX / OCP specs)."""
    e_bits, m_bits, bias, fnuz, e4m3fn, has_inf = LAYOUTS[code]
    sign_bit = 1 << (e_bits + m_bits)
    if fnuz and c == sign_bit:
        return math.nan
    e = (c >> m_bits) & ((1 << e_bits) - 1)
    m = c & ((1 << m_bits) - 1)
    top = e == (1 << e_bits) - 1
    if e4m3fn and top and m == (1 << m_bits) - 1:
        return math.nan
    if has_inf and top:
        v = math.inf if m == 0 else math.nan
    elif e == 0:
        v = math.ldexp(m, 1 - bias - m_bits)
    else:
        v = math.ldexp((1 << m_bits) + m, e - bias - m_bits)
    return -v if c & sign_bit else v


def finite_codes(code: int) -> list[tuple[float, int]]:
    e_bits, m_bits, *_ = LAYOUTS[code]
    n = 1 << (1 + e_bits + m_bits)
    return [(layout_value(code, c), c) for c in range(n) if math.isfinite(layout_value(code, c))]


def encode_oracle(code: int, v: float, saturate: bool) -> int:
    """Nearest finite value, ties to the even code; [x] beyond max per the ONNX Cast table."""
    e_bits, m_bits, _bias, fnuz, _e4m3fn, has_inf = LAYOUTS[code]
    sign_bit = 1 << (e_bits + m_bits)
    pos = [(val, c) for val, c in finite_codes(code) if val >= 0 and not (c & sign_bit)]
    top_val, top_code = max(pos)
    neg = math.copysign(1.0, v) < 0
    if math.isnan(v):
        if fnuz:
            return 0x80
        if code in (TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E5M2):
            return 0x7F | (sign_bit if neg else 0)  # refq.floatfmt's NaN code, sign kept
        return top_code  # no NaN in float4 / float6: +max (refq.floatfmt's float4 rule)
    a = abs(v)
    # the next value after max at an unbounded exponent: one more mantissa step
    step = math.ldexp(1.0, math.frexp(top_val)[1] - 1 - m_bits)
    big = math.isinf(a) or a > top_val + step / 2 or (a == top_val + step / 2 and top_code & 1)
    if big:
        if saturate or code in (TensorProto.FLOAT4E2M1, TensorProto.FLOAT6E2M3, 28):
            c = top_code
        elif has_inf:
            c = 0x7C
        elif fnuz:
            return 0x80
        else:
            c = 0x7F
        return c | (sign_bit if neg else 0)
    best = min(pos, key=lambda vc: (abs(Fraction(vc[0]) - Fraction(a)), vc[1] & 1))
    c = best[1]
    if neg and not (fnuz and c == 0):
        c |= sign_bit
    return c


@pytest.mark.parametrize("code", sorted(LAYOUTS))
def test_minifloat_decode_table(code):
    e_bits, m_bits, *_ = LAYOUTS[code]
    codes = np.arange(1 << (1 + e_bits + m_bits), dtype=np.uint8)
    got = floatfmt.decode(codes, type_name(code))
    want = np.array([layout_value(code, int(c)) for c in codes], np.float32)
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.signbit(got[~np.isnan(got)]), np.signbit(want[~np.isnan(want)]))


@settings(max_examples=N, deadline=None)
@given(
    st.sampled_from(sorted(LAYOUTS)),
    st.booleans(),
    st.lists(
        st.one_of(f32, st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan])),
        min_size=1,
    ),
)
def test_minifloat_encode(code, saturate, values):
    x = np.array(values, np.float32)
    got = floatfmt.encode(x, type_name(code), saturate=saturate)
    for v, g in zip(x.tolist(), got.tolist(), strict=True):
        assert g == encode_oracle(code, v, saturate), (v, g)


@pytest.mark.parametrize(
    ("code", "mldt"),
    [
        (TensorProto.FLOAT8E4M3FNUZ, ml_dtypes.float8_e4m3fnuz),
        (TensorProto.FLOAT8E5M2FNUZ, ml_dtypes.float8_e5m2fnuz),
        (TensorProto.FLOAT6E2M3, ml_dtypes.float6_e2m3fn),
        (TensorProto.FLOAT6E3M2, ml_dtypes.float6_e3m2fn),
    ],
)
def test_local_minifloats_agree_with_ml_dtypes(code, mldt, checked):
    """The ONNX-only formats of refq.floatfmt agree with ml_dtypes (onnx.reference's casts)."""
    rng = np.random.default_rng(code)
    x = np.concatenate(
        [
            rng.standard_normal(20000).astype(np.float32)
            * np.float32(2.0) ** rng.integers(-20, 18, 20000),
            floatfmt.decode(np.arange(256 if code < 21 else 64, dtype=np.uint8), type_name(code)),
        ]
    ).astype(np.float32)
    x = x[np.isfinite(x)]
    want = x.astype(mldt).view(np.uint8)
    sat = code in (TensorProto.FLOAT6E2M3, TensorProto.FLOAT6E3M2)
    got = floatfmt.encode(
        x, type_name(code), saturate=sat
    )  # ml_dtypes does not saturate float8 fnuz
    assert np.array_equal(got, want)
    checked(f"minifloat {mldt.__name__} encode vs ml_dtypes", x.size)


@settings(max_examples=N, deadline=None)
@given(st.data())
def test_quantize_linear_minifloat(data):
    code = data.draw(st.sampled_from(sorted(LAYOUTS)))
    opset = 25 if code in (TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E5M2) else 28
    n = data.draw(st.integers(1, 8))
    x = np.array(data.draw(st.lists(f32, min_size=n, max_size=n)), np.float32)
    s = np.float32(data.draw(scales(1))[0])
    saturate = data.draw(st.booleans())
    with_zp = data.draw(st.booleans())
    attrs = {"saturate": int(saturate)} if code < 21 else {}
    dt = onnx_numpy_dtype(code)
    if with_zp:  # the zero point's type (+0.0) selects the output type
        inputs = [x, s, np.zeros((), np.uint8).view(dt)]
        node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], **attrs)
    else:
        inputs = [x, s]
        node = helper.make_node("QuantizeLinear", ["x", "s"], ["y"], output_dtype=code, **attrs)
    y = RefqBackend.run_node(node, inputs, opset_version=opset)[0]
    got = np.asarray(y).view(np.uint8) & ((1 << ELEM_TYPES[code].bits) - 1)
    for i in range(n):
        q = ex.fl(Fraction(float(x[i])) / Fraction(float(s))) if math.isfinite(x[i]) else None
        if q is None:
            q = math.copysign(math.inf, float(x[i]) * float(s))
        elif q == 0:
            q = math.copysign(0.0, float(x[i]) * float(s))
        if with_zp and q == 0 and code not in FLOAT8:
            q = 0.0  # float4 / float6 add the zero point: -0 + +0 = +0 (float8 ignore it)
        assert int(got[i]) == encode_oracle(code, q, saturate), (x[i], s)


# --- DequantizeLinear -----------------------------------------------------------------------


@settings(max_examples=N, deadline=None)
@given(st.data())
def test_dequantize_linear_integer_types(data):
    names = [*sorted(INT_OUT), "int32"]
    name = data.draw(st.sampled_from(names))
    info = BY_NAME[name]
    opset = 25 if name in ("int2", "uint2") else data.draw(st.sampled_from([21, 23, 25]))
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    axis, block, pshape = data.draw(granularity(shape))
    n = int(np.prod(shape))
    lo, hi = info.lo, info.hi
    # Uniform over the type (int32 values beyond 2^24 round in float32) plus the extremes.
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(lo, hi, n, endpoint=True, dtype=np.int64)
    x[rng.random(n) < 0.2] = lo
    x[rng.random(n) < 0.2] = hi
    x = x.astype(info.storage).reshape(shape)
    np_ = int(np.prod(pshape)) if pshape else 1
    s = np.array(data.draw(scales(np_)), np.float32).reshape(pshape)
    z = np.array(
        data.draw(st.lists(st.integers(lo, hi), min_size=np_, max_size=np_)), info.storage
    ).reshape(pshape)
    if name == "int32":
        z = np.zeros_like(z)
    out = data.draw(st.sampled_from([0, TensorProto.FLOAT16, TensorProto.BFLOAT16]))
    attrs = {"axis": axis}
    if block:
        attrs["block_size"] = block
    if out and opset >= 23:
        attrs["output_dtype"] = out
    else:
        out = 0
    node = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], **attrs)
    mldt = onnx_numpy_dtype(info.code)
    y = RefqBackend.run_node(node, [x.astype(mldt), s, z.astype(mldt)], opset_version=opset)[0]
    got = np.asarray(y).astype(np.float64)
    fmt = {TensorProto.FLOAT16: ex.F16, TensorProto.BFLOAT16: ex.BF16}.get(out)
    for idx in np.ndindex(*shape):
        p = param_index(idx, axis, block, pshape)
        want = ex.dequantize_int(int(x[idx]), int(z[p]), float(s[p]))
        if fmt is not None:
            want = math.copysign(abs(ex.fl(Fraction(want), fmt)), want) if want else want
        g = float(got[idx])
        assert g == want and math.copysign(1, g) == math.copysign(1, want), (idx, g, want)


# --- DynamicQuantizeLinear ------------------------------------------------------------------


@settings(max_examples=N, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, width=32), min_size=0, max_size=20),
    st.sampled_from([1.0, 1e-30, 1e30]),
)
def test_dynamic_quantize_linear(values, factor):
    x = (np.array(values, np.float32) * np.float32(factor)).astype(np.float32)
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    y, s, z = RefqBackend.run_node(node, [x], opset_version=11)
    want_y, want_s, want_z = ex.dynamic_quantize([float(v) for v in x])
    assert float(s) == want_s and int(z) == want_z
    assert y.tolist() == want_y


# --- MatMulInteger / QLinearMatMul ------------------------------------------------------------


@st.composite
def matmul_case(draw, dtypes=(np.uint8, np.int8)):
    m, k, n = (draw(st.integers(1, 5)) for _ in range(3))
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    a_batch = batch[draw(st.integers(0, len(batch))) :]
    b_batch = [d if draw(st.booleans()) else 1 for d in batch]
    ta, tb = draw(st.sampled_from(dtypes)), draw(st.sampled_from(dtypes))
    ia, ib = np.iinfo(ta), np.iinfo(tb)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = rng.integers(ia.min, ia.max, (*a_batch, m, k), endpoint=True).astype(ta)
    b = rng.integers(ib.min, ib.max, (*b_batch, k, n), endpoint=True).astype(tb)
    za_shape = draw(st.sampled_from([(), (m,), (*a_batch, m, 1)]))  # scalar or per row
    za = rng.integers(ia.min, ia.max, za_shape, endpoint=True).astype(ta)
    zb_shape = draw(st.sampled_from([(), (n,), (*b_batch, 1, n)]))  # scalar or per column
    zb = rng.integers(ib.min, ib.max, zb_shape, endpoint=True).astype(tb)
    return a, b, za, zb


def per_row(p: np.ndarray) -> np.ndarray:
    """A per-row parameter as a column broadcasting against (..., M, K) / (..., M, N)."""
    return p.reshape(-1, 1) if p.ndim == 1 else p


def centered(a, b, za, zb) -> np.ndarray:
    return ex.matmul(
        a.astype(np.int64) - per_row(za).astype(np.int64), b.astype(np.int64) - zb.astype(np.int64)
    )


@settings(max_examples=N, deadline=None)
@given(matmul_case())
def test_matmul_integer(case):
    a, b, za, zb = case
    node = helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])
    y = RefqBackend.run_node(node, [a, b, za, zb], opset_version=10)[0]
    want = centered(a, b, za, zb)
    assert y.dtype == np.int32
    assert y.shape == want.shape
    assert all(int(g) == ex.wrap32(int(w)) for g, w in zip(y.ravel(), want.ravel(), strict=True))


@settings(max_examples=N, deadline=None)
@given(matmul_case(), st.data())
def test_qlinear_matmul(case, data):
    a, b, za, zb = case
    scale_type = data.draw(st.sampled_from([np.float32, np.float16]))
    width = 32 if scale_type == np.float32 else 16
    sa = np.array(data.draw(scales(za.size, width)), scale_type).reshape(za.shape)
    sb = np.array(data.draw(scales(zb.size, width)), scale_type).reshape(zb.shape)
    sy = scale_type(data.draw(scales(1, width))[0])
    ty = data.draw(st.sampled_from([np.uint8, np.int8]))
    iy = np.iinfo(ty)
    zy = ty(data.draw(st.integers(iy.min, iy.max)))
    node = helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])
    opset = 21 if scale_type == np.float16 or data.draw(st.booleans()) else 10
    y = RefqBackend.run_node(node, [a, sa, za, b, sb, zb, sy, zy], opset_version=opset)[0]
    acc = centered(a, b, za, zb)
    sa_e = np.broadcast_to(per_row(sa).astype(np.float64), acc.shape)
    sb_e = np.broadcast_to(sb.astype(np.float64), acc.shape)
    for idx in np.ndindex(*acc.shape):
        mult = ex.requant_multiplier(float(sa_e[idx]), float(sb_e[idx]), float(sy))
        want = ex.requantize(ex.wrap32(int(acc[idx])), mult, int(zy), iy.min, iy.max)
        assert int(y[idx]) == want, idx


def test_requantization_rounds_the_float32_product(checked):
    """Cases built so that ``acc * M`` lies next to a .5 tie: float32 vs exact product differ.

    M = sa (sb = sy = 1) is chosen so the exact product is within a float32 rounding of
    ``n + 1/2``; the op must round the *float32* product, as onnxruntime does.
    """
    rng = np.random.default_rng(2024)
    node = helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])
    one, zero = np.float32(1), np.uint8(0)
    distinguishing = 0
    for _ in range(300):
        a, b = (int(v) for v in rng.integers(1, 256, 2))
        acc = a * b
        target = int(rng.integers(0, 120)) + 0.5
        m = np.float32(target / acc)
        m = np.nextafter(m, np.float32(rng.choice([-1, 1])) * np.inf) if rng.random() < 0.5 else m
        args = [np.array([[a]], np.uint8), m, zero, np.array([[b]], np.uint8), one, zero, one, zero]
        y = int(RefqBackend.run_node(node, args, opset_version=10)[0][0, 0])
        want = ex.requantize(acc, float(m), 0, 0, 255)
        assert y == want, (a, b, m)
        exact = ex.clamp(ex.rne(Fraction(acc) * Fraction(float(m))), 0, 255)
        distinguishing += exact != want
    assert distinguishing > 10  # the construction does reach the cases that matter
    checked("QLinearMatMul requantization near .5 ties (float32 product)", 300)


# --- ConvInteger / QLinearConv ---------------------------------------------------------------


@st.composite
def conv_case(draw):
    nd = draw(st.integers(1, 2))
    group = draw(st.integers(1, 2))
    cg, mg = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
    dil = [draw(st.integers(1, 2)) for _ in range(nd)]
    strides = [draw(st.integers(1, 2)) for _ in range(nd)]
    size = [draw(st.integers((k - 1) * d + 1, 6)) for k, d in zip(kernel, dil, strict=True)]
    auto_pad = draw(st.sampled_from(["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"]))
    pads = [draw(st.integers(0, 2)) for _ in range(2 * nd)]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    tx, tw = draw(st.sampled_from([np.uint8, np.int8])), draw(st.sampled_from([np.uint8, np.int8]))
    ix, iw = np.iinfo(tx), np.iinfo(tw)
    x = rng.integers(ix.min, ix.max, (draw(st.integers(1, 2)), group * cg, *size), endpoint=True)
    w = rng.integers(iw.min, iw.max, (group * mg, cg, *kernel), endpoint=True)
    zx = tx(rng.integers(ix.min, ix.max, endpoint=True))
    zw = rng.integers(iw.min, iw.max, group * mg if draw(st.booleans()) else (), endpoint=True)
    attrs = {"group": group, "dilations": dil, "strides": strides}
    if draw(st.booleans()):
        attrs["kernel_shape"] = kernel
    if auto_pad == "NOTSET":
        attrs["pads"] = pads
        begin, end = pads[:nd], pads[nd:]
    else:
        attrs["auto_pad"] = auto_pad
        begin, end = [0] * nd, [0] * nd
        if auto_pad != "VALID":  # the spec's SAME rule, restated
            for i in range(nd):
                out = -(-size[i] // strides[i])
                total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - size[i])
                small, large = total // 2, total - total // 2
                begin[i], end[i] = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    geometry = (group, tuple(strides), tuple(dil), tuple(begin), tuple(end))
    return x.astype(tx), w.astype(tw), zx, zw.astype(tw), attrs, geometry


def centered_conv(x, w, zx, zw, geometry):
    zw_b = zw.astype(np.int64).reshape((-1,) + (1,) * (w.ndim - 1)) if zw.ndim else int(zw)
    return ex.conv(x.astype(np.int64) - int(zx), w.astype(np.int64) - zw_b, *geometry)


@settings(max_examples=N, deadline=None)
@given(conv_case())
def test_conv_integer(case):
    x, w, zx, zw, attrs, geometry = case
    node = helper.make_node("ConvInteger", ["x", "w", "zx", "zw"], ["y"], **attrs)
    y = RefqBackend.run_node(node, [x, w, zx, zw], opset_version=10)[0]
    want = centered_conv(x, w, zx, zw, geometry)
    assert y.dtype == np.int32 and y.shape == want.shape
    assert all(int(g) == int(v) for g, v in zip(y.ravel(), want.ravel(), strict=True))


@settings(max_examples=N, deadline=None)
@given(conv_case(), st.data())
def test_qlinear_conv(case, data):
    x, w, zx, zw, attrs, geometry = case
    m = w.shape[0]
    sx, sy = (np.float32(v) for v in data.draw(scales(2)))
    sw = np.array(data.draw(scales(zw.size)), np.float32).reshape(zw.shape)
    ty = data.draw(st.sampled_from([np.uint8, np.int8]))
    iy = np.iinfo(ty)
    zy = ty(data.draw(st.integers(iy.min, iy.max)))
    with_bias = data.draw(st.booleans())
    bias = np.array(data.draw(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=m, max_size=m)))
    ins = ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy"] + (["b"] if with_bias else [])
    node = helper.make_node("QLinearConv", ins, ["y"], **attrs)
    args = [x, sx, zx, w, sw, zw, sy, zy] + ([bias.astype(np.int32)] if with_bias else [])
    y = RefqBackend.run_node(node, args, opset_version=10)[0]
    acc = centered_conv(x, w, zx, zw, geometry)
    sw_m = np.broadcast_to(sw.astype(np.float64), (m,))
    for idx in np.ndindex(*acc.shape):
        oc = idx[1]
        a = ex.wrap32(int(acc[idx]) + (int(bias[oc]) if with_bias else 0))
        mult = ex.requant_multiplier(float(sx), float(sw_m[oc]), float(sy))
        assert int(y[idx]) == ex.requantize(a, mult, int(zy), iy.min, iy.max), idx
