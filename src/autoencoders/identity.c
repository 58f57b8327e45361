/*
 * identity.c -- identity autoencoder (stsl_autoencoder_create_identity): E = D = I, latent scale
 * 1, latent shape = image shape.  is_identity = 1 lets solvers skip the copies and the ledger
 * (an identity call is not a network evaluation and is not counted).
 */
#include "autoencoders/autoencoder_internal.h"

#include <string.h>

static size_t id_bytes(const stsl_autoencoder *ae, int batch)
{
    return stsl__shape_size(ae->image) * (size_t)batch * sizeof(float);
}

static stsl_status id_encode(stsl_autoencoder *ae, const float *x, float *z, int batch, char *err)
{
    (void)err;
    if (z != x) memmove(z, x, id_bytes(ae, batch));
    return STSL_OK;
}

static stsl_status id_decode(stsl_autoencoder *ae, const float *z, float *x, int batch, char *err)
{
    (void)err;
    if (z != x) memmove(x, z, id_bytes(ae, batch));
    return STSL_OK;
}

static stsl_status id_decode_vjp(stsl_autoencoder *ae, const float *z, const float *u, float *x,
                                 float *out, int batch, char *err)
{
    (void)err;
    if (x && x != z) memmove(x, z, id_bytes(ae, batch));
    if (out && out != u) memmove(out, u, id_bytes(ae, batch));
    return STSL_OK;
}

static void id_destroy(stsl_autoencoder *ae) { (void)ae; }

static const stsl__ae_ops identity_ops = {"identity", id_encode, id_decode, id_decode_vjp,
                                          id_destroy,  NULL,      NULL,      NULL,
                                          NULL};

STSL_API stsl_status stsl_autoencoder_create_identity(stsl_context *ctx, stsl_shape shape,
                                                      stsl_autoencoder **out)
{
    if (!out) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "identity autoencoder: out is NULL");
    *out = NULL;
    char err[STSL_ERRMSG_SIZE];
    stsl_status st = stsl__check_shape(err, shape);
    if (st != STSL_OK) return stsl__ctx_fail(ctx, st, "identity autoencoder: %s", err);
    stsl_autoencoder *ae = NULL;
    st = stsl__ae_new(ctx, &identity_ops, shape, shape, 1.0, &ae);
    if (st != STSL_OK) return st;
    ae->is_identity = 1;
    *out = ae;
    return STSL_OK;
}
