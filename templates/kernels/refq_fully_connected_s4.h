/*
 * refq_fully_connected_s4.h - FULLY_CONNECTED, int8 input and output, int4 weights.
 *
 * Semantics as refq_fully_connected_s8.h (TFLM FullyConnected with int4 weights unpacked,
 * CMSIS-NN arm_fully_connected_s4): acc = kernel_sums[o] + filter_offset[o] * sum x +
 * sum x * w (int32, wrapping), then requantize, add the output offset, clamp.
 *
 * Weight layout (refq codegen.layouts.arrange_fc_s4), two weights per byte: each row padded to
 * a multiple of 8 features; the word of row o and feature group g (features 8g .. 8g+7 with
 * values v0 .. v7) holds the bytes { v0<<4 | v4, v2<<4 | v6, v1<<4 | v5, v3<<4 | v7 } (nibbles,
 * two's complement). Rows follow each other: row o starts at byte 4 * ceil(K / 8) * o.
 * Masking the high nibbles and SXTB16 / SXTB16-ROR8 give the int16 pairs 16 * (v0, v1) and
 * 16 * (v2, v3); the same on the word shifted left by 4 give 16 * (v4, v5) and 16 * (v6, v7).
 * kernel_sums holds 4 * ceil(n / 4) values (the padding ones are 0).
 */
#ifndef REFQ_FULLY_CONNECTED_S4_H
#define REFQ_FULLY_CONNECTED_S4_H

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
} refq_fully_connected_s4_params;

/* Bytes of scratch memory refq_fully_connected_s4 needs for k input features and n outputs. */
int32_t refq_fully_connected_s4_get_buffer_size(int32_t k, int32_t n);

/* rows x k int8 input -> rows x n int8 output. REFQ_ARG_ERROR for a non-positive k or n, a
 * negative row count, or a scratch buffer smaller than refq_fully_connected_s4_get_buffer_size. */
refq_status refq_fully_connected_s4(const refq_context *ctx,
                                    const refq_fully_connected_s4_params *params, int32_t rows,
                                    const int8_t *input, int8_t *output);

#endif /* REFQ_FULLY_CONNECTED_S4_H */
