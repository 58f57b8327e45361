/*
 * stsl-restore -- restore a degraded image by posterior sampling with a diffusion prior.
 *
 *   stsl-restore INPUT OUTPUT --task TASK --solver SOLVER [options]
 *
 * INPUT is a clean PNG/JPEG that the tool degrades itself with the task and seed (or, with
 * --measured, the measurement y), OUTPUT the restored PNG/JPEG.  Batch mode: INPUT a directory of
 * images or a manifest file (one path per line, '#' comments) and OUTPUT a directory; outputs that
 * exist are skipped (resume), OUTPUT/results.csv gets one row per image, --shard I/N keeps the
 * items whose index in sorted order is I modulo N.  Run with --help for every option.
 *
 * Exit status: 0 success, 2 bad usage, 1 any other failure (one line on stderr saying why).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/restore_util.h"
#include "stsl.h"

typedef struct options {
    const char *input, *output;
    const char *task, *solver;
    const char *model, *vae, *device, *montage;
    int steps, threads, montage_scale;
    uint64_t seed;
    double noise;
    int measured, quiet, verbose;
    ru_fit fit;                 /* --resize / --crop: fit an input of another size to the model */
    int shard_i, shard_n;
    cli_task_opts task_opts;
    ru_settings solver_opts;
} options;

static volatile sig_atomic_t g_interrupted = 0;
static stsl_solver *volatile g_running = NULL;

static void on_signal(int sig)
{
    (void)sig;
    g_interrupted = 1;
    stsl_solver *s = g_running;
    if (s) stsl_solver_cancel(s);
}

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "stsl-restore: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see stsl-restore --help)\n");
    return RU_EXIT_USAGE;
}

static int failure(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "stsl-restore: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    return RU_EXIT_FAIL;
}

static void print_help(void)
{
    printf("usage: stsl-restore INPUT OUTPUT --task TASK --solver SOLVER [options]\n"
           "\n"
           "Restores a degraded image by posterior sampling with a diffusion prior.  INPUT is a clean\n"
           "PNG or JPEG, degraded here with TASK and --seed (or, with --measured, the measurement\n"
           "itself); OUTPUT is the restored PNG or JPEG.\n"
           "Batch mode: INPUT a directory of images or a manifest file (one path per line, '#'\n"
           "comments; relative paths from the current directory or the manifest's), OUTPUT a\n"
           "directory: OUTPUT/<name>.png per input, existing outputs are skipped (resume), one row\n"
           "per image appended to OUTPUT/results.csv.\n"
           "\n"
           "tasks:   %s\n"
           "solvers: %s\n"
           "\n"
           "options:\n"
           "  --task TASK          degradation (required)\n"
           "  --solver SOLVER      posterior sampler (required)\n"
           "  --steps T            reverse steps (default: the solver's, e.g. stsl 50, dps 1000)\n"
           "  --model UNET.pt      diffusion prior (default: bundled models/fmnist-ldm.pt for\n"
           "                       stsl stsl-biased psld ldps, models/fmnist-ddpm.pt otherwise)\n"
           "  --vae VAE.pt         autoencoder of a latent prior (default: the prior's pairs_with,\n"
           "                       else the bundled models/fmnist-vae.pt)\n"
           "  --device D           auto | cpu | cuda | cuda:N (default auto)\n"
           "  --threads N          CPU threads (default 1: the bundled 28x28 models gain little\n"
           "                       from more, and a busy machine loses a lot)\n"
           "  --seed N             seed of the degradation and the sampler (default 0)\n"
           "  --noise SIGMA        measurement noise std on the [-1,1] scale (default: the task's)\n"
           "  --measured           INPUT is already the measurement y (e.g. from stsl-degrade: give the\n"
           "                       same --seed and task options, they fix masks and kernels)\n"
           "  --resize             scale an INPUT whose size differs from the model's to that size\n"
           "                       (aspect ratio not kept; off by default: a mismatch is an error)\n"
           "  --crop               cut the centre of such an INPUT to the model's aspect ratio, then\n"
           "                       scale it (the output has the model's size)\n"
           "  --montage FILE       also write clean | measurement | restoration side by side\n"
           "                       (batch mode: a directory)\n"
           "  --montage-scale N    enlarge the montage N times (nearest; default 1)\n"
           "  --shard I/N          batch mode: only items whose index %% N == I (sorted order)\n"
           "  --quiet              no progress bar, no summary\n"
           "  --verbose            models, settings and library messages on stderr\n"
           "  --help, --version\n"
           "\n"
           "solver options (each applies to the solvers named):\n",
           stsl_operator_names(), stsl_solver_names());
    ru_print_flags(RU_SOLVER_FLAGS, stdout);
    printf("\n");
    cli_print_task_help(stdout);
    printf("\nModels: --model/--vae, else the bundled ones from $STSL_MODEL_DIR, <bin>/../models,\n"
           "<bin>/../share/stsl/models, /usr/local/share/stsl/models or /usr/share/stsl/models.\n"
           "Your own guided-diffusion / Stable Diffusion checkpoints: docs/real-models.md.\n"
           "Exit status: 0 success, 2 bad usage, 1 any other failure.\n");
}

static int name_in_list(const char *name, const char *list)
{
    size_t n = strlen(name);
    const char *p = list;
    while (*p) {
        while (*p == ' ') p++;
        const char *e = p;
        while (*e && *e != ' ') e++;
        if ((size_t)(e - p) == n && strncmp(p, name, n) == 0) return 1;
        p = e;
    }
    return 0;
}

static int parse_long(const char *s, long long lo, long long hi, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->noise = -1.0;
    o->threads = 1;
    o->montage_scale = 1;
    o->device = "auto";
    o->shard_n = 1;
    int npos = 0;
    char err[RU_ERR_LEN];
    for (int i = 1; i < argc;) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == '\0') {
            if (npos == 0) o->input = a;
            else if (npos == 1) o->output = a;
            else return usage_error("unexpected argument '%s'", a);
            npos++;
            i++;
            continue;
        }
        int r = ru_take_flag(RU_SOLVER_FLAGS, argc, argv, &i, &o->solver_opts, err);
        if (r == 0) r = cli_take_task_option(argc, argv, &i, &o->task_opts, err);
        if (r < 0) return usage_error("%s", err);
        if (r > 0) continue;
        if (!strcmp(a, "--measured")) { o->measured = 1; i++; continue; }
        if (!strcmp(a, "--resize") || !strcmp(a, "--crop")) {
            ru_fit f = a[2] == 'r' ? RU_FIT_RESIZE : RU_FIT_CROP;
            if (o->fit && o->fit != f) return usage_error("--resize and --crop exclude each other");
            o->fit = f;
            i++;
            continue;
        }
        if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) { o->quiet = 1; i++; continue; }
        if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) { o->verbose = 1; i++; continue; }
        /* options with a value: "--opt V" or "--opt=V" */
        static const char *const valued[] = {"--task", "--solver", "--steps", "--model", "--vae",
                                             "--device", "--threads", "--seed", "--noise",
                                             "--montage", "--montage-scale", "--shard", NULL};
        const char *val = NULL;
        const char *name = NULL;
        for (int k = 0; valued[k]; k++) {
            size_t len = strlen(valued[k]);
            if (!strcmp(a, valued[k])) {
                if (i + 1 >= argc) return usage_error("%s needs a value", a);
                name = valued[k];
                val = argv[i + 1];
                i += 2;
                break;
            }
            if (!strncmp(a, valued[k], len) && a[len] == '=') {
                name = valued[k];
                val = a + len + 1;
                i += 1;
                break;
            }
        }
        if (!name) return usage_error("unknown option '%s'", a);
        long long v;
        if (!strcmp(name, "--task")) o->task = val;
        else if (!strcmp(name, "--solver")) o->solver = val;
        else if (!strcmp(name, "--model")) o->model = val;
        else if (!strcmp(name, "--vae")) o->vae = val;
        else if (!strcmp(name, "--device")) o->device = val;
        else if (!strcmp(name, "--montage")) o->montage = val;
        else if (!strcmp(name, "--steps")) {
            if (parse_long(val, 1, 100000, &v)) return usage_error("--steps: '%s' is not in 1..100000", val);
            o->steps = (int)v;
        } else if (!strcmp(name, "--threads")) {
            if (parse_long(val, 1, 256, &v)) return usage_error("--threads: '%s' is not in 1..256", val);
            o->threads = (int)v;
        } else if (!strcmp(name, "--montage-scale")) {
            if (parse_long(val, 1, 64, &v)) return usage_error("--montage-scale: '%s' is not in 1..64", val);
            o->montage_scale = (int)v;
        } else if (!strcmp(name, "--seed")) {
            if (parse_long(val, 0, (1ll << 53), &v)) return usage_error("--seed: '%s' is not a seed (0..2^53)", val);
            o->seed = (uint64_t)v;
        } else if (!strcmp(name, "--noise")) {
            char *end = NULL;
            errno = 0;
            double d = strtod(val, &end);
            if (!*val || *end || errno || !(d >= 0.0 && d <= 100.0))
                return usage_error("--noise: '%s' is not a noise level in [0, 100]", val);
            o->noise = d;
        } else if (!strcmp(name, "--shard")) {
            int si = -1, sn = 0;
            char tail;
            if (sscanf(val, "%d/%d%c", &si, &sn, &tail) != 2 || sn < 1 || si < 0 || si >= sn)
                return usage_error("--shard: '%s' is not I/N with 0 <= I < N", val);
            o->shard_i = si;
            o->shard_n = sn;
        }
    }
    if (npos < 2) return usage_error("INPUT and OUTPUT are required");
    if (o->fit && o->measured)
        return usage_error("--resize/--crop apply to a clean INPUT, not to a --measured one");
    if (!o->task) return usage_error("--task is required");
    if (!o->solver) return usage_error("--solver is required");
    if (!name_in_list(o->task, stsl_operator_names()))
        return usage_error("unknown task '%s' (tasks: %s)", o->task, stsl_operator_names());
    if (!name_in_list(o->solver, stsl_solver_names()))
        return usage_error("unknown solver '%s' (solvers: %s)", o->solver, stsl_solver_names());
    if (strcmp(o->device, "auto") && strcmp(o->device, "cpu") && strncmp(o->device, "cuda", 4))
        return usage_error("--device: '%s' is not auto, cpu, cuda or cuda:N", o->device);
    return 0;
}

/* Solver flags that do not apply to the chosen solver are usage errors: check them before any
 * model is loaded (task options are checked once the image shape is known). */
static int check_applicable(stsl_context *ctx, const options *o)
{
    char err[RU_ERR_LEN];
    stsl_solver *s = NULL;
    if (stsl_solver_create_by_name(ctx, o->solver, &s) != STSL_OK)
        return usage_error("%s", stsl_context_last_error(ctx));
    int rc = ru_apply_solver(s, &o->solver_opts, err);
    if (rc == 0 && o->steps > 0 && stsl_solver_set_int(s, STSL_PARAM_STEPS, o->steps) != STSL_OK) {
        snprintf(err, sizeof err, "--steps %d: %s", o->steps, stsl_solver_last_error(s));
        rc = -1;
    }
    stsl_solver_destroy(s);
    if (rc) return usage_error("solver %s: %s", o->solver, err);
    return 0;
}

static void log_sink(void *user, stsl_log_level level, const char *msg)
{
    (void)user;
    static const char *const names[] = {"debug", "info", "warning", "error", ""};
    fprintf(stderr, "stsl-restore: [%s] %s\n", names[level <= STSL_LOG_NONE ? level : 4], msg);
}

/* ------------------------------------------------------------------------------------------ */

static const char *ext_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(path, '.');
    return dot && (!slash || dot > slash) ? dot : "";
}

static int is_image_name(const char *path)
{
    const char *e = ext_of(path);
    return !strcasecmp(e, ".png") || !strcasecmp(e, ".jpg") || !strcasecmp(e, ".jpeg");
}

/* 1: PNG or JPEG by its first bytes, 0: something else, -1: unreadable. */
static int sniff_image(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    unsigned char b[8] = {0};
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    if (n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) return 1;
    if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return 1;
    return 0;
}

static int save_image(stsl_context *ctx, const stsl_image *img, const char *path,
                      stsl_image_format fmt)
{
    stsl_status st = stsl_image_save(ctx, img, path, fmt, 8, 0);
    if (st != STSL_OK)
        return failure("cannot write %s: %s", path,
                       *stsl_context_last_error(ctx) ? stsl_context_last_error(ctx) : stsl_strerror(st));
    return 0;
}

static void print_summary(const options *o, const char *in, const char *out, const ru_result *r)
{
    printf("%s -> %s: %s, %s; unet %llu forward + %llu vjp, decoder %llu forward + %llu vjp; "
           "%.2f s\n",
           in, out, o->task, o->solver, (unsigned long long)r->nfe.unet_forward,
           (unsigned long long)r->nfe.unet_vjp, (unsigned long long)r->nfe.decoder_forward,
           (unsigned long long)r->nfe.decoder_vjp, r->seconds);
    fflush(stdout);
}

static int write_montage(stsl_context *ctx, const options *o, const stsl_image *clean,
                         const ru_result *r, const char *path)
{
    stsl_image *tiles[3] = {(stsl_image *)clean, r->measurement_view, r->restored};
    stsl_image *m = NULL;
    char err[RU_ERR_LEN];
    if (ru_montage(tiles, 3, o->montage_scale, &m, err) != 0) return failure("montage: %s", err);
    int rc = save_image(ctx, m, path, STSL_FORMAT_AUTO);
    stsl_image_destroy(m);
    return rc;
}

static void job_from(const options *o, ru_job *job)
{
    memset(job, 0, sizeof *job);
    job->task = o->task;
    job->solver = o->solver;
    job->task_opts = &o->task_opts;
    job->solver_opts = &o->solver_opts;
    job->steps = o->steps;
    job->seed = o->seed;
    job->noise = o->noise;
    job->measured = o->measured;
    job->progress = !o->quiet && isatty(2);
    job->running = (stsl_solver **)&g_running;
}

static int run_single(stsl_context *ctx, ru_models *m, const options *o)
{
    stsl_image *in = NULL;
    char err[RU_ERR_LEN];
    if (ru_load_input(ctx, o->input, m, o->fit, o->measured, &in, err)) return failure("%s", err);
    ru_job job;
    job_from(o, &job);
    ru_result r;
    int rc = ru_restore(ctx, m, &job, in, &r, err);
    if (rc != 0) {
        stsl_image_destroy(in);
        if (rc == RU_EXIT_USAGE) return usage_error("%s", err);
        return failure("%s: %s", o->input, err);
    }
    rc = save_image(ctx, r.restored, o->output, STSL_FORMAT_AUTO);
    if (!rc && o->montage) rc = write_montage(ctx, o, o->measured ? NULL : in, &r, o->montage);
    if (!rc && !o->quiet) print_summary(o, o->input, o->output, &r);
    ru_result_free(&r);
    stsl_image_destroy(in);
    return rc ? RU_EXIT_FAIL : RU_EXIT_OK;
}

/* ---- batch mode --------------------------------------------------------------------------- */

typedef struct item_list {
    char **path;
    int n, cap;
} item_list;

static int list_push(item_list *l, const char *p)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **np = realloc(l->path, (size_t)cap * sizeof *np);
        if (!np) return -1;
        l->path = np;
        l->cap = cap;
    }
    if (!(l->path[l->n] = strdup(p))) return -1;
    l->n++;
    return 0;
}

static void list_free(item_list *l)
{
    for (int i = 0; i < l->n; i++) free(l->path[i]);
    free(l->path);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_directory(const char *dir, item_list *l)
{
    DIR *d = opendir(dir);
    if (!d) return failure("cannot read directory %s: %s", dir, strerror(errno));
    struct dirent *e;
    size_t dl = strlen(dir);
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !is_image_name(e->d_name)) continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/", e->d_name);
        struct stat st;
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (list_push(l, p)) {
            closedir(d);
            return failure("out of memory");
        }
    }
    closedir(d);
    return 0;
}

static int read_manifest(const char *file, item_list *l)
{
    FILE *f = fopen(file, "r");
    if (!f) return failure("cannot read %s: %s", file, strerror(errno));
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", file);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    char line[PATH_MAX];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                     line[n - 1] == '\t'))
            line[--n] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p || *p == '#') continue;
        char path[PATH_MAX * 2];
        if (p[0] != '/' && access(p, F_OK) != 0) snprintf(path, sizeof path, "%s/%s", dir, p);
        else snprintf(path, sizeof path, "%s", p);
        if (list_push(l, path)) {
            fclose(f);
            return failure("out of memory");
        }
    }
    fclose(f);
    return 0;
}

static int mkdir_p(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0777) != 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    if (mkdir(tmp, 0777) != 0 && errno != EEXIST) return -1;
    struct stat st;
    return stat(tmp, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

static void out_name(const char *in, char *buf, size_t n)
{
    const char *base = strrchr(in, '/');
    base = base ? base + 1 : in;
    const char *dot = strrchr(base, '.');
    int len = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
    snprintf(buf, n, "%.*s.png", len, base);
}

/* Append one row to OUTPUT/results.csv under an exclusive lock (shards may share the file). */
static int append_csv(const char *csv, const char *file, const char *status, const ru_result *r)
{
    int fd = open(csv, O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (fd < 0) return failure("cannot write %s: %s", csv, strerror(errno));
    flock(fd, LOCK_EX);
    char row[PATH_MAX + 512];
    int len = 0;
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size == 0)
        len += snprintf(row + len, sizeof row - (size_t)len,
                        "file,status,unet_forward,unet_vjp,decoder_forward,decoder_vjp,seconds\n");
    /* quote the file name (CSV: double any '"') */
    len += snprintf(row + len, sizeof row - (size_t)len, "\"");
    for (const char *p = file; *p && len < (int)sizeof row - 200; p++) {
        if (*p == '"') row[len++] = '"';
        row[len++] = *p;
    }
    len += snprintf(row + len, sizeof row - (size_t)len, "\",%s,%llu,%llu,%llu,%llu,%.3f\n", status,
                    (unsigned long long)r->nfe.unet_forward, (unsigned long long)r->nfe.unet_vjp,
                    (unsigned long long)r->nfe.decoder_forward,
                    (unsigned long long)r->nfe.decoder_vjp, r->seconds);
    ssize_t w = write(fd, row, (size_t)len);
    flock(fd, LOCK_UN);
    close(fd);
    return w == len ? 0 : failure("cannot write %s", csv);
}

static int run_batch(stsl_context *ctx, ru_models *m, const options *o, int input_is_dir)
{
    item_list items = {0};
    int rc = input_is_dir ? list_directory(o->input, &items) : read_manifest(o->input, &items);
    if (rc) {
        list_free(&items);
        return RU_EXIT_FAIL;
    }
    qsort(items.path, (size_t)items.n, sizeof *items.path, cmp_str);
    /* two inputs may not map to the same output name */
    char (*names)[NAME_MAX + 8] = calloc((size_t)(items.n ? items.n : 1), sizeof *names);
    if (!names) {
        list_free(&items);
        return failure("out of memory");
    }
    for (int i = 0; i < items.n; i++) {
        out_name(items.path[i], names[i], sizeof names[i]);
        for (int j = 0; j < i; j++)
            if (!strcmp(names[i], names[j])) {
                failure("%s and %s would both be written to %s", items.path[j], items.path[i], names[i]);
                free(names);
                list_free(&items);
                return RU_EXIT_FAIL;
            }
    }
    if (mkdir_p(o->output) != 0) {
        free(names);
        list_free(&items);
        return failure("cannot create directory %s: %s", o->output, strerror(errno));
    }
    if (o->montage && mkdir_p(o->montage) != 0) {
        free(names);
        list_free(&items);
        return failure("cannot create directory %s: %s", o->montage, strerror(errno));
    }
    char csv[PATH_MAX];
    snprintf(csv, sizeof csv, "%s/results.csv", o->output);
    int mine = 0, done = 0, skipped = 0, failed = 0;
    for (int i = 0; i < items.n; i++)
        if (i % o->shard_n == o->shard_i) mine++;
    int k = 0;
    rc = RU_EXIT_OK;
    for (int i = 0; i < items.n && !g_interrupted; i++) {
        if (i % o->shard_n != o->shard_i) continue;
        k++;
        char out[PATH_MAX + NAME_MAX + 16], tmp[PATH_MAX + NAME_MAX + 32];
        snprintf(out, sizeof out, "%s/%s", o->output, names[i]);
        struct stat st;
        if (stat(out, &st) == 0 && st.st_size > 0) {
            skipped++;
            if (o->verbose) fprintf(stderr, "stsl-restore: [%d/%d] %s exists, skipped\n", k, mine, out);
            continue;
        }
        stsl_image *in = NULL;
        ru_result r;
        memset(&r, 0, sizeof r);
        char err[RU_ERR_LEN];
        int ok;
        if (ru_load_input(ctx, items.path[i], m, o->fit, o->measured, &in, err) != 0) {
            ok = 0;
        } else {
            ru_job job;
            job_from(o, &job);
            ok = ru_restore(ctx, m, &job, in, &r, err) == 0;
        }
        if (ok) {
            /* write under a temporary name, then rename: an interrupted run never leaves a
             * partial output that a resumed run would skip */
            snprintf(tmp, sizeof tmp, "%s/.%s.%d.tmp", o->output, names[i], (int)getpid());
            if (stsl_image_save(ctx, r.restored, tmp, STSL_FORMAT_PNG, 8, 0) != STSL_OK ||
                rename(tmp, out) != 0) {
                snprintf(err, sizeof err, "cannot write %.200s: %.200s", out, stsl_context_last_error(ctx));
                unlink(tmp);
                ok = 0;
            }
        }
        if (ok && o->montage) {
            char mp[PATH_MAX + NAME_MAX + 16];
            snprintf(mp, sizeof mp, "%s/%s", o->montage, names[i]);
            if (write_montage(ctx, o, o->measured ? NULL : in, &r, mp) != 0) ok = 0, err[0] = 0;
        }
        if (g_interrupted && !ok) {
            stsl_image_destroy(in);
            ru_result_free(&r);
            break;
        }
        if (ok) {
            done++;
            if (!o->quiet) {
                printf("[%d/%d] ", k, mine);
                print_summary(o, items.path[i], out, &r);
            }
        } else {
            failed++;
            if (err[0]) fprintf(stderr, "stsl-restore: %s: %s\n", items.path[i], err);
        }
        if (append_csv(csv, items.path[i], ok ? "ok" : "failed", &r) != 0) rc = RU_EXIT_FAIL;
        ru_result_free(&r);
        stsl_image_destroy(in);
    }
    free(names);
    list_free(&items);
    if (g_interrupted) return failure("interrupted; run the same command again to resume");
    if (!o->quiet)
        printf("shard %d/%d: %d item(s): %d restored, %d skipped (already done), %d failed; see %s\n",
               o->shard_i, o->shard_n, mine, done, skipped, failed, csv);
    if (failed) return failure("%d of %d item(s) failed (see %s)", failed, mine, csv);
    return rc;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            print_help();
            return RU_EXIT_OK;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("stsl-restore (libstsl %s)\n", stsl_version());
            return RU_EXIT_OK;
        }
    }
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc;

    /* mode: directory or manifest (batch), image file (single) */
    struct stat st;
    if (stat(o.input, &st) != 0) return failure("cannot read %s: %s", o.input, strerror(errno));
    int batch = 0, is_dir = 0;
    if (S_ISDIR(st.st_mode)) {
        batch = is_dir = 1;
    } else {
        int s = sniff_image(o.input);
        if (s < 0) return failure("cannot read %s: %s", o.input, strerror(errno));
        batch = s == 0;
    }
    if (!batch) {
        if (o.shard_n > 1) return usage_error("--shard applies to a directory or manifest INPUT");
        const char *e = ext_of(o.output);
        if (strcasecmp(e, ".png") && strcasecmp(e, ".jpg") && strcasecmp(e, ".jpeg"))
            return usage_error("OUTPUT '%s' must end in .png, .jpg or .jpeg", o.output);
        if (o.montage) {
            e = ext_of(o.montage);
            if (strcasecmp(e, ".png") && strcasecmp(e, ".jpg") && strcasecmp(e, ".jpeg"))
                return usage_error("--montage '%s' must end in .png, .jpg or .jpeg", o.montage);
        }
    } else if (stat(o.output, &st) == 0 && !S_ISDIR(st.st_mode)) {
        return usage_error("batch mode: OUTPUT '%s' must be a directory", o.output);
    } else if (is_dir) {
        char ri[PATH_MAX], ro[PATH_MAX];
        if (realpath(o.input, ri) && realpath(o.output, ro) && !strcmp(ri, ro))
            return usage_error("batch mode: OUTPUT must not be the input directory");
    }

    stsl_context *ctx = NULL;
    if (stsl_context_create(&ctx) != STSL_OK) return failure("cannot create a context");
    rc = check_applicable(ctx, &o);
    if (rc) {
        stsl_context_destroy(ctx);
        return rc;
    }
    stsl_context_set_threads(ctx, o.threads);
    if (stsl_context_set_device(ctx, o.device) != STSL_OK) {
        rc = usage_error("--device %s: %s", o.device, stsl_context_last_error(ctx));
        stsl_context_destroy(ctx);
        return rc;
    }
    if (o.verbose) stsl_context_set_log(ctx, log_sink, NULL, STSL_LOG_INFO);
    else stsl_context_set_log(ctx, log_sink, NULL, STSL_LOG_WARN);

    ru_models m;
    char err[RU_ERR_LEN];
    if (ru_load_models(ctx, o.solver, o.model, o.vae, &m, err) != 0) {
        stsl_context_destroy(ctx);
        return failure("%s", err);
    }
    if (o.verbose)
        fprintf(stderr, "stsl-restore: prior %s%s%s, images %dx%dx%d, device %s, %d thread(s), seed %llu\n",
                m.model_path, m.ae ? ", autoencoder " : "", m.ae ? m.vae_path : "", m.image.channels,
                m.image.height, m.image.width, o.device, o.threads, (unsigned long long)o.seed);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* task options the operator refuses are usage errors: check once on the model's shape */
    stsl_operator *probe = NULL;
    rc = cli_make_operator(ctx, o.task, m.image, &o.task_opts, o.seed, o.noise, &probe, err);
    stsl_operator_destroy(probe);
    if (rc != CLI_EXIT_OK) {
        ru_models_free(&m);
        stsl_context_destroy(ctx);
        if (rc == CLI_EXIT_USAGE) return usage_error("%s", err);
        return failure("%s", err);
    }
    rc = batch ? run_batch(ctx, &m, &o, is_dir) : run_single(ctx, &m, &o);
    ru_models_free(&m);
    stsl_context_destroy(ctx);
    return rc;
}
