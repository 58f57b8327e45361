/*
 * bench_device_ops.c -- the measurement operators' C code against the same maps as libtorch ops
 * (issue 27 item 2, src/models/device_ops.h): per operator, the median time of a forward and of
 * an adjoint (VJP for the nonlinear kinds) on a batch of 3-channel images (smooth test images:
 * a sine along memory), and the largest difference between the two paths.  (Phase retrieval's
 * VJP divides by |F|: where a smooth image's spectrum is near 0 the two FFTs' rounding gives
 * phases that differ, so its difference here is far above the random images' of the tests.)  The torch-op times include what the API costs on a device:
 * the inputs copied there and the result back, once per call.
 *
 *   make bench-device-ops [BENCH_DEVICE_OPS_ARGS="--device cuda --size 256 --batch 4"]
 *   build/bench_device_ops [--device cpu|cuda|cuda:N] [--size N] [--batch B] [--repeats R]
 *                          [--threads T] [--ops name,name,...]
 *
 * Not part of make check.  Built like the test programs (internal header: the switch
 * stsl__operator_use_device).  scripts/check-cuda.sh runs it as its device-ops stage.
 */
#include "operators/operator_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct run {
    stsl_operator *op;
    const float *x, *v;
    float *out;
    int batch, adjoint, linear;
} run;

static stsl_status call(const run *r)
{
    if (!r->adjoint) return stsl_operator_forward(r->op, r->x, r->out, r->batch);
    return r->linear ? stsl_operator_adjoint(r->op, r->v, r->out, r->batch)
                     : stsl_operator_vjp(r->op, r->x, r->v, r->out, r->batch);
}

/* Median of `repeats` timed calls after one untimed call; -1 on failure. */
static double time_call(const run *r, int repeats, double *samples)
{
    if (call(r) != STSL_OK) return -1;
    for (int i = 0; i < repeats; i++) {
        double t0 = now_ms();
        if (call(r) != STSL_OK) return -1;
        samples[i] = now_ms() - t0;
    }
    qsort(samples, (size_t)repeats, sizeof *samples, cmp_double);
    return samples[repeats / 2];
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || d != d) m = d;
    }
    return m;
}

static int parse_device(const char *s, int *index)
{
    if (strcmp(s, "cpu") == 0) *index = STSL__DEVOP_CPU;
    else if (strcmp(s, "cuda") == 0) *index = 0;
    else if (strncmp(s, "cuda:", 5) == 0 && s[5] >= '0' && s[5] <= '9') *index = atoi(s + 5);
    else return 0;
    return 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_device_ops [--device cpu|cuda|cuda:N] [--size N] [--batch B] "
                    "[--repeats R] [--threads T] [--ops name,name,...]\n");
}

int main(int argc, char **argv)
{
    const char *device = "cpu", *ops = "gaussian-blur,motion-blur,sr2,sr4,sr8,random-inpaint,box-inpaint,"
                                       "salt-pepper,denoise,hdr,phase-retrieval";
    int size = 256, batch = 1, repeats = 10, threads = 1, index;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val) return usage(), 2;
        if (strcmp(a, "--device") == 0) device = val;
        else if (strcmp(a, "--size") == 0) size = atoi(val);
        else if (strcmp(a, "--batch") == 0) batch = atoi(val);
        else if (strcmp(a, "--repeats") == 0) repeats = atoi(val);
        else if (strcmp(a, "--threads") == 0) threads = atoi(val);
        else if (strcmp(a, "--ops") == 0) ops = val;
        else return usage(), 2;
        i++;
    }
    if (!parse_device(device, &index) || size < 8 || size % 8 || batch < 1 || repeats < 1 || repeats > 1000 ||
        threads < 1) {
        fprintf(stderr, "bench_device_ops: bad --device, --size (a multiple of 8), --batch, --repeats or --threads\n");
        return 2;
    }
    if (!stsl_has_torch()) {
        fprintf(stderr, "bench_device_ops: the library was built without libtorch (WITH_TORCH=0)\n");
        return 1;
    }
    stsl_context *ctx = NULL;
    if (stsl_context_create(&ctx) != STSL_OK || stsl_context_set_threads(ctx, threads) != STSL_OK) return 1;
    stsl_shape shape = {3, size, size};
    size_t n = (size_t)batch * 3 * size * size;
    /* the largest measurement: phase retrieval's 2x oversampled canvas */
    size_t cap = 4 * n;
    float *x = malloc(n * sizeof *x), *v = malloc(cap * sizeof *v), *oc = malloc(cap * sizeof *oc);
    float *od = malloc(cap * sizeof *od);
    double *samples = malloc((size_t)repeats * sizeof *samples);
    if (!x || !v || !oc || !od || !samples) return 1;
    for (size_t i = 0; i < n; i++) x[i] = (float)sin(0.001 * (double)i);
    for (size_t i = 0; i < cap; i++) v[i] = (float)cos(0.0007 * (double)i);
    printf("# operators: C code vs libtorch ops on %s, %d x 3x%dx%d, %d thread(s), median of %d\n\n", device, batch,
           size, size, threads, repeats);
    printf("| operator | C forward ms | torch forward ms | max abs diff | C adjoint/VJP ms | torch adjoint/VJP ms "
           "| max abs diff |\n");
    printf("|---|---|---|---|---|---|---|\n");
    int failed = 0;
    char *list = strdup(ops);
    for (char *save = NULL, *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        stsl_operator *op = NULL;
        if (stsl_operator_create_by_name(ctx, name, shape, &op) != STSL_OK || stsl_operator_prepare(op) != STSL_OK) {
            fprintf(stderr, "%s: %s\n", name, op ? stsl_operator_last_error(op) : stsl_context_last_error(ctx));
            stsl_operator_destroy(op);
            failed = 1;
            continue;
        }
        stsl_shape o;
        stsl_operator_output_shape(op, &o);
        size_t m = (size_t)batch * o.channels * o.height * o.width;
        int linear = stsl_operator_is_linear(op);
        double t[4] = {-1, -1, -1, -1}, diff[2] = {0, 0};
        int ok = 1;
        for (int adj = 0; adj < 2 && ok; adj++) {
            run r = {op, x, v, oc, batch, adj, linear};
            t[2 * adj] = time_call(&r, repeats, samples);
            ok = t[2 * adj] >= 0 && stsl__operator_use_device(op, index) == STSL_OK;
            if (!ok) break;
            r.out = od;
            t[2 * adj + 1] = time_call(&r, repeats, samples);
            ok = t[2 * adj + 1] >= 0;
            diff[adj] = max_abs_diff(od, oc, adj ? n : m);
            stsl__operator_use_device(op, STSL__DEVOP_HOST);
        }
        if (ok) {
            printf("| %s | %.3f | %.3f | %.2g | %.3f | %.3f | %.2g |\n", name, t[0], t[1], diff[0], t[2], t[3],
                   diff[1]);
        } else {
            fprintf(stderr, "%s on %s: %s\n", name, device, stsl_operator_last_error(op));
            failed = 1;
        }
        stsl_operator_destroy(op);
        fflush(stdout);
    }
    free(list), free(x), free(v), free(oc), free(od), free(samples);
    stsl_context_destroy(ctx);
    return failed;
}
