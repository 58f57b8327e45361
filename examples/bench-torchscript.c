/*
 * bench-torchscript -- time one UNet forward and one VJP through libstsl's TorchScript backend.
 *
 *   bench-torchscript MODEL.pt [--autoencoder] [--threads N] [--repeats R] [--warmup W] [--batch B]
 *
 * Prints one `key value` per line (milliseconds): the first three individual call times
 * (to show libtorch's profiling-executor warm-up), then median/min of R timed forwards
 * (stsl_score_eps) and R timed VJPs (stsl_score_eps_vjp with eps output) after W warm-up calls
 * of each; with --autoencoder the same for encode, decode and the decoder's VJP.  scripts/bench_torchscript.py runs it next to the same calls made in Python.
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

/* One timed quantity: W warm-up calls and R timed calls of `call`, printing the first three
 * call times, then the median and the minimum of the R timed ones. */
typedef int (*timed_call)(void *arg);
static int time_calls(const char *name, timed_call call, void *arg, int warmup, int repeats, double *ms)
{
    for (int i = 0; i < warmup + repeats; i++) {
        double a = ex_now_ms();
        if (call(arg)) return 1;
        ms[i] = ex_now_ms() - a;
        if (i < 3) printf("%s_call%d_ms %.3f\n", name, i + 1, ms[i]);
    }
    printf("%s_median_ms %.4f\n", name, ex_median(ms + warmup, repeats));
    printf("%s_min_ms %.4f\n", name, ms[warmup]);   /* ex_median sorted them */
    return 0;
}

typedef struct {
    stsl_score *s;
    stsl_autoencoder *ae;
    float *x, *t, *v, *out, *grad, *z;
    int batch;
} bench_args;

static int unet_forward(void *p)
{
    bench_args *a = p;
    if (stsl_score_eps(a->s, a->x, a->t, a->out, a->batch) == STSL_OK) return 0;
    fprintf(stderr, "eps: %s\n", stsl_score_last_error(a->s));
    return 1;
}
/* the VJP with the eps of the same evaluation, as solvers ask for it */
static int unet_vjp(void *p)
{
    bench_args *a = p;
    if (stsl_score_eps_vjp(a->s, a->x, a->t, a->v, a->out, a->grad, a->batch) == STSL_OK) return 0;
    fprintf(stderr, "vjp: %s\n", stsl_score_last_error(a->s));
    return 1;
}
static int ae_encode(void *p)
{
    bench_args *a = p;
    if (stsl_autoencoder_encode(a->ae, a->x, a->z, a->batch) == STSL_OK) return 0;
    fprintf(stderr, "encode: %s\n", stsl_autoencoder_last_error(a->ae));
    return 1;
}
static int ae_decode(void *p)
{
    bench_args *a = p;
    if (stsl_autoencoder_decode(a->ae, a->z, a->out, a->batch) == STSL_OK) return 0;
    fprintf(stderr, "decode: %s\n", stsl_autoencoder_last_error(a->ae));
    return 1;
}
/* J_D(z)^T u with D(z) of the same evaluation, as the latent solvers ask for it */
static int ae_decode_vjp(void *p)
{
    bench_args *a = p;
    if (stsl_autoencoder_decode_vjp(a->ae, a->z, a->v, a->out, a->grad, a->batch) == STSL_OK) return 0;
    fprintf(stderr, "decode_vjp: %s\n", stsl_autoencoder_last_error(a->ae));
    return 1;
}

static size_t numel(stsl_shape sh, int batch)
{
    return (size_t)batch * sh.channels * sh.height * sh.width;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.pt [--autoencoder] [--threads N] [--repeats R] [--warmup W] "
                        "[--batch B]\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    int threads = 1, repeats = 15, warmup = 5, batch = 1, autoencoder = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--autoencoder")) {
            autoencoder = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "option %s needs a value\n", argv[i]);
            return 2;
        }
        int v = atoi(argv[++i]);
        if (!strcmp(argv[i - 1], "--threads")) threads = v;
        else if (!strcmp(argv[i - 1], "--repeats")) repeats = v;
        else if (!strcmp(argv[i - 1], "--warmup")) warmup = v;
        else if (!strcmp(argv[i - 1], "--batch")) batch = v;
        else {
            fprintf(stderr, "unknown option %s\n", argv[i - 1]);
            return 2;
        }
    }
    if (repeats < 1 || repeats > 10000 || warmup < 0 || warmup > 10000 || batch < 1 || batch > 64 ||
        threads < 1) {
        fprintf(stderr, "bad option value\n");
        return 2;
    }
    stsl_context *ctx = NULL;
    if (stsl_context_create(&ctx) != STSL_OK || stsl_context_set_threads(ctx, threads) != STSL_OK)
        return 1;
    bench_args a = {.batch = batch};
    double t0 = ex_now_ms();
    stsl_status st = autoencoder ? stsl_autoencoder_load(ctx, path, NULL, &a.ae)
                                 : stsl_score_load(ctx, path, &a.s);
    double t_load = ex_now_ms() - t0;
    if (st != STSL_OK) {
        fprintf(stderr, "load: %s\n", stsl_context_last_error(ctx));
        stsl_context_destroy(ctx);
        return 1;
    }
    /* image side (x, out, grad of the UNet; x, D(z) of the autoencoder) and latent side (z) */
    stsl_shape sh = {0, 0, 0}, zsh = {0, 0, 0};
    if (autoencoder) {
        stsl_autoencoder_image_shape(a.ae, &sh);
        stsl_autoencoder_latent_shape(a.ae, &zsh);
    } else {
        stsl_score_shape(a.s, &sh);
    }
    const size_t n = numel(sh, batch), nz = numel(zsh, batch);
    a.x = malloc(n * sizeof *a.x);
    a.out = malloc(n * sizeof *a.out);
    a.v = malloc(n * sizeof *a.v);                 /* cotangent, image-sized for both */
    a.grad = malloc((autoencoder ? nz : n) * sizeof *a.grad);
    a.z = autoencoder ? malloc(nz * sizeof *a.z) : NULL;
    a.t = malloc((size_t)batch * sizeof *a.t);
    double *ms = malloc((size_t)(repeats + warmup + 8) * sizeof *ms);
    int rc = 1;
    if (!a.x || !a.out || !a.v || !a.grad || (autoencoder && !a.z) || !a.t || !ms) goto out;
    fill(a.x, n, 1);
    fill(a.v, n, 2);
    if (autoencoder) {
        fill(a.z, nz, 3);
    } else {
        const int T = stsl_schedule_timesteps(stsl_score_schedule(a.s));
        for (int i = 0; i < batch; i++) a.t[i] = (float)(T / 2 + i);
    }

    printf("model %s\nshape %d,%d,%d\n", path, (int)sh.channels, (int)sh.height, (int)sh.width);
    if (autoencoder) printf("latent_shape %d,%d,%d\n", (int)zsh.channels, (int)zsh.height, (int)zsh.width);
    printf("batch %d\nthreads %d\nload_ms %.3f\n", batch, threads, t_load);
    if (autoencoder)
        rc = time_calls("encode", ae_encode, &a, warmup, repeats, ms) ||
             time_calls("decode", ae_decode, &a, warmup, repeats, ms) ||
             time_calls("decode_vjp", ae_decode_vjp, &a, warmup, repeats, ms);
    else
        rc = time_calls("forward", unet_forward, &a, warmup, repeats, ms) ||
             time_calls("vjp", unet_vjp, &a, warmup, repeats, ms);
out:
    free(a.x), free(a.out), free(a.v), free(a.grad), free(a.z), free(a.t), free(ms);
    stsl_score_destroy(a.s);
    stsl_autoencoder_destroy(a.ae);
    stsl_context_destroy(ctx);
    return rc;
}
