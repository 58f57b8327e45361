/*
 * test_solvers_api.c -- solver handles (issue 6): names and parameters (defaults, bounds,
 * refusals with messages), run validation (shapes, nonlinear operators, NaN in y), NFE counts
 * equal each solver's formula (pixel space and with a latent test autoencoder), same seed =>
 * bit-identical output, batch of 3 == 3 single runs with seeds s, s+1, s+2, cancel from the
 * progress callback and from stsl_solver_cancel ends the run within one network evaluation, NaN
 * injected through a custom score -> STSL_ERR_NUMERIC with the step index.
 * Small problems: a 4-dimensional GMM prior, a 2 x 4 matrix operator, few steps.
 */
#include "common/testutil.h"
#include "autoencoders/autoencoder_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DX 4
#define DY 2

static stsl_context *ctx;
static stsl_schedule *sched;
static stsl_score *gmm;
static stsl_operator *op;
static float Y[3 * DY];

static const char *ALL[] = {"ddim", "dps", "ldps", "psld", "stsl", "stsl-biased", "rmp", "dps-mo"};

/* the suite's measurement: y = M x + N(0, sigma^2) */
static stsl_operator *make_op(double sigma)
{
    stsl_operator *o = NULL;
    float M[DY * DX] = {1, 0.5f, 0, -0.3f, 0, 0.2f, 1, 0.4f};
    TU_ASSERT_OK(stsl_operator_create_matrix(ctx, (stsl_shape){1, 1, DX}, DY, M, &o));
    if (o) TU_ASSERT_OK(stsl_operator_set_float(o, STSL_PARAM_NOISE_SIGMA, sigma));
    return o;
}

static void setup(void)
{
    if (ctx) return;
    stsl_context_create(&ctx);
    stsl_schedule_create(ctx, STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 1000, &sched);
    double w[3] = {1, 2, 1}, mu[3 * DX], var[3] = {0.5, 0.5, 0.5};
    for (int i = 0; i < 3 * DX; i++) mu[i] = 2.0 * sin(1.3 * i + 0.5);
    stsl_score_create_gmm(ctx, (stsl_shape){1, 1, DX}, 3, w, mu, var, 0, sched, &gmm);
    op = make_op(0.1);
    for (int i = 0; i < 3 * DY; i++) Y[i] = 0.3f * (float)(i % 3) - 0.2f;
}

static stsl_solver *make(const char *name, int steps)
{
    stsl_solver *s = NULL;
    TU_ASSERT_OK(stsl_solver_create_by_name(ctx, name, &s));
    if (s && steps > 0) TU_ASSERT_OK(stsl_solver_set_int(s, STSL_PARAM_STEPS, steps));
    return s;
}

static void get_nfe(stsl_solver *s, stsl_nfe *n)
{
    memset(n, 0, sizeof *n);
    n->struct_size = sizeof *n;
    TU_ASSERT_OK(stsl_solver_get_nfe(s, n));
}

/* ---- names and parameters ---- */

static void test_names_and_params(void)
{
    setup();
    const char *names = stsl_solver_names();
    for (int i = 0; i < 8; i++) {
        CU_ASSERT(strstr(names, ALL[i]) != NULL);
        stsl_solver *s = make(ALL[i], 0);
        CU_ASSERT((int)stsl_solver_get_kind(s) == i);
        stsl_solver_destroy(s);
    }
    stsl_solver *s = (stsl_solver *)1;
    TU_ASSERT_STATUS(stsl_solver_create_by_name(ctx, "nope", &s), STSL_ERR_INVALID_ARG);
    CU_ASSERT(s == NULL);
    CU_ASSERT(strstr(stsl_context_last_error(ctx), "nope") != NULL);
    TU_ASSERT_STATUS(stsl_solver_create(ctx, (stsl_solver_kind)99, &s), STSL_ERR_INVALID_ARG);
    stsl_solver_destroy(NULL);

    /* STSL defaults (App. B.1, except the inner step: the scaled step's lr 0.2 and DDPM line 14;
     * Adam's lr 1e-2 applies when STEP_RULE = ADAM and the lr is unset, docs/algorithms.md) */
    stsl_param_bounds b;
    struct { stsl_param k; double v; } stsl_def[] = {
        {STSL_PARAM_STEPS, 50}, {STSL_PARAM_INNER_STEPS, 5}, {STSL_PARAM_PROBES, 2},
        {STSL_PARAM_ETA, 0.02}, {STSL_PARAM_LAMBDA, 1}, {STSL_PARAM_LEARNING_RATE, 0.2},
        {STSL_PARAM_STEP_RULE, STSL_STEP_SCALED}, {STSL_PARAM_STEP_NOISE, 1},
        {STSL_PARAM_LR_DECAY, 0.998}, {STSL_PARAM_SQUARED_LOSS, 1}, {STSL_PARAM_INNER_INCLUSIVE, 0},
        {STSL_PARAM_INIT, STSL_INIT_FRESH_NOISE}, {STSL_PARAM_ADAM_PERSIST, 0}};
    for (size_t i = 0; i < sizeof stsl_def / sizeof stsl_def[0]; i++) {
        TU_ASSERT_OK(stsl_solver_param_bounds(STSL_SOLVER_STSL, stsl_def[i].k, &b));
        CU_ASSERT(fabs(b.default_value - stsl_def[i].v) < 1e-12);
    }
    TU_ASSERT_OK(stsl_solver_param_bounds(STSL_SOLVER_STSL_BIASED, STSL_PARAM_ETA, &b));
    CU_ASSERT(b.default_value == 0);
    TU_ASSERT_OK(stsl_solver_param_bounds(STSL_SOLVER_STSL_BIASED, STSL_PARAM_INNER_STEPS, &b));
    CU_ASSERT(b.default_value == 1);
    TU_ASSERT_OK(stsl_solver_param_bounds(STSL_SOLVER_DPS, STSL_PARAM_STEPS, &b));
    CU_ASSERT(b.default_value == 1000 && b.is_integer == 1);
    TU_ASSERT_OK(stsl_solver_param_bounds(STSL_SOLVER_DPS, STSL_PARAM_ZETA, &b));
    CU_ASSERT(fabs(b.default_value - 0.3) < 1e-12);
    TU_ASSERT_OK(stsl_solver_param_bounds(STSL_SOLVER_PSLD, STSL_PARAM_GAMMA, &b));
    CU_ASSERT(fabs(b.default_value - 0.1) < 1e-12);
    TU_ASSERT_OK(stsl_solver_param_bounds(STSL_SOLVER_PSLD, STSL_PARAM_OMEGA, &b));
    CU_ASSERT(b.default_value == 1);
    TU_ASSERT_STATUS(stsl_solver_param_bounds(STSL_SOLVER_DDIM, STSL_PARAM_LAMBDA, &b), STSL_ERR_UNSUPPORTED);
    TU_ASSERT_STATUS(stsl_solver_param_bounds(STSL_SOLVER_DDIM, STSL_PARAM_KERNEL_SIZE, &b), STSL_ERR_UNSUPPORTED);

    /* setters: each refusal has a status and a message */
    s = make("stsl", 0);
    int64_t iv;
    double fv;
    TU_ASSERT_OK(stsl_solver_get_int(s, STSL_PARAM_STEPS, &iv));
    CU_ASSERT(iv == 50);
    TU_ASSERT_STATUS(stsl_solver_set_int(s, STSL_PARAM_STEPS, 0), STSL_ERR_INVALID_ARG);
    CU_ASSERT(strlen(stsl_solver_last_error(s)) > 0);
    TU_ASSERT_STATUS(stsl_solver_set_float(s, STSL_PARAM_ETA, -1), STSL_ERR_INVALID_ARG);
    CU_ASSERT(strstr(stsl_solver_last_error(s), "outside") != NULL);
    TU_ASSERT_STATUS(stsl_solver_set_float(s, STSL_PARAM_ETA, NAN), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_solver_set_float(s, STSL_PARAM_STEPS, 10), STSL_ERR_INVALID_ARG);
    CU_ASSERT(strstr(stsl_solver_last_error(s), "integer") != NULL);
    TU_ASSERT_STATUS(stsl_solver_set_int(s, STSL_PARAM_ETA, 1), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_solver_set_float(s, STSL_PARAM_OMEGA, 1), STSL_ERR_UNSUPPORTED);
    CU_ASSERT(strlen(stsl_solver_last_error(s)) > 0);
    TU_ASSERT_STATUS(stsl_solver_set_int(s, STSL_PARAM_KERNEL_SIZE, 3), STSL_ERR_UNSUPPORTED);
    TU_ASSERT_STATUS(stsl_solver_set_int(s, STSL_PARAM_VARIANT, STSL_VARIANT_RMP_VE), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_solver_set_int(s, STSL_PARAM_INIT, 7), STSL_ERR_INVALID_ARG);
    TU_ASSERT_OK(stsl_solver_set_float(s, STSL_PARAM_KAPPA, 0.5));
    TU_ASSERT_OK(stsl_solver_get_float(s, STSL_PARAM_KAPPA, &fv));
    CU_ASSERT(fv == 0.5);
    TU_ASSERT_STATUS(stsl_solver_get_float(s, STSL_PARAM_STEPS, &fv), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_solver_get_float(s, STSL_PARAM_OMEGA, &fv), STSL_ERR_UNSUPPORTED);
    stsl_solver_destroy(s);
}

/* ---- run validation ---- */

static int nl_forward(void *u, const float *x, float *y, int b)
{
    (void)u;
    for (int i = 0; i < b; i++) {
        y[i * DY] = x[i * DX] * x[i * DX];
        y[i * DY + 1] = x[i * DX + 1];
    }
    return 0;
}
static int nl_vjp(void *u, const float *x, const float *v, float *o, int b)
{
    (void)u;
    for (int i = 0; i < b; i++) {
        memset(o + i * DX, 0, DX * sizeof(float));
        o[i * DX] = 2 * x[i * DX] * v[i * DY];
        o[i * DX + 1] = v[i * DY + 1];
    }
    return 0;
}

static void test_run_validation(void)
{
    setup();
    stsl_solver *s = make("psld", 5);
    float x[3 * DX];
    TU_ASSERT_STATUS(stsl_solver_run(s, NULL, op, NULL, Y, x, 1), STSL_ERR_INVALID_ARG);
    CU_ASSERT(strlen(stsl_solver_last_error(s)) > 0);
    TU_ASSERT_STATUS(stsl_solver_run(s, gmm, NULL, NULL, Y, x, 1), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_solver_run(s, gmm, op, NULL, NULL, x, 1), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_solver_run(s, gmm, op, NULL, Y, NULL, 1), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_solver_run(s, gmm, op, NULL, Y, x, 0), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_solver_run(s, gmm, op, NULL, Y, x, STSL_MAX_BATCH + 1), STSL_ERR_INVALID_ARG);
    /* operator on another shape */
    stsl_operator *op5 = NULL;
    float M[DY * 5] = {1, 0, 0, 0, 0, 0, 1, 0, 0, 0};
    TU_ASSERT_OK(stsl_operator_create_matrix(ctx, (stsl_shape){1, 1, 5}, DY, M, &op5));
    TU_ASSERT_STATUS(stsl_solver_run(s, gmm, op5, NULL, Y, x, 1), STSL_ERR_SHAPE);
    CU_ASSERT(strstr(stsl_solver_last_error(s), "does not match") != NULL);
    stsl_operator_destroy(op5);
    /* autoencoder whose latent shape differs from the score */
    stsl_autoencoder *ae = NULL;
    TU_ASSERT_OK(stsl_autoencoder_create_identity(ctx, (stsl_shape){1, 1, 5}, &ae));
    TU_ASSERT_STATUS(stsl_solver_run(s, gmm, op, ae, Y, x, 1), STSL_ERR_SHAPE);
    stsl_autoencoder_destroy(ae);
    /* NaN in y */
    float ybad[DY] = {NAN, 0};
    TU_ASSERT_STATUS(stsl_solver_run(s, gmm, op, NULL, ybad, x, 1), STSL_ERR_NUMERIC);
    /* nonlinear operator: psld refuses, ldps/dps/stsl accept */
    stsl_operator_vtable vt = {sizeof vt, 0, {1, 1, DY}, nl_forward, NULL, nl_vjp, NULL};
    stsl_operator *nl = NULL;
    TU_ASSERT_OK(stsl_operator_create_custom(ctx, (stsl_shape){1, 1, DX}, &vt, NULL, &nl));
    TU_ASSERT_STATUS(stsl_solver_run(s, gmm, nl, NULL, Y, x, 1), STSL_ERR_UNSUPPORTED);
    CU_ASSERT(strstr(stsl_solver_last_error(s), "nonlinear") != NULL);
    stsl_solver_destroy(s);
    s = make("ldps", 5);
    TU_ASSERT_OK(stsl_solver_run(s, gmm, nl, NULL, Y, x, 1));
    stsl_solver_destroy(s);
    s = make("stsl", 3);
    TU_ASSERT_OK(stsl_solver_run(s, gmm, nl, NULL, Y, x, 1));
    stsl_solver_destroy(s);
    stsl_operator_destroy(nl);
}

/* ---- NFE formulas ---- */

typedef struct expect {
    uint64_t fwd, vjp, dfwd, dvjp, enc, calls;
} expect;

static void check_nfe(stsl_solver *s, stsl_score *score, stsl_autoencoder *ae, int batch,
                      expect e, const char *what)
{
    float x[3 * 8];
    TU_ASSERT_OK(stsl_solver_run(s, score, op, ae, Y, x, batch));
    stsl_nfe n;
    get_nfe(s, &n);
    if (n.unet_forward != e.fwd || n.unet_vjp != e.vjp || n.decoder_forward != e.dfwd ||
        n.decoder_vjp != e.dvjp || n.encoder_forward != e.enc || (e.calls && n.unet_calls != e.calls))
        fprintf(stderr, "\n  %s: fwd %llu/%llu vjp %llu/%llu dfwd %llu/%llu dvjp %llu/%llu enc %llu/%llu calls %llu/%llu\n",
                what, (unsigned long long)n.unet_forward, (unsigned long long)e.fwd,
                (unsigned long long)n.unet_vjp, (unsigned long long)e.vjp,
                (unsigned long long)n.decoder_forward, (unsigned long long)e.dfwd,
                (unsigned long long)n.decoder_vjp, (unsigned long long)e.dvjp,
                (unsigned long long)n.encoder_forward, (unsigned long long)e.enc,
                (unsigned long long)n.unet_calls, (unsigned long long)e.calls);
    CU_ASSERT(n.unet_forward == e.fwd);
    CU_ASSERT(n.unet_vjp == e.vjp);
    CU_ASSERT(n.decoder_forward == e.dfwd);
    CU_ASSERT(n.decoder_vjp == e.dvjp);
    CU_ASSERT(n.encoder_forward == e.enc);
    if (e.calls) CU_ASSERT(n.unet_calls == e.calls);
    CU_ASSERT(n.seconds >= 0);
}

static void test_nfe_pixel(void)
{
    setup();
    const int B = 2, T = 6;
    stsl_solver *s;
    s = make("ddim", T);
    check_nfe(s, gmm, NULL, B, (expect){T * B, 0, 0, 0, 0, T}, "ddim");
    stsl_solver_destroy(s);
    s = make("dps", T);
    /* one pass per step: eps and its VJP from one kept evaluation (a VJP includes its forward) */
    check_nfe(s, gmm, NULL, B, (expect){0, T * B, 0, 0, 0, T}, "dps");
    /* two passes when the batch does not fit one call (keeping the graphs of every call would
     * defeat the limit): a forward now, a full VJP later */
    stsl_solver_set_int(s, STSL_PARAM_BATCH_LIMIT, 1);
    check_nfe(s, gmm, NULL, B, (expect){T * B, T * B, 0, 0, 0, 2 * T * B}, "dps batch limit");
    stsl_solver_destroy(s);
    s = make("ldps", T);
    check_nfe(s, gmm, NULL, B, (expect){0, T * B, 0, 0, 0, T}, "ldps");
    stsl_solver_destroy(s);
    s = make("psld", T);
    check_nfe(s, gmm, NULL, B, (expect){0, T * B, 0, 0, 0, T}, "psld");
    stsl_solver_destroy(s);
    /* STSL: VJPs T K (1 + N) (line 9's eps comes from the same pass as line 11's VJPs);
     * forwards T (line 3) + T (line 13); calls per pass: one kept call on B (N + 1) points */
    const int K = 3, N = 2;
    s = make("stsl", T);
    stsl_solver_set_int(s, STSL_PARAM_INNER_STEPS, K);
    stsl_solver_set_int(s, STSL_PARAM_PROBES, N);
    /* without the upper levels' covariance step (the default where the prior is latent; below
     * for this pixel prior's own default) */
    TU_ASSERT_OK(stsl_solver_set_int(s, STSL_PARAM_LIKELIHOOD_VARIANCE, STSL_LIKVAR_FLAT));
    /* Algorithm 1 line 3 read literally: one forward per forward-process step */
    stsl_solver_set_int(s, STSL_PARAM_INIT, STSL_INIT_PREDICTED_NOISE);
    check_nfe(s, gmm, NULL, B,
              (expect){(uint64_t)(T + T) * B, (uint64_t)T * K * (1 + N) * B, 0, 0, 0,
                       (uint64_t)(T + T * K + T)},
              "stsl");
    /* K + 1 passes when the loop bound is read inclusively */
    stsl_solver_set_int(s, STSL_PARAM_INNER_INCLUSIVE, 1);
    check_nfe(s, gmm, NULL, B,
              (expect){(uint64_t)(T + T) * B, (uint64_t)T * (K + 1) * (1 + N) * B, 0, 0, 0, 0},
              "stsl inclusive");
    stsl_solver_set_int(s, STSL_PARAM_INNER_INCLUSIVE, 0);
    /* fresh-noise initialisation: no network call before the reverse process */
    stsl_solver_set_int(s, STSL_PARAM_INIT, STSL_INIT_FRESH_NOISE);
    check_nfe(s, gmm, NULL, B,
              (expect){(uint64_t)T * B, (uint64_t)T * K * (1 + N) * B, 0, 0, 0, 0},
              "stsl fresh");
    /* batch limit: the B (N+1) = 6 VJP points go in calls of 4, so line 9 is a forward of
     * its own (two passes) */
    stsl_solver_set_int(s, STSL_PARAM_BATCH_LIMIT, 4);
    check_nfe(s, gmm, NULL, B,
              (expect){(uint64_t)(T * K + T) * B, (uint64_t)T * K * (1 + N) * B, 0, 0, 0,
                       (uint64_t)(T * K * (1 + 2) + T)},
              "stsl batch limit");
    stsl_solver_destroy(s);
    /* the default on this pixel prior with a linear operator and Gaussian noise (TWEEDIE): every
     * level of the upper half (t > (T_train - 1)/2) adds 3 Galerkin steps of M^-1 r in 1 + 3
     * VJPs and calls (the first with eps and J^T A^T zy, then one per step), and so does a lower
     * level where a sample's data term stayed over 4x its noise level -- on 6 levels every lower
     * one (the ladder is too short to fit y): 4 T in all */
    s = make("stsl", T);
    stsl_solver_set_int(s, STSL_PARAM_INNER_STEPS, K);
    stsl_solver_set_int(s, STSL_PARAM_PROBES, N);
    int seq[16], upper = 0;   /* T <= 16 */
    TU_ASSERT_OK(stsl_schedule_ddim_steps(sched, T, seq));
    for (int i = 0; i < T; i++) upper += seq[i] > 0.5 * (stsl_schedule_timesteps(sched) - 1);
    CU_ASSERT(upper > 0 && upper < T);
    check_nfe(s, gmm, NULL, B,
              (expect){(uint64_t)T * B, (uint64_t)(T * K * (1 + N) + 4 * T) * B, 0, 0, 0,
                       (uint64_t)(T * K + T + 4 * T)},
              "stsl tweedie");
    /* with a loose noise level (sigma_y 10 instead of 0.1) no lower level takes it: 4 T_up */
    stsl_operator *suite_op = op;
    op = make_op(10.0);
    check_nfe(s, gmm, NULL, B,
              (expect){(uint64_t)T * B, (uint64_t)(T * K * (1 + N) + 4 * upper) * B, 0, 0, 0,
                       (uint64_t)(T * K + T + 4 * upper)},
              "stsl tweedie, upper levels only");
    stsl_operator_destroy(op);
    op = suite_op;
    stsl_solver_destroy(s);
    /* stsl-biased: eta 0, K 1: no probes; default fresh-noise start: no forward-process NFEs */
    s = make("stsl-biased", T);
    check_nfe(s, gmm, NULL, B, (expect){(uint64_t)T * B, (uint64_t)T * B, 0, 0, 0, 0},
              "stsl-biased");
    stsl_solver_destroy(s);
    /* rmp VP: T T_in evaluations; VE: (T - 1) T_in + 1 forward (T levels).  Each evaluation is
     * 2 VJPs with the default full Tweedie covariance (linear operator, squared loss), 1 with the
     * flat variance.  RMP needs a fine ladder (with 6 VP steps and T_in 2 the fixed-point
     * iteration diverges): 40 steps. */
    s = make("rmp", 40);
    check_nfe(s, gmm, NULL, B, (expect){0, (uint64_t)2 * 40 * B, 0, 0, 0, 0}, "rmp vp");
    stsl_solver_set_int(s, STSL_PARAM_LIKELIHOOD_VARIANCE, STSL_LIKVAR_FLAT);
    check_nfe(s, gmm, NULL, B, (expect){0, (uint64_t)40 * B, 0, 0, 0, 0}, "rmp vp flat");
    stsl_solver_set_int(s, STSL_PARAM_INNER_STEPS, 2);
    stsl_solver_set_int(s, STSL_PARAM_VARIANT, STSL_VARIANT_RMP_VE);
    check_nfe(s, gmm, NULL, B, (expect){(uint64_t)B, (uint64_t)(40 - 1) * 2 * B, 0, 0, 0, 0},
              "rmp ve flat");
    stsl_solver_set_int(s, STSL_PARAM_LIKELIHOOD_VARIANCE, STSL_LIKVAR_TWEEDIE);
    check_nfe(s, gmm, NULL, B, (expect){(uint64_t)B, (uint64_t)(40 - 1) * 2 * 2 * B, 0, 0, 0, 0},
              "rmp ve");
    stsl_solver_destroy(s);
    /* dps-mo: 1 + N UNet VJPs per level (the DPS direction from the kept pass, N MO directions
     * as full VJPs at the same point; the probes of H p are operator work only); N 3 too; with
     * zeta 0 (the prior sampler) 1 forward per level */
    s = make("dps-mo", T);
    int64_t mo_n = -1, passes = -1;
    TU_ASSERT_OK(stsl_solver_get_int(s, STSL_PARAM_INNER_STEPS, &mo_n));
    TU_ASSERT_OK(stsl_solver_get_int(s, STSL_PARAM_DENOISE_PASSES, &passes));
    CU_ASSERT(passes == 2);   /* the default on a linear operator, squared loss, pixel prior */
    check_nfe(s, gmm, NULL, B, (expect){0, (uint64_t)T * passes * (1 + mo_n) * B, 0, 0, 0, 0}, "dps-mo");
    stsl_solver_set_int(s, STSL_PARAM_INNER_STEPS, 3);
    check_nfe(s, gmm, NULL, B, (expect){0, (uint64_t)T * passes * 4 * B, 0, 0, 0, 0}, "dps-mo N 3");
    stsl_solver_set_int(s, STSL_PARAM_DENOISE_PASSES, 1);
    check_nfe(s, gmm, NULL, B, (expect){0, (uint64_t)T * 4 * B, 0, 0, 0, 0}, "dps-mo N 3, 1 pass");
    stsl_solver_set_float(s, STSL_PARAM_ZETA, 0.0);
    check_nfe(s, gmm, NULL, B, (expect){(uint64_t)T * B, 0, 0, 0, 0, 0}, "dps-mo zeta 0");
    stsl_solver_destroy(s);
}

/* a latent test autoencoder: image DX floats, latent 3 floats, D(z) = M z, E(x) = M^T x / 2 */
#define DZ 3
static const float AEM[DX * DZ] = {1, 0, 0.5f, 0, 1, 0, 0.3f, 0, 1, 0.2f, 0.2f, 0.2f};
/* Per sample, out = scale M in (DZ floats in, DX out), or with `transposed` out = scale M^T in
 * (DX in, DZ out) */
static void mul(const float *in, float *out, int b, float scale, int transposed)
{
    const int n_in = transposed ? DX : DZ, n_out = transposed ? DZ : DX;
    for (int n = 0; n < b; n++)
        for (int o = 0; o < n_out; o++) {
            float s = 0;
            for (int i = 0; i < n_in; i++) s += (transposed ? AEM[i * DZ + o] : AEM[o * DZ + i]) * in[n * n_in + i];
            out[n * n_out + o] = scale * s;
        }
}
static stsl_status t_enc(stsl_autoencoder *ae, const float *x, float *z, int b, char *err)
{
    (void)ae, (void)err;
    mul(x, z, b, 0.5f, 1);
    return STSL_OK;
}
static stsl_status t_dec(stsl_autoencoder *ae, const float *z, float *x, int b, char *err)
{
    (void)ae, (void)err;
    mul(z, x, b, 1.0f, 0);
    return STSL_OK;
}
static stsl_status t_vjp(stsl_autoencoder *ae, const float *z, const float *u, float *x, float *o,
                         int b, char *err)
{
    if (x) t_dec(ae, z, x, b, err);
    mul(u, o, b, 1.0f, 1);
    return STSL_OK;
}
static void t_destroy(stsl_autoencoder *ae) { (void)ae; }
/* no kept evaluations: exercises the two-pass decoder path */
static const stsl__ae_ops t_ops = {"test-linear", t_enc, t_dec, t_vjp, t_destroy, NULL, NULL, NULL,
                                   NULL};
/* the same with an encoder VJP: J_E^T v = M v / 2 (PSLD's gluing term goes through it) */
static stsl_status t_enc_vjp(stsl_autoencoder *ae, const float *x, const float *v, float *o, int b,
                             char *err)
{
    (void)ae, (void)x, (void)err;
    mul(v, o, b, 0.5f, 0);
    return STSL_OK;
}
static const stsl__ae_ops t_ops_evjp = {"test-linear-evjp", t_enc, t_dec, t_vjp, t_destroy,
                                        NULL,  NULL,  NULL,  t_enc_vjp};

static void test_nfe_latent(void)
{
    setup();
    stsl_autoencoder *ae = NULL;
    TU_ASSERT_OK(stsl__ae_new(ctx, &t_ops, (stsl_shape){1, 1, DX}, (stsl_shape){1, 1, DZ}, 1.0, &ae));
    stsl_score *lat = NULL;
    double w[2] = {1, 1}, mu[2 * DZ] = {1, 0, -1, -1, 0.5f, 1}, var[2] = {0.5, 0.5};
    TU_ASSERT_OK(stsl_score_create_gmm(ctx, (stsl_shape){1, 1, DZ}, 2, w, mu, var, 0, sched, &lat));
    const int B = 2, T = 4, K = 2, N = 2;
    stsl_solver *s = make("stsl", T);
    stsl_solver_set_int(s, STSL_PARAM_INNER_STEPS, K);
    stsl_solver_set_int(s, STSL_PARAM_INIT, STSL_INIT_PREDICTED_NOISE);
    /* encoder 1 (line 1); decoder: T K forwards + T K VJPs (line 10: this test autoencoder
     * cannot keep an evaluation) + 1 forward (line 16) */
    check_nfe(s, lat, ae, B,
              (expect){(uint64_t)(T + T) * B, (uint64_t)T * K * (1 + N) * B,
                       (uint64_t)(T * K + 1) * B, (uint64_t)T * K * B, (uint64_t)B, 0},
              "stsl latent");
    /* a latent prior defaults to the flat rule (no covariance step, the NFEs above); asked for
     * explicitly, the covariance step is refused with a message, not run without its products */
    TU_ASSERT_OK(stsl_solver_set_int(s, STSL_PARAM_LIKELIHOOD_VARIANCE, STSL_LIKVAR_TWEEDIE));
    {
        float x[3 * DX];
        CU_ASSERT_EQUAL(stsl_solver_run(s, lat, op, ae, Y, x, B), STSL_ERR_UNSUPPORTED);
        CU_ASSERT(strstr(stsl_solver_last_error(s), "tweedie") != NULL);
    }
    stsl_solver_destroy(s);
    s = make("dps", T);
    check_nfe(s, lat, ae, B, (expect){0, (uint64_t)T * B, (uint64_t)(T + 1) * B, (uint64_t)T * B, 0, 0},
              "dps latent");
    stsl_solver_destroy(s);
    /* dps-mo, N 2: 1 + N UNet VJPs per level; grad l through the decoder at x0 and at each of the
     * 1 + N probes: 2 + N decoder VJPs per level, each a forward + a VJP with this test autoencoder
     * (it cannot keep an evaluation), + 1 decoder forward for the output.  A latent prior's
     * default is one denoiser pass (solver_params.c) */
    s = make("dps-mo", T);
    stsl_solver_set_int(s, STSL_PARAM_INNER_STEPS, 2);
    check_nfe(s, lat, ae, B,
              (expect){0, (uint64_t)T * 3 * B, (uint64_t)(T * 4 + 1) * B, (uint64_t)T * 4 * B, 0, 0},
              "dps-mo latent");
    stsl_solver_destroy(s);
    /* psld: + 1 encoder forward per step for the gluing term */
    s = make("psld", T);
    check_nfe(s, lat, ae, B,
              (expect){0, (uint64_t)T * B, (uint64_t)(T + 1) * B, (uint64_t)T * B, (uint64_t)T * B, 0},
              "psld latent");
    stsl_solver_destroy(s);
    /* psld with an encoder VJP: the gluing term goes through E (the reference's autograd):
     * + 1 encoder VJP (counted as an encoder forward) and + 1 decoder VJP per step, and the
     * restoration differs from the stop-gradient one */
    {
        stsl_autoencoder *ae2 = NULL;
        TU_ASSERT_OK(stsl__ae_new(ctx, &t_ops_evjp, (stsl_shape){1, 1, DX}, (stsl_shape){1, 1, DZ}, 1.0, &ae2));
        s = make("psld", T);
        check_nfe(s, lat, ae2, B,
                  (expect){0, (uint64_t)T * B, (uint64_t)(T + 1) * B, (uint64_t)2 * T * B,
                           (uint64_t)2 * T * B, 0},
                  "psld latent, encoder VJP");
        float y[2 * DX], xa[2 * DX], xb[2 * DX];
        for (int i = 0; i < 2 * DX; i++) y[i] = (float)(0.3 * ((i % 3) - 1));
        stsl_operator *op = NULL;
        /* inpainting: I - A^T A != 0, so the glued image depends on D(z0hat) */
        TU_ASSERT_OK(stsl_operator_create_by_name(ctx, "random-inpaint", (stsl_shape){1, 1, DX}, &op));
        if (op) TU_ASSERT_OK(stsl_operator_set_float(op, STSL_PARAM_DROP_RATE, 0.5));
        stsl_shape ys = {0, 0, 0};
        if (op) TU_ASSERT_OK(stsl_operator_output_shape(op, &ys));
        CU_ASSERT(ys.channels * ys.height * ys.width == DX);
        stsl_solver *s1 = make("psld", T);
        stsl_solver_set_float(s1, STSL_PARAM_GAMMA, 1.0);
        stsl_solver_set_float(s, STSL_PARAM_GAMMA, 1.0);
        if (op) {
            TU_ASSERT_OK(stsl_solver_run(s, lat, op, ae2, y, xa, 2));
            TU_ASSERT_OK(stsl_solver_run(s1, lat, op, ae, y, xb, 2));
            CU_ASSERT(memcmp(xa, xb, sizeof xa) != 0);
        }
        stsl_operator_destroy(op);
        stsl_solver_destroy(s1);
        stsl_solver_destroy(s);
        stsl_autoencoder_destroy(ae2);
    }
    s = make("ddim", T);
    check_nfe(s, lat, ae, B, (expect){(uint64_t)T * B, 0, (uint64_t)B, 0, 0, 0}, "ddim latent");
    stsl_solver_destroy(s);
    stsl_score_destroy(lat);
    stsl_autoencoder_destroy(ae);
}

/* ---- one pass ---- */

/* The kept evaluation (eps now, its VJP later) and the two-pass path (forward now, full VJP
 * later: what a batch over STSL_PARAM_BATCH_LIMIT takes) give bit-identical restorations: the
 * mixture evaluates every sample on its own, so only a wrong kept point could differ. */
static void test_one_pass_equals_two_passes(void)
{
    setup();
    for (int i = 0; i < 8; i++) {
        stsl_solver *s = make(ALL[i], 6);
        stsl_solver_set_int(s, STSL_PARAM_SEED, 5);
        float a[3 * DX], b[3 * DX];
        TU_ASSERT_OK(stsl_solver_run(s, gmm, op, NULL, Y, a, 3));
        TU_ASSERT_OK(stsl_solver_set_int(s, STSL_PARAM_BATCH_LIMIT, 1));
        TU_ASSERT_OK(stsl_solver_run(s, gmm, op, NULL, Y, b, 3));
        if (memcmp(a, b, sizeof a) != 0) fprintf(stderr, "\n  %s: one pass != two passes\n", ALL[i]);
        CU_ASSERT(memcmp(a, b, sizeof a) == 0);
        stsl_solver_destroy(s);
    }
}

/* ---- determinism and batches ---- */

static void test_determinism_and_batch(void)
{
    setup();
    for (int i = 0; i < 8; i++) {
        stsl_solver *s = make(ALL[i], 8);
        if (i == 0) stsl_solver_set_float(s, STSL_PARAM_ETA, 1.0);   /* stochastic DDIM */
        stsl_solver_set_int(s, STSL_PARAM_SEED, 77);
        float a[3 * DX], b[3 * DX], c[3 * DX];
        TU_ASSERT_OK(stsl_solver_run(s, gmm, op, NULL, Y, a, 3));
        TU_ASSERT_OK(stsl_solver_run(s, gmm, op, NULL, Y, b, 3));
        CU_ASSERT(memcmp(a, b, sizeof a) == 0);                       /* same seed: bit-identical */
        for (int k = 0; k < 3; k++) {                                  /* batch == singles */
            stsl_solver_set_int(s, STSL_PARAM_SEED, 77 + k);
            TU_ASSERT_OK(stsl_solver_run(s, gmm, op, NULL, Y + k * DY, c + k * DX, 1));
        }
        if (memcmp(a, c, sizeof a) != 0) fprintf(stderr, "\n  %s: batch != singles\n", ALL[i]);
        CU_ASSERT(memcmp(a, c, sizeof a) == 0);
        /* another seed changes stochastic solvers (rmp is deterministic; so is stsl-biased with
         * the predicted-noise initialisation: eta = 0 leaves no probes) */
        if (i != 5 && i != 6) {
            stsl_solver_set_int(s, STSL_PARAM_SEED, 78);
            TU_ASSERT_OK(stsl_solver_run(s, gmm, op, NULL, Y, b, 3));
            CU_ASSERT(memcmp(a, b, sizeof a) != 0);
        }
        /* thread count does not change results */
        stsl_context_set_threads(ctx, 2);
        stsl_solver_set_int(s, STSL_PARAM_SEED, 77);
        TU_ASSERT_OK(stsl_solver_run(s, gmm, op, NULL, Y, b, 3));
        CU_ASSERT(memcmp(a, b, sizeof a) == 0);
        stsl_context_set_threads(ctx, 1);
        stsl_solver_destroy(s);
    }
}

/* ---- cancel ---- */

typedef struct cancel_state {
    stsl_solver *s;
    int at, steps, total, use_cancel, had_x0;
    uint64_t calls_at_cancel;
} cancel_state;

static int cancel_cb(void *user, int step, int total, const float *x0, int batch)
{
    (void)batch;
    cancel_state *c = (cancel_state *)user;
    c->steps++;
    c->total = total;
    if (x0) c->had_x0 = 1;
    if (step == c->at) {
        stsl_nfe n;
        get_nfe(c->s, &n);
        c->calls_at_cancel = n.unet_calls + n.decoder_forward + n.decoder_vjp + n.encoder_forward;
        if (c->use_cancel) {
            stsl_solver_cancel(c->s);
            return 0;
        }
        return 1;
    }
    return 0;
}

static void test_cancel(void)
{
    setup();
    for (int i = 0; i < 8; i++)
        for (int mode = 0; mode < 2; mode++) {
            stsl_solver *s = make(ALL[i], 10);
            cancel_state c = {s, 3, 0, 0, mode, 0, 0};
            stsl_solver_set_progress(s, cancel_cb, &c);
            stsl_solver_set_int(s, STSL_PARAM_PROGRESS_ESTIMATE, 1);
            float x[2 * DX];
            for (int k = 0; k < 2 * DX; k++) x[k] = NAN;
            TU_ASSERT_STATUS(stsl_solver_run(s, gmm, op, NULL, Y, x, 2), STSL_CANCELLED);
            CU_ASSERT(c.steps == 3);
            CU_ASSERT(c.had_x0 == 1);
            stsl_nfe n;
            get_nfe(s, &n);
            uint64_t after = n.unet_calls + n.decoder_forward + n.decoder_vjp + n.encoder_forward;
            CU_ASSERT(after - c.calls_at_cancel <= 1);     /* within one network evaluation */
            for (int k = 0; k < 2 * DX; k++) CU_ASSERT(isfinite(x[k]));  /* the current estimate */
            CU_ASSERT(strstr(stsl_solver_last_error(s), "cancel") != NULL);
            /* the next run is not cancelled */
            stsl_solver_set_progress(s, NULL, NULL);
            TU_ASSERT_OK(stsl_solver_run(s, gmm, op, NULL, Y, x, 2));
            stsl_solver_destroy(s);
        }
}

/* ---- STSL_PARAM_PAD_BATCH P < batch: groups of P, each a run of its own ---- */

typedef struct group_progress {
    int calls, last, total, monotone, batch_max;
} group_progress;

static int group_cb(void *user, int step, int total, const float *x0, int batch)
{
    (void)x0;
    group_progress *g = (group_progress *)user;
    if (step != g->last + 1) g->monotone = 0;
    g->last = step, g->total = total, g->calls++;
    if (batch > g->batch_max) g->batch_max = batch;
    return 0;
}

/* issue 30: a batch of 3 with P = 1 (or 2) restores what the 3 single runs do, counts the same
 * NFEs, and reports one progress count 1..groups * steps across its groups */
static void test_pad_batch_groups(void)
{
    setup();
    for (int i = 0; i < 8; i++) {
        float one[3 * DX], grouped[3 * DX];
        stsl_solver *s = make(ALL[i], 6);
        uint64_t single_nfe = 0;
        for (int k = 0; k < 3; k++) {
            stsl_solver_set_int(s, STSL_PARAM_SEED, 40 + k);
            TU_ASSERT_OK(stsl_solver_run(s, gmm, op, NULL, Y + k * DY, one + k * DX, 1));
            stsl_nfe n;
            get_nfe(s, &n);
            single_nfe += n.unet_forward + n.unet_vjp;
        }
        for (int pad = 1; pad <= 2; pad++) {
            group_progress g = {0, 0, 0, 1, 0};
            stsl_solver_set_int(s, STSL_PARAM_SEED, 40);
            TU_ASSERT_OK(stsl_solver_set_int(s, STSL_PARAM_PAD_BATCH, pad));
            stsl_solver_set_progress(s, group_cb, &g);
            TU_ASSERT_OK(stsl_solver_run(s, gmm, op, NULL, Y, grouped, 3));
            CU_ASSERT(memcmp(one, grouped, sizeof one) == 0);
            stsl_nfe n;
            get_nfe(s, &n);
            /* STSL's lower-level covariance step runs for a whole group when one of its samples
             * takes it (the others' results are untouched): a group may spend more */
            if (strcmp(ALL[i], "stsl") == 0) {
                CU_ASSERT(n.unet_forward + n.unet_vjp >= single_nfe);
            } else {
                CU_ASSERT_EQUAL(n.unet_forward + n.unet_vjp, single_nfe);
            }
            const int groups = pad == 1 ? 3 : 2;
            CU_ASSERT(g.monotone);
            CU_ASSERT_EQUAL(g.calls, g.total);
            CU_ASSERT_EQUAL(g.last, g.total);
            CU_ASSERT_EQUAL(g.total % groups, 0);
            CU_ASSERT_EQUAL(g.batch_max, pad);
            stsl_solver_set_progress(s, NULL, NULL);
        }
        stsl_solver_destroy(s);
    }
}

/* ---- NaN injected through a custom score ---- */

typedef struct nan_user {
    stsl_score *real;
    int calls, nan_at;
} nan_user;

static int nan_eps(void *user, const float *x, const float *t, float *eps, int batch)
{
    nan_user *u = (nan_user *)user;
    if (stsl_score_eps(u->real, x, t, eps, batch) != STSL_OK) return 1;
    if (++u->calls == u->nan_at) eps[0] = NAN;
    return 0;
}
static int nan_vjp(void *user, const float *x, const float *t, const float *v, float *eps,
                   float *vjp, int batch)
{
    nan_user *u = (nan_user *)user;
    return stsl_score_eps_vjp(u->real, x, t, v, eps, vjp, batch) == STSL_OK ? 0 : 1;
}

static void test_nan_step(void)
{
    setup();
    nan_user u = {gmm, 0, 4};
    stsl_score_vtable vt = {sizeof vt, nan_eps, nan_vjp, NULL};
    stsl_score *cs = NULL;
    TU_ASSERT_OK(stsl_score_create_custom(ctx, (stsl_shape){1, 1, DX}, &vt, &u, sched, &cs));
    /* DDIM and DPS make one forward call per step: the 4th call is step 4 */
    const char *names[] = {"ddim", "dps", "psld"};
    for (int i = 0; i < 3; i++) {
        stsl_solver *s = make(names[i], 10);
        u.calls = 0;
        float x[DX];
        TU_ASSERT_STATUS(stsl_solver_run(s, cs, op, NULL, Y, x, 1), STSL_ERR_NUMERIC);
        CU_ASSERT(stsl_solver_failed_step(s) == 4);
        CU_ASSERT(strlen(stsl_solver_last_error(s)) > 0);
        u.calls = -1000;   /* no NaN: the next run succeeds and clears the failed step */
        TU_ASSERT_OK(stsl_solver_run(s, cs, op, NULL, Y, x, 1));
        CU_ASSERT(stsl_solver_failed_step(s) == -1);
        stsl_solver_destroy(s);
    }
    /* STSL with fresh init: per step 1 forward per pass (K = 1) + 1 forward (line 13):
     * call 4 is step 2 */
    stsl_solver *s = make("stsl", 10);
    stsl_solver_set_int(s, STSL_PARAM_INNER_STEPS, 1);
    stsl_solver_set_int(s, STSL_PARAM_INIT, STSL_INIT_FRESH_NOISE);
    u.calls = 0;
    float x[DX];
    TU_ASSERT_STATUS(stsl_solver_run(s, cs, op, NULL, Y, x, 1), STSL_ERR_NUMERIC);
    CU_ASSERT(stsl_solver_failed_step(s) == 2);
    stsl_solver_destroy(s);
    stsl_score_destroy(cs);
}

/* every STSL switch runs and gives finite output; kappa pulls Z toward the forward latents */
static void test_stsl_options(void)
{
    setup();
    struct { stsl_param k; int64_t v; } opts[] = {
        {STSL_PARAM_INIT, STSL_INIT_FRESH_NOISE}, {STSL_PARAM_INIT, STSL_INIT_DDIM_INVERSION},
        {STSL_PARAM_INIT, STSL_INIT_PRIOR}, {STSL_PARAM_SQUARED_LOSS, 0},
        {STSL_PARAM_ADAM_PERSIST, 1}, {STSL_PARAM_INNER_INCLUSIVE, 1},
        {STSL_PARAM_VARIANT, STSL_VARIANT_STSL_SCORE_PLUS}};
    float ref[2 * DX], x[2 * DX];
    stsl_solver *s = make("stsl", 6);
    stsl_solver_set_int(s, STSL_PARAM_INIT, STSL_INIT_FRESH_NOISE);
    TU_ASSERT_OK(stsl_solver_run(s, gmm, op, NULL, Y, ref, 2));
    stsl_solver_destroy(s);
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        s = make("stsl", 6);
        TU_ASSERT_OK(stsl_solver_set_int(s, opts[i].k, opts[i].v));
        TU_ASSERT_OK(stsl_solver_run(s, gmm, op, NULL, Y, x, 2));
        for (int k = 0; k < 2 * DX; k++) CU_ASSERT(isfinite(x[k]));
        stsl_solver_destroy(s);
    }
    s = make("stsl", 6);
    stsl_solver_set_int(s, STSL_PARAM_INIT, STSL_INIT_FRESH_NOISE);
    TU_ASSERT_OK(stsl_solver_set_float(s, STSL_PARAM_KAPPA, 10.0));
    TU_ASSERT_OK(stsl_solver_run(s, gmm, op, NULL, Y, x, 2));
    CU_ASSERT(memcmp(x, ref, sizeof x) != 0);
    for (int k = 0; k < 2 * DX; k++) CU_ASSERT(isfinite(x[k]));
    stsl_solver_destroy(s);
    /* DPS on a real inpainting operator (zeta default 0.5 from the operator kind) */
    stsl_operator *inp = NULL;
    TU_ASSERT_OK(stsl_operator_create_by_name(ctx, "random-inpaint", (stsl_shape){1, 2, 2}, &inp));
    s = make("dps", 5);
    float yy[4] = {0.1f, 0.2f, 0.3f, 0.4f}, xx[4];
    stsl_shape ys;
    TU_ASSERT_OK(stsl_operator_output_shape(inp, &ys));
    CU_ASSERT(ys.channels * ys.height * ys.width <= 4);
    stsl_score *g22 = NULL;
    double w[1] = {1}, mu[4] = {0.1, -0.2, 0.3, 0}, var[1] = {0.3};
    TU_ASSERT_OK(stsl_score_create_gmm(ctx, (stsl_shape){1, 2, 2}, 1, w, mu, var, 0, sched, &g22));
    TU_ASSERT_OK(stsl_solver_run(s, g22, inp, NULL, yy, xx, 1));
    for (int k = 0; k < 4; k++) CU_ASSERT(isfinite(xx[k]));
    stsl_score_destroy(g22);
    stsl_solver_destroy(s);
    stsl_operator_destroy(inp);
}

int main(void)
{
    static const stsl_test tests[] = {
        {"names and parameters", test_names_and_params},
        {"run validation", test_run_validation},
        {"NFE formulas (pixel space)", test_nfe_pixel},
        {"NFE formulas (latent autoencoder)", test_nfe_latent},
        {"one pass (kept evaluation) == two passes, bit for bit", test_one_pass_equals_two_passes},
        {"determinism, batch == singles, threads", test_determinism_and_batch},
        {"cancel within one evaluation", test_cancel},
        {"PAD_BATCH < batch: groups of runs, one progress count", test_pad_batch_groups},
        {"NaN -> STSL_ERR_NUMERIC with the step", test_nan_step},
        {"stsl switches", test_stsl_options},
        {NULL, NULL}};
    int rc = stsl_test_main("solvers-api", tests);
    stsl_operator_destroy(op);
    stsl_score_destroy(gmm);
    stsl_schedule_destroy(sched);
    stsl_context_destroy(ctx);
    return rc;
}
