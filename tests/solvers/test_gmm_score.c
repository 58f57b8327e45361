/*
 * test_gmm_score.c -- the analytic priors and the identity autoencoder (issue 6):
 * GMM eps against finite differences of log p_t (computed here independently), J_eps^T v against
 * finite differences of eps, numerical stability far from the data, argument checks; the custom
 * (callback) score; the identity autoencoder.
 * Tolerances: eps vs FD of log p: 2e-3 relative (float output, central differences h = 1e-3 in
 * double); J^T v vs FD of eps (float eps, h = 1e-2): 5e-3 relative to ||J^T v||.
 */
#include "common/testutil.h"
#include "autoencoders/autoencoder_internal.h"
#include "scores/score_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define D 5
#define K 3

static stsl_context *ctx;
static stsl_schedule *sched;

static const double W[K] = {0.5, 1.0, 2.0};
static double MU[K * D];
static double VISO[K] = {0.3, 1.0, 2.5};
static double VDIAG[K * D];

static void setup(void)
{
    if (!ctx) {
        stsl_context_create(&ctx);
        stsl_schedule_create(ctx, STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 1000, &sched);
        for (int i = 0; i < K * D; i++) {
            MU[i] = 2.0 * sin(1.7 * i + 0.3);
            VDIAG[i] = 0.2 + 0.5 * (1 + cos(0.9 * i));
        }
    }
}

/* log p_t(x) in double, independent of the library */
static double logp(const double *x, double t, int diagonal)
{
    double ab = stsl__alpha_bar_at(sched, t), wsum = 0, acc = 0;
    for (int k = 0; k < K; k++) wsum += W[k];
    for (int k = 0; k < K; k++) {
        double q = 0, ld = 0;
        for (int i = 0; i < D; i++) {
            double v = ab * (diagonal ? VDIAG[k * D + i] : VISO[k]) + 1 - ab;
            double r = x[i] - sqrt(ab) * MU[k * D + i];
            q += r * r / v;
            ld += log(2 * M_PI * v);
        }
        acc += W[k] / wsum * exp(-0.5 * (q + ld));
    }
    return log(acc);
}

static stsl_score *make(int diagonal)
{
    setup();
    stsl_score *s = NULL;
    TU_ASSERT_OK(stsl_score_create_gmm(ctx, (stsl_shape){1, 1, D}, K, W, MU, diagonal ? VDIAG : VISO,
                                       diagonal, sched, &s));
    return s;
}

static void check_eps(int diagonal)
{
    stsl_score *s = make(diagonal);
    const float ts[4] = {0.0f, 37.5f, 412.25f, 999.0f};
    for (int it = 0; it < 4; it++) {
        float x[D], eps[D], t = ts[it];
        tu_fill_normal(x, D, 10 + it);
        for (int i = 0; i < D; i++) x[i] *= 1.5f;
        TU_ASSERT_OK(stsl_score_eps(s, x, &t, eps, 1));
        double ab = stsl__alpha_bar_at(sched, t), num = 0, den = 0;
        for (int i = 0; i < D; i++) {
            double xp[D], xm[D], h = 1e-3;
            for (int j = 0; j < D; j++) xp[j] = xm[j] = x[j];
            xp[i] += h;
            xm[i] -= h;
            double g = (logp(xp, t, diagonal) - logp(xm, t, diagonal)) / (2 * h);
            double e = -sqrt(1 - ab) * g;
            num += (e - eps[i]) * (e - eps[i]);
            den += e * e;
        }
        CU_ASSERT(sqrt(num) <= 2e-3 * sqrt(den) + 1e-6);
    }
    stsl_score_destroy(s);
}

static void test_eps_isotropic(void) { check_eps(0); }
static void test_eps_diagonal(void) { check_eps(1); }

static void check_vjp(int diagonal)
{
    stsl_score *s = make(diagonal);
    const float ts[3] = {5.0f, 250.5f, 800.0f};
    for (int it = 0; it < 3; it++) {
        float x[D], v[D], vjp[D], eps[D], ep[D], em[D], xp[D], xm[D], t = ts[it];
        tu_fill_normal(x, D, 20 + it);
        tu_fill_normal(v, D, 30 + it);
        TU_ASSERT_OK(stsl_score_eps_vjp(s, x, &t, v, eps, vjp, 1));
        float e2[D];
        TU_ASSERT_OK(stsl_score_eps(s, x, &t, e2, 1));
        CU_ASSERT(tu_max_abs_diff(eps, e2, D) < 1e-6);
        const float h = 1e-2f;
        for (int i = 0; i < D; i++) {
            xp[i] = x[i] + h * v[i];
            xm[i] = x[i] - h * v[i];
        }
        TU_ASSERT_OK(stsl_score_eps(s, xp, &t, ep, 1));
        TU_ASSERT_OK(stsl_score_eps(s, xm, &t, em, 1));
        /* J v by central differences; J is symmetric so J^T v = J v */
        double num = 0, den = 0;
        for (int i = 0; i < D; i++) {
            double fd = ((double)ep[i] - em[i]) / (2 * h);
            num += (fd - vjp[i]) * (fd - vjp[i]);
            den += (double)vjp[i] * vjp[i];
        }
        CU_ASSERT(sqrt(num) <= 5e-3 * sqrt(den) + 1e-5);
    }
    stsl_score_destroy(s);
}

static void test_vjp_isotropic(void) { check_vjp(0); }
static void test_vjp_diagonal(void) { check_vjp(1); }

static void test_batch_and_far_points(void)
{
    stsl_score *s = make(0);
    /* far from every component: log-sum-exp keeps it finite, eps ~ -sqrt(1-ab) * score */
    float x[2 * D], t[2] = {100.0f, 100.0f}, eps[2 * D], vjp[2 * D], v[2 * D];
    for (int i = 0; i < D; i++) {
        x[i] = 1e4f;
        x[D + i] = -3e3f * (float)(i + 1);
        v[i] = v[D + i] = 1.0f;
    }
    TU_ASSERT_OK(stsl_score_eps_vjp(s, x, t, v, eps, vjp, 2));
    for (int i = 0; i < 2 * D; i++) {
        CU_ASSERT(isfinite(eps[i]));
        CU_ASSERT(isfinite(vjp[i]));
    }
    /* batch of 2 equals two single calls */
    float e1[D];
    TU_ASSERT_OK(stsl_score_eps(s, x + D, t, e1, 1));
    CU_ASSERT(memcmp(e1, eps + D, sizeof e1) == 0);
    stsl_score_destroy(s);
}

static void test_gmm_invalid(void)
{
    setup();
    stsl_score *s = (stsl_score *)1;
    stsl_shape sh = {1, 1, D};
    double badw[K] = {1, 0, 1}, badv[K] = {1, -1, 1};
    TU_ASSERT_STATUS(stsl_score_create_gmm(ctx, sh, K, badw, MU, VISO, 0, sched, &s), STSL_ERR_INVALID_ARG);
    CU_ASSERT(s == NULL);
    CU_ASSERT(strlen(stsl_context_last_error(ctx)) > 0);
    TU_ASSERT_STATUS(stsl_score_create_gmm(ctx, sh, K, W, MU, badv, 0, sched, &s), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_score_create_gmm(ctx, sh, 0, W, MU, VISO, 0, sched, &s), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_score_create_gmm(ctx, sh, K, W, MU, VISO, 0, NULL, &s), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_score_create_gmm(ctx, sh, K, W, MU, VISO, 2, sched, &s), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_score_create_gmm(ctx, (stsl_shape){1, 0, D}, K, W, MU, VISO, 0, sched, &s),
                     STSL_ERR_INVALID_ARG);
    s = make(0);
    stsl_shape got;
    TU_ASSERT_OK(stsl_score_shape(s, &got));
    CU_ASSERT(got.width == D && got.height == 1 && got.channels == 1);
    CU_ASSERT(stsl_score_schedule(s) == sched);
    CU_ASSERT(stsl_score_is_latent(s) == 0);
    stsl_score_destroy(s);
}

/* ---- custom score ---- */
typedef struct cu_user {
    int eps_calls, vjp_calls, destroyed, fail;
} cu_user;

static int cu_eps(void *user, const float *x, const float *t, float *eps, int batch)
{
    cu_user *u = (cu_user *)user;
    u->eps_calls++;
    if (u->fail) return 42;
    for (int i = 0; i < batch * D; i++) eps[i] = 0.5f * x[i] + 0.001f * t[i / D];
    return 0;
}

static int cu_vjp(void *user, const float *x, const float *t, const float *v, float *eps,
                  float *vjp, int batch)
{
    cu_user *u = (cu_user *)user;
    u->vjp_calls++;
    if (eps) cu_eps(user, x, t, eps, batch);
    for (int i = 0; i < batch * D; i++) vjp[i] = 0.5f * v[i];
    return 0;
}

static void cu_destroy(void *user) { ((cu_user *)user)->destroyed++; }

static void test_custom_score(void)
{
    setup();
    cu_user u = {0};
    stsl_score_vtable vt = {sizeof(stsl_score_vtable), cu_eps, cu_vjp, cu_destroy};
    stsl_score *s = NULL;
    TU_ASSERT_OK(stsl_score_create_custom(ctx, (stsl_shape){1, 1, D}, &vt, &u, sched, &s));
    float x[2 * D], t[2] = {3, 7}, eps[2 * D], vjp[2 * D];
    tu_fill_normal(x, 2 * D, 5);
    TU_ASSERT_OK(stsl_score_eps(s, x, t, eps, 2));
    CU_ASSERT(u.eps_calls == 1);
    CU_ASSERT(fabs(eps[D] - (0.5f * x[D] + 0.007f)) < 1e-6);
    TU_ASSERT_OK(stsl_score_eps_vjp(s, x, t, x, NULL, vjp, 2));
    CU_ASSERT(u.vjp_calls == 1);
    CU_ASSERT(fabs(vjp[3] - 0.5f * x[3]) < 1e-6);
    u.fail = 1;
    TU_ASSERT_STATUS(stsl_score_eps(s, x, t, eps, 2), STSL_ERR_MODEL);
    CU_ASSERT(strstr(stsl_score_last_error(s), "42") != NULL);
    stsl_score_destroy(s);
    CU_ASSERT(u.destroyed == 1);

    /* no VJP callback: VJPs are refused */
    stsl_score_vtable vt2 = {sizeof(stsl_score_vtable), cu_eps, NULL, NULL};
    u.fail = 0;
    TU_ASSERT_OK(stsl_score_create_custom(ctx, (stsl_shape){1, 1, D}, &vt2, &u, sched, &s));
    TU_ASSERT_STATUS(stsl_score_eps_vjp(s, x, t, x, NULL, vjp, 2), STSL_ERR_UNSUPPORTED);
    stsl_score_destroy(s);
    CU_ASSERT(u.destroyed == 1);

    /* struct_size and required fields */
    stsl_score_vtable bad = vt;
    bad.struct_size = 8;
    s = (stsl_score *)1;
    TU_ASSERT_STATUS(stsl_score_create_custom(ctx, (stsl_shape){1, 1, D}, &bad, &u, sched, &s),
                     STSL_ERR_INVALID_ARG);
    CU_ASSERT(s == NULL);
    CU_ASSERT(strstr(stsl_context_last_error(ctx), "struct_size") != NULL);
    bad = vt;
    bad.eps = NULL;
    TU_ASSERT_STATUS(stsl_score_create_custom(ctx, (stsl_shape){1, 1, D}, &bad, &u, sched, &s),
                     STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_score_create_custom(ctx, (stsl_shape){1, 1, D}, &vt, &u, NULL, &s),
                     STSL_ERR_INVALID_ARG);
    CU_ASSERT(u.destroyed == 1);  /* failed creation does not call destroy */
}

static void test_identity_autoencoder(void)
{
    setup();
    stsl_autoencoder *ae = NULL;
    stsl_shape sh = {2, 3, 4};
    TU_ASSERT_OK(stsl_autoencoder_create_identity(ctx, sh, &ae));
    CU_ASSERT(ae->is_identity == 1);
    stsl_shape a, b;
    TU_ASSERT_OK(stsl_autoencoder_image_shape(ae, &a));
    TU_ASSERT_OK(stsl_autoencoder_latent_shape(ae, &b));
    CU_ASSERT(a.channels == 2 && a.height == 3 && a.width == 4);
    CU_ASSERT(b.channels == 2 && b.height == 3 && b.width == 4);
    float x[48], z[48], u[48], o[48], xx[48];
    tu_fill_normal(x, 48, 3);
    tu_fill_normal(u, 48, 4);
    TU_ASSERT_OK(stsl_autoencoder_encode(ae, x, z, 2));
    CU_ASSERT(memcmp(x, z, sizeof x) == 0);
    TU_ASSERT_OK(stsl_autoencoder_decode(ae, z, xx, 2));
    CU_ASSERT(memcmp(x, xx, sizeof x) == 0);
    TU_ASSERT_OK(stsl_autoencoder_decode_vjp(ae, z, u, xx, o, 2));
    CU_ASSERT(memcmp(u, o, sizeof u) == 0);
    stsl_autoencoder_destroy(ae);
    stsl_autoencoder_destroy(NULL);
    ae = (stsl_autoencoder *)1;
    TU_ASSERT_STATUS(stsl_autoencoder_create_identity(ctx, (stsl_shape){0, 1, 1}, &ae),
                     STSL_ERR_INVALID_ARG);
    CU_ASSERT(ae == NULL);
}

int main(void)
{
    static const stsl_test tests[] = {
        {"gmm eps (isotropic) vs finite differences of log p", test_eps_isotropic},
        {"gmm eps (diagonal) vs finite differences of log p", test_eps_diagonal},
        {"gmm J^T v (isotropic) vs finite differences", test_vjp_isotropic},
        {"gmm J^T v (diagonal) vs finite differences", test_vjp_diagonal},
        {"gmm batch and far points", test_batch_and_far_points},
        {"gmm invalid arguments", test_gmm_invalid},
        {"custom score", test_custom_score},
        {"identity autoencoder", test_identity_autoencoder},
        {NULL, NULL}};
    int rc = stsl_test_main("gmm-score", tests);
    stsl_schedule_destroy(sched);
    stsl_context_destroy(ctx);
    return rc;
}
