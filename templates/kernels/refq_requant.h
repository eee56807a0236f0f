/*
 * refq_requant.h - the requantization step of refq's generated kernels, fused for speed.
 *
 * Each function returns exactly the value of the refq_fixedpoint.h function named in its
 * comment (and so of refq.fixedpoint.multiply_by_quantized_multiplier), for a multiplier
 * M >= 0 (QuantizeMultiplier never produces a negative one) and a shift in [-31, 30]. The
 * two roundings of the TFLite / TFLM form are folded into one 64-bit add and shift:
 *
 *   double:  RDBPOT(SRDHM(x, M), r) with q = x*M + 2^30, h = floor(q / 2^31):
 *            r = 0:  h
 *            r > 0:  floor((q + 2^(30+r) - [q < 0] * 2^31) / 2^(31+r))
 *            because RDBPOT(h, r) = floor((h + 2^(r-1) - [h < 0]) / 2^r) (half away from
 *            zero), h < 0 exactly when q < 0, and floor(floor(a/b + c)/d) = floor((a+cb)/(bd)).
 *   single:  (x*M + 2^(30-s)) >> (31-s), wrapped to int32 (TFLITE_SINGLE_ROUNDING).
 *
 * No undefined behaviour: the left shift of the double form wraps through uint32_t, products
 * are exact in int64 (|x*M| < 2^62), right shifts of negative values go through refq_asr_*.
 */
#ifndef REFQ_REQUANT_H
#define REFQ_REQUANT_H

#include <stdint.h>
#include <string.h>

#include "refq_fixedpoint.h"

/* The rounding field of kernel parameters. */
#define REFQ_ROUNDING_DOUBLE 0 /* gemmlowp SRDHM + RoundingDivideByPOT (TFLM, CMSIS-NN default) */
#define REFQ_ROUNDING_SINGLE 1 /* one round half up (TFLITE_SINGLE_ROUNDING, LiteRT reference) */

/* refq_multiply_by_quantized_multiplier_double(x, M, shift) for M >= 0. */
REFQ_INLINE int32_t refq_requant_double(int32_t x, int32_t multiplier, int32_t shift)
{
    if (shift > 0) {
        const int64_t q = (int64_t)refq_shl_wrap_s32(x, shift) * multiplier + ((int64_t)1 << 30);
        return (int32_t)refq_asr_s64(q, 31);
    } else {
        const int32_t r = -shift;
        int64_t q = (int64_t)x * multiplier + ((int64_t)1 << 30);
        if (r == 0) {
            return (int32_t)refq_asr_s64(q, 31);
        }
        q += ((int64_t)1 << (30 + r)) - (q < 0 ? ((int64_t)1 << 31) : 0);
        /* q / 2^(31+r) = (q / 2^32) / 2^(r-1); |q| < 2^63 and q / 2^32 fits int32. */
        return refq_asr_s32((int32_t)refq_asr_s64(q, 32), r - 1);
    }
}

/* refq_multiply_by_quantized_multiplier_single(x, M, shift). */
REFQ_INLINE int32_t refq_requant_single(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t total = 31 - shift; /* 1 .. 62 */
    const int64_t t = (int64_t)x * multiplier + ((int64_t)1 << (total - 1));
    if (total >= 32) {
        return refq_asr_s32((int32_t)refq_asr_s64(t, 32), total - 32);
    }
    return refq_wrap_s64_to_s32(refq_asr_s64(t, total));
}

/* Either rounding, chosen by a REFQ_ROUNDING_* value. */
REFQ_INLINE int32_t refq_requant(int32_t x, int32_t multiplier, int32_t shift, int32_t rounding)
{
    return rounding == REFQ_ROUNDING_SINGLE ? refq_requant_single(x, multiplier, shift)
                                            : refq_requant_double(x, multiplier, shift);
}

/* The int32 sum a + b with two's-complement wrap (the peers' int32 accumulators). */
REFQ_INLINE int32_t refq_wrap_add(int32_t a, int32_t b)
{
    return refq_wrap_s32((uint32_t)a + (uint32_t)b);
}

/* round_half_away(double(x) * real), clamped to int32 (LiteRT 2.3's reference
 * FULLY_CONNECTED, refq.kernels.requant kind "float64"); real is the bit pattern of a double.
 * IEEE double arithmetic, in software where the FPU has none: the same bits everywhere.
 * refq_round_half_away_double is the rounding of the product v. */
REFQ_INLINE int32_t refq_round_half_away_double(double v)
{
    double a;
    int64_t r;
    a = v < 0.0 ? -v : v;
    if (a > 4.0e18) {
        a = 4.0e18; /* beyond any output range; keeps the conversion defined */
    }
    r = (int64_t)a; /* floor, a >= 0; a - r is exact */
    if (a - (double)r >= 0.5) {
        ++r;
    }
    if (r > INT32_MAX) {
        r = INT32_MAX; /* only the clamp to the output range follows */
    }
    return v < 0.0 ? (int32_t)-r : (int32_t)r;
}

REFQ_INLINE int32_t refq_requant_float64(int32_t x, uint64_t real_bits)
{
    double real;
    memcpy(&real, &real_bits, sizeof real);
    return refq_round_half_away_double((double)x * real);
}

/* The same of an int64 accumulator (LiteRT's 16x8 FULLY_CONNECTED): double(x) rounds to nearest
 * as NumPy's float64(x) does (exact for |x| < 2^53, which 16x8 accumulators are). */
REFQ_INLINE int32_t refq_requant_float64_s64(int64_t x, uint64_t real_bits)
{
    double real;
    memcpy(&real, &real_bits, sizeof real);
    return refq_round_half_away_double((double)x * real);
}

/* Everything a kernel's requantization step needs. */
typedef struct {
    const int32_t *multiplier;       /* one value, or one per channel; >= 0 */
    const int32_t *shift;            /* in [-31, 30] */
    const uint64_t *real_multiplier; /* NULL, or the double bits of kind "float64" (then the
                                        multiplier and shift are unused) */
    int32_t per_channel;             /* 1: one multiplier (or real multiplier) per channel */
    int32_t rounding;                /* REFQ_ROUNDING_DOUBLE or REFQ_ROUNDING_SINGLE */
    int32_t output_offset;           /* +zp_out */
    refq_activation activation;      /* clamp range, zero point included */
} refq_requant_params;

/* requant(x) of channel c before the zero point is added (the generic, per-element form). */
REFQ_INLINE int32_t refq_requant_channel(int32_t x, const refq_requant_params *q, int32_t c)
{
    const int32_t i = q->per_channel ? c : 0;
    if (q->real_multiplier != NULL) {
        return refq_requant_float64(x, q->real_multiplier[i]);
    }
    return refq_requant(x, q->multiplier[i], q->shift[i], q->rounding);
}

/* clamp(v + zp, activation) for a requant result v, without overflowing int32. */
REFQ_INLINE int32_t refq_requant_clamp(int32_t v, const refq_requant_params *q)
{
    const int32_t zp = q->output_offset;
    return refq_clamp_s32(v, q->activation.min - zp, q->activation.max - zp) + zp;
}

/* requant of an int64 accumulator of channel c (the 16x8 kernels): kind "s64" (TFLM's int64
 * MultiplyByQuantizedMultiplier with the 16-bit reduced multiplier, refq_fixedpoint.h; shift in
 * [-31, 7], |x| < 2^47; the same under every fixed-point profile) or "float64". */
REFQ_INLINE int32_t refq_requant_channel_s64(int64_t x, const refq_requant_params *q, int32_t c)
{
    const int32_t i = q->per_channel ? c : 0;
    if (q->real_multiplier != NULL) {
        return refq_requant_float64_s64(x, q->real_multiplier[i]);
    }
    return refq_multiply_by_quantized_multiplier_s64(x, q->multiplier[i], q->shift[i]);
}

/* The int16 store: clamp(v + zp) into [lo + zp, hi + zp]. */
REFQ_INLINE int16_t refq_store_s16(int32_t v, int32_t lo, int32_t hi, int32_t zp)
{
    return (int16_t)(refq_clamp_s32(v, lo, hi) + zp);
}

/* The int8 store: clamp(v + zp) into [lo + zp, hi + zp]; full: the range is all of int8
 * (then a saturating add and SSAT on the DSP path). */
REFQ_INLINE int8_t refq_store_s8(int32_t v, int32_t lo, int32_t hi, int32_t zp, int full)
{
    if (full) {
        return (int8_t)refq_sat_s8(refq_saturating_add(v, zp));
    }
    return (int8_t)(refq_clamp_s32(v, lo, hi) + zp);
}

/* The per-tensor requantize loops, specialized on the rounding and the clamp:
 * double, shift < 0, M in (2^30, 2^31): x*M + 2^30 < 0 exactly when x < 0, so
 *   result = (x*M + 2^30 + 2^(30+r) - [x < 0] * 2^31) >> (31 + r)      (one SMLAL, three ops)
 * single, shift < 0: (x*M + 2^(30+r)) >> (31 + r). */
REFQ_INLINE void refq_requantize_loop_s8(const int32_t *acc, int32_t n, int32_t m, int32_t shift,
                                         int32_t single, int32_t lo, int32_t hi, int32_t zp,
                                         int full, int8_t *y)
{
    const int32_t r = -shift;
    const int64_t nudge = ((int64_t)1 << (30 + r)) + (single ? 0 : ((int64_t)1 << 30));
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t x = acc[i];
        int64_t t = (int64_t)x * m + nudge;
        if (!single) {
            t -= (int64_t)((uint32_t)x & 0x80000000u);
        }
        y[i] = refq_store_s8(refq_asr_s32((int32_t)refq_asr_s64(t, 32), r - 1), lo, hi, zp, full);
    }
}

/* The per-channel form of refq_requantize_loop_s8, for channels with shift <= -2 (r >= 2) and,
 * for double rounding, a multiplier in (2^30, 2^31): the nudge 2^(30+r) (+ 2^30 for double
 * rounding) has the high word 2^(r-2). Other channels take the generic form. */
REFQ_INLINE void refq_requantize_loop_pc_s8(const int32_t *acc, int32_t n,
                                            const refq_requant_params *q, int32_t single,
                                            int32_t lo, int32_t hi, int32_t zp, int full,
                                            int8_t *y)
{
    const int64_t low = single ? 0 : ((int64_t)1 << 30);
    const int32_t min_m = single ? 0 : (1 << 30) + 1;
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t x = acc[i];
        const int32_t m = q->multiplier[i];
        const int32_t r = -q->shift[i];
        int32_t v;
        if ((uint32_t)(r - 2) <= 29u && m >= min_m) {
            int64_t t = (int64_t)x * m + low + (int64_t)((uint64_t)((uint32_t)1 << (r - 2)) << 32);
            if (!single) {
                t -= (int64_t)((uint32_t)x & 0x80000000u);
            }
            v = refq_asr_s32((int32_t)refq_asr_s64(t, 32), r - 1);
        } else {
            v = refq_requant_channel(x, q, i);
        }
        y[i] = refq_store_s8(v, lo, hi, zp, full);
    }
}

/* y[i] = clamp(requant(acc[i]) + zp, activation) for i < n, channel i (per channel) or one
 * multiplier for all. The common per-tensor and per-channel cases run in the hoisted loops. */
static inline void refq_requantize_row_s8(const int32_t *acc, int32_t n,
                                          const refq_requant_params *q, int8_t *y)
{
    const int32_t zp = q->output_offset;
    const int32_t lo = q->activation.min - zp;
    const int32_t hi = q->activation.max - zp;
    const int full = q->activation.min == INT8_MIN && q->activation.max == INT8_MAX;
    const int32_t single = q->rounding == REFQ_ROUNDING_SINGLE;
    int32_t i;
    if (q->real_multiplier == NULL && !q->per_channel && q->shift[0] < 0 &&
        (single || q->multiplier[0] > (1 << 30))) {
        const int32_t m = q->multiplier[0];
        const int32_t s = q->shift[0];
        if (single) {
            if (full) {
                refq_requantize_loop_s8(acc, n, m, s, 1, lo, hi, zp, 1, y);
            } else {
                refq_requantize_loop_s8(acc, n, m, s, 1, lo, hi, zp, 0, y);
            }
        } else if (full) {
            refq_requantize_loop_s8(acc, n, m, s, 0, lo, hi, zp, 1, y);
        } else {
            refq_requantize_loop_s8(acc, n, m, s, 0, lo, hi, zp, 0, y);
        }
        return;
    }
    if (q->real_multiplier == NULL && q->per_channel) {
        if (single) {
            refq_requantize_loop_pc_s8(acc, n, q, 1, lo, hi, zp, 0, y);
        } else if (full) {
            refq_requantize_loop_pc_s8(acc, n, q, 0, lo, hi, zp, 1, y);
        } else {
            refq_requantize_loop_pc_s8(acc, n, q, 0, lo, hi, zp, 0, y);
        }
        return;
    }
    for (i = 0; i < n; ++i) {
        y[i] = refq_store_s8(refq_requant_channel(acc[i], q, i), lo, hi, zp, 0);
    }
}

/* refq_requantize_row_s8 with int16 outputs (the generic per-element form). */
static inline void refq_requantize_row_s16(const int32_t *acc, int32_t n,
                                           const refq_requant_params *q, int16_t *y)
{
    const int32_t zp = q->output_offset;
    const int32_t lo = q->activation.min - zp;
    const int32_t hi = q->activation.max - zp;
    int32_t i;
    for (i = 0; i < n; ++i) {
        y[i] = refq_store_s16(refq_requant_channel(acc[i], q, i), lo, hi, zp);
    }
}

#endif /* REFQ_REQUANT_H */
