/*
 * startup.c - vector table, reset handler and fault handlers for Cortex-M4 / Cortex-M7.
 *
 * Reset: set VTOR, enable the FPU (hard-float builds), enable the separate MemManage / BusFault
 * / UsageFault handlers and the divide-by-zero trap, copy .data from flash, zero .bss,
 * .refq_state and .refq_arena, paint the stack (for a high-water mark), start the SysTick tick
 * counter, call main() and pass its return value to the host with semihosting
 * SYS_EXIT_EXTENDED. A fault prints the fault registers and
 * exits with 100 + the exception number (refq_harness.h), so a crash is an exit status, not a hang.
 */
#include <stdint.h>

#include "refq_harness.h"
#include "refq_platform.h"

/* Symbols from the linker script (mps2.ld, stm32h743.ld). */
extern uint32_t __data_load_start__;
extern uint32_t __data_start__;
extern uint32_t __data_end__;
extern uint32_t __bss_start__;
extern uint32_t __bss_end__;
extern uint32_t __refq_state_start__;
extern uint32_t __refq_state_end__;
extern uint32_t __refq_arena_start__;
extern uint32_t __refq_arena_end__;
extern uint32_t __stack_limit__;
extern uint32_t __stack_top__;

int main(void);
void refq_ticks_init(void);
void refq_systick_handler(void);
void refq_reset_handler(void);
void refq_fault_report(const uint32_t *frame);

#define SCB_VTOR (*(volatile uint32_t *)0xE000ED08u)
#define SCB_CCR (*(volatile uint32_t *)0xE000ED14u)
#define SCB_SHCSR (*(volatile uint32_t *)0xE000ED24u)
#define SCB_CFSR (*(volatile uint32_t *)0xE000ED28u)
#define SCB_HFSR (*(volatile uint32_t *)0xE000ED2Cu)
#define SCB_MMFAR (*(volatile uint32_t *)0xE000ED34u)
#define SCB_BFAR (*(volatile uint32_t *)0xE000ED38u)
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

#define CCR_DIV_0_TRP (1u << 4)
#define SHCSR_FAULTS_ENABLE ((1u << 16) | (1u << 17) | (1u << 18)) /* MEM, BUS, USG FAULTENA */
#define CPACR_CP10_CP11_FULL (0xFu << 20)

#define STACK_PAINT 0xA5A5A5A5u

/* External interrupt vectors: 150 on the STM32H743 (fewer on the mps2 boards). All of them point
 * at the fault entry, which reports an unexpected interrupt. */
#define REFQ_NUM_IRQS 150

static void fault_entry(void);

/* An entry is either the initial stack pointer (entry 0) or a handler: a union keeps both
 * without converting between object and function pointers, which ISO C does not allow. */
typedef union {
    void (*handler)(void);
    uint32_t *stack_top;
} vector_entry;

#define FAULT_1 {.handler = fault_entry}
#define FAULT_5 FAULT_1, FAULT_1, FAULT_1, FAULT_1, FAULT_1
#define FAULT_25 FAULT_5, FAULT_5, FAULT_5, FAULT_5, FAULT_5
#define FAULT_75 FAULT_25, FAULT_25, FAULT_25

__attribute__((section(".isr_vector"), used)) const vector_entry
    refq_vector_table[16 + REFQ_NUM_IRQS] = {
        {.stack_top = &__stack_top__},
        {.handler = refq_reset_handler},
        FAULT_5, /* NMI, HardFault, MemManage, BusFault, UsageFault */
        FAULT_1, FAULT_1, FAULT_1, FAULT_1, /* reserved */
        FAULT_1, /* SVCall */
        FAULT_1, /* DebugMonitor */
        FAULT_1, /* reserved */
        FAULT_1, /* PendSV */
        {.handler = refq_systick_handler},
        FAULT_75, /* IRQ 0 .. 149 */
        FAULT_75,
};

static inline uint32_t current_sp(void)
{
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

static void zero_words(uint32_t *begin, const uint32_t *end)
{
    while (begin < end) {
        *begin++ = 0u;
    }
}

void refq_reset_handler(void)
{
    uint32_t *src = &__data_load_start__;
    uint32_t *dst;
    volatile uint32_t *paint;
    /* Leave the words just below the current frame alone; everything further down is unused. */
    uint32_t *paint_end = (uint32_t *)(uintptr_t)((current_sp() - 64u) & ~3u);

    SCB_VTOR = (uint32_t)(uintptr_t)refq_vector_table;
#if defined(__ARM_FP)
    /* Hard-float code uses FPU registers from the first function call on: grant access to
     * CP10/CP11 before anything else runs. */
    SCB_CPACR |= CPACR_CP10_CP11_FULL;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    SCB_SHCSR |= SHCSR_FAULTS_ENABLE;
    SCB_CCR |= CCR_DIV_0_TRP;

    for (dst = &__data_start__; dst < &__data_end__;) {
        *dst++ = *src++;
    }
    /* Static storage starts zeroed in C, also in the model's state and arena sections. */
    zero_words(&__bss_start__, &__bss_end__);
    zero_words(&__refq_state_start__, &__refq_state_end__);
    zero_words(&__refq_arena_start__, &__refq_arena_end__);
    /* volatile: keep this a plain store loop (a memset call would use the stack being painted). */
    for (paint = &__stack_limit__; paint < paint_end;) {
        *paint++ = STACK_PAINT;
    }
    refq_ticks_init();
    refq_platform_exit(main());
}

uint32_t refq_platform_stack_used(void)
{
    const uint32_t *p = &__stack_limit__;
    while (p < &__stack_top__ && *p == STACK_PAINT) {
        ++p;
    }
    return (uint32_t)((uintptr_t)&__stack_top__ - (uintptr_t)p);
}

static void log_hex(const char *label, uint32_t value)
{
    static const char digits[] = "0123456789abcdef";
    char text[12];
    int i;
    text[0] = '0';
    text[1] = 'x';
    for (i = 0; i < 8; ++i) {
        text[2 + i] = digits[(value >> (28 - 4 * i)) & 0xFu];
    }
    text[10] = ' ';
    text[11] = '\0';
    refq_platform_log(label);
    refq_platform_log(text);
}

/* Called from fault_entry, on a fresh stack, with the stacked exception frame (r0-r3, r12, lr,
 * pc, xpsr) of the code that faulted. */
void refq_fault_report(const uint32_t *frame)
{
    uint32_t ipsr;
    int status;
    /* A frame outside the stack region means the stack overflowed (the stacking itself faulted):
     * report that instead of reading the frame, which would fault again. */
    const int overflow = frame < &__stack_limit__ || frame + 8 > &__stack_top__;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    ipsr &= 0x1FFu;
    refq_platform_log(overflow ? "refq firmware: stack overflow, exception "
                               : "refq firmware: exception ");
    log_hex("ipsr=", ipsr);
    if (!overflow) {
        log_hex("pc=", frame[6]);
        log_hex("lr=", frame[5]);
    }
    log_hex("cfsr=", SCB_CFSR);
    log_hex("hfsr=", SCB_HFSR);
    log_hex("mmfar=", SCB_MMFAR);
    log_hex("bfar=", SCB_BFAR);
    refq_platform_log("\n");
    status = overflow     ? REFQ_EXIT_STACK_OVERFLOW
             : ipsr < 16u ? REFQ_EXIT_FAULT_BASE + (int)ipsr
                          : REFQ_EXIT_UNEXPECTED_IRQ;
    refq_platform_exit(status);
}

/* Pass the stacked exception frame (on MSP or PSP, as EXC_RETURN bit 2 says) to the reporter,
 * on a stack reset to its top: the program ends there, and the old stack may have overflowed. */
__attribute__((naked)) static void fault_entry(void)
{
    __asm__ volatile(
        "tst lr, #4\n\t"
        "ite eq\n\t"
        "mrseq r0, msp\n\t"
        "mrsne r0, psp\n\t"
        "ldr r1, =__stack_top__\n\t"
        "mov sp, r1\n\t"
        "b refq_fault_report\n\t");
}
