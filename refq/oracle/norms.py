"""Exact scalar restatement of the integer LayerNorm / RMSNorm of :mod:`refq.kernels.norms`.

One row at a time with Python ``int`` and :class:`~fractions.Fraction`, from the definitions:
the mean is ``S/n`` rounded half to even (torch.round), the square root either ``math.isqrt``
(to which I-BERT's i-sqrt, :func:`ibert_isqrt`, converges) or I-ViT's ten Newton steps from
2^16, divisions are floors of rationals, and every prepare-time constant is characterized by
what it *is* (the integer nearest to a real number, the largest shift that fits) rather than by
how the kernel computes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from refq.oracle.fixedpoint import round_half_away, round_half_up
from refq.oracle.quantize import round_fraction


def round_half_even(q: Fraction) -> int:
    return round_fraction(q, "half_even")


def nearest_to_sqrt_times(sign_value: Fraction, square: Fraction) -> int:
    """The integer ``m`` nearest to ``sign(sign_value) * sqrt(square)``, ties away from zero.

    Characterized without computing a root: ``|m|`` is the smallest ``j >= 0`` with
    ``square < (j + 1/2)^2``, i.e. ``4 * num < (2j + 1)^2 * den`` for ``square = num / den``.
    """
    num, den = square.numerator, square.denominator

    def above(j: int) -> bool:
        return 4 * num < (2 * j + 1) ** 2 * den

    hi = 1
    while not above(hi):  # exponential search, then bisection
        hi *= 2
    lo = 0
    while lo < hi:
        mid = (lo + hi) // 2
        if above(mid):
            hi = mid
        else:
            lo = mid + 1
    return -lo if sign_value < 0 else lo


def affine_constants(
    gamma: Sequence[Fraction],
    beta: Sequence[Fraction],
    n: int,
    out_scale: Fraction,
    out_bits: int,
) -> tuple[int, list[int], list[int]]:
    """``(K, A, B)``: the largest ``K`` in [1, 58 - out_bits] with every
    ``|A[c]| = |nearest(gamma[c] * sqrt(n) * 2^(K-30) / s_out)| <= 2^30``;
    ``B[c] = nearest(beta[c] * 2^K / s_out)`` clamped to ``+-2^61``."""

    def a_of(g: Fraction, k: int) -> int:
        square = g * g * n * Fraction(2) ** (2 * k - 60) / (out_scale * out_scale)
        return nearest_to_sqrt_times(g, square)

    k = 58 - out_bits
    while k >= 1 and any(abs(a_of(g, k)) > 1 << 30 for g in gamma):
        k -= 1
    if k < 1:
        raise ValueError("no shift fits")
    a = [a_of(g, k) for g in gamma]
    b = [max(-(1 << 61), min(1 << 61, round_half_away(v * (1 << k) / out_scale))) for v in beta]
    return k, a, b


def ibert_isqrt(n: int) -> int:
    """I-BERT's i-sqrt (Algorithm 4): ``x <- floor((x + floor(n / x)) / 2)`` from
    ``2^ceil(bits(n) / 2)`` until it stops decreasing; 0 for ``n = 0``."""
    if n == 0:
        return 0
    x = 1 << -(-n.bit_length() // 2)
    while True:
        nxt = (x + n // x) // 2
        if nxt >= x:
            return x
        x = nxt


def newton10(var: int) -> int:
    k = 1 << 16
    for _ in range(10):
        k = math.floor(Fraction(k + math.floor(Fraction(var, k)), 2))
    return k


def norm_rows(
    rows: Sequence[Sequence[int]],
    *,
    layer: bool,
    zero_point_in: int,
    in_scale: Fraction,
    in_bits: int,
    gamma: Sequence[Fraction],
    beta: Sequence[Fraction],
    epsilon: Fraction,
    out_scale: Fraction,
    zero_point_out: int,
    out_range: tuple[int, int],
    sqrt: str,
    ivit: bool,
) -> list[list[int]]:
    """Output rows of the integer LayerNorm (``layer``) / RMSNorm, from the definitions."""
    n = len(gamma)
    out_bits = 8 if out_range[1] - out_range[0] < 256 else 16
    k, a, b = affine_constants(gamma, beta, n, out_scale, out_bits)
    var_offset = round_half_away(epsilon * n / (in_scale * in_scale))
    p = 31 if in_bits == 8 else 39
    numerator = (1 << p) - (1 if ivit else 0)
    lo, hi = out_range
    result = []
    for x in rows:
        if layer:
            mean = round_half_even(Fraction(sum(x), n))
            d = [v - mean for v in x]
        else:
            d = [v - zero_point_in for v in x]
        var = sum(v * v for v in d) + var_offset
        std = math.isqrt(var) if sqrt == "exact" else newton10(var)
        factor = math.floor(Fraction(numerator, std)) if std > 0 else 0
        y = [math.floor(Fraction(v * factor, 1 << (p - 30))) for v in d]
        out = []
        for c in range(n):
            q = round_half_up(Fraction(y[c] * a[c] + b[c], 1 << k)) + zero_point_out
            out.append(min(hi, max(lo, q)))
        result.append(out)
    return result
