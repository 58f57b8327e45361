/*
 * score_internal.h -- the score-handle interface every prior implements (torchscript, gmm,
 * custom).  Solvers call the public stsl_score_* functions or the stsl__score_* helpers below;
 * they never look inside an implementation.
 */
#ifndef STSL_SCORE_INTERNAL_H
#define STSL_SCORE_INTERNAL_H

#include "../core/internal.h"

typedef struct stsl__score_ops {
    const char *name;   /* "torchscript", "gmm", "custom" */
    /* eps(x, t) for a batch.  err: caller's error buffer (STSL_ERRMSG_SIZE). */
    stsl_status (*eps)(stsl_score *s, const float *x, const float *t, float *eps, int batch,
                       char *err);
    /* vjp = J_eps(x,t)^T v; eps may be NULL. */
    stsl_status (*eps_vjp)(stsl_score *s, const float *x, const float *t, const float *v,
                           float *eps, float *vjp, int batch, char *err);
    void (*destroy)(stsl_score *s);
} stsl__score_ops;

/* Metadata key/value pairs of a model file (docs/models.md). */
typedef struct stsl__meta_entry {
    char *key;
    char *value;
} stsl__meta_entry;

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

#endif
