/*
 * torchscript.c -- autoencoder handles backed by TorchScript (docs/models.md §2): one file with
 * encode/decode methods (role autoencoder), or an encoder file and a decoder file whose forward
 * encodes / decodes (roles encoder, decoder).  The common layer (autoencoder.c) applies the
 * latent scale, locks and checks outputs; this file only runs the unscaled modules.
 *
 * Built without libtorch (WITH_TORCH=0) stsl_autoencoder_load returns STSL_ERR_UNSUPPORTED.
 */
#include "autoencoders/autoencoder_internal.h"
#include "scores/torchscript.h"

#include <stdio.h>
#include <string.h>

#ifndef STSL_WITH_TORCH

STSL_API stsl_status stsl_autoencoder_load(stsl_context *ctx, const char *path,
                                           const char *decoder_path, stsl_autoencoder **out)
{
    (void)path;
    (void)decoder_path;
    if (out) *out = NULL;
    if (!ctx || !out) return STSL_ERR_INVALID_ARG;
    return stsl__ctx_fail(ctx, STSL_ERR_UNSUPPORTED,
                          "stsl_autoencoder_load: built without TorchScript support (rebuild with "
                          "libtorch, WITH_TORCH=1)");
}

#else

typedef struct ts_ae {
    stsl_shim_module *enc, *dec;   /* the same module twice for a single file */
    const char *enc_method, *dec_method;
} ts_ae;

static void dims_of(stsl_shape s, int batch, int64_t d[4])
{
    d[0] = batch;
    d[1] = s.channels;
    d[2] = s.height;
    d[3] = s.width;
}

static stsl_status ts_encode(stsl_autoencoder *ae, const float *x, float *z, int batch, char *err)
{
    ts_ae *t = ae->impl;
    int64_t xd[4], zd[4];
    dims_of(ae->image, batch, xd);
    dims_of(ae->latent, batch, zd);
    return stsl_shim_forward(t->enc, t->enc_method, x, xd, NULL, z, zd, stsl__ctx_threads(ae->ctx),
                             err, STSL_ERRMSG_SIZE);
}

static stsl_status ts_decode(stsl_autoencoder *ae, const float *z, float *x, int batch, char *err)
{
    ts_ae *t = ae->impl;
    int64_t xd[4], zd[4];
    dims_of(ae->image, batch, xd);
    dims_of(ae->latent, batch, zd);
    return stsl_shim_forward(t->dec, t->dec_method, z, zd, NULL, x, xd, stsl__ctx_threads(ae->ctx),
                             err, STSL_ERRMSG_SIZE);
}

static stsl_status ts_decode_vjp(stsl_autoencoder *ae, const float *z, const float *u, float *x,
                                 float *out, int batch, char *err)
{
    ts_ae *t = ae->impl;
    int64_t xd[4], zd[4];
    dims_of(ae->image, batch, xd);
    dims_of(ae->latent, batch, zd);
    return stsl_shim_vjp(t->dec, t->dec_method, z, zd, NULL, u, xd, x, out,
                         stsl__ctx_threads(ae->ctx), err, STSL_ERRMSG_SIZE);
}

static stsl_status ts_decode_keep(stsl_autoencoder *ae, const float *z, float *x, int batch,
                                  void **state, char *err)
{
    ts_ae *t = ae->impl;
    int64_t xd[4], zd[4];
    dims_of(ae->image, batch, xd);
    dims_of(ae->latent, batch, zd);
    stsl_shim_graph *g = NULL;
    stsl_status st = stsl_shim_forward_graph(t->dec, t->dec_method, z, zd, NULL, x, xd,
                                             stsl__ctx_threads(ae->ctx), &g, err, STSL_ERRMSG_SIZE);
    if (st == STSL_OK) *state = g;
    return st;
}

static stsl_status ts_keep_vjp(stsl_autoencoder *ae, void *state, const float *u, float *out,
                               char *err)
{
    return stsl_shim_graph_vjp((stsl_shim_graph *)state, u, out, stsl__ctx_threads(ae->ctx), err,
                               STSL_ERRMSG_SIZE);
}

/* out = J_encode(x)^T v by autograd through the encoder method */
static stsl_status ts_encode_vjp(stsl_autoencoder *ae, const float *x, const float *v, float *out,
                                 int batch, char *err)
{
    ts_ae *t = ae->impl;
    int64_t xd[4], zd[4];
    dims_of(ae->image, batch, xd);
    dims_of(ae->latent, batch, zd);
    return stsl_shim_vjp(t->enc, t->enc_method, x, xd, NULL, v, zd, NULL, out,
                         stsl__ctx_threads(ae->ctx), err, STSL_ERRMSG_SIZE);
}

static void ts_keep_free(void *state) { stsl_shim_graph_free((stsl_shim_graph *)state); }

static void ts_destroy(stsl_autoencoder *ae)
{
    ts_ae *t = ae->impl;
    if (!t) return;
    if (t->dec != t->enc) stsl_shim_free(t->dec);
    stsl_shim_free(t->enc);
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
static stsl_status probe(stsl_context *ctx, const char *path, stsl_shim_module *m,
                         const char *method, stsl_shape in, stsl_shape out, const char *in_key)
{
    size_t ni = stsl__shape_size(in), no = stsl__shape_size(out);
    float *buf = stsl__alloc_floats(ni + no);
    if (!buf) return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "stsl_autoencoder_load: out of memory");
    memset(buf, 0, (ni + no) * sizeof *buf);
    int64_t di[4], dout[4];
    dims_of(in, 1, di);
    dims_of(out, 1, dout);
    char err[STSL_ERRMSG_SIZE] = "";
    stsl_status st = stsl_shim_forward(m, method, buf, di, NULL, buf + ni, dout,
                                       stsl__ctx_threads(ctx), err, sizeof err);
    stsl__free(buf);
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

    stsl_shim_module *enc = NULL, *dec = NULL;
    stsl__meta_entry *e1 = NULL, *e2 = NULL;
    int n1 = 0, n2 = 0;
    stsl__model_meta m1, m2;
    ts_ae *t = NULL;
    stsl_autoencoder *ae = NULL;
    char err[STSL_ERRMSG_SIZE] = "";
    const char *enc_method, *dec_method;
    const char *dec_file = decoder_path ? decoder_path : path;
    stsl_status st;

    if (!decoder_path) {
        st = stsl__ts_open(ctx, path, 1u << STSL__ROLE_AUTOENCODER, &enc, &e1, &n1, &m1);
        if (st != STSL_OK) return st;
        dec = enc;
        enc_method = "encode";
        dec_method = "decode";
    } else {
        st = stsl__ts_open(ctx, path, 1u << STSL__ROLE_ENCODER, &enc, &e1, &n1, &m1);
        if (st != STSL_OK) return st;
        st = stsl__ts_open(ctx, decoder_path, 1u << STSL__ROLE_DECODER, &dec, &e2, &n2, &m2);
        if (st != STSL_OK) goto fail;
        if (!same_shape(m1.image_shape, m2.image_shape) ||
            !same_shape(m1.latent_shape, m2.latent_shape) || m1.latent_scale != m2.latent_scale) {
            st = stsl__ctx_fail(ctx, STSL_ERR_MODEL,
                                "encoder '%s' and decoder '%s' disagree on image_shape, "
                                "latent_shape or latent_scale", path, decoder_path);
            goto fail;
        }
        enc_method = "forward";
        dec_method = "forward";
    }

    st = stsl_shim_check_method(enc, enc_method, 1, err, sizeof err);
    if (st == STSL_OK) {
        st = stsl_shim_check_method(dec, dec_method, 1, err, sizeof err);
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
              (int)m1.latent_shape.width, m1.latent_scale, stsl_shim_device(enc),
              stsl_shim_precision_name(stsl_shim_precision(enc)));
    stsl__meta_free(e1, n1);
    stsl__meta_free(e2, n2);
    stsl__clear_error(ctx->err);
    *out = ae;
    return STSL_OK;

fail:
    stsl__free(t);
    if (dec != enc) stsl_shim_free(dec);
    stsl_shim_free(enc);
    stsl__meta_free(e1, n1);
    stsl__meta_free(e2, n2);
    return st;
}

#endif /* STSL_WITH_TORCH */
