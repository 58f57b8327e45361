/*
 * torchscript.c -- score handles backed by a TorchScript UNet (docs/models.md), a model of the
 * models room (models/model.h: loading, record, device).  The common layer (score.c) validates
 * arguments, locks and checks outputs; this file checks the UNet's contract, converts v- and
 * x0-prediction to eps and calls the model.
 *
 * Built without libtorch (WITH_TORCH=0) stsl_score_load returns STSL_ERR_UNSUPPORTED (from
 * stsl__model_open).
 */
#include "models/model.h"
#include "scores/score_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct ts_score {
    stsl__model *model;
    stsl__prediction pred;
} ts_score;

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
    st = stsl__model_forward(ts->model, "forward", x, s->shape, t, eps, s->shape, batch, err);
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
    st = stsl__model_vjp(ts->model, "forward", x, s->shape, t, v, s->shape, eps, vjp, batch,
                         err);
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
    stsl__model_pass *pass = NULL;
    st = stsl__model_forward_keep(ts->model, "forward", x, s->shape, t, eps, s->shape, batch,
                                  &pass, err);
    if (st != STSL_OK) return st;
    if (ts->pred != STSL__PRED_EPS) to_eps(s, ts->pred, x, t, eps, batch);
    *state = pass;
    return STSL_OK;
}

static stsl_status ts_keep_vjp(stsl_score *s, void *state, const float *t, const float *v,
                               float *vjp, int batch, char *err)
{
    ts_score *ts = s->impl;
    stsl_status st = stsl__model_pass_vjp(ts->model, state, v, vjp, err);
    if (st != STSL_OK) return st;
    if (ts->pred != STSL__PRED_EPS) to_eps(s, ts->pred, v, t, vjp, batch);   /* as ts_eps_vjp */
    return STSL_OK;
}

static void ts_keep_free(void *state) { stsl__model_pass_free(state); }

static void ts_destroy(stsl_score *s)
{
    ts_score *ts = s->impl;
    if (!ts) return;
    stsl__model_free(ts->model);
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

    stsl__model *model = NULL;
    stsl_status st = stsl__model_open(ctx, path, 1u << STSL__ROLE_UNET, &model);
    if (st != STSL_OK) return st;
    const stsl__model_meta meta = *stsl__model_get_meta(model);

    char err[STSL_ERRMSG_SIZE] = "";
    stsl_schedule *sched = NULL;
    stsl_score *s = NULL;
    ts_score *ts = NULL;
    st = stsl__model_check_method(model, "forward", 2, err);
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
    /* Probe: one forward on a batch of 1 zeros at t = 0 checks that the module accepts
     * sample_shape and returns it (and warms libtorch up). */
    st = stsl__model_probe(model, "forward", meta.sample_shape, meta.sample_shape, 1, err);
    if (st == STSL_ERR_NOMEM) {
        st = stsl__ctx_fail(ctx, st, "stsl_score_load: %s", err);
        goto fail;
    }
    if (st != STSL_OK) {
        st = stsl__ctx_fail(ctx, STSL_ERR_SHAPE,
                            "'%s': the model does not run on sample_shape %d,%d,%d of its metadata: %s",
                            path, (int)meta.sample_shape.channels, (int)meta.sample_shape.height,
                            (int)meta.sample_shape.width, err);
        goto fail;
    }
    ts = stsl__calloc(1, sizeof *ts);
    if (!ts) {
        st = stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "stsl_score_load: out of memory");
        goto fail;
    }
    st = stsl__score_new(ctx, &ts_ops, meta.sample_shape, &s);
    if (st != STSL_OK) goto fail;
    ts->pred = meta.prediction;
    s->owned_sched = sched;
    s->sched = sched;
    sched = NULL;
    s->latent = meta.latent;
    stsl__log(ctx, STSL_LOG_INFO,
              "loaded '%s': unet '%s', prediction %s, %d steps, sample %d,%d,%d, %s%s, device %s (%s)%s",
              path, meta.name ? meta.name : "", pred_name(ts->pred), s->sched->timesteps,
              (int)s->shape.channels, (int)s->shape.height, (int)s->shape.width,
              s->latent ? "latent, pairs with " : "pixel",
              s->latent && meta.pairs_with ? meta.pairs_with : "", stsl__model_device(model),
              stsl__model_precision_name(model), stsl__model_is_frozen(model) ? ", frozen" : "");
    /* The record goes to the handle (stsl_score_meta); meta's strings die with it. */
    stsl__model_take_record(model, &s->meta, &s->n_meta);
    ts->model = model;
    s->impl = ts;
    stsl__clear_error(ctx->err);
    *out = s;
    return STSL_OK;

fail:
    stsl__free(ts);
    stsl_score_destroy(s);
    stsl_schedule_destroy(sched);
    stsl__model_free(model);
    return st;
}
