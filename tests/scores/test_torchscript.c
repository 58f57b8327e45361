/* TorchScript score and autoencoder handles (src/scores/torchscript.c,
 * src/autoencoders/torchscript.c, shim/): forward and VJP against values computed in Python
 * (tests/scores/make_fixtures.py) and against finite differences; v/x0 -> eps conversion; every
 * error case; STSL_ERR_UNSUPPORTED when built without libtorch.
 *
 * The models run on STSL_TEST_DEVICE / STSL_TEST_HALF (tests/common/testutil.h; CPU by default):
 * scripts/check-cuda.sh runs this suite on CUDA in float32 and in float16, with the tolerances of
 * tu_tol() below (listed in docs/cuda.md). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/testutil.h"
#include "autoencoders/autoencoder_internal.h"
#include "scores/score_internal.h"
#include "models/model.h"

/* tu_path returns one static buffer: copy into rotating buffers so that several paths can be
 * arguments of one call. */
static const char *fx(const char *name)
{
    static char bufs[8][1024];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s", tu_path(name));
    return b;
}
#define FX(name) fx("scores/fixtures/" name)

static stsl_context *new_ctx(void)
{
    stsl_context *ctx = tu_context();
    CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
    return ctx;
}

#ifdef STSL_WITH_TORCH

/* ---- expected values: lines "name count v0 v1 ..." ---- */

static float *expect(const char *file, const char *name, size_t *count)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        fprintf(stderr, "\n  cannot open %s\n", file);
        return NULL;
    }
    char key[64];
    float *out = NULL;
    for (;;) {
        int c = fgetc(f);
        if (c == EOF) break;
        if (c == '#') {
            while ((c = fgetc(f)) != EOF && c != '\n') {}
            continue;
        }
        if (c == '\n') continue;
        ungetc(c, f);
        size_t n = 0;
        if (fscanf(f, "%63s %zu", key, &n) != 2) break;
        int want = strcmp(key, name) == 0;
        float *v = want ? malloc(n * sizeof *v + 1) : NULL;
        for (size_t i = 0; i < n; i++) {
            float x;
            if (fscanf(f, "%f", &x) != 1) break;
            if (want) v[i] = x;
        }
        if (want) {
            out = v;
            if (count) *count = n;
            break;
        }
    }
    fclose(f);
    if (!out) fprintf(stderr, "\n  no array '%s' in %s\n", name, file);
    return out;
}

static stsl_score *load_score(stsl_context *ctx, const char *path)
{
    stsl_score *s = NULL;
    stsl_status st = stsl_score_load(ctx, path, &s);
    if (st != STSL_OK) fprintf(stderr, "\n  load %s: %s\n", path, stsl_context_last_error(ctx));
    CU_ASSERT_EQUAL(st, STSL_OK);
    return s;
}

/* " float16", " bfloat16", or "" in float32: for the measured-error lines */
static const char *precision_label(void)
{
    stsl_precision p = tu_precision();
    return p == STSL_PRECISION_BFLOAT16 ? " bfloat16" : p == STSL_PRECISION_FLOAT16 ? " float16" : "";
}

/* eps and its VJP for a fixture against the Python values */
static void check_against_python(const char *model, const char *expect_file, const char *pred)
{
    stsl_context *ctx = new_ctx();
    stsl_score *s = load_score(ctx, model);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_STRING_EQUAL(stsl_score_meta(s, "prediction"), pred);
    size_t n = 0, nt = 0;
    float *x = expect(expect_file, "x", &n), *t = expect(expect_file, "t", &nt);
    float *v = expect(expect_file, "v", NULL), *eps_ref = expect(expect_file, "eps", NULL);
    float *vjp_ref = expect(expect_file, "eps_vjp", NULL);
    CU_ASSERT_FATAL(x && t && v && eps_ref && vjp_ref);
    CU_ASSERT_EQUAL(nt, 2);
    CU_ASSERT_EQUAL(n, 2 * 2 * 8 * 8);
    float *eps = calloc(n, sizeof *eps), *eps2 = calloc(n, sizeof *eps2);
    float *vjp = calloc(n, sizeof *vjp);
    TU_ASSERT_OK(stsl_score_eps(s, x, t, eps, 2));
    double e1 = tu_rel_err(eps, eps_ref, n);
    TU_ASSERT_OK(stsl_score_eps_vjp(s, x, t, v, eps2, vjp, 2));
    double e2 = tu_rel_err(eps2, eps_ref, n), e3 = tu_rel_err(vjp, vjp_ref, n);
    const double tol = tu_tol(1e-5, 2e-3, 2e-2);
    if (e1 > tol || e2 > tol || e3 > tol || tu_on_cuda())
        fprintf(stderr, "\n  %s on %s%s: eps %.3g, eps (vjp call) %.3g, vjp %.3g (tolerance %g)\n",
                model, tu_device(), precision_label(), e1, e2, e3, tol);
    CU_ASSERT(e1 < tol);
    CU_ASSERT(e2 < tol);
    CU_ASSERT(e3 < tol);
    /* eps may be NULL in the VJP call */
    memset(vjp, 0, n * sizeof *vjp);
    TU_ASSERT_OK(stsl_score_eps_vjp(s, x, t, v, NULL, vjp, 2));
    CU_ASSERT(tu_rel_err(vjp, vjp_ref, n) < tol);
    /* a kept evaluation (one pass: eps now, the VJP later) gives exactly the one-call VJP;
     * the pass is spent by its VJP */
    char err[STSL_ERRMSG_SIZE] = "";
    stsl__score_pass *pass = NULL;
    float *eps3 = calloc(n, sizeof *eps3), *vjp3 = calloc(n, sizeof *vjp3);
    CU_ASSERT(stsl__score_can_keep(s));
    TU_ASSERT_OK(stsl__score_eps_keep(s, x, t, eps3, 2, &pass, err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(pass);
    TU_ASSERT_OK(stsl_score_eps_vjp(s, x, t, v, eps2, vjp, 2));   /* the handle stays usable */
    TU_ASSERT_OK(stsl__score_pass_vjp(pass, v, vjp3, err));
    if (tu_on_cuda()) {   /* CUDA kernels need not be deterministic from call to call */
        CU_ASSERT(tu_rel_err(eps3, eps2, n) < tol);
        CU_ASSERT(tu_rel_err(vjp3, vjp, n) < tol);
    } else {
        CU_ASSERT(memcmp(eps3, eps2, n * sizeof *eps3) == 0);
        CU_ASSERT(memcmp(vjp3, vjp, n * sizeof *vjp3) == 0);
    }
    CU_ASSERT(tu_rel_err(vjp3, vjp_ref, n) < tol);
    TU_ASSERT_STATUS(stsl__score_pass_vjp(pass, v, vjp3, err), STSL_ERR_INVALID_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "already"));
    stsl__score_pass_free(pass);
    /* a pass freed unspent releases its graph (no leak under valgrind/ASan) */
    TU_ASSERT_OK(stsl__score_eps_keep(s, x, t, eps3, 2, &pass, err));
    stsl__score_pass_free(pass);
    free(eps3), free(vjp3);
    /* a batch gives what its samples give one by one */
    size_t d = n / 2;
    TU_ASSERT_OK(stsl_score_eps(s, x + d, t + 1, eps2, 1));
    CU_ASSERT(tu_rel_err(eps2, eps + d, d) < tol);
    free(x), free(t), free(v), free(eps_ref), free(vjp_ref), free(eps), free(eps2), free(vjp);
    stsl_score_destroy(s);
    stsl_context_destroy(ctx);
}

static void test_eps_python(void)
{
    check_against_python(FX("unet_eps.pt"), FX("unet_eps.expect.txt"), "eps");
}
static void test_v_python(void)
{
    check_against_python(FX("unet_v.pt"), FX("unet_v.expect.txt"), "v");
}
static void test_x0_python(void)
{
    check_against_python(FX("unet_x0.pt"), FX("unet_x0.expect.txt"), "x0");
}

/* <vjp(x, v), d> against (<eps(x + h d), v> - <eps(x - h d), v>) / 2h, in float64 sums.
 * Not in reduced precision, on any device: a step of h = 1e-2 is below the resolution of the
 * products autocast runs in it (float16 10-bit mantissa, bfloat16 7-bit: measured failing on the
 * CPU's bfloat16 autoencoder). */
static void check_fd(const char *model)
{
    if (tu_half()) {
        fprintf(stderr, " [reduced precision: finite differences skipped]");
        return;
    }
    stsl_context *ctx = new_ctx();
    stsl_score *s = load_score(ctx, model);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    stsl_shape sh;
    TU_ASSERT_OK(stsl_score_shape(s, &sh));
    const int batch = 2;
    size_t d = (size_t)sh.channels * sh.height * sh.width, n = d * batch;
    float *x = malloc(n * 4), *v = malloc(n * 4), *dir = malloc(n * 4), *vjp = malloc(n * 4);
    float *xp = malloc(n * 4), *ep = malloc(n * 4), *em = malloc(n * 4);
    float t[2] = {37.0f, 810.25f};
    tu_fill_normal(x, n, 1);
    tu_fill_normal(v, n, 2);
    tu_fill_normal(dir, n, 3);
    TU_ASSERT_OK(stsl_score_eps_vjp(s, x, t, v, NULL, vjp, batch));
    const double h = 1e-2;
    for (int b = 0; b < batch; b++) {
        for (size_t i = 0; i < n; i++) xp[i] = (float)(x[i] + h * dir[i]);
        TU_ASSERT_OK(stsl_score_eps(s, xp, t, ep, batch));
        for (size_t i = 0; i < n; i++) xp[i] = (float)(x[i] - h * dir[i]);
        TU_ASSERT_OK(stsl_score_eps(s, xp, t, em, batch));
        double fd = 0, an = 0, scale = 0;
        for (size_t i = (size_t)b * d; i < (size_t)(b + 1) * d; i++) {
            fd += (double)(ep[i] - em[i]) * v[i] / (2 * h);
            an += (double)vjp[i] * dir[i];
            scale += fabs((double)vjp[i] * dir[i]);
        }
        double err = fabs(fd - an) / (1e-3 + scale);
        const double tol = tu_tol(2e-3, 5e-2, 5e-2);
        if (err > tol || tu_on_cuda())
            fprintf(stderr, "\n  %s sample %d: fd %.6g vjp %.6g (rel %.3g, tolerance %g)\n", model, b,
                    fd, an, err, tol);
        CU_ASSERT(err < tol);
    }
    free(x), free(v), free(dir), free(vjp), free(xp), free(ep), free(em);
    stsl_score_destroy(s);
    stsl_context_destroy(ctx);
}

static void test_fd(void)
{
    check_fd(FX("unet_eps.pt"));
    check_fd(FX("unet_v.pt"));   /* checks the chain rule of the v -> eps conversion */
    check_fd(FX("unet_x0.pt"));
}

static void test_handle_properties(void)
{
    stsl_context *ctx = new_ctx();
    stsl_score *s = load_score(ctx, FX("unet_eps.pt"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    stsl_shape sh;
    TU_ASSERT_OK(stsl_score_shape(s, &sh));
    CU_ASSERT(sh.channels == 2 && sh.height == 8 && sh.width == 8);
    CU_ASSERT_EQUAL(stsl_score_is_latent(s), 0);
    const stsl_schedule *sc = stsl_score_schedule(s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sc);
    CU_ASSERT_EQUAL(stsl_schedule_timesteps(sc), 1000);
    /* linear 1e-4..0.02: abar_0 = 1 - 1e-4 */
    CU_ASSERT_DOUBLE_EQUAL(stsl_schedule_alpha_bar(sc, 0), 1 - 1e-4, 1e-12);
    CU_ASSERT_STRING_EQUAL(stsl_score_meta(s, "name"), "fixture-unet_eps");
    CU_ASSERT_STRING_EQUAL(stsl_score_meta(s, "schedule"), "linear");
    CU_ASSERT_PTR_NULL(stsl_score_meta(s, "no_such_key"));
    /* Tweedie through the common layer */
    size_t n = 2 * 2 * 8 * 8;
    float *x = malloc(n * 4), *sc_out = malloc(n * 4), *x0 = malloc(n * 4);
    tu_fill_normal(x, n, 9);
    int ti[2] = {0, 999};
    TU_ASSERT_OK(stsl_score_tweedie(s, x, ti, sc_out, x0, 2));
    /* timesteps out of range are refused before the model runs */
    float tbad[2] = {0, 1000};
    TU_ASSERT_STATUS(stsl_score_eps(s, x, tbad, sc_out, 2), STSL_ERR_INVALID_ARG);
    /* NaN input: the model's output is NaN -> STSL_ERR_NUMERIC */
    x[3] = NAN;
    float tt[2] = {5, 5};
    TU_ASSERT_STATUS(stsl_score_eps(s, x, tt, sc_out, 2), STSL_ERR_NUMERIC);
    free(x), free(sc_out), free(x0);
    stsl_score_destroy(s);

    /* the latent fixture */
    s = load_score(ctx, FX("unet_latent.pt"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(stsl_score_is_latent(s), 1);
    CU_ASSERT_STRING_EQUAL(stsl_score_meta(s, "pairs_with"), "ae.pt");
    stsl_score_destroy(s);
    stsl_context_destroy(ctx);
}

static char logbuf[4096];
static void capture(void *user, stsl_log_level level, const char *msg)
{
    (void)user;
    (void)level;
    snprintf(logbuf, sizeof logbuf, "%s", msg);
}

static void test_threads_half_device(void)
{
    size_t n = 2 * 2 * 8 * 8;
    float *x = malloc(n * 4), *e1 = malloc(n * 4), *e2 = malloc(n * 4);
    float t[2] = {100, 200};
    tu_fill_normal(x, n, 5);

    /* a fresh context runs on the CPU, whatever STSL_TEST_DEVICE says */
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
    TU_ASSERT_OK(stsl_context_set_log(ctx, capture, NULL, STSL_LOG_INFO));
    stsl_score *s = load_score(ctx, FX("unet_eps.pt"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(logbuf, "device cpu"));
    TU_ASSERT_OK(stsl_score_eps(s, x, t, e1, 2));
    TU_ASSERT_OK(stsl_context_set_threads(ctx, 2));   /* applies to calls made afterwards */
    TU_ASSERT_OK(stsl_score_eps(s, x, t, e2, 2));
    CU_ASSERT(tu_rel_err(e2, e1, n) < 1e-6);
    stsl_score_destroy(s);

    /* "auto" without CUDA, and the half flag: float16 on a CPU whose libtorch has it (>= 2),
     * else float32 (auto asks for the best the machine has; "cpu" would refuse it) */
    TU_ASSERT_OK(stsl_context_set_device(ctx, "auto"));
    TU_ASSERT_OK(stsl_context_set_half(ctx, 1));
    s = load_score(ctx, FX("unet_eps.pt"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    if (!stsl_cuda_available()) {
        CU_ASSERT_PTR_NOT_NULL(strstr(logbuf, "device cpu"));
        TU_ASSERT_OK(stsl_score_eps(s, x, t, e2, 2));
        if (strstr(logbuf, "(float16)")) {
            CU_ASSERT(tu_rel_err(e2, e1, n) < 2e-2);
        } else {
            CU_ASSERT_PTR_NOT_NULL(strstr(logbuf, "(float32)"));
            CU_ASSERT(tu_rel_err(e2, e1, n) < 1e-6);
        }
    } else {
        /* "auto" picks CUDA, half runs the model in float16; both agree with the CPU */
        CU_ASSERT_PTR_NOT_NULL(strstr(logbuf, "device cuda"));
        CU_ASSERT_PTR_NOT_NULL(strstr(logbuf, "float16"));
        TU_ASSERT_OK(stsl_score_eps(s, x, t, e2, 2));
        double eh = tu_rel_err(e2, e1, n);
        stsl_score_destroy(s);
        TU_ASSERT_OK(stsl_context_set_half(ctx, 0));
        TU_ASSERT_OK(stsl_context_set_device(ctx, "cuda"));
        s = load_score(ctx, FX("unet_eps.pt"));
        CU_ASSERT_PTR_NOT_NULL_FATAL(s);
        CU_ASSERT_PTR_NULL(strstr(logbuf, "float16"));
        TU_ASSERT_OK(stsl_score_eps(s, x, t, e2, 2));
        double ef = tu_rel_err(e2, e1, n);
        fprintf(stderr, "\n  CUDA vs CPU eps: float32 %.3g (tolerance 2e-3), float16 %.3g (2e-2)\n", ef, eh);
        CU_ASSERT(ef < 2e-3);
        CU_ASSERT(eh < 2e-2);
    }
    stsl_score_destroy(s);
    stsl_context_destroy(ctx);
    free(x), free(e1), free(e2);
}

typedef struct worker {
    stsl_score *s;
    const float *x;
    float *out;
    int ok;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    float t[2] = {300, 301};
    w->ok = 1;
    for (int i = 0; i < 10; i++)
        if (stsl_score_eps(w->s, w->x, t, w->out, 2) != STSL_OK) w->ok = 0;
    return NULL;
}

static void test_shared_handle(void)
{
    stsl_context *ctx = new_ctx();
    stsl_score *s = load_score(ctx, FX("unet_eps.pt"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    size_t n = 2 * 2 * 8 * 8;
    float *x = malloc(n * 4), *ref = malloc(n * 4), *o1 = malloc(n * 4), *o2 = malloc(n * 4);
    tu_fill_normal(x, n, 11);
    float t[2] = {300, 301};
    TU_ASSERT_OK(stsl_score_eps(s, x, t, ref, 2));
    worker w1 = {s, x, o1, 0}, w2 = {s, x, o2, 0};
    pthread_t a, b;
    pthread_create(&a, NULL, work, &w1);
    pthread_create(&b, NULL, work, &w2);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    CU_ASSERT(w1.ok && w2.ok);
    CU_ASSERT(tu_rel_err(o1, ref, n) < tu_tol(1e-6, 1e-5, 1e-3));
    CU_ASSERT(tu_rel_err(o2, ref, n) < tu_tol(1e-6, 1e-5, 1e-3));
    free(x), free(ref), free(o1), free(o2);
    stsl_score_destroy(s);
    stsl_context_destroy(ctx);
}

/* ---- autoencoders ---- */

static void check_ae(stsl_autoencoder *ae)
{
    const char *ef = FX("ae.expect.txt");
    size_t nx = 0, nz = 0;
    float *x = expect(ef, "x", &nx), *z = expect(ef, "z", &nz), *u = expect(ef, "u", NULL);
    float *enc_ref = expect(ef, "enc", NULL), *dec_ref = expect(ef, "dec", NULL);
    float *vjp_ref = expect(ef, "dec_vjp", NULL);
    CU_ASSERT_FATAL(x && z && u && enc_ref && dec_ref && vjp_ref);
    stsl_shape img, lat;
    TU_ASSERT_OK(stsl_autoencoder_image_shape(ae, &img));
    TU_ASSERT_OK(stsl_autoencoder_latent_shape(ae, &lat));
    CU_ASSERT(img.channels == 1 && img.height == 8 && img.width == 8);
    CU_ASSERT(lat.channels == 2 && lat.height == 4 && lat.width == 4);
    CU_ASSERT_EQUAL(nx, 2 * 64);
    CU_ASSERT_EQUAL(nz, 2 * 32);
    float *zo = calloc(nz, 4), *xo = calloc(nx, 4), *xo2 = calloc(nx, 4), *g = calloc(nz, 4);
    const double tol = tu_tol(1e-5, 2e-3, 2e-2);
    TU_ASSERT_OK(stsl_autoencoder_encode(ae, x, zo, 2));
    CU_ASSERT(tu_rel_err(zo, enc_ref, nz) < tol);
    TU_ASSERT_OK(stsl_autoencoder_decode(ae, z, xo, 2));
    CU_ASSERT(tu_rel_err(xo, dec_ref, nx) < tol);
    TU_ASSERT_OK(stsl_autoencoder_decode_vjp(ae, z, u, xo2, g, 2));
    CU_ASSERT(tu_rel_err(xo2, dec_ref, nx) < tol);
    CU_ASSERT(tu_rel_err(g, vjp_ref, nz) < tol);
    if (tu_on_cuda())
        fprintf(stderr, "\n  autoencoder on %s%s: enc %.3g dec %.3g dec_vjp %.3g (tolerance %g)\n",
                tu_device(), precision_label(), tu_rel_err(zo, enc_ref, nz),
                tu_rel_err(xo, dec_ref, nx), tu_rel_err(g, vjp_ref, nz), tol);
    TU_ASSERT_OK(stsl_autoencoder_decode_vjp(ae, z, u, NULL, g, 2));
    CU_ASSERT(tu_rel_err(g, vjp_ref, nz) < tol);
    /* a kept decoder evaluation gives the one-call decode and VJP (exactly, on CPU) */
    {
        char err[STSL_ERRMSG_SIZE] = "";
        stsl__ae_pass *pass = NULL;
        float *xk = calloc(nx, 4), *gk = calloc(nz, 4);
        CU_ASSERT(stsl__ae_can_keep(ae));
        TU_ASSERT_OK(stsl__ae_decode_keep(ae, z, xk, 2, &pass, err));
        TU_ASSERT_OK(stsl__ae_pass_vjp(pass, u, gk, err));
        stsl__ae_pass_free(pass);
        if (tu_on_cuda()) {
            CU_ASSERT(tu_rel_err(xk, xo2, nx) < tol);
            CU_ASSERT(tu_rel_err(gk, g, nz) < tol);
        } else {
            CU_ASSERT(memcmp(xk, xo2, nx * 4) == 0);
            CU_ASSERT(memcmp(gk, g, nz * 4) == 0);
        }
        free(xk), free(gk);
    }
    if (tu_half()) {   /* finite differences: see check_fd */
        free(x), free(z), free(u), free(enc_ref), free(dec_ref), free(vjp_ref);
        free(zo), free(xo), free(xo2), free(g);
        return;
    }

    /* finite differences of D along a direction */
    float *dir = malloc(nz * 4), *zp = malloc(nz * 4), *dp = malloc(nx * 4), *dm = malloc(nx * 4);
    tu_fill_normal(dir, nz, 21);
    const double h = 1e-2;
    for (size_t i = 0; i < nz; i++) zp[i] = (float)(z[i] + h * dir[i]);
    TU_ASSERT_OK(stsl_autoencoder_decode(ae, zp, dp, 2));
    for (size_t i = 0; i < nz; i++) zp[i] = (float)(z[i] - h * dir[i]);
    TU_ASSERT_OK(stsl_autoencoder_decode(ae, zp, dm, 2));
    double fd = 0, an = 0, sc = 0;
    for (size_t i = 0; i < nx; i++) fd += (double)(dp[i] - dm[i]) * u[i] / (2 * h);
    for (size_t i = 0; i < nz; i++) {
        an += (double)g[i] * dir[i];
        sc += fabs((double)g[i] * dir[i]);
    }
    CU_ASSERT(fabs(fd - an) / (1e-3 + sc) < tu_tol(2e-3, 5e-2, 5e-2));
    free(x), free(z), free(u), free(enc_ref), free(dec_ref), free(vjp_ref);
    free(zo), free(xo), free(xo2), free(g), free(dir), free(zp), free(dp), free(dm);
}

static void test_autoencoder(void)
{
    stsl_context *ctx = new_ctx();
    stsl_autoencoder *ae = NULL;
    stsl_status st = stsl_autoencoder_load(ctx, FX("ae.pt"), NULL, &ae);
    if (st) fprintf(stderr, "\n  %s\n", stsl_context_last_error(ctx));
    TU_ASSERT_OK(st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ae);
    check_ae(ae);
    stsl_autoencoder_destroy(ae);
    ae = NULL;
    st = stsl_autoencoder_load(ctx, FX("ae_encoder.pt"), FX("ae_decoder.pt"), &ae);
    if (st) fprintf(stderr, "\n  %s\n", stsl_context_last_error(ctx));
    TU_ASSERT_OK(st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ae);
    check_ae(ae);
    stsl_autoencoder_destroy(ae);
    stsl_context_destroy(ctx);
}

/* ---- errors ---- */

static void expect_score_error(stsl_context *ctx, const char *path, stsl_status want,
                               const char *needle)
{
    stsl_score *s = (stsl_score *)1;
    stsl_status st = stsl_score_load(ctx, path, &s);
    const char *msg = stsl_context_last_error(ctx);
    if (st != want || !strstr(msg, needle))
        fprintf(stderr, "\n  %s: status %d, message '%s'; expected %d and '%s'\n", path, (int)st,
                msg, (int)want, needle);
    CU_ASSERT_EQUAL(st, want);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, needle));
    CU_ASSERT_PTR_NULL(strchr(msg, '\n'));   /* one line, no C++ backtrace */
    CU_ASSERT(strlen(msg) > 10);
    stsl_score_destroy(s);
}

static void test_errors(void)
{
    stsl_context *ctx = new_ctx();
    expect_score_error(ctx, FX("does_not_exist.pt"), STSL_ERR_IO, "does_not_exist.pt");
    expect_score_error(ctx, FX("garbage.pt"), STSL_ERR_FORMAT, "not a TorchScript file");
    expect_score_error(ctx, FX("state_dict.pt"), STSL_ERR_FORMAT, "not a loadable TorchScript");
    expect_score_error(ctx, FX("no_meta.pt"), STSL_ERR_MODEL, "no stsl_meta.txt");
    expect_score_error(ctx, FX("bad_meta.pt"), STSL_ERR_MODEL, "prediction = 'noise'");
    expect_score_error(ctx, FX("wrong_signature.pt"), STSL_ERR_MODEL, "forward(x: Tensor, t: Tensor)");
    expect_score_error(ctx, FX("wrong_channels.pt"), STSL_ERR_SHAPE, "does not run on sample_shape 3,8,8");
    expect_score_error(ctx, FX("wrong_channels.pt"), STSL_ERR_SHAPE, "channels");
    expect_score_error(ctx, FX("wrong_output.pt"), STSL_ERR_SHAPE, "returned shape [1, 1, 8, 8]");
    expect_score_error(ctx, FX("ae.pt"), STSL_ERR_MODEL, "role 'autoencoder', expected unet");
    if (!stsl_cuda_available()) {
        TU_ASSERT_OK(stsl_context_set_device(ctx, "cuda"));
        expect_score_error(ctx, FX("unet_eps.pt"), STSL_ERR_BACKEND, "CUDA is not available");
        TU_ASSERT_OK(stsl_context_set_device(ctx, "cuda:1"));
        expect_score_error(ctx, FX("unet_eps.pt"), STSL_ERR_BACKEND, "\"cuda:1\"");
        stsl_autoencoder *ae = NULL;
        TU_ASSERT_STATUS(stsl_autoencoder_load(ctx, FX("ae.pt"), NULL, &ae), STSL_ERR_BACKEND);
        CU_ASSERT_PTR_NULL(ae);
        TU_ASSERT_OK(stsl_context_set_device(ctx, "cpu"));
    }
    stsl_score *s = NULL;
    /* failures at call time: a model that is not differentiable in x, one that rejects a batch */
    size_t n = 2 * 2 * 8 * 8;
    float *x = calloc(n, 4), *o = calloc(n, 4), *g = calloc(n, 4);
    float t[2] = {1, 2};
    s = load_score(ctx, FX("not_differentiable.pt"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    TU_ASSERT_OK(stsl_score_eps(s, x, t, o, 2));
    TU_ASSERT_STATUS(stsl_score_eps_vjp(s, x, t, o, NULL, g, 2), STSL_ERR_MODEL);
    CU_ASSERT_PTR_NOT_NULL(strstr(stsl_score_last_error(s), "not differentiable"));
    stsl_score_destroy(s);
    s = load_score(ctx, FX("batch_one.pt"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    TU_ASSERT_OK(stsl_score_eps(s, x, t, o, 1));
    TU_ASSERT_STATUS(stsl_score_eps(s, x, t, o, 2), STSL_ERR_MODEL);
    const char *msg = stsl_score_last_error(s);
    /* the TorchScript traceback is dropped: one line naming the error */
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "this model only takes a batch of 1"));
    CU_ASSERT_PTR_NULL(strchr(msg, '\n'));
    CU_ASSERT_PTR_NULL(strstr(msg, "Traceback"));
    TU_ASSERT_STATUS(stsl_score_eps_vjp(s, x, t, o, NULL, g, 2), STSL_ERR_MODEL);
    CU_ASSERT_PTR_NOT_NULL(strstr(stsl_score_last_error(s), "only takes a batch of 1"));
    TU_ASSERT_OK(stsl_score_eps(s, x, t, o, 1));   /* the handle stays usable */
    stsl_score_destroy(s);
    s = NULL;
    free(x), free(o), free(g);

    TU_ASSERT_STATUS(stsl_score_load(ctx, NULL, &s), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_score_load(ctx, FX("unet_eps.pt"), NULL), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_score_load(NULL, FX("unet_eps.pt"), &s), STSL_ERR_INVALID_ARG);

    /* autoencoders */
    stsl_autoencoder *ae = (stsl_autoencoder *)1;
    TU_ASSERT_STATUS(stsl_autoencoder_load(ctx, FX("unet_eps.pt"), NULL, &ae), STSL_ERR_MODEL);
    CU_ASSERT_PTR_NULL(ae);
    CU_ASSERT_PTR_NOT_NULL(strstr(stsl_context_last_error(ctx), "expected autoencoder"));
    TU_ASSERT_STATUS(stsl_autoencoder_load(ctx, FX("ae_decoder.pt"), FX("ae_encoder.pt"), &ae),
                     STSL_ERR_MODEL);
    CU_ASSERT_PTR_NOT_NULL(strstr(stsl_context_last_error(ctx), "expected encoder"));
    TU_ASSERT_STATUS(stsl_autoencoder_load(ctx, FX("ae_encoder.pt"), FX("nope.pt"), &ae),
                     STSL_ERR_IO);
    TU_ASSERT_STATUS(stsl_autoencoder_load(ctx, FX("garbage.pt"), NULL, &ae), STSL_ERR_FORMAT);
    TU_ASSERT_STATUS(stsl_autoencoder_load(ctx, NULL, NULL, &ae), STSL_ERR_INVALID_ARG);
    stsl_context_destroy(ctx);
}

/* Issue 15: modules are frozen at load (weights as graph constants, a cheaper forward + VJP) unless
 * a method steers autograd: freezing drops aten::detach, so not_differentiable.pt, frozen, would
 * silently get a gradient through its detach (test_errors checks that it still fails clearly). */
static void test_frozen(void)
{
    static const struct {
        const char *file;
        int frozen;
    } cases[] = {{"scores/fixtures/unet_eps.pt", 1},
                 {"scores/fixtures/ae.pt", 1},
                 {"scores/fixtures/not_differentiable.pt", 0}};
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));   /* the CPU: the library's default */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        stsl__model *m = NULL;
        TU_ASSERT_OK(stsl__model_open(ctx, fx(cases[i].file), 0, &m));
        if (!m) {
            fprintf(stderr, "\n  %s: %s\n", cases[i].file, stsl_context_last_error(ctx));
            continue;
        }
        if (stsl__model_is_frozen(m) != cases[i].frozen)
            fprintf(stderr, "\n  %s: frozen %d, expected %d\n", cases[i].file, stsl__model_is_frozen(m),
                    cases[i].frozen);
        CU_ASSERT_EQUAL(stsl__model_is_frozen(m), cases[i].frozen);
        stsl__model_free(m);
    }
    stsl_context_destroy(ctx);
}

static void test_build_flags(void)
{
    CU_ASSERT_EQUAL(stsl_has_torch(), 1);
    int c = stsl_cuda_available();
    CU_ASSERT(c == 0 || c == 1);
}

#else /* built without libtorch */

static void test_unsupported(void)
{
    stsl_context *ctx = new_ctx();
    stsl_score *s = (stsl_score *)1;
    TU_ASSERT_STATUS(stsl_score_load(ctx, FX("unet_eps.pt"), &s), STSL_ERR_UNSUPPORTED);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(stsl_context_last_error(ctx), "without TorchScript"));
    stsl_autoencoder *ae = (stsl_autoencoder *)1;
    TU_ASSERT_STATUS(stsl_autoencoder_load(ctx, FX("ae.pt"), NULL, &ae), STSL_ERR_UNSUPPORTED);
    CU_ASSERT_PTR_NULL(ae);
    CU_ASSERT_PTR_NOT_NULL(strstr(stsl_context_last_error(ctx), "without TorchScript"));
    CU_ASSERT_EQUAL(stsl_has_torch(), 0);
    CU_ASSERT_EQUAL(stsl_cuda_available(), 0);
    stsl_context_destroy(ctx);
}

#endif

int main(void)
{
    static const stsl_test tests[] = {
#ifdef STSL_WITH_TORCH
        {"eps model: eps and VJP match Python", test_eps_python},
        {"v model: converted eps and VJP match Python", test_v_python},
        {"x0 model (traced): converted eps and VJP match Python", test_x0_python},
        {"VJP matches finite differences (eps, v, x0)", test_fd},
        {"shape, schedule, latent flag, metadata, Tweedie, NaN", test_handle_properties},
        {"threads, auto device, half on CPU (float16 or float32)", test_threads_half_device},
        {"handle shared by two threads", test_shared_handle},
        {"autoencoder: one file and an encoder/decoder pair", test_autoencoder},
        {"error cases give clear one-line messages", test_errors},
        {"modules frozen at load unless a method steers autograd", test_frozen},
        {"build flags", test_build_flags},
#else
        {"built without torch: STSL_ERR_UNSUPPORTED", test_unsupported},
#endif
        {NULL, NULL},
    };
    return stsl_test_main("torchscript", tests);
}
