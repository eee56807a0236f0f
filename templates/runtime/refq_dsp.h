/*
 * refq_dsp.h - the Cortex-M DSP extension's SIMD-within-a-register operations that kernels use,
 * each with a plain-C equivalent that gives the same bits on any target (C99).
 *
 * Lanes: a 32-bit word holds two int16 halfwords (bits 0-15 and 16-31) or four int8 bytes
 * (byte 0 in bits 0-7). Words are read from memory in little-endian order, as on Cortex-M.
 * With REFQ_USE_DSP (refq_fixedpoint.h: __ARM_FEATURE_DSP and __ARM_FEATURE_SIMD32, and not
 * -DREFQ_NO_DSP) the functions are the instructions themselves via arm_acle.h.
 */
#ifndef REFQ_DSP_H
#define REFQ_DSP_H

#include <stdint.h>
#include <string.h>

#include "refq_fixedpoint.h"

/* The word at p (any alignment): four int8 lanes, p[0] in bits 0-7. memcpy compiles to one LDR
 * on Cortex-M4/M7, which allow unaligned word loads. */
REFQ_INLINE int32_t refq_read_s8x4(const int8_t *p)
{
    uint32_t u;
    memcpy(&u, p, sizeof u);
    return refq_wrap_s32(u);
}

/* Sign-extended int16 value of halfword 0 / halfword 1 of x. */
REFQ_INLINE int32_t refq_s16_lo(int32_t x)
{
    const uint32_t h = (uint32_t)x & 0xFFFFu;
    return (int32_t)h - (int32_t)((h & 0x8000u) << 1);
}

REFQ_INLINE int32_t refq_s16_hi(int32_t x)
{
    const uint32_t h = ((uint32_t)x >> 16) & 0xFFFFu;
    return (int32_t)h - (int32_t)((h & 0x8000u) << 1);
}

/* Two int16 values (each in [-32768, 32767]) as one word, lo in halfword 0. */
REFQ_INLINE int32_t refq_pack_s16x2(int32_t lo, int32_t hi)
{
    return refq_wrap_s32(((uint32_t)hi << 16) | ((uint32_t)lo & 0xFFFFu));
}

REFQ_INLINE int32_t refq_sign_extend_byte(uint32_t b)
{
    return (int32_t)(b & 0xFFu) - (int32_t)((b & 0x80u) << 1);
}

/* SXTB16: bytes 0 and 2 of x, sign-extended into halfwords 0 and 1. */
REFQ_INLINE int32_t refq_sxtb16(int32_t x)
{
#if REFQ_USE_DSP
    return __sxtb16(x);
#else
    const uint32_t u = (uint32_t)x;
    return refq_pack_s16x2(refq_sign_extend_byte(u), refq_sign_extend_byte(u >> 16));
#endif
}

/* SXTB16 with ROR #8: bytes 1 and 3 of x, sign-extended into halfwords 0 and 1. */
REFQ_INLINE int32_t refq_sxtb16_ror8(int32_t x)
{
#if REFQ_USE_DSP && (defined(__GNUC__) || defined(__clang__))
    /* One instruction: gcc 12 does not fold a rotation into SXTB16's ROR operand by itself. */
    int32_t result;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(result) : "r"(x));
    return result;
#else
    const uint32_t rotated = ((uint32_t)x >> 8) | ((uint32_t)x << 24);
#if REFQ_USE_DSP
    return __sxtb16(refq_wrap_s32(rotated));
#else
    return refq_pack_s16x2(refq_sign_extend_byte(rotated), refq_sign_extend_byte(rotated >> 16));
#endif
#endif
}

/* SMLAD: acc + lo(x)*lo(y) + hi(x)*hi(y) over signed halfwords, the sum wrapping to 32 bits
 * (the instruction sets the Q flag on overflow and writes the low 32 bits). */
REFQ_INLINE int32_t refq_smlad(int32_t x, int32_t y, int32_t acc)
{
#if REFQ_USE_DSP
    return __smlad(x, y, acc);
#else
    /* Each product is at most 2^30 in magnitude: the sum is exact in int64. */
    const int64_t sum = (int64_t)acc + (int64_t)(refq_s16_lo(x) * refq_s16_lo(y)) +
                        (int64_t)(refq_s16_hi(x) * refq_s16_hi(y));
    return refq_wrap_s64_to_s32(sum);
#endif
}

/* SMLALD: acc + lo(x)*lo(y) + hi(x)*hi(y) over signed halfwords, in 64 bits (exact). */
REFQ_INLINE int64_t refq_smlald(int32_t x, int32_t y, int64_t acc)
{
#if REFQ_USE_DSP
    return __smlald(x, y, acc);
#else
    return acc + (int64_t)(refq_s16_lo(x) * refq_s16_lo(y)) +
           (int64_t)(refq_s16_hi(x) * refq_s16_hi(y));
#endif
}

#endif /* REFQ_DSP_H */
