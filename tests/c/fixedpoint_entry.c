/*
 * fixedpoint_entry.c - runs the primitives of refq_fixedpoint.h and refq_dsp.h on cases read
 * from the host, for tests/test_c_fixedpoint.py (host with UBSan + ASan, and Cortex-M4 / M7
 * under QEMU).
 *
 * cases.bin: records of five little-endian int32 {op, p0, p1, p2, p3}; results.bin: two int32
 * per record {r0, r1} (r1 is 0 except for the two-result op 22 and op 27's int64 result, low
 * and high halves). An int64 argument is p0 (low 32 bits) and p1 (high 32 bits). An unknown op makes the entry return REFQ_ARG_ERROR.
 */
#include <stdint.h>
#include <string.h>

#include "refq_dsp.h"
#include "refq_fixedpoint.h"
#include "refq_harness.h"

#define MAX_CASES 16384

static int32_t cases[MAX_CASES * 5];
static int32_t results[MAX_CASES * 2];

refq_harness_buffer refq_harness_inputs[] = {{"cases.bin", cases, sizeof cases, 0}};
const uint32_t refq_harness_num_inputs = 1;
refq_harness_buffer refq_harness_outputs[] = {{"results.bin", results, sizeof results, 0}};
const uint32_t refq_harness_num_outputs = 1;

static int64_t join_s64(int32_t lo, int32_t hi)
{
    /* hi * 2^32 + (unsigned) lo: exact in int64 for every hi (INT32_MIN * 2^32 = INT64_MIN). */
    return (int64_t)hi * ((int64_t)1 << 32) + (int64_t)(uint32_t)lo;
}

static int run_case(const int32_t *c, int32_t *r)
{
    const int32_t a = c[1];
    const int32_t b = c[2];
    const int32_t d = c[3];
    const int32_t e = c[4];
    r[1] = 0;
    switch (c[0]) {
    case 0: r[0] = refq_srdhm(a, b); break;
    case 1: r[0] = refq_rounding_divide_by_pot(a, b); break;
    case 2: r[0] = refq_saturating_rounding_multiply_by_pot(a, b); break;
    case 3: r[0] = refq_rounding_half_sum(a, b); break;
    case 4: r[0] = refq_saturating_add(a, b); break;
    case 5: r[0] = refq_saturating_sub(a, b); break;
    case 6: r[0] = refq_multiply_by_quantized_multiplier_double(a, b, d); break;
    case 7: r[0] = refq_multiply_by_quantized_multiplier_single(a, b, d); break;
    case 8: r[0] = refq_cmsis_requantize_double(a, b, d); break;
    case 9: r[0] = refq_cmsis_requantize_single(a, b, d); break;
    case 10: r[0] = refq_reduce_multiplier(a); break;
    case 11: r[0] = refq_multiply_by_quantized_multiplier_s64(join_s64(a, b), d, e); break;
    case 12: r[0] = refq_cmsis_requantize_s64(join_s64(a, b), d, e); break;
    case 13: r[0] = refq_exp_on_negative_values(a, b); break;
    case 14: r[0] = refq_one_over_one_plus_x_for_x_in_0_1(a); break;
    case 15: r[0] = refq_one_minus_x_over_one_plus_x_for_x_in_0_1(a); break;
    case 16: r[0] = refq_tanh(a, b); break;
    case 17: r[0] = refq_logistic(a, b); break;
    case 18: r[0] = refq_count_leading_zeros((uint32_t)a); break;
    case 19: r[0] = refq_count_leading_sign_bits(a); break;
    case 20: r[0] = refq_sat_s8(a); break;
    case 21: r[0] = refq_sat_s16(a); break;
    case 22: refq_inv_sqrt_quantized_multiplier_exp(a, b, &r[0], &r[1]); break;
    case 23: r[0] = refq_sxtb16(a); break;
    case 24: r[0] = refq_sxtb16_ror8(a); break;
    case 25: r[0] = refq_smlad(a, b, d); break;
    case 26: {
        int8_t bytes[8];
        memcpy(&bytes[1], &a, sizeof a); /* an unaligned word */
        r[0] = refq_read_s8x4(&bytes[1]);
        break;
    }
    case 27: {
        /* little-endian on every target: r[0] the low half, r[1] the high half */
        const int64_t v = refq_smlald(d, e, join_s64(a, b));
        memcpy(r, &v, sizeof v);
        break;
    }
    default: return 0;
    }
    return 1;
}

int32_t refq_harness_invoke(void)
{
    const uint32_t n = refq_harness_inputs[0].length / (5u * sizeof(int32_t));
    uint32_t i;
    for (i = 0; i < n; ++i) {
        if (!run_case(&cases[5u * i], &results[2u * i])) {
            return REFQ_ARG_ERROR;
        }
    }
    refq_harness_outputs[0].length = n * 2u * (uint32_t)sizeof(int32_t);
    return REFQ_SUCCESS;
}
