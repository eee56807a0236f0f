"""Numba element loops behind :func:`refq.quantize.quantize` / ``dequantize`` (float32 paths).

Data are viewed as ``(outer, axis, inner)`` and parameters as ``(outer or 1, blocks, inner or 1)``
so one loop serves per-tensor, per-axis and per-block parameters. The arithmetic is exactly
the NumPy path's (and ONNX's): a float32 division, clamp to the zero-point-shifted range,
round half to even, add the zero point; dequantize is ``float32(q - zp) * scale`` in float32.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def quantize_f32_half_even(x3, xbits3, s3, z3, block, qmin, qmax, check, out3):  # pragma: no cover
    """``out = clamp(rint(x / s), qmin - z, qmax - z) + z``; NaN quotients give ``qmin``.

    ``xbits3`` is ``x3`` viewed as int32. With ``check``, each row is first scanned for NaN /
    Inf (exponent bits all ones) and the flat index of the first such row is returned before
    it is quantized; the scan is a separate loop over a row already in cache, so both loops
    vectorize. Returns -1 when every value was quantized.
    """
    n_outer, n_axis, n_inner = x3.shape
    s_outer = s3.shape[0]
    s_inner = s3.shape[2]
    exp_mask = np.int32(0x7F800000)
    exp_one = np.int32(0x00800000)
    for o in range(n_outer):
        so = o if s_outer > 1 else 0
        for d in range(n_axis):
            xr = x3[o, d]
            if check:
                # (bits & exp_mask) + exp_one carries into bit 31 only for all-ones exponents.
                acc = 0
                br = xbits3[o, d]
                for i in range(n_inner):
                    acc |= (br[i] & exp_mask) + exp_one
                if acc & 0x80000000:
                    return (o * n_axis + d) * n_inner
            db = d // block
            orow = out3[o, d]
            if s_inner == 1:
                s = s3[so, db, 0]
                z = z3[so, db, 0]
                lo = np.float32(qmin - z)
                hi = np.float32(qmax - z)
                for i in range(n_inner):
                    v = xr[i] / s
                    # NaN compares false both ways and ends at lo, as MLAS on x86 does.
                    v = v if v > lo else lo
                    v = v if v < hi else hi
                    orow[i] = np.int32(np.rint(v)) + z
            else:
                for i in range(n_inner):
                    z = z3[so, db, i]
                    lo = np.float32(qmin - z)
                    hi = np.float32(qmax - z)
                    v = xr[i] / s3[so, db, i]
                    v = v if v > lo else lo
                    v = v if v < hi else hi
                    orow[i] = np.int32(np.rint(v)) + z
    return -1


@numba.njit(cache=True, nogil=True)
def dequantize_f32(q3, s3, z3, block, out3):  # pragma: no cover - numba
    """``out = float32(q - z) * s`` (the difference is exact: |q - z| < 2^17)."""
    n_outer, n_axis, n_inner = q3.shape
    s_outer = s3.shape[0]
    s_inner = s3.shape[2]
    for o in range(n_outer):
        so = o if s_outer > 1 else 0
        for d in range(n_axis):
            db = d // block
            if s_inner == 1:
                s = s3[so, db, 0]
                z = z3[so, db, 0]
                for i in range(n_inner):
                    out3[o, d, i] = np.float32(np.int32(q3[o, d, i]) - z) * s
            else:
                for i in range(n_inner):
                    out3[o, d, i] = (
                        np.float32(np.int32(q3[o, d, i]) - z3[so, db, i]) * s3[so, db, i]
                    )


__all__ = ["dequantize_f32", "quantize_f32_half_even"]
