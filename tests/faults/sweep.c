/*
 * Allocation-failure sweep (built by `make check-faults` against a library compiled with
 * -DSTSL_FAULT_INJECTION and ASan/LeakSanitizer).  For every main path (create, run, destroy)
 * allocation n = 1, 2, ... is made to fail until the path completes without reaching the
 * injected failure.  Each failing run must return STSL_ERR_NOMEM, leak nothing (LeakSanitizer
 * checks at exit), and leave the handles usable: the same call is repeated without faults and
 * must succeed.
 */
#include "common/testutil.h"
#include "core/internal.h"

#include <stdlib.h>
#include <string.h>

typedef stsl_status (*path_fn)(void);

/* Returns the number of injected failures seen; asserts each returned NOMEM. */
static long sweep(const char *name, path_fn fn)
{
    long injected = 0;
    for (long n = 1; n < 100000; n++) {
        stsl__fault_set(n);
        stsl_status st = fn();
        long count = stsl__fault_count();
        stsl__fault_set(0);
        if (count < n) { /* the path finished before allocation n: no fault was injected */
            if (st != STSL_OK) fprintf(stderr, "\n  %s: clean run returned %s\n", name, stsl_strerror(st));
            CU_ASSERT_EQUAL(st, STSL_OK);
            break;
        }
        injected++;
        if (st != STSL_ERR_NOMEM)
            fprintf(stderr, "\n  %s: allocation %ld failed but the call returned %d (%s)\n", name, n,
                    (int)st, stsl_strerror(st));
        CU_ASSERT_EQUAL(st, STSL_ERR_NOMEM);
    }
    fprintf(stderr, " [%s: %ld allocations swept]", name, injected);
    CU_ASSERT(injected > 0);
    return injected;
}

static stsl_status path_context(void)
{
    stsl_context *ctx = NULL;
    stsl_status st = stsl_context_create(&ctx);
    stsl_context_destroy(ctx);
    return st;
}

static stsl_status path_schedule(void)
{
    stsl_schedule *s = NULL;
    stsl_status st = stsl_schedule_create(NULL, STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 1000, &s);
    stsl_schedule_destroy(s);
    return st;
}

static stsl_status path_image_roundtrip(void)
{
    static int made;
    static char path[512];
    if (!made) {
        snprintf(path, sizeof path, "%s/sweep.png", tu_tmpdir());
        made = 1;
    }
    stsl_image *img = NULL, *back = NULL;
    stsl_status st = stsl_image_create(3, 9, 7, &img);
    if (st == STSL_OK) {
        for (int i = 0; i < 3 * 9 * 7; i++) img->data[i] = (float)(i % 11) / 5.0f - 1.0f;
        st = stsl_image_save(NULL, img, path, STSL_FORMAT_PNG, 8, 0);
    }
    if (st == STSL_OK) st = stsl_image_load(NULL, path, 0, &back);
    stsl_image_destroy(img);
    stsl_image_destroy(back);
    return st;
}

/* operator: create, prepare, forward, adjoint, measure, data-fit */
static stsl_status run_operator(const char *name, int h, int w)
{
    stsl_operator *op = NULL;
    stsl_shape in = {3, h, w};
    stsl_status st = stsl_operator_create_by_name(NULL, name, in, &op);
    stsl_shape out = {0, 0, 0};
    float *x = NULL, *y = NULL;
    if (st == STSL_OK) st = stsl_operator_output_shape(op, &out);
    if (st == STSL_OK) {
        x = calloc(stsl__shape_size(in) * 2, sizeof(float));
        y = calloc(stsl__shape_size(out) * 2, sizeof(float));
        if (!x || !y) st = STSL_ERR_INTERNAL;
    }
    if (st == STSL_OK) st = stsl_operator_forward(op, x, y, 2);
    if (st == STSL_OK) st = stsl_operator_vjp(op, x, y, x, 2);
    if (st == STSL_OK) st = stsl_operator_measure(op, x, y, 2, 3);
    if (st == STSL_OK) st = stsl_operator_backproject(op, y, x, 2);
    if (st == STSL_OK) st = stsl_operator_data_fit(op, y, x, 2, NULL, x);
    free(x);
    free(y);
    stsl_operator_destroy(op);
    return st;
}

static stsl_status path_gaussian_blur(void) { return run_operator("gaussian-blur", 17, 13); }
static stsl_status path_motion_blur(void) { return run_operator("motion-blur", 40, 40); }
static stsl_status path_sr4(void) { return run_operator("sr4", 16, 24); }
static stsl_status path_random_inpaint(void) { return run_operator("random-inpaint", 9, 11); }
static stsl_status path_salt_pepper(void) { return run_operator("salt-pepper", 9, 11); }
static stsl_status path_phase_retrieval(void) { return run_operator("phase-retrieval", 8, 8); }

/* solver: a 2-component GMM prior on 1x4x4 images, denoising, a short run of each solver */
static stsl_status run_solver(const char *solver_name)
{
    stsl_shape shape = {1, 4, 4};
    double weights[2] = {0.3, 0.7}, means[32], variances[2] = {0.05, 0.1};
    for (int i = 0; i < 32; i++) means[i] = i < 16 ? -0.5 : 0.5;
    stsl_schedule *sched = NULL;
    stsl_score *score = NULL;
    stsl_operator *op = NULL;
    stsl_solver *solver = NULL;
    float y[16 * 2], x[16 * 2];
    for (int i = 0; i < 32; i++) y[i] = 0.1f * (float)(i % 5);
    stsl_status st = stsl_schedule_create(NULL, STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 1000, &sched);
    if (st == STSL_OK) st = stsl_score_create_gmm(NULL, shape, 2, weights, means, variances, 0, sched, &score);
    if (st == STSL_OK) st = stsl_operator_create_by_name(NULL, "denoise", shape, &op);
    if (st == STSL_OK) st = stsl_operator_set_float(op, STSL_PARAM_NOISE_SIGMA, 0.1);
    if (st == STSL_OK) st = stsl_solver_create_by_name(NULL, solver_name, &solver);
    if (st == STSL_OK) st = stsl_solver_set_int(solver, STSL_PARAM_STEPS, 4);
    if (st == STSL_OK) st = stsl_solver_run(solver, score, op, NULL, y, x, 2);
    stsl_solver_destroy(solver);
    stsl_operator_destroy(op);
    stsl_score_destroy(score);
    stsl_schedule_destroy(sched);
    return st;
}

static stsl_status path_ddim(void) { return run_solver("ddim"); }
static stsl_status path_dps(void) { return run_solver("dps"); }
static stsl_status path_stsl(void) { return run_solver("stsl"); }
static stsl_status path_psld(void) { return run_solver("psld"); }
static stsl_status path_rmp(void) { return run_solver("rmp"); }
static stsl_status path_dps_mo(void) { return run_solver("dps-mo"); }

/* The handles outlive the failures: only the run is swept, and after every injected failure the
 * same solver must run cleanly and give the same result as before any failure. */
static struct {
    stsl_schedule *sched;
    stsl_score *score;
    stsl_operator *op;
    stsl_solver *solver;
    float y[32], x[32], reference[32];
} reuse;

static stsl_status path_run_only(void)
{
    return stsl_solver_run(reuse.solver, reuse.score, reuse.op, NULL, reuse.y, reuse.x, 2);
}

static void test_handles_stay_usable(void)
{
    stsl_shape shape = {1, 4, 4};
    double weights[2] = {0.3, 0.7}, means[32], variances[2] = {0.05, 0.1};
    for (int i = 0; i < 32; i++) means[i] = i < 16 ? -0.5 : 0.5;
    for (int i = 0; i < 32; i++) reuse.y[i] = 0.1f * (float)(i % 5);
    TU_ASSERT_OK(stsl_schedule_create(NULL, STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 1000, &reuse.sched));
    TU_ASSERT_OK(stsl_score_create_gmm(NULL, shape, 2, weights, means, variances, 0, reuse.sched, &reuse.score));
    TU_ASSERT_OK(stsl_operator_create_by_name(NULL, "gaussian-blur", shape, &reuse.op));
    const char *names[] = {"stsl", "dps-mo", "rmp"};
    for (int k = 0; k < 3; k++) {
        TU_ASSERT_OK(stsl_solver_create_by_name(NULL, names[k], &reuse.solver));
        TU_ASSERT_OK(stsl_solver_set_int(reuse.solver, STSL_PARAM_STEPS, 3));
        TU_ASSERT_OK(path_run_only());
        memcpy(reuse.reference, reuse.x, sizeof reuse.x);
        sweep(names[k], path_run_only);
        TU_ASSERT_OK(path_run_only());
        CU_ASSERT_EQUAL(memcmp(reuse.reference, reuse.x, sizeof reuse.x), 0);
        stsl_solver_destroy(reuse.solver);
    }
    stsl_operator_destroy(reuse.op);
    stsl_score_destroy(reuse.score);
    stsl_schedule_destroy(reuse.sched);
}

static void test_core(void)
{
    sweep("context", path_context);
    sweep("schedule", path_schedule);
}
static void test_io(void) { sweep("png round trip", path_image_roundtrip); }
static void test_operators(void)
{
    sweep("gaussian-blur", path_gaussian_blur);
    sweep("motion-blur", path_motion_blur);
    sweep("sr4", path_sr4);
    sweep("random-inpaint", path_random_inpaint);
    sweep("salt-pepper", path_salt_pepper);
    sweep("phase-retrieval", path_phase_retrieval);
}
static void test_solvers(void)
{
    sweep("ddim", path_ddim);
    sweep("dps", path_dps);
    sweep("stsl", path_stsl);
    sweep("psld", path_psld);
    sweep("rmp", path_rmp);
    sweep("dps-mo", path_dps_mo);
}

int main(void)
{
    static const stsl_test tests[] = {
        {"core allocations", test_core},
        {"image I/O allocations", test_io},
        {"operator allocations", test_operators},
        {"solver allocations", test_solvers},
        {"handles stay usable after a failed run", test_handles_stay_usable},
        {NULL, NULL},
    };
    return stsl_test_main("allocation-failure sweep", tests);
}
