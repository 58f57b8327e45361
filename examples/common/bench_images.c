/*
 * bench_images.c -- stsl-bench image mode; see bench_images.h.
 *
 * Protocol (fixed, so that rows of different runs compare):
 *  - images: the first N indices of data/bench_indices.txt (sorted ascending), from the
 *    Fashion-MNIST test split, mapped to [-1, 1];
 *  - one operator per run (its masks/kernels from --seed); the measurement of test image `idx` is
 *    y = A x + noise with noise seed (--seed + idx), so it does not depend on N or the batching;
 *  - the solver runs --batch images at a time (stsl_solver_run with a batch; sample i of a batch
 *    uses the random streams (seed, i)); with --samples K each image is restored K times and the
 *    reported restoration is the pixelwise mean of the K samples (its NFEs include all K);
 *  - PSNR and SSIM on [0, 1] after clipping (SSIM: 11x11 Gaussian window, sigma 1.5, K1 0.01,
 *    K2 0.03, valid region); NFEs per image (a batch's ledger divided by its image count), wall
 *    time per image likewise.
 */
#include "common/bench_images.h"
#include "common/metrics.h"
#include "common/restore_util.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "stsl.h"

#define BI_MAX_N 10000

typedef struct bi_opts {
    const char *task, *solver, *csv, *out, *model, *vae, *device, *indices, *data, *label;
    int n, threads, batch, samples, quiet;
    uint64_t seed;
    double noise;
    cli_task_opts task_opts;
    ru_settings solver_opts;
} bi_opts;

void stsl_bench_images_help(void)
{
    printf("usage: stsl-bench --task TASK --solver SOLVER --n N [options]      (image mode)\n"
           "\n"
           "Restores the first N images of the fixed Fashion-MNIST test list and prints PSNR,\n"
           "SSIM, NFEs and wall time per image (table on stdout, CSV with --csv).\n"
           "\n"
           "tasks:   %s\n"
           "%s"
           "solvers: %s\n"
           "\n"
           "  --n N              images (1..%d, at most the list's length; default 20)\n"
           "  --csv FILE         per-image rows (appended; header when new)\n"
           "  --out DIR          write clean.f32, restored.f32, measured.f32 (N x C x H x W float32,\n"
           "                     [-1,1]), items.csv (index,label), run.txt and PNGs for\n"
           "                     scripts/bench_eval.py and scripts/bench_report.py\n"
           "  --label NAME       configuration name in the CSV (default SOLVER@STEPS)\n"
           "  --samples K        restore each image K times, report the mean (default 1)\n"
           "  --batch B          images per solver run (default 10; results depend on it: sample i of a\n"
           "                     run uses the random streams (seed, i))\n"
           "  --seed S           operator and sampler seed (default 0)\n"
           "  --noise SIGMA      measurement noise (default: the task's)\n"
           "  --model F --vae F  priors (default: the bundled ones, as stsl-restore)\n"
           "  --device D         cpu | auto | cuda | cuda:N (default " STSL_DEFAULT_DEVICE ", the library's)\n"
           "  --threads N        CPU threads (default 1)\n"
           "  --indices FILE     test index list (default data/bench_indices.txt)\n"
           "  --data DIR         directory of t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz\n"
           "                     (default $STSL_FMNIST_DIR or /usr/share/datasets/fashion-mnist)\n"
           "  --quiet            no table\n"
           "\n"
           "solver options:\n",
           stsl_operator_names(), CLI_SR_NOTE, stsl_solver_names(), BI_MAX_N);
    ru_print_solver_flags(stdout);
    printf("\n");
    cli_print_task_help(stdout);
}

static int bi_parse(int argc, char **argv, bi_opts *o)
{
    memset(o, 0, sizeof *o);
    o->n = 20;
    o->threads = 1;
    o->batch = 10;
    o->samples = 1;
    o->noise = -1.0;
    char err[RU_ERR_LEN];
    for (int i = 1; i < argc;) {
        const char *a = argv[i];
        int r = ru_take_solver_flag(argc, argv, &i, &o->solver_opts, err);
        if (r == 0) r = cli_take_task_option(argc, argv, &i, &o->task_opts, err);
        if (r < 0) return cli_usage_error("%s", err);
        if (r > 0) continue;
        if (!strcmp(a, "--quiet")) { o->quiet = 1; i++; continue; }
        if (i + 1 >= argc) return cli_usage_error("unknown option or missing value: '%s'", a);
        const char *v = argv[i + 1];
        char *end = NULL;
        long long iv = 0;
        errno = 0;
        int is_num = 0;
        if (*v) {
            iv = strtoll(v, &end, 10);
            is_num = !*end && !errno;
        }
#define INT_OPT(flag, field, lo, hi)                                                   \
    if (!strcmp(a, flag)) {                                                            \
        if (!is_num || iv < (lo) || iv > (hi)) return cli_usage_error("%s: bad value '%s'", flag, v); \
        o->field = (int)iv;                                                            \
        i += 2;                                                                        \
        continue;                                                                      \
    }
        INT_OPT("--n", n, 1, BI_MAX_N)
        INT_OPT("--threads", threads, 1, 256)
        INT_OPT("--batch", batch, 1, 1024)
        INT_OPT("--samples", samples, 1, 256)
#undef INT_OPT
        if (!strcmp(a, "--seed")) {
            if (!is_num || iv < 0 || iv > (1ll << 40)) return cli_usage_error("--seed: bad value '%s'", v);
            o->seed = (uint64_t)iv;
            i += 2;
            continue;
        }
        if (!strcmp(a, "--noise")) {
            double d = strtod(v, &end);
            if (!*v || *end || !(d >= 0 && d <= 100)) return cli_usage_error("--noise: bad value '%s'", v);
            o->noise = d;
            i += 2;
            continue;
        }
        const char **dst = NULL;
        if (!strcmp(a, "--task")) dst = &o->task;
        else if (!strcmp(a, "--solver")) dst = &o->solver;
        else if (!strcmp(a, "--csv")) dst = &o->csv;
        else if (!strcmp(a, "--out")) dst = &o->out;
        else if (!strcmp(a, "--model")) dst = &o->model;
        else if (!strcmp(a, "--vae")) dst = &o->vae;
        else if (!strcmp(a, "--device")) dst = &o->device;
        else if (!strcmp(a, "--indices")) dst = &o->indices;
        else if (!strcmp(a, "--data")) dst = &o->data;
        else if (!strcmp(a, "--label")) dst = &o->label;
        if (!dst) return cli_usage_error("unknown option '%s'", a);
        *dst = v;
        i += 2;
    }
    if (!o->task) return cli_usage_error("--task is required");
    if (!o->solver) return cli_usage_error("--solver is required");
    return 0;
}

/* ---- data ----------------------------------------------------------------------------------- */

static unsigned char *read_gz(const char *path, size_t *len)
{
    gzFile f = gzopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            unsigned char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        int r = gzread(f, buf + n, (unsigned)(cap - n > (1u << 30) ? (1u << 30) : cap - n));
        if (r < 0) {
            free(buf);
            buf = NULL;
            break;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    gzclose(f);
    *len = n;
    return buf;
}

static uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int exe_relative(const char *rel, char *buf, size_t n)
{
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return -1;
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash) return -1;
    *slash = '\0';
    if (snprintf(buf, n, "%.3800s/%s", exe, rel) >= (int)n) return -1;
    return access(buf, R_OK) == 0 ? 0 : -1;
}

static int read_indices(const char *path, int *idx, int max)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '#' || *p == '\n' || !*p) continue;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v >= 10000000) {
            fclose(f);
            return -2;
        }
        idx[n++] = (int)v;
    }
    fclose(f);
    return n;
}

static int write_f32(const char *dir, const char *name, const float *x, size_t n)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%.3900s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(x, sizeof(float), n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

/* ---- main ---------------------------------------------------------------------------------- */

int stsl_bench_images_main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            stsl_bench_images_help();
            return 0;
        }
    bi_opts o;
    int rc = bi_parse(argc, argv, &o);
    if (rc) return rc;

    /* index list and data set */
    char ipath[PATH_MAX];
    if (o.indices) snprintf(ipath, sizeof ipath, "%s", o.indices);
    else if (exe_relative("../data/bench_indices.txt", ipath, sizeof ipath) != 0 &&
             exe_relative("../share/stsl/data/bench_indices.txt", ipath, sizeof ipath) != 0)
        snprintf(ipath, sizeof ipath, "data/bench_indices.txt");
    int *idx = malloc(BI_MAX_N * sizeof *idx);
    if (!idx) return cli_failure("out of memory");
    int nidx = read_indices(ipath, idx, BI_MAX_N);
    if (nidx < 0) {
        free(idx);
        return cli_failure("cannot read the index list %s%s", ipath, nidx == -2 ? " (bad line)" : "");
    }
    if (o.n > nidx) {
        free(idx);
        return cli_usage_error("--n %d: the index list %s has %d entries", o.n, ipath, nidx);
    }
    const char *ddir = o.data ? o.data : getenv("STSL_FMNIST_DIR");
    if (!ddir || !*ddir) ddir = "/usr/share/datasets/fashion-mnist";
    char img_path[PATH_MAX], lab_path[PATH_MAX];
    snprintf(img_path, sizeof img_path, "%.3900s/t10k-images-idx3-ubyte.gz", ddir);
    snprintf(lab_path, sizeof lab_path, "%.3900s/t10k-labels-idx1-ubyte.gz", ddir);
    size_t ilen = 0, llen = 0;
    unsigned char *images = read_gz(img_path, &ilen);
    unsigned char *labels = read_gz(lab_path, &llen);
    if (!images || !labels || ilen < 16 || llen < 8 || be32(images) != 0x803 ||
        be32(labels) != 0x801) {
        free(images);
        free(labels);
        free(idx);
        return cli_failure("cannot read the Fashion-MNIST test set (%s, %s): install Debian's "
                       "dataset-fashion-mnist or pass --data DIR",
                       img_path, lab_path);
    }
    uint32_t count = be32(images + 4), rows = be32(images + 8), cols = be32(images + 12);
    if (ilen < 16 + (size_t)count * rows * cols || llen < 8 + (size_t)be32(labels + 4) ||
        be32(labels + 4) != count) {
        free(images);
        free(labels);
        free(idx);
        return cli_failure("the Fashion-MNIST test files are truncated");
    }
    for (int i = 0; i < o.n; i++)
        if ((uint32_t)idx[i] >= count) {
            int bad = idx[i];
            free(images);
            free(labels);
            free(idx);
            return cli_failure("index %d in %s is beyond the %u test images", bad, ipath, count);
        }

    stsl_context *ctx = NULL;
    if (stsl_context_create(&ctx) != STSL_OK) return cli_failure("cannot create a context");
    stsl_context_set_threads(ctx, o.threads);
    /* the library reads the device string; no --device: its default */
    if (o.device && stsl_context_set_device(ctx, o.device) != STSL_OK) {
        int rc = cli_usage_error("--device: %s", stsl_context_last_error(ctx));
        stsl_context_destroy(ctx);
        return rc;
    }
    ru_models m;
    char err[RU_ERR_LEN];
    stsl_operator *op = NULL;
    float *clean = NULL, *meas = NULL, *restored = NULL, *y = NULL, *xb = NULL, *yview = NULL;
    double *psnr = NULL, *ssim = NULL;
    FILE *csv = NULL;
    int loaded = 0;
    rc = CLI_EXIT_FAIL;
    if (ru_load_models(ctx, o.solver, o.model, o.vae, &m, err) != 0) {
        cli_failure("%s", err);
        goto done;
    }
    loaded = 1;
    if (m.image.height != (int)rows || m.image.width != (int)cols || m.image.channels != 1) {
        cli_failure("the model restores %dx%dx%d images; the data set has 1x%ux%u", m.image.channels,
                m.image.height, m.image.width, rows, cols);
        goto done;
    }
    /* operator */
    int code = cli_make_operator(ctx, o.task, m.image, &o.task_opts, o.seed, o.noise, &op, err);
    if (code != CLI_EXIT_OK) {
        if (code == CLI_EXIT_USAGE) rc = cli_usage_error("%s", err);
        else cli_failure("%s", err);
        goto done;
    }
    stsl_shape ys;
    stsl_operator_output_shape(op, &ys);
    const size_t d = (size_t)m.image.channels * m.image.height * m.image.width;
    const size_t dy = (size_t)ys.channels * ys.height * ys.width;
    const int N = o.n, K = o.samples;
    int B = o.batch < N ? o.batch : N;
    clean = malloc((size_t)N * d * sizeof(float));
    meas = malloc((size_t)N * d * sizeof(float));
    restored = calloc((size_t)N * d, sizeof(float));
    y = malloc((size_t)B * K * dy * sizeof(float));
    xb = malloc((size_t)B * K * d * sizeof(float));
    yview = malloc(dy * sizeof(float));
    psnr = calloc((size_t)N, sizeof(double));
    ssim = calloc((size_t)N, sizeof(double));
    if (!clean || !meas || !restored || !y || !xb || !yview || !psnr || !ssim) {
        cli_failure("out of memory");
        goto done;
    }
    for (int i = 0; i < N; i++)
        for (size_t k = 0; k < d; k++)
            clean[(size_t)i * d + k] = images[16 + (size_t)idx[i] * d + k] / 127.5f - 1.0f;

    /* solver, validated once */
    stsl_solver *solver = NULL;
    if (stsl_solver_create_by_name(ctx, o.solver, &solver) != STSL_OK) {
        rc = cli_usage_error("%s", stsl_context_last_error(ctx));
        goto done;
    }
    if (stsl_solver_set_int(solver, STSL_PARAM_SEED, (int64_t)o.seed) != STSL_OK ||
        stsl_solver_set_int(solver, STSL_PARAM_BATCH_LIMIT, STSL_MAX_BATCH) != STSL_OK) {
        rc = cli_usage_error("solver %s: %s", o.solver, stsl_solver_last_error(solver));
        stsl_solver_destroy(solver);
        goto done;
    }
    if (ru_apply_solver(solver, &o.solver_opts, err) != 0) {
        rc = cli_usage_error("solver %s: %s", o.solver, err);
        stsl_solver_destroy(solver);
        goto done;
    }
    /* steps, inner steps and the label are read after the first run: some defaults follow the
     * operator (stsl_solver_get_int), which the getters know once a run has used it */
    int64_t steps = 0, inner = 0;
    char label[128] = "";

    if (o.csv) {
        struct stat st;
        int fresh = stat(o.csv, &st) != 0 || st.st_size == 0;
        csv = fopen(o.csv, "a");
        if (!csv) {
            stsl_solver_destroy(solver);
            cli_failure("cannot write %s: %s", o.csv, strerror(errno));
            goto done;
        }
        if (fresh)
            fprintf(csv, "task,solver,config,steps,samples,index,label,psnr,ssim,unet_forward,unet_vjp,"
                         "decoder_forward,decoder_vjp,unet_calls,seconds\n");
    }
    double sum_p = 0, sum_s = 0, sum_t = 0, sum_nfe[4] = {0, 0, 0, 0};
    for (int b0 = 0; b0 < N; b0 += B) {
        int nb = N - b0 < B ? N - b0 : B;
        for (int i = 0; i < nb; i++) {
            int g = b0 + i;
            if (stsl_operator_measure(op, clean + (size_t)g * d, yview, 1, o.seed + (uint64_t)idx[g]) !=
                STSL_OK) {
                stsl_solver_destroy(solver);
                cli_failure("degrading image %d: %s", idx[g], stsl_operator_last_error(op));
                goto done;
            }
            for (int k = 0; k < K; k++) memcpy(y + ((size_t)i * K + k) * dy, yview, dy * sizeof(float));
            /* measurement as an image for the report: y itself when image-sized, else B y */
            if (dy == d) memcpy(meas + (size_t)g * d, yview, d * sizeof(float));
            else stsl_operator_backproject(op, yview, meas + (size_t)g * d, 1);
        }
        double t0 = ru_now();
        stsl_status st = stsl_solver_run(solver, m.score, op, m.ae, y, xb, nb * K);
        double dt = ru_now() - t0;
        stsl_nfe nfe;
        memset(&nfe, 0, sizeof nfe);
        nfe.struct_size = sizeof nfe;
        stsl_solver_get_nfe(solver, &nfe);
        if (st != STSL_OK) {
            cli_failure("solver %s failed on images %d..%d: %s", o.solver, idx[b0], idx[b0 + nb - 1],
                    *stsl_solver_last_error(solver) ? stsl_solver_last_error(solver)
                                                    : stsl_strerror(st));
            stsl_solver_destroy(solver);
            goto done;
        }
        if (b0 == 0) {
            stsl_solver_get_int(solver, STSL_PARAM_STEPS, &steps);
            if (stsl_solver_get_int(solver, STSL_PARAM_INNER_STEPS, &inner) != STSL_OK) inner = 0;
            if (o.label) snprintf(label, sizeof label, "%s", o.label);
            else if (K > 1) snprintf(label, sizeof label, "%s@%lldx%d", o.solver, (long long)steps, K);
            else snprintf(label, sizeof label, "%s@%lld", o.solver, (long long)steps);
            if (!o.quiet) {
                printf("# stsl-bench image mode: task %s, solver %s (%s), %d image(s), seed %llu, prior %s%s%s\n",
                       o.task, o.solver, label, N, (unsigned long long)o.seed, m.model_path,
                       m.ae ? " + " : "", m.ae ? m.vae_path : "");
                printf("%6s %5s %8s %7s %10s %10s %10s %10s %9s\n", "index", "class", "psnr", "ssim",
                       "unet_fwd", "unet_vjp", "dec_fwd", "dec_vjp", "seconds");
                fflush(stdout);
            }
        }
        double per[5] = {(double)nfe.unet_forward / nb, (double)nfe.unet_vjp / nb,
                         (double)nfe.decoder_forward / nb, (double)nfe.decoder_vjp / nb,
                         (double)nfe.unet_calls / nb};
        for (int i = 0; i < nb; i++) {
            int g = b0 + i;
            float *r = restored + (size_t)g * d;
            for (int k = 0; k < K; k++)
                for (size_t q = 0; q < d; q++) r[q] += xb[((size_t)i * K + k) * d + q] / (float)K;
            psnr[g] = metric_psnr(clean + (size_t)g * d, r, (size_t)d);
            ssim[g] = metric_ssim(clean + (size_t)g * d, r, m.image.channels, m.image.height, m.image.width);
            int lab = labels[8 + idx[g]];
            double secs = dt / nb;
            sum_p += psnr[g];
            sum_s += ssim[g];
            sum_t += secs;
            for (int q = 0; q < 4; q++) sum_nfe[q] += per[q];
            if (!o.quiet)
                printf("%6d %5d %8.3f %7.4f %10.1f %10.1f %10.1f %10.1f %9.3f\n", idx[g], lab, psnr[g],
                       ssim[g], per[0], per[1], per[2], per[3], secs);
            if (csv)
                fprintf(csv, "%s,%s,%s,%lld,%d,%d,%d,%.4f,%.5f,%.1f,%.1f,%.1f,%.1f,%.1f,%.4f\n", o.task,
                        o.solver, label, (long long)steps, K, idx[g], lab, psnr[g], ssim[g], per[0],
                        per[1], per[2], per[3], per[4], secs);
        }
        if (!o.quiet) fflush(stdout);
        if (csv) fflush(csv);
    }
    stsl_solver_destroy(solver);
    if (!o.quiet) {
        double sd_p = 0;
        for (int i = 0; i < N; i++) sd_p += (psnr[i] - sum_p / N) * (psnr[i] - sum_p / N);
        sd_p = N > 1 ? sqrt(sd_p / (N - 1)) : 0.0;
        printf("%6s %5s %8.3f %7.4f %10.1f %10.1f %10.1f %10.1f %9.3f\n", "mean", "", sum_p / N,
               sum_s / N, sum_nfe[0] / N, sum_nfe[1] / N, sum_nfe[2] / N, sum_nfe[3] / N, sum_t / N);
        printf("# %s %s: PSNR %.3f +- %.3f (sd over images), SSIM %.4f\n", o.task, label, sum_p / N,
               sd_p, sum_s / N);
    }
    if (o.out) {
        char path[PATH_MAX];
        if (mkdir(o.out, 0777) != 0 && errno != EEXIST) {
            cli_failure("cannot create %s: %s", o.out, strerror(errno));
            goto done;
        }
        if (write_f32(o.out, "clean.f32", clean, (size_t)N * d) || write_f32(o.out, "restored.f32", restored, (size_t)N * d) ||
            write_f32(o.out, "measured.f32", meas, (size_t)N * d)) {
            cli_failure("cannot write the arrays under %s", o.out);
            goto done;
        }
        snprintf(path, sizeof path, "%.3900s/items.csv", o.out);
        FILE *f = fopen(path, "w");
        if (!f) {
            cli_failure("cannot write %s", path);
            goto done;
        }
        fprintf(f, "index,label,psnr,ssim\n");
        for (int i = 0; i < N; i++) fprintf(f, "%d,%d,%.4f,%.5f\n", idx[i], labels[8 + idx[i]], psnr[i], ssim[i]);
        fclose(f);
        snprintf(path, sizeof path, "%.3900s/run.txt", o.out);
        if ((f = fopen(path, "w"))) {
            fprintf(f, "task = %s\nsolver = %s\nconfig = %s\nsteps = %lld\ninner_steps = %lld\n"
                       "samples = %d\nn = %d\n"
                       "shape = %d,%d,%d\nseed = %llu\nmodel = %s\nvae = %s\npsnr = %.4f\nssim = %.5f\n"
                       "unet_forward = %.1f\nunet_vjp = %.1f\ndecoder_forward = %.1f\n"
                       "decoder_vjp = %.1f\nseconds = %.4f\n",
                    o.task, o.solver, label, (long long)steps, (long long)inner, K, N, m.image.channels, m.image.height,
                    m.image.width, (unsigned long long)o.seed, m.model_path, m.ae ? m.vae_path : "",
                    sum_p / N, sum_s / N, sum_nfe[0] / N, sum_nfe[1] / N, sum_nfe[2] / N,
                    sum_nfe[3] / N, sum_t / N);
            fclose(f);
        }
        /* PNGs: restoration and a montage clean | measurement | restoration per image */
        snprintf(path, sizeof path, "%.3900s/png", o.out);
        mkdir(path, 0777);
        for (int i = 0; i < N; i++) {
            stsl_image *t[3] = {NULL, NULL, NULL}, *mont = NULL;
            int ok = 1;
            for (int q = 0; q < 3 && ok; q++) {
                ok = stsl_image_create(m.image.channels, m.image.height, m.image.width, &t[q]) == STSL_OK;
                if (ok) memcpy(t[q]->data, (q == 0 ? clean : q == 1 ? meas : restored) + (size_t)i * d,
                               d * sizeof(float));
            }
            if (ok) {
                snprintf(path, sizeof path, "%.3900s/png/%d.png", o.out, idx[i]);
                ok = stsl_image_save(ctx, t[2], path, STSL_FORMAT_PNG, 8, 0) == STSL_OK;
            }
            if (ok && ru_montage(t, 3, 2, &mont, err) == 0) {
                snprintf(path, sizeof path, "%.3900s/png/%d-montage.png", o.out, idx[i]);
                stsl_image_save(ctx, mont, path, STSL_FORMAT_PNG, 8, 0);
            }
            stsl_image_destroy(mont);
            for (int q = 0; q < 3; q++) stsl_image_destroy(t[q]);
            if (!ok) {
                cli_failure("cannot write PNGs under %s", o.out);
                goto done;
            }
        }
    }
    rc = CLI_EXIT_OK;
done:
    if (csv) fclose(csv);
    stsl_operator_destroy(op);
    if (loaded) ru_models_free(&m);
    stsl_context_destroy(ctx);
    free(clean);
    free(meas);
    free(restored);
    free(y);
    free(xb);
    free(yview);
    free(psnr);
    free(ssim);
    free(images);
    free(labels);
    free(idx);
    return rc;
}
