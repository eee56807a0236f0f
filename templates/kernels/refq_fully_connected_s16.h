/*
 * refq_fully_connected_s16.h - FULLY_CONNECTED 16x8: int16 input and output, int8 weights,
 * int64 accumulator.
 *
 * Semantics (TFLM reference_integer_ops::FullyConnected / FullyConnectedPerChannel for int16
 * input, CMSIS-NN arm_fully_connected_s16's arithmetic): for every row r and output channel o,
 *   acc = kernel_sums[o] + filter_offset[o] * sum_k x[r][k] + sum_k x[r][k] * w[o][k]
 *   (int64, exact)
 *   y[r][o] = clamp(requant(acc, c) + output_offset, activation)
 * with kernel_sums[o] = bias[o] + input_offset * sum_k (w[o][k] + filter_offset[o]) (int64,
 * precomputed by refq), c = o per channel or 0 per tensor, and requant refq_requant.h's
 * refq_requant_channel_s64: TFLM's int64 MultiplyByQuantizedMultiplier,
 *   (acc * m16 + 2^(14 - shift)) >> (15 - shift) wrapped to int32, m16 the 16-bit reduced
 *   multiplier (M < 0x7FFF0000 ? (M + 2^15) >> 16 : 0x7FFF), shift in [-31, 7],
 * under every fixed-point profile (the 16x8 form has one rounding), or LiteRT's
 * round_half_away(double(acc) * real) when requant.real_multiplier is set. The s64 form is
 * defined for |acc| < 2^47 (TFLM / CMSIS-NN's domain; refq's reference raises outside it): the
 * kernel returns REFQ_ARG_ERROR there.
 *
 * Weight layout (codegen.layouts.arrange_fc_s16): row o holds K4 = 4 * ceil(K / 4) bytes, the
 * features of each group of four in the order {w0, w2, w1, w3} (zero weights pad the last
 * group), so that SXTB16 of the word gives the int16 pair (w0, w1) and SXTB16-ROR8 (w2, w3), the
 * lanes of the input pairs (x0, x1) and (x2, x3): two SMLALD per four multiply-accumulates
 * (the DSP path, two rows per pass sharing the input loads).
 */
#ifndef REFQ_FULLY_CONNECTED_S16_H
#define REFQ_FULLY_CONNECTED_S16_H

#include <stdint.h>

#include "refq_requant.h"
#include "refq_types.h"

typedef struct {
    int32_t k;                     /* input features */
    int32_t n;                     /* output channels */
    const int8_t *weights;         /* n rows of K4 bytes, arranged as described above */
    const int64_t *kernel_sums;    /* bias + input_offset * sum (w + filter_offset), n values */
    const int32_t *filter_offset;  /* NULL for symmetric weights, else n values (-zp_w) */
    refq_requant_params requant;   /* kind s64 (multiplier, shift) or float64, per tensor or
                                      per output channel; rounding unused */
} refq_fully_connected_s16_params;

/* Bytes of scratch memory refq_fully_connected_s16 needs: none. */
int32_t refq_fully_connected_s16_get_buffer_size(int32_t k, int32_t n);

/* rows x k int16 input -> rows x n int16 output. REFQ_ARG_ERROR for a non-positive k or n, a
 * negative row count, or an accumulator outside [-2^47, 2^47) with the s64 requantization. */
refq_status refq_fully_connected_s16(const refq_context *ctx,
                                     const refq_fully_connected_s16_params *params, int32_t rows,
                                     const int16_t *input, int16_t *output);

#endif /* REFQ_FULLY_CONNECTED_S16_H */
