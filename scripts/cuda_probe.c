/*
 * cuda_probe -- the library side of scripts/check-cuda.sh (issue 16).  Public API only; built by
 * check-cuda.sh against the library it just built.  Prints `key value` lines.
 *
 *   cuda_probe compare MODEL DEVICE [STEPS]
 *       eps and its VJP (batch 2, seeded inputs) on the CPU in float32 and on DEVICE in float32,
 *       float16 and bfloat16 (on the CPU a reduced precision this libtorch cannot run, float16
 *       before 2.x, is reported `skipped`; on a GPU it fails the comparison); then DPS and STSL restorations (STEPS reverse steps, gaussian-blur, same seed) on
 *       both devices.  Keys: <what>_rel (max |a - b| / (1 + max |b|)), <solver>_rmse (RMSE of
 *       the two restorations, [-1, 1] scale), <solver>_psnr_cpu / _dev against the clean image
 *       (examples/common/metrics.c).
 *       Tolerances (docs/cuda.md): eps and VJP 2e-3 in float32, 2e-2 in float16, 5e-2 in
 *       bfloat16 (stsl.h, stsl_context_set_precision); restorations
 *       RMSE 0.05.  A line "FAIL key value > tolerance" and exit status 1 when one is exceeded.
 *   cuda_probe time MODEL DEVICE HALF [REPEATS] [STEPS]
 *       HALF: 0 float32, 1 float16, 2 bfloat16 (stsl_precision).  Median milliseconds of one forward and one VJP (batch 1), and of one reverse step of DPS
 *       and of STSL (defaults: K 5, its default probes) over STEPS steps after the first, with
 *       each solver's NFE ledger per step (STEPS 0: no solver runs); also the load and the first
 *       two forward and VJP calls apart (start-up; the environment's STSL_JIT_OPTIMIZE applies).
 *       With STSL_CUDA_GRAPHS=1 in the environment, a `cuda_graphs` line says what the model's
 *       CUDA graphs did (the forward and VJP keys are captured on their third call, before the
 *       medians' calls).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stsl.h"
#include "common/metrics.h"   /* examples/common: the PSNR every C program uses */
#include "common/timing.h"    /* examples/common */

static double rel_err(const float *a, const float *b, size_t n)
{
    double m = 0, d = 0;
    for (size_t i = 0; i < n; i++) {
        m = fmax(m, fabs(b[i]));
        double e = fabs((double)a[i] - b[i]);
        d = isnan(e) ? INFINITY : fmax(d, e);
    }
    return d / (1 + m);
}

static double rmse(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s / (double)n);
}

static int n_over;   /* comparisons over their tolerance */

static void check(const char *key, double value, double tol)
{
    printf("%s %.4g\n", key, value);
    if (!(value <= tol)) {
        printf("FAIL %s %.4g > %g\n", key, value, tol);
        n_over++;
    }
}

static int fail(const char *what, const char *msg)
{
    fprintf(stderr, "cuda_probe: %s: %s\n", what, msg ? msg : "");
    return 1;
}

/* STSL_CUDA_GRAPHS=1: what the model's CUDA graphs did, logged when it is freed, as a
 * `cuda_graphs` line (captured, replays, calls uncaptured, failed captures and the first reason) */
static void print_graphs_report(void *user, stsl_log_level level, const char *msg)
{
    (void)user, (void)level;
    if (strstr(msg, "CUDA graphs")) printf("cuda_graphs %s\n", msg);
}

static stsl_context *ctx_on(const char *device, stsl_precision precision)
{
    stsl_context *ctx = NULL;
    if (stsl_context_create(&ctx) != STSL_OK) return NULL;
    stsl_context_set_log(ctx, print_graphs_report, NULL, STSL_LOG_INFO);
    if (stsl_context_set_device(ctx, device) != STSL_OK ||
        stsl_context_set_precision(ctx, precision) != STSL_OK) {
        fail("device", stsl_context_last_error(ctx));
        stsl_context_destroy(ctx);
        return NULL;
    }
    return ctx;
}

typedef struct loaded {
    stsl_context *ctx;
    stsl_score *s;
    stsl_shape sh;
    size_t d;
} loaded;

/* 0, or 1 with the message printed; *status (when given) gets the load's status */
static int load_status(loaded *l, const char *model, const char *device, stsl_precision precision,
                       stsl_status *status)
{
    memset(l, 0, sizeof *l);
    if (!(l->ctx = ctx_on(device, precision))) return 1;
    stsl_status st = stsl_score_load(l->ctx, model, &l->s);
    if (status) *status = st;
    if (st != STSL_OK) {
        fail(model, stsl_context_last_error(l->ctx));
        stsl_context_destroy(l->ctx);
        memset(l, 0, sizeof *l);
        return 1;
    }
    stsl_score_shape(l->s, &l->sh);
    l->d = (size_t)l->sh.channels * l->sh.height * l->sh.width;
    return 0;
}

static int load(loaded *l, const char *model, const char *device, stsl_precision precision)
{
    return load_status(l, model, device, precision, NULL);
}

static void unload(loaded *l)
{
    stsl_score_destroy(l->s);
    stsl_context_destroy(l->ctx);
    memset(l, 0, sizeof *l);
}

/* eps (batch 2) and its VJP on one handle */
static int net_eval(loaded *l, const float *x, const float *t, const float *v, float *eps, float *vjp)
{
    if (stsl_score_eps(l->s, x, t, eps, 2) != STSL_OK) return fail("eps", stsl_score_last_error(l->s));
    if (stsl_score_eps_vjp(l->s, x, t, v, NULL, vjp, 2) != STSL_OK)
        return fail("vjp", stsl_score_last_error(l->s));
    return 0;
}

/* gaussian-blur measurement of a smooth test image; restoration with `solver` */
typedef struct problem {
    stsl_operator *op;
    float *clean, *y;
    size_t dy;
} problem;

static int make_problem(stsl_context *ctx, stsl_shape sh, problem *p)
{
    memset(p, 0, sizeof *p);
    size_t d = (size_t)sh.channels * sh.height * sh.width;
    if (stsl_operator_create_by_name(ctx, "gaussian-blur", sh, &p->op) != STSL_OK)
        return fail("operator", stsl_context_last_error(ctx));
    stsl_operator_set_float(p->op, STSL_PARAM_NOISE_SIGMA, 0.05);
    stsl_shape osh;
    if (stsl_operator_output_shape(p->op, &osh) != STSL_OK) return fail("operator", "output shape");
    p->dy = (size_t)osh.channels * osh.height * osh.width;
    p->clean = malloc(d * sizeof(float));
    p->y = malloc(p->dy * sizeof(float));
    if (!p->clean || !p->y) return fail("problem", "out of memory");
    for (int c = 0; c < sh.channels; c++)
        for (int i = 0; i < sh.height; i++)
            for (int j = 0; j < sh.width; j++) {
                double r = hypot(i - sh.height / 2.0, j - sh.width / 2.0) / (0.3 * sh.height);
                p->clean[((size_t)c * sh.height + i) * sh.width + j] = (float)(r < 1 ? 0.8 - 0.3 * c : -0.9);
            }
    if (stsl_operator_measure(p->op, p->clean, p->y, 1, 11) != STSL_OK)
        return fail("measure", stsl_operator_last_error(p->op));
    return 0;
}

static void free_problem(problem *p)
{
    stsl_operator_destroy(p->op);
    free(p->clean);
    free(p->y);
}

typedef struct step_timer {
    double last, *ms;
    int n, cap;
} step_timer;

static int on_step(void *user, int step, int total, const float *x0, int batch)
{
    (void)step, (void)total, (void)x0, (void)batch;
    step_timer *st = user;
    double t = ex_now_ms();
    if (st->n < st->cap) st->ms[st->n++] = t - st->last;
    st->last = t;
    return 0;
}

/* Runs `solver` for `steps` reverse steps; per-step times into tm (when not NULL). */
static int restore(loaded *l, const problem *p, const char *solver, int steps, float *out,
                   step_timer *tm, stsl_nfe *nfe)
{
    stsl_solver *sv = NULL;
    if (stsl_solver_create_by_name(l->ctx, solver, &sv) != STSL_OK)
        return fail(solver, stsl_context_last_error(l->ctx));
    int rc = 0;
    stsl_solver_set_int(sv, STSL_PARAM_STEPS, steps);
    stsl_solver_set_int(sv, STSL_PARAM_SEED, 5);
    if (tm) {
        tm->n = 0;
        tm->last = ex_now_ms();
        stsl_solver_set_progress(sv, on_step, tm);
    }
    if (stsl_solver_run(sv, l->s, p->op, NULL, p->y, out, 1) != STSL_OK) {
        rc = fail(solver, stsl_solver_last_error(sv));
    } else if (nfe) {
        nfe->struct_size = sizeof *nfe;
        stsl_solver_get_nfe(sv, nfe);
    }
    stsl_solver_destroy(sv);
    return rc;
}

static int cmd_compare(const char *model, const char *device, int steps)
{
    loaded cpu, dev;
    if (load(&cpu, model, "cpu", 0)) return 1;
    size_t n = 2 * cpu.d;
    float *x = malloc(n * 4), *v = malloc(n * 4), *e0 = malloc(n * 4), *g0 = malloc(n * 4);
    float *e1 = malloc(n * 4), *g1 = malloc(n * 4);
    float t[2] = {100.0f, 700.0f};
    if (!x || !v || !e0 || !g0 || !e1 || !g1) return fail("compare", "out of memory");
    stsl_random_normal(NULL, 1, 0, 0, x, n);
    stsl_random_normal(NULL, 2, 0, 0, v, n);
    if (net_eval(&cpu, x, t, v, e0, g0)) return 1;
    static const struct { stsl_precision p; const char *name; double tol; } precs[] = {
        {STSL_PRECISION_FLOAT32, "", 2e-3},
        {STSL_PRECISION_FLOAT16, "_half", 2e-2},
        {STSL_PRECISION_BFLOAT16, "_bf16", 5e-2},
    };
    for (size_t k = 0; k < sizeof precs / sizeof precs[0]; k++) {
        char ek[32], vk[32];
        snprintf(ek, sizeof ek, "eps%s_rel", precs[k].name);
        snprintf(vk, sizeof vk, "vjp%s_rel", precs[k].name);
        stsl_status st = STSL_OK;
        if (load_status(&dev, model, device, precs[k].p, &st)) {
            /* the CPU's libtorch may lack a reduced precision (float16 before 2.x): said, not
             * failed; any other failure, and any on a GPU, fails the comparison */
            if (st == STSL_ERR_BACKEND && k > 0 && !strcmp(device, "cpu")) {
                printf("%s skipped\n%s skipped\n", ek, vk);
                continue;
            }
            return 1;
        }
        if (net_eval(&dev, x, t, v, e1, g1)) return 1;
        check(ek, rel_err(e1, e0, n), precs[k].tol);
        check(vk, rel_err(g1, g0, n), precs[k].tol);
        unload(&dev);
    }
    /* restorations with the same seed */
    if (stsl_score_is_latent(cpu.s)) {
        printf("solvers skipped (latent prior: needs its autoencoder)\n");
    } else {
        if (load(&dev, model, device, 0)) return 1;
        problem p;
        if (make_problem(cpu.ctx, cpu.sh, &p)) return 1;
        float *r0 = malloc(cpu.d * 4), *r1 = malloc(cpu.d * 4);
        const char *solvers[2] = {"dps", "stsl"};
        for (int k = 0; k < 2; k++) {
            if (restore(&cpu, &p, solvers[k], steps, r0, NULL, NULL)) return 1;
            if (restore(&dev, &p, solvers[k], steps, r1, NULL, NULL)) return 1;
            char key[32];
            snprintf(key, sizeof key, "%s_rmse", solvers[k]);
            printf("%s_steps %d\n", solvers[k], steps);
            check(key, rmse(r1, r0, cpu.d), 0.05);
            printf("%s_psnr_cpu %.2f\n%s_psnr_dev %.2f\n", solvers[k], metric_psnr(r0, p.clean, cpu.d),
                   solvers[k], metric_psnr(r1, p.clean, cpu.d));
        }
        free(r0), free(r1);
        free_problem(&p);
        unload(&dev);
    }
    free(x), free(v), free(e0), free(g0), free(e1), free(g1);
    unload(&cpu);
    return n_over ? 1 : 0;
}

static int cmd_time(const char *model, const char *device, stsl_precision half, int repeats,
                    int steps)
{
    loaded l;
    double t0 = ex_now_ms();
    if (load(&l, model, device, half)) return 1;
    printf("load_ms %.1f\nshape %d,%d,%d\n", ex_now_ms() - t0, l.sh.channels, l.sh.height, l.sh.width);
    size_t d = l.d;
    float *x = malloc(d * 4), *v = malloc(d * 4), *e = malloc(d * 4), *g = malloc(d * 4);
    double *ms = malloc((size_t)(repeats + steps + 8) * sizeof *ms);
    if (!x || !v || !e || !g || !ms) return fail("time", "out of memory");
    stsl_random_normal(NULL, 1, 0, 0, x, d);
    stsl_random_normal(NULL, 2, 0, 0, v, d);
    float t = 500.0f;
    const int warmup = 3;
    for (int i = 0; i < warmup + repeats; i++) {
        double a = ex_now_ms();
        if (stsl_score_eps(l.s, x, &t, e, 1) != STSL_OK) return fail("eps", stsl_score_last_error(l.s));
        ms[i] = ex_now_ms() - a;
    }
    /* the first calls apart (start-up: profiling runs, kernel compilation, lazy initialisation) */
    printf("forward_call1_ms %.3f\nforward_call2_ms %.3f\n", ms[0], ms[1]);
    printf("forward_ms %.3f\n", ex_median(ms + warmup, repeats));
    for (int i = 0; i < warmup + repeats; i++) {
        double a = ex_now_ms();
        if (stsl_score_eps_vjp(l.s, x, &t, v, e, g, 1) != STSL_OK)
            return fail("vjp", stsl_score_last_error(l.s));
        ms[i] = ex_now_ms() - a;
    }
    printf("vjp_call1_ms %.3f\nvjp_call2_ms %.3f\n", ms[0], ms[1]);
    printf("vjp_ms %.3f\n", ex_median(ms + warmup, repeats));
    if (stsl_score_is_latent(l.s)) {
        printf("solvers skipped (latent prior)\n");
    } else if (steps > 0) {
        problem p;
        if (make_problem(l.ctx, l.sh, &p)) return 1;
        int64_t ks = 0;
        double bs = 0;
        stsl_operator_get_int(p.op, STSL_PARAM_KERNEL_SIZE, &ks);
        stsl_operator_get_float(p.op, STSL_PARAM_BLUR_SIGMA, &bs);
        printf("op_kernel_size %lld\nop_blur_sigma %g\n", (long long)ks, bs);
        const char *solvers[2] = {"dps", "stsl"};
        for (int k = 0; k < 2; k++) {
            step_timer tm = {0, ms, 0, steps + 1};
            stsl_nfe nfe;
            /* steps + 1 reverse steps; the first (allocations, warm-up) is not counted */
            if (restore(&l, &p, solvers[k], steps + 1, e, &tm, &nfe)) return 1;
            double per = (double)(steps + 1);
            stsl_solver *q = NULL;   /* the defaults the eager reference copies */
            if (stsl_solver_create_by_name(l.ctx, solvers[k], &q) == STSL_OK) {
                static const struct { stsl_param key; const char *name; int is_int; } keys[] = {
                    {STSL_PARAM_INNER_STEPS, "K", 1}, {STSL_PARAM_PROBES, "probes", 1},
                    {STSL_PARAM_ETA, "eta", 0}, {STSL_PARAM_LAMBDA, "lambda", 0},
                    {STSL_PARAM_LEARNING_RATE, "lr", 0}, {STSL_PARAM_ZETA, "zeta", 0}};
                for (size_t j = 0; j < sizeof keys / sizeof keys[0]; j++) {
                    int64_t iv;
                    double fv;
                    if (keys[j].is_int && stsl_solver_get_int(q, keys[j].key, &iv) == STSL_OK)
                        printf("%s_%s %lld\n", solvers[k], keys[j].name, (long long)iv);
                    else if (!keys[j].is_int && stsl_solver_get_float(q, keys[j].key, &fv) == STSL_OK)
                        printf("%s_%s %g\n", solvers[k], keys[j].name, fv);
                }
                stsl_solver_destroy(q);
            }
            printf("%s_step_ms %.3f\n%s_run_s %.3f\n%s_fwd_per_step %.2f\n%s_vjp_per_step %.2f\n"
                   "%s_calls_per_step %.2f\n",
                   solvers[k], ex_median(ms + 1, tm.n - 1), solvers[k], nfe.seconds, solvers[k],
                   nfe.unet_forward / per, solvers[k], nfe.unet_vjp / per, solvers[k],
                   nfe.unet_calls / per);
        }
        free_problem(&p);
    }
    free(x), free(v), free(e), free(g), free(ms);
    unload(&l);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "compare"))
        return cmd_compare(argv[2], argv[3], argc > 4 ? atoi(argv[4]) : 10);
    if (argc >= 5 && !strcmp(argv[1], "time"))
        return cmd_time(argv[2], argv[3], atoi(argv[4]), argc > 5 ? atoi(argv[5]) : 10,
                        argc > 6 ? atoi(argv[6]) : 3);
    fprintf(stderr, "usage: cuda_probe compare MODEL DEVICE [STEPS]\n"
                    "       cuda_probe time MODEL DEVICE HALF [REPEATS] [STEPS]\n");
    return 2;
}
