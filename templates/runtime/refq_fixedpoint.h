/*
 * refq_fixedpoint.h - fixed-point primitives of gemmlowp / TFLite / CMSIS-NN in portable C99.
 *
 * Each function returns, for every argument in its domain, exactly the value of the refq Python
 * reference function named in its comment (module refq.fixedpoint, 32-bit variants), which
 * reproduces the peers' C including the places where the peers overflow a signed type: there
 * the peers rely on undefined behaviour and get the two's-complement wrap; this header computes
 * the same wrap with defined operations. Rules kept throughout, so that UBSan finds nothing:
 *   - no left shift of a negative value: wraps go through uint32_t, exact products through
 *     int64_t multiplication by a power of two that provably fits;
 *   - no shift by the width of the type or more, no shift by a negative amount;
 *   - no signed overflow: sums that may leave int32_t are formed in int64_t or uint32_t;
 *   - right shifts of negative values (implementation-defined in C99) go through refq_asr_*,
 *     which floors with defined operations; gcc and clang compile it to one ASR.
 * Domains (as asserted by the peers) are preconditions: shifts in [-31, 30], exponents of
 * RoundingDivideByPOT in [0, 31], integer_bits as documented per function.
 *
 * Small primitives are REFQ_INLINE (always inlined: they sit in kernels' inner loops); the
 * longer math functions are plain static inline and left to the compiler.
 *
 * DSP path: with __ARM_FEATURE_DSP (Cortex-M4 / M7 / M33 with the DSP extension) saturating adds
 * use QADD / QSUB and clamps to 8 / 16 bits use SSAT; both give the same values as the plain-C
 * path, which any other target (or -DREFQ_NO_DSP) uses.
 */
#ifndef REFQ_FIXEDPOINT_H
#define REFQ_FIXEDPOINT_H

#include <stdint.h>

#include "refq_types.h"

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP == 1 && defined(__ARM_FEATURE_SIMD32) && \
    !defined(REFQ_NO_DSP)
#define REFQ_USE_DSP 1
#include <arm_acle.h>
#else
#define REFQ_USE_DSP 0
#endif

/* ------------------------------------------------------------------ bit-level helpers */

/* The int32_t with the bits of u (two's complement), without the implementation-defined
 * conversion of an out-of-range value; compilers emit no instruction for it. */
REFQ_INLINE int32_t refq_wrap_s32(uint32_t u)
{
    return u <= (uint32_t)INT32_MAX ? (int32_t)u : (int32_t)(u - 0x80000000u) - INT32_MAX - 1;
}

/* The low 32 bits of v as int32_t (the wrap a C cast of an out-of-range int64_t gives). */
REFQ_INLINE int32_t refq_wrap_s64_to_s32(int64_t v)
{
    return refq_wrap_s32((uint32_t)((uint64_t)v & 0xFFFFFFFFu));
}

/* Wrapping int32 add / subtract / negate (gemmlowp FixedPoint Add, Sub, Neg on raw values). */
REFQ_INLINE int32_t refq_add_wrap_s32(int32_t a, int32_t b)
{
    return refq_wrap_s32((uint32_t)a + (uint32_t)b);
}

REFQ_INLINE int32_t refq_sub_wrap_s32(int32_t a, int32_t b)
{
    return refq_wrap_s32((uint32_t)a - (uint32_t)b);
}

/* floor(x / 2^n) for 0 <= n <= 31: an arithmetic right shift. */
REFQ_INLINE int32_t refq_asr_s32(int32_t x, int32_t n)
{
    return x < 0 ? ~(~x >> n) : x >> n;
}

/* floor(x / 2^n) for 0 <= n <= 63. */
REFQ_INLINE int64_t refq_asr_s64(int64_t x, int32_t n)
{
    return x < 0 ? ~(~x >> n) : x >> n;
}

/* x * 2^n wrapped to int32 (the peers' `x * (1 << n)` / `x << n` when it overflows), 0 <= n <= 31. */
REFQ_INLINE int32_t refq_shl_wrap_s32(int32_t x, int32_t n)
{
    return refq_wrap_s32((uint32_t)x << n);
}

/* refq.fixedpoint.count_leading_zeros: leading zero bits of x; 32 for x == 0. */
REFQ_INLINE int32_t refq_count_leading_zeros(uint32_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    return x == 0u ? 32 : (int32_t)__builtin_clz(x); /* one CLZ on Arm */
#else
    int32_t n = 0;
    if (x == 0u) {
        return 32;
    }
    while ((x & 0x80000000u) == 0u) {
        x <<= 1;
        ++n;
    }
    return n;
#endif
}

/* refq.fixedpoint.count_leading_sign_bits: redundant sign bits, clz(x ^ (x >> 31)) - 1. */
REFQ_INLINE int32_t refq_count_leading_sign_bits(int32_t x)
{
    const uint32_t folded = (uint32_t)x ^ (uint32_t)refq_asr_s32(x, 31);
    return refq_count_leading_zeros(folded) - 1;
}

/* ------------------------------------------------------------------ saturation */

/* min(max(x, lo), hi). */
REFQ_INLINE int32_t refq_clamp_s32(int32_t x, int32_t lo, int32_t hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

/* x clamped to [-128, 127] (SSAT #8 on the DSP path). */
REFQ_INLINE int32_t refq_sat_s8(int32_t x)
{
#if REFQ_USE_DSP
    return __ssat(x, 8);
#else
    return refq_clamp_s32(x, INT8_MIN, INT8_MAX);
#endif
}

/* x clamped to [-32768, 32767] (SSAT #16 on the DSP path). */
REFQ_INLINE int32_t refq_sat_s16(int32_t x)
{
#if REFQ_USE_DSP
    return __ssat(x, 16);
#else
    return refq_clamp_s32(x, INT16_MIN, INT16_MAX);
#endif
}

/* refq.fixedpoint.saturating_add (bits=32): a + b clamped to int32 (QADD on the DSP path). */
REFQ_INLINE int32_t refq_saturating_add(int32_t a, int32_t b)
{
#if REFQ_USE_DSP
    return __qadd(a, b);
#else
    const int64_t sum = (int64_t)a + b;
    return sum > INT32_MAX ? INT32_MAX : (sum < INT32_MIN ? INT32_MIN : (int32_t)sum);
#endif
}

/* refq.fixedpoint.saturating_sub (bits=32): a - b clamped to int32 (QSUB on the DSP path). */
REFQ_INLINE int32_t refq_saturating_sub(int32_t a, int32_t b)
{
#if REFQ_USE_DSP
    return __qsub(a, b);
#else
    const int64_t diff = (int64_t)a - b;
    return diff > INT32_MAX ? INT32_MAX : (diff < INT32_MIN ? INT32_MIN : (int32_t)diff);
#endif
}

/* ------------------------------------------------------------------ gemmlowp primitives */

/* refq.fixedpoint.srdhm (SaturatingRoundingDoublingHighMul): round half up of a*b / 2^31,
 * i.e. floor((a*b + 2^30) / 2^31), which equals gemmlowp's nudge-and-truncate; the one result
 * that does not fit, a == b == INT32_MIN, saturates to INT32_MAX. */
REFQ_INLINE int32_t refq_srdhm(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    /* |a*b| <= 2^62, so the sum stays in int64 and the result in int32. */
    return (int32_t)refq_asr_s64((int64_t)a * b + ((int64_t)1 << 30), 31);
}

/* refq.fixedpoint.rounding_divide_by_pot (RoundingDivideByPOT): x / 2^exponent rounded half
 * away from zero, exponent in [0, 31]. */
REFQ_INLINE int32_t refq_rounding_divide_by_pot(int32_t x, int32_t exponent)
{
    /* 2^31 - 1 for exponent 31 computed in uint32_t: (1 << 31) - 1 would overflow int. */
    const int32_t mask = (int32_t)((((uint32_t)1) << exponent) - 1u);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return refq_asr_s32(x, exponent) + (remainder > threshold ? 1 : 0);
}

/* refq.fixedpoint.saturating_rounding_multiply_by_pot (bits=32): exponent > 0: x * 2^exponent
 * saturated to int32; exponent < 0: RoundingDivideByPOT(x, -exponent); exponent in [-31, 31]. */
REFQ_INLINE int32_t refq_saturating_rounding_multiply_by_pot(int32_t x, int32_t exponent)
{
    if (exponent > 0) {
        const int32_t threshold = (int32_t)((((uint32_t)1) << (31 - exponent)) - 1u);
        if (x > threshold) {
            return INT32_MAX;
        }
        if (x < -threshold) {
            return INT32_MIN;
        }
        /* In range now: an exact int64 product (no left shift of a negative value). */
        return (int32_t)((int64_t)x * ((int64_t)1 << exponent));
    }
    return refq_rounding_divide_by_pot(x, -exponent);
}

/* refq.fixedpoint.rounding_half_sum (RoundingHalfSum): (a + b) / 2 rounded half away from zero. */
REFQ_INLINE int32_t refq_rounding_half_sum(int32_t a, int32_t b)
{
    const int64_t sum = (int64_t)a + b;
    return (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2); /* C division truncates toward zero */
}

/* ------------------------------------------------------------------ requantization */

/* refq.fixedpoint.multiply_by_quantized_multiplier(rounding="double"), TFLite / TFLM
 * MultiplyByQuantizedMultiplier: RDBPOT(SRDHM(x * 2^max(s, 0), M), max(-s, 0)), the left shift
 * wrapping in int32 as in the peers; s in [-31, 30]. */
REFQ_INLINE int32_t refq_multiply_by_quantized_multiplier_double(int32_t x, int32_t multiplier,
                                                                 int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    return refq_rounding_divide_by_pot(refq_srdhm(refq_shl_wrap_s32(x, left), multiplier), right);
}

/* refq.fixedpoint.multiply_by_quantized_multiplier(rounding="single") (TFLITE_SINGLE_ROUNDING):
 * (x*M + 2^(30-s)) >> (31-s) in int64, wrapped to int32; s in [-31, 30]. */
REFQ_INLINE int32_t refq_multiply_by_quantized_multiplier_single(int32_t x, int32_t multiplier,
                                                                 int32_t shift)
{
    const int32_t total = 31 - shift; /* 1 .. 62 */
    /* |x*M| <= 2^62 and the nudge <= 2^61: no int64 overflow. */
    const int64_t product = (int64_t)x * multiplier + ((int64_t)1 << (total - 1));
    return refq_wrap_s64_to_s32(refq_asr_s64(product, total));
}

/* refq.fixedpoint.cmsis_requantize(rounding="double") (CMSIS-NN arm_nn_requantize, default
 * build): RDBPOT(int32((x' * M + 2^30) >> 31), max(-s, 0)) with x' = x * 2^max(s, 0) wrapped;
 * no saturation, so x' == M == INT32_MIN gives INT32_MIN. */
REFQ_INLINE int32_t refq_cmsis_requantize_double(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    const int64_t product = (int64_t)refq_shl_wrap_s32(x, left) * multiplier + ((int64_t)1 << 30);
    return refq_rounding_divide_by_pot(refq_wrap_s64_to_s32(refq_asr_s64(product, 31)), right);
}

/* refq.fixedpoint.cmsis_requantize(rounding="single") (CMSIS_NN_USE_SINGLE_ROUNDING):
 * t = int32((x*M) >> (30 - s)) wrapped; (t + 1) >> 1 with the + 1 wrapping at INT32_MAX. */
REFQ_INLINE int32_t refq_cmsis_requantize_single(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t t = refq_wrap_s64_to_s32(refq_asr_s64((int64_t)x * multiplier, 30 - shift));
    return refq_asr_s32(refq_add_wrap_s32(t, 1), 1);
}

/* refq.fixedpoint.reduce_multiplier (CMSIS-NN REDUCE_MULTIPLIER): M in [0, INT32_MAX] to a
 * 16-bit multiplier, M < 0x7FFF0000 ? (M + 2^15) >> 16 : 0x7FFF. */
REFQ_INLINE int32_t refq_reduce_multiplier(int32_t multiplier)
{
    return multiplier < 0x7FFF0000 ? (multiplier + (1 << 15)) >> 16 : 0x7FFF;
}

/* refq.fixedpoint.multiply_by_quantized_multiplier_s64 (TFLM MultiplyByQuantizedMultiplier for
 * int64 accumulators, 16x8 kernels): m = reduce_multiplier(M);
 * (x*m + 2^(14-s)) >> (15-s) wrapped to int32; x in [-2^47, 2^47), M >= 0, s in [-31, 7]. */
REFQ_INLINE int32_t refq_multiply_by_quantized_multiplier_s64(int64_t x, int32_t multiplier,
                                                              int32_t shift)
{
    const int32_t total = 15 - shift; /* 8 .. 46 */
    const int64_t product =
        x * refq_reduce_multiplier(multiplier) + ((int64_t)1 << (total - 1)); /* < 2^62 */
    return refq_wrap_s64_to_s32(refq_asr_s64(product, total));
}

/* refq.fixedpoint.cmsis_requantize_s64 (CMSIS-NN arm_nn_requantize_s64): with m the reduced
 * multiplier, t = int32((acc * m) >> (14 - s)) wrapped; (t + 1) >> 1 with the + 1 wrapping.
 * acc in [-2^47, 2^47), m in [0, 0x7FFF], s in [-31, 7]. */
REFQ_INLINE int32_t refq_cmsis_requantize_s64(int64_t acc, int32_t reduced_multiplier,
                                              int32_t shift)
{
    const int32_t t = refq_wrap_s64_to_s32(refq_asr_s64(acc * reduced_multiplier, 14 - shift));
    return refq_asr_s32(refq_add_wrap_s32(t, 1), 1);
}

/* ------------------------------------------------------------------ gemmlowp math functions */

/* Q0.31 constants of gemmlowp's exp and reciprocal. */
#define REFQ_EXP_MINUS_ONE_EIGHTH_Q31 1895147668 /* exp(-1/8) */
#define REFQ_ONE_THIRD_Q31 715827883
#define REFQ_48_OVER_17_Q2_29 1515870810
#define REFQ_MINUS_32_OVER_17_Q2_29 (-1010580540)
#define REFQ_HALF_SQRT2_Q31 1518500250 /* sqrt(2) / 2 */

/* exp(a) for a in [-1/4, 0), Q0.31 in and out (gemmlowp
 * exp_on_interval_between_negative_one_quarter_and_0_excl): Taylor series around -1/8 to the
 * 4th order; part of refq.fixedpoint.exp_on_negative_values. */
static inline int32_t refq_exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a)
{
    const int32_t x = refq_add_wrap_s32(a, 1 << 28); /* a + 1/8 */
    const int32_t x2 = refq_srdhm(x, x);
    const int32_t x3 = refq_srdhm(x2, x);
    const int32_t x4 = refq_srdhm(x2, x2);
    const int32_t x4_over_4 = refq_rounding_divide_by_pot(x4, 2);
    /* x^4/24 + x^3/6 + x^2/2 = ((x^4/4 + x^3) / 3 + x^2) / 2 */
    const int32_t poly = refq_rounding_divide_by_pot(
        refq_add_wrap_s32(refq_srdhm(refq_add_wrap_s32(x4_over_4, x3), REFQ_ONE_THIRD_Q31), x2),
        1);
    const int32_t tail = refq_srdhm(REFQ_EXP_MINUS_ONE_EIGHTH_Q31, refq_add_wrap_s32(x, poly));
    return refq_add_wrap_s32(REFQ_EXP_MINUS_ONE_EIGHTH_Q31, tail);
}

/* refq.fixedpoint.exp_on_negative_values (bits=32): exp(a) in Q0.31 for a in Q(ib).(31-ib),
 * a <= 0, integer_bits ib in [0, 29] (TFLM's int8 softmax uses 5). a mod 1/4 - 1/4 goes through
 * the Taylor series; each set bit k of the remaining multiple of 1/4 multiplies in
 * exp(-2^k), k = -2 .. 4 and k < ib; a < -32 gives 0 when ib > 5; a == 0 gives INT32_MAX. */
static inline int32_t refq_exp_on_negative_values(int32_t a, int32_t integer_bits)
{
    static const int32_t barrel[7] = {
        1672461947, /* exp(-1/4) */
        1302514674, /* exp(-1/2) */
        790015084,  /* exp(-1) */
        290630308,  /* exp(-2) */
        39332535,   /* exp(-4) */
        720401,     /* exp(-8) */
        242,        /* exp(-16) */
    };
    const int32_t fractional = 31 - integer_bits;
    const int32_t quarter = (int32_t)1 << (fractional - 2);
    const int32_t a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter; /* [-1/4, 0) */
    const int32_t remainder = refq_sub_wrap_s32(a_mod_quarter_minus_quarter, a);
    int32_t result = refq_exp_on_interval_between_negative_one_quarter_and_0_excl(
        refq_saturating_rounding_multiply_by_pot(a_mod_quarter_minus_quarter, integer_bits));
    int32_t k;
    for (k = -2; k <= 4 && k < integer_bits; ++k) {
        if ((remainder & ((int32_t)1 << (fractional + k))) != 0) {
            result = refq_srdhm(result, barrel[k + 2]);
        }
    }
    if (integer_bits > 5 && a < -((int32_t)1 << (36 - integer_bits))) {
        result = 0; /* below -32: exp underflows Q0.31 */
    }
    return a == 0 ? INT32_MAX : result;
}

/* Newton-Raphson for 1 / d with d = (1 + a) / 2 in Q0.31, result in Q2.29 (gemmlowp's shared
 * core of one_over_one_plus_x_for_x_in_0_1 and one_minus_x_over_one_plus_x_for_x_in_0_1):
 * x = 48/17 - 32/17 * d, then three steps x += Rescale<2>(x * (1 - d*x)). */
static inline int32_t refq_newton_reciprocal_half(int32_t a)
{
    const int32_t half_denominator = refq_rounding_half_sum(a, INT32_MAX);
    const int32_t one_q2_29 = (int32_t)1 << 29;
    int32_t x = refq_add_wrap_s32(REFQ_48_OVER_17_Q2_29,
                                  refq_srdhm(half_denominator, REFQ_MINUS_32_OVER_17_Q2_29));
    int i;
    for (i = 0; i < 3; ++i) {
        const int32_t error = refq_sub_wrap_s32(one_q2_29, refq_srdhm(half_denominator, x));
        x = refq_add_wrap_s32(x, refq_saturating_rounding_multiply_by_pot(refq_srdhm(x, error), 2));
    }
    return x;
}

/* refq.fixedpoint.one_over_one_plus_x_for_x_in_0_1 (bits=32): 1 / (1 + a), a in [0, 1) as
 * Q0.31, result in Q0.31 (the Q2.29 Newton result saturating-shifted left by one). */
static inline int32_t refq_one_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    return refq_saturating_rounding_multiply_by_pot(refq_newton_reciprocal_half(a), 1);
}

/* refq.fixedpoint.one_minus_x_over_one_plus_x_for_x_in_0_1 (bits=32): (1 - a) / (1 + a), Q0.31
 * in and out: Rescale<0>(x - 1) of the Q2.29 Newton reciprocal. */
static inline int32_t refq_one_minus_x_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    const int32_t x = refq_newton_reciprocal_half(a);
    return refq_saturating_rounding_multiply_by_pot(refq_sub_wrap_s32(x, (int32_t)1 << 29), 2);
}

/* refq.fixedpoint.gemmlowp_tanh (bits=32): tanh(a) in Q0.31 for a in Q(ib).(31-ib),
 * integer_bits ib in [0, 28] (TFLM's int8 TANH uses 4):
 * t = one_minus_x_over_one_plus_x(exp_on_negative_values(-|a| as Q(ib+1))), sign restored. */
static inline int32_t refq_tanh(int32_t a, int32_t integer_bits)
{
    const int32_t n = a < 0 ? a : refq_sub_wrap_s32(0, a);
    const int32_t t =
        refq_one_minus_x_over_one_plus_x_for_x_in_0_1(refq_exp_on_negative_values(n, integer_bits + 1));
    if (a == 0) {
        return 0;
    }
    return a < 0 ? refq_sub_wrap_s32(0, t) : t;
}

/* refq.fixedpoint.gemmlowp_logistic (bits=32): 1 / (1 + exp(-a)) in Q0.31 for a in
 * Q(ib).(31-ib), integer_bits ib in [0, 29] (TFLM's int8 LOGISTIC uses 4):
 * p = one_over_one_plus_x(exp_on_negative_values(-|a|)); p for a > 0, 1 - p for a < 0. */
static inline int32_t refq_logistic(int32_t a, int32_t integer_bits)
{
    const int32_t magnitude = a > 0 ? a : refq_sub_wrap_s32(0, a);
    const int32_t p = refq_one_over_one_plus_x_for_x_in_0_1(
        refq_exp_on_negative_values(refq_sub_wrap_s32(0, magnitude), integer_bits));
    if (a == 0) {
        return (int32_t)1 << 30; /* one half */
    }
    return a > 0 ? p : refq_sub_wrap_s32(INT32_MAX, p);
}

/* refq.fixedpoint.inv_sqrt_quantized_multiplier_exp (TFLite GetInvSqrtQuantizedMultiplierExp):
 * 1/sqrt(x) ~ M * 2^(-31 + shift * reverse_shift) for x in [2, INT32_MAX]; x <= 1 gives
 * (INT32_MAX, 0). x is normalized into [2^27, 2^29) by bit pairs, five Newton steps
 * y = Rescale<3>(1.5*y - (x/2) * Rescale<3>(y^3)) run in Q3.28 from y = 1, M = y * sqrt(2)/2;
 * a negative shift moves into M (wrapping left shift). reverse_shift is -1 or 1. */
static inline void refq_inv_sqrt_quantized_multiplier_exp(int32_t x, int32_t reverse_shift,
                                                          int32_t *multiplier, int32_t *shift)
{
    int32_t v = x;
    int32_t s = 11;
    int32_t pairs;
    int32_t half_input;
    int32_t y = (int32_t)1 << 28; /* 1.0 in Q3.28 */
    int i;
    if (x <= 1) {
        *multiplier = INT32_MAX;
        *shift = 0;
        return;
    }
    if (v >= ((int32_t)1 << 29)) {
        v >>= 2; /* at most once for an int32 */
        s += 1;
    }
    pairs = (refq_count_leading_zeros((uint32_t)v) - 1) / 2 - 1; /* >= 0 since v < 2^29 */
    s -= pairs;
    v <<= 2 * pairs; /* v > 0: now in [2^27, 2^29) */
    half_input = refq_rounding_divide_by_pot(v >> 1, 1);
    for (i = 0; i < 5; ++i) {
        const int32_t y3 = refq_saturating_rounding_multiply_by_pot(
            refq_srdhm(refq_srdhm(y, y), y), 6);
        y = refq_saturating_rounding_multiply_by_pot(
            refq_sub_wrap_s32(refq_srdhm((int32_t)3 << 27, y), refq_srdhm(half_input, y3)), 3);
    }
    *multiplier = refq_srdhm(y, REFQ_HALF_SQRT2_Q31);
    if (s < 0) {
        *multiplier = refq_shl_wrap_s32(*multiplier, -s);
        s = 0;
    }
    *shift = s * reverse_shift;
}

#endif /* REFQ_FIXEDPOINT_H */
