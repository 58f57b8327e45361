/*
 * test_hostile_models.c -- model files that lie or misbehave (issue 17), made by
 * tests/scores/make_hostile_fixtures.py: truncated and corrupted archives, metadata records that
 * lie about role, schedule and shape, NaN outputs and NaN gradients (some timesteps only), wrong
 * output shapes at some batch sizes only, and a model that is slow per call.  Each must give a
 * clear status with a one-line message (or, for the slow one, be cancellable within one call),
 * never a crash or an abort inside libtorch; the handles stay usable after a call-time failure.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/testutil.h"

static const char *fx(const char *name)
{
    static char bufs[8][1024];
    static int next;
    char *b = bufs[next++ % 8];
    char rel[256];
    snprintf(rel, sizeof rel, "scores/fixtures/%s", name);
    snprintf(b, sizeof bufs[0], "%s", tu_path(rel));
    return b;
}

static int have_fixtures(void)
{
    if (!stsl_has_torch()) {
        static int said;
        if (!said++) fprintf(stderr, "\n  skipped: built without the TorchScript backend\n");
        return 0;
    }
    if (access(fx("hostile_nan.pt"), R_OK) != 0) {
        static int said;
        if (!said++)
            fprintf(stderr, "\n  skipped: hostile fixtures missing (make torchscript-fixtures)\n");
        return 0;
    }
    return 1;
}

static void one_line(const char *what, const char *msg)
{
    if (strchr(msg, '\n') || strlen(msg) < 10)
        fprintf(stderr, "\n  %s: message '%s' is not one useful line\n", what, msg);
    CU_ASSERT_PTR_NULL(strchr(msg, '\n'));
    CU_ASSERT(strlen(msg) >= 10);
    CU_ASSERT_PTR_NULL(strstr(msg, "Traceback"));
}

/* Load must fail with one of two statuses and a message containing `needle`. */
static void expect_load_error(const char *file, stsl_status want, stsl_status also, const char *needle)
{
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    stsl_score *s = (stsl_score *)1;
    stsl_status st = stsl_score_load(ctx, fx(file), &s);
    const char *msg = stsl_context_last_error(ctx);
    if ((st != want && st != also) || !strstr(msg, needle))
        fprintf(stderr, "\n  %s: status %d (%s), message '%s'; expected %d and '%s'\n", file,
                (int)st, stsl_strerror(st), msg, (int)want, needle);
    CU_ASSERT(st == want || st == also);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, needle));
    one_line(file, msg);
    stsl_score_destroy(s == (stsl_score *)1 ? NULL : s);
    stsl_context_destroy(ctx);
}

static void test_broken_archives(void)
{
    if (!have_fixtures()) return;
    const char *files[] = {"hostile_trunc_10.pt", "hostile_trunc_50.pt", "hostile_trunc_90.pt",
                           "hostile_trunc_99.pt", "hostile_flipped.pt"};
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++)
        expect_load_error(files[k], STSL_ERR_FORMAT, STSL_ERR_MODEL, "hostile_");
    /* the autoencoder loader too */
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        stsl_autoencoder *ae = NULL;
        stsl_status st = stsl_autoencoder_load(ctx, fx(files[k]), NULL, &ae);
        CU_ASSERT(st == STSL_ERR_FORMAT || st == STSL_ERR_MODEL);
        CU_ASSERT_PTR_NULL(ae);
        one_line(files[k], stsl_context_last_error(ctx));
        stsl_autoencoder_destroy(ae);
    }
    stsl_context_destroy(ctx);
}

/* Many more cuts and corruptions of a good file, made here: every load either fails with a
 * one-line message or gives a handle whose calls return a status (weights may be garbage). */
static void test_mutated_archives(void)
{
    if (!have_fixtures()) return;
    FILE *f = fopen(fx("unet_eps.pt"), "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    static unsigned char good[1 << 20], buf[1 << 20];
    size_t n = fread(good, 1, sizeof good, f);
    fclose(f);
    char path[1200];
    snprintf(path, sizeof path, "%s/mutant.pt", tu_tmpdir());
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    enum { CUTS = 48, FLIPS = 48, D = 2 * 8 * 8 };
    float x[D], o[D], t[1] = {300};
    tu_fill_normal(x, D, 9);
    int refused = 0, loaded = 0;
    uint64_t state = 17;
    for (int k = 0; k < CUTS + FLIPS; k++) {
        size_t len = n;
        memcpy(buf, good, n);
        if (k < CUTS) {
            len = n * (size_t)(k + 1) / (CUTS + 1);
        } else {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(state >> 33) % (n - 16);
            for (int b = 0; b < 16; b++) buf[at + b] ^= (unsigned char)(0xA5 + 31 * b);
        }
        f = fopen(path, "wb");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        fwrite(buf, 1, len, f);
        fclose(f);
        stsl_score *s = NULL;
        stsl_status st = stsl_score_load(ctx, path, &s);
        if (st != STSL_OK) {
            refused++;
            CU_ASSERT_PTR_NULL(s);
            one_line("mutant", stsl_context_last_error(ctx));
            continue;
        }
        loaded++;
        st = stsl_score_eps(s, x, t, o, 1);
        if (st != STSL_OK) one_line("mutant call", stsl_score_last_error(s));
        stsl_score_destroy(s);
    }
    fprintf(stderr, "\n  %d mutants: %d refused at load, %d loaded (bytes no record's CRC-32 covers: header padding, names)\n",
            CUTS + FLIPS, refused, loaded);
    CU_ASSERT(refused >= CUTS);   /* every cut file is refused */
    stsl_context_destroy(ctx);
}

/* The first record of `good` (n bytes) whose name contains `part`: the offset of its data (its
 * local header read as the zip format lays it out), 0 if none. */
static size_t record_data(const unsigned char *good, size_t n, const char *part)
{
    for (size_t at = 0; at + 30 < n; at++) {
        if (memcmp(good + at, "PK\x03\x04", 4) != 0) continue;
        const size_t name_len = good[at + 26] | (size_t)good[at + 27] << 8;
        const size_t extra_len = good[at + 28] | (size_t)good[at + 29] << 8;
        if (at + 30 + name_len > n) break;
        char name[512];
        snprintf(name, sizeof name, "%.*s", (int)(name_len < 511 ? name_len : 511), (const char *)good + at + 30);
        if (strstr(name, part)) return at + 30 + name_len + extra_len;
    }
    return 0;
}

/* One damaged byte in a weight (a stored record) or in the code (a deflated one): libtorch
 * does not check the archive's CRC-32s (the weight loaded and computed garbage); the library does,
 * and names the record. */
static void test_damaged_records(void)
{
    if (!have_fixtures()) return;
    FILE *f = fopen(fx("unet_eps.pt"), "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    static unsigned char good[1 << 20], buf[1 << 20];
    const size_t n = fread(good, 1, sizeof good, f);
    fclose(f);
    const struct {
        const char *part;
        size_t into;
    } cases[] = {{"/data/", 0}, {"/data/", 37}, {"/code/", 9}, {"constants.pkl", 0}};
    char path[1200];
    snprintf(path, sizeof path, "%s/damaged.pt", tu_tmpdir());
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const size_t at = record_data(good, n, cases[k].part);
        CU_ASSERT_FATAL(at > 0 && at + cases[k].into < n);
        memcpy(buf, good, n);
        buf[at + cases[k].into] ^= 0x10;
        f = fopen(path, "wb");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        CU_ASSERT_EQUAL(fwrite(buf, 1, n, f), n);
        fclose(f);
        stsl_score *s = NULL;
        const stsl_status st = stsl_score_load(ctx, path, &s);
        const char *msg = stsl_context_last_error(ctx);
        if (st != STSL_ERR_FORMAT || !strstr(msg, "CRC-32") || !strstr(msg, cases[k].part))
            fprintf(stderr, "\n  a damaged byte in '%s' (+%zu): status %d, '%s'\n", cases[k].part,
                    cases[k].into, (int)st, msg);
        CU_ASSERT_EQUAL(st, STSL_ERR_FORMAT);
        CU_ASSERT_PTR_NULL(s);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "CRC-32"));
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, cases[k].part));   /* the record is named */
        one_line("damaged record", msg);
        stsl_score_destroy(s);
        /* the autoencoder loader checks too */
        stsl_autoencoder *ae = NULL;
        CU_ASSERT_EQUAL(stsl_autoencoder_load(ctx, path, NULL, &ae), STSL_ERR_FORMAT);
        CU_ASSERT_PTR_NULL(ae);
        stsl_autoencoder_destroy(ae);
    }
    /* the good file still loads */
    stsl_score *s = NULL;
    TU_ASSERT_OK(stsl_score_load(ctx, fx("unet_eps.pt"), &s));
    stsl_score_destroy(s);
    stsl_context_destroy(ctx);
}

static void test_lying_records(void)
{
    if (!have_fixtures()) return;
    expect_load_error("hostile_ae_as_unet.pt", STSL_ERR_MODEL, STSL_ERR_MODEL, "forward");
    expect_load_error("hostile_beta.pt", STSL_ERR_MODEL, STSL_ERR_MODEL, "beta_end");
    expect_load_error("hostile_timesteps.pt", STSL_ERR_MODEL, STSL_ERR_MODEL, "timesteps");
    expect_load_error("hostile_shape_odd.pt", STSL_ERR_SHAPE, STSL_ERR_MODEL, "2,9,9");
    expect_load_error("hostile_shape_huge.pt", STSL_ERR_LIMIT, STSL_ERR_MODEL, "sample_shape");
    /* issue 30: a shape within the image limits whose probe could exhaust memory is refused
     * before the probe runs (it used to run: 3.3 GB for an identity model at 4,8192,8192) */
    expect_load_error("hostile_shape_big.pt", STSL_ERR_MODEL, STSL_ERR_MODEL, "probed at load");
    expect_load_error("hostile_channels.pt", STSL_ERR_SHAPE, STSL_ERR_MODEL, "sample_shape");
    /* a UNet whose record says autoencoder: refused by the score loader (role) and by the
     * autoencoder loader (no encode/decode) */
    expect_load_error("hostile_role_ae.pt", STSL_ERR_MODEL, STSL_ERR_MODEL, "autoencoder");
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    stsl_autoencoder *ae = NULL;
    stsl_status st = stsl_autoencoder_load(ctx, fx("hostile_role_ae.pt"), NULL, &ae);
    if (st == STSL_OK) fprintf(stderr, "\n  hostile_role_ae.pt loaded as an autoencoder\n");
    CU_ASSERT(st == STSL_ERR_MODEL || st == STSL_ERR_SHAPE);
    CU_ASSERT_PTR_NULL(ae);
    one_line("hostile_role_ae.pt as autoencoder", stsl_context_last_error(ctx));
    stsl_autoencoder_destroy(ae);
    stsl_context_destroy(ctx);
}

/* A loaded model that fails at call time: the error, one line, and the handle still usable. */
static stsl_score *load(stsl_context *ctx, const char *file)
{
    stsl_score *s = NULL;
    stsl_status st = stsl_score_load(ctx, fx(file), &s);
    if (st != STSL_OK) fprintf(stderr, "\n  %s: %s\n", file, stsl_context_last_error(ctx));
    TU_ASSERT_OK(st);
    return s;
}

static void test_nan_outputs(void)
{
    if (!have_fixtures()) return;
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    enum { N = 3, D = 2 * 8 * 8 };
    float *x = calloc(N * D, 4), *o = calloc(N * D, 4), *g = calloc(N * D, 4), *v = calloc(N * D, 4);
    tu_fill_normal(x, N * D, 1);
    tu_fill_normal(v, N * D, 2);
    float t_late[N] = {100, 50, 10}, t_early[N] = {900, 800, 700};

    /* NaN everywhere: refused at load (the probe call) or at the first call, never returned */
    stsl_score *s = NULL;
    stsl_status st = stsl_score_load(ctx, fx("hostile_nan.pt"), &s);
    if (st == STSL_OK) {
        TU_ASSERT_STATUS(stsl_score_eps(s, x, t_early, o, N), STSL_ERR_NUMERIC);
        one_line("hostile_nan.pt", stsl_score_last_error(s));
    } else {
        CU_ASSERT_EQUAL(st, STSL_ERR_NUMERIC);
        one_line("hostile_nan.pt", stsl_context_last_error(ctx));
    }
    stsl_score_destroy(s);

    /* NaN at late timesteps only: early calls work, late ones fail, the handle stays usable */
    s = load(ctx, "hostile_nan_late.pt");
    if (s) {
        TU_ASSERT_OK(stsl_score_eps(s, x, t_early, o, N));
        TU_ASSERT_STATUS(stsl_score_eps(s, x, t_late, o, N), STSL_ERR_NUMERIC);
        one_line("hostile_nan_late.pt", stsl_score_last_error(s));
        TU_ASSERT_STATUS(stsl_score_eps_vjp(s, x, t_late, v, o, g, N), STSL_ERR_NUMERIC);
        TU_ASSERT_OK(stsl_score_eps(s, x, t_early, o, N));
        /* a whole solver run: STSL_ERR_NUMERIC with the step where it happened */
        stsl_operator *op = NULL;
        TU_ASSERT_OK(stsl_operator_create_by_name(ctx, "denoise", (stsl_shape){2, 8, 8}, &op));
        stsl_solver *sv = NULL;
        TU_ASSERT_OK(stsl_solver_create_by_name(ctx, "dps", &sv));
        if (op && sv) {
            TU_ASSERT_OK(stsl_solver_set_int(sv, STSL_PARAM_STEPS, 20));
            float y[D], out[D];
            memcpy(y, x, sizeof y);
            TU_ASSERT_STATUS(stsl_solver_run(sv, s, op, NULL, y, out, 1), STSL_ERR_NUMERIC);
            one_line("dps on hostile_nan_late.pt", stsl_solver_last_error(sv));
            CU_ASSERT(stsl_solver_failed_step(sv) > 1);
        }
        stsl_solver_destroy(sv);
        stsl_operator_destroy(op);
    }
    stsl_score_destroy(s);

    /* finite values, NaN gradient: the VJP is refused */
    s = load(ctx, "hostile_inf_grad.pt");
    if (s) {
        for (int i = 0; i < N * D; i++) x[i] = (float)(i % 5) - 2.0f;   /* exact zeros inside */
        TU_ASSERT_OK(stsl_score_eps(s, x, t_early, o, N));
        TU_ASSERT_STATUS(stsl_score_eps_vjp(s, x, t_early, v, o, g, N), STSL_ERR_NUMERIC);
        one_line("hostile_inf_grad.pt", stsl_score_last_error(s));
    }
    stsl_score_destroy(s);
    free(x), free(o), free(g), free(v);
    stsl_context_destroy(ctx);
}

static void test_batch_dependent_shapes(void)
{
    if (!have_fixtures()) return;
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    enum { N = 4, D = 2 * 8 * 8 };
    float *x = calloc(N * D, 4), *o = calloc(N * D, 4), *g = calloc(N * D, 4), *v = calloc(N * D, 4);
    float t[N] = {500, 400, 300, 200};
    tu_fill_normal(x, N * D, 3);
    tu_fill_normal(v, N * D, 4);
    const struct {
        const char *file;
        int ok_batch, bad_batch;
    } cases[] = {{"hostile_batch3.pt", 2, 3}, {"hostile_batch_drop.pt", 1, 2}};
    for (size_t k = 0; k < 2; k++) {
        stsl_score *s = load(ctx, cases[k].file);
        if (!s) continue;
        TU_ASSERT_OK(stsl_score_eps(s, x, t, o, cases[k].ok_batch));
        TU_ASSERT_STATUS(stsl_score_eps(s, x, t, o, cases[k].bad_batch), STSL_ERR_MODEL);
        const char *msg = stsl_score_last_error(s);
        one_line(cases[k].file, msg);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "returned shape"));
        TU_ASSERT_STATUS(stsl_score_eps_vjp(s, x, t, v, o, g, N), STSL_ERR_MODEL);
        TU_ASSERT_OK(stsl_score_eps(s, x, t, o, cases[k].ok_batch));   /* still usable */
        /* a batched solver run reports it instead of reading a short tensor */
        stsl_operator *op = NULL;
        stsl_solver *sv = NULL;
        TU_ASSERT_OK(stsl_operator_create_by_name(ctx, "denoise", (stsl_shape){2, 8, 8}, &op));
        TU_ASSERT_OK(stsl_solver_create_by_name(ctx, "ddim", &sv));
        if (op && sv) {
            TU_ASSERT_OK(stsl_solver_set_int(sv, STSL_PARAM_STEPS, 3));
            stsl_status st = stsl_solver_run(sv, s, op, NULL, x, o, N);
            CU_ASSERT_EQUAL(st, STSL_ERR_MODEL);
            one_line("ddim batch run", stsl_solver_last_error(sv));
        }
        stsl_solver_destroy(sv);
        stsl_operator_destroy(op);
        stsl_score_destroy(s);
    }
    free(x), free(o), free(g), free(v);
    stsl_context_destroy(ctx);
}

/* ---- slow model: cancel from another thread ends the run within about one call ---- */

typedef struct run_arg {
    stsl_solver *sv;
    stsl_score *s;
    stsl_operator *op;
    const float *y;
    float *out;
    stsl_status st;
    double end;
} run_arg;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *run_thread(void *p)
{
    run_arg *a = p;
    a->st = stsl_solver_run(a->sv, a->s, a->op, NULL, a->y, a->out, 1);
    a->end = now();
    return NULL;
}

static void test_slow_model_cancel(void)
{
    if (!have_fixtures()) return;
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    stsl_score *s = load(ctx, "hostile_slow.pt");
    if (!s) {
        stsl_context_destroy(ctx);
        return;
    }
    enum { D = 2 * 8 * 8 };
    float x[D], o[D], t[1] = {500};
    tu_fill_normal(x, D, 5);
    double t0 = now();
    TU_ASSERT_OK(stsl_score_eps(s, x, t, o, 1));
    double call = now() - t0;   /* one network call */
    stsl_operator *op = NULL;
    stsl_solver *sv = NULL;
    TU_ASSERT_OK(stsl_operator_create_by_name(ctx, "denoise", (stsl_shape){2, 8, 8}, &op));
    TU_ASSERT_OK(stsl_solver_create_by_name(ctx, "ddim", &sv));
    if (op && sv) {
        TU_ASSERT_OK(stsl_solver_set_int(sv, STSL_PARAM_STEPS, 1000));   /* minutes if not cancelled */
        run_arg a = {sv, s, op, x, o, STSL_OK, 0};
        pthread_t th;
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, run_thread, &a), 0);
        usleep((useconds_t)(1e6 * 1.5 * call));
        double c0 = now();
        stsl_solver_cancel(sv);
        pthread_join(th, NULL);
        double waited = a.end - c0;
        if (a.st != STSL_CANCELLED || waited > 3.0 * call + 0.5)
            fprintf(stderr, "\n  slow model: status %d, returned %.2f s after cancel (one call %.2f s)\n",
                    (int)a.st, waited, call);
        CU_ASSERT_EQUAL(a.st, STSL_CANCELLED);
        CU_ASSERT(waited <= 3.0 * call + 0.5);
    }
    stsl_solver_destroy(sv);
    stsl_operator_destroy(op);
    stsl_score_destroy(s);
    stsl_context_destroy(ctx);
}

int main(void)
{
    static const stsl_test tests[] = {
        {"truncated and corrupted archives", test_broken_archives},
        {"records that lie about role, schedule, shape", test_lying_records},
        {"cut and corrupted copies of a good file", test_mutated_archives},
        {"a damaged weight or code record is refused by its CRC-32", test_damaged_records},
        {"NaN outputs and gradients, some timesteps only", test_nan_outputs},
        {"wrong output shape at some batch sizes only", test_batch_dependent_shapes},
        {"a slow model's run is cancellable within one call", test_slow_model_cancel},
        {NULL, NULL},
    };
    return stsl_test_main("scores/hostile_models", tests);
}
