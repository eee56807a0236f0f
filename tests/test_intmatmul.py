"""refq.intmatmul against Python-int matrix products (exact arithmetic, not refq itself)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.errors import ExactnessError, ShapeError, UnsupportedError
from refq.intmatmul import (
    FLOAT32_EXACT,
    FLOAT64_EXACT,
    _compute,
    int_matmul,
    int_matmul_u8s8_sat16,
    plan_int_matmul,
    select_path,
)

INT_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


def py_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numpy.matmul shape rules on Python ints (object arrays): exact, independent of refq."""
    return np.asarray(np.matmul(a.astype(object), b.astype(object)), dtype=object)


def wrap32(x: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda v: ((int(v) + 2**31) % 2**32) - 2**31, otypes=[object])(x)


def as_int(x: np.ndarray) -> np.ndarray:
    return np.vectorize(int, otypes=[object])(x)


def exact_equal(got: np.ndarray, want: np.ndarray) -> bool:
    return got.shape == want.shape and bool(np.all(as_int(got) == want))


@st.composite
def int_array(draw, dtype, shape, lo=None, hi=None):
    info = np.iinfo(dtype)
    lo = int(info.min) if lo is None else lo
    hi = int(info.max) if hi is None else hi
    # Half of the draws are concentrated on the dtype's extremes.
    extremes = st.sampled_from([lo, hi, lo + 1, hi - 1, 0])
    elem = st.one_of(st.integers(lo, hi), extremes)
    n = int(np.prod(shape))
    return np.array(draw(st.lists(elem, min_size=n, max_size=n)), dtype=dtype).reshape(shape)


@st.composite
def matmul_operands(draw, dtypes=INT_DTYPES):
    m, k, n = (draw(st.integers(1, 5)) for _ in range(3))
    k = draw(st.sampled_from([0, k])) if draw(st.booleans()) else k
    batch = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    a_batch = [draw(st.sampled_from([d, 1])) for d in batch]
    b_batch = [draw(st.sampled_from([d, 1])) for d in batch]
    a_batch = a_batch[draw(st.integers(0, len(a_batch))) :]
    a_shape = (k,) if draw(st.integers(0, 5)) == 0 else (*a_batch, m, k)
    b_shape = (k,) if draw(st.integers(0, 5)) == 0 else (*b_batch, k, n)
    a = draw(int_array(draw(st.sampled_from(dtypes)), a_shape))
    b = draw(int_array(draw(st.sampled_from(dtypes)), b_shape))
    return a, b


@settings(max_examples=300, deadline=None)
@given(matmul_operands())
def test_int64_exact_or_refused(ab):
    a, b = ab
    want = py_matmul(a, b)
    bound = (
        (a.shape[-1])
        * max(abs(int(v)) for v in [0, *a.ravel()])
        * max(abs(int(v)) for v in [0, *b.ravel()])
    )
    if bound >= 2**63:
        with pytest.raises(ExactnessError):
            int_matmul(a, b, accumulate="int64")
        return
    got = int_matmul(a, b, accumulate="int64")
    assert got.dtype == np.int64
    assert exact_equal(got, want)


@settings(max_examples=300, deadline=None)
@given(matmul_operands())
def test_int32_wrap_is_exact_modulo_2_32(ab):
    a, b = ab
    got = int_matmul(a, b, accumulate="int32_wrap")
    assert got.dtype == np.int32
    assert exact_equal(got, wrap32(py_matmul(a, b)))


@settings(max_examples=300, deadline=None)
@given(matmul_operands())
def test_int32_returns_exact_or_raises(ab):
    a, b = ab
    want = py_matmul(a, b)
    if plan_int_matmul(a, b).bound >= 2**63:
        # int64 partial sums are not provably exact: refused before computing.
        with pytest.raises(ExactnessError, match="2\\^63"):
            int_matmul(a, b)
        return
    if not all(-(2**31) <= int(v) < 2**31 for v in np.ravel(want)):
        with pytest.raises(ExactnessError, match="does not fit in int32"):
            int_matmul(a, b)
        return
    got = int_matmul(a, b)
    assert got.dtype == np.int32
    assert exact_equal(got, want)


@settings(max_examples=200, deadline=None)
@given(matmul_operands(dtypes=[np.int8, np.uint8, np.int16, np.uint16, np.int32]))
def test_plan_bound_and_path(ab):
    a, b = ab
    plan = plan_int_matmul(a, b)
    max_a = max([0, *(abs(int(v)) for v in a.ravel())])
    max_b = max([0, *(abs(int(v)) for v in b.ravel())])
    assert plan.bound == a.shape[-1] * max_a * max_b
    want = "float32" if plan.bound < 2**24 else "float64" if plan.bound < 2**53 else "int64"
    assert plan.path == want
    assert plan.out_shape == np.matmul(np.zeros(a.shape), np.zeros(b.shape)).shape
    # The dtype bound never chooses a cheaper path than the data bound.
    order = ["float32", "float64", "int64"]
    assert order.index(plan_int_matmul(a, b, bounds="dtype").path) >= order.index(plan.path)


def test_select_path_boundaries():
    assert select_path(0) == "float32"
    assert select_path(FLOAT32_EXACT - 1) == "float32"
    assert select_path(FLOAT32_EXACT) == "float64"
    assert select_path(FLOAT64_EXACT - 1) == "float64"
    assert select_path(FLOAT64_EXACT) == "int64"


@pytest.mark.parametrize(
    ("x", "y", "cheaper", "chosen"),
    [
        # sum = 2^24 + 1: float32 rounds it to 2^24; bound 2 * 2^12 * 2^12 = 2^25.
        (2**12, 2**12, "float32", "float64"),
        # sum = 2^53 + 1: float64 rounds it to 2^53; bound 2 * 2^27 * 2^26 = 2^54.
        (2**27, 2**26, "float64", "int64"),
    ],
)
def test_path_boundary_is_needed(x, y, cheaper, chosen):
    """Just past each boundary the cheaper float path really loses the exact sum."""
    a = np.array([[x, 1]], dtype=np.int64)
    b = np.array([[y], [1]], dtype=np.int64)
    exact = x * y + 1
    plan = plan_int_matmul(a, b)
    assert plan.path == chosen
    assert int(_compute(a, b, plan, cheaper)[0, 0]) != exact
    assert int(int_matmul(a, b, accumulate="int64")[0, 0]) == exact


@pytest.mark.parametrize("k", [1, 2, 1023, 1024, 1025])
def test_int8_extremes_at_the_float32_boundary(k):
    # int8 x int8 at -128 * -128: K = 1024 reaches exactly 2^24 and must leave float32.
    a = np.full((2, k), -128, dtype=np.int8)
    b = np.full((k, 3), -128, dtype=np.int8)
    plan = plan_int_matmul(a, b)
    assert plan.path == ("float32" if k * 2**14 < 2**24 else "float64")
    assert np.array_equal(int_matmul(a, b, accumulate="int64"), np.full((2, 3), k * 2**14))


def test_int64_extremes_wrap():
    a = np.array([[np.iinfo(np.int64).min, np.iinfo(np.int64).max]], dtype=np.int64)
    b = np.array([[np.iinfo(np.int64).max], [3]], dtype=np.int64)
    want = wrap32(py_matmul(a, b))
    assert plan_int_matmul(a, b).path == "int64"
    assert exact_equal(int_matmul(a, b, accumulate="int32_wrap"), want)
    with pytest.raises(ExactnessError, match="2\\^63"):
        int_matmul(a, b, accumulate="int64")
    u = np.array([[2**64 - 1, 2**63]], dtype=np.uint64)
    assert exact_equal(int_matmul(u, b, accumulate="int32_wrap"), wrap32(py_matmul(u, b)))


def test_int32_overflow_is_detected_and_named():
    a = np.full((1, 2), 2**15, dtype=np.int32)
    b = np.full((2, 1), 2**15, dtype=np.int32)  # 2 * 2^30 = 2^31: one past INT32_MAX
    with pytest.raises(ExactnessError, match="2147483648"):
        int_matmul(a, b)
    assert int(int_matmul(a, b, accumulate="int32_wrap")[0, 0]) == -(2**31)
    assert int(int_matmul(a, b, accumulate="int64")[0, 0]) == 2**31


def test_large_seeded_products_all_paths():
    rng = np.random.default_rng(1234)
    for scale, path in [(1, "float32"), (2**10, "float64"), (2**35, "int64")]:
        a = rng.integers(-128, 128, (3, 17, 300)) * scale
        b = rng.integers(-128, 128, (300, 9))
        assert plan_int_matmul(a, b).path == path
        assert exact_equal(int_matmul(a, b, accumulate="int64"), py_matmul(a, b))


def test_bad_operands():
    with pytest.raises(ShapeError, match="inner dimensions"):
        int_matmul(np.zeros((2, 3), np.int8), np.zeros((4, 2), np.int8))
    with pytest.raises(ShapeError, match="broadcast"):
        int_matmul(np.zeros((2, 2, 3), np.int8), np.zeros((3, 3, 2), np.int8))
    with pytest.raises(ShapeError, match="1-D"):
        int_matmul(np.int8(3), np.zeros((1, 2), np.int8))
    with pytest.raises(UnsupportedError, match="float32"):
        int_matmul(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.int8))
    with pytest.raises(UnsupportedError, match="accumulate"):
        int_matmul(np.zeros((2, 2), np.int8), np.zeros((2, 2), np.int8), accumulate="int16")
    with pytest.raises(UnsupportedError, match="uint8"):
        int_matmul_u8s8_sat16(np.zeros((2, 2), np.int8), np.zeros((2, 2), np.int8))
    with pytest.raises(ShapeError, match="b_zero_point"):
        int_matmul_u8s8_sat16(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.int8), 0, [1, 2])


def py_sat16(a: np.ndarray, b: np.ndarray, za: int, zb: np.ndarray) -> np.ndarray:
    """Definition: pairs (2j, 2j+1) along K clipped to int16, odd K padded with 0, then the
    zero-point corrections from row / column sums; int32 wrap."""
    m, k = a.shape
    n = b.shape[1]
    out = np.empty((m, n), dtype=object)
    for i in range(m):
        for j in range(n):
            s = 0
            for p in range(0, k, 2):
                pair = int(a[i, p]) * int(b[p, j])
                if p + 1 < k:
                    pair += int(a[i, p + 1]) * int(b[p + 1, j])
                s += min(max(pair, -32768), 32767)
            zbj = int(zb[j])
            s -= zbj * sum(int(v) for v in a[i]) + za * sum(int(v) for v in b[:, j])
            s += k * za * zbj
            out[i, j] = ((s + 2**31) % 2**32) - 2**31
    return out


@settings(max_examples=250, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(0, 9),
    st.integers(1, 4),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_u8s8_sat16_definition(m, k, n, per_column, seed):
    rng = np.random.default_rng(seed)
    # Biased to the extremes so that pairs saturate often.
    a = rng.choice(np.array([0, 1, 127, 128, 254, 255], np.uint8), (m, k))
    a = np.where(rng.random((m, k)) < 0.5, a, rng.integers(0, 256, (m, k))).astype(np.uint8)
    b = rng.choice(np.array([-128, -127, -1, 0, 1, 126, 127], np.int8), (k, n))
    b = np.where(rng.random((k, n)) < 0.5, b, rng.integers(-128, 128, (k, n))).astype(np.int8)
    za = int(rng.integers(0, 256))
    zb = rng.integers(-128, 128, n) if per_column else np.full(n, rng.integers(-128, 128))
    got = int_matmul_u8s8_sat16(a, b, za, zb if per_column else int(zb[0]))
    assert got.dtype == np.int32
    assert exact_equal(got, py_sat16(a, b, za, zb))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), st.integers(1, 40), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_u8s8_sat16_is_exact_with_7bit_weights(m, k, n, seed):
    # |255 * 64 * 2| = 32640 < 2^15: no pair saturates, so the emulation equals the exact product.
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (2, m, k)).astype(np.uint8)
    b = rng.integers(-64, 64, (k, n)).astype(np.int8)
    za, zb = int(rng.integers(0, 256)), int(rng.integers(-64, 64))
    want = py_matmul(a.astype(np.int64) - za, b.astype(np.int64) - zb)
    assert exact_equal(int_matmul_u8s8_sat16(a, b, za, zb), wrap32(want))


def test_u8s8_sat16_saturates_full_range_pairs():
    a = np.full((1, 5), 255, dtype=np.uint8)
    b = np.array([[127], [127], [-128], [-128], [127]], dtype=np.int8)
    # pairs: 255*254 -> 32767, 255*-256 -> -32768, odd tail 255*127 = 32385 (never saturates)
    assert int(int_matmul_u8s8_sat16(a, b)[0, 0]) == 32767 - 32768 + 255 * 127
