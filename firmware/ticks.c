/*
 * ticks.c - a 64-bit tick counter from the Cortex-M SysTick (refq_platform_ticks()).
 *
 * SysTick is a 24-bit down-counter clocked by the core clock (CLKSOURCE = 1). It reloads from
 * RVR = 2^24 - 1, so one period is 2^24 ticks; its exception adds a period to a software count.
 * Under QEMU with `-icount shift=7` the clock is virtual time driven by the instruction count:
 * 25 MHz on mps2-an500 / an386 and 128 ns per instruction give exactly 3.2 ticks per instruction,
 * and the same program always reads the same values. The handler's own instructions (a few per
 * 5.2 M instructions) are counted like any others.
 */
#include "refq_platform.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

#define SYST_CSR_ENABLE (1u << 0)
#define SYST_CSR_TICKINT (1u << 1)
#define SYST_CSR_CLKSOURCE (1u << 2) /* core clock rather than the external reference clock */
#define SYST_PERIOD 0x1000000u       /* 2^24: RVR + 1 */

static volatile uint32_t periods; /* SysTick wrap-arounds since refq_ticks_init() */

void refq_ticks_init(void);
void refq_systick_handler(void);

void refq_ticks_init(void)
{
    SYST_CSR = 0u;
    SYST_RVR = SYST_PERIOD - 1u;
    SYST_CVR = 0u; /* any write clears the counter; it reloads from RVR on the next tick */
    periods = 0u;
    SYST_CSR = SYST_CSR_ENABLE | SYST_CSR_TICKINT | SYST_CSR_CLKSOURCE;
}

void refq_systick_handler(void)
{
    /* Pended when the counter reaches 0; the 0 -> RVR reload is the next tick. */
    periods = periods + 1u;
}

uint64_t refq_platform_ticks(void)
{
    uint32_t before;
    uint32_t value;
    uint32_t after;
    /* The handler may run between the two reads: retry until the period count is stable. */
    do {
        before = periods;
        value = SYST_CVR;
        after = periods;
    } while (before != after);
    /* Counting down from 2^24 - 1 (period k) to 0 (already counted as period k + 1): the ticks
     * elapsed, plus one, are k * 2^24 + ((2^24 - value) mod 2^24). The constant +1 cancels in
     * every difference. */
    return ((uint64_t)after << 24) + ((SYST_PERIOD - value) & (SYST_PERIOD - 1u));
}
