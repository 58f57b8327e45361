/*
 * bench_solver_host.c -- what a solver step costs outside the network (issue 27 item 2): each
 * solver runs on a prior whose network costs (almost) nothing -- a user callback, eps = x / 10 and
 * its VJP v / 10 -- so the step's time is the solver's own arithmetic, its noise, the operator and
 * the library's bookkeeping; the time spent inside the callbacks is measured and taken off.  On a
 * GPU the network's share of a step is its real cost; this is the rest, the part that keeps the
 * GPU waiting (the target: at most 5 % of an ADM-256 DPS step, some 1.3 ms on the H200).
 *
 *   make bench-solver-host [BENCH_SOLVER_HOST_ARGS="--device cuda --size 256"]
 *   build/bench_solver_host [--device cpu|cuda|cuda:N] [--size N] [--channels C] [--threads T]
 *                           [--repeats R] [--solvers a,b,...] [--ops a,b,...] [--markdown FILE]
 *                           [--network-ms MS]
 *
 * Per solver and operator: the median over R runs of the wall time per progress step, the time
 * inside the callbacks per step and the difference ("outside"), with the network evaluations per
 * step from the NFE ledger (a callback prior cannot keep a pass for its VJP, so the ledger shows
 * a forward beside each VJP where a TorchScript prior makes one pass).  Steps: 20 (STSL 4, with
 * its K and probes as defaults).  Uses only the public API.  Not part of make check.
 *
 * --network-ms MS: each callback also waits MS ms (spinning), standing for a network call on a
 * GPU during which the calling thread only waits; "outside" then is the host work not overlapped
 * with it (the noise a step draws while the network runs, stsl__noise_ahead, drops out of it).
 */
#include "stsl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct cheap_net {
    size_t dim;
    double inside;       /* seconds spent in the callbacks */
    double network_s;    /* a GPU's network call: the caller waits this long (--network-ms) */
} cheap_net;

/* A spin, as CUDA's default scheduling waits for the GPU when the machine has more cores than
 * active contexts (a sleep would also cool the caches the host work then reads). */
static void wait_network(const cheap_net *c)
{
    if (c->network_s <= 0) return;
    const double end = now_s() + c->network_s;
    while (now_s() < end) {
    }
}

static int cheap_eps(void *user, const float *x, const float *t, float *eps, int batch)
{
    (void)t;
    cheap_net *c = user;
    double t0 = now_s();
    for (size_t i = 0; i < c->dim * (size_t)batch; i++) eps[i] = 0.1f * x[i];
    wait_network(c);
    c->inside += now_s() - t0;
    return 0;
}

static int cheap_vjp(void *user, const float *x, const float *t, const float *v, float *eps,
                     float *vjp, int batch)
{
    (void)t;
    cheap_net *c = user;
    double t0 = now_s();
    for (size_t i = 0; i < c->dim * (size_t)batch; i++) {
        if (eps) eps[i] = 0.1f * x[i];
        vjp[i] = 0.1f * v[i];
    }
    wait_network(c);
    c->inside += now_s() - t0;
    return 0;
}

static int split(char *list, char **out, int max)
{
    int n = 0;
    for (char *tok = strtok(list, ","); tok && n < max; tok = strtok(NULL, ",")) out[n++] = tok;
    return n;
}

int main(int argc, char **argv)
{
    const char *device = "cpu", *markdown = NULL;
    int size = 256, channels = 3, threads = 1, repeats = 5;
    double network_ms = 0;
    char solvers_arg[256] = "dps,psld,ddim,dps-mo,rmp,stsl", ops_arg[256] = "denoise,gaussian-blur";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "bench_solver_host: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--size")) size = atoi(v);
        else if (!strcmp(a, "--channels")) channels = atoi(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--repeats")) repeats = atoi(v);
        else if (!strcmp(a, "--solvers")) snprintf(solvers_arg, sizeof solvers_arg, "%s", v);
        else if (!strcmp(a, "--ops")) snprintf(ops_arg, sizeof ops_arg, "%s", v);
        else if (!strcmp(a, "--markdown")) markdown = v;
        else if (!strcmp(a, "--network-ms")) network_ms = atof(v);
        else {
            fprintf(stderr, "bench_solver_host: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (size < 8 || channels < 1 || threads < 1 || repeats < 1 || repeats > 99 ||
        !(network_ms >= 0 && network_ms <= 1000)) {
        fprintf(stderr, "bench_solver_host: bad --size, --channels, --threads, --repeats or --network-ms\n");
        return 2;
    }
    char *solvers[16], *ops[16];
    const int ns = split(solvers_arg, solvers, 16), no = split(ops_arg, ops, 16);

    stsl_context *ctx = NULL;
    stsl_schedule *sched = NULL;
    if (stsl_context_create(&ctx) != STSL_OK || stsl_context_set_threads(ctx, threads) != STSL_OK ||
        stsl_context_set_device(ctx, device) != STSL_OK ||
        stsl_schedule_create(ctx, STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 1000, &sched) != STSL_OK) {
        fprintf(stderr, "bench_solver_host: %s\n", ctx ? stsl_context_last_error(ctx) : "no context");
        return 1;
    }
    const stsl_shape shape = {channels, size, size};
    const size_t dim = (size_t)channels * size * size;
    cheap_net net = {dim, 0, 1e-3 * network_ms};
    const stsl_score_vtable vt = {sizeof vt, cheap_eps, cheap_vjp, NULL};
    stsl_score *score = NULL;
    if (stsl_score_create_custom(ctx, shape, &vt, &net, sched, &score) != STSL_OK) {
        fprintf(stderr, "bench_solver_host: %s\n", stsl_context_last_error(ctx));
        return 1;
    }
    float *x = malloc(dim * sizeof(float)), *y = malloc(dim * sizeof(float));
    if (!x || !y) return 1;

    FILE *md = markdown ? fopen(markdown, "w") : NULL;
    if (markdown && !md) {
        fprintf(stderr, "bench_solver_host: cannot write %s\n", markdown);
        return 1;
    }
    char head[512];
    snprintf(head, sizeof head,
             "Solver steps outside the network: %dx%dx%d, batch 1, device %s, %d thread(s), "
             "network calls waited %.1f ms each, median of %d runs (ms per step)\n\n"
             "| solver | operator | steps | step | in the callbacks | outside | VJPs / forwards per step |\n"
             "|---|---|---:|---:|---:|---:|---|\n",
             channels, size, size, device, threads, network_ms, repeats);
    fputs(head, stdout);
    if (md) fputs(head, md);
    int failures = 0;
    for (int o = 0; o < no; o++) {
        stsl_operator *op = NULL;
        if (stsl_operator_create_by_name(ctx, ops[o], shape, &op) != STSL_OK ||
            stsl_operator_prepare(op) != STSL_OK) {
            fprintf(stderr, "bench_solver_host: operator %s: %s\n", ops[o], stsl_context_last_error(ctx));
            failures++;
            stsl_operator_destroy(op);
            continue;
        }
        stsl_shape ys;
        stsl_operator_output_shape(op, &ys);
        const size_t dy = (size_t)ys.channels * ys.height * ys.width;
        for (size_t i = 0; i < dy; i++) y[i] = 0.01f * (float)(i % 7);
        for (int s = 0; s < ns; s++) {
            stsl_solver *sv = NULL;
            if (stsl_solver_create_by_name(ctx, solvers[s], &sv) != STSL_OK) {
                fprintf(stderr, "bench_solver_host: solver %s: %s\n", solvers[s], stsl_context_last_error(ctx));
                failures++;
                continue;
            }
            const int steps = stsl_solver_get_kind(sv) == STSL_SOLVER_STSL ? 4 : 20;
            stsl_solver_set_int(sv, STSL_PARAM_STEPS, steps);
            double step_ms[99], in_ms[99], out_ms[99];
            stsl_nfe nfe;
            memset(&nfe, 0, sizeof nfe);
            nfe.struct_size = sizeof nfe;
            int ok = 1;
            for (int r = 0; r < repeats && ok; r++) {
                net.inside = 0;
                const double t0 = now_s();
                ok = stsl_solver_run(sv, score, op, NULL, y, x, 1) == STSL_OK;
                const double wall = now_s() - t0;
                step_ms[r] = 1e3 * wall / steps;
                in_ms[r] = 1e3 * net.inside / steps;
                out_ms[r] = step_ms[r] - in_ms[r];
            }
            if (!ok) {
                fprintf(stderr, "bench_solver_host: %s on %s: %s\n", solvers[s], ops[o],
                        stsl_solver_last_error(sv));
                failures++;
                stsl_solver_destroy(sv);
                continue;
            }
            stsl_solver_get_nfe(sv, &nfe);
            qsort(step_ms, (size_t)repeats, sizeof(double), cmp_double);
            qsort(in_ms, (size_t)repeats, sizeof(double), cmp_double);
            qsort(out_ms, (size_t)repeats, sizeof(double), cmp_double);
            char row[256];
            snprintf(row, sizeof row, "| %s | %s | %d | %.2f | %.2f | %.2f | %.1f / %.1f |\n", solvers[s],
                     ops[o], steps, step_ms[repeats / 2], in_ms[repeats / 2], out_ms[repeats / 2],
                     (double)nfe.unet_vjp / steps, (double)nfe.unet_forward / steps);
            fputs(row, stdout);
            if (md) fputs(row, md);
            fflush(stdout);
            stsl_solver_destroy(sv);
        }
        stsl_operator_destroy(op);
    }
    if (md) fclose(md);
    free(x);
    free(y);
    stsl_score_destroy(score);
    stsl_schedule_destroy(sched);
    stsl_context_destroy(ctx);
    return failures ? 1 : 0;
}
