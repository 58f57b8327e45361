/*
 * kernel_support.c -- what the operator families (conv, motion, phase, resize, pointwise) share
 * below the handle: threading over planes (with per-worker scratch, one plane function each), boundary indexing, FFTW's
 * planner lock, aligned buffers, FFT sizes.  Kept apart from operator.c (the handle and its API,
 * which calls the families' prepare functions) so that the families depend on it and not back on
 * operator.c.
 */
#include "operators/operator_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

stsl_status stsl__op_parallel(const stsl_operator *op, size_t n, stsl__range_fn fn, void *arg)
{
    return stsl__parallel_for(stsl__ctx_threads(op->ctx), n, 1, fn, arg);
}

typedef struct scratch_job {
    stsl__scratch_range_fn fn;
    void *arg;
    size_t scratch_floats;
    atomic_int failed;
} scratch_job;

static void scratch_range(void *arg, size_t begin, size_t end)
{
    scratch_job *j = arg;
    void *raw;
    float *scratch = stsl__op_aligned_floats(j->scratch_floats, &raw);
    if (!scratch) {
        atomic_store(&j->failed, 1);
        return;
    }
    j->fn(j->arg, begin, end, scratch);
    stsl__free(raw);
}

stsl_status stsl__op_parallel_scratch(const stsl_operator *op, size_t n, size_t scratch_floats,
                                      stsl__scratch_range_fn fn, void *arg, const char *what,
                                      char *err)
{
    scratch_job j = {.fn = fn, .arg = arg, .scratch_floats = scratch_floats};
    atomic_init(&j.failed, 0);
    stsl__op_parallel(op, n, scratch_range, &j);
    if (atomic_load(&j.failed)) return stsl__fail(err, STSL_ERR_NOMEM, "out of memory %s", what);
    return STSL_OK;
}

void *stsl__op_new_state(stsl_operator *op, size_t size, const stsl__op_impl *impl)
{
    void *s = stsl__calloc(1, size);
    if (!s) return NULL;
    op->state = s;
    op->impl = impl;
    return s;
}

static void planes_range(void *arg, size_t begin, size_t end, float *scratch)
{
    const stsl__planes *j = arg;
    for (size_t p = begin; p < end; p++)
        j->fn(j->state, j->mode, j->in + p * j->in_plane, j->v ? j->v + p * j->v_plane : NULL,
              j->out + p * j->out_plane, scratch);
}

stsl_status stsl__op_run_planes(const stsl_operator *op, size_t n, size_t scratch_floats,
                                const stsl__planes *p, const char *what, char *err)
{
    return stsl__op_parallel_scratch(op, n, scratch_floats, planes_range, (void *)p, what, err);
}

int stsl__op_boundary_index(int p, int n, int boundary)
{
    if (p >= 0 && p < n) return p;
    if (boundary == STSL_BOUNDARY_ZERO) return -1;
    if (n == 1) return 0;
    /* reflect without edge repeat: ... 2 1 | 0 1 2 ... n-1 | n-2 ..., period 2n-2 */
    int period = 2 * n - 2;
    int q = p % period;
    if (q < 0) q += period;
    return q < n ? q : period - q;
}

static pthread_mutex_t fftw_mutex = PTHREAD_MUTEX_INITIALIZER;
void stsl__fftw_lock(void) { pthread_mutex_lock(&fftw_mutex); }
void stsl__fftw_unlock(void) { pthread_mutex_unlock(&fftw_mutex); }

void stsl__fftw_destroy_plans(fftwf_plan fwd, fftwf_plan inv)
{
    if (!fwd && !inv) return;
    stsl__fftw_lock();
    if (fwd) fftwf_destroy_plan(fwd);
    if (inv) fftwf_destroy_plan(inv);
    stsl__fftw_unlock();
}

float *stsl__op_aligned_floats(size_t count, void **raw)
{
    size_t bytes;
    *raw = NULL;
    if (!stsl__mul_size(count ? count : 1, sizeof(float), &bytes) || bytes > SIZE_MAX - 64) return NULL;
    unsigned char *p = stsl__malloc(bytes + 64);
    if (!p) return NULL;
    *raw = p;
    uintptr_t a = ((uintptr_t)p + 63) & ~(uintptr_t)63;
    return (float *)a;
}

int stsl__fft_good_size(int n)
{
    /* Only 2 and 3: FFTW's radix-5/7 codelets are valid but measurably slower here (a 540^2
     * transform costs more than 576^2), and 2^a 3^b sizes are never more than 12.5% apart. */
    for (int m = n;; m++) {
        int r = m;
        while (r % 2 == 0) r /= 2;
        while (r % 3 == 0) r /= 3;
        if (r == 1) return m;
    }
}
