/*
 * internal.h -- private services shared by every layer of libstsl (never installed).
 *
 * One concept, one place: allocation (with fault injection), error text, logging, the
 * parallel-for, the counter-based RNG and size arithmetic live here and nowhere else.
 */
#ifndef STSL_INTERNAL_H
#define STSL_INTERNAL_H

#include "stsl.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STSL_ERRMSG_SIZE 512

#if defined(__GNUC__)
#define STSL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define STSL_INTERNAL __attribute__((visibility("hidden")))
#else
#define STSL_PRINTF(a, b)
#define STSL_INTERNAL
#endif

/* ---- allocation: every library allocation goes through these (fault injection, issue 9) ---- */

void *stsl__malloc(size_t size);
void *stsl__calloc(size_t count, size_t size);
void *stsl__realloc(void *ptr, size_t size);
void stsl__free(void *ptr);
char *stsl__strdup(const char *s);
/* count * size floats with overflow check; NULL on overflow or failure. */
float *stsl__alloc_floats(size_t count);
double *stsl__alloc_doubles(size_t count);

/* Test hook (built into the fault-injection build only): fail allocation number n (1-based)
 * counted from the last reset; n = 0 disables.  Returns the number of allocations so far. */
void stsl__fault_set(long n);
long stsl__fault_count(void);

/* size_t multiply with overflow detection: returns false on overflow. */
static inline bool stsl__mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}

/* ---- error text: per-handle buffer, sqlite3_errmsg semantics ---- */

/* Format into buf (STSL_ERRMSG_SIZE) and return status, so callers write
 * `return stsl__fail(h->err, STSL_ERR_INVALID_ARG, "kernel size %d is even", k);` */
stsl_status stsl__fail(char *buf, stsl_status status, const char *fmt, ...) STSL_PRINTF(3, 4);
void stsl__clear_error(char *buf);

/* ---- context ---- */

/* The device models load on, as stsl__device_parse (models/device.h, the one reader of a device
 * string) reads it.  CPU is 0 on purpose: a new context (calloc'd) holds the default,
 * STSL_DEFAULT_DEVICE "cpu" (test_core checks that parsing STSL_DEFAULT_DEVICE gives it). */
typedef enum stsl__device_kind {
    STSL__DEVICE_CPU = 0,
    STSL__DEVICE_CUDA = 1,   /* index: which GPU, 0..255 */
    STSL__DEVICE_AUTO = 2    /* CUDA device 0 when one is usable at load, else the CPU */
} stsl__device_kind;
typedef struct stsl__device {
    stsl__device_kind kind;
    int index;
} stsl__device;

struct stsl_context {
    stsl_log_fn log_fn;
    void *log_user;
    stsl_log_level log_level;
    int threads;
    stsl_precision precision;
    stsl__device device;
    char err[STSL_ERRMSG_SIZE];
};

/* Error into the context when there is one (ctx may be NULL). */
stsl_status stsl__ctx_fail(stsl_context *ctx, stsl_status status, const char *fmt, ...)
    STSL_PRINTF(3, 4);
void stsl__log(const stsl_context *ctx, stsl_log_level level, const char *fmt, ...)
    STSL_PRINTF(3, 4);
int stsl__ctx_threads(const stsl_context *ctx);

/* ---- handles that solvers may share across threads (scores, autoencoders) ---- */

/* A zeroed handle of `size` bytes whose pthread mutex at byte offset `lock_at` is initialised;
 * NULL when out of memory or without a mutex, with "<what>: ..." in ctx (STSL_ERR_NOMEM). */
void *stsl__shared_new(stsl_context *ctx, size_t size, size_t lock_at, const char *what);
/* Such a handle keeps its last error (STSL_ERRMSG_SIZE bytes at dst) under its lock, so that
 * failures in several threads do not interleave: a failing st copies err there.  Returns st. */
stsl_status stsl__shared_record(pthread_mutex_t *lock, char *dst, stsl_status st, const char *err);

/* ---- parallel for: [0, n) split into contiguous chunks over `threads` pthreads ---- */

typedef void (*stsl__range_fn)(void *arg, size_t begin, size_t end);
/* Runs fn over chunks; with threads <= 1 or small n it runs inline.  Chunking never changes
 * results: callers only use it for element-wise independent work. */
stsl_status stsl__parallel_for(int threads, size_t n, size_t min_chunk, stsl__range_fn fn,
                               void *arg);

/* ---- counter-based random numbers (Philox4x32-10) ---- */

/* Four 32-bit words of block `counter` for (seed, stream). */
void stsl__philox4x32(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t out[4]);
/* Normal / uniform draws i = offset .. offset+n-1 of (seed, stream), single thread. */
void stsl__rng_normal(uint64_t seed, uint64_t stream, uint64_t offset, float *out, size_t n);
void stsl__rng_uniform(uint64_t seed, uint64_t stream, uint64_t offset, float *out, size_t n);
/* The normal pair of two Philox words (wu, wa) (words 0, 1 and 2, 3 of a block), as
 * stsl__rng_normal computes it, and the same Box-Muller in double with libm: the yardstick the
 * tests hold the float transform to. */
void stsl__normal_pair(uint32_t wu, uint32_t wa, float z[2]);
void stsl__normal_pair_reference(uint32_t wu, uint32_t wa, double z[2]);
/* Uniform double in [0,1) draw number i (53 bits) and a uniform integer in [0, n). */
double stsl__rng_uniform_double(uint64_t seed, uint64_t stream, uint64_t i);
/* Derive a stream id from a purpose tag and up to three indices (sample, step, inner), so that
 * every random draw in the library has its own, reproducible stream. */
uint64_t stsl__stream(uint32_t tag, uint64_t a, uint64_t b, uint64_t c);

/* Purpose tags for stsl__stream (append only: changing one changes every seeded result). */
enum {
    STSL_TAG_MEASURE_NOISE = 1,
    STSL_TAG_MASK = 2,
    STSL_TAG_KERNEL = 3,
    STSL_TAG_IMPULSE = 4,
    STSL_TAG_INIT_NOISE = 5,
    STSL_TAG_STEP_NOISE = 6,
    STSL_TAG_PROBE = 7,
    STSL_TAG_SGLD = 8,
    STSL_TAG_RENOISE = 9,
    STSL_TAG_TESTBED = 10
};

/* ---- schedule ---- */

struct stsl_schedule {
    stsl_schedule_kind kind;
    int timesteps;
    double beta_start, beta_end;
    double *alpha_bar;   /* timesteps entries */
};

/* abar at a real-valued t in [-1, timesteps-1] by linear interpolation of the table (t = -1 is
 * the clean end, abar = 1). */
double stsl__alpha_bar_at(const stsl_schedule *s, double t);

/* ---- shapes ---- */

/* Validate a shape against the documented limits; writes detail into err. */
stsl_status stsl__check_shape(char *err, stsl_shape shape);
static inline size_t stsl__shape_size(stsl_shape s)
{
    return (size_t)s.channels * (size_t)s.height * (size_t)s.width;
}

/* ---- parameter metadata (solvers/solver_params.c, operators/operator_params.c) ---- */

/* A symbolic value of an enum parameter; the first name of a value is its name, later ones
 * aliases.  Arrays end with a NULL name. */
typedef struct stsl__value_name {
    const char *name;
    int value;
} stsl__value_name;

/* What a key is called and what it does, written once for every object kind that uses it
 * (keys 1..99 in the operator table, 100.. in the solver table). */
typedef struct stsl__param_meta {
    stsl_param key;
    const char *name;                 /* the flag spelling without dashes: "inner-steps" */
    const char *aliases;              /* other spellings, space-separated ("" when none) */
    const char *help;                 /* one line, no default in it (the table has those) */
    const stsl__value_name *values;   /* symbolic values, or NULL for a number */
} stsl__param_meta;

/* The entry of `key` in a table of n entries, NULL when it has none. */
static inline const stsl__param_meta *stsl__param_meta_find(const stsl__param_meta *table, size_t n,
                                                            stsl_param key)
{
    for (size_t i = 0; i < n; i++)
        if (table[i].key == key) return &table[i];
    return NULL;
}

/* The metadata of an operator key (1..99), NULL for any other key. */
const stsl__param_meta *stsl__op_param_meta(stsl_param key);

/* ---- argument checks (return from the calling function) ---- */

#define STSL_CHECK_ARG(cond, errbuf, ...)                                   \
    do {                                                                    \
        if (!(cond)) return stsl__fail((errbuf), STSL_ERR_INVALID_ARG, __VA_ARGS__); \
    } while (0)

/* NaN/Inf scan; returns index of first non-finite value or (size_t)-1. */
size_t stsl__find_nonfinite(const float *x, size_t n);
/* sum_k a[k] b[k] in double, in a fixed order (src/core/vec.c): the same bits on every machine. */
double stsl__dot(const float *a, const float *b, size_t n);

#endif /* STSL_INTERNAL_H */
