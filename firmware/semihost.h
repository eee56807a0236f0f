/*
 * semihost.h - Arm semihosting calls (Arm "Semihosting for AArch32 and AArch64", version 2.0).
 *
 * A call is `BKPT 0xAB` in Thumb state with the operation number in r0 and a pointer to a block
 * of 32-bit parameter words in r1; the result comes back in r0. QEMU implements the calls with
 * `-semihosting-config enable=on,target=native`; without a debugger or QEMU the BKPT faults.
 */
#ifndef REFQ_SEMIHOST_H
#define REFQ_SEMIHOST_H

#include <stdint.h>

#define REFQ_SYS_OPEN 0x01u
#define REFQ_SYS_CLOSE 0x02u
#define REFQ_SYS_WRITE0 0x04u
#define REFQ_SYS_WRITE 0x05u
#define REFQ_SYS_READ 0x06u
#define REFQ_SYS_FLEN 0x0Cu
#define REFQ_SYS_EXIT 0x18u
#define REFQ_SYS_EXIT_EXTENDED 0x20u

/* SYS_OPEN modes (index into the ISO C fopen mode strings "r", "rb", "r+", ..., "w", "wb"). */
#define REFQ_SH_MODE_READ_BINARY 1u
#define REFQ_SH_MODE_WRITE_BINARY 5u

/* Reason code of SYS_EXIT / SYS_EXIT_EXTENDED for a normal application exit. */
#define REFQ_ADP_STOPPED_APPLICATION_EXIT 0x20026u

int32_t refq_semihost_call(uint32_t op, const void *args);

/* Thin wrappers; return values follow the specification (-1 on error for open/flen; the number
 * of bytes NOT transferred for read/write). */
int32_t refq_sh_open(const char *name, uint32_t mode);
int32_t refq_sh_close(int32_t handle);
int32_t refq_sh_flen(int32_t handle);
int32_t refq_sh_read(int32_t handle, void *buf, uint32_t length);
int32_t refq_sh_write(int32_t handle, const void *buf, uint32_t length);
void refq_sh_write0(const char *text);
void refq_sh_exit_extended(int32_t status)
#if defined(__GNUC__)
    __attribute__((noreturn))
#endif
    ;

#endif /* REFQ_SEMIHOST_H */
