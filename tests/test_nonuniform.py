"""Ternary (TWN), binary, power-of-two, k-means and NF4 against Fraction definitions."""

from __future__ import annotations

from fractions import Fraction
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq import strategies as rst
from refq.errors import InvalidDataError, QuantSpecError
from refq.nonuniform import (
    NF4_TABLE,
    binary,
    bits_per_weight,
    code_width,
    kmeans_codebook,
    lookup_dequantize,
    nf4,
    pack_binary,
    pack_codes,
    pack_ternary,
    power_of_two,
    ternary,
    unpack_binary,
    unpack_codes,
    unpack_ternary,
)
from refq.oracle import quantize as oracle

PROPERTY = settings(max_examples=200, deadline=None)

WEIGHTS = st.one_of(
    rst.float32_values(-1e4, 1e4),
    st.sampled_from([0.5, -0.5, 1.0, -1.0, 0.7, 0.0]),  # repeated values make exact ties likely
)


@st.composite
def weight_arrays(draw, max_side: int = 6):
    shape = draw(rst.array_shapes(1, 3, max_side))
    n = int(np.prod(shape))
    vals = draw(st.lists(WEIGHTS, min_size=n, max_size=n))
    return np.array(vals, dtype=np.float32).reshape(shape)


def per_group(w: np.ndarray, axis: int | None):
    """(index tuple of the group's parameter, flat C-order values) for each group."""
    if axis is None:
        yield (), w.reshape(-1)
        return
    for c in range(w.shape[axis]):
        yield (c,), np.take(w, c, axis=axis).reshape(-1)


@PROPERTY
@given(w=weight_arrays(), data=st.data())
def test_ternary_equals_twn_definition(w, data):
    axis = data.draw(st.one_of(st.none(), st.integers(-w.ndim, w.ndim - 1)))
    t = ternary(w, axis=axis)
    assert t.codes.dtype == np.int8 and t.codes.shape == w.shape
    codes = np.moveaxis(t.codes, axis, 0) if axis is not None else t.codes[None]
    for (idx, vals), got_codes in zip(per_group(w, axis), codes, strict=True):
        want_codes, alpha = oracle.ternary_ref([float(v) for v in vals])
        assert got_codes.reshape(-1).tolist() == want_codes
        assert Fraction(float(t.scale[idx])) == alpha
    deq = t.dequantize()
    assert np.array_equal(deq, t.codes * (t.scale if axis is None else np.expand_dims(
        t.scale, [i for i in range(w.ndim) if i != axis % w.ndim])))  # fmt: skip


@PROPERTY
@given(w=weight_arrays(), data=st.data())
def test_binary_equals_definition(w, data):
    axis = data.draw(st.one_of(st.none(), st.integers(-w.ndim, w.ndim - 1)))
    b = binary(w, axis=axis)
    codes = np.moveaxis(b.codes, axis, 0) if axis is not None else b.codes[None]
    for (idx, vals), got_codes in zip(per_group(w, axis), codes, strict=True):
        want_codes, alpha = oracle.binary_ref([float(v) for v in vals])
        assert got_codes.reshape(-1).tolist() == want_codes
        assert Fraction(float(b.scale[idx])) == alpha


def test_ternary_threshold_is_strict_and_exact():
    # mean|w| = 10, delta = 7 exactly: an element equal to delta is dropped (|w| > delta).
    t = ternary(np.array([7.0, -13.0], np.float32))
    assert t.codes.tolist() == [0, -1] and float(t.scale) == 13.0
    # Sum exactly 20, delta exactly 7: the float32 just above 7 is kept.
    w = np.array([np.float32(7.0000005), 12.9999995], np.float32)
    assert Fraction(7, 10) * sum(Fraction(float(v)) for v in w) / 2 < Fraction(float(w[0]))
    assert ternary(w).codes.tolist() == [1, 1]


@PROPERTY
@given(w=weight_arrays(), bits=st.integers(2, 6), rounding=st.sampled_from(["log", "linear"]))
def test_power_of_two_equals_definition(w, bits, rounding):
    p = power_of_two(w, bits, rounding=rounding)
    mags = [abs(Fraction(float(v))) for v in w.reshape(-1)]
    top = max(mags)
    emax = oracle.log2_round(top, rounding) if top else 0
    assert int(p.emax) == min(emax, 127)
    levels = (1 << (bits - 1)) - 1
    deq = p.dequantize().reshape(-1)
    for v, m, d in zip(w.reshape(-1), mags, deq, strict=True):
        if m == 0:
            assert d == 0
            continue
        e = min(oracle.log2_round(m, rounding), int(p.emax))
        want = 0 if e < int(p.emax) - (levels - 1) else Fraction(2) ** e
        assert Fraction(float(abs(d))) == want
        if want:
            assert np.signbit(d) == np.signbit(v)


def test_power_of_two_code_layout():
    p = power_of_two(np.array([4.0, -2.0, 1.0, 0.5, 0.0, -0.25], np.float32), 3)
    # emax = 2; 3 bits: sign bit 2, magnitude codes 1 -> 2^2, 2 -> 2^1, 3 -> 2^0, 0 -> zero.
    assert int(p.emax) == 2
    assert p.codes.tolist() == [0b001, 0b110, 0b011, 0, 0, 0]


@settings(max_examples=200, deadline=None)
@given(
    w=weight_arrays(max_side=8),
    bits=st.integers(1, 3),
    init=st.sampled_from(["quantile", "random"]),
)
def test_kmeans_assigns_each_weight_to_its_nearest_centroid(w, bits, init):
    cb = kmeans_codebook(w, bits, init=init, seed=3)
    book = [Fraction(float(c)) for c in cb.codebook]
    assert len(book) <= 1 << bits and book == sorted(book)
    assert np.array_equal(cb.dequantize(), cb.codebook[cb.codes])
    for v, c in zip(w.reshape(-1), cb.codes.reshape(-1), strict=True):
        d = [abs(Fraction(float(v)) - b) for b in book]
        assert d[int(c)] == min(d)
        assert int(c) == d.index(min(d))  # ties go to the lower centroid
    # Same inputs, same result (no hidden randomness).
    again = kmeans_codebook(w, bits, init=init, seed=3)
    assert np.array_equal(again.codes, cb.codes) and np.array_equal(again.codebook, cb.codebook)


def test_kmeans_converged_centroids_are_exact_cluster_means():
    rng = np.random.default_rng(0)
    w = rng.standard_normal(3000).astype(np.float32)
    cb = kmeans_codebook(w, 3, iters=1000)
    for j, c in enumerate(cb.codebook):
        members = w[cb.codes == j]
        mean = sum((Fraction(float(v)) for v in members), Fraction(0)) / members.size
        assert Fraction(float(c)) == oracle.to_float32(mean)


def test_kmeans_few_distinct_values_are_reproduced_exactly():
    w = np.array([[0.25, -1.5, 0.25], [3.0, -1.5, 3.0]], np.float32)
    cb = kmeans_codebook(w, 2)
    assert np.array_equal(cb.dequantize(), w)
    per_row = kmeans_codebook(w, 1, axis=0)
    assert per_row.codebook.shape == (2, 2)
    assert np.array_equal(per_row.dequantize()[0], [0.25, -1.5, 0.25])


def _torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """torch.linspace in float32 (what bitsandbytes calls): from both ends toward the middle."""
    a, b = np.float32(start), np.float32(end)
    step = (b - a) / np.float32(steps - 1)
    half = steps // 2
    return np.array(
        [a + step * np.float32(i) if i < half else b - step * np.float32(steps - 1 - i)
         for i in range(steps)],
        dtype=np.float32,
    )  # fmt: skip


def test_nf4_table_is_derived_from_its_published_definition():
    """QLoRA / bitsandbytes create_normal_map(offset=0.9677083, use_extra_value=True)."""
    ppf = NormalDist().inv_cdf
    offset = 0.9677083
    pos = [ppf(float(p)) for p in _torch_linspace_f32(offset, 0.5, 9)[:-1]]
    neg = [-ppf(float(p)) for p in _torch_linspace_f32(offset, 0.5, 8)[:-1]]
    v = np.sort(np.array([*pos, 0.0, *neg], dtype=np.float32))
    v = v / v.max()
    assert np.array_equal(v, NF4_TABLE)


@PROPERTY
@given(w=weight_arrays(max_side=9), block=st.integers(1, 40))
def test_nf4_picks_the_nearest_entry_of_each_normalized_block(w, block):
    q = nf4(w, block_size=block)
    flat = w.reshape(-1)
    table = [Fraction(float(t)) for t in NF4_TABLE]
    for b, start in enumerate(range(0, flat.size, block)):
        blk = flat[start : start + block]
        absmax = max(abs(float(v)) for v in blk)
        assert float(q.scale[b]) == absmax
        for i, v in enumerate(blk):
            x = Fraction(float(np.float32(v / np.float32(absmax)))) if absmax else Fraction(0)
            d = [abs(x - t) for t in table]
            assert int(q.codes.reshape(-1)[start + i]) == d.index(min(d))
    want = (NF4_TABLE[q.codes.reshape(-1)] * np.repeat(q.scale, block)[: flat.size]).astype(
        np.float32
    )
    assert np.array_equal(q.dequantize().reshape(-1), want)


def test_bits_per_weight_and_code_packing():
    assert bits_per_weight(4096, 4, n_scales=64) == 4.5  # NF4, blocks of 64, float32 absmax
    assert bits_per_weight(1024, 2, n_scales=1) == 2 + 32 / 1024  # ternary in int2
    assert bits_per_weight(256, 3, codebook_entries=8) == 3 + 8 * 32 / 256
    rng = np.random.default_rng(1)
    t = ternary(rng.standard_normal((5, 7)).astype(np.float32), axis=0)
    packed = pack_ternary(t.codes)
    assert packed.size == 9  # ceil(35 * 2 / 8)
    assert np.array_equal(unpack_ternary(packed, t.codes.shape), t.codes)
    q = nf4(rng.standard_normal((4, 33)).astype(np.float32), block_size=16)
    packed = pack_codes(q.codes, 4)
    assert packed.size == 66 and np.array_equal(unpack_codes(packed, (4, 33), 4), q.codes)
    for bits in (1, 3, 7, 12):
        k = kmeans_codebook(rng.standard_normal(37).astype(np.float32), bits)
        buf = pack_codes(k.codes, bits)
        assert buf.size == -(-37 * code_width(bits) // 8)
        assert np.array_equal(unpack_codes(buf, (37,), bits), k.codes)
    b = binary(rng.standard_normal(13).astype(np.float32))
    assert pack_binary(b.codes).size == 2
    assert np.array_equal(unpack_binary(pack_binary(b.codes), (13,)), b.codes)


def test_bad_inputs_name_the_value():
    with pytest.raises(InvalidDataError, match=r"nan at index \(1,\)"):
        ternary(np.array([1.0, np.nan], np.float32))
    with pytest.raises(InvalidDataError, match="binary code 0 at flat index 1"):
        pack_binary(np.array([1, 0], np.int8))
    with pytest.raises(InvalidDataError, match="0b10"):
        unpack_ternary(np.array([0b10], np.uint8), (1,))
    with pytest.raises(QuantSpecError, match=r"k must be in 1\.\.4 for 2 bits, got 5"):
        kmeans_codebook(np.ones(4, np.float32), 2, k=5)
    with pytest.raises(InvalidDataError, match="code 4 at flat index 0 is outside a codebook of 4"):
        lookup_dequantize(np.array([4]), np.zeros(4))
    with pytest.raises(QuantSpecError, match="block_size must be an integer >= 1, got 0"):
        nf4(np.ones(4, np.float32), block_size=0)
