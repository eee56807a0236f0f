"""Minifloat codes (float8 / float6 / float4), written from the bit layouts (ONNX semantics).

Layouts (sign bit, exponent bits, mantissa bits; bias; max finite; specials):

==================  ==========  ====  ==========  =============================================
format              layout      bias  max finite  specials
==================  ==========  ====  ==========  =============================================
``float8e4m3fn``    S.EEEE.MMM  7     448         no Inf; S.1111.111 is NaN
``float8e5m2``      S.EEEEE.MM  15    57344       S.11111.00 is +-Inf, S.11111.{01,10,11} NaN
``float8e4m3fnuz``  S.EEEE.MMM  8     240         0x80 is the only NaN; no -0, no Inf
``float8e5m2fnuz``  S.EEEEE.MM  16    57344       0x80 is the only NaN; no -0, no Inf
``float6e2m3``      S.EE.MMM    1     7.5         none (no NaN, no Inf)
``float6e3m2``      S.EEE.MM    3     28          none
``float4e2m1``      S.EE.M      1     6           none
``float8e8m0``      EEEEEEEE    127   2^127       unsigned ``2^(E - 127)``, no zero; 0xFF is NaN
==================  ==========  ====  ==========  =============================================

Values: exponent field 0 encodes subnormals ``(-1)^S * M * 2^(1 - bias - mbits)``, any other
``(-1)^S * (2^mbits + M) * 2^(E - bias - mbits)`` (float8e8m0 has no subnormals).

Encoding (ONNX Cast / QuantizeLinear; ``[x]`` = ``x`` rounded to nearest even at the target
mantissa width with an unbounded exponent, one rounding from the exact value), one encoder for
every format, by its NaN / Inf convention:

==================  ================  ================  ===============  ===============
x                   e4m3fn            e5m2              fnuz             no NaN (e2m1,
                                                                         float6)
==================  ================  ================  ===============  ===============
NaN                 S.1111.111        S.11111.11        0x80             +max
+-Inf, saturate     +-max             +-max             +-max            +-max
+-Inf, no saturate  NaN (sign kept)   +-Inf             0x80             +-max
[x] > max, sat.     +-max             +-max             +-max            +-max
[x] > max, no sat.  NaN (sign kept)   +-Inf             0x80             +-max
otherwise           [x]               [x]               [x], -0 -> +0    [x]
==================  ================  ================  ===============  ===============

Signed zeros are kept (not by fnuz, whose 0x80 is NaN). NaN codes: ONNX's Cast table defines the
value, not the payload; refq writes 0x7F|S for both float8 formats (what onnxruntime 1.32
writes; ml_dtypes, used by ``onnx.reference``, writes 0x7E|S for e5m2). NaN -> +max for the
formats without NaN follows the ONNX float4 page (ml_dtypes writes -0 / +0). float8e8m0 is
decode-only: ONNX uses it as a scale type, never as a quantized output. Known peer deviations,
onnxruntime 1.32 with ``saturate=0``, where the rounded magnitude lands just past the format's
top: e4m3fn ``|x|`` in [480, 496) becomes +-448 (ONNX: NaN) and e5m2 ``|x|`` in [61440, 65536)
becomes NaN 0x7F (ONNX: Inf). refq follows the ONNX table (as ml_dtypes does).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np

from refq.errors import QuantSpecError, UnsupportedError
from refq.spec import FLOAT_FORMATS, QDType

NanStyle = Literal["all_ones", "ieee", "fnuz", "none"]
"""Which codes are NaN: ``all_ones`` every bit of exponent and mantissa set (e4m3fn, e8m0);
``ieee`` top exponent with a nonzero mantissa, the zero mantissa being +-Inf (e5m2); ``fnuz``
0x80 alone (no negative zero); ``none``."""


@dataclass(frozen=True)
class Layout:
    """The bit layout of one format."""

    name: str
    ebits: int
    mbits: int
    bias: int
    nan: NanStyle
    signed: bool = True

    @property
    def sign_bit(self) -> int:
        return 1 << (self.ebits + self.mbits) if self.signed else 0

    @property
    def codes(self) -> int:
        return 1 << (self.ebits + self.mbits + self.signed)

    def magnitude(self, e: int, m: int) -> float:
        """Value of exponent field ``e`` and mantissa field ``m`` (exact in float64)."""
        if e == 0 and self.mbits:  # subnormal (float8e8m0, pure exponent, has none)
            return m * 2.0 ** (1 - self.bias - self.mbits)
        return ((1 << self.mbits) + m) * 2.0 ** (e - self.bias - self.mbits)

    def is_nan(self, code: int) -> bool:
        top = (1 << (self.ebits + self.mbits)) - 1  # all exponent and mantissa bits
        magnitude = code & top
        if self.nan == "all_ones":
            return magnitude == top
        if self.nan == "ieee":
            return (
                magnitude >> self.mbits == top >> self.mbits
                and magnitude & ((1 << self.mbits) - 1) != 0
            )
        return self.nan == "fnuz" and code == self.sign_bit

    @property
    def inf_code(self) -> int | None:
        """Code of +Inf (``ieee`` formats only)."""
        return ((1 << self.ebits) - 1) << self.mbits if self.nan == "ieee" else None

    @property
    def max_code(self) -> int:
        """Largest finite positive code: the last code below the sign bit that is not NaN / Inf."""
        c = (1 << (self.ebits + self.mbits)) - 1
        while self.is_nan(c) or c == self.inf_code:
            c -= 1
        return c


def _core_layout(name: str) -> Layout:
    """The layouts of refq's quantization dtypes (:data:`refq.spec.FLOAT_FORMATS`)."""
    ebits, mbits, bias, _max, has_inf, has_nan = FLOAT_FORMATS[name]
    nan: NanStyle = ("ieee" if has_inf else "all_ones") if has_nan else "none"
    return Layout(name, ebits, mbits, bias, nan)


LAYOUTS: dict[str, Layout] = {
    **{name: _core_layout(name) for name in FLOAT_FORMATS},
    # ONNX element types that are not quantization dtypes of refq.spec.
    "float8e4m3fnuz": Layout("float8e4m3fnuz", 4, 3, 8, "fnuz"),
    "float8e5m2fnuz": Layout("float8e5m2fnuz", 5, 2, 16, "fnuz"),
    "float6e2m3": Layout("float6e2m3", 2, 3, 1, "none"),
    "float6e3m2": Layout("float6e3m2", 3, 2, 3, "none"),
    "float8e8m0": Layout("float8e8m0", 8, 0, 127, "all_ones", signed=False),
}

# Canonical NaN code (without the sign bit) refq writes for the formats with NaN codes.
_NAN_CODE = {"all_ones": 0x7F, "ieee": 0x7F, "fnuz": 0x80}


def layout(fmt: str | QDType) -> Layout:
    """The :class:`Layout` of a format name (or a float :class:`~refq.spec.QDType`)."""
    if isinstance(fmt, QDType):
        name = fmt.name
    elif fmt in LAYOUTS:
        name = fmt
    else:
        name = QDType.parse(fmt).name  # aliases such as "float8_e4m3fn"
    if name not in LAYOUTS:
        raise UnsupportedError(
            f"{name} is not a minifloat format; known: {', '.join(sorted(LAYOUTS))}"
        )
    return LAYOUTS[name]


def encode(x: object, fmt: str | QDType, *, saturate: bool = True) -> np.ndarray:
    """Encode float values (float16/32/64 or bfloat16) into ``fmt`` codes (uint8, one per element).

    Rounds to nearest even on the bits from the exact value (float32 and float16 inputs are
    widened exactly to float64 first, so there is a single rounding); specials per the module
    table.
    """
    lay = layout(fmt)
    if not lay.signed:
        raise UnsupportedError(
            f"refq does not encode into {lay.name} (ONNX uses it only as a scale type)"
        )
    a = np.asarray(x)
    if a.dtype.kind not in "fiu" and a.dtype.name != "bfloat16":
        raise QuantSpecError(f"cannot encode values of dtype {a.dtype} as {lay.name}")
    v = a.astype(np.float64)
    finite = np.isfinite(v)
    mag = np.where(finite, np.abs(v), 0.0)
    emin = 1 - lay.bias
    _, k = np.frexp(mag)  # mag = f * 2^k with f in [0.5, 1): the binade exponent is k - 1
    e = np.maximum(k.astype(np.int64) - 1, emin)
    # Integer significand at the target width, rounded half to even (scaling by 2^n is exact).
    n = np.rint(np.ldexp(mag, (lay.mbits - e).astype(np.int32))).astype(np.int64)
    carry = n == 1 << (lay.mbits + 1)  # rounding overflowed into the next binade
    e = np.where(carry, e + 1, e)
    n = np.where(carry, n >> 1, n)
    normal = n >= 1 << lay.mbits
    code = np.where(normal, ((e + lay.bias) << lay.mbits) | (n - (1 << lay.mbits)), n)
    max_code = lay.max_code
    # Codes are monotonic in the value, so "[x] > max finite" is "code > max_code" (this also
    # catches exponent fields beyond the format); infinities count as beyond.
    over = ~finite | (code > max_code)
    if saturate or lay.nan == "none":
        special = max_code
    elif lay.nan == "ieee":
        special = lay.inf_code
    else:
        special = _NAN_CODE[lay.nan]
    code = np.where(over, special, code)
    negative = np.signbit(v)
    if lay.nan == "fnuz":  # no negative zero, and 0x80 is NaN whatever the sign
        negative &= code != 0
    code = code | np.where(negative, lay.sign_bit, 0)
    nan = np.isnan(v)
    if lay.nan == "none":
        code = np.where(nan, max_code, code)  # +max (ONNX float4 page)
    elif lay.nan == "fnuz":
        code = np.where(nan, 0x80, code)
    else:
        code = np.where(nan, _NAN_CODE[lay.nan] | np.where(negative, lay.sign_bit, 0), code)
    return code.astype(np.uint8).reshape(a.shape)


@cache
def code_table(fmt: str) -> np.ndarray:
    """float32 value of every code of ``fmt`` (read-only; NaN codes keep their sign bit, except
    the fnuz NaN 0x80, which decodes to +NaN)."""
    lay = layout(fmt)
    out = np.empty(lay.codes, dtype=np.float64)
    for c in range(lay.codes):
        s = -1.0 if c & lay.sign_bit else 1.0
        e = (c >> lay.mbits) & ((1 << lay.ebits) - 1)
        m = c & ((1 << lay.mbits) - 1)
        if lay.is_nan(c):
            # The fnuz NaN 0x80 is not a negative number: +NaN, as before its sign bit meant NaN.
            out[c] = np.nan if lay.nan == "fnuz" else np.copysign(np.nan, s)
        elif (c & ~lay.sign_bit) == lay.inf_code:
            out[c] = s * np.inf
        else:
            out[c] = s * lay.magnitude(e, m)
    table = out.astype(np.float32)  # exact: every value is a float32 (2^-127 a subnormal)
    table.flags.writeable = False
    return table


def decode(codes: object, fmt: str | QDType) -> np.ndarray:
    """float32 values of ``fmt`` codes (exact: every minifloat value is a float32)."""
    name = layout(fmt).name
    c = np.asarray(codes)
    if c.dtype.kind not in "iu":
        raise QuantSpecError(f"{name} codes must be integers, got dtype {c.dtype}")
    table = code_table(name)
    n = len(table)
    if c.size and (c.min() < 0 or c.max() >= n):
        flat = c.reshape(-1)
        i = int(np.flatnonzero((flat < 0) | (flat >= n))[0])
        raise QuantSpecError(f"{name} code {flat[i].item()} at flat index {i} is not in 0..{n - 1}")
    return table[c.astype(np.intp)]


__all__ = ["LAYOUTS", "Layout", "code_table", "decode", "encode", "layout"]
