/*
 * refq_embedding_lookup_s8.h - EMBEDDING_LOOKUP (TFLM EmbeddingLookUp): out[i] = values[ids[i]],
 * rows of row_elements elements. Copies codes (element_size bytes each: int8, or wider codes),
 * or with dequantize = 1 turns int8 codes into float32 scale * code (TFLM's hybrid lookup, one
 * float32 multiplication). An id outside [0, rows) returns REFQ_ARG_ERROR.
 */
#ifndef REFQ_EMBEDDING_LOOKUP_S8_H
#define REFQ_EMBEDDING_LOOKUP_S8_H

#include <stdint.h>

#include "refq_types.h"

typedef struct {
    int32_t rows;          /* rows of the table */
    int32_t row_elements;  /* elements per row */
    int32_t element_size;  /* bytes per element of values (and of the output, unless dequantize) */
    int32_t dequantize;    /* 1: int8 values -> float32 output */
    float scale;           /* dequantization scale */
} refq_embedding_lookup_s8_params;

int32_t refq_embedding_lookup_s8_get_buffer_size(void);

refq_status refq_embedding_lookup_s8(const refq_context *ctx,
                                     const refq_embedding_lookup_s8_params *params, int32_t count,
                                     const int32_t *ids, const void *values, void *output);

#endif /* REFQ_EMBEDDING_LOOKUP_S8_H */
