/*
 * refq_harness.h - the contract between the test harness (harness.c) and a generated entry point.
 *
 * The entry point (a generated harness_entry.c, or a hand-written test program) describes its
 * input and output buffers; the harness reads every input from the host file of that name,
 * calls refq_harness_invoke() between two reads of the instruction counter, then writes every
 * output and a statistics file. Exit statuses are listed below; codegen/run.py decodes them.
 */
#ifndef REFQ_HARNESS_H
#define REFQ_HARNESS_H

#include <stdint.h>

typedef struct {
    const char *file;  /* host file name, relative to the emulator's (or program's) working dir */
    void *data;        /* buffer owned by the entry point */
    uint32_t capacity; /* bytes available in data */
    uint32_t length;   /* inputs: bytes read by the harness; outputs: bytes the entry point
                          produced (the harness writes exactly this many) */
} refq_harness_buffer;

/* Defined by the entry point. C99 has no empty arrays: with no inputs, define one unused element
 * and set the count to 0. */
extern refq_harness_buffer refq_harness_inputs[];
extern const uint32_t refq_harness_num_inputs;
extern refq_harness_buffer refq_harness_outputs[];
extern const uint32_t refq_harness_num_outputs;

/* Run the program under test on the inputs. Returns 0 (REFQ_SUCCESS) or a negative refq status
 * (REFQ_ARG_ERROR -1, REFQ_NO_IMPL_ERROR -2, ...) or a positive entry-specific code. */
int32_t refq_harness_invoke(void);

/* File the harness writes after a successful run: "ticks N\noverhead_ticks N\nstack_bytes N\n".
 * ticks is measured around refq_harness_invoke(); overhead_ticks is the cost of the measurement
 * itself (two back-to-back counter reads), to be subtracted. */
#define REFQ_HARNESS_STATS_FILE "refq_stats.txt"

/* Exit statuses (all below 128 so that they never look like a host signal). */
#define REFQ_EXIT_OK 0
#define REFQ_EXIT_INPUT_OPEN 2   /* an input file could not be opened */
#define REFQ_EXIT_INPUT_SIZE 3   /* an input file is larger than its buffer */
#define REFQ_EXIT_INPUT_READ 4   /* short read */
#define REFQ_EXIT_OUTPUT_WRITE 5 /* an output (or the stats file) could not be written */
#define REFQ_EXIT_OUTPUT_SIZE 6  /* the entry point set an output length above its capacity */
/* refq_harness_invoke() returned s != 0: negative s -> 16 - s (clamped to 63), so REFQ_ARG_ERROR
 * exits with 17 and REFQ_NO_IMPL_ERROR with 18; positive s -> 64 + s (clamped to 95). */
#define REFQ_EXIT_STATUS_NEGATIVE_BASE 16
#define REFQ_EXIT_STATUS_POSITIVE_BASE 64
/* Cortex-M faults (firmware only): 100 + exception number, e.g. HardFault 103, MemManage 104,
 * BusFault 105, UsageFault 106; an interrupt nobody enabled exits with 120. */
#define REFQ_EXIT_FAULT_BASE 100
#define REFQ_EXIT_UNEXPECTED_IRQ 120
/* A fault whose exception frame lies outside the stack region: the stack overflowed. */
#define REFQ_EXIT_STACK_OVERFLOW 99

#endif /* REFQ_HARNESS_H */
