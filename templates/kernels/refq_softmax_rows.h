/*
 * refq_softmax_rows.h - one softmax row, as TFLite Micro's int8 and int16 SOFTMAX compute it
 * (refq.kernels.softmax), shared by refq_softmax_* and refq_attention_s8 (C99).
 *
 * int8 input (the gemmlowp path, tabulated). The exponential of an element depends only on
 * d = max - x in [0, 255], so refq tabulates at generation time, from the reference's own
 * arithmetic (SoftmaxS8Params.exp_q31 / exp_q12), in reverse order, index k = 255 - d:
 *   exp_q31[k]  exp_on_negative_values(rescaled -d) in Q0.31 (0 where -d < diff_min),
 *   exp_q12[k]  RoundingDivideByPOT of it by 12, its Q12.19 contribution to the sum;
 * reversed so that the entry of x is base[x] with base = table + 255 - max (Thumb-2 loads take
 * positive register offsets only). Per row: S = sum exp_q12[255 - max + x] (exact, 64 bits), h = 32 - bitlength(S) (clz(S) when
 * S < 2^31), r = one_over_one_plus_x_for_x_in_0_1(normalized S - 2^31), s = 12 - h + 31 - bits;
 * per element q = RoundingDivideByPOT(SRDHM(r, e), s) and the output code min(q, 2^bits - 1) +
 * zero point (-128 or -32768).
 *
 * Both SRDHM operands are >= 0 and s >= 1, so the two roundings fold into one (the identity
 * floor((floor(a / 2^31) + c) / 2^s) = floor((a + c 2^31) / 2^(31+s))):
 *   q = (r e + 2^30 + 2^(30+s)) >> (31 + s) = ((r e + nudge) >> 32) >> (s - 1)
 * with s >= 15 (S >= exp_q12[0] = 2^19, so h <= 12): one UMLAL, one shift per element.
 *
 * Long rows (S >= 2^28 in Q12.19, 512+ elements at the row maximum): the reference's final
 * exponent s reaches 32 (a shift of an int32 by >= 32, undefined in C; TFLM aborts) and S >= 2^31
 * overflows its int32 sum. Here S is exact in 64 bits, normalized with the dropped low bits
 * truncated, and s > 31 gives q = 0: refq's documented "safe" variant (long_rows="safe"), which
 * equals the reference wherever the reference is defined. No undefined behaviour on any row.
 *
 * int16 input (LUT path): d = x - max, v = clamp(MBQM(d, M, shift) + 32767), e = LUT(v, exp_lut),
 * S = sum e, h = clz(S), u = clamp((((S << (h - 1)) + 2^13) >> 14) - 98304),
 * r = LUT(u, one_over_one_plus_x_lut), y = clamp((e r + 2^(30-h)) >> (31-h), 0, 32767), with
 * LUT(v, T) = int16(T[i] + ((int16(T[i+1] - T[i]) * (v & 127) + 64) >> 7)), i = 256 + (v >> 7).
 * A sum above INT32_MAX (undefined in the reference) is refused with REFQ_ARG_ERROR.
 */
#ifndef REFQ_SOFTMAX_ROWS_H
#define REFQ_SOFTMAX_ROWS_H

#include <stdint.h>

#include "refq_fixedpoint.h"
#include "refq_requant.h"
#include "refq_types.h"

/* exp_q12 entries are at most 2^19: up to 8191 of them sum exactly in a uint32_t. */
#define REFQ_SOFTMAX_U32_SUM_MAX_N 8191

/* The tables of the int8 path (256 entries each, index 255 - d = 255 - max + x). */
typedef struct {
    const int32_t *exp_q31;
    const int32_t *exp_q12;
} refq_softmax_s8_tables;

/* The per-row constants of q(e) = (uint32_t)((recip * e + nudge) >> 32) >> shift. */
typedef struct {
    uint32_t recip;
    int32_t shift;  /* s - 1 */
    uint64_t nudge; /* 2^30 + 2^(30+s) */
    int32_t zero;   /* 1: s > 31, every q is 0 (the safe variant's defined value) */
} refq_softmax_s8_scale;

/* max(x[0..n-1]), n >= 1. */
static inline int32_t refq_softmax_max_s8(const int8_t *x, int32_t n)
{
    const int8_t *end = x + n;
    int32_t top = x[0];
    /* Four independent maxima per pass: fewer compare-select chains. */
    if (n >= 4) {
        int32_t m1 = x[1];
        int32_t m2 = x[2];
        int32_t m3 = x[3];
        const int8_t *stop = x + (n & ~3);
        const int8_t *p = x + 4;
        for (; p < stop; p += 4) {
            const int32_t a = p[0];
            const int32_t b = p[1];
            const int32_t c = p[2];
            const int32_t d = p[3];
            top = a > top ? a : top;
            m1 = b > m1 ? b : m1;
            m2 = c > m2 ? c : m2;
            m3 = d > m3 ? d : m3;
        }
        top = m1 > top ? m1 : top;
        m2 = m3 > m2 ? m3 : m2;
        top = m2 > top ? m2 : top;
        x = stop;
    } else {
        ++x;
    }
    for (; x < end; ++x) {
        const int32_t v = *x;
        top = v > top ? v : top;
    }
    return top;
}

/* The row constants of the int8 path for a row of n >= 1 codes with maximum top. Returns
 * REFQ_ARG_ERROR if the tables break the path's preconditions (a sum of 0, an exponent < 1). */
static inline refq_status refq_softmax_s8_row_scale(const int8_t *x, int32_t n, int32_t top,
                                                    const refq_softmax_s8_tables *t,
                                                    int32_t output_bits,
                                                    refq_softmax_s8_scale *scale)
{
    const int32_t *e12 = t->exp_q12 + (255 - top); /* e12[x]: the entry of code x */
    const int8_t *end = x + n;
    uint64_t sum;
    uint32_t hi;
    uint32_t normalized;
    int32_t h;
    int32_t s;
    if (n <= REFQ_SOFTMAX_U32_SUM_MAX_N) {
        uint32_t acc0 = 0;
        uint32_t acc1 = 0;
        const int8_t *stop = x + (n & ~1);
        for (; x < stop; x += 2) {
            acc0 += (uint32_t)e12[x[0]];
            acc1 += (uint32_t)e12[x[1]];
        }
        if (x < end) {
            acc0 += (uint32_t)e12[x[0]];
        }
        sum = (uint64_t)acc0 + acc1;
    } else {
        sum = 0;
        for (; x < end; ++x) {
            sum += (uint32_t)e12[*x];
        }
    }
    if (sum == 0u) {
        return REFQ_ARG_ERROR;
    }
    hi = (uint32_t)(sum >> 32);
    if (hi == 0u) {
        h = refq_count_leading_zeros((uint32_t)sum);
        normalized = (uint32_t)sum << h;
    } else {
        /* S >= 2^32: h = 32 - bitlength(S) < 0, the low -h bits dropped (truncated). */
        h = refq_count_leading_zeros(hi) - 32;
        normalized = (uint32_t)(sum >> (-h));
    }
    s = 12 - h + 31 - output_bits;
    if (s < 1) {
        return REFQ_ARG_ERROR;
    }
    /* normalized is in [2^31, 2^32): its excess over 2^31 fits an int32. */
    scale->recip = (uint32_t)refq_one_over_one_plus_x_for_x_in_0_1(
        (int32_t)(normalized - 0x80000000u));
    scale->zero = s > 31;
    scale->shift = s > 31 ? 0 : s - 1;
    scale->nudge = ((uint64_t)1 << 30) + ((uint64_t)1 << (s > 31 ? 30 : 30 + s));
    return REFQ_SUCCESS;
}

/* q of an exponential e = exp_q31[d] >= 0 (before the clamp to 2^bits - 1). */
REFQ_INLINE uint32_t refq_softmax_s8_q(const refq_softmax_s8_scale *scale, int32_t e)
{
    /* recip < 2^31 and e < 2^31: recip * e + nudge < 2^62 + 2^62. */
    return (uint32_t)(((uint64_t)scale->recip * (uint32_t)e + scale->nudge) >> 32) >> scale->shift;
}

/* min(q, 255) and min(q, 65535) for q < 2^31 (USAT on the DSP path). */
REFQ_INLINE int32_t refq_softmax_cap8(uint32_t q)
{
#if REFQ_USE_DSP
    return (int32_t)__usat((int32_t)q, 8);
#else
    return q > 255u ? 255 : (int32_t)q;
#endif
}

REFQ_INLINE int32_t refq_softmax_cap16(uint32_t q)
{
#if REFQ_USE_DSP
    return (int32_t)__usat((int32_t)q, 16);
#else
    return q > 65535u ? 65535 : (int32_t)q;
#endif
}

/* int16(v): the low 16 bits of v as a signed value (the peer's int16 arithmetic). */
REFQ_INLINE int32_t refq_wrap_s16(int32_t v)
{
    return (int32_t)((uint32_t)v & 0xFFFFu) - (int32_t)(((uint32_t)v & 0x8000u) << 1);
}

/* TFLite LUTLookup(int16 v, const int16_t T[513]) with linear interpolation. */
REFQ_INLINE int32_t refq_lut_lookup_s16(int32_t v, const int16_t *table)
{
    const int32_t i = 256 + refq_asr_s32(v, 7);
    const int32_t base = table[i];
    const int32_t slope = refq_wrap_s16(table[i + 1] - base);
    return refq_wrap_s16(base + refq_asr_s32(slope * (v & 127) + 64, 7));
}

/* The constants of the int16 path. */
typedef struct {
    int32_t input_multiplier;
    int32_t input_shift;
    int32_t rounding; /* REFQ_ROUNDING_DOUBLE or REFQ_ROUNDING_SINGLE */
    const int16_t *exp_lut;   /* 513 entries: exp on [-10, 0] */
    const int16_t *recip_lut; /* 513 entries: 1 / (1 + x) on [0, 1] */
} refq_softmax_s16_tables;

/* e of d = x - max <= 0 (Q0.15). */
REFQ_INLINE int32_t refq_softmax_s16_exp(int32_t d, const refq_softmax_s16_tables *t)
{
    /* clamp(scaled + 32767, -32768, 32767) without overflow (scaled may wrap in the peer). */
    const int32_t scaled = refq_requant(d, t->input_multiplier, t->input_shift, t->rounding);
    return refq_lut_lookup_s16(refq_clamp_s32(scaled, -65535, 0) + 32767, t->exp_lut);
}

/* y[i] in [0, 32767] (int16 softmax codes, scale 1/32768) of the row x[0..n-1], n >= 1. */
static inline refq_status refq_softmax_s16_row(const int16_t *x, int32_t n,
                                               const refq_softmax_s16_tables *t, int16_t *y)
{
    int32_t top = x[0];
    int64_t sum = 0;
    int32_t h;
    int32_t shifted;
    int32_t recip;
    int32_t i;
    for (i = 1; i < n; ++i) {
        top = x[i] > top ? x[i] : top;
    }
    for (i = 0; i < n; ++i) {
        sum += refq_softmax_s16_exp((int32_t)x[i] - top, t);
    }
    if (sum < 1 || sum > INT32_MAX) {
        return REFQ_ARG_ERROR; /* the reference's int32 sum overflows: undefined there */
    }
    h = refq_count_leading_zeros((uint32_t)sum); /* >= 1 */
    shifted = (int32_t)((((uint32_t)sum << (h - 1)) + (1u << 13)) >> 14); /* <= 2^17 */
    recip = refq_lut_lookup_s16(refq_clamp_s32(shifted - 98304, INT16_MIN, INT16_MAX),
                                t->recip_lut);
    for (i = 0; i < n; ++i) {
        const int64_t e = refq_softmax_s16_exp((int32_t)x[i] - top, t);
        const int64_t v = refq_asr_s64(e * recip + ((int64_t)1 << (30 - h)), 31 - h);
        y[i] = (int16_t)(v < 0 ? 0 : (v > 32767 ? 32767 : v));
    }
    return REFQ_SUCCESS;
}

#endif /* REFQ_SOFTMAX_ROWS_H */
