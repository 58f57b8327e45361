/*
 * torchscript.c -- score handles backed by a TorchScript UNet (docs/models.md), through the C++
 * shim in shim/.  The common layer (score.c) validates arguments, locks and checks outputs;
 * this file loads the file, converts v- and x0-prediction to eps and calls the shim.
 *
 * Built without libtorch (WITH_TORCH=0) the entry points return STSL_ERR_UNSUPPORTED.
 */
#include "torchscript.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define NO_TORCH_MSG "built without TorchScript support (rebuild with libtorch, WITH_TORCH=1)"

#ifndef STSL_WITH_TORCH

/* stsl_has_torch is in core/status.c; stsl_cuda_available needs the shim, so it lives here. */
STSL_API int stsl_cuda_available(void) { return 0; }

STSL_API stsl_status stsl_score_load(stsl_context *ctx, const char *path, stsl_score **out)
{
    (void)path;
    if (out) *out = NULL;
    if (!ctx || !out) return STSL_ERR_INVALID_ARG;
    return stsl__ctx_fail(ctx, STSL_ERR_UNSUPPORTED, "stsl_score_load: " NO_TORCH_MSG);
}

#else

STSL_API int stsl_cuda_available(void) { return stsl_shim_cuda_available(); }

stsl_status stsl__ts_open(stsl_context *ctx, const char *path, unsigned allowed_roles,
                          stsl_shim_module **mod, stsl__meta_entry **entries, int *count,
                          stsl__model_meta *meta)
{
    *mod = NULL;
    *entries = NULL;
    *count = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        return stsl__ctx_fail(ctx, STSL_ERR_IO, "cannot open model file '%s': %s", path,
                              strerror(e));
    }
    fclose(f);

    char err[STSL_ERRMSG_SIZE] = "";
    stsl_shim_module *m = NULL;
    stsl_status st = stsl_shim_load(path, ctx->device, ctx->precision, &m, err, sizeof err);
    if (st != STSL_OK) return stsl__ctx_fail(ctx, st, "%s", err);

    size_t len = 0;
    const char *text = stsl_shim_meta(m, &len);
    stsl__meta_entry *e = NULL;
    int n = 0;
    st = stsl__meta_parse(text, len, &e, &n, err);
    if (st == STSL_OK) st = stsl__meta_validate(e, n, allowed_roles, meta, err);
    if (st != STSL_OK) {
        stsl__meta_free(e, n);
        stsl_shim_free(m);
        return stsl__ctx_fail(ctx, st, "'%s': %s", path, err);
    }
    *mod = m;
    *entries = e;
    *count = n;
    return STSL_OK;
}

typedef struct ts_score {
    stsl_shim_module *mod;
    stsl__prediction pred;
} ts_score;

static void ts_dims(const stsl_score *s, int batch, int64_t d[4])
{
    d[0] = batch;
    d[1] = s->shape.channels;
    d[2] = s->shape.height;
    d[3] = s->shape.width;
}

/* In place: model output -> eps, sample by sample (abar at the fractional t).
 *   v:  eps = sqrt(abar) v + sqrt(1 - abar) x
 *   x0: eps = (x - sqrt(abar) x0) / sqrt(1 - abar)
 * eps is linear in (x, f), so the same map converts a VJP: with y = J_f^T w and x = w it gives
 * J_eps^T w (v: sqrt(abar) g + sqrt(1 - abar) w; x0: (w - sqrt(abar) g) / sqrt(1 - abar)). */
static void to_eps(const stsl_score *s, stsl__prediction pred, const float *x, const float *t,
                   float *y, int batch)
{
    size_t d = stsl__shape_size(s->shape);
    for (int i = 0; i < batch; i++) {
        double ab = stsl__alpha_bar_at(s->sched, t[i]);
        double a = sqrt(ab), b = sqrt(1.0 - ab);
        const float *xi = x + (size_t)i * d;
        float *yi = y + (size_t)i * d;
        if (pred == STSL__PRED_V)
            for (size_t j = 0; j < d; j++) yi[j] = (float)(a * yi[j] + b * xi[j]);
        else
            for (size_t j = 0; j < d; j++) yi[j] = (float)((xi[j] - a * yi[j]) / b);
    }
}

static stsl_status need_sigma(const stsl_score *s, stsl__prediction pred, const float *t,
                              int batch, char *err)
{
    if (pred != STSL__PRED_X0) return STSL_OK;
    for (int i = 0; i < batch; i++)
        if (!(1.0 - stsl__alpha_bar_at(s->sched, t[i]) > 0))
            return stsl__fail(err, STSL_ERR_INVALID_ARG,
                              "score: x0-prediction cannot give eps at timestep %g (abar = 1)",
                              (double)t[i]);
    return STSL_OK;
}

static stsl_status ts_eps(stsl_score *s, const float *x, const float *t, float *eps, int batch,
                          char *err)
{
    ts_score *ts = s->impl;
    stsl_status st = need_sigma(s, ts->pred, t, batch, err);
    if (st != STSL_OK) return st;
    int64_t d[4];
    ts_dims(s, batch, d);
    st = stsl_shim_forward(ts->mod, "forward", x, d, t, eps, d, stsl__ctx_threads(s->ctx), err,
                           STSL_ERRMSG_SIZE);
    if (st != STSL_OK) return st;
    if (ts->pred != STSL__PRED_EPS) to_eps(s, ts->pred, x, t, eps, batch);
    return STSL_OK;
}

static stsl_status ts_eps_vjp(stsl_score *s, const float *x, const float *t, const float *v,
                              float *eps, float *vjp, int batch, char *err)
{
    ts_score *ts = s->impl;
    stsl_status st = need_sigma(s, ts->pred, t, batch, err);
    if (st != STSL_OK) return st;
    int64_t d[4];
    ts_dims(s, batch, d);
    st = stsl_shim_vjp(ts->mod, "forward", x, d, t, v, d, eps, vjp, stsl__ctx_threads(s->ctx),
                       err, STSL_ERRMSG_SIZE);
    if (st != STSL_OK) return st;
    if (ts->pred != STSL__PRED_EPS) {
        if (eps) to_eps(s, ts->pred, x, t, eps, batch);
        to_eps(s, ts->pred, v, t, vjp, batch);   /* the chain rule: same linear map */
    }
    return STSL_OK;
}

/* One network pass for eps and its VJP: the shim keeps the autograd graph between the two. */
static stsl_status ts_eps_keep(stsl_score *s, const float *x, const float *t, float *eps,
                               int batch, void **state, char *err)
{
    ts_score *ts = s->impl;
    stsl_status st = need_sigma(s, ts->pred, t, batch, err);
    if (st != STSL_OK) return st;
    int64_t d[4];
    ts_dims(s, batch, d);
    stsl_shim_graph *g = NULL;
    st = stsl_shim_forward_graph(ts->mod, "forward", x, d, t, eps, d, stsl__ctx_threads(s->ctx),
                                 &g, err, STSL_ERRMSG_SIZE);
    if (st != STSL_OK) return st;
    if (ts->pred != STSL__PRED_EPS) to_eps(s, ts->pred, x, t, eps, batch);
    *state = g;
    return STSL_OK;
}

static stsl_status ts_keep_vjp(stsl_score *s, void *state, const float *t, const float *v,
                               float *vjp, int batch, char *err)
{
    ts_score *ts = s->impl;
    stsl_status st = stsl_shim_graph_vjp((stsl_shim_graph *)state, v, vjp,
                                         stsl__ctx_threads(s->ctx), err, STSL_ERRMSG_SIZE);
    if (st != STSL_OK) return st;
    if (ts->pred != STSL__PRED_EPS) to_eps(s, ts->pred, v, t, vjp, batch);   /* as ts_eps_vjp */
    return STSL_OK;
}

static void ts_keep_free(void *state) { stsl_shim_graph_free((stsl_shim_graph *)state); }

static void ts_destroy(stsl_score *s)
{
    ts_score *ts = s->impl;
    if (!ts) return;
    stsl_shim_free(ts->mod);
    stsl__free(ts);
    s->impl = NULL;
}

static const stsl__score_ops ts_ops = {"torchscript", ts_eps,      ts_eps_vjp, ts_destroy,
                                        ts_eps_keep,   ts_keep_vjp, ts_keep_free};

static const char *pred_name(stsl__prediction p)
{
    return p == STSL__PRED_V ? "v" : p == STSL__PRED_X0 ? "x0" : "eps";
}

STSL_API stsl_status stsl_score_load(stsl_context *ctx, const char *path, stsl_score **out)
{
    if (out) *out = NULL;
    if (!ctx || !out) return STSL_ERR_INVALID_ARG;
    if (!path) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "stsl_score_load: path is NULL");

    stsl_shim_module *mod = NULL;
    stsl__meta_entry *entries = NULL;
    int n_entries = 0;
    stsl__model_meta meta;
    stsl_status st = stsl__ts_open(ctx, path, 1u << STSL__ROLE_UNET, &mod, &entries, &n_entries,
                                   &meta);
    if (st != STSL_OK) return st;

    char err[STSL_ERRMSG_SIZE] = "";
    stsl_schedule *sched = NULL;
    stsl_score *s = NULL;
    ts_score *ts = NULL;
    float *probe = NULL;
    st = stsl_shim_check_method(mod, "forward", 2, err, sizeof err);
    if (st != STSL_OK) {
        st = stsl__ctx_fail(ctx, st, "'%s': %s", path, err);
        goto fail;
    }
    st = stsl_schedule_create(ctx, meta.schedule, meta.beta_start, meta.beta_end, meta.timesteps,
                              &sched);
    if (st != STSL_OK) {
        /* the context already holds the schedule's message; prefix the file */
        snprintf(err, sizeof err, "%s", stsl_context_last_error(ctx));
        st = stsl__ctx_fail(ctx, st, "'%s': schedule from stsl_meta.txt: %s", path, err);
        goto fail;
    }
    ts = stsl__calloc(1, sizeof *ts);
    if (!ts) {
        st = stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "stsl_score_load: out of memory");
        goto fail;
    }
    st = stsl__score_new(ctx, &ts_ops, meta.sample_shape, &s);
    if (st != STSL_OK) goto fail;
    ts->mod = mod;
    ts->pred = meta.prediction;
    mod = NULL;
    s->impl = ts;
    ts = NULL;
    s->owned_sched = sched;
    s->sched = sched;
    sched = NULL;
    s->latent = meta.latent;
    const char *name = meta.name ? meta.name : "";
    const char *pairs = meta.pairs_with ? meta.pairs_with : "";

    /* Probe: one forward on a batch of 1 zeros at t = 0 checks that the module accepts
     * sample_shape and returns it (and warms libtorch up). */
    size_t d = stsl__shape_size(s->shape);
    probe = stsl__alloc_floats(2 * d + 1);
    if (!probe) {
        st = stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "stsl_score_load: out of memory");
        goto fail;
    }
    memset(probe, 0, (2 * d + 1) * sizeof *probe);
    int64_t dims[4];
    ts_dims(s, 1, dims);
    st = stsl_shim_forward(((ts_score *)s->impl)->mod, "forward", probe, dims, probe + 2 * d,
                           probe + d, dims, stsl__ctx_threads(ctx), err, sizeof err);
    if (st != STSL_OK) {
        st = stsl__ctx_fail(ctx, STSL_ERR_SHAPE,
                            "'%s': the model does not run on sample_shape %d,%d,%d of its metadata: %s",
                            path, (int)s->shape.channels, (int)s->shape.height,
                            (int)s->shape.width, err);
        goto fail;
    }
    stsl__free(probe);
    probe = NULL;

    /* The record goes to the handle (stsl_score_meta); meta's string pointers die with it. */
    s->meta = entries;
    s->n_meta = n_entries;
    entries = NULL;
    stsl__log(ctx, STSL_LOG_INFO,
              "loaded '%s': unet '%s', prediction %s, %d steps, sample %d,%d,%d, %s%s, device %s (%s)%s",
              path, name, pred_name(((ts_score *)s->impl)->pred), s->sched->timesteps,
              (int)s->shape.channels, (int)s->shape.height, (int)s->shape.width,
              s->latent ? "latent, pairs with " : "pixel", s->latent ? pairs : "",
              stsl_shim_device(((ts_score *)s->impl)->mod),
              stsl_shim_precision_name(stsl_shim_precision(((ts_score *)s->impl)->mod)),
              stsl_shim_is_frozen(((ts_score *)s->impl)->mod) ? ", frozen" : "");
    stsl__clear_error(ctx->err);
    *out = s;
    return STSL_OK;

fail:
    stsl__free(probe);
    stsl__free(ts);
    stsl_score_destroy(s);
    stsl_schedule_destroy(sched);
    stsl__meta_free(entries, n_entries);
    stsl_shim_free(mod);
    return st;
}

#endif /* STSL_WITH_TORCH */
