"""Exact definitions of the ONNX quantization ops for tests: Fraction and Python-int arithmetic.

Float operations are written as "the exact rational result, rounded once to nearest even in the
target format" (:func:`fl`), which is what IEEE arithmetic means. Nothing here imports refq.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np

# (significand bits incl. the implicit one, minimum normal exponent, maximum exponent)
F32 = (24, -126, 127)
F16 = (11, -14, 15)
BF16 = (8, -126, 127)


def fl(value: Fraction | int, fmt: tuple[int, int, int] = F32) -> float:
    """``value`` rounded to nearest even in a binary float format; overflow gives +-inf.

    Returns a Python float (exact: every float32 / float16 / bfloat16 value is a double).
    A zero result is +0.0; callers handle signed zeros where IEEE defines them.
    """
    p, emin, emax = fmt
    v = Fraction(value)
    if v == 0:
        return 0.0
    sign = -1 if v < 0 else 1
    a = abs(v)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1  # now 2^e <= a < 2^(e+1)
    e = max(e, emin)
    unit = Fraction(2) ** (e - p + 1)
    n = round(a / unit)  # Fraction.__round__: half to even
    r = n * unit
    if r >= Fraction(2) ** (emax + 1):
        return sign * math.inf
    return sign * float(r)


def rne(v: Fraction | float) -> int:
    """Round half to even to an integer."""
    return round(Fraction(v))


def clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, v))


def wrap32(v: int) -> int:
    return ((v + (1 << 31)) % (1 << 32)) - (1 << 31)


def quantize_int(x: float, scale: float, zp: int, lo: int, hi: int, fmt=F32) -> int:
    """QuantizeLinear to an integer type: ``clamp(rne(fl(x / s)) + zp)``; +-inf saturate."""
    if math.isinf(x):
        q = math.copysign(math.inf, x * scale)
    else:
        q = fl(Fraction(x) / Fraction(scale), fmt)
    if math.isinf(q):
        return hi if q > 0 else lo
    return clamp(rne(q) + zp, lo, hi)


def dequantize_int(x: int, zp: int, scale: float) -> float:
    """DequantizeLinear of an integer code to float32: ``fl(fl(x - zp) * s)``, signed zeros."""
    d = fl(x - zp)
    y = fl(Fraction(d) * Fraction(scale))
    if y == 0:
        return math.copysign(0.0, d if d != 0 else 1.0) * math.copysign(1.0, scale)
    return y


def requant_multiplier(sa: float, sb: float, sy: float) -> float:
    """``fl32(fl32(sa * sb) / sy)``."""
    return fl(Fraction(fl(Fraction(sa) * Fraction(sb))) / Fraction(sy))


def requantize(acc: int, multiplier: float, zy: int, lo: int, hi: int) -> int:
    """``clamp(rne(fl32(fl32(acc) * M)) + zy)``."""
    v = fl(Fraction(fl(acc)) * Fraction(multiplier))
    if math.isinf(v):
        return hi if v > 0 else lo
    return clamp(rne(v) + zy, lo, hi)


def dynamic_quantize(x: list[float]) -> tuple[list[int], float, int]:
    """DynamicQuantizeLinear's function body in exact float32 steps (onnxruntime for range 0)."""
    lo = min([0.0, *x])
    hi = max([0.0, *x])
    if hi == lo:
        scale, zp = 1.0, 0
    else:
        scale = fl(Fraction(fl(Fraction(hi) - Fraction(lo))) / 255)
        zp_f = fl(0 - Fraction(fl(Fraction(lo) / Fraction(scale))))
        zp = rne(min(max(zp_f, 0.0), 255.0))
    y = [quantize_int(v, scale, zp, 0, 255) for v in x]
    return y, scale, zp


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numpy.matmul shape rules on Python ints."""
    return np.asarray(np.matmul(a.astype(object), b.astype(object)), dtype=object)


def conv(
    x: np.ndarray,
    w: np.ndarray,
    group: int,
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    pads_begin: tuple[int, ...],
    pads_end: tuple[int, ...],
) -> np.ndarray:
    """Direct N-d convolution on Python ints by its definition (zero padding)."""
    n, c = x.shape[:2]
    m = w.shape[0]
    kernel = w.shape[2:]
    size = x.shape[2:]
    out = [
        (i + b + e - ((k - 1) * d + 1)) // s + 1
        for i, b, e, k, d, s in zip(
            size, pads_begin, pads_end, kernel, dilations, strides, strict=True
        )
    ]
    cg, mg = c // group, m // group
    y = np.zeros((n, m, *out), dtype=object)
    for b_, oc in itertools.product(range(n), range(m)):
        g = oc // mg
        for pos in itertools.product(*(range(o) for o in out)):
            total = 0
            for ic in range(cg):
                for k in itertools.product(*(range(kk) for kk in kernel)):
                    src = [
                        p * s + kk * d - pb
                        for p, s, kk, d, pb in zip(
                            pos, strides, k, dilations, pads_begin, strict=True
                        )
                    ]
                    if all(0 <= v < lim for v, lim in zip(src, size, strict=True)):
                        total += int(x[(b_, g * cg + ic, *src)]) * int(w[(oc, ic, *k)])
            y[(b_, oc, *pos)] = total
    return y
