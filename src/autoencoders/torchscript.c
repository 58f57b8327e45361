/*
 * torchscript.c -- autoencoder handles backed by TorchScript (docs/models.md §2): one file with
 * encode/decode methods (role autoencoder), or an encoder file and a decoder file whose forward
 * encodes / decodes (roles encoder, decoder); the files are models of the models room
 * (models/model.h).  The common layer (autoencoder.c) applies the latent scale, locks and
 * checks outputs; this file only runs the unscaled modules.
 *
 * Built without libtorch (WITH_TORCH=0) stsl_autoencoder_load returns STSL_ERR_UNSUPPORTED
 * (from stsl__model_open).
 */
#include "autoencoders/autoencoder_internal.h"
#include "models/model.h"

#include <stdio.h>
#include <string.h>

typedef struct ts_ae {
    stsl__model *enc, *dec;   /* the same model twice for a single file */
    const char *enc_method, *dec_method;
} ts_ae;

static stsl_status ts_encode(stsl_autoencoder *ae, const float *x, float *z, int batch, char *err)
{
    ts_ae *t = ae->impl;
    return stsl__model_forward(t->enc, t->enc_method, x, ae->image, NULL, z, ae->latent, batch,
                               err);
}

static stsl_status ts_decode(stsl_autoencoder *ae, const float *z, float *x, int batch, char *err)
{
    ts_ae *t = ae->impl;
    return stsl__model_forward(t->dec, t->dec_method, z, ae->latent, NULL, x, ae->image, batch,
                               err);
}

static stsl_status ts_decode_vjp(stsl_autoencoder *ae, const float *z, const float *u, float *x,
                                 float *out, int batch, char *err)
{
    ts_ae *t = ae->impl;
    return stsl__model_vjp(t->dec, t->dec_method, z, ae->latent, NULL, u, ae->image, x, out,
                           batch, err);
}

static stsl_status ts_decode_keep(stsl_autoencoder *ae, const float *z, float *x, int batch,
                                  void **state, char *err)
{
    ts_ae *t = ae->impl;
    stsl__model_pass *pass = NULL;
    stsl_status st = stsl__model_forward_keep(t->dec, t->dec_method, z, ae->latent, NULL, x,
                                              ae->image, batch, &pass, err);
    if (st == STSL_OK) *state = pass;
    return st;
}

static stsl_status ts_keep_vjp(stsl_autoencoder *ae, void *state, const float *u, float *out,
                               char *err)
{
    ts_ae *t = ae->impl;
    return stsl__model_pass_vjp(t->dec, state, u, out, err);
}

/* out = J_encode(x)^T v by autograd through the encoder method */
static stsl_status ts_encode_vjp(stsl_autoencoder *ae, const float *x, const float *v, float *out,
                                 int batch, char *err)
{
    ts_ae *t = ae->impl;
    return stsl__model_vjp(t->enc, t->enc_method, x, ae->image, NULL, v, ae->latent, NULL, out,
                           batch, err);
}

static void ts_keep_free(void *state) { stsl__model_pass_free(state); }

static void ts_destroy(stsl_autoencoder *ae)
{
    ts_ae *t = ae->impl;
    if (!t) return;
    if (t->dec != t->enc) stsl__model_free(t->dec);
    stsl__model_free(t->enc);
    stsl__free(t);
    ae->impl = NULL;
}

static const stsl__ae_ops ts_ae_ops = {"torchscript", ts_encode,   ts_decode,    ts_decode_vjp,
                                       ts_destroy,    ts_decode_keep, ts_keep_vjp, ts_keep_free,
                                       ts_encode_vjp};

static bool same_shape(stsl_shape a, stsl_shape b)
{
    return a.channels == b.channels && a.height == b.height && a.width == b.width;
}

/* Probe one method on a batch of 1 zeros; a rejection is STSL_ERR_SHAPE. */
static stsl_status probe(stsl_context *ctx, const char *path, stsl__model *m,
                         const char *method, stsl_shape in, stsl_shape out, const char *in_key)
{
    char err[STSL_ERRMSG_SIZE] = "";
    stsl_status st = stsl__model_probe(m, method, in, out, 0, err);
    if (st == STSL_ERR_NOMEM) return stsl__ctx_fail(ctx, st, "stsl_autoencoder_load: %s", err);
    if (st != STSL_OK)
        return stsl__ctx_fail(ctx, STSL_ERR_SHAPE, "'%s': %s does not map %s %d,%d,%d to %d,%d,%d: %s",
                              path, method, in_key, (int)in.channels, (int)in.height,
                              (int)in.width, (int)out.channels, (int)out.height, (int)out.width,
                              err);
    return STSL_OK;
}

STSL_API stsl_status stsl_autoencoder_load(stsl_context *ctx, const char *path,
                                           const char *decoder_path, stsl_autoencoder **out)
{
    if (out) *out = NULL;
    if (!ctx || !out) return STSL_ERR_INVALID_ARG;
    if (!path)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "stsl_autoencoder_load: path is NULL");

    stsl__model *enc = NULL, *dec = NULL;
    ts_ae *t = NULL;
    stsl_autoencoder *ae = NULL;
    char err[STSL_ERRMSG_SIZE] = "";
    const char *enc_method, *dec_method;
    const char *dec_file = decoder_path ? decoder_path : path;
    stsl_status st;

    if (!decoder_path) {
        st = stsl__model_open(ctx, path, 1u << STSL__ROLE_AUTOENCODER, &enc);
        if (st != STSL_OK) return st;
        dec = enc;
        enc_method = "encode";
        dec_method = "decode";
    } else {
        st = stsl__model_open(ctx, path, 1u << STSL__ROLE_ENCODER, &enc);
        if (st != STSL_OK) return st;
        st = stsl__model_open(ctx, decoder_path, 1u << STSL__ROLE_DECODER, &dec);
        if (st != STSL_OK) goto fail;
        const stsl__model_meta *m1 = stsl__model_get_meta(enc), *m2 = stsl__model_get_meta(dec);
        if (!same_shape(m1->image_shape, m2->image_shape) ||
            !same_shape(m1->latent_shape, m2->latent_shape) || m1->latent_scale != m2->latent_scale) {
            st = stsl__ctx_fail(ctx, STSL_ERR_MODEL,
                                "encoder '%s' and decoder '%s' disagree on image_shape, "
                                "latent_shape or latent_scale", path, decoder_path);
            goto fail;
        }
        enc_method = "forward";
        dec_method = "forward";
    }
    const stsl__model_meta m1 = *stsl__model_get_meta(enc);

    st = stsl__model_check_method(enc, enc_method, 1, err);
    if (st == STSL_OK) {
        st = stsl__model_check_method(dec, dec_method, 1, err);
        if (st != STSL_OK) {
            st = stsl__ctx_fail(ctx, st, "'%s': %s", dec_file, err);
            goto fail;
        }
    } else {
        st = stsl__ctx_fail(ctx, st, "'%s': %s", path, err);
        goto fail;
    }
    st = probe(ctx, path, enc, enc_method, m1.image_shape, m1.latent_shape, "image_shape");
    if (st != STSL_OK) goto fail;
    st = probe(ctx, dec_file, dec, dec_method, m1.latent_shape, m1.image_shape, "latent_shape");
    if (st != STSL_OK) goto fail;

    t = stsl__calloc(1, sizeof *t);
    if (!t) {
        st = stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "stsl_autoencoder_load: out of memory");
        goto fail;
    }
    st = stsl__ae_new(ctx, &ts_ae_ops, m1.image_shape, m1.latent_shape, m1.latent_scale, &ae);
    if (st != STSL_OK) goto fail;
    t->enc = enc;
    t->dec = dec;
    t->enc_method = enc_method;
    t->dec_method = dec_method;
    ae->impl = t;
    stsl__log(ctx, STSL_LOG_INFO,
              "loaded autoencoder '%s'%s%s: image %d,%d,%d, latent %d,%d,%d, scale %g, device %s (%s)",
              path, decoder_path ? " + " : "", decoder_path ? decoder_path : "",
              (int)m1.image_shape.channels, (int)m1.image_shape.height, (int)m1.image_shape.width,
              (int)m1.latent_shape.channels, (int)m1.latent_shape.height,
              (int)m1.latent_shape.width, m1.latent_scale, stsl__model_device(enc),
              stsl__model_precision_name(enc));
    stsl__clear_error(ctx->err);
    *out = ae;
    return STSL_OK;

fail:
    stsl__free(t);
    if (dec != enc) stsl__model_free(dec);
    stsl__model_free(enc);
    return st;
}
