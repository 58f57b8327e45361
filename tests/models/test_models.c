/*
 * The shipped default models (models/, docs: models/README.md): each loads through the library,
 * carries the metadata the tools rely on, and runs one forward and one VJP with finite output.
 * A missing model is a failure: `make demo` and the tools depend on them.
 */
#include "common/testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef STSL_WITH_TORCH
#include "../../shim/shim.h"
#include "scores/meta.h"
#endif

static char model_path[512];
static const char *model(const char *file)
{
    const char *dir = getenv("STSL_MODEL_DIR");
    snprintf(model_path, sizeof model_path, "%s/%s", dir ? dir : "models", file);
    return model_path;
}

static int all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static void check_unet(const char *file, stsl_shape want, int latent)
{
    if (!stsl_has_torch()) {
        fprintf(stderr, " [built without torch: %s not loaded]", file);
        return;
    }
    stsl_context *ctx = tu_context();   /* STSL_TEST_DEVICE / STSL_TEST_HALF, CPU by default */
    CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
    stsl_score *s = NULL;
    stsl_status st = stsl_score_load(ctx, model(file), &s);
    if (st != STSL_OK) fprintf(stderr, "\n  %s: %s\n", model_path, stsl_context_last_error(ctx));
    TU_ASSERT_OK(st);
    if (s) {
        stsl_shape sh;
        TU_ASSERT_OK(stsl_score_shape(s, &sh));
        CU_ASSERT(sh.channels == want.channels && sh.height == want.height && sh.width == want.width);
        CU_ASSERT_EQUAL(stsl_score_is_latent(s), latent);
        CU_ASSERT_STRING_EQUAL(stsl_score_meta(s, "prediction"), "eps");
        CU_ASSERT_STRING_EQUAL(stsl_score_meta(s, "schedule"), "linear");
        CU_ASSERT_EQUAL(stsl_schedule_timesteps(stsl_score_schedule(s)), 1000);
        if (latent) CU_ASSERT_STRING_EQUAL(stsl_score_meta(s, "pairs_with"), "fmnist-vae.pt");
        size_t d = (size_t)sh.channels * sh.height * sh.width;
        float *x = malloc(d * sizeof(float)), *v = malloc(d * sizeof(float));
        float *eps = malloc(d * sizeof(float)), *vjp = malloc(d * sizeof(float));
        tu_fill_normal(x, d, 1);
        tu_fill_normal(v, d, 2);
        float t = 500.0f;
        TU_ASSERT_OK(stsl_score_eps(s, x, &t, eps, 1));
        CU_ASSERT(all_finite(eps, d));
        /* on pure noise (t = 999) a trained eps-model predicts about the input itself */
        float t_end = 999.0f;
        TU_ASSERT_OK(stsl_score_eps(s, x, &t_end, eps, 1));
        double cos = tu_dot(eps, x, d) / (tu_norm(eps, d) * tu_norm(x, d));
        CU_ASSERT(cos > 0.5);
        TU_ASSERT_OK(stsl_score_eps_vjp(s, x, &t, v, eps, vjp, 1));
        CU_ASSERT(all_finite(vjp, d));
        CU_ASSERT(tu_norm(vjp, d) > 0);
        free(x), free(v), free(eps), free(vjp);
    }
    stsl_score_destroy(s);
    stsl_context_destroy(ctx);
}

static void test_pixel_prior(void) { check_unet("fmnist-ddpm.pt", (stsl_shape){1, 28, 28}, 0); }
static void test_latent_prior(void) { check_unet("fmnist-ldm.pt", (stsl_shape){4, 7, 7}, 1); }

static void test_vae(void)
{
    if (!stsl_has_torch()) return;
    stsl_context *ctx = tu_context();   /* STSL_TEST_DEVICE / STSL_TEST_HALF, CPU by default */
    CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
    stsl_autoencoder *ae = NULL;
    stsl_status st = stsl_autoencoder_load(ctx, model("fmnist-vae.pt"), NULL, &ae);
    if (st != STSL_OK) fprintf(stderr, "\n  %s: %s\n", model_path, stsl_context_last_error(ctx));
    TU_ASSERT_OK(st);
    if (ae) {
        stsl_shape im, lat;
        TU_ASSERT_OK(stsl_autoencoder_image_shape(ae, &im));
        TU_ASSERT_OK(stsl_autoencoder_latent_shape(ae, &lat));
        CU_ASSERT(im.channels == 1 && im.height == 28 && im.width == 28);
        CU_ASSERT(lat.channels == 4 && lat.height == 7 && lat.width == 7);
        const size_t di = 28 * 28, dz = 4 * 7 * 7;
        float x[28 * 28], back[28 * 28], z[4 * 7 * 7], u[28 * 28], g[4 * 7 * 7];
        /* a plain garment-like shape: a bright rectangle on black */
        for (size_t i = 0; i < di; i++) {
            int r = (int)(i / 28), c = (int)(i % 28);
            x[i] = (r > 5 && r < 23 && c > 8 && c < 20) ? 0.8f : -1.0f;
        }
        TU_ASSERT_OK(stsl_autoencoder_encode(ae, x, z, 1));
        CU_ASSERT(all_finite(z, dz));
        TU_ASSERT_OK(stsl_autoencoder_decode(ae, z, back, 1));
        /* the autoencoder reconstructs what it encodes (RMSE well below the image's range) */
        double se = 0;
        for (size_t i = 0; i < di; i++) se += (back[i] - x[i]) * (back[i] - x[i]);
        CU_ASSERT(sqrt(se / di) < 0.35);
        tu_fill_normal(u, di, 3);
        TU_ASSERT_OK(stsl_autoencoder_decode_vjp(ae, z, u, NULL, g, 1));
        CU_ASSERT(all_finite(g, dz));
        CU_ASSERT(tu_norm(g, dz) > 0);
    }
    stsl_autoencoder_destroy(ae);
    stsl_context_destroy(ctx);
}

/* The evaluation classifier is not a prior or an autoencoder, so no public handle loads it; the
 * shim checks that it is TorchScript with a metadata record of role classifier (the image
 * benchmark runs it from Python, scripts/bench_eval.py). */
static void test_classifier(void)
{
#ifdef STSL_WITH_TORCH
    stsl_shim_module *m = NULL;
    char err[STSL_ERRMSG_SIZE] = "";
    stsl_status st = stsl_shim_load(model("fmnist-classifier.pt"), tu_device(), tu_half(), &m, err,
                                   sizeof err);
    if (st != STSL_OK) fprintf(stderr, "\n  %s: %s\n", model_path, err);
    TU_ASSERT_OK(st);
    if (m) {
        size_t len = 0;
        const char *text = stsl_shim_meta(m, &len);
        stsl__meta_entry *e = NULL;
        int n = 0;
        TU_ASSERT_OK(stsl__meta_parse(text, len, &e, &n, err));
        CU_ASSERT_STRING_EQUAL(stsl__meta_get(e, n, "role"), "classifier");
        CU_ASSERT_STRING_EQUAL(stsl__meta_get(e, n, "image_shape"), "1,28,28");
        stsl__meta_free(e, n);
        TU_ASSERT_OK(stsl_shim_check_method(m, "forward", 1, err, sizeof err));
        TU_ASSERT_OK(stsl_shim_check_method(m, "features", 1, err, sizeof err));
    }
    stsl_shim_free(m);
#endif
}

int main(void)
{
    static const stsl_test tests[] = {
        {"pixel prior fmnist-ddpm.pt: metadata, forward, VJP", test_pixel_prior},
        {"latent prior fmnist-ldm.pt: metadata, forward, VJP", test_latent_prior},
        {"autoencoder fmnist-vae.pt: shapes, encode/decode, decoder VJP", test_vae},
        {"classifier fmnist-classifier.pt: metadata and methods", test_classifier},
        {NULL, NULL},
    };
    return stsl_test_main("shipped models", tests);
}
