/*
 * custom.c -- user-supplied score (stsl_score_create_custom): eps and its VJP through callbacks.
 *
 * The vtable is copied (struct_size bytes, at least the version-1 size); `user` is borrowed until
 * the score is destroyed, then vtable.destroy(user) is called (if non-NULL).  A callback that
 * returns non-zero is reported as STSL_ERR_MODEL with the code in the message.  eps_vjp may be
 * NULL: then VJPs are refused with STSL_ERR_UNSUPPORTED (solvers that need gradients fail).
 */
#include "scores/score_internal.h"

#include <stddef.h>
#include <string.h>

typedef struct custom_impl {
    stsl_score_vtable vt;
    void *user;
} custom_impl;

static stsl_status custom_eps(stsl_score *s, const float *x, const float *t, float *eps, int batch,
                              char *err)
{
    custom_impl *c = (custom_impl *)s->impl;
    int rc = c->vt.eps(c->user, x, t, eps, batch);
    if (rc != 0) return stsl__fail(err, STSL_ERR_MODEL, "custom score: eps callback returned %d", rc);
    return STSL_OK;
}

static stsl_status custom_eps_vjp(stsl_score *s, const float *x, const float *t, const float *v,
                                  float *eps, float *vjp, int batch, char *err)
{
    custom_impl *c = (custom_impl *)s->impl;
    if (!c->vt.eps_vjp)
        return stsl__fail(err, STSL_ERR_UNSUPPORTED,
                          "custom score: no eps_vjp callback (gradient-based solvers need one)");
    int rc = c->vt.eps_vjp(c->user, x, t, v, eps, vjp, batch);
    if (rc != 0)
        return stsl__fail(err, STSL_ERR_MODEL, "custom score: eps_vjp callback returned %d", rc);
    return STSL_OK;
}

static void custom_destroy(stsl_score *s)
{
    custom_impl *c = (custom_impl *)s->impl;
    if (!c) return;
    if (c->vt.destroy) c->vt.destroy(c->user);
    stsl__free(c);
    s->impl = NULL;
}

/* no kept evaluations: a user callback cannot be differentiated after the fact */
static const stsl__score_ops custom_ops = {"custom", custom_eps, custom_eps_vjp, custom_destroy,
                                           NULL,     NULL,       NULL};

STSL_API stsl_status stsl_score_create_custom(stsl_context *ctx, stsl_shape shape,
                                              const stsl_score_vtable *vtable, void *user,
                                              const stsl_schedule *sched, stsl_score **out)
{
    if (!out) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "custom score: out is NULL");
    *out = NULL;
    if (!vtable || !sched)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "custom score: vtable and sched are required");
    const size_t v1 = offsetof(stsl_score_vtable, destroy) + sizeof(vtable->destroy);
    if (vtable->struct_size < v1)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG,
                              "custom score: vtable struct_size %zu is smaller than %zu "
                              "(set it to sizeof(stsl_score_vtable))",
                              vtable->struct_size, v1);
    if (!vtable->eps)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "custom score: eps callback is NULL");
    char err[STSL_ERRMSG_SIZE];
    stsl_status st = stsl__check_shape(err, shape);
    if (st != STSL_OK) return stsl__ctx_fail(ctx, st, "custom score: %s", err);
    custom_impl *c = (custom_impl *)stsl__calloc(1, sizeof *c);
    if (!c) return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "custom score: out of memory");
    size_t n = vtable->struct_size < sizeof c->vt ? vtable->struct_size : sizeof c->vt;
    memcpy(&c->vt, vtable, n);
    c->vt.struct_size = sizeof c->vt;
    c->user = user;
    stsl_score *s = NULL;
    st = stsl__score_new(ctx, &custom_ops, shape, &s);
    if (st != STSL_OK) {
        stsl__free(c);   /* the user's destroy is not called: the caller still owns `user` */
        return st;
    }
    s->impl = c;
    s->sched = sched;
    *out = s;
    return STSL_OK;
}
