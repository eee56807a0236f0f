/*
 * refq_rope_s8.h - ROPE: rotary position embedding of int8 codes with Q15 cos / sin tables
 * (refq.kernels.rope; refq op, no peer kernel).
 *
 * For token t at position p = *position + t, head h and pair i (interleaved: elements 2i, 2i+1;
 * rotate_half: i, i + D/2) with a, b = x - zp_in:
 *   acc_a = a C[p][i] - b S[p][i],  acc_b = b C[p][i] + a S[p][i]          (int32, exact)
 *   y = clamp(MultiplyByQuantizedMultiplier(acc, M, shift) + zp_out, -128, 127)
 * with C, S the reference's Q15 tables [max_positions][D/2] and M 2^shift = s_in / (s_out 2^15).
 */
#ifndef REFQ_ROPE_S8_H
#define REFQ_ROPE_S8_H

#include <stdint.h>

#include "refq_types.h"

typedef struct {
    int32_t head_dim;          /* D, even */
    int32_t max_positions;     /* rows of the tables */
    int32_t interleaved;       /* 1: pairs (2i, 2i+1), 0: pairs (i, i + D/2) */
    const int16_t *cos_q15;    /* [max_positions][D/2] */
    const int16_t *sin_q15;    /* [max_positions][D/2] */
    int32_t input_offset;      /* -zp_in */
    int32_t output_multiplier; /* >= 0 */
    int32_t output_shift;      /* in [-31, 30] */
    int32_t output_offset;     /* zp_out */
    int32_t rounding;          /* REFQ_ROUNDING_DOUBLE or REFQ_ROUNDING_SINGLE */
} refq_rope_s8_params;

/* Scratch bytes refq_rope_s8 needs: none. */
int32_t refq_rope_s8_get_buffer_size(void);

/* tokens x heads x head_dim int8 codes at positions *position .. *position + tokens - 1.
 * REFQ_ARG_ERROR when a position lies outside the tables (the reference raises there). */
refq_status refq_rope_s8(const refq_context *ctx, const refq_rope_s8_params *params,
                         int32_t tokens, int32_t heads, const int32_t *position,
                         const int8_t *input, int8_t *output);

#endif /* REFQ_ROPE_S8_H */
