/*
 * autoencoder_internal.h -- the autoencoder-handle interface (torchscript, identity).
 */
#ifndef STSL_AUTOENCODER_INTERNAL_H
#define STSL_AUTOENCODER_INTERNAL_H

#include "core/internal.h"

/* Implementations work on UNSCALED latents; the common layer applies latent_scale. */
typedef struct stsl__ae_ops {
    const char *name;   /* "torchscript", "identity" */
    stsl_status (*encode)(stsl_autoencoder *ae, const float *x, float *z, int batch, char *err);
    stsl_status (*decode)(stsl_autoencoder *ae, const float *z, float *x, int batch, char *err);
    /* out = J_decode(z)^T u; x may be NULL */
    stsl_status (*decode_vjp)(stsl_autoencoder *ae, const float *z, const float *u, float *x,
                              float *out, int batch, char *err);
    void (*destroy)(stsl_autoencoder *ae);
    /* Optional (NULL: not supported): x = decode(z) with the evaluation kept in *state for ONE
     * later keep_vjp (out = J_decode(z)^T u): one decoder pass for both; keep_free releases it. */
    stsl_status (*decode_keep)(stsl_autoencoder *ae, const float *z, float *x, int batch,
                               void **state, char *err);
    stsl_status (*keep_vjp)(stsl_autoencoder *ae, void *state, const float *u, float *out,
                            char *err);
    void (*keep_free)(void *state);
    /* Optional (NULL: not supported): out = J_encode(x)^T v (x: images, v: latents, out: images) */
    stsl_status (*encode_vjp)(stsl_autoencoder *ae, const float *x, const float *v, float *out,
                              int batch, char *err);
} stsl__ae_ops;

struct stsl_autoencoder {
    const stsl__ae_ops *ops;
    stsl_context *ctx;
    stsl_shape image;
    stsl_shape latent;
    double latent_scale;
    int is_identity;
    pthread_mutex_t lock;
    void *impl;
    char err[STSL_ERRMSG_SIZE];
};

stsl_status stsl__ae_new(stsl_context *ctx, const stsl__ae_ops *ops, stsl_shape image,
                         stsl_shape latent, double latent_scale, stsl_autoencoder **out);

/* Thread-safe, scale-aware calls with the caller's error buffer:
 * E(x) = scale * encode(x); D(z) = decode(z / scale); J_D^T u = J_decode(z/scale)^T u / scale. */
stsl_status stsl__ae_encode(stsl_autoencoder *ae, const float *x, float *z, int batch, char *err);
stsl_status stsl__ae_decode(stsl_autoencoder *ae, const float *z, float *x, int batch, char *err);
stsl_status stsl__ae_decode_vjp(stsl_autoencoder *ae, const float *z, const float *u, float *x,
                                float *out, int batch, char *err);

/* 1 when the autoencoder has an encoder VJP; out = J_E(x)^T v = scale J_encode(x)^T v (images),
 * STSL_ERR_UNSUPPORTED when it has none. */
int stsl__ae_can_encode_vjp(const stsl_autoencoder *ae);
stsl_status stsl__ae_encode_vjp(stsl_autoencoder *ae, const float *x, const float *v, float *out,
                                int batch, char *err);

/* A decoder evaluation kept for its VJP (stsl__ae_decode_keep). */
typedef struct stsl__ae_pass stsl__ae_pass;

/* 1 when the autoencoder can keep a decoder evaluation (x now, J_D^T u later, one pass). */
int stsl__ae_can_keep(const stsl_autoencoder *ae);
/* x = D(z) as stsl__ae_decode, the evaluation kept in *pass (NULL on failure).
 * STSL_ERR_UNSUPPORTED when !stsl__ae_can_keep(ae). */
stsl_status stsl__ae_decode_keep(stsl_autoencoder *ae, const float *z, float *x, int batch,
                                 stsl__ae_pass **pass, char *err);
/* out = J_D(z)^T u at the kept point (scale-aware as stsl__ae_decode_vjp); spends the pass. */
stsl_status stsl__ae_pass_vjp(stsl__ae_pass *pass, const float *u, float *out, char *err);
void stsl__ae_pass_free(stsl__ae_pass *pass);

#endif
