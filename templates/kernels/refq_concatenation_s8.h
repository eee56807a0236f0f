/*
 * refq_concatenation_s8.h - CONCATENATION (TFLM: codes are copied, every input quantized as the
 * output). Each of the count inputs is [outer][inner_bytes[i]]; the output row is their rows
 * one after the other. Moves bytes, so it serves every element type.
 */
#ifndef REFQ_CONCATENATION_S8_H
#define REFQ_CONCATENATION_S8_H

#include <stdint.h>

#include "refq_types.h"

typedef struct {
    int32_t outer;                 /* product of the dimensions before the axis */
    int32_t count;                 /* inputs */
    const int32_t *inner_bytes;    /* bytes per outer index of each input */
    const void *const *inputs;     /* the input tensors */
} refq_concatenation_s8_params;

int32_t refq_concatenation_s8_get_buffer_size(void);

refq_status refq_concatenation_s8(const refq_context *ctx,
                                  const refq_concatenation_s8_params *params, void *output);

#endif /* REFQ_CONCATENATION_S8_H */
