"""The compiled run paths (refq.kernels.fastpath) and the NumPy paths they stand in for, both
against the scalar oracles: Python-int MultiplyByQuantizedMultiplier / gemmlowp reciprocal
(refq.oracle.fixedpoint) and the kernel tests' Python-int restatements of ATTENTION, ROPE, the
integer norms and ADD / SUB. The kernels' own tests run the default (compiled) path; this file
adds the NumPy paths (``fast=False``), the BLAS branch of ATTENTION, int16 ADD / SUB of equal
shapes, the exhaustive pair tables and the fall-backs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.errors import ExactnessError
from refq.graph import Program
from refq.kernels import attention as at
from refq.kernels import fastpath, norms
from refq.kernels import rope as rp
from refq.kernels import silu as sl
from refq.kernels.elementwise import binary, prepare_binary
from refq.oracle import fixedpoint as of
from refq.profiles import get_profile
from tests.test_kernels_attention import attention_cases, oracle_attention, oracle_rope, rope_cases
from tests.test_kernels_elementwise import binary_oracle, f32
from tests.test_kernels_norms import configs, expected, prepare

PROPERTY = settings(max_examples=200, deadline=None)
INT32 = st.integers(-(2**31), 2**31 - 1)


@PROPERTY
@given(
    st.lists(INT32, min_size=1, max_size=8),
    st.integers(0, 2**31 - 1),
    st.integers(-31, 30),
    st.sampled_from(["double", "single"]),
)
def test_mbqm_equals_the_scalar_oracle(xs, m, shift, rounding) -> None:
    for x in [*xs, -(2**31), 2**31 - 1]:
        got = fastpath.mbqm(x, m, shift, rounding == "single")
        assert got == of.multiply_by_quantized_multiplier(x, m, shift, rounding)


@PROPERTY
@given(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=16))
def test_reciprocal_equals_the_scalar_oracle(values) -> None:
    for a in [*values, 0, 2**31 - 1, 2**30]:
        assert fastpath.recip_q31(a) == of.one_over_one_plus_x_for_x_in_0_1(a)


def _attention_params(graph):
    return Program(graph, "tflm").steps[0][2]


def _run_attention(graph, q, k, v, fast: bool):
    p = _attention_params(graph)
    node = graph.nodes[0]
    caches = [np.full(graph.tensors[n].shape, graph.tensors[n].scalar_zero_point(), np.int8)
              for n in node.inputs[4:]]  # fmt: skip
    return at.attention(q, k, v, 0, *caches, p, fast=fast), caches


@PROPERTY
@given(attention_cases(max_t=5))
def test_attention_blas_branch_and_numpy_path_equal_the_oracle(case) -> None:
    graph, (q, k, v) = case
    want = oracle_attention(graph, q, k, v)
    saved = fastpath.SMALL_T
    fastpath.SMALL_T = 0  # every sequence through int_matmul + the compiled softmax
    try:
        blas, caches_blas = _run_attention(graph, q, k, v, fast=True)
    finally:
        fastpath.SMALL_T = saved
    numpy_out, caches_np = _run_attention(graph, q, k, v, fast=False)
    assert blas.tolist() == want
    assert numpy_out.tolist() == want
    assert all(np.array_equal(a, b) for a, b in zip(caches_blas, caches_np, strict=True))


def _long_row_graph(long_rows: str):
    from tests.test_kernels_attention import _attention_graph

    quant = [(0.05, 0)] * 6
    attrs = {"score_scale": 0.001, "score_dtype": "int8", "long_rows": long_rows}
    return _attention_graph(2, 1, 8, 700, quant, attrs)


def test_attention_long_rows_safe_and_raise() -> None:
    """600 equal keys: the Q12.19 sum of exponentials reaches 2^28, where TFLite is undefined.
    ``safe``: both paths give the same defined outputs; ``raise``: the compiled path defers
    to the NumPy path's error."""
    rng = np.random.default_rng(3)
    t = 600
    q = rng.integers(-3, 4, (t, 16)).astype(np.int8)
    k = np.ones((t, 8), np.int8)
    v = rng.integers(-128, 128, (t, 8)).astype(np.int8)
    g = _long_row_graph("safe")
    fast_out, _ = _run_attention(g, q, k, v, fast=True)
    slow_out, _ = _run_attention(g, q, k, v, fast=False)
    assert np.array_equal(fast_out, slow_out)
    with pytest.raises(ExactnessError, match="undefined"):
        _run_attention(_long_row_graph("raise"), q, k, v, fast=True)


@PROPERTY
@given(rope_cases())
def test_rope_numpy_path_equals_the_oracle(case) -> None:
    x, pos0, p = case
    want = oracle_rope(x, pos0, p)
    assert rp.rope(x, pos0, p, fast=False).tolist() == want
    assert rp.rope(x, pos0, p).tolist() == want


@settings(max_examples=220, deadline=None)
@given(configs())
def test_norm_numpy_path_equals_the_oracle(c) -> None:
    p = prepare(c)
    assert norms.integer_norm(c["x"], p, fast=False).tolist() == expected(c)


@PROPERTY
@given(
    st.sampled_from(["ADD", "SUB"]),
    st.sampled_from(["tflm", "cmsis-nn-single"]),
    st.data(),
)
def test_int16_add_sub_equal_shapes_equal_the_oracle(op, profile, data) -> None:
    scales = st.floats(-12, 2).map(lambda e: f32(2.0**e))
    s1, s2 = data.draw(scales), data.draw(scales)
    so = f32(max(s1, s2) * data.draw(st.floats(0.25, 8.0)))
    z = [data.draw(st.integers(-16000, 16000)) for _ in range(3)]
    n = data.draw(st.integers(1, 12))
    a = data.draw(st.lists(st.integers(-32768, 32767), min_size=n, max_size=n))
    b = data.draw(st.lists(st.integers(-32768, 32767), min_size=n, max_size=n))
    p = prepare_binary(op, "int16", s1, z[0], s2, z[1], so, z[2], get_profile(profile))
    rounding = get_profile(profile).rounding
    want = [binary_oracle(op, "int16", x, y, s1, z[0], s2, z[1], so, z[2], rounding)
            for x, y in zip(a, b, strict=True)]  # fmt: skip
    x1, x2 = np.array(a, np.int16), np.array(b, np.int16)
    assert fastpath.binary16(x1, x2, p).tolist() == want
    assert binary(x1, x2, p).tolist() == want
    assert binary(x1, x2, p, fast=False).tolist() == want


def test_pair_tables_hold_every_code_pair(checked) -> None:
    """The int8 ADD / MUL and SWIGLU tables equal their NumPy kernels on all 65,536 pairs (and
    the oracle on a sample), and the lookup broadcasts like the kernel."""
    codes = np.arange(-128, 128, dtype=np.int8)
    a, b = np.repeat(codes, 256), np.tile(codes, 256)
    prof = get_profile("tflm")
    for op, so in (("ADD", 0.07), ("MUL", 0.02)):
        p = prepare_binary(op, "int8", 0.05, 3, 0.03, -7, so, 5, prof)
        assert np.array_equal(binary(a, b, p), binary(a, b, p, fast=False))
        for i in range(0, 65536, 4099):
            want = binary_oracle(op, "int8", int(a[i]), int(b[i]), f32(0.05), 3, f32(0.03), -7,
                                 f32(so), 5)  # fmt: skip
            assert int(p.pair_table[i]) == want
        col, row = codes[::17, None], codes[None, ::13]
        assert np.array_equal(binary(col, row, p), binary(col, row, p, fast=False))
    sp = sl.prepare_swiglu(0.05, 3, 0.02, -1, 0.01, 0)
    table = sp.pair_table
    assert np.array_equal(table, sl.swiglu(a, b, sp))
    assert np.array_equal(fastpath.pair_lookup(table, a[:999], b[:999]), table[:999])
    checked("int8 pair tables vs NumPy kernels (ADD, MUL, SWIGLU)", 3, 3 * 65536)


@PROPERTY
@given(
    st.integers(1, 8),
    st.integers(1, 40),
    st.integers(1, 700),
    st.integers(0, 2**32 - 1),
)
def test_int8_gemv_equals_python_int_dot_products(rows, n, k, seed) -> None:
    from refq.kernels.fully_connected import _gemv_i8

    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (rows, k)).astype(np.int8)
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    x[0, :] = -128  # the largest products, 2^14, in one row
    w[0, :] = -128
    out = np.empty((rows, n), np.int32)
    _gemv_i8(x, w, out)
    want = [[sum(int(a) * int(b) for a, b in zip(xr, wr, strict=True)) for wr in w] for xr in x]
    assert out.tolist() == want
