/* Core services: version, status strings, context, counter-based RNG (with the Random123
 * known-answer test), schedules and sigma ladders, the parallel-for. */
#include "common/testutil.h"
#include "core/internal.h"
#include "models/device.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* version and status                                                                        */
/* ---------------------------------------------------------------------------------------- */

static void test_version(void)
{
    char expect[32];
    snprintf(expect, sizeof expect, "%d.%d.%d", STSL_VERSION_MAJOR, STSL_VERSION_MINOR,
             STSL_VERSION_PATCH);
    CU_ASSERT_PTR_NOT_NULL_FATAL(stsl_version());
    CU_ASSERT_STRING_EQUAL(stsl_version(), expect);
    CU_ASSERT_EQUAL(stsl_version_number(), (unsigned)STSL_VERSION_NUMBER);
    CU_ASSERT_EQUAL(STSL_VERSION_NUMBER,
                    STSL_VERSION_MAJOR * 10000 + STSL_VERSION_MINOR * 100 + STSL_VERSION_PATCH);
    CU_ASSERT(stsl_has_torch() == 0 || stsl_has_torch() == 1);
}

static void test_strerror(void)
{
    const char *seen[STSL_ERR_INTERNAL + 1];
    for (int s = STSL_OK; s <= STSL_ERR_INTERNAL; s++) {
        const char *m = stsl_strerror((stsl_status)s);
        CU_ASSERT_PTR_NOT_NULL_FATAL(m);
        CU_ASSERT(m[0] != '\0');
        CU_ASSERT(strcmp(m, "unknown status") != 0);
        for (int t = 0; t < s; t++) CU_ASSERT(strcmp(m, seen[t]) != 0);
        seen[s] = m;
    }
    CU_ASSERT_STRING_EQUAL(stsl_strerror((stsl_status)(STSL_ERR_INTERNAL + 1)), "unknown status");
    CU_ASSERT_STRING_EQUAL(stsl_strerror((stsl_status)-1), "unknown status");
    CU_ASSERT_STRING_EQUAL(stsl_strerror((stsl_status)1000), "unknown status");
    /* the same pointer twice: static storage */
    CU_ASSERT_PTR_EQUAL(stsl_strerror(STSL_ERR_IO), stsl_strerror(STSL_ERR_IO));
}

/* ---------------------------------------------------------------------------------------- */
/* context                                                                                   */
/* ---------------------------------------------------------------------------------------- */

static void test_context_basics(void)
{
    stsl_context *ctx = NULL;
    TU_ASSERT_STATUS(stsl_context_create(NULL), STSL_ERR_INVALID_ARG);
    TU_ASSERT_OK(stsl_context_create(&ctx));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
    CU_ASSERT_EQUAL(stsl_context_get_threads(ctx), 1);
    CU_ASSERT_STRING_EQUAL(stsl_context_last_error(ctx), "");
    stsl_context_destroy(ctx);
    stsl_context_destroy(NULL);
    CU_ASSERT_PTR_NOT_NULL(stsl_context_last_error(NULL));
    CU_ASSERT(stsl_cuda_available() == 0 || stsl_cuda_available() == 1);
}

static void test_context_threads(void)
{
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    int bad[] = {0, -1, 257, 1000, -2147483647 - 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TU_ASSERT_STATUS(stsl_context_set_threads(ctx, bad[i]), STSL_ERR_INVALID_ARG);
        CU_ASSERT(stsl_context_last_error(ctx)[0] != '\0');
        CU_ASSERT_EQUAL(stsl_context_get_threads(ctx), 1); /* unchanged */
    }
    int good[] = {1, 2, 7, 256};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        TU_ASSERT_OK(stsl_context_set_threads(ctx, good[i]));
        CU_ASSERT_EQUAL(stsl_context_get_threads(ctx), good[i]);
        CU_ASSERT_STRING_EQUAL(stsl_context_last_error(ctx), ""); /* cleared by success */
    }
    TU_ASSERT_STATUS(stsl_context_set_threads(NULL, 2), STSL_ERR_INVALID_ARG);
    stsl_context_destroy(ctx);
}

static void test_context_device(void)
{
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    /* the default a new context holds is the one include/stsl.h states */
    stsl__device def = {STSL__DEVICE_AUTO, 7};
    char err[STSL_ERRMSG_SIZE] = "";
    TU_ASSERT_OK(stsl__device_parse(STSL_DEFAULT_DEVICE, &def, err));
    CU_ASSERT_EQUAL(ctx->device.kind, def.kind);
    CU_ASSERT_EQUAL(ctx->device.index, def.index);
    CU_ASSERT_EQUAL(def.kind, STSL__DEVICE_CPU);
    /* every spelling the setter accepts, and what it reads */
    static const struct {
        const char *text;
        stsl__device_kind kind;
        int index;
    } good[] = {{"cpu", STSL__DEVICE_CPU, 0},      {"auto", STSL__DEVICE_AUTO, 0},
                {"cuda", STSL__DEVICE_CUDA, 0},    {"cuda:0", STSL__DEVICE_CUDA, 0},
                {"cuda:1", STSL__DEVICE_CUDA, 1},  {"cuda:15", STSL__DEVICE_CUDA, 15},
                {"cuda:99", STSL__DEVICE_CUDA, 99}, {"cuda:100", STSL__DEVICE_CUDA, 100},
                {"cuda:255", STSL__DEVICE_CUDA, 255}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        TU_ASSERT_OK(stsl_context_set_device(ctx, good[i].text));
        CU_ASSERT_STRING_EQUAL(stsl_context_last_error(ctx), "");
        CU_ASSERT_EQUAL(ctx->device.kind, good[i].kind);
        CU_ASSERT_EQUAL(ctx->device.index, good[i].index);
        char name[STSL__DEVICE_NAME_SIZE];
        const char *canon = good[i].kind == STSL__DEVICE_CUDA && !strchr(good[i].text, ':')
                                ? "cuda:0" : good[i].text;
        CU_ASSERT_STRING_EQUAL(stsl__device_name(ctx->device, name), canon);
    }
    /* refused: named, and the device stays what it was (cuda:255, the last accepted) */
    const char *bad[] = {"gpu", "cuda:x", "cuda:", "cuda:-1", "cuda:+1", "cuda:256", "cuda:1234",
                         "cuda:00", "cuda:01", "cuda: 1", "cuda:1 ", "", "CPU", "Auto", "CUDA",
                         "cpu ", " cuda", "\tcpu", "cuda:0:1", "cuda0", "cuda:0x1", "mps",
                         "cpu\n", "cu", "autox"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TU_ASSERT_STATUS(stsl_context_set_device(ctx, bad[i]), STSL_ERR_INVALID_ARG);
        const char *msg = stsl_context_last_error(ctx);
        if (!strstr(msg, "cpu, cuda, cuda:N (N = 0..255) or auto"))
            fprintf(stderr, "\n  '%s': message '%s'\n", bad[i], msg);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "cpu, cuda, cuda:N (N = 0..255) or auto"));
        CU_ASSERT_EQUAL(ctx->device.kind, STSL__DEVICE_CUDA);
        CU_ASSERT_EQUAL(ctx->device.index, 255);
    }
    /* an absurdly long string is refused, not overflowed */
    char longname[1000];
    memset(longname, 'c', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    TU_ASSERT_STATUS(stsl_context_set_device(ctx, longname), STSL_ERR_INVALID_ARG);
    memcpy(longname, "cuda:", 5);
    memset(longname + 5, '1', sizeof longname - 6);
    TU_ASSERT_STATUS(stsl_context_set_device(ctx, longname), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_context_set_device(ctx, NULL), STSL_ERR_INVALID_ARG);
    CU_ASSERT(stsl_context_last_error(ctx)[0] != '\0');
    TU_ASSERT_STATUS(stsl_context_set_device(NULL, "cpu"), STSL_ERR_INVALID_ARG);
    /* what a load makes of a choice: auto is GPU 0 with CUDA, else the CPU with float32 allowed */
    int auto_cpu = -1;
    const stsl__device cpu = {STSL__DEVICE_CPU, 0}, autod = {STSL__DEVICE_AUTO, 0},
                       gpu3 = {STSL__DEVICE_CUDA, 3};
    CU_ASSERT_EQUAL(stsl__device_resolve(cpu, &auto_cpu), -1);
    CU_ASSERT_EQUAL(auto_cpu, 0);
    CU_ASSERT_EQUAL(stsl__device_resolve(gpu3, &auto_cpu), 3);
    CU_ASSERT_EQUAL(auto_cpu, 0);
    CU_ASSERT_EQUAL(stsl__device_resolve(autod, &auto_cpu), stsl_cuda_available() ? 0 : -1);
    CU_ASSERT_EQUAL(auto_cpu, !stsl_cuda_available());
    /* half precision flag */
    TU_ASSERT_OK(stsl_context_set_half(ctx, 1));
    TU_ASSERT_OK(stsl_context_set_half(ctx, 0));
    TU_ASSERT_STATUS(stsl_context_set_half(ctx, 2), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_context_set_half(ctx, -1), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_context_set_half(NULL, 0), STSL_ERR_INVALID_ARG);
    /* precision: set_half is float16 / float32; out-of-range values are refused and leave it */
    CU_ASSERT_EQUAL(stsl_context_get_precision(ctx), STSL_PRECISION_FLOAT32);
    TU_ASSERT_OK(stsl_context_set_half(ctx, 1));
    CU_ASSERT_EQUAL(stsl_context_get_precision(ctx), STSL_PRECISION_FLOAT16);
    TU_ASSERT_OK(stsl_context_set_precision(ctx, STSL_PRECISION_BFLOAT16));
    CU_ASSERT_EQUAL(stsl_context_get_precision(ctx), STSL_PRECISION_BFLOAT16);
    TU_ASSERT_STATUS(stsl_context_set_precision(ctx, (stsl_precision)3), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_context_set_precision(ctx, (stsl_precision)-1), STSL_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(stsl_context_get_precision(ctx), STSL_PRECISION_BFLOAT16);
    TU_ASSERT_STATUS(stsl_context_set_precision(NULL, STSL_PRECISION_FLOAT32), STSL_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(stsl_context_get_precision(NULL), STSL_PRECISION_FLOAT32);
    TU_ASSERT_OK(stsl_context_set_half(ctx, 0));
    CU_ASSERT_EQUAL(stsl_context_get_precision(ctx), STSL_PRECISION_FLOAT32);
    stsl_context_destroy(ctx);
}

typedef struct log_rec {
    int count;
    int levels[16];
    char last[256];
} log_rec;

static void log_fn(void *user, stsl_log_level level, const char *msg)
{
    log_rec *r = user;
    if (r->count < 16) r->levels[r->count] = (int)level;
    r->count++;
    snprintf(r->last, sizeof r->last, "%s", msg);
}

static void test_context_log(void)
{
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    log_rec rec;
    memset(&rec, 0, sizeof rec);
    /* no sink: nothing happens */
    stsl__log(ctx, STSL_LOG_ERROR, "dropped %d", 1);
    TU_ASSERT_OK(stsl_context_set_log(ctx, log_fn, &rec, STSL_LOG_WARN));
    stsl__log(ctx, STSL_LOG_DEBUG, "debug %d", 1);
    stsl__log(ctx, STSL_LOG_INFO, "info %d", 2);
    stsl__log(ctx, STSL_LOG_WARN, "warn %d", 3);
    stsl__log(ctx, STSL_LOG_ERROR, "error %d", 4);
    CU_ASSERT_EQUAL(rec.count, 2);
    CU_ASSERT_EQUAL(rec.levels[0], STSL_LOG_WARN);
    CU_ASSERT_EQUAL(rec.levels[1], STSL_LOG_ERROR);
    CU_ASSERT_STRING_EQUAL(rec.last, "error 4");
    /* everything at DEBUG */
    memset(&rec, 0, sizeof rec);
    TU_ASSERT_OK(stsl_context_set_log(ctx, log_fn, &rec, STSL_LOG_DEBUG));
    for (int l = STSL_LOG_DEBUG; l <= STSL_LOG_ERROR; l++) stsl__log(ctx, (stsl_log_level)l, "m%d", l);
    CU_ASSERT_EQUAL(rec.count, 4);
    for (int l = 0; l < 4; l++) CU_ASSERT_EQUAL(rec.levels[l], l);
    /* NONE: silent */
    memset(&rec, 0, sizeof rec);
    TU_ASSERT_OK(stsl_context_set_log(ctx, log_fn, &rec, STSL_LOG_NONE));
    stsl__log(ctx, STSL_LOG_ERROR, "x");
    CU_ASSERT_EQUAL(rec.count, 0);
    /* removed */
    TU_ASSERT_OK(stsl_context_set_log(ctx, NULL, NULL, STSL_LOG_DEBUG));
    stsl__log(ctx, STSL_LOG_ERROR, "x");
    CU_ASSERT_EQUAL(rec.count, 0);
    /* a NULL context never logs nor crashes */
    stsl__log(NULL, STSL_LOG_ERROR, "x");
    /* bad levels */
    TU_ASSERT_STATUS(stsl_context_set_log(ctx, log_fn, &rec, (stsl_log_level)5), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_context_set_log(ctx, log_fn, &rec, (stsl_log_level)-1), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_context_set_log(NULL, log_fn, &rec, STSL_LOG_INFO), STSL_ERR_INVALID_ARG);
    stsl_context_destroy(ctx);
}

static void test_ctx_fail(void)
{
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    CU_ASSERT_EQUAL(stsl__ctx_fail(ctx, STSL_ERR_SHAPE, "bad %s %d", "shape", 3), STSL_ERR_SHAPE);
    CU_ASSERT_STRING_EQUAL(stsl_context_last_error(ctx), "bad shape 3");
    CU_ASSERT_EQUAL(stsl__ctx_fail(NULL, STSL_ERR_IO, "nothing"), STSL_ERR_IO);
    /* long messages are truncated, not overflowed */
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    stsl__ctx_fail(ctx, STSL_ERR_IO, "%s", big);
    CU_ASSERT_EQUAL(strlen(stsl_context_last_error(ctx)), STSL_ERRMSG_SIZE - 1);
    stsl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* random numbers                                                                            */
/* ---------------------------------------------------------------------------------------- */

static void test_philox_kat(void)
{
    /* Random123 kat_vectors: philox4x32 10 rounds.  Key words = seed (lo, hi); counter words
     * = counter (lo, hi), stream (lo, hi) -- see src/core/rng.c. */
    uint32_t out[4];
    stsl__philox4x32(0, 0, 0, out);
    CU_ASSERT_EQUAL(out[0], 0x6627e8d5u);
    CU_ASSERT_EQUAL(out[1], 0xe169c58du);
    CU_ASSERT_EQUAL(out[2], 0xbc57ac4cu);
    CU_ASSERT_EQUAL(out[3], 0x9b00dbd8u);
    stsl__philox4x32(UINT64_MAX, UINT64_MAX, UINT64_MAX, out);
    CU_ASSERT_EQUAL(out[0], 0x408f276du);
    CU_ASSERT_EQUAL(out[1], 0x41c83b0eu);
    CU_ASSERT_EQUAL(out[2], 0xa20bc7c6u);
    CU_ASSERT_EQUAL(out[3], 0x6d5451fdu);
    /* third Random123 vector (pi digits): ctr {243f6a88 85a308d3 13198a2e 03707344},
     * key {a4093822 299f31d0} -> {d16cfe09 94fdcceb 5001e420 24126ea1} */
    stsl__philox4x32(0x299f31d0a4093822ull, 0x0370734413198a2eull, 0x85a308d3243f6a88ull, out);
    CU_ASSERT_EQUAL(out[0], 0xd16cfe09u);
    CU_ASSERT_EQUAL(out[1], 0x94fdccebu);
    CU_ASSERT_EQUAL(out[2], 0x5001e420u);
    CU_ASSERT_EQUAL(out[3], 0x24126ea1u);
}

#define NBIG (1u << 20)

static void test_rng_threads_identical(void)
{
    float *a = malloc(NBIG * sizeof(float)), *b = malloc(NBIG * sizeof(float));
    CU_ASSERT_FATAL(a && b);
    stsl_context *c1 = NULL, *c2 = NULL;
    TU_ASSERT_OK(stsl_context_create(&c1));
    TU_ASSERT_OK(stsl_context_create(&c2));
    TU_ASSERT_OK(stsl_context_set_threads(c2, 2));
    for (int normal = 0; normal < 2; normal++) {
        stsl_status (*fn)(const stsl_context *, uint64_t, uint64_t, uint64_t, float *, size_t) =
            normal ? stsl_random_normal : stsl_random_uniform;
        TU_ASSERT_OK(fn(c1, 42, 7, 0, a, NBIG));
        TU_ASSERT_OK(fn(c2, 42, 7, 0, b, NBIG));
        CU_ASSERT_EQUAL(memcmp(a, b, NBIG * sizeof(float)), 0);
        /* an odd thread count, an odd length and an offset not on a block boundary */
        TU_ASSERT_OK(stsl_context_set_threads(c2, 7));
        TU_ASSERT_OK(fn(c2, 42, 7, 3, b, NBIG - 5));
        CU_ASSERT_EQUAL(memcmp(a + 3, b, (NBIG - 5) * sizeof(float)), 0);
        TU_ASSERT_OK(fn(NULL, 42, 7, 0, b, NBIG));
        CU_ASSERT_EQUAL(memcmp(a, b, NBIG * sizeof(float)), 0);
        TU_ASSERT_OK(stsl_context_set_threads(c2, 2));
    }
    stsl_context_destroy(c1);
    stsl_context_destroy(c2);
    free(a);
    free(b);
}

static void test_rng_offset_split(void)
{
    const size_t n = 20000;
    float *all = malloc(n * sizeof(float)), *part = malloc(n * sizeof(float));
    CU_ASSERT_FATAL(all && part);
    const size_t splits[] = {0, 1, 2, 3, 4, 5, 4095, 4096, 4097, 9999, 19999, 20000};
    for (int normal = 0; normal < 2; normal++) {
        stsl_status (*fn)(const stsl_context *, uint64_t, uint64_t, uint64_t, float *, size_t) =
            normal ? stsl_random_normal : stsl_random_uniform;
        TU_ASSERT_OK(fn(NULL, 5, 9, 100, all, n));
        for (size_t s = 0; s < sizeof splits / sizeof splits[0]; s++) {
            size_t k = splits[s];
            memset(part, 0, n * sizeof(float));
            TU_ASSERT_OK(fn(NULL, 5, 9, 100, part, k));
            TU_ASSERT_OK(fn(NULL, 5, 9, 100 + k, part + k, n - k));
            CU_ASSERT_EQUAL(memcmp(all, part, n * sizeof(float)), 0);
        }
        /* one value at a time agrees too */
        for (size_t i = 0; i < 64; i++) {
            float v;
            TU_ASSERT_OK(fn(NULL, 5, 9, 100 + i, &v, 1));
            CU_ASSERT_EQUAL(memcmp(&v, &all[i], sizeof v), 0);
        }
    }
    free(all);
    free(part);
}

static void test_rng_seeds_streams_differ(void)
{
    const size_t n = 1024;
    float a[1024], b[1024], c[1024];
    TU_ASSERT_OK(stsl_random_normal(NULL, 1, 0, 0, a, n));
    TU_ASSERT_OK(stsl_random_normal(NULL, 2, 0, 0, b, n));
    TU_ASSERT_OK(stsl_random_normal(NULL, 1, 1, 0, c, n));
    int same_ab = 0, same_ac = 0;
    for (size_t i = 0; i < n; i++) {
        same_ab += a[i] == b[i];
        same_ac += a[i] == c[i];
    }
    CU_ASSERT(same_ab < 4);
    CU_ASSERT(same_ac < 4);
    /* high words of seed and stream matter too */
    TU_ASSERT_OK(stsl_random_normal(NULL, 1ull | (1ull << 40), 0, 0, b, n));
    TU_ASSERT_OK(stsl_random_normal(NULL, 1, 1ull << 40, 0, c, n));
    CU_ASSERT(memcmp(a, b, sizeof a) != 0);
    CU_ASSERT(memcmp(a, c, sizeof a) != 0);
    /* stream derivation: distinct tags and indices give distinct streams, deterministically */
    CU_ASSERT_EQUAL(stsl__stream(STSL_TAG_MASK, 1, 2, 3), stsl__stream(STSL_TAG_MASK, 1, 2, 3));
    CU_ASSERT(stsl__stream(STSL_TAG_MASK, 1, 2, 3) != stsl__stream(STSL_TAG_KERNEL, 1, 2, 3));
    CU_ASSERT(stsl__stream(STSL_TAG_MASK, 1, 2, 3) != stsl__stream(STSL_TAG_MASK, 2, 1, 3));
    CU_ASSERT(stsl__stream(STSL_TAG_MASK, 0, 0, 0) != stsl__stream(STSL_TAG_MASK, 0, 0, 1));
}

/* The float Box-Muller of src/core/rng.c against the same transform in double with libm, on
 * Philox words and on the words at the edges of both ranges; the stream is that transform of
 * the blocks' words in lane order; and a known answer fixes the bits. */
static void test_rng_normal_transform(void)
{
    double worst = 0;
    for (uint64_t b = 0; b < (1u << 18); b++) {
        uint32_t w[4];
        stsl__philox4x32(7, 9, b, w);
        for (int p = 0; p < 2; p++) {
            float z[2];
            double r[2];
            stsl__normal_pair(w[2 * p], w[2 * p + 1], z);
            stsl__normal_pair_reference(w[2 * p], w[2 * p + 1], r);
            for (int q = 0; q < 2; q++) worst = fmax(worst, fabs(z[q] - r[q]) / (1 + fabs(r[q])));
        }
    }
    CU_ASSERT(worst < 5e-7);
    /* u = 2^-32 (the largest radius, 6.66) and u = 1 (radius 0), the bits where the logarithm's
     * exponent turns and where the angle's quadrant does */
    const uint32_t edges[] = {0,          1,          2,          255,        256,        0xffff,
                              0xffffff,   0x1000000,  0x1fffffff, 0x20000000, 0x3fffffff, 0x40000000,
                              0x7fffffff, 0x80000000, 0xb504f333, 0xb504f334, 0xbfffffff, 0xe0000000,
                              0xfffffeff, 0xffffff00, 0xfffffffe, 0xffffffff};
    const size_t ne = sizeof edges / sizeof edges[0];
    int bad = 0;
    for (size_t i = 0; i < ne; i++)
        for (size_t j = 0; j < ne; j++) {
            float z[2];
            double r[2];
            stsl__normal_pair(edges[i], edges[j], z);
            stsl__normal_pair_reference(edges[i], edges[j], r);
            for (int q = 0; q < 2; q++)
                bad += !isfinite(z[q]) || fabs(z[q] - r[q]) > 5e-7 * (1 + fabs(r[q]));
        }
    CU_ASSERT_EQUAL(bad, 0);
    /* u near 1: the radius sqrt(-2 ln u) is small and keeps its relative accuracy */
    double near1 = 0;
    for (uint32_t d = 0; d < 65536; d++) {
        float z[2];
        double r[2];
        stsl__normal_pair(0xffffffffu - d, 0x12345678u, z);
        stsl__normal_pair_reference(0xffffffffu - d, 0x12345678u, r);
        near1 = fmax(near1, fabs(z[0] - r[0]) / (1e-30 + fabs(r[0])));
    }
    CU_ASSERT(near1 < 5e-7);
    /* block b's words 0, 1 give draws 4b, 4b + 1; words 2, 3 draws 4b + 2, 4b + 3 */
    float s[4 * 37];
    TU_ASSERT_OK(stsl_random_normal(NULL, 11, 13, 0, s, 4 * 37));
    int same = 1;
    for (uint64_t b = 0; b < 37; b++) {
        uint32_t w[4];
        float z[4];
        stsl__philox4x32(11, 13, b, w);
        stsl__normal_pair(w[0], w[1], z);
        stsl__normal_pair(w[2], w[3], z + 2);
        same &= memcmp(z, s + 4 * b, sizeof z) == 0;
    }
    CU_ASSERT(same);
    /* known answer: draws 0..7 of (seed 1, stream 2), as bits */
    const uint32_t kat[8] = {0xbedb93e6u, 0xbe103a07u, 0x3fcfd47eu, 0x3ed12a89u,
                             0x3f00621bu, 0xbf245b01u, 0x3fc3ce29u, 0x3f0c98bfu};
    float k8[8];
    uint32_t kb[8];
    TU_ASSERT_OK(stsl_random_normal(NULL, 1, 2, 0, k8, 8));
    memcpy(kb, k8, sizeof kb);
    CU_ASSERT_EQUAL(memcmp(kb, kat, sizeof kat), 0);
}

static void test_rng_moments(void)
{
    float *x = malloc(NBIG * sizeof(float));
    CU_ASSERT_FATAL(x != NULL);
    TU_ASSERT_OK(stsl_random_normal(NULL, 2024, 3, 0, x, NBIG));
    double m = 0, v = 0, m4 = 0;
    int finite = 1;
    for (size_t i = 0; i < NBIG; i++) {
        finite &= isfinite(x[i]) != 0;
        m += x[i];
    }
    m /= NBIG;
    for (size_t i = 0; i < NBIG; i++) {
        double d = x[i] - m;
        v += d * d;
        m4 += d * d * d * d;
    }
    v /= NBIG;
    m4 /= NBIG;
    CU_ASSERT(finite);
    CU_ASSERT(fabs(m) < 5e-3);
    CU_ASSERT(fabs(v - 1.0) < 1e-2);
    CU_ASSERT(fabs(m4 / (v * v) - 3.0) < 0.05); /* Gaussian kurtosis */

    TU_ASSERT_OK(stsl_random_uniform(NULL, 2024, 3, 0, x, NBIG));
    double um = 0, uv = 0;
    float lo = 1, hi = 0;
    int in_range = 1;
    for (size_t i = 0; i < NBIG; i++) {
        in_range &= x[i] >= 0.0f && x[i] < 1.0f;
        um += x[i];
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    CU_ASSERT(in_range);
    um /= NBIG;
    for (size_t i = 0; i < NBIG; i++) uv += (x[i] - um) * (x[i] - um);
    uv /= NBIG;
    CU_ASSERT(fabs(um - 0.5) < 2e-3);
    CU_ASSERT(fabs(uv - 1.0 / 12) < 2e-3);
    CU_ASSERT(lo < 1e-4);
    CU_ASSERT(hi > 1 - 1e-4);
    for (uint64_t i = 0; i < 1000; i++) {
        double d = stsl__rng_uniform_double(1, 2, i);
        CU_ASSERT(d >= 0.0 && d < 1.0);
    }
    free(x);
}

static void test_rng_args(void)
{
    float v[8];
    TU_ASSERT_STATUS(stsl_random_normal(NULL, 1, 1, 0, NULL, 8), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_random_uniform(NULL, 1, 1, 0, NULL, 8), STSL_ERR_INVALID_ARG);
    TU_ASSERT_OK(stsl_random_normal(NULL, 1, 1, 0, v, 0));
    TU_ASSERT_OK(stsl_random_normal(NULL, 1, 1, 0, NULL, 0));
    /* draw indices must not wrap around 2^64 */
    TU_ASSERT_STATUS(stsl_random_normal(NULL, 1, 1, UINT64_MAX - 3, v, 8), STSL_ERR_INVALID_ARG);
    TU_ASSERT_OK(stsl_random_normal(NULL, 1, 1, UINT64_MAX - 8, v, 8));
    for (int i = 0; i < 8; i++) CU_ASSERT(isfinite(v[i]));
}

/* ---------------------------------------------------------------------------------------- */
/* schedules                                                                                 */
/* ---------------------------------------------------------------------------------------- */

static void test_schedule_linear(void)
{
    stsl_schedule *s = NULL;
    TU_ASSERT_OK(stsl_schedule_create(NULL, STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 1000, &s));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(stsl_schedule_timesteps(s), 1000);
    double abar = 1.0, maxrel = 0;
    for (int t = 0; t < 1000; t++) {
        double beta = 1e-4 + (0.02 - 1e-4) * t / 999.0;
        abar *= 1.0 - beta;
        double got = stsl_schedule_alpha_bar(s, t);
        double rel = fabs(got - abar) / abar;
        if (rel > maxrel) maxrel = rel;
    }
    CU_ASSERT(maxrel < 1e-12);
    /* the DDPM numbers everybody quotes */
    CU_ASSERT_DOUBLE_EQUAL(stsl_schedule_alpha_bar(s, 0), 0.9999, 1e-12);
    CU_ASSERT(stsl_schedule_alpha_bar(s, 999) < 5e-5 && stsl_schedule_alpha_bar(s, 999) > 0);
    CU_ASSERT_EQUAL(stsl_schedule_alpha_bar(s, -1), 1.0);
    CU_ASSERT(isnan(stsl_schedule_alpha_bar(s, 1000)));
    CU_ASSERT(isnan(stsl_schedule_alpha_bar(s, -2)));
    CU_ASSERT(isnan(stsl_schedule_alpha_bar(s, -2147483647 - 1)));
    CU_ASSERT(isnan(stsl_schedule_alpha_bar(NULL, 0)));
    CU_ASSERT_EQUAL(stsl_schedule_timesteps(NULL), 0);
    /* interpolation between table entries */
    CU_ASSERT_EQUAL(stsl__alpha_bar_at(s, -1.0), 1.0);
    CU_ASSERT_DOUBLE_EQUAL(stsl__alpha_bar_at(s, 10.0), stsl_schedule_alpha_bar(s, 10), 1e-15);
    CU_ASSERT_DOUBLE_EQUAL(stsl__alpha_bar_at(s, 10.5),
                           0.5 * (stsl_schedule_alpha_bar(s, 10) + stsl_schedule_alpha_bar(s, 11)),
                           1e-15);
    CU_ASSERT_DOUBLE_EQUAL(stsl__alpha_bar_at(s, -0.5), 0.5 * (1.0 + stsl_schedule_alpha_bar(s, 0)),
                           1e-15);
    CU_ASSERT_DOUBLE_EQUAL(stsl__alpha_bar_at(s, 999.0), stsl_schedule_alpha_bar(s, 999), 1e-15);
    CU_ASSERT(isnan(stsl__alpha_bar_at(s, NAN)));
    stsl_schedule_destroy(s);
    stsl_schedule_destroy(NULL);
}

static void test_schedule_scaled_cosine(void)
{
    stsl_schedule *s = NULL;
    TU_ASSERT_OK(stsl_schedule_create(NULL, STSL_SCHEDULE_SCALED_LINEAR, 0.00085, 0.012, 1000, &s));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    double abar = 1.0, prev = 1.0;
    int mono = 1;
    for (int t = 0; t < 1000; t++) {
        double r = sqrt(0.00085) + (sqrt(0.012) - sqrt(0.00085)) * t / 999.0;
        abar *= 1.0 - r * r;
        double got = stsl_schedule_alpha_bar(s, t);
        CU_ASSERT_DOUBLE_EQUAL(got, abar, 1e-12);
        mono &= got < prev && got > 0;
        prev = got;
    }
    CU_ASSERT(mono);
    /* Stable Diffusion: abar_999 ~ 0.0047 */
    CU_ASSERT_DOUBLE_EQUAL(stsl_schedule_alpha_bar(s, 999), 0.0047, 3e-4);
    stsl_schedule_destroy(s);

    s = NULL;
    TU_ASSERT_OK(stsl_schedule_create(NULL, STSL_SCHEDULE_COSINE, 0.008, 0, 1000, &s));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    prev = 1.0;
    mono = 1;
    for (int t = 0; t < 1000; t++) {
        double got = stsl_schedule_alpha_bar(s, t);
        mono &= got <= prev && got >= 0 && got <= 1;
        prev = got;
    }
    CU_ASSERT(mono);
    CU_ASSERT(stsl_schedule_alpha_bar(s, 0) > 0.999);
    CU_ASSERT(stsl_schedule_alpha_bar(s, 999) < 1e-3);
    /* away from the clipped end the closed form holds: abar_t = f(t+1)/f(0) */
    const double half_pi = 1.5707963267948966;
    double f0 = cos(0.008 / 1.008 * half_pi);
    for (int t = 0; t < 900; t += 97) {
        double f = cos(((t + 1) / 1000.0 + 0.008) / 1.008 * half_pi);
        CU_ASSERT_DOUBLE_EQUAL(stsl_schedule_alpha_bar(s, t), (f * f) / (f0 * f0), 1e-9);
    }
    stsl_schedule_destroy(s);

    /* one timestep */
    s = NULL;
    TU_ASSERT_OK(stsl_schedule_create(NULL, STSL_SCHEDULE_LINEAR, 0.1, 0.2, 1, &s));
    CU_ASSERT_DOUBLE_EQUAL(stsl_schedule_alpha_bar(s, 0), 0.9, 1e-15);
    stsl_schedule_destroy(s);
}

static void test_schedule_invalid(void)
{
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    stsl_schedule *s = (stsl_schedule *)(uintptr_t)1;
    struct {
        int kind;
        double b0, b1;
        int T;
    } bad[] = {
        {STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 0},      {STSL_SCHEDULE_LINEAR, 1e-4, 0.02, -5},
        {STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 100001}, {STSL_SCHEDULE_LINEAR, 0, 0.02, 1000},
        {STSL_SCHEDULE_LINEAR, -1e-4, 0.02, 1000},  {STSL_SCHEDULE_LINEAR, 0.03, 0.02, 1000},
        {STSL_SCHEDULE_LINEAR, 1e-4, 1.0, 1000},    {STSL_SCHEDULE_LINEAR, NAN, 0.02, 1000},
        {STSL_SCHEDULE_SCALED_LINEAR, 1e-4, NAN, 10}, {STSL_SCHEDULE_COSINE, -0.1, 0, 1000},
        {STSL_SCHEDULE_COSINE, 1.0, 0, 1000},       {STSL_SCHEDULE_COSINE, NAN, 0, 1000},
        {7, 1e-4, 0.02, 1000},                      {-1, 1e-4, 0.02, 1000},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s = (stsl_schedule *)(uintptr_t)1;
        TU_ASSERT_STATUS(stsl_schedule_create(ctx, (stsl_schedule_kind)bad[i].kind, bad[i].b0,
                                              bad[i].b1, bad[i].T, &s),
                         STSL_ERR_INVALID_ARG);
        CU_ASSERT(s == NULL);
        CU_ASSERT(stsl_context_last_error(ctx)[0] != '\0');
    }
    TU_ASSERT_STATUS(stsl_schedule_create(ctx, STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 10, NULL),
                     STSL_ERR_INVALID_ARG);
    /* limits accepted */
    s = NULL;
    TU_ASSERT_OK(stsl_schedule_create(ctx, STSL_SCHEDULE_LINEAR, 1e-4, 1e-4, 100000, &s));
    CU_ASSERT_EQUAL(stsl_schedule_timesteps(s), 100000);
    stsl_schedule_destroy(s);
    stsl_context_destroy(ctx);
}

static void test_ddim_steps(void)
{
    stsl_schedule *s = NULL;
    TU_ASSERT_OK(stsl_schedule_create(NULL, STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 1000, &s));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int out[1000];
    TU_ASSERT_OK(stsl_schedule_ddim_steps(s, 10, out));
    for (int i = 0; i < 10; i++) CU_ASSERT_EQUAL(out[i], 100 * i);
    TU_ASSERT_OK(stsl_schedule_ddim_steps(s, 1000, out));
    for (int i = 0; i < 1000; i++) CU_ASSERT_EQUAL(out[i], i);
    TU_ASSERT_OK(stsl_schedule_ddim_steps(s, 1, out));
    CU_ASSERT_EQUAL(out[0], 0);
    const int ns[] = {3, 7, 50, 333, 999};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        int n = ns[k];
        TU_ASSERT_OK(stsl_schedule_ddim_steps(s, n, out));
        int ok = out[0] == 0;
        for (int i = 1; i < n; i++) ok &= out[i] > out[i - 1] && out[i] < 1000;
        /* evenly spaced: gaps differ by at most one */
        int gmin = 1000, gmax = 0;
        for (int i = 1; i < n; i++) {
            int g = out[i] - out[i - 1];
            if (g < gmin) gmin = g;
            if (g > gmax) gmax = g;
        }
        CU_ASSERT(ok);
        CU_ASSERT(n == 1 || gmax - gmin <= 1);
    }
    TU_ASSERT_STATUS(stsl_schedule_ddim_steps(s, 0, out), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_schedule_ddim_steps(s, -1, out), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_schedule_ddim_steps(s, 1001, out), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_schedule_ddim_steps(s, 10, NULL), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_schedule_ddim_steps(NULL, 10, out), STSL_ERR_INVALID_ARG);
    stsl_schedule_destroy(s);
}

static void test_sigmas(void)
{
    double sg[64];
    TU_ASSERT_OK(stsl_sigmas_edm(18, 0.002, 80.0, 7.0, sg));
    CU_ASSERT_EQUAL(sg[0], 80.0);
    CU_ASSERT_EQUAL(sg[17], 0.002);
    int dec = 1;
    for (int i = 1; i < 18; i++) dec &= sg[i] < sg[i - 1];
    CU_ASSERT(dec);
    double a = pow(80.0, 1 / 7.0), b = pow(0.002, 1 / 7.0);
    CU_ASSERT_DOUBLE_EQUAL(sg[5], pow(a + 5.0 / 17 * (b - a), 7.0), 1e-9);
    TU_ASSERT_OK(stsl_sigmas_edm(2, 0.5, 1.0, 1.0, sg));
    CU_ASSERT_EQUAL(sg[0], 1.0);
    CU_ASSERT_EQUAL(sg[1], 0.5);

    TU_ASSERT_OK(stsl_sigmas_ve(50, 0.01, 50.0, sg));
    CU_ASSERT_EQUAL(sg[0], 50.0);
    CU_ASSERT_EQUAL(sg[49], 0.01);
    dec = 1;
    double r0 = sg[1] / sg[0];
    for (int i = 1; i < 50; i++) {
        dec &= sg[i] < sg[i - 1];
        CU_ASSERT_DOUBLE_EQUAL(sg[i] / sg[i - 1], r0, 1e-9); /* geometric */
    }
    CU_ASSERT(dec);

    TU_ASSERT_STATUS(stsl_sigmas_edm(1, 0.002, 80, 7, sg), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_sigmas_edm(10, 0, 80, 7, sg), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_sigmas_edm(10, -1, 80, 7, sg), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_sigmas_edm(10, 80, 0.002, 7, sg), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_sigmas_edm(10, 1, 1, 7, sg), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_sigmas_edm(10, 0.002, 80, 0, sg), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_sigmas_edm(10, 0.002, INFINITY, 7, sg), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_sigmas_edm(10, NAN, 80, 7, sg), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_sigmas_edm(10, 0.002, 80, 7, NULL), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_sigmas_ve(1, 0.01, 50, sg), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_sigmas_ve(10, 0, 50, sg), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_sigmas_ve(10, 50, 0.01, sg), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_sigmas_ve(10, 0.01, INFINITY, sg), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_sigmas_ve(10, 0.01, 50, NULL), STSL_ERR_INVALID_ARG);
}

/* ---------------------------------------------------------------------------------------- */
/* parallel for                                                                              */
/* ---------------------------------------------------------------------------------------- */

typedef struct cover {
    atomic_int *hits;
    atomic_int calls;
    size_t n;
    atomic_int bad_range;
} cover;

static void cover_fn(void *arg, size_t begin, size_t end)
{
    cover *c = arg;
    atomic_fetch_add(&c->calls, 1);
    if (begin >= end || end > c->n) atomic_store(&c->bad_range, 1);
    for (size_t i = begin; i < end && i < c->n; i++) atomic_fetch_add(&c->hits[i], 1);
}

static void test_parallel_for(void)
{
    const int threads[] = {1, 2, 3, 4, 7, 16, 256};
    const size_t ns[] = {1, 2, 5, 255, 256, 257, 1000, 100003};
    const size_t chunks[] = {1, 7, 1000};
    atomic_int *hits = malloc(100003 * sizeof *hits);
    CU_ASSERT_FATAL(hits != NULL);
    for (size_t ti = 0; ti < sizeof threads / sizeof threads[0]; ti++)
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
            for (size_t ci = 0; ci < sizeof chunks / sizeof chunks[0]; ci++) {
                size_t n = ns[ni];
                for (size_t i = 0; i < n; i++) atomic_init(&hits[i], 0);
                cover c;
                c.hits = hits;
                c.n = n;
                atomic_init(&c.calls, 0);
                atomic_init(&c.bad_range, 0);
                TU_ASSERT_OK(stsl__parallel_for(threads[ti], n, chunks[ci], cover_fn, &c));
                int once = 1;
                for (size_t i = 0; i < n; i++) once &= atomic_load(&hits[i]) == 1;
                CU_ASSERT(once);
                CU_ASSERT_EQUAL(atomic_load(&c.bad_range), 0);
                int calls = atomic_load(&c.calls);
                CU_ASSERT(calls >= 1 && calls <= threads[ti]);
                /* no chunk smaller than min_chunk unless everything runs in one */
                CU_ASSERT(calls == 1 || n / (size_t)calls >= chunks[ci]);
            }
    /* n == 0: fn is not called */
    cover c;
    c.hits = hits;
    c.n = 0;
    atomic_init(&c.calls, 0);
    atomic_init(&c.bad_range, 0);
    TU_ASSERT_OK(stsl__parallel_for(4, 0, 1, cover_fn, &c));
    CU_ASSERT_EQUAL(atomic_load(&c.calls), 0);
    /* min_chunk 0 is treated as 1; threads <= 0 as 1 */
    c.n = 10;
    for (size_t i = 0; i < 10; i++) atomic_init(&hits[i], 0);
    TU_ASSERT_OK(stsl__parallel_for(0, 10, 0, cover_fn, &c));
    TU_ASSERT_OK(stsl__parallel_for(-3, 10, 1, cover_fn, &c));
    for (size_t i = 0; i < 10; i++) CU_ASSERT_EQUAL(atomic_load(&hits[i]), 2);
    free(hits);
}

int main(void)
{
    static const stsl_test tests[] = {
        {"version", test_version},
        {"strerror", test_strerror},
        {"context_basics", test_context_basics},
        {"context_threads", test_context_threads},
        {"context_device", test_context_device},
        {"context_log", test_context_log},
        {"ctx_fail", test_ctx_fail},
        {"philox_kat", test_philox_kat},
        {"rng_normal_transform", test_rng_normal_transform},
        {"rng_threads_identical", test_rng_threads_identical},
        {"rng_offset_split", test_rng_offset_split},
        {"rng_seeds_streams_differ", test_rng_seeds_streams_differ},
        {"rng_moments", test_rng_moments},
        {"rng_args", test_rng_args},
        {"schedule_linear", test_schedule_linear},
        {"schedule_scaled_cosine", test_schedule_scaled_cosine},
        {"schedule_invalid", test_schedule_invalid},
        {"ddim_steps", test_ddim_steps},
        {"sigmas", test_sigmas},
        {"parallel_for", test_parallel_for},
        {NULL, NULL},
    };
    return stsl_test_main("core", tests);
}
