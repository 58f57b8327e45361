/*
 * bench-torchscript -- time one UNet forward and one VJP through libstsl's TorchScript backend.
 *
 *   bench-torchscript MODEL.pt [--threads N] [--repeats R] [--warmup W] [--batch B]
 *
 * Prints one `key value` per line (milliseconds): the first `first_calls` individual call times
 * (to show libtorch's profiling-executor warm-up), then median/min of R timed forwards
 * (stsl_score_eps) and R timed VJPs (stsl_score_eps_vjp with eps output) after W warm-up calls
 * of each.  scripts/bench_torchscript.py runs it next to the same calls made in Python.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stsl.h"
#include "common/timing.h"

/* Deterministic inputs without the library's RNG calls in the timed region. */
static void fill(float *x, size_t n, unsigned seed)
{
    unsigned r = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        r = r * 1664525u + 1013904223u;
        x[i] = (float)((r >> 8) * (1.0 / 16777216.0) * 2.0 - 1.0);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.pt [--threads N] [--repeats R] [--warmup W] [--batch B]\n",
                argv[0]);
        return 2;
    }
    const char *path = argv[1];
    int threads = 1, repeats = 15, warmup = 5, batch = 1;
    for (int i = 2; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--threads")) threads = v;
        else if (!strcmp(argv[i], "--repeats")) repeats = v;
        else if (!strcmp(argv[i], "--warmup")) warmup = v;
        else if (!strcmp(argv[i], "--batch")) batch = v;
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (repeats < 1 || repeats > 10000 || warmup < 0 || batch < 1 || batch > 64) {
        fprintf(stderr, "bad option value\n");
        return 2;
    }
    stsl_context *ctx = NULL;
    stsl_score *s = NULL;
    if (stsl_context_create(&ctx) != STSL_OK || stsl_context_set_threads(ctx, threads) != STSL_OK)
        return 1;
    double t0 = ex_now_ms();
    stsl_status st = stsl_score_load(ctx, path, &s);
    double t_load = ex_now_ms() - t0;
    if (st != STSL_OK) {
        fprintf(stderr, "load: %s\n", stsl_context_last_error(ctx));
        stsl_context_destroy(ctx);
        return 1;
    }
    stsl_shape sh;
    stsl_score_shape(s, &sh);
    size_t n = (size_t)batch * sh.channels * sh.height * sh.width;
    float *x = malloc(n * sizeof *x), *v = malloc(n * sizeof *v), *eps = malloc(n * sizeof *eps);
    float *vjp = malloc(n * sizeof *vjp), *t = malloc((size_t)batch * sizeof *t);
    double *ms = malloc((size_t)(repeats + warmup + 8) * sizeof *ms);
    if (!x || !v || !eps || !vjp || !t || !ms) return 1;
    fill(x, n, 1);
    fill(v, n, 2);
    int T = stsl_schedule_timesteps(stsl_score_schedule(s));
    for (int i = 0; i < batch; i++) t[i] = (float)(T / 2 + i);

    printf("model %s\nshape %d,%d,%d\nbatch %d\nthreads %d\nload_ms %.3f\n", path,
           (int)sh.channels, (int)sh.height, (int)sh.width, batch, threads, t_load);
    int rc = 0;
    /* forward */
    for (int i = 0; i < warmup + repeats; i++) {
        double a = ex_now_ms();
        if (stsl_score_eps(s, x, t, eps, batch) != STSL_OK) {
            fprintf(stderr, "eps: %s\n", stsl_score_last_error(s));
            rc = 1;
            goto out;
        }
        ms[i] = ex_now_ms() - a;
        if (i < 3) printf("forward_call%d_ms %.3f\n", i + 1, ms[i]);
    }
    printf("forward_median_ms %.4f\n", ex_median(ms + warmup, repeats));
    printf("forward_min_ms %.4f\n", ms[warmup]);
    /* VJP (with the eps of the same evaluation, as solvers ask for it) */
    for (int i = 0; i < warmup + repeats; i++) {
        double a = ex_now_ms();
        if (stsl_score_eps_vjp(s, x, t, v, eps, vjp, batch) != STSL_OK) {
            fprintf(stderr, "vjp: %s\n", stsl_score_last_error(s));
            rc = 1;
            goto out;
        }
        ms[i] = ex_now_ms() - a;
        if (i < 3) printf("vjp_call%d_ms %.3f\n", i + 1, ms[i]);
    }
    printf("vjp_median_ms %.4f\n", ex_median(ms + warmup, repeats));
    printf("vjp_min_ms %.4f\n", ms[warmup]);
out:
    free(x), free(v), free(eps), free(vjp), free(t), free(ms);
    stsl_score_destroy(s);
    stsl_context_destroy(ctx);
    return rc;
}
