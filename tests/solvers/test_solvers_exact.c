/*
 * test_solvers_exact.c -- every solver against the exact posterior of the GMM testbed
 * (tests/support/testbed.h; settings per solver: stsl__testbed_configure, docs/algorithms.md).
 *
 * 1. MCGdiff problem, d_x = 8, d_y = 2 (seed 2), N_SAMPLES solver samples vs as many exact ones,
 *    sliced Wasserstein distance SW (256 projections).  References: SW(prior) and SW(ddim), the
 *    sampler that ignores y.  Documented tolerances (measured values in docs/algorithms.md):
 *      dps                          SW <= 0.30 SW(ddim)    (close to the posterior)
 *      stsl (fresh-noise init)      SW <= 0.45 SW(ddim)
 *      dps-mo                       SW <= 0.15 SW(ddim)
 *      ldps, psld                   SW <= 0.80 SW(ddim)    (use y, but do NOT sample the posterior)
 *      stsl-biased                  SW <= 0.40 SW(ddim)    (0.82 with the literal Adam lr 1e-2:
 *                                                           one update of ~lr per reverse step)
 *      rmp (VP; a posterior-MEAN estimator): ||mu_rmp - E[x|y]|| / sqrt(d) <= 0.35 * that of the
 *        prior mean, and <= RMP_ABS_TOL.
 *    and every solver: SW < SW(prior).
 * 3. RMP's posterior mean with the library's defaults on fresh MCG instances (d_x 18-30, d_y 2-8,
 *    each posterior with one component of weight >= 0.98): relative error
 *    ||mu_rmp - E[x|y]|| / ||E[x|y]|| <= RMP_REL_TOL on each.  The flat-prior variance (issue 28)
 *    misses every one (34 %, 87 %, 97 %, 157 %, 90 %: it commits to a mode of posterior weight
 *    <= 0.013 or stops short); the full Tweedie covariance is within 1.3 % (416 needs the guard
 *    without an upper bound, rmp.c cov_vjp_guarded).
 * 2. Image-shaped GMM (1x8x8, 4 components, var 0.02) under the library's gaussian-blur, sr2 and
 *    random-inpaint operators with Gaussian noise sigma_y = 0.05: dps and stsl SW <= 0.5 SW(prior);
 *    rmp mean error <= 0.5 prior mean error (sr2 included since issue 28).
 * 4. STSL's defaults on an ill-conditioned MCG instance (d_x 16, d_y 15, seed 2896, sigma_y 1e-3
 *    of ||A||): SW <= 1.5x the exact floor (a second exact set); 3.4x before the lower levels'
 *    covariance step.
 */
#include "common/testutil.h"
#include "support/testbed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define N_SAMPLES 250
#define RMP_REL_TOL 0.05
#define RMP_ABS_TOL 1.0
/* stsl-biased with the scaled step and DDPM line 14 (0.82 of SW(ddim) with Adam lr 1e-2) */
#define STSL_BIASED_TOL 0.40
/* stsl's defaults vs the literal reading at d_x 80, d_y 2 (test_stsl_defaults; measured 0.67 vs
 * 1.00, dps-1000 0.16 on this instance) */
#define STSL_DEFAULT_VS_LITERAL 0.8

static stsl_context *ctx;
static stsl_schedule *sched;
static int verbose;

static void setup(void)
{
    if (ctx) return;
    stsl_context_create(&ctx);
    stsl_schedule_create(ctx, STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 1000, &sched);
    verbose = getenv("STSL_TEST_VERBOSE") != NULL;
}

/* runs `name` (with optional int param) on the testbed, returns SW and mean error; with
 * `library_defaults` the solver keeps its own defaults instead of the testbed's likelihood-consistent
 * weights (what a user who sets nothing gets) */
/* A testbed (exact posterior) with its score and operator, on the suite's context and schedule. */
typedef struct problem {
    stsl__testbed *tb;
    stsl_score *score;
    stsl_operator *op;
} problem;

typedef struct kv {
    stsl_param key;
    double val;   /* set as an int when the key is an integer key */
} kv;

static int run_kv(const problem *P, const char *name, int library_defaults, const kv *kvs, int nkv,
                  const float *exact, double *sw, double *merr)
{
    const stsl__testbed *tb = P->tb;
    stsl_solver *s = NULL;
    TU_ASSERT_OK(stsl_solver_create_by_name(ctx, name, &s));
    if (!s) return -1;
    if (!library_defaults) TU_ASSERT_OK(stsl__testbed_configure(tb, s));
    for (int i = 0; i < nkv; i++) {
        stsl_param_bounds b;
        TU_ASSERT_OK(stsl_solver_param_bounds(stsl_solver_get_kind(s), kvs[i].key, &b));
        if (b.is_integer)
            TU_ASSERT_OK(stsl_solver_set_int(s, kvs[i].key, (int64_t)kvs[i].val));
        else
            TU_ASSERT_OK(stsl_solver_set_float(s, kvs[i].key, kvs[i].val));
    }
    stsl_solver_set_int(s, STSL_PARAM_SEED, 1234);
    stsl_solver_set_int(s, STSL_PARAM_BATCH_LIMIT, 4096);
    float *y = malloc(N_SAMPLES * tb->dy * sizeof(float)), *x = malloc(N_SAMPLES * tb->dx * sizeof(float));
    for (int i = 0; i < N_SAMPLES; i++) stsl__testbed_y(tb, y + i * tb->dy);
    stsl_status st = stsl_solver_run(s, P->score, P->op, NULL, y, x, N_SAMPLES);
    TU_ASSERT_OK(st);
    *sw = stsl__sliced_wasserstein(exact, x, N_SAMPLES, tb->dx, 256, 99);
    double e = 0;
    for (size_t d = 0; d < tb->dx; d++) {
        double m = 0;
        for (int i = 0; i < N_SAMPLES; i++) m += x[i * tb->dx + d];
        m /= N_SAMPLES;
        e += (m - tb->pmean[d]) * (m - tb->pmean[d]);
    }
    *merr = sqrt(e / tb->dx);
    free(y);
    free(x);
    stsl_solver_destroy(s);
    return st == STSL_OK ? 0 : -1;
}

static int run_as(const problem *P, const char *name, int library_defaults, stsl_param key, int64_t val,
                  const float *exact, double *sw, double *merr)
{
    const kv one = {key, (double)val};
    return run_kv(P, name, library_defaults, &one, key ? 1 : 0, exact, sw, merr);
}

static int run(const problem *P, const char *name, stsl_param key, int64_t val, const float *exact,
               double *sw, double *merr)
{
    return run_as(P, name, 0, key, val, exact, sw, merr);
}

static double prior_mean_err(const stsl__testbed *tb)
{
    double e = 0;
    for (size_t d = 0; d < tb->dx; d++) {
        double m = 0;
        for (int k = 0; k < tb->k; k++) m += tb->w[k] * tb->mu[k * tb->dx + d];
        e += (m - tb->pmean[d]) * (m - tb->pmean[d]);
    }
    return sqrt(e / tb->dx);
}

static void problem_close(problem *m)
{
    stsl_operator_destroy(m->op);
    stsl_score_destroy(m->score);
    stsl__testbed_destroy(m->tb);
}

/* 0 when all three are there; else -1, with what was made destroyed (and the failures asserted) */
static int mcg_open(int dx, int dy, uint64_t seed, problem *m)
{
    char err[STSL_TESTBED_ERR_SIZE];
    setup();
    *m = (problem){NULL, NULL, NULL};
    TU_ASSERT_OK(stsl__testbed_mcg(dx, dy, seed, &m->tb, err));
    if (m->tb) TU_ASSERT_OK(stsl__testbed_score(m->tb, ctx, sched, &m->score, err));
    if (m->score) TU_ASSERT_OK(stsl__testbed_operator(m->tb, ctx, &m->op, err));
    if (m->op) return 0;
    problem_close(m);
    return -1;
}

static void test_mcg(void)
{
    problem P;
    if (mcg_open(8, 2, 2, &P) != 0) return;
    float *ex = malloc(N_SAMPLES * 8 * sizeof(float)), *pr = malloc(N_SAMPLES * 8 * sizeof(float));
    TU_ASSERT_OK(stsl__testbed_sample_posterior(P.tb, N_SAMPLES, 5, ex));
    stsl__testbed_sample_prior(P.tb, N_SAMPLES, 6, pr);
    double sw_prior = stsl__sliced_wasserstein(ex, pr, N_SAMPLES, 8, 256, 99);
    double sw_ddim, me, sw, pme = prior_mean_err(P.tb);
    run(&P, "ddim", 0, 0, ex, &sw_ddim, &me);
    if (verbose) printf("\n  prior SW %.3f  ddim SW %.3f  prior mean err %.3f\n", sw_prior, sw_ddim, pme);
    CU_ASSERT(sw_ddim > 0.5 * sw_prior);   /* sanity: ignoring y is far from the posterior */
    struct { const char *name; stsl_param key; int64_t val; double tol; } cases[] = {
        {"dps", 0, 0, 0.30},
        {"stsl", 0, 0, 0.45},
        {"ldps", 0, 0, 0.80},
        {"psld", 0, 0, 0.80},
        {"stsl-biased", 0, 0, STSL_BIASED_TOL},
        {"dps-mo", 0, 0, 0.15}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (run(&P, cases[i].name, cases[i].key, cases[i].val, ex, &sw, &me) != 0) continue;
        if (verbose) printf("  %-12s SW %.3f (%.2f of ddim)  mean err %.3f\n", cases[i].name, sw, sw / sw_ddim, me);
        if (!(sw <= cases[i].tol * sw_ddim))
            fprintf(stderr, "\n  %s: SW %.3f > %.2f * SW(ddim) %.3f\n", cases[i].name, sw, cases[i].tol, sw_ddim);
        CU_ASSERT(sw <= cases[i].tol * sw_ddim);
        CU_ASSERT(sw < sw_prior);
    }
    /* rmp: the posterior mean */
    if (run(&P, "rmp", 0, 0, ex, &sw, &me) == 0) {
        if (verbose) printf("  rmp          mean err %.3f (prior mean err %.3f)\n", me, pme);
        CU_ASSERT(me <= 0.35 * pme);
        CU_ASSERT(me <= RMP_ABS_TOL);
    }
    free(ex);
    free(pr);
    problem_close(&P);
}

/* STSL's defaults (scaled Polyak step, DDPM noise at line 14) against the literal reading (Adam
 * lr 1e-2 reset at every step, noise-free line 14) on the MCG instance: the defaults must beat
 * it (Adam moves every coordinate by ~lr per update, whatever lambda, and the noise-free line 14
 * makes it a point estimator).  DPS-1000 is printed for reference: it is better on this instance. */
static void test_stsl_defaults(void)
{
    problem P;
    if (mcg_open(80, 2, 2, &P) != 0) return;
    const int n = N_SAMPLES;
    float *ex = malloc((size_t)n * 80 * sizeof(float));
    TU_ASSERT_OK(stsl__testbed_sample_posterior(P.tb, n, 5, ex));
    const kv literal[] = {{STSL_PARAM_STEP_RULE, STSL_STEP_ADAM}, {STSL_PARAM_STEP_NOISE, 0.0},
                          {STSL_PARAM_ETA, 0.0}};
    const kv dflt[] = {{STSL_PARAM_ETA, 0.0}};   /* eta changes nothing here; 1/3 of the VJPs */
    double sw_new = 1e9, sw_old = 0, sw_dps = 0, me;
    run_kv(&P, "stsl", 0, dflt, 1, ex, &sw_new, &me);
    run_kv(&P, "stsl", 0, literal, 3, ex, &sw_old, &me);
    run(&P, "dps", 0, 0, ex, &sw_dps, &me);
    if (verbose)
        printf("\n  d_x 80 d_y 2: stsl defaults SW %.3f, literal (Adam, no noise) %.3f, dps %.3f\n",
               sw_new, sw_old, sw_dps);
    CU_ASSERT(sw_new <= STSL_DEFAULT_VS_LITERAL * sw_old);
    free(ex);
    problem_close(&P);
}

/* An ill-conditioned instance (GMM 16/15/2896: sigma_y at the testbed's floor, 1e-3 of A's top
 * singular value): the lower levels' Polyak steps, first-order, left the data term 3e3-2e5 times
 * its noise level on every lower level; the lower levels' covariance step for such samples
 * (stsl.c, COV_LOW_EXCESS) mends it.  Here (250 samples, seed 1234): SW 0.119 -> 0.042 against
 * the exact floor 0.035 (a second exact set), mean error 0.108 -> 0.010; DPS 0.024 (below the
 * floor: under-dispersed), so the bound is on the floor. */
#define STSL_ILL_VS_FLOOR 1.5
static void test_stsl_ill_conditioned(void)
{
    problem P;
    if (mcg_open(16, 15, 2896, &P) != 0) return;
    const size_t dx = P.tb->dx;
    float *ex = malloc((size_t)N_SAMPLES * dx * sizeof(float)), *ex2 = malloc((size_t)N_SAMPLES * dx * sizeof(float));
    TU_ASSERT_OK(stsl__testbed_sample_posterior(P.tb, N_SAMPLES, 5, ex));
    TU_ASSERT_OK(stsl__testbed_sample_posterior(P.tb, N_SAMPLES, 7, ex2));
    const double sw_floor = stsl__sliced_wasserstein(ex, ex2, N_SAMPLES, dx, 256, 99);
    double sw = 1e9, me = 0;
    run(&P, "stsl", 0, 0, ex, &sw, &me);
    if (verbose) printf("\n  16/15/2896: stsl SW %.4f (exact floor %.4f), mean err %.4f\n", sw, sw_floor, me);
    CU_ASSERT(sw <= STSL_ILL_VS_FLOOR * sw_floor);
    free(ex);
    free(ex2);
    problem_close(&P);
}

/* The component whose centre (centres: tb->k * dx, the prior's or the posterior's means) is
 * nearest to x (dx floats); *d2 its squared distance. */
static int nearest_component(const stsl__testbed *tb, const double *centres, const float *x, double *d2)
{
    int best = 0;
    double bd = INFINITY;
    for (int c = 0; c < tb->k; c++) {
        double e = 0;
        for (size_t d = 0; d < tb->dx; d++) {
            const double u = x[d] - centres[(size_t)c * tb->dx + d];
            e += u * u;
        }
        if (e < bd) bd = e, best = c;
    }
    *d2 = bd;
    return best;
}

/* Spread and weights of samples x (n x d_x) against the testbed's PRIOR: each sample is assigned
 * to the nearest component mean (the means are >= 16 apart at d_x 8, the unit-variance components
 * overlap by < 1e-12); spread = sqrt(mean squared residual / var) (1 for exact draws), tv = the total
 * variation between the assigned fractions and the weights. */
static void prior_fit(const stsl__testbed *tb, const float *x, int n, double *spread, double *tv)
{
    double *cnt = calloc((size_t)tb->k, sizeof(double)), ss = 0;
    for (int i = 0; i < n; i++) {
        double bd;
        cnt[nearest_component(tb, tb->mu, x + (size_t)i * tb->dx, &bd)] += 1;
        ss += bd;
    }
    *spread = sqrt(ss / ((double)n * tb->dx) / tb->var);
    *tv = 0;
    for (int c = 0; c < tb->k; c++) *tv += 0.5 * fabs(cnt[c] / n - tb->w[c]);
    free(cnt);
}

/* DPS-MO with guidance and MO off (zeta 0, N 0) is its outer loop alone and must sample the prior
 * as DDIM does (issue 28: the re-noise/denoise of the MO step turned D(x) into D(D(x) + sigma xi),
 * spread 0.61, TV 0.27), on a d_x 8 prior and on d_x 20 and 40 ones, where ETA 0.5 on every level
 * (the default until 2026-12-07) under-dispersed (spread 0.945 / 0.941) and misplaced the weights
 * (TV 0.094 / 0.116); and, on the d_x 8 prior, at ETA 0 (the probability-flow ODE; at d_x 24-40
 * the ODE's top levels misplace the weights, TV 0.13-0.17).  PRIOR_N samples: the TV of PRIOR_N
 * exact draws over 25 components is about 0.04, the spread's standard error 0.005; bounds: spread
 * >= PRIOR_SPREAD_MIN, TV <= PRIOR_TV_MAX, checked on DDIM too (the reference sampler: 0.97-0.98 /
 * 0.04-0.09 at 50 steps on these three). */
#define PRIOR_N 2000
#define PRIOR_SPREAD_MIN 0.95
#define PRIOR_TV_MAX 0.10
static void test_dps_mo_prior(void)
{
    static const struct { int dx; uint64_t seed; int with_ode; } inst[] = {{8, 3, 1}, {20, 103, 0}, {40, 13, 0}};
    for (size_t q = 0; q < sizeof inst / sizeof inst[0]; q++) {
        problem P;
        if (mcg_open(inst[q].dx, 2, inst[q].seed, &P) != 0) return;
        float *y = malloc(PRIOR_N * P.tb->dy * sizeof(float)), *x = malloc(PRIOR_N * P.tb->dx * sizeof(float));
        for (int i = 0; i < PRIOR_N; i++) stsl__testbed_y(P.tb, y + i * P.tb->dy);
        const char *names[] = {"ddim", "dps-mo", "dps-mo eta 0"};
        for (int s = 0; s < (inst[q].with_ode ? 3 : 2); s++) {
            stsl_solver *sv = NULL;
            TU_ASSERT_OK(stsl_solver_create_by_name(ctx, s ? "dps-mo" : "ddim", &sv));
            if (!sv) continue;
            if (s >= 1) {
                TU_ASSERT_OK(stsl_solver_set_float(sv, STSL_PARAM_ZETA, 0.0));
                TU_ASSERT_OK(stsl_solver_set_int(sv, STSL_PARAM_INNER_STEPS, 0));
            }
            if (s == 2) TU_ASSERT_OK(stsl_solver_set_float(sv, STSL_PARAM_ETA, 0.0));
            stsl_solver_set_int(sv, STSL_PARAM_SEED, 77);
            stsl_solver_set_int(sv, STSL_PARAM_BATCH_LIMIT, 4096);
            TU_ASSERT_OK(stsl_solver_run(sv, P.score, P.op, NULL, y, x, PRIOR_N));
            double spread = 0, tv = 1;
            prior_fit(P.tb, x, PRIOR_N, &spread, &tv);
            if (verbose)
                printf("\n  d_x %d: %s, guidance off: within-component spread %.3f, weight TV %.3f", inst[q].dx,
                       names[s], spread, tv);
            if (!(spread >= PRIOR_SPREAD_MIN && tv <= PRIOR_TV_MAX))
                fprintf(stderr, "\n  d_x %d: %s with guidance off: spread %.3f (>= %.2f), TV %.3f (<= %.2f)\n",
                        inst[q].dx, names[s], spread, PRIOR_SPREAD_MIN, tv, PRIOR_TV_MAX);
            CU_ASSERT(spread >= PRIOR_SPREAD_MIN);
            CU_ASSERT(spread <= 1.0 / PRIOR_SPREAD_MIN);
            CU_ASSERT(tv <= PRIOR_TV_MAX);
            stsl_solver_destroy(sv);
        }
        free(y);
        free(x);
        problem_close(&P);
    }
}

/* Mode weights: the share of a solver's samples (library defaults; zeta >= 0 sets ZETA, likvar >= 0
 * LIKELIHOOD_VARIANCE) nearest to the posterior mean of a component the posterior gives (almost) no
 * weight, pw < MODE_PW_NEGLIGIBLE.  top_min > 0: the instance must be one whose heaviest component
 * has posterior weight > top_min.  MODE_MISS_MAX (6 of 200) lies between the rules that pass (at
 * most 3 of 200) and those that fail (17 of 200 and more), so that a different CPU's rounding moves
 * no verdict. */
#define MODE_N 200
#define MODE_MISS_MAX 0.03
#define MODE_PW_NEGLIGIBLE 0.01
static double mode_miss(const char *solver, double zeta, int likvar, double top_min, int dx, int dy,
                        uint64_t seed)
{
    problem P;
    double miss = 1;
    if (mcg_open(dx, dy, seed, &P) != 0) return miss;
    const stsl__testbed *tb = P.tb;
    if (top_min > 0) {
        int top = 0;
        for (int c = 1; c < tb->k; c++)
            if (tb->pw[c] > tb->pw[top]) top = c;
        CU_ASSERT(tb->pw[top] > top_min);
    }
    stsl_solver *sv = NULL;
    float *y = malloc(MODE_N * tb->dy * sizeof(float)), *x = malloc(MODE_N * tb->dx * sizeof(float));
    TU_ASSERT_OK(stsl_solver_create_by_name(ctx, solver, &sv));
    if (sv && y && x) {
        for (int i = 0; i < MODE_N; i++) stsl__testbed_y(tb, y + i * tb->dy);
        stsl_solver_set_int(sv, STSL_PARAM_BATCH_LIMIT, MODE_N);
        if (zeta >= 0) TU_ASSERT_OK(stsl_solver_set_float(sv, STSL_PARAM_ZETA, zeta));
        if (likvar >= 0) TU_ASSERT_OK(stsl_solver_set_int(sv, STSL_PARAM_LIKELIHOOD_VARIANCE, likvar));
        TU_ASSERT_OK(stsl_solver_run(sv, P.score, P.op, NULL, y, x, MODE_N));
        int wrong = 0;
        for (int i = 0; i < MODE_N; i++) {
            double d2;
            wrong += tb->pw[nearest_component(tb, tb->pm, x + (size_t)i * tb->dx, &d2)] < MODE_PW_NEGLIGIBLE;
        }
        miss = (double)wrong / MODE_N;
    }
    free(y);
    free(x);
    stsl_solver_destroy(sv);
    problem_close(&P);
    return miss;
}

static void check_modes(const char *solver, double top_min, const int (*inst)[3], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const double miss = mode_miss(solver, -1, -1, top_min, inst[i][0], inst[i][1], (uint64_t)inst[i][2]);
        if (verbose || !(miss <= MODE_MISS_MAX))
            fprintf(verbose ? stdout : stderr, "\n  %s d_x %d d_y %d seed %d: %.3f of the samples in components of posterior weight < %.2f",
                    solver, inst[i][0], inst[i][1], inst[i][2], miss, MODE_PW_NEGLIGIBLE);
        CU_ASSERT(miss <= MODE_MISS_MAX);
    }
}

/* DPS-MO on fresh MCG instances whose posterior is one component (weight > 0.999).  One
 * posterior-denoiser pass per level (the default before issue 28's second pass) put 3.5-4.5 % of
 * the samples nearest another component on each (the Tweedie Gaussian of eq. F mixes the
 * components at the middle levels, dps_mo.c); two passes: 0 of 200 on each. */
static void test_dps_mo_modes(void)
{
    static const int inst[][3] = {{36, 3, 5655}, {32, 3, 7598}, {35, 4, 3403}};
    check_modes("dps-mo", 0.999, inst, sizeof inst / sizeof inst[0]);
}

/* STSL (issue 28), the share of samples in components of posterior weight < 0.01 (this test's
 * samples, d_x/d_y/seed 8/1/2, 8/2/2, 8/4/2, 17/6/2068, 12/3/9542): the Polyak step alone (ZETA 0,
 * LIKELIHOOD_VARIANCE flat) 13.5, 8.5, 11.5, 28.5, 21.5 %; with the DPS pull on the upper levels'
 * first passes (flat) 1, 0, 0, 13.5, 8.5 %; the default on this pixel prior (TWEEDIE: the upper
 * levels' Tweedie-covariance likelihood step and the pull alone) 1.5, 0, 0, 0.5, 0.5 %. */
static void test_stsl_modes(void)
{
    static const int inst[][3] = {{8, 1, 2}, {8, 2, 2}, {8, 4, 2}, {17, 6, 2068}, {12, 3, 9542}};
    const size_t n = sizeof inst / sizeof inst[0];
    if (verbose)   /* the earlier rules, for the record */
        for (size_t i = 0; i < n; i++)
            printf("\n  stsl d_x %d d_y %d seed %d: Polyak alone %.3f, Polyak + first-pass pull %.3f",
                   inst[i][0], inst[i][1], inst[i][2],
                   mode_miss("stsl", 0, STSL_LIKVAR_FLAT, 0, inst[i][0], inst[i][1], (uint64_t)inst[i][2]),
                   mode_miss("stsl", -1, STSL_LIKVAR_FLAT, 0, inst[i][0], inst[i][1], (uint64_t)inst[i][2]));
    check_modes("stsl", 0, inst, n);
}

static void image_case(const char *opname)
{
    setup();
    char err[STSL_TESTBED_ERR_SIZE];
    stsl_shape sh = {1, 8, 8};
    problem P = {NULL, NULL, NULL};
    TU_ASSERT_OK(stsl_operator_create_by_name(ctx, opname, sh, &P.op));
    if (!P.op) return;
    TU_ASSERT_OK(stsl_operator_set_float(P.op, STSL_PARAM_NOISE_SIGMA, 0.05));
    TU_ASSERT_OK(stsl__testbed_image(P.op, sh, 4, 0.02, 3, &P.tb, err));
    if (!P.tb) {
        fprintf(stderr, "\n  %s\n", err);
        problem_close(&P);
        return;
    }
    TU_ASSERT_OK(stsl__testbed_score(P.tb, ctx, sched, &P.score, err));
    float *ex = malloc(N_SAMPLES * 64 * sizeof(float)), *pr = malloc(N_SAMPLES * 64 * sizeof(float));
    TU_ASSERT_OK(stsl__testbed_sample_posterior(P.tb, N_SAMPLES, 5, ex));
    stsl__testbed_sample_prior(P.tb, N_SAMPLES, 6, pr);
    double sw_prior = stsl__sliced_wasserstein(ex, pr, N_SAMPLES, 64, 256, 99);
    double sw, me, pme = prior_mean_err(P.tb), sw_ddim;
    run(&P, "ddim", 0, 0, ex, &sw_ddim, &me);
    if (verbose) printf("\n  %s: prior SW %.4f ddim SW %.4f prior mean err %.4f\n", opname, sw_prior, sw_ddim, pme);
    if (run(&P, "dps", 0, 0, ex, &sw, &me) == 0) {
        if (verbose) printf("  dps  SW %.4f mean err %.4f\n", sw, me);
        CU_ASSERT(sw <= 0.5 * sw_prior);
    }
    if (run(&P, "stsl", STSL_PARAM_INIT, STSL_INIT_FRESH_NOISE, ex, &sw, &me) == 0) {
        if (verbose) printf("  stsl SW %.4f mean err %.4f\n", sw, me);
        CU_ASSERT(sw <= 0.5 * sw_prior);
    }
    if (run(&P, "rmp", 0, 0, ex, &sw, &me) == 0) {
        if (verbose) printf("  rmp  SW %.4f mean err %.4f\n", sw, me);
        /* with the flat-prior variance (the default before issue 28) sr2 gave 0.46 against the
         * prior mean's 0.41: r_k^2 over-states Cov[x0 | x_k] of this tight prior (variance 0.02);
         * the Tweedie covariance gives 0.0035 */
        CU_ASSERT(me <= 0.5 * pme);
    }
    /* RMP on a coarse ladder: the damped likelihood step keeps the mean finite (the undamped
     * step overflowed at 20 steps on the image prior) */
    if (run_as(&P, "rmp", 0, STSL_PARAM_STEPS, 20, ex, &sw, &me) == 0) {
        if (verbose) printf("  rmp@20 SW %.4f mean err %.4f\n", sw, me);
        CU_ASSERT(isfinite(me));
    }
    /* DPS-MO as a user gets it (library defaults) */
    if (run_as(&P, "dps-mo", 1, 0, 0, ex, &sw, &me) == 0) {
        if (verbose) printf("  dps-mo (library defaults) SW %.4f mean err %.4f\n", sw, me);
        CU_ASSERT(sw <= 0.5 * sw_prior);
    }
    free(ex);
    free(pr);
    problem_close(&P);
}

static void test_image_blur(void) { image_case("gaussian-blur"); }
static void test_image_sr2(void) { image_case("sr2"); }
static void test_image_inpaint(void) { image_case("random-inpaint"); }

/* RMP is deterministic: two samples (equal) give its estimate; relative error to the exact mean */
static double rmp_rel_err(int dx, int dy, uint64_t seed, int64_t likvar)
{
    problem P;
    stsl_solver *s = NULL;
    double rel = INFINITY;
    if (mcg_open(dx, dy, seed, &P) != 0) return rel;
    TU_ASSERT_OK(stsl_solver_create_by_name(ctx, "rmp", &s));
    if (s && likvar >= 0) TU_ASSERT_OK(stsl_solver_set_int(s, STSL_PARAM_LIKELIHOOD_VARIANCE, likvar));
    float *y = malloc(2 * (size_t)dy * sizeof(float)), *x = malloc(2 * (size_t)dx * sizeof(float));
    if (s && y && x) {
        stsl__testbed_y(P.tb, y);
        stsl__testbed_y(P.tb, y + dy);
        if (stsl_solver_run(s, P.score, P.op, NULL, y, x, 2) == STSL_OK) {
            double e = 0, p = 0;
            for (int d = 0; d < dx; d++) {
                e += (x[d] - P.tb->pmean[d]) * (x[d] - P.tb->pmean[d]);
                p += P.tb->pmean[d] * P.tb->pmean[d];
            }
            rel = sqrt(e / p);
        }
    }
    free(y);
    free(x);
    stsl_solver_destroy(s);
    problem_close(&P);
    return rel;
}

static void test_rmp_fresh(void)
{
    setup();
    static const int inst[][3] = {{20, 5, 101}, {22, 8, 105}, {22, 4, 106}, {30, 2, 208}, {18, 5, 416}};
    for (size_t i = 0; i < sizeof inst / sizeof inst[0]; i++) {
        const double rel = rmp_rel_err(inst[i][0], inst[i][1], (uint64_t)inst[i][2], -1);
        if (verbose || !(rel <= RMP_REL_TOL)) {
            const double flat = rmp_rel_err(inst[i][0], inst[i][1], (uint64_t)inst[i][2], STSL_LIKVAR_FLAT);
            fprintf(verbose ? stdout : stderr, "\n  rmp d_x %d d_y %d seed %d: rel err %.4f (flat variance %.4f)",
                    inst[i][0], inst[i][1], inst[i][2], rel, flat);
        }
        CU_ASSERT(rel <= RMP_REL_TOL);
    }
}

static void test_testbed_self(void)
{
    /* the exact sampler against its own mean and the posterior formulas */
    setup();
    char err[STSL_TESTBED_ERR_SIZE];
    stsl__testbed *tb = NULL;
    TU_ASSERT_OK(stsl__testbed_mcg(6, 3, 11, &tb, err));
    if (!tb) return;
    double ws = 0;
    for (int k = 0; k < tb->k; k++) ws += tb->pw[k];
    CU_ASSERT(fabs(ws - 1) < 1e-9);
    /* A = U diag(s) V: A A^T has eigenvalues s^2 <= 1 and the rows of A are in a d_y-dim space */
    CU_ASSERT(tb->sigma_y > 0 && tb->sigma_y <= 1);
    const size_t n = 4000;
    float *x = malloc(n * 6 * sizeof(float)), *x2 = malloc(n * 6 * sizeof(float));
    TU_ASSERT_OK(stsl__testbed_sample_posterior(tb, n, 1, x));
    TU_ASSERT_OK(stsl__testbed_sample_posterior(tb, n, 1, x2));
    CU_ASSERT(memcmp(x, x2, n * 6 * sizeof(float)) == 0);   /* seeded */
    double e = 0;
    for (int d = 0; d < 6; d++) {
        double m = 0;
        for (size_t i = 0; i < n; i++) m += x[i * 6 + d];
        m /= n;
        e = fmax(e, fabs(m - tb->pmean[d]));
    }
    CU_ASSERT(e < 0.5);   /* MC error of 4000 draws of a mixture with spread <= ~16 */
    /* SW: 0 for identical sets, symmetric, grows with a shift */
    CU_ASSERT(stsl__sliced_wasserstein(x, x, n, 6, 32, 1) == 0);
    for (size_t i = 0; i < n * 6; i++) x2[i] = x[i] + 1.0f;
    double s1 = stsl__sliced_wasserstein(x, x2, n, 6, 64, 1), s2 = stsl__sliced_wasserstein(x2, x, n, 6, 64, 1);
    CU_ASSERT(fabs(s1 - s2) < 1e-9);
    /* a shift by (1,...,1) projects to N(0, 6/6)-weighted lengths: SW^2 = E[(u.1)^2] = 1 */
    CU_ASSERT(fabs(s1 - 1.0) < 0.25);
    free(x);
    free(x2);
    stsl__testbed_destroy(tb);
}

int main(void)
{
    static const stsl_test tests[] = {
        {"testbed: exact sampler and sliced Wasserstein", test_testbed_self},
        {"MCG GMM d_x 8 d_y 2: every solver vs the exact posterior", test_mcg},
        {"MCG GMM d_x 80 d_y 2: stsl defaults vs the literal reading and dps", test_stsl_defaults},
        {"MCG GMM d_x 16 d_y 15, sigma_y 1e-3 ||A||: stsl within 1.5x of the exact floor", test_stsl_ill_conditioned},
        {"MCG GMM priors d_x 8, 20, 40: dps-mo with guidance and MO off samples them as ddim does", test_dps_mo_prior},
        {"dps-mo defaults: samples in the posterior's component on fresh MCG instances", test_dps_mo_modes},
        {"stsl defaults: no samples in components of posterior weight ~0 (issue 28)", test_stsl_modes},
        {"rmp defaults: posterior mean within 5 % on fresh MCG instances", test_rmp_fresh},
        {"image GMM under gaussian-blur", test_image_blur},
        {"image GMM under sr2", test_image_sr2},
        {"image GMM under random-inpaint", test_image_inpaint},
        {NULL, NULL}};
    int rc = stsl_test_main("solvers-exact", tests);
    stsl_schedule_destroy(sched);
    stsl_context_destroy(ctx);
    return rc;
}
