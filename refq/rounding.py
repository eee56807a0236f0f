"""Rounding of float arrays to integers, exactly, in every mode refq's peers use.

All modes are exact for every finite input: no ``x + 0.5`` (which rounds itself, e.g.
``0.49999997f + 0.5f == 1.0f``). Each works from ``f = floor(x)`` (or ``trunc``) and the exact
fraction ``d = x - f`` (a difference of a float and its floor is always representable).

- ``half_even``  nearest, ties to even (IEEE default; ONNX QuantizeLinear, numpy ``rint``)
- ``half_away``  nearest, ties away from zero (C ``round``; TFLite ``TfLiteRound``)
- ``half_up``    nearest, ties toward +inf (``floor(x + 1/2)`` in exact arithmetic)
- ``floor``      toward -inf
- ``stochastic`` ``floor(x + u)`` in exact arithmetic with ``u ~ U[0, 1)``: rounds up with
  probability ``x - floor(x)``. ``u`` is ``Generator(PCG64(seed)).random(x.shape)`` (float64
  multiples of 2^-53, one per element in C order), so results are reproducible per seed.

Results are integer-valued arrays of the input's float dtype (float16 inputs are computed
in float32 and returned as float32), so NaN, infinities and values beyond int64 survive for
the caller to saturate.
"""

from __future__ import annotations

import numpy as np

from refq.errors import QuantSpecError
from refq.spec import ROUNDING_MODES


def _as_float(x: object) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype in (np.float32, np.float64):
        return arr
    if arr.dtype == np.float16 or arr.dtype.name == "bfloat16":
        return arr.astype(np.float32)  # exact widening
    if arr.dtype.kind in "iub":
        return arr.astype(np.float64)
    raise QuantSpecError(f"cannot round values of dtype {arr.dtype}")


def round_to_int(x: object, mode: str = "half_even", seed: int | None = None) -> np.ndarray:
    """Round every element of ``x`` to an integer value with ``mode`` (see module docstring)."""
    a = _as_float(x)
    if mode == "half_even":
        return np.rint(a)
    if mode == "floor":
        return np.floor(a)
    if mode == "half_away":
        t = np.trunc(a)
        with np.errstate(invalid="ignore"):
            d = np.abs(a - t)  # exact; NaN for infinities, where the compare below is False
        return t + np.where(d >= 0.5, np.sign(a), 0).astype(a.dtype)
    if mode == "half_up":
        f = np.floor(a)
        with np.errstate(invalid="ignore"):
            d = a - f
        return f + (d >= 0.5).astype(a.dtype)
    if mode == "stochastic":
        if seed is None:
            raise QuantSpecError("stochastic rounding needs an explicit seed (seed=None given)")
        u = np.random.Generator(np.random.PCG64(int(seed))).random(a.shape)
        return stochastic_round(a, u)
    raise QuantSpecError(f"unknown rounding mode {mode!r}; known: {', '.join(ROUNDING_MODES)}")


def stochastic_round(a: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``floor(a + u)`` in exact arithmetic for float ``a`` and float64 ``u`` in [0, 1).

    With ``f = floor(a)`` and ``d = a - f`` (exact), ``floor(a + u) = f + [d + u >= 1]``.
    ``1 - u`` is exact in float64 because ``u`` is a multiple of 2^-53 in [0, 1), and ``d``
    widens exactly to float64, so the comparison ``d >= 1 - u`` is exact.
    """
    a = np.asarray(a)
    f = np.floor(a)
    with np.errstate(invalid="ignore"):
        d = (a - f).astype(np.float64)
    return f + (d >= 1.0 - np.asarray(u, dtype=np.float64)).astype(a.dtype)


def round_rational(num: np.ndarray, den: np.ndarray, mode: str, u: np.ndarray | None = None):
    """Round ``num / den`` (integer arrays, object dtype for Python ints; ``den > 0``) exactly.

    ``floor = num // den`` and remainder ``r = num - floor * den`` in ``[0, den)``; the modes
    then compare ``2r`` with ``den``. Stochastic rounding needs float64 ``u`` in [0, 1)
    (multiples of 2^-53): it rounds up when ``u * den >= den - r``, compared in integers.
    Returns an array of Python ints (object dtype).
    """
    num = np.asarray(num, dtype=object)
    den = np.asarray(den, dtype=object)
    fl = num // den
    r = num - fl * den
    twice = 2 * r
    if mode == "floor":
        up = np.zeros(np.shape(fl), dtype=bool)
    elif mode == "half_up":
        up = twice >= den
    elif mode == "half_even":
        up = (twice > den) | ((twice == den) & (fl % 2 == 1))
    elif mode == "half_away":
        up = np.where(num >= 0, twice >= den, twice > den)
    elif mode == "stochastic":
        if u is None:
            raise QuantSpecError("stochastic rounding needs uniform samples u")
        ku = np.ldexp(np.asarray(u, dtype=np.float64), 53).astype(np.int64).astype(object)
        up = ku * den >= (den - r) * (2**53)
    else:
        raise QuantSpecError(f"unknown rounding mode {mode!r}; known: {', '.join(ROUNDING_MODES)}")
    return fl + np.asarray(up, dtype=bool).astype(object) * 1


__all__ = ["ROUNDING_MODES", "round_rational", "round_to_int", "stochastic_round"]
