"""float8 e4m3fn / e5m2 and float4 e2m1 codes, written from the bit layouts (ONNX semantics).

Layouts (sign bit, exponent bits, mantissa bits; bias; max finite):

- ``float8e4m3fn``  S.EEEE.MMM, bias 7, max 448 (S.1111.110). No infinities; S.1111.111 is NaN.
- ``float8e5m2``    S.EEEEE.MM, bias 15, max 57344 (S.11110.11). S.11111.00 is +-Inf,
  S.11111.{01,10,11} are NaN.
- ``float4e2m1``    S.EE.M, bias 1, max 6 (S.11.1). No Inf, no NaN.

Exponent field 0 encodes subnormals ``(-1)^S * M * 2^(1 - bias - mbits)``; otherwise
``(-1)^S * (2^mbits + M) * 2^(E - bias - mbits)``.

Encoding (ONNX Cast / QuantizeLinear, "[x]" = x rounded to nearest even at the target
mantissa width with an unbounded exponent):

==================  ================  ================  =============
x                   e4m3fn            e5m2              e2m1
==================  ================  ================  =============
NaN                 S.1111.111        S.11111.11        +6 (0.11.1)
+-Inf, saturate     +-448             +-57344           +-6
+-Inf, no saturate  NaN (sign kept)   +-Inf             +-6
[x] > max, sat.     +-448             +-57344           +-6
[x] > max, no sat.  NaN (sign kept)   +-Inf             +-6
otherwise           [x]               [x]               [x]
==================  ================  ================  =============

Signed zeros are kept. NaN codes: ONNX's Cast table defines the value, not the payload;
refq writes 0x7F|S for both float8 formats (what onnxruntime 1.32 writes; ml_dtypes, used by
``onnx.reference``, writes 0x7E|S for e5m2). float4 NaN -> +6 follows the ONNX float4 page
(ml_dtypes writes -0 / +0). Known peer deviations, onnxruntime 1.32 with ``saturate=0``, where
the rounded magnitude lands just past the format's top: e4m3fn |x| in [480, 496) becomes
+-448 (ONNX: NaN) and e5m2 |x| in [61440, 65536) becomes NaN 0x7F (ONNX: Inf). refq follows
the ONNX table (as ml_dtypes does).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from refq.errors import QuantSpecError, UnsupportedError
from refq.spec import FLOAT_FORMATS, QDType

# Canonical NaN code (without the sign bit) refq writes for each format.
_NAN_CODE = {"float8e4m3fn": 0x7F, "float8e5m2": 0x7F}
# Largest finite magnitude code of each format.
_MAX_CODE = {"float8e4m3fn": 0x7E, "float8e5m2": 0x7B, "float4e2m1": 0x07}


def _fmt(fmt: str | QDType) -> tuple[str, int, int, int, float, bool, bool]:
    name = QDType.parse(fmt).name if not isinstance(fmt, QDType) else fmt.name
    if name not in FLOAT_FORMATS:
        raise UnsupportedError(f"{name} is not a float8/float4 format")
    return (name, *FLOAT_FORMATS[name])


def encode(x: object, fmt: str | QDType, *, saturate: bool = True) -> np.ndarray:
    """Encode float values (float16/32/64 or bfloat16) into ``fmt`` codes (uint8, one per element).

    Rounds to nearest even on the bits from the exact value (float32 and float16 inputs are
    widened exactly to float64 first, so there is a single rounding).
    """
    name, ebits, mbits, bias, max_finite, has_inf, has_nan = _fmt(fmt)
    a = np.asarray(x)
    if a.dtype.kind not in "fiu" and a.dtype.name != "bfloat16":
        raise QuantSpecError(f"cannot encode values of dtype {a.dtype} as {name}")
    v = a.astype(np.float64)
    sign = np.signbit(v)
    mag = np.abs(v)
    finite = np.isfinite(v)
    emin = 1 - bias
    with np.errstate(invalid="ignore", over="ignore"):
        safe = np.where(finite, mag, 0.0)
        _, k = np.frexp(safe)  # safe = m * 2^k, m in [0.5, 1): binade exponent is k - 1
        e = np.maximum(k.astype(np.int64) - 1, emin)
        # Integer significand at the target width; ldexp by a power of two is exact here.
        n = np.rint(np.ldexp(safe, (mbits - e).astype(np.int32)))
        carry = n >= (1 << (mbits + 1))  # rounding overflowed into the next binade
        e = np.where(carry, e + 1, e)
        n = np.where(carry, n / 2, n)
        value = np.ldexp(n, (e - mbits).astype(np.int32))
        over = finite & (value > max_finite)
        normal = n >= (1 << mbits)
        exp_field = np.where(normal, e + bias, 0)
        man = np.where(normal, n - (1 << mbits), n).astype(np.int64)
        code = (exp_field.astype(np.int64) << mbits) | man
    code = np.where(finite & ~over, code, 0)
    max_code = _MAX_CODE[name]
    inf = np.isinf(v)
    nan = np.isnan(v)
    big = over | inf  # saturating cases
    if saturate or not has_nan:
        code = np.where(big, max_code, code)
    elif has_inf:
        code = np.where(big, 0x7C, code)
    else:
        code = np.where(big, _NAN_CODE[name], code)
    sign_bit = 1 << (ebits + mbits)
    code = code | np.where(sign, sign_bit, 0)
    if has_nan:
        code = np.where(nan, _NAN_CODE[name] | np.where(sign, sign_bit, 0), code)
    else:
        code = np.where(nan, max_code, code)  # float4: NaN -> +6 (ONNX float4 page)
    return code.astype(np.uint8).reshape(a.shape)


@cache
def code_table(fmt: str) -> np.ndarray:
    """float32 value of every code of ``fmt`` (256 entries for float8, 16 for float4)."""
    name, ebits, mbits, bias, _max, has_inf, _nan = _fmt(fmt)
    ncodes = 1 << (1 + ebits + mbits)
    out = np.empty(ncodes, dtype=np.float64)
    for c in range(ncodes):
        s = -1.0 if c >> (ebits + mbits) else 1.0
        e = (c >> mbits) & ((1 << ebits) - 1)
        m = c & ((1 << mbits) - 1)
        top = e == (1 << ebits) - 1
        if name == "float8e4m3fn" and top and m == (1 << mbits) - 1:
            out[c] = np.copysign(np.nan, s)  # NaNs keep their sign bit
        elif has_inf and top:
            out[c] = s * np.inf if m == 0 else np.copysign(np.nan, s)
        elif e == 0:
            out[c] = s * m * 2.0 ** (1 - bias - mbits)
        else:
            out[c] = s * ((1 << mbits) + m) * 2.0 ** (e - bias - mbits)
    table = out.astype(np.float32)
    table.flags.writeable = False
    return table


def decode(codes: object, fmt: str | QDType) -> np.ndarray:
    """float32 values of ``fmt`` codes (exact: every float8/float4 value is a float32)."""
    name = _fmt(fmt)[0]
    c = np.asarray(codes)
    if c.dtype.kind not in "iu":
        raise QuantSpecError(f"{name} codes must be integers, got dtype {c.dtype}")
    n = len(code_table(name))
    if c.size and (c.min() < 0 or c.max() >= n):
        flat = c.reshape(-1)
        i = int(np.flatnonzero((flat < 0) | (flat >= n))[0])
        raise QuantSpecError(f"{name} code {flat[i].item()} at flat index {i} is not in 0..{n - 1}")
    return code_table(name)[c.astype(np.intp)]


__all__ = ["code_table", "decode", "encode"]
