"""Compiled run paths of the kernels an LLM runs per token (ATTENTION, ROPE, RMS_NORM /
LAYER_NORM, int16 ADD / SUB): the same integer arithmetic as the kernel modules' NumPy code, in
one Numba pass each, so a decode step costs microseconds per op instead of dozens of NumPy calls.

Each function here restates its kernel's formulas (see the kernel module's docstring) on scalars:

* :func:`mbqm` -- TFLite ``MultiplyByQuantizedMultiplier`` (double rounding:
  ``RDBPOT(SRDHM(wrap32(x * 2^max(s, 0)), M), max(-s, 0))``; single rounding:
  ``wrap32((x M + 2^(30 - s)) >> (31 - s))``), for int32-valued ``x``;
* :func:`recip_q31` -- gemmlowp ``one_over_one_plus_x_for_x_in_0_1`` (int32 raw values): Newton-
  Raphson in Q2.29 from ``48/17 - 32/17 d``, ``d = RoundingHalfSum(a, 2^31 - 1)``, three steps
  ``x += SaturatingRoundingMultiplyByPOT<2>(SRDHM(x, 2^29 - SRDHM(d, x)))``, result ``x`` times 2
  saturated;
* :func:`attention` -- refq.kernels.attention (int8 or int16 scores, TFLM int8 / int16 softmax
  over the causal prefix);
* :func:`rope` -- refq.kernels.rope; :func:`integer_norm` -- refq.kernels.norms;
  :func:`binary16` -- refq.kernels.elementwise ADD / SUB on int16 codes.

Whenever an input would make the NumPy path raise (a softmax row where TFLite is undefined, data
outside int32), these functions return ``None`` and the caller runs the NumPy path, which
raises the documented error. tests/test_kernels_fastpath.py checks every function against the
scalar oracles (refq.oracle and the kernel tests' Python-int restatements).
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from refq.intmatmul import int_matmul

SMALL_T = 8
"""ATTENTION with at most this many new tokens computes its dot products in the compiled loop;
longer sequences use the exact BLAS products of :func:`refq.intmatmul.int_matmul`."""


# --- scalar fixed point ----------------------------------------------------------------------


@numba.njit(cache=True, nogil=True, inline="always")
def _wrap32(x):  # pragma: no cover - compiled
    return ((x + 2147483648) & 4294967295) - 2147483648


@numba.njit(cache=True, nogil=True, inline="always")
def _srdhm(a, b):  # pragma: no cover - compiled
    if a == -2147483648 and b == -2147483648:
        return np.int64(2147483647)
    return (a * b + 1073741824) >> 31


@numba.njit(cache=True, nogil=True)
def mbqm(x, m, shift, single):  # pragma: no cover - compiled
    """MultiplyByQuantizedMultiplier of an int32-valued int64 (module docstring)."""
    if single:
        total = 31 - shift
        return _wrap32((x * m + (np.int64(1) << (total - 1))) >> total)
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    h = _srdhm(_wrap32(x << left), m)  # floor((v M + 2^30) / 2^31), saturating
    mask = (np.int64(1) << right) - 1
    threshold = (mask >> 1) + (1 if h < 0 else 0)
    return (h >> right) + (1 if (h & mask) > threshold else 0)


@numba.njit(cache=True, nogil=True, inline="always")
def _sat_shl(x, e):  # pragma: no cover - compiled
    # SaturatingRoundingMultiplyByPOT with a positive exponent on int32 raw values.
    threshold = (np.int64(1) << (31 - e)) - 1
    if x > threshold:
        return np.int64(2147483647)
    if x < -threshold:
        return np.int64(-2147483648)
    return x << e


@numba.njit(cache=True, nogil=True)
def recip_q31(a):  # pragma: no cover - compiled
    """gemmlowp one_over_one_plus_x_for_x_in_0_1 on an int32 raw value ``a`` in [0, 2^31)."""
    total = a + 2147483647
    t = total + (1 if total >= 0 else -1)
    half = t // 2 if t >= 0 else -((-t) // 2)  # RoundingHalfSum: C truncating division
    x = _wrap32(1515870810 + _srdhm(half, np.int64(-1010580540)))
    for _ in range(3):
        err = _wrap32(536870912 - _srdhm(half, x))
        x = _wrap32(x + _sat_shl(_srdhm(x, err), 2))
    return _sat_shl(x, 1)


@numba.njit(cache=True, nogil=True, inline="always")
def _lut16(v, t):  # pragma: no cover - compiled
    # TFLite LUTLookup(int16): linear interpolation in a 513-entry table, int16 wraps.
    i = 256 + (v >> 7)
    base = np.int64(t[i])
    slope = ((np.int64(t[i + 1]) - base + 32768) & 65535) - 32768
    return ((base + ((slope * (v & 127) + 64) >> 7) + 32768) & 65535) - 32768


# --- ATTENTION -------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _store(x, cache, pos, zp_in, m, shift, zp_out, copy, single):  # pragma: no cover
    # x [T, Hkv * D] int8 -> cache [Hkv, S, D] at positions pos.. (attention step 1)
    t_len = x.shape[0]
    hkv, _, d = cache.shape
    for t in range(t_len):
        for g in range(hkv):
            for e in range(d):
                c = np.int64(x[t, g * d + e])
                if not copy:
                    c = mbqm(c - zp_in, m, shift, single) + zp_out
                    c = -128 if c < -128 else (127 if c > 127 else c)
                cache[g, pos + t, e] = c


@numba.njit(cache=True, nogil=True)
def _scores_direct(q, kc, pos, group, zq, zk, acc):  # pragma: no cover - compiled
    # acc[h, t, j] = sum_d (q - zq)(kc - zk) for j <= pos + t (attention step 2, exact int64)
    t_len = q.shape[0]
    hq = acc.shape[0]
    d = kc.shape[2]
    for h in range(hq):
        g = h // group
        for t in range(t_len):
            for j in range(pos + t + 1):
                s = np.int64(0)
                for e in range(d):
                    s += (np.int64(q[t, h * d + e]) - zq) * (np.int64(kc[g, j, e]) - zk)
                acc[h, t, j] = s


@numba.njit(cache=True, nogil=True)
def _probs(
    acc,
    pos,
    m_s,
    sh_s,
    lo,
    hi,
    s16,
    exp_q12,
    exp_q31,
    sm_m,
    sm_shift,
    exp_lut,
    rec_lut,
    out_bits,
    safe,
    single,
    probs,
):  # pragma: no cover - compiled
    # Score codes (step 2's requantization) and the softmax of each causal row (step 3), as
    # probabilities P (int8 scores: code + 128 in [0, 255]; int16: [0, 32767]); 0 past the
    # causal prefix. Returns the first row on which the NumPy path raises, else -1.
    hq, t_len, _ = acc.shape
    n_cols = probs.shape[2]
    row_scores = np.empty(n_cols, np.int64)
    row_e = np.empty(n_cols, np.int64)
    for h in range(hq):
        for t in range(t_len):
            n = pos + t + 1
            top = np.int64(-(1 << 40))
            for j in range(n):
                a = np.int64(acc[h, t, j])
                if a < -2147483648 or a > 2147483647:
                    return h * t_len + t  # MultiplyByQuantizedMultiplier needs int32
                c = mbqm(a, m_s, sh_s, single)
                c = lo if c < lo else (hi if c > hi else c)
                row_scores[j] = c
                if c > top:
                    top = c
            if not s16:
                total = np.int64(0)
                for j in range(n):
                    total += exp_q12[top - row_scores[j]]
                bits = 0
                while (total >> bits) > 0:
                    bits += 1
                hh = 32 - bits
                shifted = total << hh if hh >= 0 else total >> (-hh)
                exponent = 12 - hh + 31 - out_bits
                if total > 2147483647 or exponent > 31:
                    if not safe:
                        return h * t_len + t
                    for j in range(n):
                        probs[h, t, j] = 0  # the safe variant: minimum code -128, + 128
                else:
                    recip = recip_q31(shifted - 2147483648)
                    mask = (np.int64(1) << exponent) - 1
                    for j in range(n):
                        prod = (recip * exp_q31[top - row_scores[j]] + 1073741824) >> 31
                        qv = (prod >> exponent) + (1 if (prod & mask) > (mask >> 1) else 0)
                        v = qv - 128
                        v = 127 if v > 127 else v
                        probs[h, t, j] = v + 128
            else:
                total = np.int64(0)
                for j in range(n):
                    sc = mbqm(row_scores[j] - top, sm_m, sm_shift, single) + 32767
                    sc = -32768 if sc < -32768 else (32767 if sc > 32767 else sc)
                    e = _lut16(sc, exp_lut)
                    row_e[j] = e
                    total += e
                if total > 2147483647:
                    return h * t_len + t
                bits = 0
                while (total >> bits) > 0:
                    bits += 1
                hh = 32 - bits
                shifted = ((total << (hh - 1)) + 8192) >> 14
                u = shifted - 98304
                u = -32768 if u < -32768 else (32767 if u > 32767 else u)
                recip = _lut16(u, rec_lut)
                right = 31 - hh
                for j in range(n):
                    v = (row_e[j] * recip + (np.int64(1) << (right - 1))) >> right
                    probs[h, t, j] = 0 if v < 0 else (32767 if v > 32767 else v)
            for j in range(n, n_cols):
                probs[h, t, j] = 0
    return -1


@numba.njit(cache=True, nogil=True)
def _context_direct(probs, vc, pos, group, zv, m_o, sh_o, zp_o, single, out):  # pragma: no cover
    # out[t, h*D + e] = requant(sum_j P[h, t, j] (vc[g, j, e] - zv)) (step 4)
    hq, t_len, _ = probs.shape
    d = vc.shape[2]
    acc = np.empty(d, np.int64)
    for h in range(hq):
        g = h // group
        for t in range(t_len):
            n = pos + t + 1
            acc[:] = 0
            for j in range(n):  # cache rows are contiguous along e: accumulate row by row
                pj = np.int64(probs[h, t, j])
                if pj != 0:
                    for e in range(d):
                        acc[e] += pj * (np.int64(vc[g, j, e]) - zv)
            for e in range(d):
                s = acc[e]
                if s < -2147483648 or s > 2147483647:
                    return h
                y = mbqm(s, m_o, sh_o, single) + zp_o
                out[t, h * d + e] = -128 if y < -128 else (127 if y > 127 else y)
    return -1


@numba.njit(cache=True, nogil=True)
def _context_requant(acc_o, m_o, sh_o, zp_o, single, out):  # pragma: no cover - compiled
    # acc_o [Hq, T, D] exact (int or float holding integers) -> out [T, Hq * D] int8
    hq, t_len, d = acc_o.shape
    for h in range(hq):
        for t in range(t_len):
            for e in range(d):
                a = np.int64(acc_o[h, t, e])
                if a < -2147483648 or a > 2147483647:
                    return h
                y = mbqm(a, m_o, sh_o, single) + zp_o
                out[t, h * d + e] = -128 if y < -128 else (127 if y > 127 else y)
    return -1


def _rq(r) -> tuple[int, int, int, int, bool]:
    return r.input_zero_point, r.multiplier, r.shift, r.output_zero_point, r.copy


def attention(q, k, v, pos: int, k_cache, v_cache, p) -> np.ndarray | None:
    """ATTENTION (refq.kernels.attention) on validated inputs; ``None`` where the NumPy path
    raises. ``q``, ``k``, ``v`` are int8 ``[T, H * D]``; caches int8 ``[Hkv, S, D]``."""
    from refq.kernels.softmax import SoftmaxS8Params

    hq, d, g = p.num_heads, p.head_dim, p.group
    t_len = q.shape[0]
    end = pos + t_len
    s8 = isinstance(p.softmax, SoftmaxS8Params)
    if s8 and p.softmax.output_bits != 8:
        return None
    single = p.rounding == "single"
    q = np.ascontiguousarray(q.reshape(t_len, hq * d))
    for x, cache, r in ((k, k_cache, p.k_store), (v, v_cache, p.v_store)):
        zi, m, s, zo, copy = _rq(r)
        _store(np.ascontiguousarray(x.reshape(t_len, -1)), cache, pos, zi, m, s, zo, copy, single)
    if t_len <= SMALL_T:
        acc = np.empty((hq, t_len, end), np.int64)
        _scores_direct(q, k_cache, pos, g, p.q_zero_point, p.k_cache_zero_point, acc)
    else:
        hkv = p.num_kv_heads
        qh = (q.reshape(t_len, hkv, g, d).astype(np.int32) - p.q_zero_point).transpose(1, 2, 0, 3)
        kh = k_cache[:, :end, :].astype(np.int32) - p.k_cache_zero_point
        acc = int_matmul(qh.reshape(hkv, g * t_len, d), kh.transpose(0, 2, 1))
        acc = acc.reshape(hq, t_len, end)
    sm = p.softmax
    probs = np.empty((hq, t_len, end), np.int32)
    z = np.zeros(1, np.int64)
    z16 = np.zeros(2, np.int16)
    bad = _probs(
        acc, pos, p.score.multiplier, p.score.shift,
        -128 if p.score_dtype == "int8" else -32768, 127 if p.score_dtype == "int8" else 32767,
        not s8,
        sm.exp_q12.astype(np.int64) if s8 else z, sm.exp_q31.astype(np.int64) if s8 else z,
        0 if s8 else sm.input_multiplier, 0 if s8 else sm.input_shift,
        z16 if s8 else sm.exp_lut, z16 if s8 else sm.one_over_one_plus_x_lut,
        sm.output_bits if s8 else 16, s8 and sm.long_rows == "safe", single, probs,
    )  # fmt: skip
    if bad >= 0:
        return None
    out = np.empty((t_len, hq * d), np.int8)
    o = p.output
    if t_len <= SMALL_T:
        bad = _context_direct(
            probs, v_cache, pos, g, p.v_cache_zero_point, o.multiplier, o.shift,
            o.output_zero_point, single, out,
        )  # fmt: skip
    else:
        hkv = p.num_kv_heads
        vh = v_cache[:, :end, :].astype(np.int32) - p.v_cache_zero_point
        acc_o = int_matmul(probs.reshape(hkv, g * t_len, end), vh).reshape(hq, t_len, d)
        bad = _context_requant(acc_o, o.multiplier, o.shift, o.output_zero_point, single, out)
    return None if bad >= 0 else out


# --- ROPE ------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _rope(x, pos, cos, sin, first, second, d, zp, m, shift, zp_out, lo, hi, single, out):
    # pragma: no cover - compiled
    t_len, width = x.shape
    heads = width // d
    for t in range(t_len):
        for hd in range(heads):
            base = hd * d
            for i in range(first.shape[0]):
                c = np.int64(cos[pos + t, i])
                s = np.int64(sin[pos + t, i])
                ia = base + first[i]
                ib = base + second[i]
                a = np.int64(x[t, ia]) - zp
                b = np.int64(x[t, ib]) - zp
                ya = mbqm(a * c - b * s, m, shift, single) + zp_out
                yb = mbqm(b * c + a * s, m, shift, single) + zp_out
                out[t, ia] = lo if ya < lo else (hi if ya > hi else ya)
                out[t, ib] = lo if yb < lo else (hi if yb > hi else yb)


@functools.lru_cache(maxsize=64)
def _rope_consts(head_dim: int, convention: str, output_dtype: str):
    from refq.kernels.rope import pair_indices
    from refq.spec import QDType

    dt = QDType.parse(output_dtype)
    first, second = pair_indices(head_dim, convention)  # type: ignore[arg-type]
    return first.astype(np.int64), second.astype(np.int64), dt.storage, int(dt.qmin), int(dt.qmax)


def rope(x: np.ndarray, pos: int, p) -> np.ndarray:
    """ROPE (refq.kernels.rope) of validated int8 codes ``x`` ([T, H*D] or [T, H, D])."""
    first, second, storage, lo, hi = _rope_consts(p.head_dim, p.convention, p.output_dtype)
    x2 = np.ascontiguousarray(x.reshape(x.shape[0], -1))
    out = np.empty(x2.shape, storage)
    _rope(
        x2, pos, p.cos_q15, p.sin_q15, first, second, p.head_dim, p.input_zero_point,
        p.output_multiplier, p.output_shift, p.output_zero_point, lo, hi,
        p.rounding == "single", out,
    )  # fmt: skip
    return out.reshape(x.shape)


# --- elementwise int8 ops by table -----------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _pair_lookup(table, a, b, out):  # pragma: no cover - compiled
    for i in range(a.shape[0]):
        out[i] = table[(np.int64(a[i]) << 8) + np.int64(b[i]) + 32896]


def pair_lookup(table: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``table[256 (a + 128) + b + 128]`` for int8 codes ``a``, ``b`` (broadcasting): the lookup
    of an elementwise op tabulated on every code pair."""
    if a.shape != b.shape:
        return table[(a.astype(np.intp) << 8) + b.astype(np.intp) + 32896]
    out = np.empty(a.size, table.dtype)
    _pair_lookup(table, np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1),
                 out)  # fmt: skip
    return out.reshape(a.shape)


# --- LAYER_NORM / RMS_NORM -------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _norm(
    rows,
    subtract_mean,
    zp,
    var_offset,
    newton,
    numerator,
    recip_shift,
    a,
    b,
    out_shift,
    zp_out,
    qmin,
    qmax,
    out,
):  # pragma: no cover - compiled
    r_count, n = rows.shape
    d = np.empty(n, np.int64)
    half = np.int64(1) << (out_shift - 1)
    for r in range(r_count):
        if subtract_mean:
            total = np.int64(0)
            for c in range(n):
                total += np.int64(rows[r, c])
            qt = total // n  # round_half_even(total / n)
            twice = 2 * (total - qt * n)
            if twice > n or (twice == n and (qt & 1) == 1):
                qt += 1
            center = qt
        else:
            center = zp
        var = var_offset
        for c in range(n):
            d[c] = np.int64(rows[r, c]) - center
            var += d[c] * d[c]
        if newton:
            std = np.int64(65536)
            for _ in range(10):
                std = (std + var // std) // 2
        else:
            std = np.int64(math.sqrt(float(var)))
            while std * std > var:
                std -= 1
            while (std + 1) * (std + 1) <= var:
                std += 1
        factor = numerator // std if std > 0 else np.int64(0)
        for c in range(n):
            y = (d[c] * factor) >> recip_shift
            t = y * np.int64(a[c]) + b[c]
            o = ((t + half) >> out_shift) + zp_out
            out[r, c] = qmin if o < qmin else (qmax if o > qmax else o)


def integer_norm(x: np.ndarray, p) -> np.ndarray:
    """LAYER_NORM / RMS_NORM (refq.kernels.norms) of validated codes ``x``."""
    rows = np.ascontiguousarray(x.reshape(-1, p.n))
    out = np.empty(rows.shape, np.dtype(p.output_dtype))
    _norm(
        rows, p.subtract_mean, p.input_zero_point, p.var_offset, p.sqrt == "newton10",
        p.recip_numerator, p.recip_shift, p.multiplier, p.bias, p.out_shift, p.output_zero_point,
        p.qmin, p.qmax, out,
    )  # fmt: skip
    return out.reshape(x.shape)


# --- int16 ADD / SUB -------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _binary16(a, b, sub, off1, off2, left, m1, s1, m2, s2, mo, so, off_o, lo, hi, single, out):
    # pragma: no cover - compiled
    # Returns the first index whose shifted input leaves int32 (the NumPy path raises), or -1.
    for i in range(a.shape[0]):
        x1 = (np.int64(a[i]) + off1) << left
        x2 = (np.int64(b[i]) + off2) << left
        if x1 < -2147483648 or x1 > 2147483647 or x2 < -2147483648 or x2 > 2147483647:
            return i
        y1 = mbqm(x1, m1, s1, single)
        y2 = mbqm(x2, m2, s2, single)
        acc = y1 - y2 if sub else y1 + y2
        if acc < -2147483648 or acc > 2147483647:
            return i
        y = mbqm(acc, mo, so, single) + off_o
        out[i] = lo if y < lo else (hi if y > hi else y)
    return -1


def binary16(x1: np.ndarray, x2: np.ndarray, p) -> np.ndarray | None:
    """ADD / SUB (refq.kernels.elementwise) of same-shape int16 codes; ``None`` where the NumPy
    path raises."""
    a = np.ascontiguousarray(x1).reshape(-1)
    b = np.ascontiguousarray(x2).reshape(-1)
    out = np.empty(a.shape, np.int16)
    bad = _binary16(
        a, b, p.op == "SUB", p.input1_offset, p.input2_offset, p.left_shift,
        p.input1_multiplier, p.input1_shift, p.input2_multiplier, p.input2_shift,
        p.output_multiplier, p.output_shift, p.output_offset, p.act_min, p.act_max,
        p.rounding == "single", out,
    )  # fmt: skip
    return None if bad >= 0 else out.reshape(x1.shape)


__all__ = [
    "SMALL_T",
    "attention",
    "binary16",
    "integer_norm",
    "mbqm",
    "pair_lookup",
    "recip_q31",
    "rope",
]
