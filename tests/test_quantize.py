"""quantize / dequantize / fake_quantize / requantize / choose_qparams.

Properties are checked against :mod:`refq.oracle.quantize` (Fraction arithmetic); peers are
onnx.reference and onnxruntime on random data.

Error bound proven and checked (``test_error_bound_and_saturation``): ONNX divides in
float32 first, so with ``t = x / s`` (exact) and ``t' = fl32(t)``, ``|t' - t| <= e`` where
``e = max(|t| 2^-24, 2^-150)`` (relative error of a normal result, or half the subnormal
spacing). A nearest-rounding mode gives ``|q - t'| <= 1/2``, hence for codes strictly inside
``(qmin, qmax)`` (``q`` = code - zp, ``slack = s * e = max(|x| 2^-24, s 2^-150)``):

    |x - q * s| <= s / 2 + slack                 (half_even, half_away, half_up)
    -slack <= x - q * s < s + slack              (floor)
    |x - q * s| < s + slack                      (stochastic: floor or floor + 1)

The slack is real: a quotient just below k + 1/2 can round up onto the tie, and a subnormal
quotient can round to zero.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import refq.quantize as rq
from refq import strategies as rst
from refq.errors import InvalidDataError, ShapeError, UnsupportedError
from refq.oracle import quantize as oracle
from refq.quantize import (
    choose_qparams,
    dequantize,
    fake_quantize,
    quantize,
    quantize_dynamic_uint8,
    requantize,
)
from refq.rounding import round_rational, round_to_int
from refq.spec import PerAxis, PerBlock, PerTensor, QDType, QuantParams, QuantSpec
from tests.conftest import require_module

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextlib.contextmanager
def numba_path(enabled: bool):
    """Force small arrays through the Numba loops (enabled) or keep them on NumPy."""
    old = rq._NUMBA_MIN_SIZE
    rq._NUMBA_MIN_SIZE = 0 if enabled else 1 << 62
    try:
        yield
    finally:
        rq._NUMBA_MIN_SIZE = old


@st.composite
def cases(draw, *, roundings=rst.ROUNDINGS, floats=False, max_side=5):
    shape = draw(rst.array_shapes(0, 3, max_side))
    spec = draw(rst.quant_specs(shape, dtypes=rst.qdtypes(floats=floats), roundings=roundings))
    params = draw(rst.quant_params(spec, shape))
    x = draw(rst.quant_inputs(params, shape))
    return x, params


def expected_codes(x: np.ndarray, params: QuantParams) -> np.ndarray:
    """The oracle's codes, element by element (stochastic u from the documented stream)."""
    spec = params.spec
    s_b, z_b = params.broadcast(x.shape)
    s_b = np.broadcast_to(s_b, x.shape).reshape(-1)
    z_b = np.broadcast_to(z_b, x.shape).reshape(-1)
    u = None
    if spec.rounding == "stochastic":
        u = np.random.Generator(np.random.PCG64(spec.seed)).random(x.shape).reshape(-1)
    out = [
        oracle.quantize_value(
            float(v),
            float(s),
            int(z),
            int(spec.qmin),
            int(spec.qmax),
            spec.rounding,
            None if u is None else Fraction(float(u[i])),
        )
        for i, (v, s, z) in enumerate(zip(x.reshape(-1), s_b, z_b, strict=True))
    ]
    return np.array(out, dtype=np.int64).reshape(x.shape)


@pytest.mark.parametrize("path", ["numpy", "numba"])
def test_quantize_equals_exact_definition(path, checked):
    """Every code equals clamp(round(fl32(x / s)) + zp) computed with Fractions."""
    count = [0, 0]

    @PROPERTY
    @given(case=cases())
    def prop(case):
        x, params = case
        with numba_path(path == "numba"):
            got = quantize(x, params)
        assert got.dtype == params.dtype.storage
        assert np.array_equal(got.astype(np.int64), expected_codes(x, params))
        count[0] += 1
        count[1] += x.size

    prop()
    checked(f"quantize vs Fraction oracle ({path} path)", count[0], count[1])


@pytest.mark.parametrize("path", ["numpy", "numba"])
@PROPERTY
@given(case=cases(roundings=("half_even",)))
def test_dequantize_equals_exact_definition(path, case):
    """dequantize(q) == fl32((q - zp) * s) for every code, bit for bit."""
    x, params = case
    dt = params.dtype
    rng = np.random.default_rng(x.size)
    q = rng.integers(int(dt.qmin), int(dt.qmax) + 1, x.shape).astype(dt.storage)
    with numba_path(path == "numba"):
        got = dequantize(q, params)
    assert got.dtype == np.float32
    s_b, z_b = params.broadcast(x.shape)
    s_b = np.broadcast_to(s_b, x.shape).reshape(-1)
    z_b = np.broadcast_to(z_b, x.shape).reshape(-1)
    want = [
        oracle.dequantize_value(int(c), float(s), int(z))
        for c, s, z in zip(q.reshape(-1), s_b, z_b, strict=True)
    ]
    assert [Fraction(float(v)) for v in got.reshape(-1)] == want


@PROPERTY
@given(case=cases())
def test_error_bound_and_saturation(case):
    """Codes inside (qmin, qmax) are within the proven bound of x; values beyond the range by a
    code or more saturate."""
    x, params = case
    spec = params.spec
    q = quantize(x, params).astype(np.int64)
    s_b, z_b = params.broadcast(x.shape)
    s_b = np.broadcast_to(s_b, x.shape).reshape(-1)
    z_b = np.broadcast_to(z_b, x.shape).reshape(-1)
    lo, hi = int(spec.qmin), int(spec.qmax)
    nearest = spec.rounding in ("half_even", "half_away", "half_up")
    for v, c, s, z in zip(x.reshape(-1), q.reshape(-1), s_b, z_b, strict=True):
        fx, fs = Fraction(float(v)), Fraction(float(s))
        t = fx / fs
        if lo < c < hi:
            err = fx - (int(c) - int(z)) * fs
            # float32 division error: relative 2^-24, or absolute 2^-150 for subnormal quotients
            slack = max(abs(fx) * Fraction(1, 2**24), fs * Fraction(1, 2**150))
            if nearest:
                assert abs(err) <= fs / 2 + slack
            elif spec.rounding == "floor":
                assert -slack <= err < fs + slack
            else:  # stochastic: floor or floor + 1
                assert abs(err) < fs + slack
        if t >= hi - int(z) + 1:
            assert c == hi
        if t <= lo - int(z) - 1:
            assert c == lo


@PROPERTY
@given(case=cases(floats=True, roundings=("half_even", "half_away", "half_up")))
def test_fake_quantize_is_a_fixed_point(case):
    """fake_quantize(fake_quantize(x)) == fake_quantize(x) bitwise for the nearest modes and the
    float formats: |fl32(fl32(k s) / s) - k| is far below 1/2 for |k| < 2^17 and normal k s.
    (Not for floor / stochastic: that quotient can land just below k, e.g. k = 7 with
    s = 1.5821757 gives 6.9999995 and floor moves the code down.)"""
    x, params = case
    once = fake_quantize(x, params)
    twice = fake_quantize(once, params)
    if params.dtype.name == "float4e2m1":
        # ONNX adds the +0 zero point for float4, so -0 comes back as +0: equal as values.
        assert np.array_equal(once, twice)
        return
    assert np.array_equal(once.view(np.uint32), twice.view(np.uint32))
    assert np.array_equal(quantize(once, params), quantize(x, params))


@PROPERTY
@given(data=st.data())
def test_monotone(data):
    """Sorted data give non-decreasing codes (decoded values for float formats)."""
    n = data.draw(st.integers(1, 40))
    spec = data.draw(
        rst.quant_specs((n,), dtypes=rst.qdtypes(floats=True), roundings=rst.ROUNDINGS[:4])
    )
    spec = QuantSpec(
        spec.dtype,
        symmetric=spec.symmetric,
        narrow_range=spec.narrow_range,
        rounding=spec.rounding,
    )  # one scale for all elements
    params = data.draw(rst.quant_params(spec, (n,)))
    x = np.sort(data.draw(rst.quant_inputs(params, (n,))))
    q = quantize(x, params)
    values = dequantize(q, params) if spec.dtype.is_float else q.astype(np.int64)
    assert np.all(np.diff(values) >= 0)


@PROPERTY
@given(data=st.data())
def test_per_axis_and_per_block_equal_a_loop_over_slices(data):
    shape = data.draw(rst.array_shapes(1, 3, 6))
    spec = data.draw(rst.quant_specs(shape, roundings=("half_even", "half_away", "floor")))
    assume(not isinstance(spec.granularity, PerTensor))
    params = data.draw(rst.quant_params(spec, shape))
    x = data.draw(rst.quant_inputs(params, shape))
    got = quantize(x, params)
    deq = dequantize(got, params)
    axis = params.axis_for(shape)
    block = spec.granularity.block_size if isinstance(spec.granularity, PerBlock) else 1
    tensor_spec = QuantSpec(
        spec.dtype, spec.symmetric, spec.narrow_range, PerTensor(), spec.rounding
    )
    for idx in np.ndindex(*params.scale.shape):
        # Data covered by this parameter: one index (per-axis) or one block along the axis.
        if isinstance(spec.granularity, PerAxis):
            sl = tuple(slice(None) if i != axis else idx[0] for i in range(len(shape)))
        else:
            sl = tuple(
                slice(idx[i] * block, (idx[i] + 1) * block) if i == axis else idx[i]
                for i in range(len(shape))
            )
        p1 = QuantParams(params.scale[idx], params.zero_point[idx], tensor_spec)
        assert np.array_equal(got[sl], quantize(x[sl], p1))
        assert np.array_equal(deq[sl].view(np.uint32), dequantize(got[sl], p1).view(np.uint32))


# -- rounding modes ---------------------------------------------------------------------------
TIES = st.builds(lambda k: k + 0.5, st.integers(-(1 << 22), 1 << 22))
ROUND_ARRAYS = st.one_of(
    st.lists(st.one_of(rst.float32_values(), TIES), min_size=1, max_size=20).map(
        lambda v: np.array(v, dtype=np.float32)
    ),
    st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False), TIES), min_size=1,
             max_size=20).map(lambda v: np.array(v, dtype=np.float64)),
)  # fmt: skip


@pytest.mark.parametrize("mode", rst.ROUNDINGS)
@PROPERTY
@given(a=ROUND_ARRAYS)
def test_rounding_modes_equal_fraction_definitions(mode, a):
    seed = 12345
    got = round_to_int(a, mode, seed=seed if mode == "stochastic" else None)
    assert got.dtype == a.dtype
    u = np.random.Generator(np.random.PCG64(seed)).random(a.shape)
    for v, g, w in zip(a, got, u, strict=True):
        assert int(g) == oracle.round_fraction(Fraction(float(v)), mode, Fraction(float(w)))


@pytest.mark.parametrize("mode", rst.ROUNDINGS)
@PROPERTY
@given(
    num=st.lists(st.integers(-(10**30), 10**30), min_size=1, max_size=10),
    den=st.integers(1, 10**20),
)
def test_round_rational_equals_fraction_definition(mode, num, den):
    u = np.random.default_rng(len(num)).random(len(num))
    got = round_rational(np.array(num, dtype=object), np.array([den] * len(num), object), mode, u)
    for n, g, w in zip(num, got, u, strict=True):
        assert g == oracle.round_fraction(Fraction(n, den), mode, Fraction(float(w)))


def test_stochastic_rounding_is_reproducible_and_unbiased():
    x = np.full(20000, 0.25, dtype=np.float32)
    a = round_to_int(x, "stochastic", seed=7)
    assert np.array_equal(a, round_to_int(x, "stochastic", seed=7))
    assert not np.array_equal(a, round_to_int(x, "stochastic", seed=8))
    # P(round up) = 1/4 exactly; 20000 draws: 6 sigma is about 0.018.
    assert abs(a.mean() - 0.25) < 0.02


# -- requantize -------------------------------------------------------------------------------
@PROPERTY
@given(data=st.data())
def test_requantize_exact_equals_fraction_definition(data):
    shape = data.draw(rst.array_shapes(0, 2, 5))
    src_spec = data.draw(rst.quant_specs(shape, roundings=("half_even",)))
    dst_spec = data.draw(rst.quant_specs(shape))
    src = data.draw(rst.quant_params(src_spec, shape))
    dst = data.draw(rst.quant_params(dst_spec, shape))
    dt = src_spec.dtype
    q = np.asarray(
        data.draw(
            st.lists(
                st.integers(int(dt.qmin), int(dt.qmax)),
                min_size=int(np.prod(shape)),
                max_size=int(np.prod(shape)),
            )
        ),
        dtype=dt.storage,
    ).reshape(shape)
    got = requantize(q, src, dst)
    ss, zs = (np.broadcast_to(a, shape).reshape(-1) for a in src.broadcast(shape))
    sd, zd = (np.broadcast_to(a, shape).reshape(-1) for a in dst.broadcast(shape))
    u = None
    if dst_spec.rounding == "stochastic":
        u = np.random.Generator(np.random.PCG64(dst_spec.seed)).random(shape).reshape(-1)
    for i, c in enumerate(q.reshape(-1)):
        v = Fraction(int(c) - int(zs[i])) * Fraction(float(ss[i])) / Fraction(float(sd[i]))
        w = None if u is None else Fraction(float(u[i]))
        r = oracle.round_fraction(v, dst_spec.rounding, w) + int(zd[i])
        assert int(got.reshape(-1)[i]) == min(max(r, int(dst_spec.qmin)), int(dst_spec.qmax))
    # The float path is the ONNX DequantizeLinear -> QuantizeLinear chain.
    assert np.array_equal(
        requantize(q, src, dst, method="float"), quantize(dequantize(q, src), dst)
    )


def test_requantize_exact_rejects_float_formats():
    p8 = QuantParams(1.0, 0, QuantSpec("int8"))
    pf = QuantParams(1.0, 0, QuantSpec("float8e4m3fn"))
    with pytest.raises(UnsupportedError, match="float8e4m3fn"):
        requantize(np.zeros(3, np.int8), p8, pf)


# -- choose_qparams ---------------------------------------------------------------------------
RANGE_VALUES = rst.float32_values(-1e6, 1e6)


@pytest.mark.parametrize("convention", ["onnx", "ort", "tflite", "gemmlowp"])
@PROPERTY
@given(
    lo=RANGE_VALUES,
    hi=RANGE_VALUES,
    dtype=rst.qdtypes(min_bits=2),
    narrow=st.booleans(),
    p2=st.booleans(),
)
def test_asymmetric_qparams_represent_zero_and_cover_the_range(
    convention, lo, hi, dtype, narrow, p2
):
    lo, hi = min(lo, hi), max(lo, hi)
    narrow = narrow and dtype.signed
    spec = QuantSpec(dtype, symmetric=False, narrow_range=narrow)
    params = choose_qparams((lo, hi), spec, convention, power_of_two=p2)
    zp, s = int(params.zero_point), Fraction(float(params.scale))
    assert spec.qmin <= zp <= spec.qmax
    assert int(quantize(np.float32(0.0), params)) == zp
    assert float(dequantize(np.array(zp, dtype=dtype.storage), params)) == 0.0
    if p2:
        other = s.denominator if s.numerator == 1 else s.numerator
        assert 1 in (s.numerator, s.denominator) and other & (other - 1) == 0  # a power of two
    # The widened range is covered up to rounding: each end dequantizes within one scale
    # (half a scale of rounding plus under half a scale of zero-point nudging). Subnormal
    # scales carry few significant bits, so their range can be off by more.
    if s < Fraction(float(np.finfo(np.float32).tiny)):
        return
    for r in (min(lo, 0.0), max(hi, 0.0)):
        back = Fraction(float(fake_quantize(np.float32(r), params)))
        assert abs(back - Fraction(r)) <= s * (1 + Fraction(1, 2**20)) or s == 1


@pytest.mark.parametrize("convention", ["onnx", "ort", "tflite", "ort-mlas-int4"])
@PROPERTY
@given(data=st.data(), dtype=rst.qdtypes(min_bits=2))
def test_symmetric_qparams(convention, data, dtype):
    assume(dtype.signed or convention in ("onnx", "ort", "ort-mlas-int4"))
    shape = data.draw(rst.array_shapes(1, 2, 6))
    gran = data.draw(rst.granularities(shape))
    spec = QuantSpec(dtype, symmetric=True, narrow_range=dtype.signed, granularity=gran)
    x = np.asarray(
        data.draw(
            st.lists(RANGE_VALUES, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))
        ),
        dtype=np.float32,
    ).reshape(shape)
    params = choose_qparams(x, spec, convention)
    mid = {"onnx": None, "ort": None}.get(convention, 0)
    zps = set(params.zero_point.reshape(-1).tolist())
    if convention == "ort-mlas-int4":
        assert zps == {0 if dtype.signed else 1 << (dtype.bits - 1)}
    elif mid == 0 or dtype.signed:
        assert zps <= {0}
    # The largest magnitude of each group quantizes without saturating past the range end.
    q = quantize(x, params).astype(np.int64)
    assert q.min() >= spec.qmin and q.max() <= spec.qmax


def test_choose_qparams_per_block_remainder_uses_its_own_range():
    x = np.array([[1.0, 2.0, 3.0, 100.0, -4.0]], dtype=np.float32)
    spec = QuantSpec("int8", granularity=PerBlock(1, 3), narrow_range=True)
    p = choose_qparams(x, spec, "tflite")
    assert p.scale.shape == (1, 2)
    assert p.scale[0, 0] == np.float32(3.0) / np.float32(127)
    assert p.scale[0, 1] == np.float32(100.0) / np.float32(127)


# -- peers: onnx.reference and onnxruntime ----------------------------------------------------
def _dql_peer_cases(seed: int, n: int):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        size = int(rng.integers(1, 64))
        x = rng.standard_normal(size) * 10.0 ** rng.integers(-4, 5)
        x += rng.choice([0.0, 1.0, -1.0]) * rng.random() * 10.0 ** rng.integers(-2, 3)
        if i % 7 == 0:
            x = np.abs(x)
        if i % 11 == 0:
            x = -np.abs(x)
        out.append(x.astype(np.float32))
    out.append(np.zeros(5, np.float32))
    return out


def test_dynamic_quantize_linear_matches_onnx_reference_and_onnxruntime(checked):
    ort = require_module("onnxruntime")
    require_module("onnx")
    from onnx.reference import ReferenceEvaluator

    from tests.quant_peers import dynamic_quantize_models

    model = dynamic_quantize_models()
    ref = ReferenceEvaluator(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    cases_ = _dql_peer_cases(3, 400)
    elements = 0
    for x in cases_:
        for convention, peer in (("onnx", ref.run), ("ort", sess.run)):
            y, s, z = quantize_dynamic_uint8(x, convention=convention)
            py, ps, pz = peer(None, {"x": x})
            assert np.array_equal(y, py), (x, convention)
            assert np.float32(s).view(np.uint32) == np.float32(ps).view(np.uint32)
            assert int(z) == int(pz)
        elements += x.size
    checked("DynamicQuantizeLinear vs onnx.reference + onnxruntime", len(cases_), elements)


def _random_layouts(rng, n: int):
    """(x, scale, zp, dtype, axis, block) for QuantizeLinear-21 in every granularity."""
    for i in range(n):
        dtype = ["int8", "uint8", "int16", "uint16", "int4", "uint4"][i % 6]
        dt = QDType.parse(dtype)
        ndim = int(rng.integers(1, 4))
        shape = tuple(int(d) for d in rng.integers(1, 9, ndim))
        kind = ["tensor", "axis", "block"][i % 3]
        axis = int(rng.integers(-ndim, ndim))
        block = int(rng.integers(1, shape[axis] + 2)) if kind == "block" else None
        if kind == "tensor":
            pshape: tuple[int, ...] = ()
        elif kind == "axis":
            pshape = (shape[axis],)
        else:
            pshape = tuple(-(-d // block) if j == axis % ndim else d for j, d in enumerate(shape))
        scale = np.exp(rng.uniform(-6, 3, pshape)).astype(np.float32)
        zp = rng.integers(int(dt.qmin), int(dt.qmax) + 1, pshape)
        scale_b = scale if kind != "block" else np.repeat(scale, block, axis=axis)
        if kind == "block":
            scale_b = np.take(scale_b, range(shape[axis]), axis=axis)
        elif kind == "axis":
            scale_b = scale.reshape([-1 if j == axis % ndim else 1 for j in range(ndim)])
        span = (int(dt.qmax) - int(dt.qmin)) * 0.7
        k = rng.integers(-int(span), int(span) + 1, shape) + rng.choice([0.0, 0.5, 0.3], shape)
        x = (k * scale_b).astype(np.float32)
        yield x, scale, zp, dtype, (None if kind == "tensor" else axis), block


def test_quantize_dequantize_match_onnxruntime(checked):
    require_module("onnxruntime")
    from refq.packing import pack_bits
    from tests.quant_peers import ort_dequantize, ort_quantize

    rng = np.random.default_rng(11)
    n_cases = elements = 0
    for x, scale, zp, dtype, axis, block in _random_layouts(rng, 240):
        dt = QDType.parse(dtype)
        if axis is None:
            gran = PerTensor()
        elif block is None:
            gran = PerAxis(axis)
        else:
            gran = PerBlock(axis, block)
        params = QuantParams(scale, zp, QuantSpec(dt, granularity=gran))
        if scale.size == 1:  # ORT treats any one-element scale as per-tensor
            scale, zp, axis, block = scale.reshape(()), zp.reshape(()), None, None
        for path in ("numpy", "numba"):
            with numba_path(path == "numba"):
                q = quantize(x, params)
            peer = ort_quantize(x, scale, zp.astype(dt.storage), dtype, axis=axis, block_size=block)
            if dt.bits == 4:
                assert np.array_equal(pack_bits(q, 4), peer), (dtype, axis, block)
            else:
                assert np.array_equal(q, peer), (dtype, axis, block)
                with numba_path(path == "numba"):
                    d = dequantize(q, params)
                pd = ort_dequantize(
                    q, scale, zp.astype(dt.storage), dtype, axis=axis, block_size=block
                )
                assert np.array_equal(d.view(np.uint32), pd.view(np.uint32))
        n_cases += 1
        elements += x.size
    checked("QuantizeLinear/DequantizeLinear vs onnxruntime (int4..uint16)", n_cases, elements)


def test_quantize_matches_onnx_reference_for_every_type(checked):
    require_module("onnx")
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    from tests.quant_peers import ONNX_TYPES

    rng = np.random.default_rng(5)
    n_cases = 0
    for dtype in ("int8", "uint8", "int16", "uint16", "int4", "uint4", "int2", "uint2",
                  "float8e4m3fn", "float8e5m2", "float4e2m1"):  # fmt: skip
        dt = QDType.parse(dtype)
        tt = {"int2": 26, "uint2": 25, "float4e2m1": 23}.get(dtype) or ONNX_TYPES[dtype]
        for saturate in (True, False) if dt.is_float and dt.bits == 8 else (True,):
            x = (rng.standard_normal((4, 33)) * 10.0 ** rng.integers(-1, 4, (4, 1))).astype(
                np.float32
            )
            x[0, :4] = [0.5, 1.5, -2.5, -0.0]
            scale = np.exp(rng.uniform(-2, 1, 4)).astype(np.float32)
            zp = np.zeros(4, np.int64) if dt.is_float else rng.integers(dt.qmin, dt.qmax + 1, 4)
            attrs = {"axis": 0}
            if dt.is_float and dt.bits == 8:
                attrs["saturate"] = int(saturate)
            node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], **attrs)
            graph = helper.make_graph(
                [node],
                "q",
                [helper.make_tensor_value_info("x", 1, [4, 33])],
                [helper.make_tensor_value_info("y", tt, [4, 33])],
                initializer=[
                    numpy_helper.from_array(scale, "s"),
                    helper.make_tensor("z", tt, [4], zp.tolist()),
                ],
            )
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
            peer = ReferenceEvaluator(model).run(None, {"x": x})[0]
            params = QuantParams(scale, zp, QuantSpec(dt, granularity=PerAxis(0)))
            got = quantize(x, params, saturate=saturate)
            if dt.is_float:
                assert np.array_equal(got, peer.view(np.uint8) & ((1 << dt.bits) - 1))
            else:
                assert np.array_equal(got.astype(np.int64), peer.astype(np.int64))
            n_cases += 1
    checked("QuantizeLinear vs onnx.reference (11 types)", n_cases, n_cases * 132)


def test_nonfinite_clamp_matches_onnxruntime():
    require_module("onnxruntime")
    from tests.quant_peers import ort_quantize

    x = np.array([np.nan, np.inf, -np.inf, 1.0, -np.nan] * 1000, dtype=np.float32)
    for dtype in ("int8", "uint8", "int16"):
        dt = QDType.parse(dtype)
        zp = np.array(int(dt.qmin) + 3, dtype=dt.storage)
        params = QuantParams(np.float32(0.5), zp, QuantSpec(dt))
        peer = ort_quantize(x, np.array(0.5, np.float32), zp, dtype)
        for path in ("numpy", "numba"):
            with numba_path(path == "numba"):
                assert np.array_equal(quantize(x, params, nonfinite="clamp"), peer)
                with pytest.raises(InvalidDataError, match="nan at index \\(0,\\)"):
                    quantize(x, params)


def test_ort_symmetric_and_asymmetric_scale_zp_match_onnxruntime_tools(checked):
    qu = require_module("onnxruntime.quantization.quant_utils")
    rng = np.random.default_rng(9)
    n = 0
    for i in range(600):
        dtype = ["int8", "uint8", "int16", "uint16"][i % 4]
        symmetric = bool(i % 3 == 0)
        dt = QDType.parse(dtype)
        narrow = symmetric and dt.signed  # ORT's symmetric int8 / int16 ranges
        lo, hi = np.sort(rng.standard_normal(2) * 10.0 ** rng.integers(-5, 5)).astype(np.float32)
        if i % 50 == 0:
            lo = hi = np.float32(0)
        qmin, qmax = qu.get_qmin_qmax_for_qType(
            {"int8": 3, "uint8": 2, "int16": 5, "uint16": 4}[dtype], symmetric=symmetric
        )
        zp_peer, s_peer = qu.compute_scale_zp(
            np.array(lo), np.array(hi), qmin, qmax, symmetric=symmetric
        )
        spec = QuantSpec(dt, symmetric=symmetric, narrow_range=narrow)
        p = choose_qparams((lo, hi), spec, "ort")
        assert np.float32(p.scale).view(np.uint32) == np.float32(s_peer).view(np.uint32)
        assert int(p.zero_point) == int(zp_peer)
        n += 1
    checked("choose_qparams('ort') vs onnxruntime compute_scale_zp", n)


def test_ort_mlas_int4_scales_match_onnxruntime(checked):
    require_module("onnxruntime")
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    from refq.packing import unpack_bits

    rng = np.random.default_rng(4)
    n = elements = 0
    for i in range(40):
        k, n_cols, block = int(rng.integers(1, 80)), int(rng.integers(1, 6)), [16, 32, 64][i % 3]
        w = (rng.standard_normal((k, n_cols)) * rng.uniform(0.01, 3)).astype(np.float32)
        if i % 5 == 0:
            w[: min(k, 3)] = 0.0
        kb = -(-k // block)
        packed = np.zeros((n_cols, kb, block // 2), dtype=np.uint8)
        scales = np.zeros(n_cols * kb, dtype=np.float32)
        zps = np.zeros(n_cols * ((kb + 1) // 2), dtype=np.uint8)
        quantize_matmul_4bits(packed, w, scales, zps, block, n_cols, k, True)
        spec = QuantSpec("uint4", granularity=PerBlock(0, block))  # MLAS: uint4, zero point 8
        p = choose_qparams(w, spec, "ort-mlas-int4")
        peer = scales.reshape(n_cols, kb).T
        nonzero = peer != 0  # MLAS stores 0 for all-zero blocks; refq stores 1 there
        assert np.array_equal(p.scale[nonzero].view(np.uint32), peer[nonzero].view(np.uint32))
        assert np.all(p.scale[~nonzero] == 1)
        # MLAS's codes (column-major blocks, packed) equal QuantizeLinear with those scales.
        codes = unpack_bits(packed.reshape(-1), n_cols * kb * block, 4, signed=False)
        codes = codes.reshape(n_cols, kb * block)[:, :k].T
        assert np.array_equal(quantize(w, p), codes)
        n += 1
        elements += w.size
    checked("choose_qparams('ort-mlas-int4') + quantize vs onnxruntime MLAS", n, elements)


@pytest.mark.parametrize("path", ["numpy", "numba"])
def test_out_buffers_receive_the_same_results(path):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3, 50)) * 40).astype(np.float32)
    params = QuantParams(
        np.float32([0.5, 1.25, 3.0]), [1, -2, 0], QuantSpec("int8", granularity=PerAxis(0))
    )
    q_buf = np.full(x.shape, 99, np.int8)
    d_buf = np.full(x.shape, np.nan, np.float32)
    with numba_path(path == "numba"):
        q = quantize(x, params)
        assert quantize(x, params, out=q_buf) is q_buf and np.array_equal(q_buf, q)
        d = dequantize(q, params)
        assert dequantize(q, params, out=d_buf) is d_buf
        assert np.array_equal(d_buf.view(np.uint32), d.view(np.uint32))
        with pytest.raises(
            ShapeError,
            match=r"out for the tensor must be a int8 array of shape \(3, 50\), got uint8",
        ):
            quantize(x, params, out=np.empty(x.shape, np.uint8))
        with pytest.raises(ShapeError, match="C-contiguous"):
            dequantize(q, params, out=np.empty((50, 3), np.float32).T)


def test_float16_scales_match_onnx_reference():
    """float16 scale: division in float32 (numpy promotion, as onnx.reference) and a float16
    DequantizeLinear output computed in float32 then rounded (onnx.reference and ORT)."""
    require_module("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(8)
    for dtype, tt in (("int8", TensorProto.INT8), ("uint16", TensorProto.UINT16),
                      ("float8e4m3fn", TensorProto.FLOAT8E4M3FN)):  # fmt: skip
        dt = QDType.parse(dtype)
        scale = np.float16(rng.uniform(0.01, 3))
        zp = 0 if dt.is_float else int(rng.integers(dt.qmin, dt.qmax + 1))
        params = QuantParams(scale, zp, QuantSpec(dt))
        x = (rng.standard_normal(200) * float(scale) * 50).astype(np.float32)
        q = quantize(x, params)
        node = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"])
        graph = helper.make_graph(
            [node],
            "dq",
            [helper.make_tensor_value_info("x", tt, [200])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [200])],
            initializer=[
                numpy_helper.from_array(np.array(scale), "s"),
                helper.make_tensor("z", tt, [], [zp]),
            ],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        feed = q.view(require_module("ml_dtypes").float8_e4m3fn) if dt.is_float else q
        peer = ReferenceEvaluator(model).run(None, {"x": feed})[0]
        got = dequantize(q, params)
        assert got.dtype == np.float16
        assert np.array_equal(got.view(np.uint16), peer.view(np.uint16)), dtype
