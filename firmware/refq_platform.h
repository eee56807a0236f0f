/*
 * refq_platform.h - services the test harness needs from the machine it runs on.
 *
 * Two implementations: semihost.c + ticks.c + startup.c for Cortex-M under QEMU (or a board with
 * a debugger attached), platform_host.c for a host build. Generated model code never includes
 * this header; only the harness and test entry points do.
 */
#ifndef REFQ_PLATFORM_H
#define REFQ_PLATFORM_H

#include <stdint.h>

/* Read the whole host file `name` into buf (at most capacity bytes). Returns 0 on success,
 * REFQ_EXIT_INPUT_OPEN if the file cannot be opened, REFQ_EXIT_INPUT_SIZE if it is larger than
 * capacity, REFQ_EXIT_INPUT_READ on a short read. *length receives the file's length. */
int refq_platform_read_file(const char *name, void *buf, uint32_t capacity, uint32_t *length);

/* Create (or truncate) the host file `name` and write length bytes. Returns 0 or
 * REFQ_EXIT_OUTPUT_WRITE. */
int refq_platform_write_file(const char *name, const void *buf, uint32_t length);

/* Write a NUL-terminated diagnostic line to the host's stderr. */
void refq_platform_log(const char *text);

/* End the program with an exit status the host sees (QEMU's own exit status under
 * semihosting). Does not return. */
void refq_platform_exit(int status)
#if defined(__GNUC__)
    __attribute__((noreturn))
#endif
    ;

/* Timer ticks since start-up, 64 bits wide. Under QEMU with `-icount shift=7` on the mps2 boards
 * the SysTick runs at 25 MHz of virtual time and every instruction advances virtual time by
 * 2^7 ns, so one instruction is 3.2 ticks: instructions = ticks * 5 / 16. Host builds return 0. */
uint64_t refq_platform_ticks(void);

#define REFQ_TICKS_PER_INSTRUCTION_NUM 16u /* 3.2 = 16 / 5 */
#define REFQ_TICKS_PER_INSTRUCTION_DEN 5u

/* Bytes of the main stack used so far (high-water mark of the painted stack); 0 on hosts. */
uint32_t refq_platform_stack_used(void);

#endif /* REFQ_PLATFORM_H */
