/*
 * stsl-bench -- benchmarks.
 *
 *   stsl-bench --prior gmm [--dx 8,80,800] [--dy 1,2,4] [--seeds N | --seed S] [--n SAMPLES]
 *              [--solvers a,b,...] [--threads N] [--dump DIR] [--markdown FILE] [--quiet]
 *   a solver may carry options: "stsl:init=1:steps=100" (any solver parameter's name or alias,
 *   as the library names them: the solver options below, without the dashes)
 *
 * GMM mode: the exact-posterior testbed (MCGdiff benchmark, tests/support/testbed.h).  For every
 * d_x, d_y and seed, every solver draws --n samples (one batch run per instance) and is compared
 * with --n exact posterior samples by the sliced Wasserstein distance (sw, 256 projections).
 * Reference rows: "exact" (a second exact sample set: the noise floor of the distance) and
 * "prior" (exact prior samples: what ignoring y costs).  NFEs are per sample.
 * --dx/--dy/--seed pick one instance; --dump DIR writes that instance and every solver's samples
 * as CSV (weights, means, A, y, sigma_y, posterior weights/means, exact and solver samples).
 *
 * The image mode (--task/--solver/--n over Fashion-MNIST) is dispatched from main() and is
 * added separately.
 *
 * Exit status: 0 success, 2 bad usage, 1 other failure.
 */
#include "stsl.h"
#include "support/testbed.h"   /* tests/support: the exact-posterior testbed */
#include "common/timing.h"
#include "common/cli.h"            /* cli_tune_malloc */
#include "common/restore_util.h"   /* ru_set_solver_param */
#include "common/bench_images.h"   /* image mode (--task): examples/common/bench_images.c */

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_LIST 16

typedef struct gmm_opts {
    int dx[MAX_LIST], ndx;
    int dy[MAX_LIST], ndy;
    int seeds;
    long seed;          /* >= 0: that one seed */
    int n;
    const char *solvers[MAX_LIST];
    int nsolvers;
    int threads;
    const char *dump;
    const char *markdown;
    int quiet;
    int nrandom;            /* --random N[:SEED]: N extra instances, d_x 10..40, d_y 1..15 */
    uint64_t random_seed;
    char cmdline[2048];     /* the command as run, for the report */
} gmm_opts;

/* one testbed instance */
typedef struct inst {
    int dx, dy;
    uint64_t seed;
    int grid;               /* 1: from --dx x --dy x --seeds, 0: from --random */
    int a, b;               /* grid: the --dx and --dy list positions */
} inst;

/* --random: instance i of stream SEED, d_x uniform in 10..40, d_y in 1..min(15, d_x), seed in
 * 1000..9999 (splitmix64: the instance list is the same on every machine) */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inst random_instance(uint64_t seed, int i)
{
    uint64_t s = seed * 1000003ull + (uint64_t)i;
    inst r;
    r.dx = 10 + (int)(splitmix64(&s) % 31);
    const int dymax = r.dx < 15 ? r.dx : 15;
    r.dy = 1 + (int)(splitmix64(&s) % (uint64_t)dymax);
    r.seed = 1000 + splitmix64(&s) % 9000;
    r.grid = 0;
    r.a = r.b = -1;
    return r;
}

static int usage(const char *msg)
{
    if (msg) fprintf(stderr, "stsl-bench: %s\n", msg);
    fprintf(stderr,
            "usage: stsl-bench --prior gmm [--dx LIST] [--dy LIST] [--seeds N | --seed S] [--n N]\n"
            "                  [--solvers LIST] [--threads N] [--dump DIR] [--markdown FILE]\n"
            "       stsl-bench --task TASK --solver SOLVER --n N [--csv F]   (image mode)\n"
            "       stsl-bench --help   (every option of both modes)\n");
    return 2;
}

/* --help: both modes, every option described (stdout). */
static void help(void)
{
    printf("usage: stsl-bench --prior gmm [options]                           (GMM testbed)\n"
           "\n"
           "Exact-posterior testbed (Gaussian-mixture prior, linear operator): every solver draws\n"
           "--n samples per instance and is compared with exact posterior samples by the sliced\n"
           "Wasserstein distance; rows \"exact\" (noise floor) and \"prior\" (ignoring y) for reference.\n"
           "\n"
           "  --dx LIST          signal dimensions, comma-separated (default 8,80,800)\n"
           "  --dy LIST          measurement dimensions (default 1,2,4)\n"
           "  --seeds N          instances per (dx, dy) (default 3)\n"
           "  --seed S           one instance: this seed only\n"
           "  --random N[:SEED]  N more instances drawn at random (d_x 10..40, d_y 1..15; SEED\n"
           "                     default 1): the Markdown then reports every instance and the\n"
           "                     claims \"k of n instances\" (solver vs dps, vs the exact floor)\n"
           "  --n N              samples per solver and instance (2..100000, default 1000)\n"
           "  --solvers LIST     default ddim,dps,ldps,psld,stsl,stsl-biased,rmp,dps-mo; each may carry\n"
           "                     options: \"stsl:init=fresh-noise:steps=100\" (the solver options\n"
           "                     of image mode below, by name or alias, without the dashes)\n"
           "  --threads N        CPU threads (default 1)\n"
           "  --dump DIR         write one instance (--dx N --dy N --seed S) and all samples as CSV\n"
           "  --markdown FILE    also write the table as Markdown\n"
           "  --quiet            no per-instance lines\n"
           "  --help, --version\n"
           "\n");
    stsl_bench_images_help();
    printf("\nExit status: 0 success, 2 bad usage, 1 any other failure.\n");
}

static int parse_int_list(const char *s, int *out, int max)
{
    int n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        char *end;
        long v = strtol(tok, &end, 10);
        if (*end || v < 1 || v > 100000 || n >= max) return -1;
        out[n++] = (int)v;
    }
    return n;
}

static int parse_str_list(char *s, const char **out, int max)
{
    int n = 0;
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        if (n >= max) return -1;
        out[n++] = tok;
    }
    return n;
}

static int write_matrix(const char *dir, const char *name, const double *d, const float *f,
                        size_t rows, size_t cols)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    if (!fp) {
        fprintf(stderr, "stsl-bench: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (size_t r = 0; r < rows; r++) {
        for (size_t c = 0; c < cols; c++)
            fprintf(fp, "%s%.9g", c ? "," : "", d ? d[r * cols + c] : (double)f[r * cols + c]);
        fputc('\n', fp);
    }
    return fclose(fp) == 0 ? 0 : -1;
}

typedef struct cell {
    double me_sum;      /* posterior-mean error: ||mean(samples) - exact mean|| / sqrt(d_x) */
    double rel_sum;     /* relative: ||mean(samples) - exact mean|| / ||exact mean|| */
    double sw_sum, sw_sq;
    int count;
    double fwd, vjp, secs;
    int failed;
    char err[256];
} cell;

/* Solver spec: NAME[:key=value]...  e.g. "stsl:init=1:steps=100": key a solver parameter's name or
 * alias (stsl_param_from_name), value a number or one of its value names. */
static stsl_status apply_spec(stsl_solver *sv, const char *spec, char *err, size_t errsz)
{
    const char *p = strchr(spec, ':');
    while (p) {
        const char *kv = p + 1;
        p = strchr(kv, ':');
        size_t len = p ? (size_t)(p - kv) : strlen(kv);
        char buf[128];
        if (len >= sizeof buf) len = sizeof buf - 1;
        memcpy(buf, kv, len);
        buf[len] = 0;
        char *eq = strchr(buf, '=');
        if (!eq) { snprintf(err, errsz, "bad solver option \"%s\"", buf); return STSL_ERR_INVALID_ARG; }
        *eq = 0;
        stsl_param key;
        if (stsl_param_from_name(buf, &key) != STSL_OK || (int)key < 100) {
            snprintf(err, errsz, "unknown solver option \"%s\"", buf);
            return STSL_ERR_INVALID_ARG;
        }
        char perr[RU_ERR_LEN];
        double v;
        if (cli_parse_param_value(key, buf, eq + 1, &v, perr) != 0 || ru_set_solver_param(sv, buf, key, v, perr) != 0) {
            snprintf(err, errsz, "%.200s", perr);
            return STSL_ERR_INVALID_ARG;
        }
    }
    return STSL_OK;
}

/* one solver on one instance: n samples in batches of at most STSL_MAX_BATCH */
static stsl_status run_solver(stsl_context *ctx, const char *name, const stsl__testbed *tb,
                              stsl_score *score, stsl_operator *op, int n, uint64_t seed,
                              float *out, stsl_nfe *nfe, char *err, size_t errsz)
{
    stsl_solver *sv = NULL;
    char base[64];
    snprintf(base, sizeof base, "%.*s", (int)strcspn(name, ":"), name);
    stsl_status st = stsl_solver_create_by_name(ctx, base, &sv);
    if (st != STSL_OK) {
        snprintf(err, errsz, "%s", stsl_context_last_error(ctx));
        return st;
    }
    if (st == STSL_OK) st = stsl__testbed_configure(tb, sv);
    if (st == STSL_OK && (st = apply_spec(sv, name, err, errsz)) != STSL_OK) {
        stsl_solver_destroy(sv);
        return st;
    }
    if (st == STSL_OK) st = stsl_solver_set_int(sv, STSL_PARAM_SEED, (int64_t)seed);
    if (st == STSL_OK) st = stsl_solver_set_int(sv, STSL_PARAM_BATCH_LIMIT, 4096);
    float *y = (float *)malloc((size_t)n * tb->dy * sizeof(float));
    if (!y) {
        stsl_solver_destroy(sv);
        return STSL_ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) stsl__testbed_y(tb, y + (size_t)i * tb->dy);
    memset(nfe, 0, sizeof *nfe);
    double t0 = ex_clock_s(CLOCK_MONOTONIC);
    for (int i = 0; i < n && st == STSL_OK; i += STSL_MAX_BATCH) {
        int b = n - i < STSL_MAX_BATCH ? n - i : STSL_MAX_BATCH;
        stsl_solver_set_int(sv, STSL_PARAM_SEED, (int64_t)(seed + (uint64_t)i));
        st = stsl_solver_run(sv, score, op, NULL, y + (size_t)i * tb->dy, out + (size_t)i * tb->dx, b);
        stsl_nfe part = {.struct_size = sizeof(stsl_nfe)};
        stsl_solver_get_nfe(sv, &part);
        nfe->unet_forward += part.unet_forward;
        nfe->unet_vjp += part.unet_vjp;
    }
    nfe->seconds = ex_clock_s(CLOCK_MONOTONIC) - t0;
    if (st != STSL_OK) snprintf(err, errsz, "%s", stsl_solver_last_error(sv));
    free(y);
    stsl_solver_destroy(sv);
    return st;
}

/* Adds the posterior-mean errors of the n samples x to c: absolute per coordinate and relative. */
static void add_mean_err(cell *c, const stsl__testbed *tb, const float *x, int n)
{
    double e = 0, p = 0;
    for (size_t d = 0; d < tb->dx; d++) {
        double m = 0;
        for (int i = 0; i < n; i++) m += x[(size_t)i * tb->dx + d];
        m /= n;
        e += (m - tb->pmean[d]) * (m - tb->pmean[d]);
        p += tb->pmean[d] * tb->pmean[d];
    }
    c->me_sum += sqrt(e / (double)tb->dx);
    c->rel_sum += p > 0 ? sqrt(e / p) : NAN;
}

/* ||mean of the n samples x - exact posterior mean|| / ||exact posterior mean|| */
static double rel_err(const stsl__testbed *tb, const float *x, int n)
{
    cell c;
    memset(&c, 0, sizeof c);
    add_mean_err(&c, tb, x, n);
    return c.rel_sum;
}

/* k of n: instances where both a and b are finite and a <= f * b (kind: -1 all, 1 grid, 0 random) */
static void count_le(const inst *list, int ninst, const double *va, const double *vb, int ncol,
                     int ca, int cb, double f, int kind, int *k, int *nn)
{
    *k = *nn = 0;
    for (int i = 0; i < ninst; i++) {
        if (kind >= 0 && list[i].grid != kind) continue;
        const double a = va[(size_t)i * ncol + ca], b = vb ? vb[(size_t)i * ncol + cb] : 1.0;
        if (!isfinite(a) || !isfinite(b)) continue;
        (*nn)++;
        if (a <= f * b) (*k)++;
    }
}

static void claim_line(FILE *md, const char *what, const inst *list, int ninst, const double *va,
                       const double *vb, int ncol, int ca, int cb, double f)
{
    int k, nn, kg, ng, kr, nr;
    count_le(list, ninst, va, vb, ncol, ca, cb, f, -1, &k, &nn);
    count_le(list, ninst, va, vb, ncol, ca, cb, f, 1, &kg, &ng);
    count_le(list, ninst, va, vb, ncol, ca, cb, f, 0, &kr, &nr);
    fprintf(md, "| %s | **%d of %d** | %d of %d | %d of %d |\n", what, k, nn, kg, ng, kr, nr);
}

/* The Markdown report: every instance, and each claim as "k of n instances" beside the
 * exact-vs-exact floor (no means over instances or seeds). */
static void write_instances_md(FILE *md, const gmm_opts *o, const inst *list, int ninst,
                               const double *isw, const double *irel, const double *fwd,
                               const double *vjp, const char *date, const char *host, long ncpu,
                               double secs)
{
    const int nref = 2, ncol = nref + o->nsolvers;
    int dps = -1;
    for (int k = 0; k < o->nsolvers; k++)
        if (!strcmp(o->solvers[k], "dps")) dps = nref + k;
    fprintf(md, "# GMM exact-posterior benchmark\n\n");
    fprintf(md, "Generated by `%s` on %s, host %s (%ld CPUs), libstsl %s, %d thread(s); wall time "
                "%.0f s.\n\n", o->cmdline, date, host, ncpu, stsl_version(),
            o->threads > 0 ? o->threads : 1, secs);
    fprintf(md, "MCGdiff testbed (25-component GMM on the grid (-8i, -8j), unit covariances, A = U "
                "diag(s) V, s ~ sorted U(0,1), sigma_y = U(0,1) max s; tests/support/testbed.c). Every "
                "solver runs the library's defaults (the parameter table in src/solvers/solver_params.c) "
                "except where its name carries options (`name:key=value`, stsl-bench --help) and "
                "except stsl / stsl-biased, whose LAMBDA the testbed sets to the likelihood's "
                "1/(2 sigma_y^2) (stsl__testbed_configure; the library's default is 1). Per instance, "
                "%d solver samples vs %d exact posterior samples; sliced Wasserstein distance SW "
                "(256 projections). `exact` = a second set of %d exact samples: the floor of SW "
                "and of the mean error at this sample size; `prior` = exact prior samples (ignores "
                "y). Instances: the grid d_x {", o->n, o->n, o->n);
    for (int a = 0; a < o->ndx; a++) fprintf(md, "%s%d", a ? ", " : "", o->dx[a]);
    fprintf(md, "} x d_y {");
    for (int b = 0; b < o->ndy; b++) fprintf(md, "%s%d", b ? ", " : "", o->dy[b]);
    fprintf(md, "} x seeds (kind `grid`) and %d drawn at random (`--random`, kind `random`: d_x "
                "10..40, d_y 1..15, seed 1000..9999).\n\n", o->nrandom);
    fprintf(md, "## Network evaluations per sample\n\n| solver | UNet forwards | UNet VJPs |\n|---|---:|---:|\n");
    for (int k = 0; k < o->nsolvers; k++)
        fprintf(md, "| %s | %.0f | %.0f |\n", o->solvers[k], fwd[nref + k], vjp[nref + k]);
    fprintf(md, "\n## Claims, instance by instance\n\n");
    fprintf(md, "A claim holds on k of n instances (n counts the instances where both sides ran). "
                "The floor rows say how often the exact sampler itself meets the same bar.\n\n");
    fprintf(md, "| claim | all | grid | random |\n|---|---:|---:|---:|\n");
    char what[256];
    /* column 0 is the second exact set: its row says how often a sampler that draws from the
     * exact posterior meets the bar at this sample size (DPS's finite-sample SW can fall below
     * the exact floor) */
    if (dps >= 0)
        for (int k = 0; k < ncol; k++) {
            if (k == 1 || k == dps) continue;
            snprintf(what, sizeof what, "%s SW <= 1.5x dps SW",
                     k == 0 ? "exact (floor)" : o->solvers[k - nref]);
            claim_line(md, what, list, ninst, isw, isw, ncol, k, dps, 1.5);
        }
    for (int k = nref; k < ncol; k++) {
        snprintf(what, sizeof what, "%s SW <= 2x the exact floor", o->solvers[k - nref]);
        claim_line(md, what, list, ninst, isw, isw, ncol, k, 0, 2.0);
    }
    for (int k = 0; k < ncol; k++) {
        if (k == 1) continue;
        snprintf(what, sizeof what, "%s relative mean error <= 5 %%",
                 k == 0 ? "exact (floor)" : o->solvers[k - nref]);
        claim_line(md, what, list, ninst, irel, NULL, ncol, k, 0, 0.05);
    }
    fprintf(md, "\n## Sliced W2, every instance\n\n| # | kind | d_x | d_y | seed | exact (floor) | prior |");
    for (int k = 0; k < o->nsolvers; k++) fprintf(md, " %s |", o->solvers[k]);
    fprintf(md, "\n|---:|---|---:|---:|---:|---:|---:|");
    for (int k = 0; k < o->nsolvers; k++) fprintf(md, "---:|");
    fprintf(md, "\n");
    for (int i = 0; i < ninst; i++) {
        fprintf(md, "| %d | %s | %d | %d | %llu |", i + 1, list[i].grid ? "grid" : "random", list[i].dx,
                list[i].dy, (unsigned long long)list[i].seed);
        for (int k = 0; k < ncol; k++) {
            const double v = isw[(size_t)i * ncol + k], d = dps >= 0 ? isw[(size_t)i * ncol + dps] : NAN;
            if (!isfinite(v)) fprintf(md, " failed |");
            else if (k >= nref && k != dps && isfinite(d) && d > 0) fprintf(md, " %.3f (%.2fx) |", v, v / d);
            else fprintf(md, " %.3f |", v);
        }
        fprintf(md, "\n");
    }
    fprintf(md, "\n(x): the ratio to dps's SW on that instance.\n");
    fprintf(md, "\n## Relative posterior-mean error [%%], every instance\n\n"
                "||mean of the samples - exact posterior mean|| / ||exact posterior mean||; `exact` is "
                "the floor (%d exact samples' mean).\n\n| # | d_x | d_y | seed | exact (floor) | prior |", o->n);
    for (int k = 0; k < o->nsolvers; k++) fprintf(md, " %s |", o->solvers[k]);
    fprintf(md, "\n|---:|---:|---:|---:|---:|---:|");
    for (int k = 0; k < o->nsolvers; k++) fprintf(md, "---:|");
    fprintf(md, "\n");
    for (int i = 0; i < ninst; i++) {
        fprintf(md, "| %d | %d | %d | %llu |", i + 1, list[i].dx, list[i].dy, (unsigned long long)list[i].seed);
        for (int k = 0; k < ncol; k++) {
            const double v = irel[(size_t)i * ncol + k];
            if (isfinite(v)) fprintf(md, " %.1f |", 100.0 * v);
            else fprintf(md, " failed |");
        }
        fprintf(md, "\n");
    }
}

static int gmm_mode(const gmm_opts *o)
{
    stsl_context *ctx = NULL;
    stsl_schedule *sched = NULL;
    if (stsl_context_create(&ctx) != STSL_OK) return 1;
    if (o->threads > 0) stsl_context_set_threads(ctx, o->threads);
    if (stsl_schedule_create(ctx, STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 1000, &sched) != STSL_OK) {
        fprintf(stderr, "stsl-bench: %s\n", stsl_context_last_error(ctx));
        stsl_context_destroy(ctx);
        return 1;
    }
    const int nref = 2, ns = o->nsolvers, ncol = nref + ns;
    const int nseeds = o->seed >= 0 ? 1 : o->seeds;
    cell *cells = (cell *)calloc((size_t)o->ndx * o->ndy * ncol, sizeof(cell));
    if (!cells) return 1;
    int rc = 0;
    const int n = o->n;
    /* the instances: the grid (--dx x --dy x seeds), then --random */
    const int nmax = o->ndx * o->ndy * nseeds + o->nrandom;
    inst *list = (inst *)calloc((size_t)nmax, sizeof(inst));
    double *isw = (double *)malloc((size_t)nmax * ncol * sizeof(double));
    double *irel = (double *)malloc((size_t)nmax * ncol * sizeof(double));
    double *nfe_fwd = (double *)calloc((size_t)ncol, sizeof(double));
    double *nfe_vjp = (double *)calloc((size_t)ncol, sizeof(double));
    if (!list || !isw || !irel || !nfe_fwd || !nfe_vjp) {
        free(list); free(isw); free(irel); free(nfe_fwd); free(nfe_vjp); free(cells);
        return 1;
    }
    int ninst = 0;
    const double t_start = ex_clock_s(CLOCK_MONOTONIC);
    for (int a = 0; a < o->ndx; a++)
        for (int b = 0; b < o->ndy; b++)
            for (int s = 0; s < nseeds && o->dy[b] <= o->dx[a]; s++)
                list[ninst++] = (inst){o->dx[a], o->dy[b],
                                       o->seed >= 0 ? (uint64_t)o->seed : (uint64_t)(s + 1), 1, a, b};
    for (int i = 0; i < o->nrandom; i++) list[ninst++] = random_instance(o->random_seed, i);
    for (size_t i = 0; i < (size_t)nmax * ncol; i++) isw[i] = irel[i] = NAN;
    for (int ii = 0; ii < ninst; ii++) {
            {
                const int dx = list[ii].dx, dy = list[ii].dy;
                const uint64_t seed = list[ii].seed;
                /* grid instances also feed the mean table; --random ones only the per-instance one */
                cell *row = list[ii].grid ? cells + ((size_t)list[ii].a * o->ndy + list[ii].b) * ncol : NULL;
                cell scratch[MAX_LIST + 2];
                if (!row) {
                    memset(scratch, 0, sizeof scratch);
                    row = scratch;
                }
                double *psw = isw + (size_t)ii * ncol, *prel = irel + (size_t)ii * ncol;
                char err[STSL_TESTBED_ERR_SIZE] = "";
                stsl__testbed *tb = NULL;
                stsl_score *score = NULL;
                stsl_operator *op = NULL;
                if (stsl__testbed_mcg(dx, dy, seed, &tb, err) != STSL_OK ||
                    stsl__testbed_score(tb, ctx, sched, &score, err) != STSL_OK ||
                    stsl__testbed_operator(tb, ctx, &op, err) != STSL_OK) {
                    fprintf(stderr, "stsl-bench: testbed d_x %d d_y %d seed %llu: %s\n", dx, dy,
                            (unsigned long long)seed, err);
                    rc = 1;
                    goto next;
                }
                float *ex = (float *)malloc((size_t)n * dx * sizeof(float));
                float *ref = (float *)malloc((size_t)n * dx * sizeof(float));
                float *smp = (float *)malloc((size_t)n * dx * sizeof(float));
                if (!ex || !ref || !smp) {
                    free(ex); free(ref); free(smp);
                    rc = 1;
                    goto next;
                }
                stsl__testbed_sample_posterior(tb, (size_t)n, seed * 1000 + 1, ex);
                const uint64_t pseed = seed * 7919 + 17;
                /* reference rows */
                stsl__testbed_sample_posterior(tb, (size_t)n, seed * 1000 + 2, ref);
                double sw = stsl__sliced_wasserstein(ex, ref, (size_t)n, (size_t)dx, 256, pseed);
                row[0].sw_sum += sw; row[0].sw_sq += sw * sw; row[0].count++;
                add_mean_err(&row[0], tb, ref, n);
                psw[0] = sw;
                prel[0] = rel_err(tb, ref, n);
                stsl__testbed_sample_prior(tb, (size_t)n, seed * 1000 + 3, ref);
                sw = stsl__sliced_wasserstein(ex, ref, (size_t)n, (size_t)dx, 256, pseed);
                row[1].sw_sum += sw; row[1].sw_sq += sw * sw; row[1].count++;
                add_mean_err(&row[1], tb, ref, n);
                psw[1] = sw;
                prel[1] = rel_err(tb, ref, n);
                if (o->dump) {
                    mkdir(o->dump, 0777);
                    double sy = tb->sigma_y;
                    if (write_matrix(o->dump, "weights.csv", tb->w, NULL, (size_t)tb->k, 1) ||
                        write_matrix(o->dump, "means.csv", tb->mu, NULL, (size_t)tb->k, (size_t)dx) ||
                        write_matrix(o->dump, "A.csv", tb->A, NULL, (size_t)dy, (size_t)dx) ||
                        write_matrix(o->dump, "y.csv", tb->y, NULL, 1, (size_t)dy) ||
                        write_matrix(o->dump, "sigma_y.csv", &sy, NULL, 1, 1) ||
                        write_matrix(o->dump, "posterior_weights.csv", tb->pw, NULL, (size_t)tb->k, 1) ||
                        write_matrix(o->dump, "posterior_means.csv", tb->pm, NULL, (size_t)tb->k, (size_t)dx) ||
                        write_matrix(o->dump, "exact.csv", NULL, ex, (size_t)n, (size_t)dx))
                        rc = 1;
                }
                for (int k = 0; k < ns; k++) {
                    stsl_nfe nfe;
                    char e2[STSL_TESTBED_ERR_SIZE] = "";
                    cell *c = &row[nref + k];
                    stsl_status st = run_solver(ctx, o->solvers[k], tb, score, op, n,
                                                seed * 100003 + 11, smp, &nfe, e2, sizeof e2);
                    if (st != STSL_OK) {
                        c->failed = 1;
                        snprintf(c->err, sizeof c->err, "%.250s", e2);
                        if (!o->quiet)
                            fprintf(stderr, "stsl-bench: %s failed (d_x %d d_y %d seed %llu): %s\n",
                                    o->solvers[k], dx, dy, (unsigned long long)seed, e2);
                        continue;
                    }
                    sw = stsl__sliced_wasserstein(ex, smp, (size_t)n, (size_t)dx, 256, pseed);
                    c->sw_sum += sw; c->sw_sq += sw * sw; c->count++;
                    add_mean_err(c, tb, smp, n);
                    psw[nref + k] = sw;
                    prel[nref + k] = rel_err(tb, smp, n);
                    nfe_fwd[nref + k] = (double)nfe.unet_forward / n;
                    nfe_vjp[nref + k] = (double)nfe.unet_vjp / n;
                    c->fwd = (double)nfe.unet_forward / n;
                    c->vjp = (double)nfe.unet_vjp / n;
                    c->secs += nfe.seconds;
                    if (!o->quiet)
                        fprintf(stderr, "  d_x %4d d_y %d seed %llu %-24s sw %8.4f  (%.2f s)\n", dx, dy,
                                (unsigned long long)seed, o->solvers[k], sw, nfe.seconds);
                    if (o->dump) {
                        char name[128];
                        snprintf(name, sizeof name, "%s.csv", o->solvers[k]);
                        for (char *q = name; *q; q++)
                            if (*q == ':' || *q == '=' || *q == '/') *q = '_';
                        if (write_matrix(o->dump, name, NULL, smp, (size_t)n, (size_t)dx)) rc = 1;
                    }
                }
                free(ex); free(ref); free(smp);
            next:
                stsl_operator_destroy(op);
                stsl_score_destroy(score);
                stsl__testbed_destroy(tb);
            }
        }

    /* the table */
    FILE *md = NULL;
    if (o->markdown) {
        md = fopen(o->markdown, "w");
        if (!md) {
            fprintf(stderr, "stsl-bench: cannot write %s: %s\n", o->markdown, strerror(errno));
            rc = 1;
        }
    }
    char host[256] = "unknown";
    gethostname(host, sizeof host);
    time_t now = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("%-24s %5s %4s %20s %9s %7s %9s %9s %9s\n", "solver", "d_x", "d_y", "sliced W2 (mean±sd)",
           "mean err", "rel[%]", "fwd", "vjp", "time[s]");
    for (int a = 0; a < o->ndx; a++)
        for (int b = 0; b < o->ndy; b++) {
            if (o->dy[b] > o->dx[a]) continue;
            cell *row = cells + ((size_t)a * o->ndy + b) * ncol;
            for (int k = 0; k < ncol; k++) {
                cell *c = &row[k];
                const char *nm = k == 0 ? "exact" : k == 1 ? "prior" : o->solvers[k - nref];
                if (c->count == 0) {
                    printf("%-24s %5d %4d %20s\n", nm, o->dx[a], o->dy[b], "failed");
                    continue;
                }
                double mean = c->sw_sum / c->count;
                double var = c->sw_sq / c->count - mean * mean;
                double sd = c->count > 1 ? sqrt(fmax(0.0, var) * c->count / (c->count - 1)) : 0.0;
                double me = c->me_sum / c->count, rel = 100.0 * c->rel_sum / c->count;
                if (k < nref) {
                    printf("%-24s %5d %4d %11.4f ± %6.4f %9.4f %7.2f %9s %9s %9s\n", nm, o->dx[a], o->dy[b], mean, sd, me, rel, "-", "-", "-");
                } else {
                    printf("%-24s %5d %4d %11.4f ± %6.4f %9.4f %7.2f %9.0f %9.0f %9.2f%s\n", nm, o->dx[a], o->dy[b], mean,
                           sd, me, rel, c->fwd, c->vjp, c->secs / c->count, c->failed ? " (some runs failed)" : "");
                }
            }
        }
    if (md) {
        write_instances_md(md, o, list, ninst, isw, irel, nfe_fwd, nfe_vjp, date, host, ncpu,
                           ex_clock_s(CLOCK_MONOTONIC) - t_start);
        if (fclose(md) != 0) rc = 1;
    }
    free(list); free(isw); free(irel); free(nfe_fwd); free(nfe_vjp);
    free(cells);
    stsl_schedule_destroy(sched);
    stsl_context_destroy(ctx);
    return rc;
}

int main(int argc, char **argv)
{
    if (cli_start("stsl-bench", argc, argv, help)) return 0;
    for (int i = 1; i < argc; i++)   /* image mode: its own options, see bench_images.h */
        if (!strcmp(argv[i], "--task")) return stsl_bench_images_main(argc, argv);
    const char *prior = NULL, *task = NULL;
    gmm_opts o;
    memset(&o, 0, sizeof o);
    o.dx[0] = 8; o.dx[1] = 80; o.dx[2] = 800; o.ndx = 3;
    o.dy[0] = 1; o.dy[1] = 2; o.dy[2] = 4; o.ndy = 3;
    o.seeds = 3;
    o.seed = -1;
    o.n = 1000;
    {   /* before --solvers is cut up by strtok */
        size_t len = 0;
        o.cmdline[0] = 0;
        for (int i = 0; i < argc && len + 2 < sizeof o.cmdline; i++) {
            const char *w = i == 0 ? "stsl-bench" : argv[i];
            int wr = snprintf(o.cmdline + len, sizeof o.cmdline - len, "%s%s", i ? " " : "", w);
            if (wr < 0) break;
            len += (size_t)wr;
        }
        if (len >= sizeof o.cmdline) len = sizeof o.cmdline - 1;
    }
    o.threads = 1;
    static char all[] = "ddim,dps,ldps,psld,stsl,stsl-biased,rmp,dps-mo";
    char *solver_list = all;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED()                                             \
    do {                                                   \
        if (!v) return usage("missing value for an option"); \
        i++;                                               \
    } while (0)
        if (!strcmp(a, "--prior")) { NEED(); prior = v; }
        else if (!strcmp(a, "--task")) { NEED(); task = v; }
        else if (!strcmp(a, "--dx")) { NEED(); if ((o.ndx = parse_int_list(v, o.dx, MAX_LIST)) < 1) return usage("bad --dx"); }
        else if (!strcmp(a, "--dy")) { NEED(); if ((o.ndy = parse_int_list(v, o.dy, MAX_LIST)) < 1) return usage("bad --dy"); }
        else if (!strcmp(a, "--seeds")) { NEED(); o.seeds = atoi(v); if (o.seeds < 1) return usage("bad --seeds"); }
        else if (!strcmp(a, "--seed")) { NEED(); o.seed = atol(v); if (o.seed < 0) return usage("bad --seed"); }
        else if (!strcmp(a, "--n")) { NEED(); o.n = atoi(v); if (o.n < 2 || o.n > 100000) return usage("bad --n"); }
        else if (!strcmp(a, "--threads")) { NEED(); o.threads = atoi(v); if (o.threads < 1 || o.threads > 256) return usage("bad --threads"); }
        else if (!strcmp(a, "--solvers")) { NEED(); solver_list = argv[i]; }
        else if (!strcmp(a, "--dump")) { NEED(); o.dump = v; }
        else if (!strcmp(a, "--random")) {
            NEED();
            char *end;
            long nr = strtol(v, &end, 10);
            if (nr < 1 || nr > 1000 || (*end && *end != ':')) return usage("bad --random");
            o.nrandom = (int)nr;
            o.random_seed = *end == ':' ? strtoull(end + 1, NULL, 10) : 1;
        }
        else if (!strcmp(a, "--markdown")) { NEED(); o.markdown = v; }
        else if (!strcmp(a, "--quiet")) o.quiet = 1;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { help(); return 0; }
        else return usage("unknown option");
#undef NEED
    }
    if (prior && task) return usage("--prior and --task are exclusive");
    if (prior) {
        if (strcmp(prior, "gmm")) return usage("unknown --prior (known: gmm)");
        if ((o.nsolvers = parse_str_list(solver_list, o.solvers, MAX_LIST)) < 1) return usage("bad --solvers");
        if (o.dump && (o.ndx != 1 || o.ndy != 1 || o.seed < 0))
            return usage("--dump needs one instance: --dx N --dy N --seed S");
        return gmm_mode(&o);
    }
    if (task) {
        fprintf(stderr, "stsl-bench: the image mode (--task) is not built in yet\n");
        return 1;
    }
    return usage("give --prior gmm or --task TASK");
}
