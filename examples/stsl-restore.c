/*
 * stsl-restore -- restore a degraded image by posterior sampling with a diffusion prior.
 *
 *   stsl-restore INPUT OUTPUT --task TASK --solver SOLVER [options]
 *
 * INPUT is a clean PNG/JPEG that the tool degrades itself with the task and seed (or, with
 * --measured, the measurement y), OUTPUT the restored PNG/JPEG.  An INPUT whose name ends in
 * .png/.jpg/.jpeg or whose first bytes are a PNG/JPEG signature is an image and must decode as
 * one.  Batch mode: INPUT a directory of images or a manifest file (one path per line, '#'
 * comments; an empty list is an error) and OUTPUT a directory (never a name ending in an image
 * extension); outputs that exist are skipped (resume), OUTPUT/results.csv gets one "ok" row per
 * restored image (and a "failed" row per failed attempt), --shard I/N keeps the items whose index
 * in sorted order is I modulo N, --batch B restores B images per solver run (each from its own
 * seed, calls shaped for B: the same bits in any batch or shard).  Outputs are checked
 * (directory exists or can be created, writable) before any model is loaded, and created only
 * once every option has been checked.  Crash safety: each image is written to a temporary, its row appended (one
 * write under an exclusive lock, after cutting any torn row a killed writer left), then renamed;
 * a run killed at any point and run again ends with each image once and each row once
 * (tests/tools/kill_batch.sh).  Processes sharing OUTPUT, sharded or not, share its items: an
 * image is restored under a claim (an flock on OUTPUT/.NAME.claim, dropped by the kernel when
 * its holder dies), and only a claim's holder writes the image, its row and its temporaries, or
 * removes the temporaries a killed run left.  Single mode saves the same way (its own
 * temporary, the output's claim).  Inputs that are not regular files (a FIFO in a manifest) are
 * refused, never opened; a full disk stops the batch.  Run with --help for every option.
 *
 * Exit status: 0 success, 2 bad usage, 1 any other failure (one line on stderr saying why).
 */
#include <dirent.h>
#include <pthread.h>
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

/* Batch mode's images per solver run: docs/scaling.md measures images per second against it. */
#define DEFAULT_BATCH 16

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
    int batch;                  /* batch mode: images per solver run */
    int jobs;                   /* batch mode: workers, each with --threads threads */
    const char *batch_flag;     /* the first batch-mode option given (refused in single mode) */
    cli_task_opts task_opts;
    ru_settings solver_opts;
} options;

static volatile sig_atomic_t g_interrupted = 0;
static stsl_solver *volatile g_running = NULL;

static void cancel_workers(void);

static void on_signal(int sig)
{
    (void)sig;
    g_interrupted = 1;
    stsl_solver *s = g_running;
    if (s) stsl_solver_cancel(s);
    cancel_workers();
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
           "per image appended to OUTPUT/results.csv (\"ok\" once per restored image, \"failed\" per\n"
           "failed attempt).  A batch killed at any point resumes with nothing lost or doubled.\n"
           "Processes sharing OUTPUT share its items: each image is restored by one of them (it\n"
           "holds a claim, OUTPUT/.NAME.claim, that ends with its process).\n"
           "\n"
           "solvers: %s\n"
           "         (ddim samples the prior unconditionally: it ignores the measurement, so its\n"
           "          output need not resemble the input; a baseline, not a restoration)\n"
           "tasks:   see Tasks below\n"
           "\n"
           "options:\n"
           "  --task TASK          degradation (required)\n"
           "  --solver SOLVER      posterior sampler (required)\n"
           "  --steps T            reverse steps (default: the solver's, e.g. stsl 50, dps 1000)\n"
           "  --model UNET.pt      diffusion prior (default: bundled models/fmnist-ldm.pt for\n"
           "                       stsl stsl-biased psld ldps, models/fmnist-ddpm.pt otherwise)\n"
           "  --vae VAE.pt         autoencoder of a latent prior (default: the file its pairs_with\n"
           "                       names, next to the prior or among the bundled models; an\n"
           "                       error when missing; refused with a pixel-space prior)\n"
           "  --device D           cpu | auto | cuda | cuda:N (default " STSL_DEFAULT_DEVICE ", the\n"
           "                       library's; auto: the GPU when there is one)\n"
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
           "  --batch B            batch mode: images per solver run, at most (default %d); each\n"
           "                       image draws from its own seed (of --seed and its name), so it\n"
           "                       restores the same in any batch or shard up to float rounding\n"
           "                       (a level at most); --pad-batch 1 makes it bit for bit the same\n"
           "                       on any CPU, at the cost of one network call per image\n"
           "  --jobs J             batch mode: J workers side by side, each with its own models\n"
           "                       and --threads threads (default 1; on a small model two 1-thread\n"
           "                       workers beat one 2-thread worker, see docs/scaling.md)\n"
           "  --quiet              no progress bar, no summary\n"
           "  --verbose            models, settings and library messages on stderr\n"
           "  --help, --version\n"
           "\n"
           "solver options (each applies to the solvers named):\n",
           stsl_solver_names(), DEFAULT_BATCH);
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
    o->shard_n = 1;
    o->batch = DEFAULT_BATCH;
    o->jobs = 1;
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
                                             "--montage", "--montage-scale", "--shard", "--batch",
                                             "--jobs", NULL};
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
        } else if (!strcmp(name, "--batch")) {
            if (parse_long(val, 1, STSL_MAX_BATCH, &v))
                return usage_error("--batch: '%s' is not in 1..%d", val, STSL_MAX_BATCH);
            o->batch = (int)v;
        } else if (!strcmp(name, "--jobs")) {
            if (parse_long(val, 1, 64, &v)) return usage_error("--jobs: '%s' is not in 1..64", val);
            o->jobs = (int)v;
        } else if (!strcmp(name, "--shard")) {
            /* two decimal numbers, each checked for range before it is narrowed */
            const char *slash = strchr(val, '/');
            char first[32];
            long long si = -1, sn = 0;
            int ok = slash && slash > val && (size_t)(slash - val) < sizeof first &&
                     strspn(val, "0123456789") == (size_t)(slash - val) &&
                     slash[1] && strspn(slash + 1, "0123456789") == strlen(slash + 1);
            if (ok) {
                snprintf(first, sizeof first, "%.*s", (int)(slash - val), val);
                ok = parse_long(slash + 1, 1, INT_MAX, &sn) == 0 &&
                     parse_long(first, 0, sn - 1, &si) == 0;
            }
            if (!ok)
                return usage_error("--shard: '%s' is not I/N with 0 <= I < N <= %d", val, INT_MAX);
            o->shard_i = (int)si;
            o->shard_n = (int)sn;
        }
        if (!o->batch_flag && (!strcmp(name, "--shard") || !strcmp(name, "--batch") || !strcmp(name, "--jobs")))
            o->batch_flag = name;
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
    if (rc == 0 && o->steps > 0) rc = ru_set_solver_param(s, "--steps", STSL_PARAM_STEPS, o->steps, err);
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

/* A context with the options' threads, device and log level (each batch worker has one). */
static int make_context(const options *o, stsl_context **out)
{
    *out = NULL;
    if (stsl_context_create(out) != STSL_OK) return failure("cannot create a context");
    stsl_context_set_threads(*out, o->threads);
    /* the library reads the device string (and says what it accepts); no --device: its default */
    if (o->device && stsl_context_set_device(*out, o->device) != STSL_OK)
        return usage_error("--device: %s", stsl_context_last_error(*out));
    stsl_context_set_log(*out, log_sink, NULL, o->verbose ? STSL_LOG_INFO : STSL_LOG_WARN);
    return 0;
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

/* One line for a failed load or save: the library's message when it names the path already
 * ("cannot write 'x': No such file or directory"), else "cannot VERB PATH: detail". */
static int save_image(stsl_context *ctx, const stsl_image *img, const char *path,
                      stsl_image_format fmt)
{
    stsl_status st = stsl_image_save(ctx, img, path, fmt, 8, 0);
    if (st != STSL_OK) {
        char msg[RU_ERR_LEN + PATH_MAX];
        ru_io_message(ctx, st, "write", path, msg, sizeof msg);
        return failure("%s", msg);
    }
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

static int save_claimed(stsl_context *ctx, const stsl_image *img, const char *path);

/* claimed: through save_claimed (single mode), else straight to `path`. */
static int write_montage(stsl_context *ctx, const options *o, const stsl_image *clean,
                         const ru_result *r, const char *path, int claimed)
{
    stsl_image *tiles[3] = {(stsl_image *)clean, r->measurement_view, r->restored};
    stsl_image *m = NULL;
    char err[RU_ERR_LEN];
    if (ru_montage(tiles, 3, o->montage_scale, &m, err) != 0) return failure("montage: %s", err);
    int rc = claimed ? save_claimed(ctx, m, path) : save_image(ctx, m, path, STSL_FORMAT_AUTO);
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
    rc = save_claimed(ctx, r.restored, o->output);
    if (!rc && o->montage) rc = write_montage(ctx, o, o->measured ? NULL : in, &r, o->montage, 1);
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
        if (e->d_name[0] == '.' || !cli_is_image_name(e->d_name)) continue;
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

/* ---- results.csv: one complete row per append, whatever kills a process ------------------- */

/* Called with the lock held: a writer killed inside write() may have left a row without its
 * newline; cut the file back to its last complete line so the next row starts cleanly. */
static int csv_repair_tail(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    off_t end = st.st_size;
    char buf[512];
    while (end > 0) {
        off_t start = end > (off_t)sizeof buf ? end - (off_t)sizeof buf : 0;
        ssize_t n = pread(fd, buf, (size_t)(end - start), start);
        if (n != end - start) return -1;
        for (ssize_t k = n - 1; k >= 0; k--)
            if (buf[k] == '\n') {
                off_t keep = start + k + 1;
                return keep == st.st_size ? 0 : ftruncate(fd, keep);
            }
        end = start;
    }
    return st.st_size == 0 ? 0 : ftruncate(fd, 0);
}

static int csv_lock(const char *csv)
{
    int fd = open(csv, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    if (fd < 0) return -1;
    if (flock(fd, LOCK_EX) != 0 || csv_repair_tail(fd) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Test hook (tests/tools/kill_batch.sh): STSL_RESTORE_KILL=csv:K or image:K makes the K-th row
 * append or image save of this process stop half-way with SIGKILL, as a crash there would. */
static int g_kill_csv = -1, g_kill_image = -1;

static void kill_hook_init(void)
{
    const char *e = getenv("STSL_RESTORE_KILL");
    if (!e) return;
    int k;
    if (sscanf(e, "csv:%d", &k) == 1) g_kill_csv = k;
    if (sscanf(e, "image:%d", &k) == 1) g_kill_image = k;
}

/* The image:K hook, after this process's K-th save of an image to `tmp` (for output DIR/NAME):
 * leave a partial library temporary beside it and die, as a kill inside the save would. */
static void kill_hook_image(const char *dir, const char *name, const char *tmp)
{
    if (!(g_kill_image > 0 && --g_kill_image == 0)) return;
    char part[PATH_MAX + NAME_MAX + 64];
    struct stat st;
    snprintf(part, sizeof part, "%s/..%s.%d.tmp.0badf00d.tmp", dir, name, (int)getpid());
    if (link(tmp, part) == 0 && stat(part, &st) == 0 && truncate(part, st.st_size / 2)) {}
    raise(SIGKILL);
}

/* 1 when a write failed because the file system is full (errno, or the library's message). */
static int disk_full(int e, const char *msg)
{
    return e == ENOSPC || e == EDQUOT ||
           (msg && (strstr(msg, strerror(ENOSPC)) || strstr(msg, strerror(EDQUOT))));
}

/* Append one row to OUTPUT/results.csv under an exclusive lock (shards share the file) as a
 * single write: a reader never sees half a row once the next writer has repaired the tail.
 * Returns 0, or the errno of the failure (said on stderr). */
static int append_csv(const char *csv, const char *file, const char *status, const ru_result *r,
                      uint64_t seed)
{
    int fd = csv_lock(csv);
    if (fd < 0) {
        int e = errno ? errno : EIO;
        if (!disk_full(e, NULL)) failure("cannot write %s: %s", csv, strerror(e));
        return e;
    }
    char row[PATH_MAX * 2 + 512];
    int len = 0;
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size == 0)
        len += snprintf(row + len, sizeof row - (size_t)len,
                        "file,status,unet_forward,unet_vjp,decoder_forward,decoder_vjp,seconds,batch,"
                        "seed\n");
    /* quote the file name (CSV: double any '"') */
    row[len++] = '"';
    for (const char *p = file; *p && len < (int)sizeof row - 200; p++) {
        if (*p == '"') row[len++] = '"';
        row[len++] = *p;
    }
    len += snprintf(row + len, sizeof row - (size_t)len, "\",%s,%llu,%llu,%llu,%llu,%.3f,%d,%llu\n",
                    status, (unsigned long long)r->nfe.unet_forward,
                    (unsigned long long)r->nfe.unet_vjp, (unsigned long long)r->nfe.decoder_forward,
                    (unsigned long long)r->nfe.decoder_vjp, r->seconds, r->batch,
                    (unsigned long long)seed);
    if (g_kill_csv > 0 && --g_kill_csv == 0) {
        if (write(fd, row, (size_t)len / 2) < 0) { /* killed anyway */ }
        raise(SIGKILL);
    }
    /* a short write (a full disk) is followed by another, which says why it stopped */
    ssize_t done = 0, w = 0;
    while (done < len && (w = write(fd, row + done, (size_t)(len - done))) > 0) done += w;
    int e = done == len ? 0 : w < 0 ? errno : EIO;
    if (e && done > 0 && ftruncate(fd, st.st_size) != 0) { /* the next writer cuts the torn row */ }
    flock(fd, LOCK_UN);
    close(fd);
    if (e && !disk_full(e, NULL)) failure("cannot write %s: %s", csv, strerror(e));   /* else the caller stops */
    return e;
}

/* Parse one CSV line "\"file\",status,...": the unquoted file and the status. */
static int csv_parse_row(const char *line, char *file, size_t fn, char *status, size_t sn)
{
    if (line[0] != '"') return -1;
    size_t k = 0;
    const char *p = line + 1;
    for (;; p++) {
        if (!*p) return -1;
        if (*p == '"') {
            if (p[1] == '"') p++;
            else break;
        }
        if (k + 1 < fn) file[k++] = *p;
    }
    file[k] = '\0';
    if (p[1] != ',') return -1;
    p += 2;
    k = 0;
    while (*p && *p != ',' && *p != '\n' && k + 1 < sn) status[k++] = *p++;
    status[k] = '\0';
    return 0;
}

/* Mark done[i] for every item with an "ok" row in the complete lines after *offset, and move
 * *offset past them: a run reads the file once at its start, then only the rows other processes
 * appended since (before it claims an item).  The items are sorted (bsearch). */
static int csv_read_done(const char *csv, const item_list *items, char *done, off_t *offset)
{
    int fd = csv_lock(csv);
    if (fd < 0) return failure("cannot write %s: %s", csv, strerror(errno));
    struct stat st;
    int rc = fstat(fd, &st) == 0 ? 0 : failure("cannot read %s: %s", csv, strerror(errno));
    char line[PATH_MAX * 2 + 512], file[PATH_MAX * 2], status[32];
    while (rc == 0 && *offset < st.st_size) {
        size_t want = st.st_size - *offset < (off_t)sizeof line - 1 ? (size_t)(st.st_size - *offset)
                                                                     : sizeof line - 1;
        ssize_t n = pread(fd, line, want, *offset);
        if (n <= 0) {
            rc = failure("cannot read %s: %s", csv, n < 0 ? strerror(errno) : "file shrank");
            break;
        }
        char *nl = memchr(line, '\n', (size_t)n);
        if (!nl) {
            if ((size_t)n == sizeof line - 1) *offset += n;   /* a line too long to be a row */
            else break;                                        /* a torn row: not ours to cut */
            continue;
        }
        nl[1] = '\0';
        *offset += nl + 1 - line;
        char *key = file;
        char **hit;
        if (csv_parse_row(line, file, sizeof file, status, sizeof status) == 0 && !strcmp(status, "ok") &&
            (hit = bsearch(&key, items->path, (size_t)items->n, sizeof *items->path, cmp_str)))
            done[hit - items->path] = 1;
    }
    flock(fd, LOCK_UN);
    close(fd);
    return rc;
}

/* ".NAME.PID.tmp" (ours) or "..NAME.PID.tmp.XXXXXXXX.tmp" (the library's temporary for it). */
static int is_temp_of(const char *entry, const char *name)
{
    if (entry[0] != '.') return 0;
    while (*entry == '.') entry++;
    size_t n = strlen(name);
    if (strncmp(entry, name, n) != 0 || entry[n] != '.') return 0;
    const char *p = entry + n + 1;
    if (!(*p >= '0' && *p <= '9')) return 0;
    while (*p >= '0' && *p <= '9') p++;
    if (!strcmp(p, ".tmp")) return 1;
    if (strncmp(p, ".tmp.", 5) != 0) return 0;
    p += 5;
    int hex = 0;
    while ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')) p++, hex++;
    return hex == 8 && !strcmp(p, ".tmp");
}

/* ".NAME.claim": the claim file of output NAME. */
static int is_claim_of(const char *entry, const char *name)
{
    size_t n = strlen(name);
    return entry[0] == '.' && !strncmp(entry + 1, name, n) && !strcmp(entry + 1 + n, ".claim");
}

/* ---- claims: one process at a time per output ---------------------------------------------- */

/* A claim on DIR/NAME is an exclusive flock on DIR/.NAME.claim, held while the image is restored
 * and written.  The kernel drops it when its process dies, so a killed process's claim is free at
 * once; the file it leaves is taken over by the next claimant, who removes it on release.
 * Returns the claim's descriptor, -1 when another process holds it, -2 on an error (errno). */
static int claim_take(const char *dir, const char *name)
{
    char p[PATH_MAX + NAME_MAX + 16];
    snprintf(p, sizeof p, "%s/.%s.claim", dir, name);
    for (int tries = 0; tries < 16; tries++) {
        int fd = open(p, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd < 0) return -2;
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            close(fd);
            if (e == EWOULDBLOCK) return -1;
            errno = e;
            return -2;
        }
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(p, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
            return fd;
        close(fd);   /* its holder released (removed) it as we opened it: take the new one */
    }
    errno = EAGAIN;
    return -2;
}

/* Release a claim: its file is removed while still locked (so the path is still this one). */
static void claim_release(const char *dir, const char *name, int fd)
{
    if (fd < 0) return;
    char p[PATH_MAX + NAME_MAX + 16];
    snprintf(p, sizeof p, "%s/.%s.claim", dir, name);
    unlink(p);
    close(fd);
}

/* Remove the temporaries (ours and the library's) that a killed run left for DIR/NAME: called
 * only with NAME's claim held, when no live stsl-restore can be writing them. */
static void remove_temps_of(const char *dir, const char *name)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (is_temp_of(e->d_name, name)) {
            char p[PATH_MAX + NAME_MAX + 2];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
}

/* Note which of this shard's items have debris in the output directory (temporaries or a claim
 * file of a killed run), and clean it now for those whose claim is free: the others are being
 * written by a live process (their debris, if it dies, is cleaned when they are claimed). */
static void find_debris(const char *dir, const item_list *items, char (*names)[NAME_MAX + 8],
                        const options *o, char *debris)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] != '.') continue;
        for (int i = 0; i < items->n; i++)
            if (i % o->shard_n == o->shard_i &&
                (is_temp_of(e->d_name, names[i]) || is_claim_of(e->d_name, names[i]))) {
                debris[i] = 1;
                break;
            }
    }
    closedir(d);
    for (int i = 0; i < items->n; i++) {
        if (!debris[i]) continue;
        int fd = claim_take(dir, names[i]);
        if (fd < 0) continue;
        remove_temps_of(dir, names[i]);
        claim_release(dir, names[i], fd);
        debris[i] = 0;
    }
}

/* Batch inputs: the directory's images or the manifest's lines, sorted; an empty list, or two
 * inputs with one output name, is an error.  `names` receives each output's file name. */
static int list_items(const options *o, int input_is_dir, item_list *items,
                      char (**names)[NAME_MAX + 8])
{
    int rc = input_is_dir ? list_directory(o->input, items) : read_manifest(o->input, items);
    if (rc) return RU_EXIT_FAIL;
    if (items->n == 0)
        return failure(input_is_dir ? "%s: no .png, .jpg or .jpeg file in this directory"
                                    : "%s: the manifest lists no input (one image path per line)",
                       o->input);
    qsort(items->path, (size_t)items->n, sizeof *items->path, cmp_str);
    *names = calloc((size_t)items->n, sizeof **names);
    if (!*names) return failure("out of memory");
    for (int i = 0; i < items->n; i++) {
        out_name(items->path[i], (*names)[i], sizeof (*names)[i]);
        for (int j = 0; j < i; j++)
            if (!strcmp((*names)[i], (*names)[j]))
                return failure("%s and %s would both be written to %s", items->path[j],
                               items->path[i], (*names)[i]);
    }
    return 0;
}

/* What the batch workers share: the item cursor, the counters, the CSV state; all under `lock`
 * (finishing an image is cheap next to restoring it). */
typedef struct batch_state {
    const options *o;
    const item_list *items;
    char (*names)[NAME_MAX + 8];
    char csv[PATH_MAX];
    char *has_row;             /* item i already has its "ok" row */
    off_t csv_read;            /* results.csv is read up to here (has_row) */
    char *debris;              /* item i had a killed run's files left when this run started */
    int *claim;                /* item i's claim (claim_take) while this process holds it, or -1 */
    int mine, k, done, skipped, elsewhere, failed, rc;
    int next;                  /* the next item index to look at */
    int stop;                  /* a worker hit a usage error or was interrupted */
    pthread_mutex_t lock;
} batch_state;

/* One batch worker: its own context and models (a score handle serialises its calls), and the
 * solver it is running, for the signal handler to cancel. */
typedef struct worker {
    pthread_t thread;
    stsl_context *ctx;
    ru_models *m;
    ru_models own;
    batch_state *b;
    stsl_solver *volatile running;
} worker;

static worker *g_workers;
static int g_nworkers;

static void cancel_workers(void)
{
    for (int i = 0; i < g_nworkers; i++) {
        stsl_solver *s = g_workers[i].running;
        if (s) stsl_solver_cancel(s);
    }
}

/* Release item i's claim if this process holds it.  Called with b->lock held. */
static void drop_claim(batch_state *b, int i)
{
    claim_release(b->o->output, b->names[i], b->claim[i]);
    b->claim[i] = -1;
}

/* A full disk stops the batch (said once, with how to resume) instead of failing every image
 * left.  Called with b->lock held. */
static void stop_disk_full(batch_state *b, const char *what)
{
    if (!b->stop)
        b->rc = failure("%s: no space left on the device; stopping (free some space and run the "
                        "same command again to resume)", what);
    b->stop = 1;
}

/* Finish item i: save to a temporary, montage, append the "ok" row, rename into place; or, when
 * it failed (ok = 0, reason in err), report it and append a "failed" row.  A process killed
 * anywhere leaves either no output (the item is redone; a row written before the kill is not
 * written twice) or the output and its row.  Returns -1 when interrupted (nothing written).
 * Called with b->lock held. */
static int finish_item(stsl_context *ctx, batch_state *b, int i, const stsl_image *in,
                       const ru_result *r, int ok, char *err, size_t errn)
{
    const options *o = b->o;
    char out[PATH_MAX + NAME_MAX + 16], tmp[PATH_MAX + NAME_MAX + 48];
    snprintf(out, sizeof out, "%s/%s", o->output, b->names[i]);
    snprintf(tmp, sizeof tmp, "%s/.%s.%d.tmp", o->output, b->names[i], (int)getpid());
    b->k++;
    if (ok) {
        stsl_status sst = stsl_image_save(ctx, r->restored, tmp, STSL_FORMAT_PNG, 8, 0);
        int e = errno;
        if (sst == STSL_OK) kill_hook_image(o->output, b->names[i], tmp);
        if (sst != STSL_OK) {
            ru_io_message(ctx, sst, "write", out, err, errn);
            ok = 0;
            if (disk_full(e, err)) stop_disk_full(b, out);
        }
    }
    if (ok && o->montage) {
        char mp[PATH_MAX + NAME_MAX + 16];
        snprintf(mp, sizeof mp, "%s/%s", o->montage, b->names[i]);
        if (write_montage(ctx, o, o->measured ? NULL : in, r, mp, 0) != 0) ok = 0, err[0] = 0;
    }
    if ((g_interrupted || b->stop) && !ok) {
        unlink(tmp);
        drop_claim(b, i);
        return -1;
    }
    const char *path = b->items->path[i];
    const uint64_t seed = ru_image_seed(o->seed, b->names[i]);
    int e = 0;
    if (ok) {
        if (!b->has_row[i] && (e = append_csv(b->csv, path, "ok", r, seed)) != 0) {
            ok = 0, err[0] = 0;
        } else if (rename(tmp, out) != 0) {
            snprintf(err, errn, "cannot write %s: %s", out, strerror(e = errno));
            ok = 0;
        }
        if (ok) b->has_row[i] = 1;
    }
    if (!ok) unlink(tmp);
    if (!ok && disk_full(e, NULL)) {   /* every further image would fail the same way */
        stop_disk_full(b, b->csv);
        drop_claim(b, i);
        return -1;
    }
    drop_claim(b, i);
    if (ok) {
        b->done++;
        if (!o->quiet) {
            printf("[%d/%d] ", b->k, b->mine);
            print_summary(o, path, out, r);
            fflush(stdout);
        }
    } else {
        b->failed++;
        if (err[0]) fprintf(stderr, "stsl-restore: %s: %s\n", path, err);
        if ((e = append_csv(b->csv, path, "failed", r, seed)) != 0) {
            b->rc = RU_EXIT_FAIL;
            if (disk_full(e, NULL)) stop_disk_full(b, b->csv);
        }
    }
    return 0;
}

/* 1 when OUTPUT/NAME of item i exists. */
static int output_exists(const batch_state *b, int i)
{
    char out[PATH_MAX + NAME_MAX + 16];
    struct stat st;
    snprintf(out, sizeof out, "%s/%s", b->o->output, b->names[i]);
    return stat(out, &st) == 0 && st.st_size > 0;
}

/* Take up to B loaded inputs of this shard (under the lock), each claimed; a skipped, claimed
 * elsewhere or unreadable item does not take a place.  Returns how many. */
static int gather(worker *w, int B, int *idx, stsl_image **in, uint64_t *seeds, char *err,
                  size_t errn)
{
    batch_state *b = w->b;
    const options *o = b->o;
    int n = 0;
    for (; b->next < b->items->n && n < B && !g_interrupted && !b->stop; b->next++) {
        const int i = b->next;
        if (i % o->shard_n != o->shard_i) continue;
        const char *why = NULL;
        if (output_exists(b, i)) {
            why = "exists";
            b->skipped++;
        } else if ((b->claim[i] = claim_take(o->output, b->names[i])) == -1) {
            why = "is being restored by another process";
            b->elsewhere++;
        } else if (b->claim[i] < 0) {
            b->claim[i] = -1;
            if (n > 0) break;   /* out of descriptors, say: this item waits for the next batch */
            b->rc = failure("cannot claim %s/%s: %s", o->output, b->names[i], strerror(errno));
            b->stop = 1;
            break;
        } else if (output_exists(b, i)) {   /* finished by another process since the check */
            drop_claim(b, i);
            why = "exists";
            b->skipped++;
        } else if (csv_read_done(b->csv, b->items, b->has_row, &b->csv_read) != 0) {
            drop_claim(b, i);
            b->rc = RU_EXIT_FAIL;
            b->stop = 1;
            break;
        }
        if (why) {
            b->k++;
            if (o->verbose)
                fprintf(stderr, "stsl-restore: [%d/%d] %s/%s %s, skipped\n", b->k, b->mine, o->output,
                        b->names[i], why);
            continue;
        }
        if (b->debris[i]) {   /* a killed run's files, busy when this run started */
            remove_temps_of(o->output, b->names[i]);
            b->debris[i] = 0;
        }
        if (ru_load_input(w->ctx, b->items->path[i], w->m, o->fit, o->measured, &in[n], err) != 0) {
            ru_result none;
            memset(&none, 0, sizeof none);
            finish_item(w->ctx, b, i, NULL, &none, 0, err, errn);
            continue;
        }
        idx[n] = i;
        seeds[n] = ru_image_seed(o->seed, b->names[i]);
        n++;
    }
    return n;
}

/* A worker: take a batch, restore it in one solver run, finish its images; a run that fails is
 * retried image by image, so one bad image never costs the others of its batch. */
static void *worker_main(void *arg)
{
    worker *w = arg;
    batch_state *b = w->b;
    const options *o = b->o;
    const int B = o->batch;
    int *idx = calloc((size_t)B, sizeof *idx);
    stsl_image **in = calloc((size_t)B, sizeof *in);
    uint64_t *seeds = calloc((size_t)B, sizeof *seeds);
    ru_result *res = calloc((size_t)B, sizeof *res);
    char err[RU_ERR_LEN + PATH_MAX];
    ru_job job;
    job_from(o, &job);
    job.running = (stsl_solver **)&w->running;
    if (o->jobs > 1) job.progress = 0;   /* bars of several workers would overwrite each other */
    pthread_mutex_lock(&b->lock);
    if (!idx || !in || !seeds || !res) {
        b->rc = failure("out of memory");
        b->stop = 1;
    }
    while (!b->stop && !g_interrupted) {
        int n = gather(w, B, idx, in, seeds, err, sizeof err);
        if (n == 0) break;
        pthread_mutex_unlock(&b->lock);
        int r = ru_restore_batch(w->ctx, w->m, &job, (const stsl_image *const *)in, seeds, n, res, err);
        if (r != 0 && r != RU_EXIT_USAGE && !g_interrupted && n > 1 && o->verbose)
            fprintf(stderr, "stsl-restore: a run of %d images failed (%s); retrying them one by one\n", n, err);
        pthread_mutex_lock(&b->lock);
        if (r == RU_EXIT_USAGE) {
            b->rc = usage_error("%s", err);
            b->stop = 1;
        } else if (r == 0) {
            for (int j = 0; j < n && !b->stop; j++)
                if (finish_item(w->ctx, b, idx[j], in[j], &res[j], 1, err, sizeof err) < 0) b->stop = 1;
        } else if (g_interrupted) {
            b->stop = 1;
        } else if (n == 1) {
            finish_item(w->ctx, b, idx[0], in[0], &res[0], 0, err, sizeof err);
        } else {
            /* one image may have failed the run: each alone, so the others are not lost */
            for (int j = 0; j < n && !b->stop && !g_interrupted; j++) {
                ru_result one;
                pthread_mutex_unlock(&b->lock);
                int ok = ru_restore_batch(w->ctx, w->m, &job, (const stsl_image *const *)&in[j],
                                          &seeds[j], 1, &one, err) == 0;
                pthread_mutex_lock(&b->lock);
                if (!ok && g_interrupted) b->stop = 1;
                else if (finish_item(w->ctx, b, idx[j], in[j], &one, ok, err, sizeof err) < 0) b->stop = 1;
                ru_result_free(&one);
            }
        }
        for (int j = 0; j < n; j++) {
            drop_claim(b, idx[j]);   /* an image not finished (interrupted, stopped) */
            ru_result_free(&res[j]);
            stsl_image_destroy(in[j]);
            in[j] = NULL;
        }
    }
    pthread_mutex_unlock(&b->lock);
    free(idx), free(in), free(seeds), free(res);
    return NULL;
}

/* Restore up to --batch images per solver run, in --jobs workers.  Each image draws from its own
 * seed (ru_image_seed of its output name), so it restores as it would in any other batch, shard,
 * worker or company up to float rounding, and bit for bit with --pad-batch 1 (one image a run:
 * STSL_PARAM_PAD_BATCH in stsl.h). */
static int run_batch(stsl_context *ctx, ru_models *m, const options *o, const item_list *items,
                     char (*names)[NAME_MAX + 8])
{
    batch_state b;
    memset(&b, 0, sizeof b);
    b.o = o;
    b.items = items;
    b.names = names;
    snprintf(b.csv, sizeof b.csv, "%s/results.csv", o->output);
    b.has_row = calloc((size_t)items->n, 1);
    b.debris = calloc((size_t)items->n, 1);
    b.claim = malloc((size_t)items->n * sizeof *b.claim);
    worker *w = calloc((size_t)o->jobs, sizeof *w);
    if (!b.has_row || !b.debris || !b.claim || !w) {
        free(b.has_row), free(b.debris), free(b.claim), free(w);
        return failure("out of memory");
    }
    for (int i = 0; i < items->n; i++) b.claim[i] = -1;
    pthread_mutex_init(&b.lock, NULL);
    int rc = csv_read_done(b.csv, items, b.has_row, &b.csv_read) != 0 ? RU_EXIT_FAIL : RU_EXIT_OK;
    if (rc == RU_EXIT_OK) find_debris(o->output, items, names, o, b.debris);
    for (int i = 0; i < items->n; i++)
        if (i % o->shard_n == o->shard_i) b.mine++;
    /* worker 0 uses the models loaded already; the others load their own */
    for (int j = 0; j < o->jobs && rc == RU_EXIT_OK; j++) {
        w[j].b = &b;
        if (j == 0) {
            w[j].ctx = ctx;
            w[j].m = m;
        } else {
            char err[RU_ERR_LEN];
            if ((rc = make_context(o, &w[j].ctx)) != 0) break;
            if (ru_load_models(w[j].ctx, o->solver, o->model, o->vae, &w[j].own, err) != 0) {
                rc = failure("%s", err);
                break;
            }
            w[j].m = &w[j].own;
        }
    }
    if (rc == RU_EXIT_OK) {
        g_workers = w;
        g_nworkers = o->jobs;
        int spawned = 0;
        for (; spawned < o->jobs; spawned++)
            if (pthread_create(&w[spawned].thread, NULL, worker_main, &w[spawned]) != 0) break;
        if (spawned == 0) rc = failure("cannot start a worker thread");
        for (int j = 0; j < spawned; j++) pthread_join(w[j].thread, NULL);
        g_nworkers = 0;
        g_workers = NULL;
        if (b.rc) rc = b.rc;
    }
    for (int j = 1; j < o->jobs; j++) {
        if (w[j].m == &w[j].own) ru_models_free(&w[j].own);
        stsl_context_destroy(w[j].ctx);   /* NULL for workers never set up */
    }
    free(w);
    free(b.has_row), free(b.debris), free(b.claim);
    pthread_mutex_destroy(&b.lock);
    if (rc != RU_EXIT_OK) return rc;
    if (b.stop || g_interrupted) return failure("interrupted; run the same command again to resume");
    if (!o->quiet)
        printf("shard %d/%d: %d item(s): %d restored, %d skipped (already done), %d left to other "
               "processes, %d failed; see %s\n",
               o->shard_i, o->shard_n, b.mine, b.done, b.skipped, b.elsewhere, b.failed, b.csv);
    if (b.failed) return failure("%d of %d item(s) failed (see %s)", b.failed, b.mine, b.csv);
    return RU_EXIT_OK;
}

/* The directory a file would be written into ("." for a bare name). */
static void dir_of(const char *path, char *buf, size_t n)
{
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(buf, n, ".");
    else if (slash == path) snprintf(buf, n, "/");
    else snprintf(buf, n, "%.*s", (int)(slash - path), path);
}

/* Single mode: the output file can be created (its directory exists and is writable, it is not
 * a directory itself) -- checked before any model is loaded. */
static int check_output_file(const char *path, const char *what)
{
    char dir[PATH_MAX];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return failure("cannot write %s %s: it is a directory", what, path);
    dir_of(path, dir, sizeof dir);
    if (stat(dir, &st) != 0)
        return failure("cannot write %s %s: directory %s does not exist", what, path, dir);
    if (!S_ISDIR(st.st_mode))
        return failure("cannot write %s %s: %s is not a directory", what, path, dir);
    if (access(dir, W_OK) != 0)
        return failure("cannot write %s %s: directory %s is not writable", what, path, dir);
    return 0;
}

/* Batch mode: the output directory exists and is writable, or its nearest existing ancestor is
 * a writable directory (it is created only once everything has been checked: a usage error
 * found later leaves nothing behind). */
static int check_output_dir(const char *path, const char *what)
{
    if (cli_is_image_name(path))
        return usage_error("batch mode: %s '%s' names an image file; give a directory", what, path);
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", path);
    struct stat st;
    while (stat(p, &st) != 0) {
        if (errno != ENOENT && errno != ENOTDIR)
            return failure("cannot create %s directory %s: %s: %s", what, path, p, strerror(errno));
        char up[PATH_MAX];
        dir_of(p, up, sizeof up);
        if (!strcmp(up, p)) break;
        snprintf(p, sizeof p, "%s", up);
    }
    if (!S_ISDIR(st.st_mode))
        return failure("cannot create %s directory %s: %s is not a directory", what, path, p);
    if (access(p, W_OK) != 0)
        return failure("cannot %s %s directory %s: %s is not writable", strcmp(p, path) ? "create" : "write",
                       what, path, p);
    return 0;
}

/* Batch mode: create the output directory (checked by check_output_dir). */
static int create_output_dir(const char *path, const char *what)
{
    if (mkdir_p(path) != 0) return failure("cannot create %s directory %s: %s", what, path, strerror(errno));
    if (access(path, W_OK) != 0) return failure("cannot write %s directory %s: %s", what, path, strerror(errno));
    return 0;
}

/* Single mode: write `img` to `path` through this process's temporary (DIR/.NAME.PID.tmp, renamed
 * into place) under NAME's claim, first removing the temporaries a killed run left for it (with
 * the claim held, no live stsl-restore is writing them).  When another process holds the claim,
 * nothing is removed and the last rename wins. */
static int save_claimed(stsl_context *ctx, const stsl_image *img, const char *path)
{
    char dir[PATH_MAX], tmp[PATH_MAX + NAME_MAX + 48];
    dir_of(path, dir, sizeof dir);
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    int claim = claim_take(dir, name);
    if (claim >= 0) remove_temps_of(dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.%d.tmp", dir, name, (int)getpid());
    stsl_image_format fmt = strcasecmp(cli_ext_of(path), ".png") ? STSL_FORMAT_JPEG : STSL_FORMAT_PNG;
    int rc = save_image(ctx, img, tmp, fmt);
    if (rc == 0) {
        kill_hook_image(dir, name, tmp);
        if (rename(tmp, path) != 0) {
            rc = failure("cannot write %s: %s", path, strerror(errno));
            unlink(tmp);
        }
    }
    claim_release(dir, name, claim);
    return rc;
}

/* 1 when both paths exist and are one file (whatever the spelling). */
static int same_file(const char *a, const char *b)
{
    struct stat x, y;
    return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

int main(int argc, char **argv)
{
    cli_tune_malloc();   /* before libtorch allocates anything (cli.h) */
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
    kill_hook_init();

    /* mode: a directory or a manifest (batch); a file whose name or first bytes say PNG/JPEG is
     * an image (single), and must decode as one */
    struct stat st;
    if (stat(o.input, &st) != 0) return failure("cannot read %s: %s", o.input, strerror(errno));
    int batch = 0, is_dir = 0;
    if (S_ISDIR(st.st_mode)) {
        batch = is_dir = 1;
    } else if (!S_ISREG(st.st_mode)) {   /* a FIFO would block the open, a device never end */
        return failure("cannot read %s: not a regular file or a directory", o.input);
    } else {
        int s = sniff_image(o.input);
        if (s < 0) return failure("cannot read %s: %s", o.input, strerror(errno));
        batch = s == 0 && !cli_is_image_name(o.input);
    }
    item_list items = {0};
    char (*names)[NAME_MAX + 8] = NULL;
    if (!batch) {
        if (o.batch_flag)
            return usage_error("%s applies to a directory or manifest INPUT", o.batch_flag);
        if (!cli_is_image_name(o.output))
            return usage_error("OUTPUT '%s' must end in .png, .jpg or .jpeg", o.output);
        if (o.montage && !cli_is_image_name(o.montage))
            return usage_error("--montage '%s' must end in .png, .jpg or .jpeg", o.montage);
        if (same_file(o.input, o.output) || (o.montage && same_file(o.input, o.montage)))
            return usage_error("%s '%s' is the input file itself", same_file(o.input, o.output) ? "OUTPUT" : "--montage",
                               same_file(o.input, o.output) ? o.output : o.montage);
        /* a file that is not an image fails now, not after the models have loaded (its header:
         * its size is compared with the model's before it is decoded) */
        int ch, h, w;
        char herr[RU_ERR_LEN];
        if (ru_image_header(o.input, &ch, &h, &w, herr) != 0) return failure("%s", herr);
        if (check_output_file(o.output, "output")) return RU_EXIT_FAIL;
        if (o.montage && check_output_file(o.montage, "montage")) return RU_EXIT_FAIL;
    } else {
        if (stat(o.output, &st) == 0 && !S_ISDIR(st.st_mode))
            return usage_error("batch mode: OUTPUT '%s' must be a directory", o.output);
        if (is_dir) {
            char ri[PATH_MAX], ro[PATH_MAX];
            if (realpath(o.input, ri) && realpath(o.output, ro) && !strcmp(ri, ro))
                return usage_error("batch mode: OUTPUT must not be the input directory");
        }
        rc = list_items(&o, is_dir, &items, &names);
        if (!rc) rc = check_output_dir(o.output, "OUTPUT");
        if (!rc && o.montage) rc = check_output_dir(o.montage, "--montage");
        if (rc) {
            free(names);
            list_free(&items);
            return rc;
        }
    }

    stsl_context *ctx = NULL;
    rc = make_context(&o, &ctx);
    if (!rc) rc = check_applicable(ctx, &o);
    if (rc) {
        stsl_context_destroy(ctx);
        free(names);
        list_free(&items);
        return rc;
    }

    ru_models m;
    char err[RU_ERR_LEN];
    /* what the files declare first; a single input whose size the model cannot take is refused
     * before any network runs (a load probes its network on the declared shape) */
    rc = ru_find_models(ctx, o.solver, o.model, o.vae, &m, err);
    if (rc == 0 && !batch) {
        int ch, h, w;
        rc = ru_image_header(o.input, &ch, &h, &w, err);
        if (rc == 0) rc = ru_check_size(ch, h, w, &m, o.fit, o.measured, err);
    }
    if (rc == 0) rc = ru_open_models(ctx, &m, err);
    if (rc != 0) {
        stsl_context_destroy(ctx);
        free(names);
        list_free(&items);
        return rc == RU_EXIT_USAGE ? usage_error("%s", err) : failure("%s", err);
    }
    if (o.verbose)
        fprintf(stderr, "stsl-restore: prior %s%s%s, images %dx%dx%d, device %s, %d thread(s), seed %llu\n",
                m.model_path, m.ae ? ", autoencoder " : "", m.ae ? m.vae_path : "", m.image.channels,
                m.image.height, m.image.width, o.device ? o.device : STSL_DEFAULT_DEVICE, o.threads, (unsigned long long)o.seed);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* task options the operator refuses are usage errors: check once on the model's shape */
    stsl_operator *probe = NULL;
    rc = cli_make_operator(ctx, o.task, m.image, &o.task_opts, o.seed, o.noise, &probe, err);
    stsl_operator_destroy(probe);
    if (rc != CLI_EXIT_OK) rc = rc == CLI_EXIT_USAGE ? usage_error("%s", err) : failure("%s", err);
    /* everything is checked: only now is anything created */
    else if (batch && (rc = create_output_dir(o.output, "OUTPUT")) == 0 &&
             (!o.montage || (rc = create_output_dir(o.montage, "--montage")) == 0))
        rc = run_batch(ctx, &m, &o, &items, names);
    else if (!batch)
        rc = run_single(ctx, &m, &o);
    ru_models_free(&m);
    stsl_context_destroy(ctx);
    free(names);
    list_free(&items);
    return rc;
}
