/*
 * refq_gather_s8.h - GATHER (TFLM / LiteRT semantics: codes are copied). params viewed as
 * [batch][outer][axis_size][inner] elements, indices as [batch][coords]:
 *   out[b][o][c][:] = params[b][o][indices[b][c]][:]
 * Elements are element_size bytes (1 for int8; the same kernel moves int16 / int32 codes).
 * An index outside [0, axis_size) makes the call return REFQ_ARG_ERROR (the peers fail the
 * invoke); the output is then incomplete.
 */
#ifndef REFQ_GATHER_S8_H
#define REFQ_GATHER_S8_H

#include <stdint.h>

#include "refq_types.h"

typedef struct {
    int32_t batch;
    int32_t outer;
    int32_t axis_size;
    int32_t inner;         /* elements per gathered slice */
    int32_t coords;        /* indices per batch */
    int32_t element_size;  /* bytes */
    int32_t index_size;    /* 4 (int32 indices) or 8 (int64) */
} refq_gather_s8_params;

int32_t refq_gather_s8_get_buffer_size(void);

refq_status refq_gather_s8(const refq_context *ctx, const refq_gather_s8_params *params,
                           const void *input, const void *indices, void *output);

#endif /* REFQ_GATHER_S8_H */
