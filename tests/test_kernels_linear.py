"""Linear-algebra kernels (requant, FULLY_CONNECTED, BATCH_MATMUL, QUANTIZE / DEQUANTIZE /
REQUANTIZE) against exact Python-int / Fraction restatements of the peers' formulas.

The oracles are written from the formulas (peer-facts 1 and 3, the kernels' docstrings) in
Python integers and Fractions, on the scalar definitions of refq.oracle (which never import the
code they check): TFLite ``QuantizeMultiplier`` from the float's exact binary value, SRDHM as a
round half up of ``a*b / 2^31``, RoundingDivideByPOT as a half-away division, float32 / float64
products rounded once from the exact rational value.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refq.errors import (
    ExactnessError,
    InvalidDataError,
    QuantSpecError,
    RefqError,
    ShapeError,
    UnsupportedError,
)
from refq.graph import Graph, Node, Program, TensorInfo
from refq.intmatmul import float_matmul_exact, plan_float_matmul
from refq.kernels.batch_matmul import batch_matmul, prepare_batch_matmul
from refq.kernels.fully_connected import (
    GEMV_MAX_ROWS,
    fc_accumulators,
    fully_connected,
    prepare_fully_connected,
)
from refq.kernels.quantize_ops import prepare_quantize, quantize
from refq.kernels.requant import (
    activation_range,
    fixedpoint_requant,
    float32_requant,
    float64_requant,
    requantize,
)
from refq.oracle import fixedpoint as of
from refq.oracle.quantize import round_to_float, to_float32
from refq.profiles import PROFILES

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "int4": (-8, 7)}

# --- exact oracles (refq.oracle's scalar definitions) ---------------------------------------------


def f32(v) -> Fraction:
    return Fraction(float(np.float32(v)))


def to_float64(q: Fraction) -> Fraction | float:
    return round_to_float(q, 53, -1022, 1023)


def requant_oracle(acc: int, kind: str, m: float | int, s: int, zp: int, lo: int, hi: int) -> int:
    if kind in ("double", "single"):
        r = of.multiply_by_quantized_multiplier(of.wrap(acc), m, s, kind)
    elif kind == "s64":
        r = of.multiply_by_quantized_multiplier_s64(acc, m, s)
    elif kind == "float32":
        v = to_float32(to_float32(Fraction(of.wrap(acc))) * f32(m))
        r = round(v)
    else:  # float64 (LiteRT reference FULLY_CONNECTED); acc already wrapped by the caller
        r = of.round_half_away(to_float64(Fraction(acc) * Fraction(m)))
    return min(max(r + zp, lo), hi)


# --- requant ------------------------------------------------------------------------------------


@st.composite
def requant_case(draw):
    kind = draw(st.sampled_from(["double", "single", "s64", "float32", "float64"]))
    channels = draw(st.integers(1, 4))
    per_channel = channels > 1 or draw(st.booleans())
    rows = draw(st.integers(1, 5))
    lim = 2**47 - 1 if kind in ("s64", "float64") else 2**33
    edge = st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31), 2**30, -(2**30) - 1])
    accs = draw(
        st.lists(
            st.one_of(st.integers(-lim, lim), edge),
            min_size=rows * channels,
            max_size=rows * channels,
        )
    )
    exps = st.floats(-40, 8 if kind == "s64" else 12)
    reals = [2.0 ** draw(exps) * draw(st.floats(1, 2)) for _ in range(channels)]
    out = draw(st.sampled_from(["int8", "int16", "uint8"]))
    lo, hi = RANGES[out]
    zp = draw(st.integers(lo, hi))
    a_lo = draw(st.integers(lo, hi))
    a_hi = draw(st.integers(a_lo, hi))
    acc = np.array(accs, np.int64).reshape(rows, channels)
    return kind, acc, reals, per_channel, out, zp, (a_lo, a_hi)


@SETTINGS
@given(requant_case())
def test_requantize_matches_exact_oracle(case) -> None:
    kind, acc, reals, per_channel, out, zp, (lo, hi) = case
    channels = acc.shape[1]
    if not per_channel:
        reals = reals[:1]
    kw = dict(zero_point=zp, out_dtype=out, act_min=lo, act_max=hi)
    acc_used = acc
    if kind == "float32":
        ms = [float(np.float32(r)) for r in reals]
        rq = float32_requant(np.array(ms, np.float32).reshape(-1 if per_channel else ()), **kw)
        params = [(m, 0) for m in ms]
    elif kind == "float64":
        accumulator = "int64" if per_channel else "int32"
        rq = float64_requant(
            np.array(reals).reshape(-1 if per_channel else ()), accumulator=accumulator, **kw
        )
        params = [(r, 0) for r in reals]
        if accumulator == "int32":
            acc_used = np.vectorize(of.wrap, otypes=[object])(acc)
    else:
        rounding = "single" if kind == "single" else "double"
        params = [of.quantize_multiplier(r, rounding) for r in reals]
        if any(not -31 <= s <= (7 if kind == "s64" else 30) for _, s in params):
            with pytest.raises(QuantSpecError):
                fixedpoint_requant(np.array(reals), rounding=rounding, s64=kind == "s64", **kw)
            return
        rq = fixedpoint_requant(
            np.array(reals).reshape(-1 if per_channel else ()),
            rounding=rounding,
            s64=kind == "s64",
            **kw,
        )
    got = requantize(acc, rq)
    assert got.dtype == np.dtype(out)
    for (r, c), a in np.ndenumerate(acc_used):
        m, s = params[c if per_channel else 0]
        want = requant_oracle(int(a), kind, m, s, zp, lo, hi)
        assert int(got[r, c]) == want, (kind, int(a), m, s)
    assert channels == acc.shape[1]


def test_requantize_offset_and_s64_domain() -> None:
    rq = fixedpoint_requant(0.25, rounding="double", zero_point=3, out_dtype="int8")
    acc = np.array([[0, 4, -4]], np.int32)
    got = requantize(acc, rq, offset=np.array([4, 0, 8]))
    assert got.tolist() == [[3 + 1, 3 + 1, 3 + 1]]
    rq64 = fixedpoint_requant(
        2.0**-20, rounding="double", zero_point=0, out_dtype="int16", s64=True
    )
    with pytest.raises(ExactnessError, match="2\\^47"):
        requantize(np.array([2**47], np.int64), rq64)
    with pytest.raises(QuantSpecError, match="shift"):
        fixedpoint_requant(2.0**9, rounding="double", zero_point=0, out_dtype="int16", s64=True)
    with pytest.raises(QuantSpecError, match="positive"):
        fixedpoint_requant(np.array([0.5, -1.0]), rounding="double", zero_point=0, out_dtype="int8")
    with pytest.raises(UnsupportedError):
        requantize(np.array([1.5]), rq)
    with pytest.raises(ShapeError, match="per-channel"):
        requantize(
            np.zeros((2, 3), np.int32),
            fixedpoint_requant([0.5, 0.5], rounding="double", zero_point=0, out_dtype="int8"),
        )


@pytest.mark.parametrize("act", ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])
def test_activation_range_formula(act: str) -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        out = ["int8", "int16", "uint8"][int(rng.integers(3))]
        qmin, qmax = RANGES[out]
        scale = float(np.float32(2.0 ** rng.uniform(-12, 2)))
        zp = int(rng.integers(qmin, qmax + 1))

        def q(f: float, zp: int = zp, scale: float = scale) -> int:
            return zp + of.round_half_away(to_float32(Fraction(f) / f32(scale)))

        want = {
            "NONE": (qmin, qmax),
            "RELU": (max(qmin, q(0)), qmax),
            "RELU6": (max(qmin, q(0)), min(qmax, q(6))),
            "RELU_N1_TO_1": (max(qmin, q(-1)), min(qmax, q(1))),
        }[act]
        assert activation_range(act, scale, zp, out) == want
    with pytest.raises(UnsupportedError, match="TANH"):
        activation_range("TANH", 0.1, 0, "int8")
    with pytest.raises(QuantSpecError, match="int32"):
        activation_range("RELU6", 1e-12, 0, "int8")


# --- exact chunked matmul -----------------------------------------------------------------------


def obj_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.matmul(a.astype(object), b.astype(object))


@SETTINGS
@given(
    st.integers(1, 6),
    st.integers(0, 80),
    st.integers(1, 6),
    st.integers(1, 2**20),
    st.integers(1, 2**20),
    st.integers(1, 64),
    st.integers(0, 2**32 - 1),
)
def test_float_matmul_exact_chunks(m, k, n, max_a, max_b, min_chunk, seed) -> None:
    rng = np.random.default_rng(seed)
    plan = plan_float_matmul(k, max_a, max_b, min_float32_chunk=min_chunk)
    limit = 2**24 if plan.dtype == np.float32 else 2**53
    assert plan.chunk * max_a * max_b <= limit or plan.chunk == 1
    a = rng.integers(-max_a, max_a + 1, (m, k))
    b = rng.integers(-max_b, max_b + 1, (k, n))
    a[..., :1] = max_a  # extremes reach the bound
    b[:1] = -max_b
    got = float_matmul_exact(a.astype(plan.dtype), b.astype(plan.dtype), plan)
    assert np.array_equal(got.astype(object), obj_matmul(a, b))


def test_float_matmul_plan_edges() -> None:
    p = plan_float_matmul(1024, 128, 128)  # bound exactly 2^24: still one exact float32 call
    assert (p.dtype, p.chunk, p.chunks) == (np.float32, 1024, 1)
    p = plan_float_matmul(1536, 128, 127)
    assert (p.dtype, p.chunks) == (np.float32, 2)
    assert plan_float_matmul(64, 32768, 128).dtype == np.float64
    with pytest.raises(ExactnessError):
        plan_float_matmul(2, 2**40, 2**40)


# --- FULLY_CONNECTED ----------------------------------------------------------------------------

FC_COMBOS = [
    ("int8", "int8"),
    ("int8", "int4"),
    ("uint8", "uint8"),
    ("uint8", "int8"),
    ("int8", "uint8"),
    ("int16", "int8"),
]
FC_PROFILES = ["tflm", "tflm-f32", "cmsis-nn-single", "litert-ref", "onnx", "ort-x86-u8s8"]


def fc_real(profile: str, s_in, s_w, s_out, per_tensor: bool):
    """The real (or float32) multipliers, restated per peer from the scales."""
    a, w, o = np.float32(s_in), np.asarray(s_w, np.float32), np.float32(s_out)
    if profile in ("onnx", "ort-x86-u8s8"):
        return [float(np.float32(np.float32(a * v) / o)) for v in w]
    if profile == "tflm-f32" and per_tensor:
        return [float(np.float32(a * v)) / float(o) for v in w]
    return [float(a) * float(v) / float(o) for v in w]


def sat16_acc(x: list[int], w: list[int], zx: int, zw: int) -> int:
    """onnxruntime AVX2 u8s8: raw-code pairs clipped to int16, then zero-point corrections."""
    xs, ws = [*x, 0], [*w, 0]
    total = 0
    for j in range(0, len(x), 2):
        total += min(max(xs[j] * ws[j] + xs[j + 1] * ws[j + 1], -32768), 32767)
    k = len(x)
    return of.wrap(total - zw * sum(x) - zx * sum(w) + k * zx * zw)


@st.composite
def fc_case(draw):
    xdt, wdt = draw(st.sampled_from(FC_COMBOS))
    profile = draw(st.sampled_from(FC_PROFILES))
    if xdt == "int16" and profile in ("onnx", "ort-x86-u8s8"):
        profile = "tflm"
    rows = draw(st.sampled_from([1, 2, GEMV_MAX_ROWS, GEMV_MAX_ROWS + 1, 13]))
    k = draw(st.integers(1, 48))
    n = draw(st.integers(1, 10))
    per_channel = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    act = draw(st.sampled_from(["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]))
    return (
        xdt,
        wdt,
        profile,
        rows,
        k,
        n,
        per_channel,
        seed,
        act,
        draw(st.booleans()),
        draw(st.booleans()),
    )


def make_fc(xdt, wdt, profile, k, n, per_channel, rng, act="NONE", bias=True, keep=False):
    wide = xdt == "int16"
    wlo, whi = RANGES[wdt]
    w = rng.integers(wlo, whi + 1, (n, k))
    s_in = float(np.float32(2.0 ** rng.uniform(-8, 0)))
    s_w = np.float32(2.0 ** rng.uniform(-8, -1, n if per_channel else 1))
    s_out = float(np.float32(s_in * s_w.max() * np.sqrt(k) * 2.0 ** rng.uniform(-2, 6)))
    if wide:
        s_out *= 128.0
    xlo, xhi = RANGES[xdt]
    zx = 0 if wide else int(rng.integers(xlo, xhi + 1))
    zw = rng.integers(wlo, whi + 1, n if per_channel else 1) if wdt == "uint8" else np.zeros(1)
    out = "int16" if wide else xdt
    zo = 0 if wide else int(rng.integers(*RANGES[out]))
    b = None
    if bias:
        b = rng.integers(-(2**20), 2**20, n).astype(np.int64 if wide else np.int32)
    p = prepare_fully_connected(
        w.astype(np.uint8 if wdt == "uint8" else np.int8),
        b,
        input_dtype=xdt,
        input_scale=s_in,
        input_zero_point=zx,
        weights_scale=s_w if per_channel else s_w[0],
        weights_zero_point=zw.astype(np.int64) if per_channel else int(zw[0]),
        output_dtype=out,
        output_scale=s_out,
        output_zero_point=zo,
        profile=PROFILES[profile],
        activation=act,
        keep_num_dims=keep,
        weights_dtype=wdt,
    )
    meta = dict(w=w, b=b, s_in=s_in, s_w=s_w, s_out=s_out, zx=zx, zw=zw, out=out, zo=zo)
    return p, meta


def fc_oracle(x: np.ndarray, profile: str, xdt: str, wdt: str, act: str, meta) -> np.ndarray:
    w, b, zx, zw = meta["w"], meta["b"], meta["zx"], meta["zw"]
    n, k = w.shape
    zwc = np.broadcast_to(zw, (n,)).astype(np.int64)
    reals = fc_real(profile, meta["s_in"], meta["s_w"], meta["s_out"], meta["s_w"].size == 1)
    reals = np.broadcast_to(np.array(reals, dtype=object), (n,))
    out, zo = meta["out"], meta["zo"]
    lo, hi = activation_range(act, meta["s_out"], zo, out)  # formula checked above
    x2 = x.reshape(-1, k).astype(np.int64)
    wide = xdt == "int16"
    if profile == "litert-ref":
        kind = "float64"
    elif profile in ("onnx", "ort-x86-u8s8"):
        kind = "float32"
    elif wide:
        kind = "s64"
    else:
        kind = PROFILES[profile].rounding
    sat = profile == "ort-x86-u8s8" and xdt == "uint8" and wdt == "int8"
    acc = obj_matmul(x2 - zx, (w - zwc[:, None]).T)
    y = np.zeros((x2.shape[0], n), np.int64)
    for r in range(x2.shape[0]):
        for c in range(n):
            if sat:
                a = sat16_acc(list(map(int, x2[r])), list(map(int, w[c])), zx, int(zwc[c]))
            else:
                a = int(acc[r, c])
            a += 0 if b is None else int(b[c])
            if kind == "float64" and not wide:
                a = of.wrap(a)
            real = float(reals[c])
            if kind in ("double", "single", "s64"):
                m, s = of.quantize_multiplier(real, "single" if kind == "single" else "double")
            else:
                m, s = real, 0
            y[r, c] = requant_oracle(a, kind, m, s, zo, lo, hi)
    return y


@SETTINGS
@given(fc_case())
def test_fully_connected_matches_exact_oracle(case) -> None:
    xdt, wdt, profile, rows, k, n, per_channel, seed, act, bias, keep = case
    rng = np.random.default_rng(seed)
    p, meta = make_fc(xdt, wdt, profile, k, n, per_channel, rng, act, bias, keep)
    lead = (rows,) if not keep or rows % 2 else (2, rows // 2)
    x = rng.integers(*RANGES[xdt], size=(*lead, k), endpoint=True).astype(xdt)
    y = fully_connected(x, p)
    assert y.shape == ((*lead, n) if keep else (rows, n))
    assert y.dtype == np.dtype(meta["out"])
    want = fc_oracle(x, profile, xdt, wdt, act, meta)
    assert np.array_equal(y.reshape(-1, n).astype(np.int64), want)


def test_fully_connected_chunked_and_wide_paths() -> None:
    """K large enough to split the float32 product, int16 GEMV with int64 sums, uint8 weights
    with zero points (int16 centered copy), on both the GEMV and the BLAS row counts."""
    rng = np.random.default_rng(9)
    for xdt, wdt, k in [("int8", "int8", 1536), ("int16", "int8", 700), ("uint8", "uint8", 900)]:
        p, meta = make_fc(xdt, wdt, "tflm", k, 7, True, rng)
        if xdt == "int8":
            assert p.matmul_plan.chunks == 2
        if xdt == "int16":
            assert p.gemv_int64 and p.matmul_plan.dtype == np.float64
        for rows in (1, 3 * GEMV_MAX_ROWS):
            x = rng.integers(*RANGES[xdt], size=(rows, k), endpoint=True).astype(xdt)
            want = obj_matmul(
                x.astype(np.int64) - meta["zx"],
                (meta["w"] - np.broadcast_to(meta["zw"], (7,))[:, None]).T.astype(np.int64),
            )
            assert np.array_equal(fc_accumulators(x, p).astype(object), want)
            assert np.array_equal(
                fully_connected(x, p).astype(np.int64), fc_oracle(x, "tflm", xdt, wdt, "NONE", meta)
            )


def test_kernel_sums_are_cmsis_nn_formula() -> None:
    rng = np.random.default_rng(3)
    p, meta = make_fc("int8", "int8", "cmsis-nn", 20, 5, False, rng)
    want = [int(meta["b"][c]) - meta["zx"] * int(meta["w"][c].sum()) for c in range(5)]
    assert p.kernel_sums.tolist() == want
    assert p.input_offset == -meta["zx"] and p.output_offset == meta["zo"]


def test_fully_connected_bad_input() -> None:
    rng = np.random.default_rng(1)
    p, _ = make_fc("int8", "int8", "tflm", 6, 3, False, rng)
    with pytest.raises(ShapeError, match="int8"):
        fully_connected(np.zeros((2, 6), np.int16), p)
    with pytest.raises(ShapeError, match="K=6"):
        fully_connected(np.zeros((2, 5), np.int8), p)
    kw = dict(
        input_dtype="int8",
        input_scale=0.1,
        input_zero_point=0,
        weights_scale=0.1,
        weights_zero_point=0,
        output_dtype="int8",
        output_scale=0.1,
        output_zero_point=0,
        profile=PROFILES["tflm"],
    )
    with pytest.raises(QuantSpecError, match="int4"):
        prepare_fully_connected(np.full((2, 2), 9, np.int8), None, weights_dtype="int4", **kw)
    with pytest.raises(ShapeError, match="bias"):
        prepare_fully_connected(np.ones((2, 2), np.int8), np.ones(3, np.int32), **kw)
    with pytest.raises(QuantSpecError, match="weights scale"):
        prepare_fully_connected(np.ones((2, 2), np.int8), None, **{**kw, "weights_scale": 0.0})
    with pytest.raises(UnsupportedError, match="onnx"):
        prepare_fully_connected(
            np.ones((2, 2), np.int8),
            None,
            **{**kw, "input_dtype": "int16", "output_dtype": "int16", "profile": PROFILES["onnx"]},
        )


# --- BATCH_MATMUL -------------------------------------------------------------------------------


@st.composite
def bmm_case(draw):
    dtype = draw(st.sampled_from(["int8", "int16", "uint8"]))
    profile = draw(st.sampled_from(["tflm", "tflm-f32", "litert-ref", "cmsis-nn-single", "onnx"]))
    if dtype == "int16" and profile == "onnx":
        profile = "tflm"
    batch = draw(st.lists(st.integers(1, 3), max_size=3))
    a_b = [d if draw(st.booleans()) else 1 for d in batch]
    b_b = [d if draw(st.booleans()) else 1 for d in batch]
    a_b = a_b[draw(st.integers(0, len(a_b))) :]
    m, k, n = (draw(st.integers(1, 9)) for _ in range(3))
    if draw(st.integers(0, 9)) == 0:
        k = draw(st.integers(200, 400))  # several float32 chunks for 8-bit operands with zps
    return (
        dtype,
        profile,
        a_b,
        b_b,
        m,
        k,
        n,
        draw(st.booleans()),
        draw(st.booleans()),
        draw(st.integers(0, 2**32 - 1)),
    )


@SETTINGS
@given(bmm_case())
def test_batch_matmul_matches_exact_oracle(case) -> None:
    dtype, profile, a_b, b_b, m, k, n, adj_x, adj_y, seed = case
    rng = np.random.default_rng(seed)
    lo, hi = RANGES[dtype]
    wide = dtype == "int16"
    sa, sb = (float(np.float32(2.0 ** rng.uniform(-8, 0))) for _ in range(2))
    so = float(np.float32(sa * sb * np.sqrt(k) * 2.0 ** rng.uniform(-1, 7) * (128 if wide else 1)))
    za, zb, zo = (0, 0, 0) if wide else (int(v) for v in rng.integers(lo, hi + 1, 3))
    p = prepare_batch_matmul(
        dtype=dtype,
        lhs_scale=sa,
        lhs_zero_point=za,
        rhs_scale=sb,
        rhs_zero_point=zb,
        output_scale=so,
        output_zero_point=zo,
        profile=PROFILES[profile],
        adj_x=adj_x,
        adj_y=adj_y,
    )
    a = rng.integers(lo, hi + 1, (*a_b, k, m) if adj_x else (*a_b, m, k)).astype(dtype)
    b = rng.integers(lo, hi + 1, (*b_b, n, k) if adj_y else (*b_b, k, n)).astype(dtype)
    y = batch_matmul(a, b, p)
    av = np.swapaxes(a, -1, -2) if adj_x else a
    bv = np.swapaxes(b, -1, -2) if adj_y else b
    acc = obj_matmul(av.astype(np.int64) - za, bv.astype(np.int64) - zb)
    assert y.shape == acc.shape and y.dtype == np.dtype(dtype)
    real = fc_real(profile, sa, [sb], so, True)[0]
    if profile == "onnx":
        kind, m_, s_ = "float32", real, 0
    else:
        kind = "s64" if wide else PROFILES[profile].rounding
        m_, s_ = of.quantize_multiplier(real, "single" if kind == "single" else "double")
    for idx, v in np.ndenumerate(acc):
        assert int(y[idx]) == requant_oracle(int(v), kind, m_, s_, zo, lo, hi)


def test_batch_matmul_bad_shapes() -> None:
    p = prepare_batch_matmul(
        dtype="int8",
        lhs_scale=0.1,
        lhs_zero_point=0,
        rhs_scale=0.1,
        rhs_zero_point=0,
        output_scale=0.1,
        output_zero_point=0,
        profile=PROFILES["tflm"],
    )
    with pytest.raises(ShapeError, match="inner"):
        batch_matmul(np.zeros((2, 3), np.int8), np.zeros((4, 2), np.int8), p)
    with pytest.raises(ShapeError, match="broadcast"):
        batch_matmul(np.zeros((2, 2, 3), np.int8), np.zeros((3, 3, 2), np.int8), p)
    with pytest.raises(ShapeError, match="rank"):
        batch_matmul(np.zeros(3, np.int8), np.zeros((3, 2), np.int8), p)
    with pytest.raises(QuantSpecError, match="zero point"):
        prepare_batch_matmul(
            dtype="int8",
            lhs_scale=0.1,
            lhs_zero_point=200,
            rhs_scale=0.1,
            rhs_zero_point=0,
            output_scale=0.1,
            output_zero_point=0,
            profile=PROFILES["tflm"],
        )


# --- QUANTIZE / DEQUANTIZE / REQUANTIZE ---------------------------------------------------------


@SETTINGS
@given(
    st.sampled_from(["int8", "int16", "uint8"]),
    st.sampled_from(["tflm", "onnx"]),
    st.floats(-12, 2),
    st.integers(0, 2**32 - 1),
)
def test_quantize_float_matches_oracle(out, profile, log_scale, seed) -> None:
    rng = np.random.default_rng(seed)
    s = float(np.float32(2.0**log_scale))
    lo, hi = RANGES[out]
    zp = int(rng.integers(lo, hi + 1))
    # Ties and their float32 neighbours, plus plain values, some far out of range.
    q = rng.integers(-40000, 40000, 64) + 0.5
    x = (q * s).astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(0))])
    x = np.concatenate([x, (rng.standard_normal(32) * s * 300).astype(np.float32)])
    p = prepare_quantize(
        input_dtype="float32",
        output_dtype=out,
        profile=PROFILES[profile],
        output_scale=s,
        output_zero_point=zp,
    )
    y = quantize(x, p)
    for xi, yi in zip(x.tolist(), y.tolist(), strict=True):
        v = to_float32(Fraction(xi) / f32(s))
        r = round(v) if profile == "onnx" else of.round_half_away(v)
        assert yi == min(max(r + zp, lo), hi)


@SETTINGS
@given(
    st.sampled_from(["int8", "int16", "uint8", "int32"]),
    st.sampled_from(["int8", "int16"]),
    st.sampled_from(["tflm", "cmsis-nn-single", "litert-ref", "onnx"]),
    st.integers(1, 4),
    st.integers(0, 2**32 - 1),
)
def test_requantize_ops_match_oracle(idt, out, profile, channels, seed) -> None:
    rng = np.random.default_rng(seed)
    lo, hi = RANGES[out]
    ilo, ihi = RANGES.get(idt, (-(2**31), 2**31 - 1))
    s_in = np.float32(2.0 ** rng.uniform(-10, 0, channels))
    s_out = float(np.float32(float(s_in.max()) * 2.0 ** rng.uniform(-4, 4)))
    if idt == "int32":
        s_out = float(np.float32(float(s_in.max()) * 2.0 ** rng.uniform(8, 20)))
    z_in = rng.integers(max(ilo, -1000), min(ihi, 1000) + 1, channels)
    zo = int(rng.integers(lo, hi + 1))
    op = "REQUANTIZE" if idt == "int32" or channels > 1 else "QUANTIZE"
    p = prepare_quantize(
        input_dtype=idt,
        output_dtype=out,
        profile=PROFILES[profile],
        input_scale=s_in if channels > 1 else s_in[0],
        input_zero_point=z_in if channels > 1 else int(z_in[0]),
        output_scale=s_out,
        output_zero_point=zo,
        axis=-1 if channels > 1 else None,
        op=op,
    )
    x = rng.integers(ilo, ihi + 1, (5, channels), endpoint=False).astype(idt)
    y = quantize(x, p)
    for (r, c), v in np.ndenumerate(x):
        d = int(v) - int(z_in[c])
        if profile == "onnx":
            dq = to_float32(Fraction(to_float32(Fraction(d))) * f32(s_in[c]))
            want = round(to_float32(dq / f32(s_out)))
        else:
            rounding = PROFILES[profile].rounding
            m, s = of.quantize_multiplier(float(s_in[c]) / float(np.float32(s_out)), rounding)
            want = of.multiply_by_quantized_multiplier(of.wrap(d), m, s, rounding)
        assert int(y[r, c]) == min(max(want + zo, lo), hi)


def test_dequantize_is_one_rounding_of_exact_product() -> None:
    rng = np.random.default_rng(4)
    for idt in ("int8", "int16", "uint8"):
        for _ in range(50):
            s = float(np.float32(2.0 ** rng.uniform(-20, 4) * rng.uniform(1, 2)))
            zp = int(rng.integers(*RANGES[idt], endpoint=True))
            x = np.arange(*RANGES[idt], dtype=np.int64)[:: 1 if idt != "int16" else 97]
            x = x.astype(idt)
            p = prepare_quantize(
                input_dtype=idt,
                output_dtype="float32",
                profile=PROFILES["tflm"],
                input_scale=s,
                input_zero_point=zp,
                op="DEQUANTIZE",
            )
            y = quantize(x, p)
            want = [float(to_float32(Fraction(int(v) - zp) * f32(s))) for v in x]
            assert y.dtype == np.float32 and y.tolist() == want


def test_quantize_refuses_what_the_peer_leaves_undefined() -> None:
    p = prepare_quantize(
        input_dtype="float32",
        output_dtype="int8",
        profile=PROFILES["tflm"],
        output_scale=1.0,
        output_zero_point=0,
    )
    for bad in (np.nan, np.inf, 3e9):
        with pytest.raises(InvalidDataError, match="index 1"):
            quantize(np.array([0.0, bad], np.float32), p)
    onnx = prepare_quantize(
        input_dtype="float32",
        output_dtype="int8",
        profile=PROFILES["onnx"],
        output_scale=1.0,
        output_zero_point=0,
    )
    assert quantize(np.array([3e9, -3e9], np.float32), onnx).tolist() == [127, -128]
    with pytest.raises(UnsupportedError):
        prepare_quantize(input_dtype="float32", output_dtype="float32", profile=PROFILES["tflm"])


# --- graph adapters -----------------------------------------------------------------------------


def test_graph_ops_run_the_kernels() -> None:
    rng = np.random.default_rng(8)
    w = rng.integers(-8, 8, (4, 6)).astype(np.int8)
    t = {
        "x": TensorInfo("x", "float32", (3, 6)),
        "q": TensorInfo("q", "int8", (3, 6), 0.05, 3),
        "w": TensorInfo("w", "int4", (4, 6), np.float32([0.1, 0.2, 0.3, 0.4]), 0, axis=0, data=w),
        "b": TensorInfo("b", "int32", (4,), 0.005, 0, data=np.arange(4, dtype=np.int32)),
        "h": TensorInfo("h", "int8", (3, 4), 0.2, -1),
        "r": TensorInfo("r", "int16", (3, 4), 0.001, 0),
        "m": TensorInfo("m", "int16", (3, 3), 0.05, 0),
        "y": TensorInfo("y", "float32", (3, 3)),
    }
    nodes = [
        Node("QUANTIZE", ("x",), ("q",)),
        Node("FULLY_CONNECTED", ("q", "w", "b"), ("h",), {"activation": "RELU"}),
        Node("REQUANTIZE", ("h",), ("r",)),
        Node("BATCH_MATMUL", ("r", "r"), ("m",), {"adj_y": True}),
        Node("DEQUANTIZE", ("m",), ("y",)),
    ]
    g = Graph(t, nodes, ["x"], ["y"])
    x = rng.standard_normal((3, 6)).astype(np.float32)
    prog = Program(g, "tflm")
    (y,) = prog.run([x])
    # The same chain through the kernel functions.
    qp = prepare_quantize(
        input_dtype="float32",
        output_dtype="int8",
        profile=PROFILES["tflm"],
        output_scale=0.05,
        output_zero_point=3,
    )
    q = quantize(x, qp)
    fp_ = prepare_fully_connected(
        w,
        np.arange(4, dtype=np.int32),
        input_dtype="int8",
        input_scale=0.05,
        input_zero_point=3,
        weights_scale=np.float32([0.1, 0.2, 0.3, 0.4]),
        weights_zero_point=0,
        output_dtype="int8",
        output_scale=0.2,
        output_zero_point=-1,
        profile=PROFILES["tflm"],
        activation="RELU",
        weights_dtype="int4",
    )
    h = fully_connected(q, fp_)
    assert h.min() >= -1  # RELU: codes at or above the zero point
    rp = prepare_quantize(
        input_dtype="int8",
        output_dtype="int16",
        profile=PROFILES["tflm"],
        input_scale=0.2,
        input_zero_point=-1,
        output_scale=0.001,
    )
    r = quantize(h, rp)
    bp = prepare_batch_matmul(
        dtype="int16",
        lhs_scale=0.001,
        lhs_zero_point=0,
        rhs_scale=0.001,
        rhs_zero_point=0,
        output_scale=0.05,
        output_zero_point=0,
        profile=PROFILES["tflm"],
        adj_y=True,
    )
    m = batch_matmul(r, r, bp)
    dp = prepare_quantize(
        input_dtype="int16",
        output_dtype="float32",
        profile=PROFILES["tflm"],
        input_scale=0.05,
        op="DEQUANTIZE",
    )
    assert np.array_equal(y.view(np.int32), quantize(m, dp).view(np.int32))


def test_graph_errors_name_the_node() -> None:
    t = {
        "x": TensorInfo("x", "int8", (2, 3), 0.1, 0),
        "w": TensorInfo("w", "int8", (4, 3), 0.1, 0),  # not constant
        "y": TensorInfo("y", "int8", (2, 4), 0.1, 0),
    }
    g = Graph(t, [Node("FULLY_CONNECTED", ("x", "w"), ("y",), name="fc0")], ["x", "w"], ["y"])
    with pytest.raises(RefqError, match="fc0"):
        Program(g, "tflm")
