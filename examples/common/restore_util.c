/*
 * restore_util.c -- shared by stsl-restore and the image benchmark; see restore_util.h.
 */
#include "common/restore_util.h"
#include "common/timing.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int fail(char *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, RU_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return -1;
}

double ru_now(void) { return ex_clock_s(CLOCK_MONOTONIC); }

/* ------------------------------------------------------------------------------------------ */
/* Flags                                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* The solver keys the tools take as options (the seed is theirs: it seeds the task too; the
 * progress estimate is the progress bar's business) */
static int is_solver_option(stsl_param key)
{
    return (int)key >= 100 && key != STSL_PARAM_PROGRESS_ESTIMATE;
}

int ru_take_solver_flag(int argc, char **argv, int *i, ru_settings *out, char *err)
{
    char flag[64];
    stsl_param key;
    double v;
    int r = cli_take_param(argc, argv, i, is_solver_option, flag, sizeof flag, &key, &v, err);
    if (r <= 0) return r;
    /* a value no solver takes is refused now, before the solver is known (and any file read);
     * the chosen solver's own bounds are checked by ru_set_solver_param */
    double lo = HUGE_VAL, hi = -HUGE_VAL;
    int integer = 1;
    for (int kind = 0; kind <= STSL_SOLVER_DPS_MO; kind++) {
        stsl_param_bounds b;
        if (stsl_solver_param_bounds((stsl_solver_kind)kind, key, &b) != STSL_OK) continue;
        lo = b.min < lo ? b.min : lo;
        hi = b.max > hi ? b.max : hi;
        integer &= b.is_integer;
    }
    if (integer && v != floor(v)) return fail(err, "%s takes an integer, not %g", flag, v);
    if (!(v >= lo && v <= hi)) return fail(err, "%s: %g is outside [%g, %g]", flag, v, lo, hi);
    return cli_add_setting(out->item, &out->n, RU_MAX_SETTINGS, flag, key, v, "options", err) == 0 ? 1 : -1;
}

static int is_int_value(double v) { return v == floor(v) && fabs(v) < 9.0e15; }

int ru_set_solver_param(stsl_solver *solver, const char *flag, stsl_param key, double value,
                        char *err)
{
    stsl_param_bounds b;
    if (stsl_solver_param_bounds(stsl_solver_get_kind(solver), key, &b) != STSL_OK)
        return fail(err, "%s does not apply to this solver", flag);
    if (b.is_integer && !is_int_value(value))
        return fail(err, "%s takes an integer, not %g", flag, value);
    /* the range is said here, with the flag's name: the library's message names the parameter
     * by its number */
    if (value < b.min || value > b.max)
        return fail(err, "%s: %g is outside [%g, %g]", flag, value, b.min, b.max);
    stsl_status st = b.is_integer ? stsl_solver_set_int(solver, key, (int64_t)value)
                                  : stsl_solver_set_float(solver, key, value);
    if (st != STSL_OK)
        return fail(err, "%s %g: %s", flag, value,
                    *stsl_solver_last_error(solver) ? stsl_solver_last_error(solver)
                                                    : stsl_strerror(st));
    return 0;
}

int ru_apply_solver(stsl_solver *solver, const ru_settings *s, char *err)
{
    for (int i = 0; i < s->n; i++)
        if (ru_set_solver_param(solver, s->item[i].flag, s->item[i].key, s->item[i].value, err) != 0)
            return -1;
    return 0;
}

/* The defaults of `key` for every solver, grouped by value, and those another setting changes:
 * for each enum-valued or small integer setting of the solver (at most SMALL_SETTING_VALUES
 * values), each of its other values is tried on a fresh solver ("30 (rmp with --variant rmp-ve)",
 * "100 (dps-mo with --denoise-passes 1)"). */
#define SMALL_SETTING_VALUES 8
static void solver_defaults(stsl_param key, cli_groups *g, int *is_int)
{
    char names[512];
    snprintf(names, sizeof names, "%s", stsl_solver_names());
    for (char *sv = strtok(names, " "); sv; sv = strtok(NULL, " ")) {
        stsl_solver *s = NULL;
        stsl_param_bounds b;
        char value[48], who[160];
        if (stsl_solver_create_by_name(NULL, sv, &s) != STSL_OK) continue;
        stsl_solver_kind kind = stsl_solver_get_kind(s);
        stsl_solver_destroy(s);
        if (stsl_solver_param_bounds(kind, key, &b) != STSL_OK) continue;
        *is_int = b.is_integer;
        cli_format_param_value(key, b.is_integer, b.default_value, value, sizeof value);
        cli_group_add(g, value, sv);
        stsl_param keys[64];
        int n = 0;
        if (stsl_solver_param_keys(kind, keys, 64, &n) != STSL_OK) continue;
        for (int k = 0; k < n && k < 64; k++) {
            stsl_param_bounds eb;
            if (keys[k] == key || stsl_solver_param_bounds(kind, keys[k], &eb) != STSL_OK || !eb.is_integer) continue;
            const int small = eb.max - eb.min < SMALL_SETTING_VALUES;
            for (int64_t ev = (int64_t)eb.min; ev <= (int64_t)eb.max && ev < 64; ev++) {
                const char *en = stsl_param_value_name(keys[k], ev);
                char number[24];
                double other = 0;
                int64_t iv = 0;
                if (!en && small) {
                    snprintf(number, sizeof number, "%lld", (long long)ev);
                    en = number;
                }
                if (!en || ev == (int64_t)eb.default_value || stsl_solver_create(NULL, kind, &s) != STSL_OK) continue;
                int ok = stsl_solver_set_int(s, keys[k], ev) == STSL_OK &&
                         (b.is_integer ? stsl_solver_get_int(s, key, &iv) : stsl_solver_get_float(s, key, &other)) == STSL_OK;
                stsl_solver_destroy(s);
                if (b.is_integer) other = (double)iv;
                if (!ok || other == b.default_value) continue;
                cli_format_param_value(key, b.is_integer, other, value, sizeof value);
                snprintf(who, sizeof who, "%s with --%s %s", sv, stsl_param_name(keys[k]), en);
                cli_group_add(g, value, who);
            }
        }
    }
}

static stsl_status solver_keys(int kind, stsl_param *keys, int cap, int *n)
{
    return stsl_solver_param_keys((stsl_solver_kind)kind, keys, cap, n);
}

void ru_print_solver_flags(FILE *file)
{
    cli_print_params(file, STSL_SOLVER_DPS_MO, solver_keys, is_solver_option, solver_defaults);
}

/* ------------------------------------------------------------------------------------------ */
/* Models                                                                                      */
/* ------------------------------------------------------------------------------------------ */

int ru_solver_default_latent(const char *solver)
{
    return solver && (strcmp(solver, "stsl") == 0 || strcmp(solver, "stsl-biased") == 0 ||
                      strcmp(solver, "psld") == 0 || strcmp(solver, "ldps") == 0);
}

static int file_exists(const char *path) { return access(path, R_OK) == 0; }

int ru_find_model(const char *file, char *buf, size_t n, char *err)
{
    char dirs[6][PATH_MAX];
    int nd = 0;
    const char *env = getenv("STSL_MODEL_DIR");
    if (env && *env) snprintf(dirs[nd++], PATH_MAX, "%s", env);
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(dirs[nd++], PATH_MAX, "%.3800s/../models", exe);
            snprintf(dirs[nd++], PATH_MAX, "%.3800s/../share/stsl/models", exe);
        }
    }
    snprintf(dirs[nd++], PATH_MAX, "/usr/local/share/stsl/models");
    snprintf(dirs[nd++], PATH_MAX, "/usr/share/stsl/models");
    for (int i = 0; i < nd; i++) {
        char path[PATH_MAX + 256];
        if (snprintf(path, sizeof path, "%.4000s/%.200s", dirs[i], file) >= (int)sizeof path) continue;
        if (file_exists(path)) {
            char real[PATH_MAX];
            if (realpath(path, real)) snprintf(buf, n, "%s", real);
            else snprintf(buf, n, "%s", path);
            return 0;
        }
    }
    return fail(err,
                "model %s not found (looked in $STSL_MODEL_DIR, <bin>/../models, "
                "<bin>/../share/stsl/models, /usr/local/share/stsl/models, /usr/share/stsl/models; "
                "train or copy the models, or pass --model/--vae)",
                file);
}

void ru_models_free(ru_models *m)
{
    if (!m) return;
    stsl_score_destroy(m->score);
    stsl_autoencoder_destroy(m->ae);
    m->score = NULL;
    m->ae = NULL;
}

/* The library's message for a failed call, or its status's name. */
static const char *lib_error(stsl_context *ctx, stsl_status st)
{
    return *stsl_context_last_error(ctx) ? stsl_context_last_error(ctx) : stsl_strerror(st);
}

int ru_find_models(stsl_context *ctx, const char *solver, const char *model_path,
                   const char *vae_path, ru_models *m, char *err)
{
    memset(m, 0, sizeof *m);
    if (!stsl_has_torch())
        return fail(err, "this libstsl was built without the TorchScript backend: it cannot load "
                         "model files");
    if (model_path) {
        snprintf(m->model_path, sizeof m->model_path, "%s", model_path);
    } else if (ru_find_model(ru_solver_default_latent(solver) ? "fmnist-ldm.pt" : "fmnist-ddpm.pt",
                             m->model_path, sizeof m->model_path, err) != 0) {
        return -1;
    }
    if (!file_exists(m->model_path)) return fail(err, "cannot read model %s", m->model_path);
    /* the records only: what the files declare, before anything runs */
    stsl_model_record *rec = NULL;
    stsl_status st = stsl_model_record_read(ctx, m->model_path, &rec);
    if (st != STSL_OK) return fail(err, "cannot load model %s: %s", m->model_path, lib_error(ctx, st));
    const char *role = stsl_model_record_get(rec, "role");
    if (strcmp(role, "unet") != 0) {
        fail(err, "cannot load model %s: it is a model of role '%s', not a prior (unet)",
             m->model_path, role);
        stsl_model_record_destroy(rec);
        return -1;
    }
    stsl_shape latent;
    stsl_model_record_shapes(rec, &m->image, &latent);
    if (!latent.channels) {   /* pixel space */
        stsl_model_record_destroy(rec);
        if (!vae_path) return 0;
        /* said, not ignored: the user expects it to be used */
        fail(err, "--vae %s: the prior %s is a pixel-space model, it uses no autoencoder",
             vae_path, m->model_path);
        return CLI_EXIT_USAGE;
    }
    if (vae_path) {
        snprintf(m->vae_path, sizeof m->vae_path, "%s", vae_path);
    } else {
        const char *pairs = stsl_model_record_get(rec, "pairs_with");
        /* the file the prior names (the record requires it), next to the prior or among the
         * bundled models; never another autoencoder in its place */
        if (!pairs || !*pairs) {
            stsl_model_record_destroy(rec);
            return fail(err, "latent prior %s names no autoencoder (pairs_with): pass --vae FILE",
                        m->model_path);
        }
        const char *base = strrchr(pairs, '/');
        base = base ? base + 1 : pairs;
        const char *slash = strrchr(m->model_path, '/');
        int dl = slash ? (int)(slash - m->model_path) : 1;
        snprintf(m->vae_path, sizeof m->vae_path, "%.*s/%s", dl, slash ? m->model_path : ".", base);
        if (!file_exists(m->vae_path) &&
            ru_find_model(base, m->vae_path, sizeof m->vae_path, NULL) != 0) {
            fail(err,
                 "latent prior %s pairs with the autoencoder %s (its pairs_with), which is "
                 "neither next to it nor among the bundled models: put it there or pass --vae "
                 "FILE",
                 m->model_path, base);
            stsl_model_record_destroy(rec);   /* `base` points into the prior's record */
            return -1;
        }
    }
    stsl_model_record_destroy(rec);
    if (!file_exists(m->vae_path)) return fail(err, "cannot read autoencoder %s", m->vae_path);
    st = stsl_model_record_read(ctx, m->vae_path, &rec);
    if (st != STSL_OK)
        return fail(err, "cannot load autoencoder %s: %s", m->vae_path, lib_error(ctx, st));
    stsl_model_record_shapes(rec, &m->image, NULL);
    stsl_model_record_destroy(rec);
    return 0;
}

int ru_open_models(stsl_context *ctx, ru_models *m, char *err)
{
    stsl_status st = stsl_score_load(ctx, m->model_path, &m->score);
    if (st != STSL_OK)
        return fail(err, "cannot load model %s: %s", m->model_path, lib_error(ctx, st));
    if (stsl_score_is_latent(m->score) != (m->vae_path[0] != '\0')) {   /* changed since read */
        ru_models_free(m);
        return fail(err, "cannot load model %s: the file changed while it was read", m->model_path);
    }
    if (!m->vae_path[0]) {
        stsl_score_shape(m->score, &m->image);
        return 0;
    }
    st = stsl_autoencoder_load(ctx, m->vae_path, NULL, &m->ae);
    if (st != STSL_OK) {
        fail(err, "cannot load autoencoder %s: %s", m->vae_path, lib_error(ctx, st));
        ru_models_free(m);
        return -1;
    }
    stsl_autoencoder_image_shape(m->ae, &m->image);
    return 0;
}

int ru_load_models(stsl_context *ctx, const char *solver, const char *model_path,
                   const char *vae_path, ru_models *m, char *err)
{
    int rc = ru_find_models(ctx, solver, model_path, vae_path, m, err);
    return rc ? rc : ru_open_models(ctx, m, err);
}

/* ------------------------------------------------------------------------------------------ */
/* Progress bar                                                                                */
/* ------------------------------------------------------------------------------------------ */

typedef struct progress_state {
    double start;
    double last;
    int drawn;
} progress_state;

static int progress_cb(void *user, int step, int total, const float *x0, int batch)
{
    (void)x0;
    (void)batch;
    progress_state *ps = user;
    double now = ru_now();
    if (step < total && now - ps->last < 0.1) return 0;
    ps->last = now;
    const int width = 30;
    int fill = total > 0 ? (int)((long long)width * step / total) : 0;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    double el = now - ps->start;
    double eta = step > 0 ? el * (total - step) / step : 0.0;
    fprintf(stderr, "\r  [%s] %d/%d  %.1f s, ~%.0f s left   ", bar, step, total, el, eta);
    fflush(stderr);
    ps->drawn = 1;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* One restoration                                                                             */
/* ------------------------------------------------------------------------------------------ */

void ru_result_free(ru_result *res)
{
    if (!res) return;
    stsl_image_destroy(res->measurement);
    stsl_image_destroy(res->measurement_view);
    stsl_image_destroy(res->restored);
    memset(res, 0, sizeof *res);
}

static size_t shape_size(stsl_shape s) { return (size_t)s.channels * s.height * s.width; }

static int make_view(stsl_operator *op, stsl_shape img, stsl_shape ys, const float *y,
                     ru_result *res, char *err)
{
    int image_like = ys.channels >= 1 && ys.channels <= STSL_MAX_CHANNELS && ys.height >= 1 &&
                     ys.width >= 1;
    if (image_like) {
        if (stsl_image_create(ys.channels, ys.height, ys.width, &res->measurement) != STSL_OK)
            return fail(err, "out of memory");
        memcpy(res->measurement->data, y, shape_size(ys) * sizeof(float));
    }
    if (stsl_image_create(img.channels, img.height, img.width, &res->measurement_view) != STSL_OK)
        return fail(err, "out of memory");
    float *v = res->measurement_view->data;
    if (image_like && ys.channels == img.channels && ys.height > 0 && ys.width > 0 &&
        img.height % ys.height == 0 && img.width % ys.width == 0) {
        int fy = img.height / ys.height, fx = img.width / ys.width;
        for (int c = 0; c < img.channels; c++)
            for (int i = 0; i < img.height; i++)
                for (int j = 0; j < img.width; j++)
                    v[((size_t)c * img.height + i) * img.width + j] =
                        y[((size_t)c * ys.height + i / fy) * ys.width + j / fx];
        return 0;
    }
    stsl_status st = stsl_operator_backproject(op, y, v, 1);
    if (st != STSL_OK) return fail(err, "back-projection: %s", stsl_operator_last_error(op));
    return 0;
}

uint64_t ru_image_seed(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;   /* FNV-1a 64 of the name */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    uint64_t x = seed ^ h;                /* then splitmix64's finaliser */
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return (x ^ (x >> 31)) & ((1ull << 53) - 1);
}

int ru_check_input(const ru_models *m, const ru_job *job, stsl_shape ys, const stsl_image *input,
                   char *err)
{
    if (job->measured) {
        if (input->channels != ys.channels || input->height != ys.height || input->width != ys.width)
            return fail(err,
                        "the measurement is %dx%d with %d channel(s); task %s on %dx%d images "
                        "measures %dx%d with %d channel(s)",
                        input->width, input->height, input->channels, job->task, m->image.width,
                        m->image.height, ys.width, ys.height, ys.channels);
        return 0;
    }
    if (input->channels != m->image.channels || input->height != m->image.height ||
        input->width != m->image.width)
        return fail(err,
                    "the input is %dx%d with %d channel(s); the model restores %dx%d images with %d "
                    "channel(s)",
                    input->width, input->height, input->channels, m->image.width, m->image.height,
                    m->image.channels);
    return 0;
}

int ru_restore(stsl_context *ctx, ru_models *m, const ru_job *job, const stsl_image *input,
               ru_result *res, char *err)
{
    const uint64_t seed = job->seed;
    return ru_restore_batch(ctx, m, job, &input, &seed, 1, res, err);
}

int ru_restore_batch(stsl_context *ctx, ru_models *m, const ru_job *job,
                     const stsl_image *const *inputs, const uint64_t *seeds, int n,
                     ru_result *res, char *err)
{
    for (int i = 0; i < n; i++) {
        memset(&res[i], 0, sizeof res[i]);
        res[i].nfe.struct_size = sizeof res[i].nfe;
    }
    double t0 = ru_now();
    stsl_operator *op = NULL;
    stsl_solver *solver = NULL;
    float *y = NULL, *x = NULL;
    stsl_nfe nfe;
    memset(&nfe, 0, sizeof nfe);
    nfe.struct_size = sizeof nfe;
    int rc = CLI_EXIT_FAIL;
    stsl_status st;
    /* one operator for the batch: its own randomness (masks, kernels) is the task's, from --seed */
    int code = cli_make_operator(ctx, job->task, m->image, job->task_opts, job->seed, job->noise, &op, err);
    if (code != CLI_EXIT_OK) {
        rc = code == CLI_EXIT_USAGE ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
        goto done;
    }
    stsl_shape ys;
    if ((st = stsl_operator_output_shape(op, &ys)) != STSL_OK) {
        fail(err, "task %s: %s", job->task, stsl_operator_last_error(op));
        goto done;
    }
    const size_t ny = shape_size(ys), nx = shape_size(m->image);
    y = malloc((size_t)n * ny * sizeof(float));
    x = malloc((size_t)n * nx * sizeof(float));
    if (!y || !x) {
        fail(err, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        float *yi = y + (size_t)i * ny;
        if (ru_check_input(m, job, ys, inputs[i], err) != 0) goto done;
        if (job->measured) {
            memcpy(yi, inputs[i]->data, ny * sizeof(float));
        } else if ((st = stsl_operator_measure(op, inputs[i]->data, yi, 1, seeds[i])) != STSL_OK) {
            fail(err, "degrading the input: %s", stsl_operator_last_error(op));
            goto done;
        }
        if (make_view(op, m->image, ys, yi, &res[i], err) != 0) goto done;
    }

    if ((st = stsl_solver_create_by_name(ctx, job->solver, &solver)) != STSL_OK) {
        fail(err, "%s", stsl_context_last_error(ctx));
        goto done;
    }
    if ((st = stsl_solver_set_int(solver, STSL_PARAM_SEED, (int64_t)(job->seed & ((1ull << 53) - 1)))) !=
        STSL_OK) {
        fail(err, "seed: %s", stsl_solver_last_error(solver));
        goto done;
    }
    if (job->solver_opts && ru_apply_solver(solver, job->solver_opts, err) != 0) {
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    progress_state ps = {ru_now(), 0.0, 0};
    if (job->progress) stsl_solver_set_progress(solver, progress_cb, &ps);
    if (job->running) *job->running = solver;
    st = stsl_solver_run_seeded(solver, m->score, op, m->ae, y, x, n, seeds);
    if (job->running) *job->running = NULL;
    if (ps.drawn) fprintf(stderr, "\r%*s\r", 78, "");
    stsl_solver_get_nfe(solver, &nfe);
    if (st != STSL_OK) {
        if (st == STSL_CANCELLED) fail(err, "interrupted");
        else
            fail(err, "solver %s failed: %s", job->solver,
                 *stsl_solver_last_error(solver) ? stsl_solver_last_error(solver) : stsl_strerror(st));
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if (stsl_image_create(m->image.channels, m->image.height, m->image.width,
                              &res[i].restored) != STSL_OK) {
            fail(err, "out of memory");
            goto done;
        }
        memcpy(res[i].restored->data, x + (size_t)i * nx, nx * sizeof(float));
    }
    rc = 0;
done:;
    /* the run's cost, shared equally: every sample of a run makes the same evaluations */
    double secs = (ru_now() - t0) / n;
    for (int i = 0; i < n; i++) {
        if (rc != 0) ru_result_free(&res[i]);
        res[i].nfe = nfe;
        res[i].nfe.unet_forward /= (uint64_t)n;
        res[i].nfe.unet_vjp /= (uint64_t)n;
        res[i].nfe.unet_calls = (nfe.unet_calls + (uint64_t)n - 1) / (uint64_t)n;
        res[i].nfe.decoder_forward /= (uint64_t)n;
        res[i].nfe.decoder_vjp /= (uint64_t)n;
        res[i].nfe.encoder_forward /= (uint64_t)n;
        res[i].seconds = secs;
        res[i].batch = n;
    }
    stsl_solver_destroy(solver);
    stsl_operator_destroy(op);
    free(y);
    free(x);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Fitting an input image to the model                                                         */
/* ------------------------------------------------------------------------------------------ */

/* Resample a strided 1-D signal of n_in samples to n_out samples over the window
 * [off, off + len) of the input with a triangle (linear) filter widened by the scale factor when
 * shrinking, so that downscaling averages instead of aliasing. */
static void resample_1d(const float *in, size_t in_stride, int n_in, double off, double len,
                        float *out, size_t out_stride, int n_out)
{
    const double scale = len / n_out;
    const double support = scale > 1.0 ? scale : 1.0;
    /* samples outside the window (a crop) are not used: the edge of the window repeats */
    int first = (int)floor(off + 1e-9), last = (int)ceil(off + len - 1e-9) - 1;
    if (first < 0) first = 0;
    if (last > n_in - 1) last = n_in - 1;
    for (int i = 0; i < n_out; i++) {
        double centre = off + (i + 0.5) * scale - 0.5;
        int lo = (int)floor(centre - support), hi = (int)ceil(centre + support);
        double acc = 0.0, wsum = 0.0;
        for (int k = lo; k <= hi; k++) {
            double w = 1.0 - fabs((k - centre) / support);
            if (w <= 0.0) continue;
            int kk = k < first ? first : k > last ? last : k;
            acc += w * in[(size_t)kk * in_stride];
            wsum += w;
        }
        out[(size_t)i * out_stride] = (float)(wsum > 0.0 ? acc / wsum : 0.0);
    }
}

int ru_fit_image(const stsl_image *in, ru_fit mode, int height, int width, stsl_image **out,
                 char *err)
{
    *out = NULL;
    if (mode != RU_FIT_RESIZE && mode != RU_FIT_CROP) return fail(err, "unknown fit mode");
    double x0 = 0, y0 = 0, w = in->width, h = in->height;
    if (mode == RU_FIT_CROP) {   /* the centred window of the model's aspect ratio */
        double aspect = (double)width / height;
        if (w / h > aspect) {
            x0 = (w - h * aspect) / 2;
            w = h * aspect;
        } else {
            y0 = (h - w / aspect) / 2;
            h = w / aspect;
        }
    }
    float *tmp = malloc(sizeof(float) * (size_t)in->channels * in->height * width);
    if (!tmp || stsl_image_create(in->channels, height, width, out) != STSL_OK) {
        free(tmp);
        return fail(err, "out of memory");
    }
    for (int c = 0; c < in->channels; c++) {
        const float *src = in->data + (size_t)c * in->height * in->width;
        float *t = tmp + (size_t)c * in->height * width;
        for (int r = 0; r < in->height; r++)   /* rows: width */
            resample_1d(src + (size_t)r * in->width, 1, in->width, x0, w, t + (size_t)r * width, 1,
                        width);
        float *dst = (*out)->data + (size_t)c * height * width;
        for (int q = 0; q < width; q++)        /* columns: height */
            resample_1d(t + q, (size_t)width, in->height, y0, h, dst + q, (size_t)width, height);
    }
    free(tmp);
    return 0;
}

void ru_io_message(stsl_context *ctx, stsl_status st, const char *verb, const char *path,
                   char *buf, size_t n)
{
    const char *d = ctx ? stsl_context_last_error(ctx) : "";
    if (*d && strstr(d, path)) snprintf(buf, n, "%s", d);
    else snprintf(buf, n, "cannot %s %s: %s", verb, path, *d ? d : stsl_strerror(st));
}

static int read_failure(stsl_context *ctx, stsl_status st, const char *path, char *err)
{
    ru_io_message(ctx, st, "read", path, err, RU_ERR_LEN);
    return -1;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* PNG: IHDR, then the chunks before the first IDAT for tRNS (which adds an alpha channel). */
static int png_header(int fd, const unsigned char *b, int *channels, int *height, int *width)
{
    if (memcmp(b + 12, "IHDR", 4) != 0) return -1;
    uint32_t w = be32(b + 16), h = be32(b + 20);
    if (w == 0 || h == 0 || w > INT_MAX || h > INT_MAX) return -1;
    static const int by_type[7] = {1, 0, 3, 3, 2, 0, 4};
    int ctype = b[25];
    if (ctype > 6 || by_type[ctype] == 0) return -1;
    int ch = by_type[ctype];
    off_t pos = 8 + 12 + (off_t)be32(b + 8);
    for (int k = 0; k < 64 && (ctype == 0 || ctype == 2 || ctype == 3); k++) {
        unsigned char c[8];
        if (pread(fd, c, 8, pos) != 8 || !memcmp(c + 4, "IDAT", 4) || !memcmp(c + 4, "IEND", 4)) break;
        if (!memcmp(c + 4, "tRNS", 4)) {
            ch++;
            break;
        }
        pos += 12 + (off_t)be32(c);
    }
    *channels = ch, *height = (int)h, *width = (int)w;
    return 0;
}

/* JPEG: the markers up to the first start-of-frame (SOF0..SOF15 but DHT, JPG and DAC). */
static int jpeg_header(int fd, int *channels, int *height, int *width)
{
    off_t pos = 2;
    for (int k = 0; k < 1024; k++) {
        unsigned char m[10];
        if (pread(fd, m, 4, pos) != 4 || m[0] != 0xFF) return -1;
        if (m[1] == 0xFF) { pos++; continue; }   /* fill byte */
        const int len = m[2] << 8 | m[3];
        if (m[1] >= 0xC0 && m[1] <= 0xCF && m[1] != 0xC4 && m[1] != 0xC8 && m[1] != 0xCC) {
            if (len < 8 || pread(fd, m, 10, pos) != 10) return -1;
            const int h = m[5] << 8 | m[6], w = m[7] << 8 | m[8];
            if (h == 0 || w == 0) return -1;
            *channels = m[9] == 1 ? 1 : 3, *height = h, *width = w;
            return 0;
        }
        if (m[1] == 0xD9 || m[1] == 0xDA || len < 2) return -1;   /* image end or data first */
        pos += 2 + len;
    }
    return -1;
}

int ru_image_header(const char *path, int *channels, int *height, int *width, char *err)
{
    /* O_NONBLOCK: opening a FIFO for reading would wait for a writer */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return fail(err, "cannot read %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(err, "cannot read %s: not a regular file", path);
    }
    unsigned char b[33];
    ssize_t n = pread(fd, b, sizeof b, 0);
    int rc = -1;
    const char *kind = NULL;
    if (n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) {
        kind = "PNG";
        if (n == (ssize_t)sizeof b) rc = png_header(fd, b, channels, height, width);
    } else if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) {
        kind = "JPEG";
        rc = jpeg_header(fd, channels, height, width);
    }
    close(fd);
    if (rc == 0) return 0;
    if (n == 0) return fail(err, "cannot read %s: empty file", path);
    if (!kind) return fail(err, "cannot read %s: not a PNG or JPEG image", path);
    return fail(err, "cannot read %s: %s header truncated or malformed", path, kind);
}

int ru_check_size(int file_ch, int file_h, int file_w, const ru_models *m, ru_fit fit,
                  int measured, char *err)
{
    const int same_size = file_h == m->image.height && file_w == m->image.width;
    if (!measured && !same_size && fit == RU_FIT_NONE)
        return fail(err,
                    "the input is %dx%d with %d channel(s); the model %s restores %dx%d images "
                    "with %d channel(s) (channels are converted, sizes are not): pass --resize to "
                    "scale it to %dx%d, or --crop to cut its centre to the model's aspect ratio "
                    "and scale that, or --model a prior trained at %dx%d (docs/real-models.md)",
                    file_w, file_h, file_ch, m->model_path, m->image.width, m->image.height,
                    m->image.channels, m->image.width, m->image.height, file_w, file_h);
    return 0;
}

int ru_load_input(stsl_context *ctx, const char *path, const ru_models *m, ru_fit fit,
                  int measured, stsl_image **out, char *err)
{
    *out = NULL;
    stsl_image *img = NULL;
    /* the header first: a size the model cannot take fails before the decode (an 8192x8192 PNG
     * of a few hundred KB takes seconds and a GB to decode) */
    int file_ch, file_h, file_w;
    if (ru_image_header(path, &file_ch, &file_h, &file_w, err) != 0) return -1;
    if (ru_check_size(file_ch, file_h, file_w, m, fit, measured, err) != 0) return -1;
    /* channels converted to the model's by the library */
    stsl_status st = stsl_image_load(ctx, path, m->image.channels, &img);
    if (st != STSL_OK) return read_failure(ctx, st, path, err);
    if (measured || (img->height == m->image.height && img->width == m->image.width)) {
        *out = img;
        return 0;
    }
    int rc = ru_fit_image(img, fit, m->image.height, m->image.width, out, err);
    stsl_image_destroy(img);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Montage                                                                                     */
/* ------------------------------------------------------------------------------------------ */

int ru_montage(stsl_image *const *tiles, int n, int scale, stsl_image **out, char *err)
{
    const int gap = 2;
    int ch = 0, h = 0, w = 0, count = 0;
    if (scale < 1) scale = 1;
    for (int i = 0; i < n; i++) {
        if (!tiles[i]) continue;
        if (!count) {
            ch = tiles[i]->channels;
            h = tiles[i]->height;
        } else if (tiles[i]->channels != ch || tiles[i]->height != h) {
            return fail(err, "montage tiles differ in size");
        }
        w += tiles[i]->width * scale + (count ? gap : 0);
        count++;
    }
    if (!count) return fail(err, "nothing to put in the montage");
    if (stsl_image_create(ch, h * scale, w, out) != STSL_OK) return fail(err, "out of memory");
    stsl_image *m = *out;
    int H = h * scale;
    for (size_t k = 0; k < (size_t)ch * H * w; k++) m->data[k] = 1.0f;
    int x0 = 0;
    for (int i = 0; i < n; i++) {
        const stsl_image *t = tiles[i];
        if (!t) continue;
        for (int c = 0; c < ch; c++)
            for (int r = 0; r < H; r++)
                for (int q = 0; q < t->width * scale; q++)
                    m->data[((size_t)c * H + r) * w + x0 + q] =
                        t->data[((size_t)c * h + r / scale) * t->width + q / scale];
        x0 += t->width * scale + gap;
    }
    return 0;
}
