"""float8 e4m3fn / e5m2 and float4 e2m1: exhaustive checks against the bit-layout oracle, and
peers ml_dtypes (onnx.reference's casts) and onnxruntime on random data. The ONNX-only formats
(fnuz, float6) are checked in tests/test_onnx_ops.py, float8e8m0 here."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq import floatfmt
from refq.errors import UnsupportedError
from refq.oracle import quantize as oracle
from tests.conftest import require_module

FORMATS = ("float8e4m3fn", "float8e5m2", "float4e2m1")
INF = float("inf")


def finite_values(fmt: str) -> list[Fraction]:
    return sorted(
        {v for v in oracle.minifloat_values(fmt).values() if v is not None and v not in (INF, -INF)}
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_every_code_matches_the_bit_layout(fmt):
    table = floatfmt.code_table(fmt)
    want = oracle.minifloat_values(fmt)
    assert len(table) == len(want) == (256 if fmt.startswith("float8") else 16)
    for code, v in want.items():
        got = float(table[code])
        if v is None:
            assert np.isnan(got), code
        else:
            assert got == v, code
            assert np.signbit(got) == bool(code >> (7 if len(table) == 256 else 3)), code
    assert np.array_equal(floatfmt.decode(np.arange(len(table)), fmt), table, equal_nan=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_code_round_trips(fmt):
    """decode then encode gives the code back (non-saturating, so Inf stays Inf); NaN codes
    come back as the format's canonical NaN."""
    table = floatfmt.code_table(fmt)
    codes = np.arange(len(table))
    back = floatfmt.encode(table, fmt, saturate=False)
    nan = np.isnan(table)
    assert np.array_equal(back[~nan], codes[~nan])
    sign = (codes[nan] >> 7) << 7
    assert np.array_equal(back[nan], 0x7F | sign)
    finite = np.isfinite(table)
    assert np.array_equal(floatfmt.encode(table[finite], fmt, saturate=True), codes[finite])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("saturate", [True, False])
def test_every_midpoint_and_its_neighbours_round_as_rne_says(fmt, saturate, checked):
    """All midpoints between adjacent representable values (and beyond the max), both signs,
    plus the float32 values just below and above each, against the exhaustive-search oracle."""
    vals = finite_values(fmt)
    top = vals[-1]
    ulp_top = top - vals[-2]
    points = [(a + b) / 2 for a, b in itertools.pairwise(vals)]
    points += [top + ulp_top / 2, top + ulp_top, 2 * top]  # overflow boundary and beyond
    xs = []
    for p in points:
        f = np.float32(float(p))
        assert Fraction(float(f)) == p  # every midpoint is a float32
        xs += [f, np.nextafter(f, np.float32(-np.inf)), np.nextafter(f, np.float32(np.inf))]
    x = np.array(xs, dtype=np.float32)
    x = np.concatenate([x, -x, np.array([np.inf, -np.inf, np.nan, -np.nan], np.float32)])
    got = floatfmt.encode(x, fmt, saturate=saturate)
    want = [oracle.encode_minifloat(float(v), fmt, saturate) for v in x]
    assert got.tolist() == want
    checked(f"encode {fmt} saturate={saturate} vs exhaustive RNE oracle", len(want))


@settings(max_examples=300, deadline=None)
@given(
    x=st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=30),
    fmt=st.sampled_from(FORMATS),
    saturate=st.booleans(),
)
def test_encode_equals_oracle_on_any_float32(x, fmt, saturate):
    a = np.array(x, dtype=np.float32)
    got = floatfmt.encode(a, fmt, saturate=saturate)
    assert got.tolist() == [oracle.encode_minifloat(float(v), fmt, saturate) for v in a]


def test_float64_and_float16_inputs_round_once():
    # 1 + 2^-4 + 2^-40 is just above the e4m3fn midpoint between 1 and 1.125; float32 would
    # round it onto the tie first (and then to even, 1.0), float64 keeps it above.
    x = np.array([1 + 2.0**-4 + 2.0**-40], dtype=np.float64)
    assert floatfmt.decode(floatfmt.encode(x, "float8e4m3fn"), "float8e4m3fn")[0] == 1.125
    h = np.array([1.0625, -1.0625], dtype=np.float16)  # exact ties: to even
    assert floatfmt.decode(floatfmt.encode(h, "float8e4m3fn"), "float8e4m3fn").tolist() == [
        1.0,
        -1.0,
    ]


def test_float8e8m0_is_a_decode_only_power_of_two():
    """ONNX's scale type: code c is 2^(c - 127) (2^-127 a float32 subnormal), 0xFF is NaN."""
    table = floatfmt.code_table("float8e8m0")
    assert [Fraction(float(v)) for v in table[:255]] == [
        Fraction(2) ** (c - 127) for c in range(255)
    ]
    assert np.isnan(table[255])
    with pytest.raises(UnsupportedError, match="scale type"):
        floatfmt.encode(np.ones(2, np.float32), "float8e8m0")
    with pytest.raises(UnsupportedError, match="not a minifloat"):
        floatfmt.decode(np.zeros(2, np.uint8), "int8")


def _ml_dtype(fmt: str):
    ml = require_module("ml_dtypes")
    return {
        "float8e4m3fn": ml.float8_e4m3fn,
        "float8e5m2": ml.float8_e5m2,
        "float4e2m1": ml.float4_e2m1fn,
    }[fmt]


def _random_float32(rng, n: int) -> np.ndarray:
    mant = rng.standard_normal(n)
    exp = rng.integers(-30, 30, n).astype(np.float64)
    x = (mant * 2.0**exp).astype(np.float32)
    x[:8] = [0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 3.4e38, -3.4e38]
    return x


@pytest.mark.parametrize("fmt", FORMATS)
def test_encode_matches_ml_dtypes(fmt, checked):
    """ml_dtypes' casts (what onnx.reference uses): astype for non-saturating, clip + astype
    for saturating. Equal codes, except NaN payloads: ml_dtypes writes 0x7E for e5m2 NaN (refq
    0x7F, as onnxruntime) and has no float4 NaN rule (refq: +6, the ONNX float4 page)."""
    t = _ml_dtype(fmt)
    rng = np.random.default_rng(17)
    x = _random_float32(rng, 50000)
    bits = 8 if fmt.startswith("float8") else 4
    vmax = float(np.nanmax(floatfmt.code_table(fmt)[np.isfinite(floatfmt.code_table(fmt))]))
    for saturate in (True, False):
        src = np.clip(x, -vmax, vmax) if saturate else x
        peer = src.astype(t).view(np.uint8) & ((1 << bits) - 1)
        got = floatfmt.encode(x, fmt, saturate=saturate)
        both_nan = np.isnan(floatfmt.decode(got, fmt)) & np.isnan(floatfmt.decode(peer, fmt))
        assert np.array_equal(got[~both_nan], peer[~both_nan])
    checked(f"encode {fmt} vs ml_dtypes", 2, 2 * x.size)


def test_float8_quantize_matches_onnxruntime(checked):
    """onnxruntime QuantizeLinear (scale 1) for e4m3fn and e5m2, saturating and not.

    Known ORT deviations (1.32, x86), both with saturate=0 where the rounded magnitude lands
    just past the top of the format; the ONNX Cast table (and refq, and ml_dtypes) say
    "[x] > FLT_MAX -> NaN (e4m3fn) / Inf (e5m2)":
    - e4m3fn, |x| in [480, 496): ORT gives +-448 (0x7E) instead of NaN;
    - e5m2, |x| in [61440, 65536): ORT gives NaN (0x7F) instead of Inf (0x7C).
    Only those elements may differ; everything else is bit-exact."""
    require_module("onnxruntime")
    from tests.quant_peers import ort_quantize

    rng = np.random.default_rng(23)
    x = _random_float32(rng, 20000)
    edges = [448, 464, 464.00003, 479.9, 480, 495.9, 496, 57344, 61439, 61440, 65535, 65536]
    x = np.concatenate([x, np.array(edges, np.float32), -np.array(edges, np.float32)])
    one = np.array(1.0, np.float32)
    known_ranges = {
        "float8e4m3fn": (480, 496, 0x7E, 0x7F),
        "float8e5m2": (61440, 65536, 0x7F, 0x7C),
    }
    n = 0
    for fmt in ("float8e4m3fn", "float8e5m2"):
        for saturate in (True, False):
            peer = ort_quantize(x, one, np.array(0), fmt, saturate=saturate).reshape(x.shape)
            got = floatfmt.encode(x, fmt, saturate=saturate)
            differ = got != peer
            if not saturate:
                lo, hi, ort_code, onnx_code = known_ranges[fmt]
                known = (np.abs(x) >= lo) & (np.abs(x) < hi)
                assert np.all(known[differ])
                assert np.all(peer[differ] & 0x7F == ort_code)
                assert np.all(got[differ] & 0x7F == onnx_code)
                differ &= ~known
            assert not differ.any(), (fmt, saturate, x[differ][:5])
            n += 1
    checked("float8 QuantizeLinear vs onnxruntime (known saturate=0 deviations excepted)", n,
            n * x.size)  # fmt: skip
