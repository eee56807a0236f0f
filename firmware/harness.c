/*
 * harness.c - main() of every refq test program, on the host and under QEMU.
 *
 * Reads the entry point's inputs from host files, runs refq_harness_invoke() between two reads
 * of the instruction counter, writes the outputs and refq_stats.txt, and returns an exit status
 * from refq_harness.h (the Cortex-M reset handler passes it to the host via semihosting).
 */
#include "refq_harness.h"
#include "refq_platform.h"

/* Decimal text of v into buf (at least 21 bytes); returns the length. No printf: newlib's
 * printf would pull in malloc and the syscall layer for one number. */
static uint32_t format_u64(uint64_t v, char *buf)
{
    char digits[20];
    uint32_t n = 0;
    uint32_t i;
    do {
        digits[n++] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v != 0u);
    for (i = 0; i < n; ++i) {
        buf[i] = digits[n - 1u - i];
    }
    return n;
}

static uint32_t append(char *dst, uint32_t at, const char *text)
{
    while (*text != '\0') {
        dst[at++] = *text++;
    }
    return at;
}

static int write_stats(uint64_t ticks, uint64_t overhead, uint32_t stack_bytes)
{
    char text[128];
    uint32_t n = 0;
    n = append(text, n, "ticks ");
    n += format_u64(ticks, text + n);
    n = append(text, n, "\noverhead_ticks ");
    n += format_u64(overhead, text + n);
    n = append(text, n, "\nstack_bytes ");
    n += format_u64(stack_bytes, text + n);
    n = append(text, n, "\n");
    return refq_platform_write_file(REFQ_HARNESS_STATS_FILE, text, n);
}

static int exit_status_of(int32_t status)
{
    if (status < 0) {
        /* -status cannot overflow here: clamp first. */
        return status < -(63 - REFQ_EXIT_STATUS_NEGATIVE_BASE)
                   ? 63
                   : REFQ_EXIT_STATUS_NEGATIVE_BASE - (int)status;
    }
    return status > 95 - REFQ_EXIT_STATUS_POSITIVE_BASE ? 95
                                                       : REFQ_EXIT_STATUS_POSITIVE_BASE + (int)status;
}

static void log_file_error(const char *what, const char *file)
{
    refq_platform_log(what);
    refq_platform_log(file);
    refq_platform_log("\n");
}

int main(void)
{
    uint32_t i;
    int rc;
    uint64_t t0;
    uint64_t t1;
    uint64_t t2;
    int32_t status;

    for (i = 0; i < refq_harness_num_inputs; ++i) {
        refq_harness_buffer *in = &refq_harness_inputs[i];
        rc = refq_platform_read_file(in->file, in->data, in->capacity, &in->length);
        if (rc != 0) {
            log_file_error("refq harness: cannot read input ", in->file);
            return rc;
        }
    }

    /* Two back-to-back reads give the cost of one measurement, subtracted on the host side. */
    t0 = refq_platform_ticks();
    t1 = refq_platform_ticks();
    status = refq_harness_invoke();
    t2 = refq_platform_ticks();

    if (status != 0) {
        refq_platform_log("refq harness: the entry point returned an error status\n");
        return exit_status_of(status);
    }
    for (i = 0; i < refq_harness_num_outputs; ++i) {
        const refq_harness_buffer *out = &refq_harness_outputs[i];
        if (out->length > out->capacity) {
            log_file_error("refq harness: output longer than its buffer: ", out->file);
            return REFQ_EXIT_OUTPUT_SIZE;
        }
        rc = refq_platform_write_file(out->file, out->data, out->length);
        if (rc != 0) {
            log_file_error("refq harness: cannot write output ", out->file);
            return rc;
        }
    }
    rc = write_stats(t2 - t1, t1 - t0, refq_platform_stack_used());
    if (rc != 0) {
        log_file_error("refq harness: cannot write ", REFQ_HARNESS_STATS_FILE);
    }
    return rc;
}
