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
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/batch.h"
#include "common/restore_util.h"
#include "stsl.h"

/* Batch mode's images per solver run: docs/scaling.md measures images per second against it. */
#define DEFAULT_BATCH 16

typedef struct options {
    const char *input, *output;
    const char *task, *solver;
    const char *model, *vae, *device, *montage;
    int threads, montage_scale;
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

static stsl_solver *volatile g_running = NULL;   /* single mode's solver while it runs */

static void on_signal(int sig)
{
    (void)sig;
    stsl_solver *s = g_running;
    if (s) stsl_solver_cancel(s);
    batch_interrupt();
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
           "                       (a level at most; RMP can amplify it into another restoration,\n"
           "                       docs/scaling.md); --pad-batch 1 makes it bit for bit the same\n"
           "                       on any CPU, at the cost of one network call per image\n"
           "  --jobs J             batch mode: J workers side by side, each with its own models\n"
           "                       and --threads threads (default 1; on a small model two 1-thread\n"
           "                       workers beat one 2-thread worker, see docs/scaling.md)\n"
           "  --quiet              no progress bar, no summary\n"
           "  --verbose            models, settings and library messages on stderr\n"
           "  --help, --version\n"
           "\n"
           "solver options (each applies to the solvers its defaults name; --steps among them):\n",
           stsl_solver_names(), DEFAULT_BATCH);
    ru_print_solver_flags(stdout);
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
            else return cli_usage_error("unexpected argument '%s'", a);
            npos++;
            i++;
            continue;
        }
        int r = ru_take_solver_flag(argc, argv, &i, &o->solver_opts, err);
        if (r == 0) r = cli_take_task_option(argc, argv, &i, &o->task_opts, err);
        if (r < 0) return cli_usage_error("%s", err);
        if (r > 0) continue;
        if (!strcmp(a, "--measured")) { o->measured = 1; i++; continue; }
        if (!strcmp(a, "--resize") || !strcmp(a, "--crop")) {
            ru_fit f = a[2] == 'r' ? RU_FIT_RESIZE : RU_FIT_CROP;
            if (o->fit && o->fit != f) return cli_usage_error("--resize and --crop exclude each other");
            o->fit = f;
            i++;
            continue;
        }
        if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) { o->quiet = 1; i++; continue; }
        if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) { o->verbose = 1; i++; continue; }
        /* options with a value: "--opt V" or "--opt=V" */
        static const char *const valued[] = {"--task", "--solver", "--model", "--vae",
                                             "--device", "--threads", "--seed", "--noise",
                                             "--montage", "--montage-scale", "--shard", "--batch",
                                             "--jobs", NULL};
        const char *val = NULL;
        const char *name = NULL;
        for (int k = 0; valued[k]; k++) {
            size_t len = strlen(valued[k]);
            if (!strcmp(a, valued[k])) {
                if (i + 1 >= argc) return cli_usage_error("%s needs a value", a);
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
        if (!name) return cli_usage_error("unknown option '%s'", a);
        long long v;
        if (!strcmp(name, "--task")) o->task = val;
        else if (!strcmp(name, "--solver")) o->solver = val;
        else if (!strcmp(name, "--model")) o->model = val;
        else if (!strcmp(name, "--vae")) o->vae = val;
        else if (!strcmp(name, "--device")) o->device = val;
        else if (!strcmp(name, "--montage")) o->montage = val;
        else if (!strcmp(name, "--threads")) {
            if (parse_long(val, 1, 256, &v)) return cli_usage_error("--threads: '%s' is not in 1..256", val);
            o->threads = (int)v;
        } else if (!strcmp(name, "--montage-scale")) {
            if (parse_long(val, 1, 64, &v)) return cli_usage_error("--montage-scale: '%s' is not in 1..64", val);
            o->montage_scale = (int)v;
        } else if (!strcmp(name, "--seed")) {
            if (parse_long(val, 0, (1ll << 53), &v)) return cli_usage_error("--seed: '%s' is not a seed (0..2^53)", val);
            o->seed = (uint64_t)v;
        } else if (!strcmp(name, "--noise")) {
            if (cli_parse_noise(val, &o->noise, err) != 0) return cli_usage_error("%s", err);
        } else if (!strcmp(name, "--batch")) {
            if (parse_long(val, 1, STSL_MAX_BATCH, &v))
                return cli_usage_error("--batch: '%s' is not in 1..%d", val, STSL_MAX_BATCH);
            o->batch = (int)v;
        } else if (!strcmp(name, "--jobs")) {
            if (parse_long(val, 1, 64, &v)) return cli_usage_error("--jobs: '%s' is not in 1..64", val);
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
                return cli_usage_error("--shard: '%s' is not I/N with 0 <= I < N <= %d", val, INT_MAX);
            o->shard_i = (int)si;
            o->shard_n = (int)sn;
        }
        if (!o->batch_flag && (!strcmp(name, "--shard") || !strcmp(name, "--batch") || !strcmp(name, "--jobs")))
            o->batch_flag = name;
    }
    if (npos < 2) return cli_usage_error("INPUT and OUTPUT are required");
    if (o->fit && o->measured)
        return cli_usage_error("--resize/--crop apply to a clean INPUT, not to a --measured one");
    if (!o->task) return cli_usage_error("--task is required");
    if (!o->solver) return cli_usage_error("--solver is required");
    if (!name_in_list(o->task, stsl_operator_names()))
        return cli_usage_error("unknown task '%s' (tasks: %s)", o->task, stsl_operator_names());
    if (!name_in_list(o->solver, stsl_solver_names()))
        return cli_usage_error("unknown solver '%s' (solvers: %s)", o->solver, stsl_solver_names());
    return 0;
}

/* Solver flags that do not apply to the chosen solver are usage errors: check them before any
 * model is loaded (task options are checked once the image shape is known). */
static int check_applicable(stsl_context *ctx, const options *o)
{
    char err[RU_ERR_LEN];
    stsl_solver *s = NULL;
    if (stsl_solver_create_by_name(ctx, o->solver, &s) != STSL_OK)
        return cli_usage_error("%s", stsl_context_last_error(ctx));
    int rc = ru_apply_solver(s, &o->solver_opts, err);
    stsl_solver_destroy(s);
    if (rc) return cli_usage_error("solver %s: %s", o->solver, err);
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
    if (stsl_context_create(out) != STSL_OK) return cli_failure("cannot create a context");
    stsl_context_set_threads(*out, o->threads);
    /* the library reads the device string (and says what it accepts); no --device: its default */
    if (o->device && stsl_context_set_device(*out, o->device) != STSL_OK)
        return cli_usage_error("--device: %s", stsl_context_last_error(*out));
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
        return cli_failure("%s", msg);
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

/* claimed: through save_claimed (single mode), else straight to `path`. */
static int write_montage(stsl_context *ctx, const options *o, const stsl_image *clean,
                         const ru_result *r, const char *path, int claimed)
{
    stsl_image *tiles[3] = {(stsl_image *)clean, r->measurement_view, r->restored};
    stsl_image *m = NULL;
    char err[RU_ERR_LEN];
    if (ru_montage(tiles, 3, o->montage_scale, &m, err) != 0) return cli_failure("montage: %s", err);
    int rc = claimed ? batch_save_claimed(ctx, m, path) : save_image(ctx, m, path, STSL_FORMAT_AUTO);
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
    if (ru_load_input(ctx, o->input, m, o->fit, o->measured, &in, err)) return cli_failure("%s", err);
    ru_job job;
    job_from(o, &job);
    ru_result r;
    int rc = ru_restore(ctx, m, &job, in, &r, err);
    if (rc != 0) {
        stsl_image_destroy(in);
        if (rc == CLI_EXIT_USAGE) return cli_usage_error("%s", err);
        return cli_failure("%s: %s", o->input, err);
    }
    rc = batch_save_claimed(ctx, r.restored, o->output);
    if (!rc && o->montage) rc = write_montage(ctx, o, o->measured ? NULL : in, &r, o->montage, 1);
    if (!rc && !o->quiet) print_summary(o, o->input, o->output, &r);
    ru_result_free(&r);
    stsl_image_destroy(in);
    return rc ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

/* ---- batch mode: the engine is common/batch.c; what an item is and how it is restored -------- */

/* A batch worker's own context and models (worker 0 has the ones main loaded). */
typedef struct restore_worker {
    const options *o;
    stsl_context *ctx;
    ru_models *m;
    ru_models own;
    int own_loaded;
} restore_worker;

typedef struct restore_batch {
    const options *o;
    stsl_context *ctx;    /* main's, for worker 0 */
    ru_models *m;
} restore_batch;

static int open_worker(void *user, int w, stsl_context **ctx, void **state)
{
    const restore_batch *rb = user;
    restore_worker *rw = calloc(1, sizeof *rw);
    if (!(*state = rw)) return cli_failure("out of memory");
    rw->o = rb->o;
    if (w == 0) {
        rw->ctx = rb->ctx;
        rw->m = rb->m;
    } else {
        char err[RU_ERR_LEN];
        int rc = make_context(rb->o, &rw->ctx);
        if (rc) return rc;
        if (ru_load_models(rw->ctx, rb->o->solver, rb->o->model, rb->o->vae, &rw->own, err) != 0)
            return cli_failure("%s", err);
        rw->own_loaded = 1;
        rw->m = &rw->own;
    }
    *ctx = rw->ctx;
    return CLI_EXIT_OK;
}

static void close_worker(void *user, int w, stsl_context *ctx, void *state)
{
    (void)user, (void)ctx;
    restore_worker *rw = state;
    if (!rw) return;
    if (w > 0) {
        if (rw->own_loaded) ru_models_free(&rw->own);
        stsl_context_destroy(rw->ctx);
    }
    free(rw);
}

static int load_item(void *state, const char *path, stsl_image **input, char *err)
{
    const restore_worker *rw = state;
    return ru_load_input(rw->ctx, path, rw->m, rw->o->fit, rw->o->measured, input, err);
}

static int restore_items(void *state, const stsl_image *const *inputs, const uint64_t *seeds, int n,
                         stsl_solver **running, ru_result *res, char *err)
{
    restore_worker *rw = state;
    ru_job job;
    job_from(rw->o, &job);
    job.running = running;
    if (rw->o->jobs > 1) job.progress = 0;   /* bars of several workers would overwrite each other */
    return ru_restore_batch(rw->ctx, rw->m, &job, inputs, seeds, n, res, err);
}

static int write_item_montage(void *user, stsl_context *ctx, const char *name, const stsl_image *in,
                              const ru_result *r)
{
    const options *o = ((const restore_batch *)user)->o;
    if (!o->montage) return 0;
    char mp[PATH_MAX + NAME_MAX + 16];
    snprintf(mp, sizeof mp, "%s/%s", o->montage, name);
    return write_montage(ctx, o, o->measured ? NULL : in, r, mp, 0);
}

static void report_item(void *user, const char *path, const char *out, const ru_result *r)
{
    print_summary(((const restore_batch *)user)->o, path, out, r);
}

/* Restore up to --batch images per solver run, in --jobs workers.  Each image draws from its own
 * seed (ru_image_seed of its output name), so it restores as it would in any other batch, shard,
 * worker or company up to float rounding, and bit for bit with --pad-batch 1 (one image a run:
 * STSL_PARAM_PAD_BATCH in stsl.h). */
static int run_batch(stsl_context *ctx, ru_models *m, const options *o, const batch_items *items)
{
    restore_batch rb = {o, ctx, m};
    const batch_ops ops = {&rb, open_worker, close_worker, load_item, restore_items,
                           write_item_montage, report_item};
    const batch_config cfg = {o->output, o->shard_i, o->shard_n, o->batch, o->jobs, o->seed,
                              o->quiet, o->verbose};
    return batch_run(&cfg, &ops, items, NULL);
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

/* Single mode: the output file can be created (its directory exists and is writable, it is not
 * a directory itself) -- checked before any model is loaded. */
static int check_output_file(const char *path, const char *what)
{
    char dir[PATH_MAX];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return cli_failure("cannot write %s %s: it is a directory", what, path);
    cli_dir_of(path, dir, sizeof dir);
    if (stat(dir, &st) != 0)
        return cli_failure("cannot write %s %s: directory %s does not exist", what, path, dir);
    if (!S_ISDIR(st.st_mode))
        return cli_failure("cannot write %s %s: %s is not a directory", what, path, dir);
    if (access(dir, W_OK) != 0)
        return cli_failure("cannot write %s %s: directory %s is not writable", what, path, dir);
    return 0;
}

/* Batch mode: the output directory exists and is writable, or its nearest existing ancestor is
 * a writable directory (it is created only once everything has been checked: a usage error
 * found later leaves nothing behind). */
static int check_output_dir(const char *path, const char *what)
{
    if (cli_is_image_name(path))
        return cli_usage_error("batch mode: %s '%s' names an image file; give a directory", what, path);
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", path);
    struct stat st;
    while (stat(p, &st) != 0) {
        if (errno != ENOENT && errno != ENOTDIR)
            return cli_failure("cannot create %s directory %s: %s: %s", what, path, p, strerror(errno));
        char up[PATH_MAX];
        cli_dir_of(p, up, sizeof up);
        if (!strcmp(up, p)) break;
        snprintf(p, sizeof p, "%s", up);
    }
    if (!S_ISDIR(st.st_mode))
        return cli_failure("cannot create %s directory %s: %s is not a directory", what, path, p);
    if (access(p, W_OK) != 0)
        return cli_failure("cannot %s %s directory %s: %s is not writable", strcmp(p, path) ? "create" : "write",
                       what, path, p);
    return 0;
}

/* Batch mode: create the output directory (checked by check_output_dir). */
static int create_output_dir(const char *path, const char *what)
{
    if (mkdir_p(path) != 0) return cli_failure("cannot create %s directory %s: %s", what, path, strerror(errno));
    if (access(path, W_OK) != 0) return cli_failure("cannot write %s directory %s: %s", what, path, strerror(errno));
    return 0;
}

/* 1 when both paths exist and are one file (whatever the spelling). */
static int same_file(const char *a, const char *b)
{
    struct stat x, y;
    return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

int main(int argc, char **argv)
{
    if (cli_start("stsl-restore", argc, argv, print_help)) return CLI_EXIT_OK;
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc;
    batch_kill_hook_init("STSL_RESTORE_KILL");

    /* mode: a directory or a manifest (batch); a file whose name or first bytes say PNG/JPEG is
     * an image (single), and must decode as one */
    struct stat st;
    if (stat(o.input, &st) != 0) return cli_failure("cannot read %s: %s", o.input, strerror(errno));
    int batch = 0, is_dir = 0;
    if (S_ISDIR(st.st_mode)) {
        batch = is_dir = 1;
    } else if (!S_ISREG(st.st_mode)) {   /* a FIFO would block the open, a device never end */
        return cli_failure("cannot read %s: not a regular file or a directory", o.input);
    } else {
        int s = sniff_image(o.input);
        if (s < 0) return cli_failure("cannot read %s: %s", o.input, strerror(errno));
        batch = s == 0 && !cli_is_image_name(o.input);
    }
    batch_items items = {0};
    if (!batch) {
        if (o.batch_flag)
            return cli_usage_error("%s applies to a directory or manifest INPUT", o.batch_flag);
        if (!cli_is_image_name(o.output))
            return cli_usage_error("OUTPUT '%s' must end in .png, .jpg or .jpeg", o.output);
        if (o.montage && !cli_is_image_name(o.montage))
            return cli_usage_error("--montage '%s' must end in .png, .jpg or .jpeg", o.montage);
        if (same_file(o.input, o.output) || (o.montage && same_file(o.input, o.montage)))
            return cli_usage_error("%s '%s' is the input file itself", same_file(o.input, o.output) ? "OUTPUT" : "--montage",
                               same_file(o.input, o.output) ? o.output : o.montage);
        /* a file that is not an image fails now, not after the models have loaded (its header:
         * its size is compared with the model's before it is decoded) */
        int ch, h, w;
        char herr[RU_ERR_LEN];
        if (ru_image_header(o.input, &ch, &h, &w, herr) != 0) return cli_failure("%s", herr);
        if (check_output_file(o.output, "output")) return CLI_EXIT_FAIL;
        if (o.montage && check_output_file(o.montage, "montage")) return CLI_EXIT_FAIL;
    } else {
        if (stat(o.output, &st) == 0 && !S_ISDIR(st.st_mode))
            return cli_usage_error("batch mode: OUTPUT '%s' must be a directory", o.output);
        if (is_dir) {
            char ri[PATH_MAX], ro[PATH_MAX];
            if (realpath(o.input, ri) && realpath(o.output, ro) && !strcmp(ri, ro))
                return cli_usage_error("batch mode: OUTPUT must not be the input directory");
        }
        rc = batch_items_load(o.input, is_dir, &items);
        if (!rc) rc = check_output_dir(o.output, "OUTPUT");
        if (!rc && o.montage) rc = check_output_dir(o.montage, "--montage");
        if (rc) {
            batch_items_free(&items);
            return rc;
        }
    }

    stsl_context *ctx = NULL;
    rc = make_context(&o, &ctx);
    if (!rc) rc = check_applicable(ctx, &o);
    if (rc) {
        stsl_context_destroy(ctx);
        batch_items_free(&items);
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
        batch_items_free(&items);
        return rc == CLI_EXIT_USAGE ? cli_usage_error("%s", err) : cli_failure("%s", err);
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
    if (rc != CLI_EXIT_OK) rc = rc == CLI_EXIT_USAGE ? cli_usage_error("%s", err) : cli_failure("%s", err);
    /* everything is checked: only now is anything created */
    else if (batch && (rc = create_output_dir(o.output, "OUTPUT")) == 0 &&
             (!o.montage || (rc = create_output_dir(o.montage, "--montage")) == 0))
        rc = run_batch(ctx, &m, &o, &items);
    else if (!batch)
        rc = run_single(ctx, &m, &o);
    ru_models_free(&m);
    stsl_context_destroy(ctx);
    batch_items_free(&items);
    return rc;
}
