/*
 * refq_transpose_s8.h - TRANSPOSE (TFLM / LiteRT: codes are moved): out[i0..ir] = in[...] with
 * the permutation resolved by refq into the output shape and, per output dimension, the stride
 * of the input in elements. Elements are element_size bytes (int8 and wider codes).
 */
#ifndef REFQ_TRANSPOSE_S8_H
#define REFQ_TRANSPOSE_S8_H

#include <stdint.h>

#include "refq_types.h"

#define REFQ_TRANSPOSE_MAX_RANK 6

typedef struct {
    int32_t rank;                                 /* 1 .. 6 */
    int32_t shape[REFQ_TRANSPOSE_MAX_RANK];       /* output shape */
    int32_t in_stride[REFQ_TRANSPOSE_MAX_RANK];   /* input stride of each output dimension */
    int32_t element_size;
} refq_transpose_s8_params;

int32_t refq_transpose_s8_get_buffer_size(void);

refq_status refq_transpose_s8(const refq_context *ctx, const refq_transpose_s8_params *params,
                              const void *input, void *output);

#endif /* REFQ_TRANSPOSE_S8_H */
