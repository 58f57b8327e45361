/* The autoencoder handle's common layer: lifetime, locking, argument checks and the latent
 * scale (docs/models.md §2): E(x) = scale * encode(x), D(z) = decode(z / scale),
 * J_D(z)^T u = J_decode(z / scale)^T u / scale. */
#include "autoencoders/autoencoder_internal.h"

#include <string.h>

stsl_status stsl__ae_new(stsl_context *ctx, const stsl__ae_ops *ops, stsl_shape image,
                         stsl_shape latent, double latent_scale, stsl_autoencoder **out)
{
    *out = NULL;
    char err[STSL_ERRMSG_SIZE];
    stsl_status st = stsl__check_shape(err, image);
    if (st == STSL_OK) st = stsl__check_shape(err, latent);
    if (st != STSL_OK) return stsl__ctx_fail(ctx, st, "autoencoder: %s", err);
    if (!(latent_scale > 0) || latent_scale > 1e6)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "autoencoder: latent scale %g must be in (0, 1e6]",
                              latent_scale);
    stsl_autoencoder *ae = stsl__shared_new(ctx, sizeof *ae, offsetof(stsl_autoencoder, lock), "autoencoder");
    if (!ae) return STSL_ERR_NOMEM;
    ae->ops = ops;
    ae->ctx = ctx;
    ae->image = image;
    ae->latent = latent;
    ae->latent_scale = latent_scale;
    *out = ae;
    return STSL_OK;
}

STSL_API void stsl_autoencoder_destroy(stsl_autoencoder *ae)
{
    if (!ae) return;
    if (ae->ops && ae->ops->destroy) ae->ops->destroy(ae);
    pthread_mutex_destroy(&ae->lock);
    stsl__free(ae);
}

static stsl_status check_batch(int batch, char *err)
{
    if (batch < 1 || batch > STSL_MAX_BATCH)
        return stsl__fail(err, STSL_ERR_INVALID_ARG, "autoencoder: batch %d out of range 1..%d", batch,
                          STSL_MAX_BATCH);
    return STSL_OK;
}

static stsl_status check_finite(const float *v, size_t n, size_t per, const char *what, char *err)
{
    size_t bad = stsl__find_nonfinite(v, n);
    if (bad != (size_t)-1)
        return stsl__fail(err, STSL_ERR_NUMERIC, "autoencoder: %s of sample %zu contains NaN/Inf", what,
                          bad / per);
    return STSL_OK;
}

enum { SCALE_MUL, SCALE_DIV };

/* A wrapped model's result in the library's units: times (encoder side) or divided by (decoder
 * side) the latent scale, then checked for NaN/Inf sample by sample (samples of `shape`). */
static stsl_status rescale_checked(const stsl_autoencoder *ae, float *v, stsl_shape shape, int batch, int how,
                                   const char *what, char *err)
{
    size_t per = stsl__shape_size(shape), n = per * (size_t)batch;
    if (ae->latent_scale != 1.0) {
        if (how == SCALE_MUL)
            for (size_t i = 0; i < n; i++) v[i] = (float)(v[i] * ae->latent_scale);
        else
            for (size_t i = 0; i < n; i++) v[i] = (float)(v[i] / ae->latent_scale);
    }
    return check_finite(v, n, per, what, err);
}

stsl_status stsl__ae_encode(stsl_autoencoder *ae, const float *x, float *z, int batch, char *err)
{
    stsl_status st = check_batch(batch, err);
    if (st != STSL_OK) return st;
    if (!x || !z) return stsl__fail(err, STSL_ERR_INVALID_ARG, "autoencoder: x or z is NULL");
    pthread_mutex_lock(&ae->lock);
    st = ae->ops->encode(ae, x, z, batch, err);
    pthread_mutex_unlock(&ae->lock);
    if (st != STSL_OK) return st;
    return rescale_checked(ae, z, ae->latent, batch, SCALE_MUL, "encoding", err);
}

/* z / scale into a fresh buffer, or z itself when the scale is 1. */
static stsl_status unscale(const stsl_autoencoder *ae, const float *z, int batch, const float **zu,
                           float **owned, char *err)
{
    *owned = NULL;
    *zu = z;
    if (ae->latent_scale == 1.0) return STSL_OK;
    size_t n = stsl__shape_size(ae->latent) * (size_t)batch;
    float *buf = stsl__alloc_floats(n);
    if (!buf) return stsl__fail(err, STSL_ERR_NOMEM, "autoencoder: out of memory");
    for (size_t i = 0; i < n; i++) buf[i] = (float)(z[i] / ae->latent_scale);
    *owned = buf;
    *zu = buf;
    return STSL_OK;
}

stsl_status stsl__ae_decode(stsl_autoencoder *ae, const float *z, float *x, int batch, char *err)
{
    stsl_status st = check_batch(batch, err);
    if (st != STSL_OK) return st;
    if (!x || !z) return stsl__fail(err, STSL_ERR_INVALID_ARG, "autoencoder: x or z is NULL");
    const float *zu;
    float *owned;
    if ((st = unscale(ae, z, batch, &zu, &owned, err)) != STSL_OK) return st;
    pthread_mutex_lock(&ae->lock);
    st = ae->ops->decode(ae, zu, x, batch, err);
    pthread_mutex_unlock(&ae->lock);
    stsl__free(owned);
    if (st != STSL_OK) return st;
    size_t per = stsl__shape_size(ae->image);
    return check_finite(x, per * (size_t)batch, per, "decoding", err);
}

int stsl__ae_can_encode_vjp(const stsl_autoencoder *ae)
{
    return ae && ae->ops && ae->ops->encode_vjp != NULL;
}

stsl_status stsl__ae_encode_vjp(stsl_autoencoder *ae, const float *x, const float *v, float *out,
                                int batch, char *err)
{
    stsl_status st = check_batch(batch, err);
    if (st != STSL_OK) return st;
    if (!x || !v || !out) return stsl__fail(err, STSL_ERR_INVALID_ARG, "autoencoder: x, v or out is NULL");
    if (!stsl__ae_can_encode_vjp(ae))
        return stsl__fail(err, STSL_ERR_UNSUPPORTED, "autoencoder: no encoder vector-Jacobian product");
    pthread_mutex_lock(&ae->lock);
    st = ae->ops->encode_vjp(ae, x, v, out, batch, err);
    pthread_mutex_unlock(&ae->lock);
    if (st != STSL_OK) return st;
    return rescale_checked(ae, out, ae->image, batch, SCALE_MUL, "encoder vector-Jacobian product", err);
}

stsl_status stsl__ae_decode_vjp(stsl_autoencoder *ae, const float *z, const float *u, float *x,
                                float *out, int batch, char *err)
{
    stsl_status st = check_batch(batch, err);
    if (st != STSL_OK) return st;
    if (!z || !u || !out) return stsl__fail(err, STSL_ERR_INVALID_ARG, "autoencoder: z, u or out is NULL");
    const float *zu;
    float *owned;
    if ((st = unscale(ae, z, batch, &zu, &owned, err)) != STSL_OK) return st;
    pthread_mutex_lock(&ae->lock);
    st = ae->ops->decode_vjp(ae, zu, u, x, out, batch, err);
    pthread_mutex_unlock(&ae->lock);
    stsl__free(owned);
    if (st != STSL_OK) return st;
    return rescale_checked(ae, out, ae->latent, batch, SCALE_DIV, "decoder vector-Jacobian product", err);
}

struct stsl__ae_pass {
    stsl_autoencoder *ae;
    void *state;
    int batch;
};

int stsl__ae_can_keep(const stsl_autoencoder *ae)
{
    return ae && ae->ops->decode_keep && ae->ops->keep_vjp && ae->ops->keep_free;
}

stsl_status stsl__ae_decode_keep(stsl_autoencoder *ae, const float *z, float *x, int batch,
                                 stsl__ae_pass **pass, char *err)
{
    *pass = NULL;
    if (!stsl__ae_can_keep(ae))
        return stsl__fail(err, STSL_ERR_UNSUPPORTED, "autoencoder: cannot keep an evaluation");
    stsl_status st = check_batch(batch, err);
    if (st != STSL_OK) return st;
    if (!x || !z) return stsl__fail(err, STSL_ERR_INVALID_ARG, "autoencoder: x or z is NULL");
    stsl__ae_pass *p = stsl__calloc(1, sizeof *p);
    if (!p) return stsl__fail(err, STSL_ERR_NOMEM, "autoencoder: out of memory");
    p->ae = ae;
    p->batch = batch;
    const float *zu;
    float *owned;
    if ((st = unscale(ae, z, batch, &zu, &owned, err)) == STSL_OK) {
        pthread_mutex_lock(&ae->lock);
        st = ae->ops->decode_keep(ae, zu, x, batch, &p->state, err);
        pthread_mutex_unlock(&ae->lock);
        stsl__free(owned);   /* the kept graph holds its own copy */
    }
    size_t per = stsl__shape_size(ae->image);
    if (st == STSL_OK) st = check_finite(x, per * (size_t)batch, per, "decoding", err);
    if (st != STSL_OK) {
        stsl__ae_pass_free(p);
        return st;
    }
    *pass = p;
    return STSL_OK;
}

stsl_status stsl__ae_pass_vjp(stsl__ae_pass *p, const float *u, float *out, char *err)
{
    if (!p || !u || !out) return stsl__fail(err, STSL_ERR_INVALID_ARG, "autoencoder: pass, u or out is NULL");
    stsl_autoencoder *ae = p->ae;
    pthread_mutex_lock(&ae->lock);
    stsl_status st = ae->ops->keep_vjp(ae, p->state, u, out, err);
    pthread_mutex_unlock(&ae->lock);
    if (st != STSL_OK) return st;
    return rescale_checked(ae, out, ae->latent, p->batch, SCALE_DIV, "decoder vector-Jacobian product", err);
}

void stsl__ae_pass_free(stsl__ae_pass *p)
{
    if (!p) return;
    if (p->state) {
        pthread_mutex_lock(&p->ae->lock);
        p->ae->ops->keep_free(p->state);
        pthread_mutex_unlock(&p->ae->lock);
    }
    stsl__free(p);
}

static stsl_status record(stsl_autoencoder *ae, stsl_status st, const char *err)
{
    return stsl__shared_record(&ae->lock, ae->err, st, err);
}

STSL_API stsl_status stsl_autoencoder_encode(stsl_autoencoder *ae, const float *x, float *z, int batch)
{
    if (!ae) return STSL_ERR_INVALID_ARG;
    char err[STSL_ERRMSG_SIZE] = "";
    return record(ae, stsl__ae_encode(ae, x, z, batch, err), err);
}

STSL_API stsl_status stsl_autoencoder_decode(stsl_autoencoder *ae, const float *z, float *x, int batch)
{
    if (!ae) return STSL_ERR_INVALID_ARG;
    char err[STSL_ERRMSG_SIZE] = "";
    return record(ae, stsl__ae_decode(ae, z, x, batch, err), err);
}

STSL_API stsl_status stsl_autoencoder_decode_vjp(stsl_autoencoder *ae, const float *z, const float *u,
                                                 float *x, float *out, int batch)
{
    if (!ae) return STSL_ERR_INVALID_ARG;
    char err[STSL_ERRMSG_SIZE] = "";
    return record(ae, stsl__ae_decode_vjp(ae, z, u, x, out, batch, err), err);
}

STSL_API stsl_status stsl_autoencoder_image_shape(const stsl_autoencoder *ae, stsl_shape *shape)
{
    if (!ae || !shape) return STSL_ERR_INVALID_ARG;
    *shape = ae->image;
    return STSL_OK;
}

STSL_API stsl_status stsl_autoencoder_latent_shape(const stsl_autoencoder *ae, stsl_shape *shape)
{
    if (!ae || !shape) return STSL_ERR_INVALID_ARG;
    *shape = ae->latent;
    return STSL_OK;
}

STSL_API const char *stsl_autoencoder_last_error(const stsl_autoencoder *ae)
{
    return ae ? ae->err : "autoencoder is NULL";
}
