/*
 * Thread contract (stsl.h): several solvers in parallel threads share one score handle and one
 * prepared operator; every result must be bit-identical to the serial run with the same seed.
 * `make check-tsan` builds this same file with ThreadSanitizer.
 */
#include "common/testutil.h"

#include <pthread.h>
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

static void test_parallel_equals_serial(void)
{
    stsl_shape shape = {1, 4, 4};
    double weights[3] = {0.2, 0.5, 0.3}, means[3 * D], variances[3] = {0.05, 0.1, 0.02};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < D; i++) means[k * D + i] = (k - 1) * 0.6 + 0.01 * i;
    stsl_schedule *sched = NULL;
    stsl_score *score = NULL;
    stsl_operator *op = NULL;
    TU_ASSERT_OK(stsl_schedule_create(NULL, STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 1000, &sched));
    TU_ASSERT_OK(stsl_score_create_gmm(NULL, shape, 3, weights, means, variances, 0, sched, &score));
    TU_ASSERT_OK(stsl_operator_create_by_name(NULL, "random-inpaint", shape, &op));
    TU_ASSERT_OK(stsl_operator_set_float(op, STSL_PARAM_NOISE_SIGMA, 0.05));
    TU_ASSERT_OK(stsl_operator_prepare(op));
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

int main(void)
{
    static const stsl_test tests[] = {
        {"solvers in parallel threads share a score: bit-identical to serial", test_parallel_equals_serial},
        {"random numbers independent of threads", test_rng_threads},
        {NULL, NULL},
    };
    return stsl_test_main("threads", tests);
}
