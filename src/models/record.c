/*
 * record.c -- a model file's record read without loading the model (stsl_model_record_*,
 * include/stsl.h): the shim reads the archive's stsl_meta.txt, models/meta.c parses and
 * validates it as a load does.
 */
#include "models/meta.h"
#include "models/model.h"

#ifdef STSL_WITH_TORCH
#include "../../shim/shim.h"   /* src/models alone includes it (Makefile: STSL_SHIM_USER) */
#endif

#include <stdio.h>
#include <string.h>

struct stsl_model_record {
    stsl__meta_entry *entries;
    int count;
    stsl__model_meta meta;   /* its strings point into entries */
};

/* Every role a load accepts. */
#define ANY_ROLE                                                                                   \
    ((1u << STSL__ROLE_UNET) | (1u << STSL__ROLE_AUTOENCODER) | (1u << STSL__ROLE_ENCODER) |     \
     (1u << STSL__ROLE_DECODER))

STSL_API stsl_status stsl_model_record_read(stsl_context *ctx, const char *path,
                                            stsl_model_record **out)
{
    if (out) *out = NULL;
    if (!ctx || !out) return STSL_ERR_INVALID_ARG;
    if (!path)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "stsl_model_record_read: path is NULL");
#ifndef STSL_WITH_TORCH
    return stsl__ctx_fail(ctx, STSL_ERR_UNSUPPORTED,
                          "stsl_model_record_read: built without TorchScript support (rebuild "
                          "with libtorch, WITH_TORCH=1)");
#else
    stsl_status st = stsl__model_check_readable(ctx, path);
    if (st != STSL_OK) return st;
    char err[STSL_ERRMSG_SIZE] = "";
    char *text = stsl__malloc(STSL_SHIM_META_MAX);
    stsl_model_record *rec = stsl__calloc(1, sizeof *rec);
    if (!text || !rec) {
        stsl__free(text);
        stsl__free(rec);
        return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "stsl_model_record_read: out of memory");
    }
    size_t len = 0;
    st = stsl_shim_read_meta(path, text, STSL_SHIM_META_MAX, &len, err, sizeof err);
    if (st != STSL_OK) {
        stsl__free(text);
        stsl__free(rec);
        return stsl__ctx_fail(ctx, st, "%s", err);
    }
    st = stsl__meta_parse(text, len, &rec->entries, &rec->count, err);
    stsl__free(text);
    if (st == STSL_OK) st = stsl__meta_validate(rec->entries, rec->count, ANY_ROLE, &rec->meta, err);
    if (st != STSL_OK) {
        stsl_model_record_destroy(rec);
        return stsl__ctx_fail(ctx, st, "'%s': %s", path, err);
    }
    stsl__clear_error(ctx->err);
    *out = rec;
    return STSL_OK;
#endif
}

STSL_API void stsl_model_record_destroy(stsl_model_record *rec)
{
    if (!rec) return;
    stsl__meta_free(rec->entries, rec->count);
    stsl__free(rec);
}

STSL_API const char *stsl_model_record_get(const stsl_model_record *rec, const char *key)
{
    return rec ? stsl__meta_get(rec->entries, rec->count, key) : NULL;
}

STSL_API stsl_status stsl_model_record_shapes(const stsl_model_record *rec, stsl_shape *image,
                                              stsl_shape *latent)
{
    if (!rec) return STSL_ERR_INVALID_ARG;
    const stsl__model_meta *m = &rec->meta;
    const stsl_shape none = {0, 0, 0};
    stsl_shape img = m->image_shape, lat = m->latent_shape;
    if (m->role == STSL__ROLE_UNET) {
        img = m->latent ? none : m->sample_shape;
        lat = m->latent ? m->sample_shape : none;
    }
    if (image) *image = img;
    if (latent) *latent = lat;
    return STSL_OK;
}
