/*
 * test_run_scratch.c -- the run's scratch pool (stsl__run_floats / stsl__run_give, common.c): a
 * buffer given back is lent again (the smallest idle one that holds the request), a request that
 * no idle buffer holds gets a slot of its own, more requests than slots still succeed (the extra
 * buffers are the caller's and go back to the heap), a failed allocation leaves the pool usable
 * and says why, and stsl__run_release frees everything (valgrind and ASan see the leaks and the
 * double frees; check-asan also sees a write to a buffer after it was given back).
 */
#include "common/testutil.h"
#include "solvers/solver_internal.h"

#include <stdint.h>
#include <string.h>

static char err[STSL_ERRMSG_SIZE];

static stsl__run new_run(void)
{
    stsl__run R;
    memset(&R, 0, sizeof R);
    R.err = err;
    err[0] = '\0';
    return R;
}

static void fill(float *p, size_t n, float v)
{
    for (size_t i = 0; i < n; i++) p[i] = v;
}

static void test_given_back_is_lent_again(void)
{
    stsl__run R = new_run();
    float *a = stsl__run_floats(&R, 100);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    fill(a, 100, 1.0f);
    stsl__run_give(&R, a);
    float *big = stsl__run_floats(&R, 10000);   /* a too small: a slot of its own */
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    CU_ASSERT_PTR_NOT_EQUAL(big, a);
    fill(big, 10000, 2.0f);
    float *b = stsl__run_floats(&R, 50);        /* a again: the smallest idle one that fits */
    CU_ASSERT_PTR_EQUAL(b, a);
    fill(b, 50, 3.0f);
    float *c = stsl__run_floats(&R, 100);       /* a is lent, big is lent: a third */
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT(c != a && c != big);
    fill(c, 100, 4.0f);
    stsl__run_give(&R, big);
    stsl__run_give(&R, b);
    stsl__run_give(&R, c);
    float *d = stsl__run_floats(&R, 5000);      /* big (the only idle one that holds 5000) */
    CU_ASSERT_PTR_EQUAL(d, big);
    stsl__run_give(&R, d);
    stsl__run_give(&R, NULL);
    stsl__run_release(&R);
    for (int i = 0; i < STSL__RUN_SCRATCH_MAX; i++) CU_ASSERT_PTR_NULL(R.scratch[i].p);
}

static void test_more_requests_than_slots(void)
{
    stsl__run R = new_run();
    enum { N = STSL__RUN_SCRATCH_MAX + 3 };
    float *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = stsl__run_floats(&R, (size_t)(i + 1) * 64);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p[i]);
        fill(p[i], (size_t)(i + 1) * 64, (float)i);
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) CU_ASSERT_PTR_NOT_EQUAL(p[i], p[j]);
    for (int i = 0; i < N; i++) {   /* nothing overlapped: each still holds its own value */
        int ok = 1;
        for (size_t k = 0; k < (size_t)(i + 1) * 64; k++) ok &= p[i][k] == (float)i;
        CU_ASSERT(ok);
    }
    for (int i = N - 1; i >= 0; i--) stsl__run_give(&R, p[i]);   /* the extra 3 go to the heap */
    /* every slot idle: a request larger than all of them grows the largest one */
    float *g = stsl__run_floats(&R, (size_t)(N + 10) * 64);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    fill(g, (size_t)(N + 10) * 64, 7.0f);
    stsl__run_give(&R, g);
    stsl__run_release(&R);
}

static void test_out_of_memory(void)
{
    stsl__run R = new_run();
    float *p[STSL__RUN_SCRATCH_MAX];
    for (int i = 0; i < STSL__RUN_SCRATCH_MAX; i++) CU_ASSERT_PTR_NOT_NULL_FATAL(p[i] = stsl__run_floats(&R, 32));
    for (int i = 0; i < STSL__RUN_SCRATCH_MAX; i++) stsl__run_give(&R, p[i]);
    /* no empty slot: an idle one is grown, which fails (the request overflows size_t in bytes),
     * then the emptied slot is tried again */
    CU_ASSERT_PTR_NULL(stsl__run_floats(&R, SIZE_MAX / 2));
    CU_ASSERT(strstr(err, "out of memory") != NULL);
    CU_ASSERT_PTR_NULL(stsl__run_floats(&R, SIZE_MAX / 2));
    for (int i = 0; i < STSL__RUN_SCRATCH_MAX; i++) CU_ASSERT_FALSE(R.scratch[i].busy);
    float *b = stsl__run_floats(&R, 32);   /* still usable */
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    fill(b, 32, 1.0f);
    stsl__run_give(&R, b);
    stsl__run_release(&R);
}

int main(void)
{
    static const stsl_test tests[] = {
        {"a buffer given back is lent again", test_given_back_is_lent_again},
        {"more requests than slots", test_more_requests_than_slots},
        {"out of memory leaves the pool usable", test_out_of_memory},
        {NULL, NULL}};
    return stsl_test_main("run-scratch", tests);
}
