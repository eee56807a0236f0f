/*
 * platform_host.c - refq_platform.h for a host build (stdio files, exit(), no tick counter).
 * The same harness.c and generated sources then run natively, e.g. under UBSan and ASan.
 */
#include <stdio.h>
#include <stdlib.h>

#include "refq_harness.h"
#include "refq_platform.h"

int refq_platform_read_file(const char *name, void *buf, uint32_t capacity, uint32_t *length)
{
    FILE *f = fopen(name, "rb");
    long size;
    int rc = REFQ_EXIT_OK;
    *length = 0;
    if (f == NULL) {
        return REFQ_EXIT_INPUT_OPEN;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        rc = REFQ_EXIT_INPUT_READ;
    } else if ((unsigned long)size > capacity) {
        rc = REFQ_EXIT_INPUT_SIZE;
    } else if (size > 0 && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        rc = REFQ_EXIT_INPUT_READ;
    } else {
        *length = (uint32_t)size;
    }
    fclose(f);
    return rc;
}

int refq_platform_write_file(const char *name, const void *buf, uint32_t length)
{
    FILE *f = fopen(name, "wb");
    int rc = REFQ_EXIT_OK;
    if (f == NULL) {
        return REFQ_EXIT_OUTPUT_WRITE;
    }
    if (length > 0 && fwrite(buf, 1, length, f) != length) {
        rc = REFQ_EXIT_OUTPUT_WRITE;
    }
    if (fclose(f) != 0) {
        rc = REFQ_EXIT_OUTPUT_WRITE;
    }
    return rc;
}

void refq_platform_log(const char *text)
{
    fputs(text, stderr);
}

void refq_platform_exit(int status)
{
    exit(status);
}

uint64_t refq_platform_ticks(void)
{
    return 0u;
}

uint32_t refq_platform_stack_used(void)
{
    return 0u;
}
