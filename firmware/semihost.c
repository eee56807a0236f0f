/*
 * semihost.c - semihosting calls and the file / exit services of refq_platform.h on Cortex-M.
 * Written from the Arm semihosting specification (operation numbers and parameter blocks).
 */
#include "semihost.h"

#include "refq_harness.h"
#include "refq_platform.h"

int32_t refq_semihost_call(uint32_t op, const void *args)
{
    /* The ABI of the call is fixed registers, so bind the operands to r0 and r1. */
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = args;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return (int32_t)r0;
}

static uint32_t string_length(const char *s)
{
    uint32_t n = 0;
    while (s[n] != '\0') {
        ++n;
    }
    return n;
}

int32_t refq_sh_open(const char *name, uint32_t mode)
{
    /* Parameter block: pointer to the name, mode, length of the name without its NUL. */
    const uint32_t args[3] = {(uint32_t)(uintptr_t)name, mode, string_length(name)};
    return refq_semihost_call(REFQ_SYS_OPEN, args);
}

int32_t refq_sh_close(int32_t handle)
{
    const uint32_t args[1] = {(uint32_t)handle};
    return refq_semihost_call(REFQ_SYS_CLOSE, args);
}

int32_t refq_sh_flen(int32_t handle)
{
    const uint32_t args[1] = {(uint32_t)handle};
    return refq_semihost_call(REFQ_SYS_FLEN, args);
}

int32_t refq_sh_read(int32_t handle, void *buf, uint32_t length)
{
    const uint32_t args[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, length};
    return refq_semihost_call(REFQ_SYS_READ, args);
}

int32_t refq_sh_write(int32_t handle, const void *buf, uint32_t length)
{
    const uint32_t args[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, length};
    return refq_semihost_call(REFQ_SYS_WRITE, args);
}

void refq_sh_write0(const char *text)
{
    /* SYS_WRITE0 takes the string itself in r1, not a parameter block. */
    (void)refq_semihost_call(REFQ_SYS_WRITE0, text);
}

void refq_sh_exit_extended(int32_t status)
{
    /* SYS_EXIT_EXTENDED carries the full exit status (SYS_EXIT on AArch32 only says 0 or 1). */
    const uint32_t args[2] = {REFQ_ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
    (void)refq_semihost_call(REFQ_SYS_EXIT_EXTENDED, args);
    /* Only reached without a semihosting host: stop here rather than run off. */
    for (;;) {
        __asm__ volatile("bkpt 0x00");
    }
}

/* ---- refq_platform.h on top of semihosting ---- */

int refq_platform_read_file(const char *name, void *buf, uint32_t capacity, uint32_t *length)
{
    int32_t handle = refq_sh_open(name, REFQ_SH_MODE_READ_BINARY);
    int32_t flen;
    int rc = REFQ_EXIT_OK;
    *length = 0;
    if (handle < 0) {
        return REFQ_EXIT_INPUT_OPEN;
    }
    flen = refq_sh_flen(handle);
    if (flen < 0) {
        rc = REFQ_EXIT_INPUT_READ;
    } else if ((uint32_t)flen > capacity) {
        rc = REFQ_EXIT_INPUT_SIZE;
    } else if (flen > 0 && refq_sh_read(handle, buf, (uint32_t)flen) != 0) {
        rc = REFQ_EXIT_INPUT_READ; /* SYS_READ returns the number of bytes it did not read */
    } else {
        *length = (uint32_t)flen;
    }
    (void)refq_sh_close(handle);
    return rc;
}

int refq_platform_write_file(const char *name, const void *buf, uint32_t length)
{
    int32_t handle = refq_sh_open(name, REFQ_SH_MODE_WRITE_BINARY);
    int rc = REFQ_EXIT_OK;
    if (handle < 0) {
        return REFQ_EXIT_OUTPUT_WRITE;
    }
    if (length > 0 && refq_sh_write(handle, buf, length) != 0) {
        rc = REFQ_EXIT_OUTPUT_WRITE;
    }
    if (refq_sh_close(handle) != 0) {
        rc = REFQ_EXIT_OUTPUT_WRITE;
    }
    return rc;
}

void refq_platform_log(const char *text)
{
    refq_sh_write0(text);
}

void refq_platform_exit(int status)
{
    refq_sh_exit_extended((int32_t)status);
}
