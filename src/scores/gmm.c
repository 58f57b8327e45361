/*
 * gmm.c -- exact Gaussian-mixture prior (stsl_score_create_gmm).
 *
 * p_0 = sum_k w_k N(mu_k, diag(var_k)).  Under the VP forward process x_t = sqrt(abar) x_0 +
 * sqrt(1 - abar) e, the marginal is again a mixture:
 *     p_t = sum_k w_k N(m_k, diag(v_k)),   m_k = sqrt(abar) mu_k,   v_k = abar var_k + (1 - abar).
 * With responsibilities r_k(x) = w_k N(x; m_k, v_k) / p_t(x) (log-sum-exp) and
 * g_k = -(x - m_k) / v_k (the score of component k):
 *     score  s(x)  = sum_k r_k g_k = g
 *     Hessian H    = sum_k r_k (-P_k) + sum_k r_k g_k g_k^T - g g^T,   P_k = diag(1 / v_k)
 *     eps(x, t)    = -sqrt(1 - abar) s(x)
 *     J_eps^T v    = -sqrt(1 - abar) H v     (H is symmetric)
 * Everything is computed in double; t may be fractional (stsl__alpha_bar_at).
 */
#include "scores/score_internal.h"

#include <math.h>
#include <string.h>

typedef struct gmm_impl {
    int k;              /* components */
    size_t d;           /* dimension */
    int diagonal;       /* variances k*d (1) or k (0) */
    double *logw;       /* k: log of normalised weights */
    double *mu;         /* k*d */
    double *var;        /* k or k*d */
} gmm_impl;

typedef struct gmm_job {
    const gmm_impl *g;
    const stsl_schedule *sched;
    const float *x, *t, *v;
    float *eps, *vjp;
    double *scratch;    /* per sample: k (log r) + k (g_k . v) + d (g) + d (Hv) */
    size_t per;
} gmm_job;

static void gmm_range(void *arg, size_t b0, size_t b1)
{
    gmm_job *j = (gmm_job *)arg;
    const gmm_impl *g = j->g;
    const size_t d = g->d;
    const int K = g->k;
    for (size_t b = b0; b < b1; b++) {
        double *lr = j->scratch + b * j->per;  /* log responsibilities, then r */
        double *gv = lr + K;                   /* g_k . v */
        double *sc = gv + K;                   /* score g */
        double *hv = sc + d;                   /* H v */
        const float *x = j->x + b * d;
        double ab = stsl__alpha_bar_at(j->sched, (double)j->t[b]);
        if (!(ab > 0.0)) ab = 1e-300;
        if (ab > 1.0) ab = 1.0;
        const double sab = sqrt(ab), s1 = sqrt(1.0 - ab);
        /* log-densities (constant 2*pi terms cancel in r) */
        double mx = -INFINITY;
        for (int k = 0; k < K; k++) {
            const double *mu = g->mu + (size_t)k * d;
            double q = 0.0, logdet = 0.0;
            if (g->diagonal) {
                const double *vr = g->var + (size_t)k * d;
                for (size_t i = 0; i < d; i++) {
                    double vk = ab * vr[i] + (1.0 - ab);
                    double r = (double)x[i] - sab * mu[i];
                    q += r * r / vk;
                    logdet += log(vk);
                }
            } else {
                double vk = ab * g->var[k] + (1.0 - ab);
                for (size_t i = 0; i < d; i++) {
                    double r = (double)x[i] - sab * mu[i];
                    q += r * r;
                }
                q /= vk;
                logdet = (double)d * log(vk);
            }
            lr[k] = g->logw[k] - 0.5 * (q + logdet);
            if (lr[k] > mx) mx = lr[k];
        }
        double z = 0.0;
        for (int k = 0; k < K; k++) {
            lr[k] = exp(lr[k] - mx);
            z += lr[k];
        }
        for (int k = 0; k < K; k++) lr[k] /= z;
        /* score g = sum r_k g_k; g_k . v; sum r_k (-P_k v) */
        memset(sc, 0, d * sizeof(double));
        memset(hv, 0, d * sizeof(double));
        const float *v = j->v ? j->v + b * d : NULL;
        for (int k = 0; k < K; k++) {
            const double *mu = g->mu + (size_t)k * d;
            const double r = lr[k];
            double dot = 0.0;
            for (size_t i = 0; i < d; i++) {
                double vk = g->diagonal ? ab * g->var[(size_t)k * d + i] + (1.0 - ab)
                                        : ab * g->var[k] + (1.0 - ab);
                double gk = -((double)x[i] - sab * mu[i]) / vk;
                sc[i] += r * gk;
                if (v) {
                    dot += gk * (double)v[i];
                    hv[i] -= r * (double)v[i] / vk;
                }
            }
            gv[k] = dot;
        }
        if (j->eps) {
            float *e = j->eps + b * d;
            for (size_t i = 0; i < d; i++) e[i] = (float)(-s1 * sc[i]);
        }
        if (v) {
            /* + sum_k r_k g_k (g_k . v) - g (g . v) */
            double gdotv = 0.0;
            for (size_t i = 0; i < d; i++) gdotv += sc[i] * (double)v[i];
            for (int k = 0; k < K; k++) {
                const double c = lr[k] * gv[k];
                if (c == 0.0) continue;
                const double *mu = g->mu + (size_t)k * d;
                for (size_t i = 0; i < d; i++) {
                    double vk = g->diagonal ? ab * g->var[(size_t)k * d + i] + (1.0 - ab)
                                            : ab * g->var[k] + (1.0 - ab);
                    double gk = -((double)x[i] - sab * mu[i]) / vk;
                    hv[i] += c * gk;
                }
            }
            float *o = j->vjp + b * d;
            for (size_t i = 0; i < d; i++) o[i] = (float)(-s1 * (hv[i] - sc[i] * gdotv));
        }
    }
}

static stsl_status gmm_eval(stsl_score *s, const float *x, const float *t, const float *v,
                            float *eps, float *vjp, int batch, char *err)
{
    const gmm_impl *g = (const gmm_impl *)s->impl;
    size_t per = 2 * (size_t)g->k + 2 * g->d;
    size_t total;
    if (!stsl__mul_size(per, (size_t)batch, &total))
        return stsl__fail(err, STSL_ERR_LIMIT, "gmm: batch too large");
    double *scratch = stsl__alloc_doubles(total);
    if (!scratch) return stsl__fail(err, STSL_ERR_NOMEM, "gmm: out of memory (%zu doubles)", total);
    gmm_job j = {g, s->sched, x, t, v, eps, vjp, scratch, per};
    stsl_status st = stsl__parallel_for(stsl__ctx_threads(s->ctx), (size_t)batch, 1, gmm_range, &j);
    stsl__free(scratch);
    if (st != STSL_OK) return stsl__fail(err, st, "gmm: parallel evaluation failed");
    return STSL_OK;
}

static stsl_status gmm_eps(stsl_score *s, const float *x, const float *t, float *eps, int batch,
                           char *err)
{
    return gmm_eval(s, x, t, NULL, eps, NULL, batch, err);
}

static stsl_status gmm_eps_vjp(stsl_score *s, const float *x, const float *t, const float *v,
                               float *eps, float *vjp, int batch, char *err)
{
    return gmm_eval(s, x, t, v, eps, vjp, batch, err);
}

/* The mixture is analytic: a kept evaluation is a copy of x, its VJP computed when asked. */
static stsl_status gmm_eps_keep(stsl_score *s, const float *x, const float *t, float *eps,
                                int batch, void **state, char *err)
{
    size_t n = stsl__shape_size(s->shape) * (size_t)batch;
    float *xc = stsl__alloc_floats(n);
    if (!xc) return stsl__fail(err, STSL_ERR_NOMEM, "gmm: out of memory");
    memcpy(xc, x, n * sizeof *xc);
    stsl_status st = gmm_eval(s, x, t, NULL, eps, NULL, batch, err);
    if (st != STSL_OK) {
        stsl__free(xc);
        return st;
    }
    *state = xc;
    return STSL_OK;
}

static stsl_status gmm_keep_vjp(stsl_score *s, void *state, const float *t, const float *v,
                                float *vjp, int batch, char *err)
{
    return gmm_eval(s, (const float *)state, t, v, NULL, vjp, batch, err);
}

static void gmm_keep_free(void *state) { stsl__free(state); }

static void gmm_destroy(stsl_score *s)
{
    gmm_impl *g = (gmm_impl *)s->impl;
    if (!g) return;
    stsl__free(g->logw);
    stsl__free(g->mu);
    stsl__free(g->var);
    stsl__free(g);
    s->impl = NULL;
}

static const stsl__score_ops gmm_ops = {"gmm",        gmm_eps,      gmm_eps_vjp, gmm_destroy,
                                         gmm_eps_keep, gmm_keep_vjp, gmm_keep_free};

STSL_API stsl_status stsl_score_create_gmm(stsl_context *ctx, stsl_shape shape, int components,
                                           const double *weights, const double *means,
                                           const double *variances, int diagonal,
                                           const stsl_schedule *sched, stsl_score **out)
{
    if (!out) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "gmm: out is NULL");
    *out = NULL;
    if (!weights || !means || !variances || !sched)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG,
                              "gmm: weights, means, variances and sched are required");
    if (components < 1 || components > 1000000)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "gmm: components %d out of range",
                              components);
    if (diagonal != 0 && diagonal != 1)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "gmm: diagonal must be 0 or 1");
    char err[STSL_ERRMSG_SIZE];
    stsl_status st = stsl__check_shape(err, shape);
    if (st != STSL_OK) return stsl__ctx_fail(ctx, st, "gmm: %s", err);
    const size_t d = stsl__shape_size(shape), K = (size_t)components;
    size_t kd;
    if (!stsl__mul_size(K, d, &kd)) return stsl__ctx_fail(ctx, STSL_ERR_LIMIT, "gmm: too large");
    double wsum = 0.0;
    for (size_t k = 0; k < K; k++) {
        if (!(weights[k] > 0.0) || !isfinite(weights[k]))
            return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG,
                                  "gmm: weight %zu is %g (must be finite and > 0)", k, weights[k]);
        wsum += weights[k];
    }
    size_t nv = diagonal ? kd : K;
    for (size_t i = 0; i < nv; i++)
        if (!(variances[i] > 0.0) || !isfinite(variances[i]))
            return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG,
                                  "gmm: variance %zu is %g (must be finite and > 0)", i,
                                  variances[i]);
    for (size_t i = 0; i < kd; i++)
        if (!isfinite(means[i]))
            return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "gmm: mean entry %zu is not finite",
                                  i);

    gmm_impl *g = (gmm_impl *)stsl__calloc(1, sizeof *g);
    if (!g) return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "gmm: out of memory");
    g->k = components;
    g->d = d;
    g->diagonal = diagonal;
    g->logw = stsl__alloc_doubles(K);
    g->mu = stsl__alloc_doubles(kd);
    g->var = stsl__alloc_doubles(nv);
    if (!g->logw || !g->mu || !g->var) {
        stsl__free(g->logw);
        stsl__free(g->mu);
        stsl__free(g->var);
        stsl__free(g);
        return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "gmm: out of memory");
    }
    for (size_t k = 0; k < K; k++) g->logw[k] = log(weights[k] / wsum);
    memcpy(g->mu, means, kd * sizeof(double));
    memcpy(g->var, variances, nv * sizeof(double));

    stsl_score *s = NULL;
    st = stsl__score_new(ctx, &gmm_ops, shape, &s);
    if (st != STSL_OK) {
        stsl__free(g->logw);
        stsl__free(g->mu);
        stsl__free(g->var);
        stsl__free(g);
        return st;
    }
    s->impl = g;
    s->sched = sched;
    s->latent = 0;
    *out = s;
    return STSL_OK;
}
