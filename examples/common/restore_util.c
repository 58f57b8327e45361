/*
 * restore_util.c -- shared by stsl-restore and the image benchmark; see restore_util.h.
 */
#include "common/restore_util.h"
#include "common/timing.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

const ru_flag RU_SOLVER_FLAGS[] = {
    {"--K", STSL_PARAM_INNER_STEPS, "inner steps: STSL K, RMP T_in, DPS-MO MO directions per level"},
    {"--inner-steps", STSL_PARAM_INNER_STEPS, NULL},
    {"--probes", STSL_PARAM_PROBES, "STSL / RMP (tweedie) Hutchinson probes N"},
    {"--eta", STSL_PARAM_ETA, "STSL second-order weight; DDIM eta; DPS-MO re-noise eta (1 ancestral, 0 ODE)"},
    {"--lambda", STSL_PARAM_LAMBDA, "STSL likelihood strength"},
    {"--lr", STSL_PARAM_LEARNING_RATE, "STSL step fraction (scaled) or Adam lr; RMP s1"},
    {"--lr-decay", STSL_PARAM_LR_DECAY, "STSL lr multiplier per reverse step"},
    {"--kappa", STSL_PARAM_KAPPA, "STSL proximal weight"},
    {"--zeta", STSL_PARAM_ZETA, "DPS / RMP guidance scale; DPS-MO likelihood weight (1 = the likelihood)"},
    {"--omega", STSL_PARAM_OMEGA, "LDPS/PSLD data weight"},
    {"--gamma", STSL_PARAM_GAMMA, "PSLD gluing weight"},
    {"--sigma-min", STSL_PARAM_SIGMA_MIN, "DPS-MO / RMP-VE ladder end"},
    {"--sigma-max", STSL_PARAM_SIGMA_MAX, "DPS-MO / RMP-VE ladder start"},
    {"--variant", STSL_PARAM_VARIANT, "default | rmp-vp | rmp-ve | score-plus"},
    {"--init", STSL_PARAM_INIT, "STSL start: predicted-noise | fresh-noise | ddim-inversion | prior"},
    {"--squared-loss", STSL_PARAM_SQUARED_LOSS, "STSL data term squared (1, eq. 5) or not (0)"},
    {"--inner-inclusive", STSL_PARAM_INNER_INCLUSIVE, "STSL K+1 inner passes (1) or K (0)"},
    {"--adam-persist", STSL_PARAM_ADAM_PERSIST, "STSL keeps Adam moments across steps (1)"},
    {"--batch-limit", STSL_PARAM_BATCH_LIMIT, "max points per network call (memory bound)"},
    {"--pad-batch", STSL_PARAM_PAD_BATCH, "shape network calls as for a batch of P (same bits at any batch)"},
    {"--step-rule", STSL_PARAM_STEP_RULE, "STSL inner update: adam | scaled"},
    {"--step-noise", STSL_PARAM_STEP_NOISE, "STSL line-14 noise (0 as written, 1 DDPM)"},
    {"--likelihood-variance", STSL_PARAM_LIKELIHOOD_VARIANCE, "RMP v_k: flat | tweedie"},
    {"--renoise-level", STSL_PARAM_RENOISE_LEVEL, "DPS-MO next level by the eta step (0) or all fresh noise (1)"},
    {NULL, 0, NULL},
};

typedef struct named_value {
    stsl_param key;
    const char *name;
    int value;
} named_value;

static const named_value NAMED[] = {
    {STSL_PARAM_SR_FILTER, "bicubic", STSL_SR_BICUBIC},
    {STSL_PARAM_SR_FILTER, "box", STSL_SR_BOX},
    {STSL_PARAM_LOSS, "squared", STSL_LOSS_SQUARED},
    {STSL_PARAM_LOSS, "l2", STSL_LOSS_SQUARED},
    {STSL_PARAM_LOSS, "l1", STSL_LOSS_L1},
    {STSL_PARAM_LOSS, "huber", STSL_LOSS_HUBER},
    {STSL_PARAM_BOUNDARY, "reflect", STSL_BOUNDARY_REFLECT},
    {STSL_PARAM_BOUNDARY, "zero", STSL_BOUNDARY_ZERO},
    {STSL_PARAM_INIT, "predicted-noise", STSL_INIT_PREDICTED_NOISE},
    {STSL_PARAM_INIT, "fresh-noise", STSL_INIT_FRESH_NOISE},
    {STSL_PARAM_INIT, "ddim-inversion", STSL_INIT_DDIM_INVERSION},
    {STSL_PARAM_INIT, "prior", STSL_INIT_PRIOR},
    {STSL_PARAM_STEP_RULE, "adam", STSL_STEP_ADAM},
    {STSL_PARAM_STEP_RULE, "scaled", STSL_STEP_SCALED},
    {STSL_PARAM_LIKELIHOOD_VARIANCE, "flat", STSL_LIKVAR_FLAT},
    {STSL_PARAM_LIKELIHOOD_VARIANCE, "tweedie", STSL_LIKVAR_TWEEDIE},
    {STSL_PARAM_VARIANT, "default", STSL_VARIANT_DEFAULT},
    {STSL_PARAM_VARIANT, "rmp-vp", STSL_VARIANT_RMP_VP},
    {STSL_PARAM_VARIANT, "rmp-ve", STSL_VARIANT_RMP_VE},
    {STSL_PARAM_VARIANT, "score-plus", STSL_VARIANT_STSL_SCORE_PLUS},
};

int ru_take_flag(const ru_flag *flags, int argc, char **argv, int *i, ru_settings *out,
                 char *err)
{
    const char *arg = argv[*i];
    for (const ru_flag *f = flags; f->flag; f++) {
        size_t len = strlen(f->flag);
        const char *val = NULL;
        int used = 1;
        if (strcmp(arg, f->flag) == 0) {
            if (*i + 1 >= argc) return fail(err, "%s needs a value", f->flag);
            val = argv[*i + 1];
            used = 2;
        } else if (strncmp(arg, f->flag, len) == 0 && arg[len] == '=') {
            val = arg + len + 1;
        } else {
            continue;
        }
        double v = 0.0;
        int named = 0;
        for (size_t k = 0; k < sizeof NAMED / sizeof NAMED[0]; k++)
            if (NAMED[k].key == f->key && strcmp(NAMED[k].name, val) == 0) {
                v = NAMED[k].value;
                named = 1;
                break;
            }
        if (!named) {
            char *end = NULL;
            errno = 0;
            v = strtod(val, &end);
            if (!*val || !end || *end || errno || !isfinite(v))
                return fail(err, "%s: '%.64s' is not a valid value", f->flag, val);
        }
        if (out->n >= RU_MAX_SETTINGS) return fail(err, "too many options");
        out->item[out->n].flag = f->flag;
        out->item[out->n].key = f->key;
        out->item[out->n].value = v;
        out->n++;
        *i += used;
        return 1;
    }
    return 0;
}

static int is_int_value(double v) { return v == floor(v) && fabs(v) < 9.0e15; }

int ru_apply_solver(stsl_solver *solver, const ru_settings *s, char *err)
{
    stsl_solver_kind kind = stsl_solver_get_kind(solver);
    for (int i = 0; i < s->n; i++) {
        stsl_param_bounds b;
        if (stsl_solver_param_bounds(kind, s->item[i].key, &b) != STSL_OK)
            return fail(err, "%s does not apply to this solver", s->item[i].flag);
        stsl_status st;
        if (b.is_integer) {
            if (!is_int_value(s->item[i].value))
                return fail(err, "%s takes an integer, not %g", s->item[i].flag, s->item[i].value);
            st = stsl_solver_set_int(solver, s->item[i].key, (int64_t)s->item[i].value);
        } else {
            st = stsl_solver_set_float(solver, s->item[i].key, s->item[i].value);
        }
        if (st != STSL_OK)
            return fail(err, "%s %g: %s", s->item[i].flag, s->item[i].value,
                        *stsl_solver_last_error(solver) ? stsl_solver_last_error(solver)
                                                        : stsl_strerror(st));
    }
    return 0;
}

void ru_print_flags(const ru_flag *flags, void *file)
{
    for (const ru_flag *f = flags; f->flag; f++)
        if (f->help) fprintf((FILE *)file, "  %-20s %s\n", f->flag, f->help);
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

int ru_load_models(stsl_context *ctx, const char *solver, const char *model_path,
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
    stsl_status st = stsl_score_load(ctx, m->model_path, &m->score);
    if (st != STSL_OK)
        return fail(err, "cannot load model %s: %s", m->model_path,
                    *stsl_context_last_error(ctx) ? stsl_context_last_error(ctx) : stsl_strerror(st));
    if (stsl_score_is_latent(m->score)) {
        if (vae_path) {
            snprintf(m->vae_path, sizeof m->vae_path, "%s", vae_path);
        } else {
            const char *pairs = stsl_score_meta(m->score, "pairs_with");
            int found = 0;
            if (pairs && *pairs) {
                const char *base = strrchr(pairs, '/');
                base = base ? base + 1 : pairs;
                const char *slash = strrchr(m->model_path, '/');
                int dl = slash ? (int)(slash - m->model_path) : 1;
                snprintf(m->vae_path, sizeof m->vae_path, "%.*s/%s", dl,
                         slash ? m->model_path : ".", base);
                found = file_exists(m->vae_path);
            }
            if (!found && ru_find_model("fmnist-vae.pt", m->vae_path, sizeof m->vae_path, err) != 0) {
                ru_models_free(m);
                return fail(err, "latent prior %s needs an autoencoder: pass --vae FILE",
                            m->model_path);
            }
        }
        if (!file_exists(m->vae_path)) {
            ru_models_free(m);
            return fail(err, "cannot read autoencoder %s", m->vae_path);
        }
        st = stsl_autoencoder_load(ctx, m->vae_path, NULL, &m->ae);
        if (st != STSL_OK) {
            fail(err, "cannot load autoencoder %s: %s", m->vae_path,
                 *stsl_context_last_error(ctx) ? stsl_context_last_error(ctx) : stsl_strerror(st));
            ru_models_free(m);
            return -1;
        }
        stsl_autoencoder_image_shape(m->ae, &m->image);
    } else {
        stsl_score_shape(m->score, &m->image);
    }
    return 0;
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
    int rc = RU_EXIT_FAIL;
    stsl_status st;
    /* one operator for the batch: its own randomness (masks, kernels) is the task's, from --seed */
    int code = cli_make_operator(ctx, job->task, m->image, job->task_opts, job->seed, job->noise, &op, err);
    if (code != CLI_EXIT_OK) {
        rc = code == CLI_EXIT_USAGE ? RU_EXIT_USAGE : RU_EXIT_FAIL;
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
    if (job->steps > 0 &&
        (st = stsl_solver_set_int(solver, STSL_PARAM_STEPS, job->steps)) != STSL_OK) {
        fail(err, "--steps %d: %s", job->steps, stsl_solver_last_error(solver));
        goto done;
    }
    if (job->pad_batch > 0 &&
        (st = stsl_solver_set_int(solver, STSL_PARAM_PAD_BATCH, job->pad_batch)) != STSL_OK) {
        fail(err, "--batch %d: %s", job->pad_batch, stsl_solver_last_error(solver));
        goto done;
    }
    if (job->solver_opts && ru_apply_solver(solver, job->solver_opts, err) != 0) {
        rc = RU_EXIT_USAGE;
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

int ru_load_input(stsl_context *ctx, const char *path, const ru_models *m, ru_fit fit,
                  int measured, stsl_image **out, char *err)
{
    *out = NULL;
    stsl_image *img = NULL;
    /* the file's own channels first (for the message), then the model's (the library converts) */
    stsl_status st = stsl_image_load(ctx, path, 0, &img);
    if (st != STSL_OK) return read_failure(ctx, st, path, err);
    const int file_ch = img->channels;
    if (file_ch != m->image.channels) {
        stsl_image_destroy(img);
        img = NULL;
        if ((st = stsl_image_load(ctx, path, m->image.channels, &img)) != STSL_OK)
            return read_failure(ctx, st, path, err);
    }
    if (measured || (img->height == m->image.height && img->width == m->image.width)) {
        *out = img;
        return 0;
    }
    if (fit == RU_FIT_NONE) {
        fail(err,
             "the input is %dx%d with %d channel(s); the model %s restores %dx%d images with %d "
             "channel(s) (channels are converted, sizes are not): pass --resize to scale it to "
             "%dx%d, or --crop to cut its centre to the model's aspect ratio and scale that, or "
             "--model a prior trained at %dx%d (docs/real-models.md)",
             img->width, img->height, file_ch, m->model_path, m->image.width, m->image.height,
             m->image.channels, m->image.width, m->image.height, img->width, img->height);
        stsl_image_destroy(img);
        return -1;
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

/* ------------------------------------------------------------------------------------------ */
/* Metrics                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static double unit(float v)
{
    double u = 0.5 * ((double)v + 1.0);
    return u < 0.0 ? 0.0 : u > 1.0 ? 1.0 : u;
}

double ru_psnr(const float *a, const float *b, int channels, int height, int width)
{
    size_t n = (size_t)channels * height * width;
    double se = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = unit(a[i]) - unit(b[i]);
        se += d * d;
    }
    double mse = se / (double)n;
    if (mse <= 1e-12) return 120.0;
    return 10.0 * log10(1.0 / mse);
}

double ru_ssim(const float *a, const float *b, int channels, int height, int width)
{
    enum { K = 11 };
    double g[K], gs = 0.0;
    for (int i = 0; i < K; i++) {
        double d = i - K / 2;
        g[i] = exp(-d * d / (2.0 * 1.5 * 1.5));
        gs += g[i];
    }
    for (int i = 0; i < K; i++) g[i] /= gs;
    const double C1 = 0.01 * 0.01, C2 = 0.03 * 0.03;
    int kh = height < K ? height : K, kw = width < K ? width : K;
    /* Images smaller than the window: use a window as large as the image (renormalised). */
    double total = 0.0;
    long count = 0;
    for (int c = 0; c < channels; c++) {
        const float *pa = a + (size_t)c * height * width, *pb = b + (size_t)c * height * width;
        for (int i = 0; i + kh <= height; i++)
            for (int j = 0; j + kw <= width; j++) {
                double ma = 0, mb = 0, saa = 0, sbb = 0, sab = 0, ws = 0;
                for (int u = 0; u < kh; u++)
                    for (int v = 0; v < kw; v++) {
                        double wgt = g[u + (K - kh) / 2] * g[v + (K - kw) / 2];
                        double xa = unit(pa[(size_t)(i + u) * width + j + v]);
                        double xb = unit(pb[(size_t)(i + u) * width + j + v]);
                        ws += wgt;
                        ma += wgt * xa;
                        mb += wgt * xb;
                        saa += wgt * xa * xa;
                        sbb += wgt * xb * xb;
                        sab += wgt * xa * xb;
                    }
                ma /= ws;
                mb /= ws;
                double va = saa / ws - ma * ma, vb = sbb / ws - mb * mb, cab = sab / ws - ma * mb;
                total += ((2 * ma * mb + C1) * (2 * cab + C2)) /
                         ((ma * ma + mb * mb + C1) * (va + vb + C2));
                count++;
            }
    }
    return count ? total / (double)count : 1.0;
}
