"""Exact sums and means of float32 data, and exact rational -> float32 rounding.

Non-uniform quantizers (TWN, binary, k-means) are defined by means of weights; a float sum
depends on the summation order, so refq sums exactly. Every float32 ``v`` is ``M * 2^(k - 24)``
with ``(f, k) = frexp(v)`` and integer ``M = f * 2^24`` (``|M| < 2^24``, also for subnormals),
so ``v * 2^SHIFT`` with ``SHIFT = 172`` is an integer. Values are bucketed by ``(group, k)``;
bucket sums of ``M`` are exact in float64 (below 2^53 for fewer than 2^29 values per bucket)
and are combined as Python integers.
"""

from __future__ import annotations

import math

import numpy as np

SHIFT = 172  # v * 2^SHIFT is an integer for every float32 v (smallest subnormal: 2^-149)
_K_MIN = -148  # frexp exponent of the smallest float32 subnormal
_K_SPAN = 128 - _K_MIN + 1
_MAX_PER_BUCKET = 1 << 29


def exact_sums(values: np.ndarray, groups: np.ndarray | None = None, ngroups: int = 1) -> list[int]:
    """``sum(values[groups == g]) * 2^SHIFT`` as Python ints, for ``g`` in ``range(ngroups)``."""
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    if v.size >= _MAX_PER_BUCKET:
        raise ValueError(f"exact_sums handles fewer than 2^29 values, got {v.size}")
    g = np.zeros(v.size, dtype=np.int64) if groups is None else np.asarray(groups).reshape(-1)
    f, k = np.frexp(v.astype(np.float64))
    m = np.ldexp(f, 24)  # integer-valued float64
    bins = g.astype(np.int64) * _K_SPAN + (k.astype(np.int64) - _K_MIN)
    sums = np.bincount(bins, weights=m, minlength=ngroups * _K_SPAN).reshape(ngroups, _K_SPAN)
    out = []
    for row in sums:
        total = 0
        for j in np.flatnonzero(row):
            total += int(row[j]) << (int(j) + _K_MIN + SHIFT - 24)
        out.append(total)
    return out


def ratio_to_float32(num: int, den: int, *, mode: str = "nearest") -> np.float32:
    """float32 nearest to ``num / den`` (ties to even), or the largest float32 ``<= num / den``
    with ``mode="floor"``; exact integer arithmetic, subnormals and overflow included."""
    num, den = int(num), int(den)
    if den <= 0:
        raise ValueError("den must be positive")
    if num == 0:
        return np.float32(0.0)
    neg = num < 0
    p = -num if neg else num
    e = p.bit_length() - den.bit_length()  # 2^e <= p/den < 2^(e+2)
    if (p << max(-e, 0)) < (den << max(e, 0)):
        e -= 1
    e = max(e, -126)  # below the normal range the spacing stays 2^-149
    sh = 23 - e
    a, b = (p << sh, den) if sh >= 0 else (p, den << -sh)
    m, r = divmod(a, b)  # significand, truncated
    if mode == "nearest":
        if 2 * r > b or (2 * r == b and m & 1):
            m += 1
    elif mode == "floor":
        if neg and r:
            m += 1  # floor of a negative value rounds its magnitude up
    else:
        raise ValueError(f"mode must be 'nearest' or 'floor', got {mode!r}")
    value = math.ldexp(m, e - 23)
    if value > float(np.finfo(np.float32).max):
        if mode == "floor" and not neg:
            return np.float32(np.finfo(np.float32).max)
        return np.float32(-np.inf if neg else np.inf)
    return np.float32(-value if neg else value)


__all__ = ["SHIFT", "exact_sums", "ratio_to_float32"]
