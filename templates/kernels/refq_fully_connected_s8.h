/*
 * refq_fully_connected_s8.h - FULLY_CONNECTED, int8 input and output, int8 weights.
 *
 * Semantics (TFLM reference FullyConnected / FullyConnectedPerChannel, CMSIS-NN
 * arm_fully_connected_s8): for every row r and output channel o,
 *   acc = kernel_sums[o] + filter_offset[o] * sum_k x[r][k] + sum_k x[r][k] * w[o][k]   (int32, wrapping)
 *   y[r][o] = clamp(requantize(acc, multiplier[c], shift[c]) + output_offset, activation)
 * with kernel_sums[o] = bias[o] + input_offset * sum_k (w[o][k] + filter_offset[o]) precomputed by
 * refq (the input offset -zp_in is folded into it), c = o per channel or 0 per tensor, and the
 * rounding of the model's profile.
 *
 * Weight layout (arranged by refq at generation time, codegen.layouts.arrange_fc_s8): rows go
 * in pairs (A = 2i, B = 2i + 1; a missing last B has zero weights), input features are padded
 * with zero weights to K16 = 16 * ceil(K / 16) and go in pairs (j = 0 .. K16/2 - 1). The 32-bit
 * word of pair i and feature pair j holds the bytes
 *     { wB[2j] + 128, wA[2j], wB[2j+1] + 128, wA[2j+1] }
 * i.e. two int16 halfwords (wB + 128) + 256 * wA. Pairs go in groups of two (rows 4g .. 4g+3):
 * within a group the words of its two pairs alternate, feature pair by feature pair; an odd last
 * pair is stored alone. The array holds 2 * ceil(N / 2) * K16 bytes; kernel_sums holds
 * 2 * ceil(N / 2) values (the padding row's is 0).
 *
 * Why: one SMLALD of a word with an input pair (x0, x1) accumulates
 * x0 * (wB0 + 128) + x1 * (wB1 + 128) + 256 * (x0 * wA0 + x1 * wA1), and one SMLAD of its UXTB16
 * accumulates the first part alone; both rows come out of one load and three instructions
 * (the DSP path), with the input converted to int16 once per row.
 */
#ifndef REFQ_FULLY_CONNECTED_S8_H
#define REFQ_FULLY_CONNECTED_S8_H

#include <stdint.h>

#include "refq_requant.h"
#include "refq_types.h"

typedef struct {
    int32_t k;                     /* input features */
    int32_t n;                     /* output channels */
    const int8_t *weights;         /* arranged as described above */
    const int32_t *kernel_sums;    /* bias + input_offset * sum (w + filter_offset) */
    const int32_t *filter_offset;  /* NULL for symmetric weights, else n values (-zp_w) */
    refq_requant_params requant;   /* per tensor or per output channel */
} refq_fully_connected_s8_params;

/* Bytes of scratch memory refq_fully_connected_s8 needs for k input features and n outputs. */
int32_t refq_fully_connected_s8_get_buffer_size(int32_t k, int32_t n);

/* rows x k int8 input -> rows x n int8 output. REFQ_ARG_ERROR for a non-positive k or n, a
 * negative row count, or a scratch buffer smaller than refq_fully_connected_s8_get_buffer_size. */
refq_status refq_fully_connected_s8(const refq_context *ctx,
                                    const refq_fully_connected_s8_params *params, int32_t rows,
                                    const int8_t *input, int8_t *output);

#endif /* REFQ_FULLY_CONNECTED_S8_H */
