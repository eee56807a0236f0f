/*
 * refq_attention_s8.h - ATTENTION: one step of int8 multi-head attention with grouped-query heads,
 * a causal mask and a static int8 KV cache (refq.kernels.attention; refq op).
 *
 * Inputs q [T][Hq*D], k, v [T][Hkv*D] (projected, rotated), *position = tokens already cached,
 * the caches k_cache, v_cache [Hkv][max_seq][D] (the model's static state, updated in place).
 * Query head h reads kv head h / (Hq / Hkv). For token t at p = *position + t:
 *   1. cache[g][p] = store(k[t][g]) (v alike): a copy, or
 *      clamp(MBQM(x - zp_in, M, shift) + zp_cache, -128, 127) when the quantizations differ;
 *   2. for j <= p: acc = sum_d (q - zp_q)(k_cache[g][j] - zp_kc) (exact int32),
 *      score = clamp(MBQM(acc, M_s, shift_s), score range) as int8 or int16 codes;
 *   3. P = softmax of the p + 1 scores (TFLM int8 softmax: P = code + 128 in [0, 255]; int16
 *      softmax: P in [0, 32767]), refq_softmax_rows.h;
 *   4. acc_o[d] = sum_j P[j] (v_cache[g][j][d] - zp_vc) (exact int32),
 *      out = clamp(MBQM(acc_o, M_o, shift_o) + zp_out, -128, 127),
 * every MBQM with the profile's rounding. The scratch buffer holds one row of scores and
 * probabilities, the query row and the output accumulators.
 */
#ifndef REFQ_ATTENTION_S8_H
#define REFQ_ATTENTION_S8_H

#include <stdint.h>

#include "refq_softmax_rows.h"
#include "refq_types.h"

/* Step 1's requantization of k or v into its cache. */
typedef struct {
    int32_t copy;          /* 1: equal quantization, y = x */
    int32_t input_offset;  /* -zp_in */
    int32_t multiplier;    /* >= 0 */
    int32_t shift;         /* in [-31, 30] */
    int32_t output_offset; /* zp of the cache */
} refq_attention_store;

typedef struct {
    int32_t num_heads;          /* Hq */
    int32_t num_kv_heads;       /* Hkv, divides Hq */
    int32_t head_dim;           /* D */
    int32_t max_seq;            /* positions in the caches */
    int32_t q_offset;           /* -zp_q */
    refq_attention_store k_store;
    refq_attention_store v_store;
    int32_t k_cache_offset;     /* -zp of k_cache */
    int32_t v_cache_offset;     /* -zp of v_cache */
    int32_t score_bits;         /* 8 (int8 scores, int8 softmax) or 16 */
    int32_t score_multiplier;   /* M_s: s_q s_kc / (sqrt(D) s_score) */
    int32_t score_shift;
    refq_softmax_s8_tables softmax_s8;   /* score_bits 8 */
    refq_softmax_s16_tables softmax_s16; /* score_bits 16 */
    int32_t output_multiplier;  /* M_o: s_P s_vc / s_out */
    int32_t output_shift;
    int32_t output_offset;      /* zp_out */
    int32_t rounding;           /* REFQ_ROUNDING_DOUBLE or REFQ_ROUNDING_SINGLE */
} refq_attention_s8_params;

/* Scratch bytes refq_attention_s8 needs for head_dim D and max_seq positions. */
int32_t refq_attention_s8_get_buffer_size(int32_t head_dim, int32_t max_seq);

/* tokens query rows at positions *position .. *position + tokens - 1. REFQ_ARG_ERROR for bad
 * sizes, a position outside the cache, a small scratch buffer, or an int16 softmax row whose sum
 * overflows int32 (undefined in the reference). */
refq_status refq_attention_s8(const refq_context *ctx, const refq_attention_s8_params *params,
                              int32_t tokens, const int8_t *q, const int8_t *k, const int8_t *v,
                              const int32_t *position, int8_t *k_cache, int8_t *v_cache,
                              int8_t *output);

#endif /* REFQ_ATTENTION_S8_H */
