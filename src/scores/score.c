/* The score handle's common layer: lifetime, locking (handles may be shared by solvers in
 * several threads), argument checks, NaN/Inf detection and the quantities derived from eps
 * (DESIGN.md §2).  Implementations (torchscript.c, gmm.c, custom.c) only fill the ops. */
#include "scores/score_internal.h"

#include <math.h>
#include <string.h>

stsl_status stsl__score_new(stsl_context *ctx, const stsl__score_ops *ops, stsl_shape shape,
                            stsl_score **out)
{
    *out = NULL;
    char err[STSL_ERRMSG_SIZE];
    stsl_status st = stsl__check_shape(err, shape);
    if (st != STSL_OK) return stsl__ctx_fail(ctx, st, "score: %s", err);
    stsl_score *s = stsl__shared_new(ctx, sizeof *s, offsetof(stsl_score, lock), "score");
    if (!s) return STSL_ERR_NOMEM;
    s->ops = ops;
    s->ctx = ctx;
    s->shape = shape;
    *out = s;
    return STSL_OK;
}

STSL_API void stsl_score_destroy(stsl_score *s)
{
    if (!s) return;
    if (s->ops && s->ops->destroy) s->ops->destroy(s);
    stsl__meta_free(s->meta, s->n_meta);
    stsl_schedule_destroy(s->owned_sched);
    pthread_mutex_destroy(&s->lock);
    stsl__free(s);
}

static stsl_status check_call(const stsl_score *s, const float *x, const float *t, int batch,
                              char *err)
{
    if (!x || !t) return stsl__fail(err, STSL_ERR_INVALID_ARG, "score: x or t is NULL");
    if (batch < 1 || batch > STSL_MAX_BATCH)
        return stsl__fail(err, STSL_ERR_INVALID_ARG, "score: batch %d out of range 1..%d", batch,
                          STSL_MAX_BATCH);
    int T = s->sched ? s->sched->timesteps : 0;
    for (int i = 0; i < batch; i++) {
        if (!isfinite(t[i]) || t[i] < 0 || (T > 0 && t[i] > T - 1))
            return stsl__fail(err, STSL_ERR_INVALID_ARG, "score: timestep %g of sample %d outside [0, %d]",
                              (double)t[i], i, T - 1);
    }
    return STSL_OK;
}

static stsl_status check_output(const float *out, size_t n, int d, const char *what, char *err)
{
    size_t bad = stsl__find_nonfinite(out, n);
    if (bad != (size_t)-1)
        return stsl__fail(err, STSL_ERR_NUMERIC, "score: %s of sample %zu contains NaN/Inf", what,
                          bad / (size_t)d);
    return STSL_OK;
}

stsl_status stsl__score_eps(stsl_score *s, const float *x, const float *t, float *eps, int batch,
                            char *err)
{
    stsl_status st = check_call(s, x, t, batch, err);
    if (st != STSL_OK) return st;
    if (!eps) return stsl__fail(err, STSL_ERR_INVALID_ARG, "score: eps output is NULL");
    pthread_mutex_lock(&s->lock);
    st = s->ops->eps(s, x, t, eps, batch, err);
    pthread_mutex_unlock(&s->lock);
    if (st != STSL_OK) return st;
    size_t d = stsl__shape_size(s->shape);
    return check_output(eps, d * (size_t)batch, (int)d, "eps", err);
}

stsl_status stsl__score_eps_vjp(stsl_score *s, const float *x, const float *t, const float *v,
                                float *eps, float *vjp, int batch, char *err)
{
    stsl_status st = check_call(s, x, t, batch, err);
    if (st != STSL_OK) return st;
    if (!v || !vjp) return stsl__fail(err, STSL_ERR_INVALID_ARG, "score: v or vjp is NULL");
    pthread_mutex_lock(&s->lock);
    st = s->ops->eps_vjp(s, x, t, v, eps, vjp, batch, err);
    pthread_mutex_unlock(&s->lock);
    if (st != STSL_OK) return st;
    size_t d = stsl__shape_size(s->shape);
    if (eps && (st = check_output(eps, d * (size_t)batch, (int)d, "eps", err)) != STSL_OK) return st;
    return check_output(vjp, d * (size_t)batch, (int)d, "vector-Jacobian product", err);
}

struct stsl__score_pass {
    stsl_score *s;
    void *state;
    float *t;
    int batch;
};

int stsl__score_can_keep(const stsl_score *s)
{
    return s && s->ops->eps_keep && s->ops->keep_vjp && s->ops->keep_free;
}

stsl_status stsl__score_eps_keep(stsl_score *s, const float *x, const float *t, float *eps,
                                 int batch, stsl__score_pass **pass, char *err)
{
    *pass = NULL;
    if (!stsl__score_can_keep(s))
        return stsl__fail(err, STSL_ERR_UNSUPPORTED, "score: this prior cannot keep an evaluation");
    stsl_status st = check_call(s, x, t, batch, err);
    if (st != STSL_OK) return st;
    if (!eps) return stsl__fail(err, STSL_ERR_INVALID_ARG, "score: eps output is NULL");
    stsl__score_pass *p = stsl__calloc(1, sizeof *p);
    float *tc = stsl__alloc_floats((size_t)batch);
    if (!p || !tc) {
        stsl__free(p);
        stsl__free(tc);
        return stsl__fail(err, STSL_ERR_NOMEM, "score: out of memory");
    }
    memcpy(tc, t, (size_t)batch * sizeof *tc);
    pthread_mutex_lock(&s->lock);
    st = s->ops->eps_keep(s, x, t, eps, batch, &p->state, err);
    pthread_mutex_unlock(&s->lock);
    p->s = s;
    p->t = tc;
    p->batch = batch;
    size_t d = stsl__shape_size(s->shape);
    if (st == STSL_OK) st = check_output(eps, d * (size_t)batch, (int)d, "eps", err);
    if (st != STSL_OK) {
        stsl__score_pass_free(p);
        return st;
    }
    *pass = p;
    return STSL_OK;
}

stsl_status stsl__score_pass_vjp(stsl__score_pass *p, const float *v, float *vjp, char *err)
{
    if (!p || !v || !vjp) return stsl__fail(err, STSL_ERR_INVALID_ARG, "score: pass, v or vjp is NULL");
    stsl_score *s = p->s;
    pthread_mutex_lock(&s->lock);
    stsl_status st = s->ops->keep_vjp(s, p->state, p->t, v, vjp, p->batch, err);
    pthread_mutex_unlock(&s->lock);
    if (st != STSL_OK) return st;
    size_t d = stsl__shape_size(s->shape);
    return check_output(vjp, d * (size_t)p->batch, (int)d, "vector-Jacobian product", err);
}

void stsl__score_pass_free(stsl__score_pass *p)
{
    if (!p) return;
    if (p->state) {
        /* under the lock: releasing a kept graph touches the backend's state */
        pthread_mutex_lock(&p->s->lock);
        p->s->ops->keep_free(p->state);
        pthread_mutex_unlock(&p->s->lock);
    }
    stsl__free(p->t);
    stsl__free(p);
}

/* The handle's error buffer is shared: written under the lock (stsl__shared_record). */
static stsl_status record(stsl_score *s, stsl_status st, const char *err)
{
    return stsl__shared_record(&s->lock, s->err, st, err);
}

STSL_API stsl_status stsl_score_eps(stsl_score *s, const float *x, const float *t, float *eps,
                                    int batch)
{
    if (!s) return STSL_ERR_INVALID_ARG;
    char err[STSL_ERRMSG_SIZE] = "";
    return record(s, stsl__score_eps(s, x, t, eps, batch, err), err);
}

STSL_API stsl_status stsl_score_eps_vjp(stsl_score *s, const float *x, const float *t,
                                        const float *v, float *eps, float *vjp, int batch)
{
    if (!s) return STSL_ERR_INVALID_ARG;
    char err[STSL_ERRMSG_SIZE] = "";
    return record(s, stsl__score_eps_vjp(s, x, t, v, eps, vjp, batch, err), err);
}

STSL_API stsl_status stsl_score_tweedie(stsl_score *s, const float *x, const int *t,
                                        float *score_out, float *x0hat, int batch)
{
    if (!s) return STSL_ERR_INVALID_ARG;
    char err[STSL_ERRMSG_SIZE] = "";
    if (!t || !x) return record(s, stsl__fail(err, STSL_ERR_INVALID_ARG, "score: x or t is NULL"), err);
    if (batch < 1 || batch > STSL_MAX_BATCH)
        return record(s, stsl__fail(err, STSL_ERR_INVALID_ARG, "score: batch %d out of range", batch), err);
    if (!s->sched)
        return record(s, stsl__fail(err, STSL_ERR_UNSUPPORTED, "score: no schedule"), err);
    size_t d = stsl__shape_size(s->shape), n = d * (size_t)batch;
    float *tf = stsl__alloc_floats((size_t)batch);
    float *eps = stsl__alloc_floats(n);
    stsl_status st = STSL_OK;
    if (!tf || !eps) {
        st = stsl__fail(err, STSL_ERR_NOMEM, "score: out of memory");
        goto done;
    }
    for (int i = 0; i < batch; i++) {
        if (t[i] < 0 || t[i] >= s->sched->timesteps) {
            st = stsl__fail(err, STSL_ERR_INVALID_ARG, "score: timestep %d of sample %d outside [0, %d]",
                            t[i], i, s->sched->timesteps - 1);
            goto done;
        }
        tf[i] = (float)t[i];
    }
    st = stsl__score_eps(s, x, tf, eps, batch, err);
    if (st != STSL_OK) goto done;
    for (int i = 0; i < batch; i++) {
        double ab = s->sched->alpha_bar[t[i]];
        double sq1 = sqrt(1.0 - ab), sqa = sqrt(ab);
        for (size_t j = (size_t)i * d; j < (size_t)(i + 1) * d; j++) {
            /* s = -eps / sqrt(1 - abar);  x0hat = (x - sqrt(1 - abar) eps) / sqrt(abar) */
            if (score_out) score_out[j] = (float)(-eps[j] / sq1);
            if (x0hat) x0hat[j] = (float)((x[j] - sq1 * eps[j]) / sqa);
        }
    }
done:
    stsl__free(tf);
    stsl__free(eps);
    return record(s, st, err);
}

STSL_API stsl_status stsl_score_shape(const stsl_score *s, stsl_shape *shape)
{
    if (!s || !shape) return STSL_ERR_INVALID_ARG;
    *shape = s->shape;
    return STSL_OK;
}

STSL_API const stsl_schedule *stsl_score_schedule(const stsl_score *s) { return s ? s->sched : NULL; }

STSL_API int stsl_score_is_latent(const stsl_score *s) { return s ? s->latent : 0; }

STSL_API const char *stsl_score_meta(const stsl_score *s, const char *key)
{
    if (!s || !key) return NULL;
    for (int i = 0; i < s->n_meta; i++)
        if (!strcmp(s->meta[i].key, key)) return s->meta[i].value;
    return NULL;
}

STSL_API const char *stsl_score_last_error(const stsl_score *s) { return s ? s->err : "score is NULL"; }
