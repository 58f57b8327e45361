/*
 * Exporter front-ends end to end, without the upstream code (issue 13): stand-in guided-diffusion
 * and diffusers modules (tests/exporters/standin_code) and their checkpoints are exported by
 * scripts/export_torchscript.py as a user would (tests/exporters/standins.py make), the files are
 * loaded here, a few solver steps run through a wrapper that logs every network call, and
 * standins.py verify replays the calls on the eager PyTorch modules: outputs must be identical.
 * Needs a python with torch: tu_python() ($STSL_PYTHON, which tests/run.sh sets with
 * scripts/torch_python.sh, else that finder run now); the test fails when there is none.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/testutil.h"

#ifdef STSL_WITH_TORCH

static char g_dir[1024];
static int g_made = -1;

static int run_standins(const char *what)
{
    char script[1100], cmd[8400];
    const char *py = tu_python();
    if (!py) {
        fprintf(stderr, "\n  no python that imports torch (STSL_PYTHON, scripts/torch_python.sh)\n");
        return -1;
    }
    snprintf(script, sizeof script, "%s", tu_path("exporters/standins.py"));
    snprintf(cmd, sizeof cmd, "'%s' '%s' %s '%s'", py, script, what, g_dir);
    fflush(stdout);
    return system(cmd);
}

static const char *file(const char *name)
{
    static char bufs[4][1200];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", g_dir, name);
    return b;
}

/* ---- a score that forwards to the loaded model and logs each call ---- */

typedef struct logger {
    stsl_score *inner;
    FILE *f;
    size_t d;
    int calls, failed;
} logger;

static void put(logger *L, const void *p, size_t n)
{
    if (fwrite(p, 1, n, L->f) != n) L->failed = 1;
}

static int log_eps(void *user, const float *x, const float *t, float *eps, int batch)
{
    logger *L = user;
    if (stsl_score_eps(L->inner, x, t, eps, batch) != STSL_OK) return 1;
    int32_t hdr[3] = {0, batch, (int32_t)L->d};
    put(L, hdr, sizeof hdr);
    put(L, x, sizeof(float) * L->d * batch);
    put(L, t, sizeof(float) * batch);
    put(L, eps, sizeof(float) * L->d * batch);
    L->calls++;
    return 0;
}

static int log_vjp(void *user, const float *x, const float *t, const float *v, float *eps,
                   float *vjp, int batch)
{
    logger *L = user;
    float *e = eps ? eps : malloc(sizeof(float) * L->d * batch);
    if (!e) return 1;
    int rc = stsl_score_eps_vjp(L->inner, x, t, v, e, vjp, batch) != STSL_OK;
    if (!rc) {
        int32_t hdr[3] = {1, batch, (int32_t)L->d};
        put(L, hdr, sizeof hdr);
        put(L, x, sizeof(float) * L->d * batch);
        put(L, t, sizeof(float) * batch);
        put(L, v, sizeof(float) * L->d * batch);
        put(L, e, sizeof(float) * L->d * batch);
        put(L, vjp, sizeof(float) * L->d * batch);
        L->calls++;
    }
    if (e != eps) free(e);
    return rc;
}

/* Load `unet` (and `vae`), run `solver` for `steps` steps on a blurred image once through the
 * logging wrapper (calls_<tag>.bin) and once directly: both results must agree. */
static void run_model(const char *tag, const char *unet, const char *vae, const char *solver,
                      int steps, int batch_limit, const char *meta_key, const char *meta_value)
{
    if (g_made != 0) {
        CU_FAIL("the stand-in exports were not made");
        return;
    }
    stsl_context *ctx = NULL;
    stsl_score *score = NULL, *logged = NULL;
    stsl_autoencoder *ae = NULL;
    stsl_operator *op = NULL;
    stsl_solver *s = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    stsl_context_set_threads(ctx, 1);
    TU_ASSERT_OK(stsl_score_load(ctx, file(unet), &score));
    if (!score) {
        fprintf(stderr, "\n  %s\n", stsl_context_last_error(ctx));
        stsl_context_destroy(ctx);
        return;
    }
    if (meta_key) {
        const char *v = stsl_score_meta(score, meta_key);
        CU_ASSERT_PTR_NOT_NULL(v);
        if (v) CU_ASSERT_STRING_EQUAL(v, meta_value);
    }
    if (vae) TU_ASSERT_OK(stsl_autoencoder_load(ctx, file(vae), NULL, &ae));
    stsl_shape zs, xs;
    TU_ASSERT_OK(stsl_score_shape(score, &zs));
    xs = zs;
    if (ae) TU_ASSERT_OK(stsl_autoencoder_image_shape(ae, &xs));
    size_t dx = (size_t)xs.channels * xs.height * xs.width;
    TU_ASSERT_OK(stsl_operator_create_by_name(ctx, "gaussian-blur", xs, &op));
    float *clean = malloc(dx * sizeof *clean), *y = malloc(dx * sizeof *y);
    float *r1 = malloc(dx * sizeof *r1), *r2 = malloc(dx * sizeof *r2);
    tu_fill_uniform(clean, dx, 11, -1.f, 1.f);
    TU_ASSERT_OK(stsl_operator_measure(op, clean, y, 1, 3));

    char path[1300];
    snprintf(path, sizeof path, "%s/calls_%s.bin", g_dir, tag);
    logger L = {score, fopen(path, "wb"), (size_t)zs.channels * zs.height * zs.width, 0, 0};
    CU_ASSERT_PTR_NOT_NULL_FATAL(L.f);
    fwrite("STSLCALL", 1, 8, L.f);
    stsl_score_vtable vt = {sizeof vt, log_eps, log_vjp, NULL};
    TU_ASSERT_OK(stsl_score_create_custom(ctx, zs, &vt, &L, stsl_score_schedule(score), &logged));
    for (int pass = 0; pass < 2; pass++) {
        TU_ASSERT_OK(stsl_solver_create_by_name(ctx, solver, &s));
        TU_ASSERT_OK(stsl_solver_set_int(s, STSL_PARAM_STEPS, steps));
        TU_ASSERT_OK(stsl_solver_set_int(s, STSL_PARAM_SEED, 5));
        if (batch_limit) TU_ASSERT_OK(stsl_solver_set_int(s, STSL_PARAM_BATCH_LIMIT, batch_limit));
        stsl_status st = stsl_solver_run(s, pass ? score : logged, op, ae, y, pass ? r2 : r1, 1);
        TU_ASSERT_OK(st);
        if (st != STSL_OK) fprintf(stderr, "\n  %s: %s\n", solver, stsl_solver_last_error(s));
        stsl_solver_destroy(s);
        s = NULL;
    }
    fclose(L.f);
    CU_ASSERT_FALSE(L.failed);
    CU_ASSERT(L.calls >= 2);
    /* Not bit for bit: the wrapper cannot keep a forward pass for its VJP, so the direct run's
     * kept (autograd) forward and the wrapper's inference forward may take different kernels,
     * which round differently on some CPUs (AMD EPYC, AVX-512: issue 30).  A faithful log agrees
     * to float rounding; a wrong call (another input, time or sample) is off by far more. */
    double logged_vs_direct = tu_max_abs_diff(r1, r2, dx);
    if (getenv("STSL_TEST_VERBOSE")) fprintf(stderr, " [%s: logged vs direct %.3g]", tag, logged_vs_direct);
    CU_ASSERT(logged_vs_direct < 1e-3);
    double m = 0;
    for (size_t i = 0; i < dx; i++) m += r1[i] == r1[i] ? 0 : 1;
    CU_ASSERT_EQUAL(m, 0.0);

    if (ae && !strcmp(tag, "sd_unet")) {
        /* the autoencoder's three calls, for the eager comparison: x, E(x), z, D(z), u, J^T u */
        stsl_shape ls;
        TU_ASSERT_OK(stsl_autoencoder_latent_shape(ae, &ls));
        size_t dz = (size_t)ls.channels * ls.height * ls.width;
        float *z = malloc(dz * sizeof *z), *zi = malloc(dz * sizeof *zi), *g = malloc(dz * sizeof *g);
        float *xd = malloc(dx * sizeof *xd), *u = malloc(dx * sizeof *u);
        tu_fill_normal(zi, dz, 21);
        tu_fill_normal(u, dx, 22);
        TU_ASSERT_OK(stsl_autoencoder_encode(ae, clean, z, 1));
        TU_ASSERT_OK(stsl_autoencoder_decode(ae, zi, xd, 1));
        TU_ASSERT_OK(stsl_autoencoder_decode_vjp(ae, zi, u, NULL, g, 1));
        FILE *f = fopen(file("ae_calls.bin"), "wb");
        CU_ASSERT_PTR_NOT_NULL(f);
        if (f) {
            fwrite(clean, sizeof(float), dx, f);
            fwrite(z, sizeof(float), dz, f);
            fwrite(zi, sizeof(float), dz, f);
            fwrite(xd, sizeof(float), dx, f);
            fwrite(u, sizeof(float), dx, f);
            fwrite(g, sizeof(float), dz, f);
            fclose(f);
        }
        free(z), free(zi), free(g), free(xd), free(u);
    }
    free(clean), free(y), free(r1), free(r2);
    stsl_score_destroy(logged);
    stsl_operator_destroy(op);
    stsl_autoencoder_destroy(ae);
    stsl_score_destroy(score);
    stsl_context_destroy(ctx);
}

static void test_make(void)
{
    snprintf(g_dir, sizeof g_dir, "%s/exporters", tu_tmpdir());
    g_made = run_standins("make");
    CU_ASSERT_EQUAL(g_made, 0);
}

/* learned sigma dropped, float16 checkpoint, DPS (VJPs) */
static void test_adm(void) { run_model("adm", "adm.pt", NULL, "dps", 3, 0, "learned_sigma", "dropped"); }
/* class-conditional (.safetensors), STSL's N+1 batched points in chunks of 2 */
static void test_adm_cond(void) { run_model("adm_cond", "adm_cond.pt", NULL, "stsl", 2, 2, "class_label", "3"); }
/* fixed embedding, eps, latent LDPS (decoder VJPs) */
static void test_sd(void) { run_model("sd_unet", "sd_unet.pt", "sd_vae.pt", "ldps", 2, 0, "space", "latent"); }
/* v-prediction with classifier-free guidance, latent STSL */
static void test_sdv(void) { run_model("sdv_unet", "sdv_unet.pt", "sd_vae.pt", "stsl", 2, 0, "prediction", "v"); }

/* Issue 27: a file whose graph fixes the device "cuda" (the ADM front-end's module traced raw,
 * its devices rewritten: standins.py write_pinned) runs on the CPU, because the loader moves
 * every fixed device to its input's; it computes what adm.pt computes. */
static void test_pinned_device(void)
{
    if (g_made != 0) {
        CU_FAIL("the stand-in exports were not made");
        return;
    }
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    stsl_score *pinned = NULL, *ref = NULL;
    stsl_status st = stsl_score_load(ctx, file("adm_pinned_cuda.pt"), &pinned);
    if (st != STSL_OK) fprintf(stderr, "\n  %s\n", stsl_context_last_error(ctx));
    TU_ASSERT_OK(st);
    TU_ASSERT_OK(stsl_score_load(ctx, file("adm.pt"), &ref));
    if (pinned && ref) {
        enum { B = 2, D = 3 * 16 * 16 };
        static float x[B * D], v[B * D], e1[B * D], e2[B * D], g1[B * D], g2[B * D];
        const float t[B] = {10.0f, 600.0f};
        tu_fill_normal(x, B * D, 51);
        tu_fill_normal(v, B * D, 52);
        TU_ASSERT_OK(stsl_score_eps_vjp(pinned, x, t, v, e1, g1, B));
        TU_ASSERT_OK(stsl_score_eps_vjp(ref, x, t, v, e2, g2, B));
        CU_ASSERT(tu_rel_err(e1, e2, B * D) < 1e-6);
        CU_ASSERT(tu_rel_err(g1, g2, B * D) < 1e-6);
    }
    stsl_score_destroy(pinned);
    stsl_score_destroy(ref);
    stsl_context_destroy(ctx);
}

/* Issue 27: every front-end's export in bfloat16 and float16 (autocast) against float32: eps and
 * VJP of the UNets, encode / decode / decoder VJP of the VAE, with the tolerances of stsl.h.
 * float16 on the CPU needs libtorch >= 2 (1.13 refuses it at load: STSL_ERR_BACKEND). */
static void reduced_precision(stsl_precision p, double tol)
{
    const char *pname = p == STSL_PRECISION_FLOAT16 ? "float16" : "bfloat16";
    static const char *const unets[] = {"adm.pt", "adm_cond.pt", "sd_unet.pt", "sdv_unet.pt"};
    stsl_context *c32 = NULL, *cp = NULL;
    TU_ASSERT_OK(stsl_context_create(&c32));
    TU_ASSERT_OK(stsl_context_create(&cp));
    TU_ASSERT_OK(stsl_context_set_precision(cp, p));
    for (size_t k = 0; k < sizeof unets / sizeof unets[0]; k++) {
        stsl_score *s32 = NULL, *sp = NULL;
        TU_ASSERT_OK(stsl_score_load(c32, file(unets[k]), &s32));
        stsl_status st = stsl_score_load(cp, file(unets[k]), &sp);
        if (st != STSL_OK) {   /* only float16 on a CPU without it */
            CU_ASSERT(p == STSL_PRECISION_FLOAT16 && st == STSL_ERR_BACKEND);
            fprintf(stderr, "\n  %s in %s: %s", unets[k], pname, stsl_context_last_error(cp));
            stsl_score_destroy(s32);
            continue;
        }
        stsl_shape sh;
        TU_ASSERT_OK(stsl_score_shape(s32, &sh));
        const size_t n = 2 * (size_t)sh.channels * sh.height * sh.width;
        float *x = malloc(n * sizeof(float)), *v = malloc(n * sizeof(float));
        float *e32 = malloc(n * sizeof(float)), *ep = malloc(n * sizeof(float));
        float *g32 = malloc(n * sizeof(float)), *gp = malloc(n * sizeof(float));
        const float t[2] = {50.0f, 800.0f};
        tu_fill_normal(x, n, 61);
        tu_fill_normal(v, n, 62);
        TU_ASSERT_OK(stsl_score_eps_vjp(s32, x, t, v, e32, g32, 2));
        TU_ASSERT_OK(stsl_score_eps_vjp(sp, x, t, v, ep, gp, 2));
        const double ee = tu_rel_err(ep, e32, n), eg = tu_rel_err(gp, g32, n);
        fprintf(stderr, "\n  %s %s vs float32: eps %.2e, vjp %.2e (tolerance %g)", unets[k], pname,
                ee, eg, tol);
        CU_ASSERT(ee < tol && eg < tol);
        CU_ASSERT(ee > 0);   /* the reduced precision was in effect */
        free(x), free(v), free(e32), free(ep), free(g32), free(gp);
        stsl_score_destroy(s32);
        stsl_score_destroy(sp);
    }
    stsl_autoencoder *a32 = NULL, *ap = NULL;
    TU_ASSERT_OK(stsl_autoencoder_load(c32, file("sd_vae.pt"), NULL, &a32));
    stsl_status st = stsl_autoencoder_load(cp, file("sd_vae.pt"), NULL, &ap);
    if (st == STSL_OK && a32) {
        enum { NX = 2 * 3 * 16 * 16, NZ = 2 * 4 * 8 * 8 };
        static float x[NX], u[NX], z[NZ], z32[NZ], zp[NZ], x32[NX], xp[NX], g32[NZ], gp[NZ];
        tu_fill_uniform(x, NX, 71, -1.f, 1.f);
        tu_fill_normal(z, NZ, 72);
        tu_fill_normal(u, NX, 73);
        TU_ASSERT_OK(stsl_autoencoder_encode(a32, x, z32, 2));
        TU_ASSERT_OK(stsl_autoencoder_encode(ap, x, zp, 2));
        TU_ASSERT_OK(stsl_autoencoder_decode_vjp(a32, z, u, x32, g32, 2));
        TU_ASSERT_OK(stsl_autoencoder_decode_vjp(ap, z, u, xp, gp, 2));
        const double ez = tu_rel_err(zp, z32, NZ), ex = tu_rel_err(xp, x32, NX);
        const double eg = tu_rel_err(gp, g32, NZ);
        fprintf(stderr, "\n  sd_vae.pt %s vs float32: encode %.2e, decode %.2e, decoder vjp %.2e "
                "(tolerance %g)", pname, ez, ex, eg, tol);
        CU_ASSERT(ez < tol && ex < tol && eg < tol);
        CU_ASSERT(ex > 0);
    } else {
        CU_ASSERT(p == STSL_PRECISION_FLOAT16 && st == STSL_ERR_BACKEND);
    }
    stsl_autoencoder_destroy(a32);
    stsl_autoencoder_destroy(ap);
    stsl_context_destroy(c32);
    stsl_context_destroy(cp);
}

static void test_reduced_precision(void)
{
    if (g_made != 0) {
        CU_FAIL("the stand-in exports were not made");
        return;
    }
    reduced_precision(STSL_PRECISION_BFLOAT16, 5e-2);
    reduced_precision(STSL_PRECISION_FLOAT16, 2e-2);
}

static void test_verify(void)
{
    if (g_made != 0) {
        CU_FAIL("the stand-in exports were not made");
        return;
    }
    CU_ASSERT_EQUAL(run_standins("verify"), 0);
}

int main(void)
{
    static const stsl_test tests[] = {
        {"export the stand-ins as a user would (and every user mistake)", test_make},
        {"ADM, learned sigma, fp16 .pt: DPS steps", test_adm},
        {"ADM class-conditional .safetensors: STSL steps, batch limit 2", test_adm_cond},
        {"SD UNet + VAE, fixed embedding: LDPS steps", test_sd},
        {"SD v-prediction + guidance: latent STSL steps", test_sdv},
        {"library calls = eager PyTorch calls", test_verify},
        {"a graph that fixes the device cuda runs on the CPU (the loader moves it)",
         test_pinned_device},
        {"every front-end's export in bfloat16 and float16 agrees with float32",
         test_reduced_precision},
        {NULL, NULL}};
    return stsl_test_main("exporters", tests);
}

#else

static void test_skipped(void) { CU_PASS("built without TorchScript support"); }

int main(void)
{
    static const stsl_test tests[] = {{"skipped (WITH_TORCH=0)", test_skipped}, {NULL, NULL}};
    return stsl_test_main("exporters", tests);
}

#endif
