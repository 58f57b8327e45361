/*
 * Thread contract (stsl.h): several solvers in parallel threads share one score handle and one
 * prepared operator; every result must be bit-identical to the serial run with the same seed.
 * A solver draws a step's noise on a thread of its own while the network runs (stsl__noise_ahead):
 * the same draws as in line, also under ThreadSanitizer.
 * `make check-tsan` builds this same file with ThreadSanitizer.
 */
#include "common/testutil.h"
#include "solvers/solver_internal.h"   /* stsl__noise_ahead */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define D 16
#define BATCH 2
#define NTHREADS 4

static const char *const solver_names[NTHREADS] = {"stsl", "dps", "ddim", "rmp"};

typedef struct job {
    stsl_score *score;
    stsl_operator *op;
    const char *solver;
    int seed;
    const float *y;
    float x[D * BATCH];
    stsl_status status;
} job;

static void *run_job(void *p)
{
    job *j = p;
    stsl_solver *s = NULL;
    j->status = stsl_solver_create_by_name(NULL, j->solver, &s);
    if (j->status == STSL_OK) j->status = stsl_solver_set_int(s, STSL_PARAM_STEPS, 10);
    if (j->status == STSL_OK) j->status = stsl_solver_set_int(s, STSL_PARAM_SEED, j->seed);
    if (j->status == STSL_OK) j->status = stsl_solver_run(s, j->score, j->op, NULL, j->y, j->x, BATCH);
    stsl_solver_destroy(s);
    return NULL;
}

/* A K-component Gaussian-mixture prior on `shape` (linear schedule) and the operator `op_name`
 * with measurement noise sigma, prepared. */
static void gmm_problem(stsl_shape shape, int K, const double *weights, const double *means,
                        const double *variances, const char *op_name, double sigma,
                        stsl_schedule **sched, stsl_score **score, stsl_operator **op)
{
    TU_ASSERT_OK(stsl_schedule_create(NULL, STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 1000, sched));
    TU_ASSERT_OK(stsl_score_create_gmm(NULL, shape, K, weights, means, variances, 0, *sched, score));
    TU_ASSERT_OK(stsl_operator_create_by_name(NULL, op_name, shape, op));
    TU_ASSERT_OK(stsl_operator_set_float(*op, STSL_PARAM_NOISE_SIGMA, sigma));
    TU_ASSERT_OK(stsl_operator_prepare(*op));
}

static void test_parallel_equals_serial(void)
{
    stsl_shape shape = {1, 4, 4};
    double weights[3] = {0.2, 0.5, 0.3}, means[3 * D], variances[3] = {0.05, 0.1, 0.02};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < D; i++) means[k * D + i] = (k - 1) * 0.6 + 0.01 * i;
    stsl_schedule *sched = NULL;
    stsl_score *score = NULL;
    stsl_operator *op = NULL;
    gmm_problem(shape, 3, weights, means, variances, "random-inpaint", 0.05, &sched, &score, &op);
    float x0[D * BATCH], y[D * BATCH];
    tu_fill_uniform(x0, D * BATCH, 3, -0.8f, 0.8f);
    TU_ASSERT_OK(stsl_operator_measure(op, x0, y, BATCH, 11));

    job serial[NTHREADS], parallel[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        serial[i] = (job){score, op, solver_names[i], 100 + i, y, {0}, STSL_OK};
        parallel[i] = serial[i];
        run_job(&serial[i]);
        TU_ASSERT_OK(serial[i].status);
    }
    pthread_t tids[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) CU_ASSERT_EQUAL(pthread_create(&tids[i], NULL, run_job, &parallel[i]), 0);
    for (int i = 0; i < NTHREADS; i++) pthread_join(tids[i], NULL);
    for (int i = 0; i < NTHREADS; i++) {
        TU_ASSERT_OK(parallel[i].status);
        CU_ASSERT_EQUAL(memcmp(serial[i].x, parallel[i].x, sizeof serial[i].x), 0);
    }
    stsl_operator_destroy(op);
    stsl_score_destroy(score);
    stsl_schedule_destroy(sched);
}

static void test_rng_threads(void)
{
    /* the same draws whatever the thread count (and from several threads at once) */
    enum { N = 1 << 18 };
    float *a = malloc(N * sizeof(float)), *b = malloc(N * sizeof(float));
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    TU_ASSERT_OK(stsl_random_normal(ctx, 77, 5, 0, a, N));
    TU_ASSERT_OK(stsl_context_set_threads(ctx, 2));
    TU_ASSERT_OK(stsl_random_normal(ctx, 77, 5, 0, b, N));
    CU_ASSERT_EQUAL(memcmp(a, b, N * sizeof(float)), 0);
    stsl_context_destroy(ctx);
    free(a);
    free(b);
}

static void test_noise_ahead(void)
{
    /* drawn ahead on a thread (2 x 40000 >= STSL__NOISE_AHEAD_MIN) or in line (2 x 100): the
     * values of stsl__noise, over the context's threads as well */
    enum { BIG = 40000, SMALL = 100 };
    CU_ASSERT_TRUE(2 * (size_t)BIG >= STSL__NOISE_AHEAD_MIN && 2 * (size_t)SMALL < STSL__NOISE_AHEAD_MIN);
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    TU_ASSERT_OK(stsl_context_set_threads(ctx, 2));
    const uint64_t seeds[2] = {7, 1234567};
    stsl__run R;
    memset(&R, 0, sizeof R);
    R.ctx = ctx;
    R.batch = 2;
    float *a = malloc(2 * BIG * sizeof(float)), *b = malloc(2 * BIG * sizeof(float));
    for (int with_seeds = 0; with_seeds < 2; with_seeds++) {
        R.seed = 99;
        R.seeds = with_seeds ? seeds : NULL;
        const size_t sizes[2] = {BIG, SMALL};
        for (int k = 0; k < 2; k++) {
            const size_t n = sizes[k];
            stsl__noise(&R, STSL_TAG_STEP_NOISE, 17, 3, a, n);
            memset(b, 0xff, 2 * n * sizeof(float));
            stsl__noise_ahead job;
            stsl__noise_ahead_begin(&R, &job, STSL_TAG_STEP_NOISE, 17, 3, b, n);
            CU_ASSERT_EQUAL(job.started, n == BIG);   /* the thread path is the one tested */
            stsl__noise_ahead_end(&job);
            CU_ASSERT_EQUAL(job.started, 0);
            CU_ASSERT_EQUAL(memcmp(a, b, 2 * n * sizeof(float)), 0);
        }
    }
    stsl__noise_ahead idle = {0};
    stsl__noise_ahead_end(&idle);   /* a job never begun (a step without noise) ends as a no-op */
    free(a);
    free(b);
    stsl_context_destroy(ctx);
}

static void test_noise_ahead_batch(void)
{
    /* On 1x100x200 a batch of 4 draws its noise ahead on a thread, one sample alone in line (a
     * step's 20000 normals, STSL's 2 x 20000 probes < STSL__NOISE_AHEAD_MIN): sample i of the batch
     * equals the run of seed + i.  DPS line 5, STSL lines 8 and 14, DPS-MO step 4. */
    enum { H = 100, W = 200, N = H * W, B = 4 };
    CU_ASSERT_TRUE(2 * (size_t)N < STSL__NOISE_AHEAD_MIN && (size_t)B * N >= STSL__NOISE_AHEAD_MIN);
    stsl_shape shape = {1, H, W};
    double weights[2] = {0.4, 0.6}, variances[2] = {0.05, 0.1};
    double *means = malloc(2 * N * sizeof(double));
    for (int i = 0; i < N; i++) {
        means[i] = -0.3 + 1e-5 * i;
        means[N + i] = 0.4;
    }
    stsl_schedule *sched = NULL;
    stsl_score *score = NULL;
    stsl_operator *op = NULL;
    gmm_problem(shape, 2, weights, means, variances, "denoise", 0.1, &sched, &score, &op);
    float *y = malloc(B * N * sizeof(float)), *xb = malloc(B * N * sizeof(float)),
          *x1 = malloc(N * sizeof(float));
    tu_fill_uniform(y, B * N, 5, -0.5f, 0.5f);
    static const char *const solvers[] = {"dps", "stsl", "dps-mo"};
    for (int k = 0; k < 3; k++) {
        stsl_solver *sv = NULL;
        TU_ASSERT_OK(stsl_solver_create_by_name(NULL, solvers[k], &sv));
        TU_ASSERT_OK(stsl_solver_set_int(sv, STSL_PARAM_STEPS, 3));
        TU_ASSERT_OK(stsl_solver_set_int(sv, STSL_PARAM_SEED, 40));
        TU_ASSERT_OK(stsl_solver_run(sv, score, op, NULL, y, xb, B));
        for (int i = 0; i < B; i++) {
            TU_ASSERT_OK(stsl_solver_set_int(sv, STSL_PARAM_SEED, 40 + i));
            TU_ASSERT_OK(stsl_solver_run(sv, score, op, NULL, y + (size_t)i * N, x1, 1));
            const int same = memcmp(x1, xb + (size_t)i * N, N * sizeof(float)) == 0;
            if (!same) fprintf(stderr, "  %s: sample %d of the batch differs from its run alone\n", solvers[k], i);
            CU_ASSERT_TRUE(same);
        }
        stsl_solver_destroy(sv);
    }
    stsl_operator_destroy(op);
    stsl_score_destroy(score);
    stsl_schedule_destroy(sched);
    free(means);
    free(y);
    free(xb);
    free(x1);
}

int main(void)
{
    static const stsl_test tests[] = {
        {"solvers in parallel threads share a score: bit-identical to serial", test_parallel_equals_serial},
        {"random numbers independent of threads", test_rng_threads},
        {"a step's noise drawn ahead on a thread equals the draws in line", test_noise_ahead},
        {"dps, stsl, dps-mo: a batch drawing its noise ahead equals its samples run alone", test_noise_ahead_batch},
        {NULL, NULL},
    };
    return stsl_test_main("threads", tests);
}
