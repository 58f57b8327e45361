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
 * logging wrapper (calls_<tag>.bin) and once directly: both results must be identical. */
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
    CU_ASSERT_EQUAL(tu_max_abs_diff(r1, r2, dx), 0.0);
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
