/*
 * firmware_entry.c - test entry point for tests/test_firmware.py.
 *
 * Input cmd.bin: little-endian uint32 words {command, argument}; data.bin: bytes for `echo`.
 * Output out.bin: what the command produces. Commands:
 *   0 echo         out = data
 *   1 status       return the argument (as int32) from refq_harness_invoke()
 *   2 spin         a loop of exactly 2 instructions per iteration, argument iterations
 *   3 fault        0: load from an unmapped address, 1: undefined instruction, 2: divide by 0
 *   4 ticks        sample the tick counter `argument` times: out = {first, last, min step,
 *                  max step} as uint64 (checks monotonicity across SysTick wrap-arounds)
 *   5 float        out = float32 bits of a * b + c for a, b, c float32 bits in data (FPU / ABI)
 *   6 stack        recurse through frames of 1 KB, argument frames deep
 */
#include <stdint.h>
#include <string.h>

#include "refq_harness.h"
#include "refq_platform.h"

static uint32_t cmd[2];
static uint8_t data[4096];
static uint8_t out[4096];

refq_harness_buffer refq_harness_inputs[] = {
    {"cmd.bin", cmd, sizeof cmd, 0},
    {"data.bin", data, sizeof data, 0},
};
const uint32_t refq_harness_num_inputs = 2;
refq_harness_buffer refq_harness_outputs[] = {{"out.bin", out, sizeof out, 0}};
const uint32_t refq_harness_num_outputs = 1;

static void spin(uint32_t n)
{
#if defined(__arm__)
    /* subs + bne: two instructions per iteration, n >= 1. */
    __asm__ volatile("1:\n\tsubs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
#else
    volatile uint32_t k = n;
    while (k != 0u) {
        k = k - 1u;
    }
#endif
}

static void fault(uint32_t kind)
{
#if defined(__arm__)
    if (kind == 0u) {
        volatile uint32_t *bad = (volatile uint32_t *)(uintptr_t)0xF0000000u;
        (void)*bad;
    } else if (kind == 1u) {
        __asm__ volatile(".inst.n 0xde00"); /* UDF #0 */
    } else {
        volatile uint32_t num = 7u;
        volatile uint32_t zero = 0u;
        volatile uint32_t q = num / zero; /* UDIV with CCR.DIV_0_TRP set: UsageFault */
        (void)q;
    }
#else
    (void)kind;
#endif
}

#if defined(__GNUC__)
__attribute__((noinline)) /* one 1 KB frame per level, as the stack test expects */
#endif
static uint32_t recurse(uint32_t depth)
{
    volatile uint8_t frame[1024];
    uint32_t r;
    frame[0] = (uint8_t)depth;
    frame[sizeof frame - 1] = (uint8_t)depth;
    r = depth == 0u ? 0u : recurse(depth - 1u) + 1u;
    return r + frame[0] - frame[sizeof frame - 1];
}

static void put_u64(uint8_t *p, uint64_t v)
{
    uint32_t i;
    for (i = 0; i < 8u; ++i) {
        p[i] = (uint8_t)(v >> (8u * i));
    }
}

int32_t refq_harness_invoke(void)
{
    refq_harness_outputs[0].length = 0;
    switch (cmd[0]) {
    case 0:
        memcpy(out, data, refq_harness_inputs[1].length);
        refq_harness_outputs[0].length = refq_harness_inputs[1].length;
        return 0;
    case 1:
        return (int32_t)cmd[1];
    case 2:
        spin(cmd[1]);
        return 0;
    case 3:
        fault(cmd[1]);
        return 0;
    case 4: {
        uint64_t first = refq_platform_ticks();
        uint64_t prev = first;
        uint64_t lo = UINT64_MAX;
        uint64_t hi = 0;
        uint32_t i;
        for (i = 0; i < cmd[1]; ++i) {
            uint64_t now = refq_platform_ticks();
            uint64_t step = now - prev;
            lo = step < lo ? step : lo;
            hi = step > hi ? step : hi;
            prev = now;
        }
        put_u64(out, first);
        put_u64(out + 8, prev);
        put_u64(out + 16, lo);
        put_u64(out + 24, hi);
        refq_harness_outputs[0].length = 32;
        return 0;
    }
    case 5: {
        volatile float abc[3];
        float r;
        memcpy((void *)abc, data, sizeof abc);
        r = abc[0] * abc[1];
        r = r + abc[2];
        memcpy(out, &r, sizeof r);
        refq_harness_outputs[0].length = sizeof r;
        return 0;
    }
    case 6:
        return recurse(cmd[1]) == cmd[1] ? 0 : 1;
    default:
        return -1;
    }
}
