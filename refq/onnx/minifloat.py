"""Encode / decode every ONNX minifloat element type as uint8 codes.

float8e4m3fn, float8e5m2 and float4e2m1 go through :mod:`refq.floatfmt` (the quantization
core). The ONNX types the core does not define are written here from their bit layouts
(NOTE for the lead: candidates to merge into refq.floatfmt):

=================  ========  ====  ============  ==========================================
type               layout    bias  max finite    specials
=================  ========  ====  ============  ==========================================
float8e4m3fnuz     S.4.3     8     240           0x80 is the only NaN; no -0, no Inf
float8e5m2fnuz     S.5.2     16    57344         0x80 is the only NaN; no -0, no Inf
float6e2m3         S.2.3     1     7.5           none (no NaN, no Inf)
float6e3m2         S.3.2     3     28            none
float8e8m0         8 exp     127   2^127         unsigned powers of two 2^(E-127); 0xFF is NaN
=================  ========  ====  ============  ==========================================

Encoding follows the ONNX Cast tables: round to nearest even at the target mantissa width with
an unbounded exponent (``[x]``); ``saturate=True`` clamps ``[x]`` beyond the largest finite
value and infinities to +-max; ``saturate=False`` turns them into NaN (the fnuz types have no
infinity). The fnuz types map -0 to +0 and every NaN to 0x80. float6 has no NaN or infinity,
so it always saturates and NaN follows :mod:`refq.floatfmt`'s float4 rule (+max).
float8e8m0 is decode-only here: ONNX uses it as a scale type, never as a quantized output.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from onnx import TensorProto

from refq import floatfmt
from refq.errors import UnsupportedError

_CORE = {
    TensorProto.FLOAT8E4M3FN: "float8e4m3fn",
    TensorProto.FLOAT8E5M2: "float8e5m2",
    TensorProto.FLOAT4E2M1: "float4e2m1",
}


@dataclass(frozen=True)
class _Layout:
    name: str
    ebits: int
    mbits: int
    bias: int
    max_code: int
    """Largest finite positive code."""
    fnuz: bool
    """0x80 is NaN, no negative zero (otherwise: no NaN at all)."""


_LOCAL = {
    TensorProto.FLOAT8E4M3FNUZ: _Layout("float8e4m3fnuz", 4, 3, 8, 0x7F, True),
    TensorProto.FLOAT8E5M2FNUZ: _Layout("float8e5m2fnuz", 5, 2, 16, 0x7F, True),
    TensorProto.FLOAT6E2M3: _Layout("float6e2m3", 2, 3, 1, 0x1F, False),
    TensorProto.FLOAT6E3M2: _Layout("float6e3m2", 3, 2, 3, 0x1F, False),
}


def _magnitude(layout: _Layout, code: int) -> float:
    e = code >> layout.mbits
    m = code & ((1 << layout.mbits) - 1)
    if e == 0:
        return m * 2.0 ** (1 - layout.bias - layout.mbits)
    return ((1 << layout.mbits) + m) * 2.0 ** (e - layout.bias - layout.mbits)


@cache
def _table(elem: int) -> np.ndarray:
    """float32 value of every code of a locally defined type."""
    if elem == TensorProto.FLOAT8E8M0:
        t = np.array([2.0 ** (c - 127) for c in range(255)] + [np.nan])
        return t.astype(np.float32)
    lay = _LOCAL[elem]
    sign = 1 << (lay.ebits + lay.mbits)
    t = np.empty(2 * sign, dtype=np.float64)
    for c in range(sign):
        t[c] = _magnitude(lay, c)
        t[c | sign] = -t[c]
    if lay.fnuz:
        t[sign] = np.nan
    t = t.astype(np.float32)
    t.flags.writeable = False
    return t


def decode(codes: np.ndarray, elem: int) -> np.ndarray:
    """float32 values of minifloat ``codes`` (exact: every such value is a float32)."""
    codes = np.asarray(codes)
    if elem in _CORE:
        return floatfmt.decode(codes, _CORE[elem])
    if elem in _LOCAL or elem == TensorProto.FLOAT8E8M0:
        return _table(elem)[codes.astype(np.intp)]
    raise UnsupportedError(f"no minifloat decoder for type code {elem}")


def encode(x: np.ndarray, elem: int, *, saturate: bool = True) -> np.ndarray:
    """Round float values (one rounding from their exact value) to minifloat codes (uint8)."""
    if elem in _CORE:
        return floatfmt.encode(x, _CORE[elem], saturate=saturate)
    if elem not in _LOCAL:
        raise UnsupportedError(
            f"refq does not encode into {TensorProto.DataType.Name(elem).lower()}"
            + (" (ONNX uses it only as a scale type)" if elem == TensorProto.FLOAT8E8M0 else "")
        )
    lay = _LOCAL[elem]
    v = np.asarray(x).astype(np.float64)
    mag = np.abs(v)
    finite = np.isfinite(v)
    safe = np.where(finite, mag, 0.0)
    emin = 1 - lay.bias
    _, k = np.frexp(safe)  # safe = f * 2^k with f in [0.5, 1): binade exponent k - 1
    e = np.maximum(k.astype(np.int64) - 1, emin)
    # Significand at the target width, rounded half to even (scaling by 2^n is exact).
    n = np.rint(np.ldexp(safe, (lay.mbits - e).astype(np.int32))).astype(np.int64)
    up = n == (1 << (lay.mbits + 1))  # rounding carried into the next binade
    e = np.where(up, e + 1, e)
    n = np.where(up, n >> 1, n)
    normal = n >= (1 << lay.mbits)
    code = np.where(normal, ((e + lay.bias) << lay.mbits) | (n - (1 << lay.mbits)), n)
    over = ~finite | (code > lay.max_code)  # also catches exponent fields beyond the format
    nan_in = np.isnan(v)
    sign_bit = 1 << (lay.ebits + lay.mbits)
    if lay.fnuz:
        special = 0x80 if not saturate else lay.max_code
        code = np.where(over, special, code)
        negative = np.signbit(v) & (code != 0) & ~(over & ~saturate)
        code = np.where(negative, code | sign_bit, code)
        code = np.where(nan_in, 0x80, code)
    else:
        code = np.where(over, lay.max_code, code) | np.where(np.signbit(v), sign_bit, 0)
        code = np.where(nan_in, lay.max_code, code)
    return code.astype(np.uint8).reshape(v.shape)
