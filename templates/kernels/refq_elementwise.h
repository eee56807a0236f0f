/*
 * refq_elementwise.h - what refq's element-wise kernels (refq_add_s8, refq_sub_s8, refq_mul_s8
 * and their int16 forms refq_add_s16, refq_sub_s16, refq_mul_s16) share: broadcasting over up
 * to six dimensions, and their parameters (TFLite ArithmeticParams).
 *
 * Broadcasting (NumPy / TFLite rules) is resolved at generation time into the output shape and
 * one element stride per input and dimension, 0 where the input is broadcast; refq merges
 * dimensions that are contiguous for both inputs, so most calls run one long inner loop.
 */
#ifndef REFQ_ELEMENTWISE_H
#define REFQ_ELEMENTWISE_H

#include <stdint.h>

#include "refq_fixedpoint.h"
#include "refq_types.h"

#define REFQ_MAX_RANK 6

typedef struct {
    int32_t rank;                    /* 1 .. REFQ_MAX_RANK */
    int32_t shape[REFQ_MAX_RANK];    /* output shape (row-major) */
    int32_t stride1[REFQ_MAX_RANK];  /* element strides of input 1, 0 where broadcast */
    int32_t stride2[REFQ_MAX_RANK];  /* element strides of input 2 */
} refq_broadcast;

/* TFLite ArithmeticParams of ADD / SUB / MUL on int8 and int16 (offsets: input -zp, output
 * +zp). ADD and SUB:
 * t_i = MBQM((x_i + input_i_offset) << left_shift, input_i_multiplier, input_i_shift),
 * y = clamp(MBQM(t_1 +- t_2, output_multiplier, output_shift) + output_offset). MUL:
 * y = clamp(MBQM((x_1 + offset_1) * (x_2 + offset_2), output_multiplier, output_shift) + offset).
 * MBQM is MultiplyByQuantizedMultiplier with the given rounding (refq_requant.h).
 * input_i_table (ADD / SUB, optional): the 256 values t_i of the codes -128 .. 127, precomputed
 * by refq from the same parameters; NULL computes them per element (always NULL for int16). */
typedef struct {
    int32_t input1_offset;
    int32_t input2_offset;
    int32_t left_shift;
    int32_t input1_multiplier;
    int32_t input1_shift;
    int32_t input2_multiplier;
    int32_t input2_shift;
    int32_t output_multiplier;
    int32_t output_shift;
    int32_t output_offset;
    refq_activation activation;
    int32_t rounding;
    const int32_t *input1_table;
    const int32_t *input2_table;
    refq_broadcast shape;
} refq_binary_s8_params;

/* int16 ADD / SUB / MUL take the same parameters (no tables). */
typedef refq_binary_s8_params refq_binary_s16_params;

/* Walks the rows (all dimensions but the last) of a broadcast: the element offsets of the
 * current row in both inputs. */
typedef struct {
    int32_t index[REFQ_MAX_RANK];
    int32_t offset1;
    int32_t offset2;
} refq_broadcast_iter;

/* Rows of the broadcast, or -1 if the descriptor is malformed. */
static inline int32_t refq_broadcast_rows(const refq_broadcast *b)
{
    int32_t rows = 1;
    int32_t d;
    if (b->rank < 1 || b->rank > REFQ_MAX_RANK) {
        return -1;
    }
    for (d = 0; d < b->rank; ++d) {
        if (b->shape[d] < 0) {
            return -1;
        }
        if (d < b->rank - 1) {
            rows *= b->shape[d];
        }
    }
    return rows;
}

static inline void refq_broadcast_begin(refq_broadcast_iter *it)
{
    int32_t d;
    for (d = 0; d < REFQ_MAX_RANK; ++d) {
        it->index[d] = 0;
    }
    it->offset1 = 0;
    it->offset2 = 0;
}

/* Advance to the next row (odometer over dimensions rank-2 .. 0). */
static inline void refq_broadcast_next(const refq_broadcast *b, refq_broadcast_iter *it)
{
    int32_t d;
    for (d = b->rank - 2; d >= 0; --d) {
        it->index[d] += 1;
        it->offset1 += b->stride1[d];
        it->offset2 += b->stride2[d];
        if (it->index[d] < b->shape[d]) {
            return;
        }
        it->offset1 -= b->stride1[d] * b->shape[d];
        it->offset2 -= b->stride2[d] * b->shape[d];
        it->index[d] = 0;
    }
}

/* The most-significant-word multiplies of the DSP extension (SMMULR, SMMLAR, SMMLA), each with a
 * plain-C equivalent that gives the same bits (the accumulating forms wrap like the
 * instructions).
 *   refq_smmulr(a, b)      = floor((a*b + 2^31) / 2^32)
 *   refq_smmlar(a, b, acc) = acc + floor((a*b + 2^31) / 2^32)
 *   refq_smmla(a, b, acc)  = acc + floor(a*b / 2^32)
 * SRDHM(x, M) = floor((x*M + 2^30) / 2^31) = refq_smmulr(2x, M) whenever 2x fits in int32. */
REFQ_INLINE int32_t refq_smmlar(int32_t a, int32_t b, int32_t acc)
{
#if REFQ_USE_DSP && (defined(__GNUC__) || defined(__clang__))
    int32_t result;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(result) : "r"(a), "r"(b), "r"(acc));
    return result;
#else
    return refq_wrap_s32((uint32_t)acc +
                         (uint32_t)refq_asr_s64((int64_t)a * b + ((int64_t)1 << 31), 32));
#endif
}

REFQ_INLINE int32_t refq_smmla(int32_t a, int32_t b, int32_t acc)
{
#if REFQ_USE_DSP && (defined(__GNUC__) || defined(__clang__))
    int32_t result;
    __asm__("smmla %0, %1, %2, %3" : "=r"(result) : "r"(a), "r"(b), "r"(acc));
    return result;
#else
    return refq_wrap_s32((uint32_t)acc + (uint32_t)refq_asr_s64((int64_t)a * b, 32));
#endif
}

REFQ_INLINE int32_t refq_smmulr(int32_t a, int32_t b)
{
#if REFQ_USE_DSP && (defined(__GNUC__) || defined(__clang__))
    int32_t result;
    __asm__("smmulr %0, %1, %2" : "=r"(result) : "r"(a), "r"(b));
    return result;
#else
    return (int32_t)refq_asr_s64((int64_t)a * b + ((int64_t)1 << 31), 32);
#endif
}

#endif /* REFQ_ELEMENTWISE_H */
