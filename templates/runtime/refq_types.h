/*
 * refq_types.h - types shared by refq's generated kernels and models (C99).
 *
 * Conventions follow CMSIS-NN's (so that kernels read familiarly to embedded engineers) under
 * refq's own names: status codes, dims {n, h, w, c}, a scratch-buffer context, per-tensor and
 * per-channel requantization parameters, an activation range, and the fully connected params
 * with input_offset = -zp_in and output_offset = +zp_out.
 */
#ifndef REFQ_TYPES_H
#define REFQ_TYPES_H

#include <stddef.h>
#include <stdint.h>

#define REFQ_RUNTIME_VERSION 1

/* Status returned by every kernel and model entry point. */
typedef enum {
    REFQ_SUCCESS = 0,       /* no error */
    REFQ_ARG_ERROR = -1,    /* an argument is out of the supported range */
    REFQ_NO_IMPL_ERROR = -2 /* the combination of arguments has no implementation */
} refq_status;

/* REFQ_ALIGN(n) before a declaration aligns the object to n bytes (n a power of two). */
#if defined(__CC_ARM)
#define REFQ_ALIGN(n) __align(n) /* Arm Compiler 5 */
#elif defined(__GNUC__) || defined(__clang__)
#define REFQ_ALIGN(n) __attribute__((aligned(n))) /* gcc, clang, Arm Compiler 6, TI, TASKING */
#elif defined(__ICCARM__)
#define REFQ_PRAGMA(x) _Pragma(#x)
#define REFQ_ALIGN(n) REFQ_PRAGMA(data_alignment = n) /* IAR */
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define REFQ_ALIGN(n) _Alignas(n)
#else
#error "refq_types.h: no way to align data with this compiler; define REFQ_ALIGN(n)"
#endif

/* REFQ_SECTION(name) places a static object in a named linker section (.refq_arena for the
 * tensor arena, .refq_state for the KV cache); compilers without the attribute ignore it. */
#if defined(__GNUC__) || defined(__clang__) || defined(__CC_ARM)
#define REFQ_SECTION(name) __attribute__((section(name)))
#else
#define REFQ_SECTION(name)
#endif

#if defined(__GNUC__) || defined(__clang__)
#define REFQ_INLINE static inline __attribute__((always_inline))
#else
#define REFQ_INLINE static inline
#endif

/* Tensor shape, NHWC; a matrix [rows][cols] is {n = rows, h = 1, w = 1, c = cols}. */
typedef struct {
    int32_t n;
    int32_t h;
    int32_t w;
    int32_t c;
} refq_dims;

/* Scratch memory for a kernel; its size comes from refq_<op>_<dtype>_get_buffer_size(). */
typedef struct {
    void *buf;
    int32_t size;
} refq_context;

/* Output clamp range (after adding the output zero point). */
typedef struct {
    int32_t min;
    int32_t max;
} refq_activation;

/* One multiplier M and shift s for the whole tensor: y ~ x * M * 2^(s - 31). */
typedef struct {
    int32_t multiplier;
    int32_t shift;
} refq_per_tensor_quant_params;

/* One multiplier and shift per output channel. */
typedef struct {
    const int32_t *multiplier;
    const int32_t *shift;
} refq_per_channel_quant_params;

/* Fully connected: acc = bias + sum (x + input_offset) * (w + filter_offset);
 * y = clamp(requantize(acc) + output_offset, activation). */
typedef struct {
    int32_t input_offset;  /* -zp_in */
    int32_t filter_offset; /* -zp_w, 0 for symmetric weights */
    int32_t output_offset; /* +zp_out */
    refq_activation activation;
} refq_fc_params;

#endif /* REFQ_TYPES_H */
