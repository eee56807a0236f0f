"""Exact scalar definitions of refq's quantization (Python ``int`` and ``Fraction`` only).

- :func:`round_fraction`: the five rounding modes on an exact rational.
- :func:`round_to_float`: IEEE round-to-nearest-even of a rational to a binary format of
  ``p`` significand bits (float32: p = 24, emin = -126), subnormals and overflow included.
- :func:`quantize_value` / :func:`dequantize_value`: ONNX QuantizeLinear / DequantizeLinear on
  one value, with the division / product rounded to float32 as ONNX specifies and everything
  else exact.
- :func:`minifloat_values` / :func:`encode_minifloat`: float8 / float4 values from the bit
  layout, and nearest-even encoding by exhaustive search over those values.
- :func:`pack_codes`: sub-byte packing one bit field at a time.
- :func:`ternary_ref`, :func:`binary_ref`, :func:`log2_round`: non-uniform quantizers.

Nothing here imports the code it checks, except :func:`self_check`.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache
from typing import NamedTuple

INF = float("inf")

# (exponent bits, mantissa bits, bias, has inf, has nan) from the format definitions.
MINIFLOATS = {
    "float8e4m3fn": (4, 3, 7, False, True),
    "float8e5m2": (5, 2, 15, True, True),
    "float4e2m1": (2, 1, 1, False, False),
}


def round_fraction(q: Fraction, mode: str, u: Fraction | None = None) -> int:
    """Round ``q`` to an integer: half_even, half_away, half_up, floor, or stochastic
    (``floor(q + u)`` for a given ``u`` in [0, 1))."""
    q = Fraction(q)
    n = q.numerator // q.denominator  # floor
    frac = q - n
    half = Fraction(1, 2)
    if mode == "floor":
        return n
    if mode == "half_up":
        return n + 1 if frac >= half else n
    if mode == "half_even":
        if frac > half or (frac == half and n % 2 == 1):
            return n + 1
        return n
    if mode == "half_away":
        if frac == half:
            return n + 1 if q > 0 else n
        return n + 1 if frac > half else n
    if mode == "stochastic":
        assert u is not None and 0 <= u < 1
        s = q + Fraction(u)
        return s.numerator // s.denominator
    raise ValueError(f"unknown mode {mode!r}")


def _floor_log2(a: Fraction) -> int:
    """``floor(log2(a))`` for ``a > 0``."""
    e = a.numerator.bit_length() - a.denominator.bit_length()
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    return e


def round_to_float(q: Fraction, p: int = 24, emin: int = -126, emax: int = 127) -> Fraction | float:
    """Round ``q`` to the nearest value of a binary format with ``p`` significand bits (ties to
    even significand); ``+-inf`` when the rounded magnitude exceeds the largest finite value."""
    q = Fraction(q)
    if q == 0:
        return Fraction(0)
    sign = -1 if q < 0 else 1
    a = abs(q)
    e = max(_floor_log2(a), emin)
    ulp = Fraction(2) ** (e - (p - 1))
    n = round_fraction(a / ulp, "half_even")
    v = n * ulp
    if v > (2 - Fraction(2) ** (1 - p)) * Fraction(2) ** emax:
        return sign * INF
    return sign * v


def to_float32(q: Fraction) -> Fraction | float:
    return round_to_float(q, 24, -126, 127)


def quantize_value(
    x: float,
    scale: float,
    zero_point: int,
    qmin: int,
    qmax: int,
    mode: str = "half_even",
    u: Fraction | None = None,
    division: str = "float32",
) -> int:
    """ONNX QuantizeLinear of one value: ``t = fl(x / scale)`` (``division`` = "float32",
    "float64" or "exact"), ``q = clamp(round(t) + zero_point, qmin, qmax)``; ``x`` finite."""
    t = Fraction(x) / Fraction(scale)
    if division == "float32":
        t = to_float32(t)
    elif division == "float64":
        t = round_to_float(t, 53, -1022, 1023)
    if t in (INF, -INF):
        return qmax if t > 0 else qmin
    r = round_fraction(t, mode, u) + zero_point
    return min(max(r, qmin), qmax)


def dequantize_value(q: int, scale: float, zero_point: int) -> Fraction | float:
    """ONNX DequantizeLinear of one code: ``fl32((q - zero_point) * scale)``."""
    return to_float32(Fraction(q - zero_point) * Fraction(scale))


# -- float8 / float4 --------------------------------------------------------------------------
def minifloat_values(fmt: str) -> dict[int, Fraction | float]:
    """Value of every code: Fractions for finite codes, +-inf, or ``None`` for NaN codes."""
    ebits, mbits, bias, has_inf, _ = MINIFLOATS[fmt]
    out: dict[int, Fraction | float] = {}
    top = (1 << ebits) - 1
    for code in range(1 << (1 + ebits + mbits)):
        s = -1 if code >> (ebits + mbits) else 1
        e = (code >> mbits) & top
        m = code & ((1 << mbits) - 1)
        if fmt == "float8e4m3fn" and e == top and m == (1 << mbits) - 1:
            out[code] = None  # type: ignore[assignment]
        elif has_inf and e == top:
            out[code] = s * INF if m == 0 else None  # type: ignore[assignment]
        elif e == 0:
            out[code] = s * Fraction(m) * Fraction(2) ** (1 - bias - mbits)
        else:
            out[code] = s * Fraction((1 << mbits) + m) * Fraction(2) ** (e - bias - mbits)
    return out


def encode_minifloat(x: float, fmt: str, saturate: bool = True) -> int:
    """Code of ``x`` under the ONNX Cast rules: nearest finite value by exhaustive search, ties
    to the even code; overflow (the rounded value beyond the max finite) saturates or becomes
    Inf / NaN; NaN -> the format's NaN (0x7F | sign) or +max for float4."""
    import math

    ebits, mbits, _, has_inf, has_nan = MINIFLOATS[fmt]
    sign_bit = 1 << (ebits + mbits)
    max_code, vmax, pos = _finite_codes(fmt)
    neg = math.copysign(1.0, x) < 0
    if math.isnan(x):
        return (0x7F | (sign_bit if neg else 0)) if has_nan else max_code
    if math.isinf(x):
        over = True
    else:
        a = abs(Fraction(x))
        ulp_max = Fraction(2) ** (_floor_log2(vmax) - mbits)
        edge = vmax + ulp_max / 2
        over = a > edge or (a == edge and max_code & 1 == 1)
    if over:
        if saturate or not has_nan:
            code = max_code
        elif has_inf:
            code = 0x7C
        else:
            code = 0x7F
        return code | (sign_bit if neg else 0)
    # Nearest non-negative value to |x| (ties to the even code), then the sign bit.
    a = abs(Fraction(x))
    best = None
    for c, v in pos:
        d = abs(a - v)
        if best is None or d < best[0] or (d == best[0] and c % 2 == 0 and best[1] % 2 == 1):
            best = (d, c)
    assert best is not None
    return best[1] | (sign_bit if neg else 0)


@cache
def _finite_codes(fmt: str) -> tuple[int, Fraction, tuple[tuple[int, Fraction], ...]]:
    """(largest finite positive code, its value, all (code, value) of non-negative finite codes)."""
    ebits, mbits, *_ = MINIFLOATS[fmt]
    sign_bit = 1 << (ebits + mbits)
    vals = minifloat_values(fmt)
    pos = tuple((c, v) for c, v in vals.items() if c < sign_bit and v is not None and v != INF)
    max_code, vmax = max(pos, key=lambda cv: cv[1])
    return max_code, vmax, pos


# -- packing ----------------------------------------------------------------------------------
def pack_codes(codes: list[int], bits: int) -> list[int]:
    """ONNX sub-byte order, one bit field at a time: element i at bit (i mod 8/bits) * bits of
    byte i div (8/bits), two's complement, unused high bits of the last byte zero."""
    per = 8 // bits
    out = [0] * (-(-len(codes) * bits // 8))
    for i, c in enumerate(codes):
        field = c % (1 << bits)  # two's complement low bits (Python % is non-negative)
        out[i // per] |= field << ((i % per) * bits)
    return out


# -- non-uniform ------------------------------------------------------------------------------
def ternary_ref(w: list[float], ratio: Fraction = Fraction(7, 10)) -> tuple[list[int], Fraction]:
    """TWN: delta = ratio * mean|w|; codes sign(w) where |w| > delta; alpha = fl32(mean kept)."""
    mags = [abs(Fraction(v)) for v in w]
    delta = ratio * sum(mags, Fraction(0)) / len(w)
    codes = [(1 if v > 0 else -1) if m > delta else 0 for v, m in zip(w, mags, strict=True)]
    kept = [m for m in mags if m > delta]
    alpha = to_float32(sum(kept, Fraction(0)) / len(kept)) if kept else Fraction(0)
    return codes, alpha


def binary_ref(w: list[float]) -> tuple[list[int], Fraction]:
    codes = [1 if v >= 0 else -1 for v in w]
    return codes, to_float32(sum((abs(Fraction(v)) for v in w), Fraction(0)) / len(w))


def log2_round(m: Fraction, rounding: str = "log") -> int:
    """Exponent of the nearest power of two to ``m > 0``: in the log domain (threshold
    2^(e + 1/2), decided by m^2 >= 2^(2e+1)) or on the real line (threshold 1.5 * 2^e, up)."""
    e = _floor_log2(m)
    if rounding == "log":
        return e + (1 if m * m >= Fraction(2) ** (2 * e + 1) else 0)
    return e + (1 if m >= Fraction(3, 2) * Fraction(2) ** e else 0)


# -- run-time self check ----------------------------------------------------------------------
class SelfCheckRow(NamedTuple):
    op: str
    variant: str
    cases: int
    bit_exact: bool
    mismatches: int = 0


def self_check(samples: int = 400, seed: int = 0) -> list[SelfCheckRow]:
    """Compare refq's quantize / dequantize, rounding modes, float8/float4 encoding and packing
    with these definitions on ``samples`` seeded random values per row (ties, saturation,
    subnormals and both signs included)."""
    import numpy as np

    from refq import floatfmt
    from refq.packing import pack_bits
    from refq.quantize import dequantize, quantize
    from refq.rounding import round_to_int
    from refq.spec import QuantParams, QuantSpec

    rng = np.random.default_rng(seed)
    rows: list[SelfCheckRow] = []

    def add(op: str, variant: str, got: list, want: list) -> None:
        bad = sum(1 for g, w in zip(got, want, strict=True) if g != w)
        rows.append(SelfCheckRow(op, variant, len(want), bad == 0, bad))

    half = rng.integers(-300, 300, samples) + 0.5
    x = np.concatenate([half, rng.standard_normal(samples) * 100]).astype(np.float32)
    for mode in ("half_even", "half_away", "half_up", "floor"):
        got = [int(v) for v in round_to_int(x, mode)]
        add("round_to_int", mode, got, [round_fraction(Fraction(float(v)), mode) for v in x])
    u = np.random.Generator(np.random.PCG64(seed)).random(x.shape)
    got = [int(v) for v in round_to_int(x, "stochastic", seed=seed)]
    want = [
        round_fraction(Fraction(float(v)), "stochastic", Fraction(float(w)))
        for v, w in zip(x, u, strict=True)
    ]
    add("round_to_int", "stochastic", got, want)

    for dtype in ("int8", "uint8", "int4", "uint16", "int2"):
        spec = QuantSpec(dtype, symmetric=False)
        lo, hi = int(spec.qmin), int(spec.qmax)
        scale = np.float32(rng.uniform(0.01, 2.0))
        zp = int(rng.integers(lo, hi + 1))
        data = (rng.standard_normal(samples) * scale * (hi - lo) / 3).astype(np.float32)
        params = QuantParams(scale, zp, spec)
        q = quantize(data, params)
        want = [quantize_value(float(v), float(scale), zp, lo, hi) for v in data]
        add("quantize", dtype, [int(v) for v in q], want)
        dq = dequantize(q, params)
        add(
            "dequantize",
            dtype,
            [Fraction(float(v)) for v in dq],
            [dequantize_value(int(c), float(scale), zp) for c in q],
        )

    for fmt in MINIFLOATS:
        vals = [v for v in minifloat_values(fmt).values() if v is not None and v not in (INF, -INF)]
        mids = [(a + b) / 2 for a, b in zip(sorted(vals)[:-1], sorted(vals)[1:], strict=True)]
        pool = np.array([float(v) for v in vals + mids], dtype=np.float32)
        data = np.concatenate([pool, (rng.standard_normal(samples) * 50).astype(np.float32)])
        for sat in (True, False):
            got = [int(c) for c in floatfmt.encode(data, fmt, saturate=sat)]
            add(
                "encode",
                f"{fmt} sat={int(sat)}",
                got,
                [encode_minifloat(float(v), fmt, sat) for v in data],
            )

    for bits in (1, 2, 4):
        n = int(rng.integers(1, samples))
        codes = [int(c) for c in rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), n)]
        got = [int(b) for b in pack_bits(np.array(codes, dtype=np.int8), bits)]
        add("pack", f"{bits}-bit", got, pack_codes(codes, bits))
    return rows


__all__ = [
    "SelfCheckRow",
    "binary_ref",
    "dequantize_value",
    "encode_minifloat",
    "log2_round",
    "minifloat_values",
    "pack_codes",
    "quantize_value",
    "round_fraction",
    "round_to_float",
    "self_check",
    "ternary_ref",
    "to_float32",
]
