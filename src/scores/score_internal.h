/*
 * score_internal.h -- the score-handle interface every prior implements (torchscript, gmm,
 * custom).  Solvers call the public stsl_score_* functions or the stsl__score_* helpers below;
 * they never look inside an implementation.
 */
#ifndef STSL_SCORE_INTERNAL_H
#define STSL_SCORE_INTERNAL_H

#include "core/internal.h"
#include "models/meta.h"   /* stsl__meta_entry: a model file's record, kept by its score */

typedef struct stsl__score_ops {
    const char *name;   /* "torchscript", "gmm", "custom" */
    /* eps(x, t) for a batch.  err: caller's error buffer (STSL_ERRMSG_SIZE). */
    stsl_status (*eps)(stsl_score *s, const float *x, const float *t, float *eps, int batch,
                       char *err);
    /* vjp = J_eps(x,t)^T v; eps may be NULL. */
    stsl_status (*eps_vjp)(stsl_score *s, const float *x, const float *t, const float *v,
                           float *eps, float *vjp, int batch, char *err);
    void (*destroy)(stsl_score *s);
    /* Optional (NULL: not supported): eps(x, t) with the evaluation kept in *state for ONE later
     * keep_vjp, so that eps and J_eps^T v of the same point cost one network pass; keep_free
     * releases the state (spent or not). */
    stsl_status (*eps_keep)(stsl_score *s, const float *x, const float *t, float *eps, int batch,
                            void **state, char *err);
    stsl_status (*keep_vjp)(stsl_score *s, void *state, const float *t, const float *v,
                            float *vjp, int batch, char *err);
    void (*keep_free)(void *state);
} stsl__score_ops;

struct stsl_score {
    const stsl__score_ops *ops;
    stsl_context *ctx;
    stsl_shape shape;
    const stsl_schedule *sched;   /* what solvers use */
    stsl_schedule *owned_sched;   /* non-NULL when the score owns it (model files) */
    int latent;
    pthread_mutex_t lock;         /* serialises network calls: handles may be shared */
    stsl__meta_entry *meta;
    int n_meta;
    void *impl;
    char err[STSL_ERRMSG_SIZE];
};

/* Allocate the common part (lock initialised); impl filled by the caller. */
stsl_status stsl__score_new(stsl_context *ctx, const stsl__score_ops *ops, stsl_shape shape,
                            stsl_score **out);

/* Thread-safe calls with the caller's error buffer (used by solvers and by the public API).
 * They validate batch, take the lock, run the implementation and check for NaN/Inf in the
 * network output (STSL_ERR_NUMERIC). */
stsl_status stsl__score_eps(stsl_score *s, const float *x, const float *t, float *eps, int batch,
                            char *err);
stsl_status stsl__score_eps_vjp(stsl_score *s, const float *x, const float *t, const float *v,
                                float *eps, float *vjp, int batch, char *err);

/* An evaluation kept for its VJP (stsl__score_eps_keep); owns a copy of t. */
typedef struct stsl__score_pass stsl__score_pass;

/* 1 when the score can keep an evaluation (eps now, its VJP later, one pass in all). */
int stsl__score_can_keep(const stsl_score *s);
/* eps(x, t) as stsl__score_eps, the evaluation kept in *pass (NULL on failure) for one
 * stsl__score_pass_vjp.  STSL_ERR_UNSUPPORTED when !stsl__score_can_keep(s). */
stsl_status stsl__score_eps_keep(stsl_score *s, const float *x, const float *t, float *eps,
                                 int batch, stsl__score_pass **pass, char *err);
/* vjp = J_eps(x, t)^T v at the kept point; spends the pass (free it still). */
stsl_status stsl__score_pass_vjp(stsl__score_pass *pass, const float *v, float *vjp, char *err);
void stsl__score_pass_free(stsl__score_pass *pass);

#endif
