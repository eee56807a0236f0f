/*
 * refq_batch_matmul_s8.h - BATCH_MATMUL of two int8 tensors (TFLM reference_ops::BatchMatMul):
 *   a = adj_x ? swap(lhs) : lhs  (M x K),  b = adj_y ? swap(rhs) : rhs  (K x N), per batch,
 *   acc[m][n] = sum_k (a[m][k] + lhs_offset) * (b[k][n] + rhs_offset)      (int32, wrapping)
 *   y = clamp(requantize(acc) + zp_out)                                     (per tensor)
 * Batch dimensions broadcast (refq_broadcast over the batch shape, strides in matrices).
 */
#ifndef REFQ_BATCH_MATMUL_S8_H
#define REFQ_BATCH_MATMUL_S8_H

#include <stdint.h>

#include "refq_elementwise.h"
#include "refq_requant.h"
#include "refq_types.h"

typedef struct {
    int32_t m;
    int32_t k;
    int32_t n;
    int32_t lhs_offset;          /* -zp_lhs */
    int32_t rhs_offset;          /* -zp_rhs */
    int32_t adj_x;               /* lhs holds K x M matrices */
    int32_t adj_y;               /* rhs holds N x K matrices */
    refq_requant_params requant; /* per tensor */
    refq_broadcast batch;        /* output batch shape; strides of lhs / rhs in matrices */
} refq_batch_matmul_s8_params;

/* Scratch bytes refq_batch_matmul_s8 needs: one row of n int32 accumulators. */
int32_t refq_batch_matmul_s8_get_buffer_size(int32_t n);

refq_status refq_batch_matmul_s8(const refq_context *ctx, const refq_batch_matmul_s8_params *params,
                                 const int8_t *lhs, const int8_t *rhs, int8_t *output);

#endif /* REFQ_BATCH_MATMUL_S8_H */
