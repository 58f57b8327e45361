/*
 * device_ops.c -- the measurement operators on a device over the shim's libtorch ops (see
 * device_ops.h): the device choice read from the context, one shim op per operator, a lock
 * around its calls (the shim op keeps device buffers and is not thread-safe).
 */
#include "models/device_ops.h"

#include "models/device.h"

#include <pthread.h>

int stsl__devop_target(const stsl_context *ctx)
{
    if (!ctx) return STSL__DEVOP_HOST;
    int auto_cpu;
    int index = stsl__device_resolve(ctx->device, &auto_cpu);
    return index < 0 ? STSL__DEVOP_HOST : index;
}

#ifndef STSL_WITH_TORCH

stsl_status stsl__devop_create(const stsl__devop_desc *d, int index, stsl__devop **out, char *err)
{
    (void)d;
    if (out) *out = NULL;
    if (index >= 0)
        return stsl__fail(err, STSL_ERR_BACKEND,
                          "device \"cuda:%d\" requested but the library was built without libtorch "
                          "(WITH_TORCH=0): operators run on the CPU only; use \"cpu\" or \"auto\"",
                          index);
    return stsl__fail(err, STSL_ERR_BACKEND,
                      "operators as libtorch ops: the library was built without libtorch (WITH_TORCH=0)");
}
stsl_status stsl__devop_apply(stsl__devop *op, stsl__devop_mode mode, const float *x,
                              const float *v, float *out, int batch, int threads, char *err)
{
    (void)op, (void)mode, (void)x, (void)v, (void)out, (void)batch, (void)threads;
    return stsl__fail(err, STSL_ERR_BACKEND, "built without libtorch (WITH_TORCH=0)");
}
const char *stsl__devop_device(const stsl__devop *op)
{
    (void)op;
    return "";
}
void stsl__devop_free(stsl__devop *op) { (void)op; }

#else

#include "../../shim/shim.h"   /* src/models alone includes it (Makefile: STSL_SHIM_USER) */

struct stsl__devop {
    stsl_shim_op *op;
    pthread_mutex_t lock;
    char device[STSL__DEVICE_NAME_SIZE];
};

static stsl_shim_op *make(const stsl__devop_desc *d, int index, char *err, stsl_status *st)
{
    const int64_t shape[3] = {d->in.channels, d->in.height, d->in.width};
    stsl_shim_op *op = NULL;
    switch (d->kind) {
    case STSL__DEVOP_POINTWISE:
        *st = stsl_shim_op_pointwise(index, shape, d->values, &op, err, STSL_ERRMSG_SIZE);
        break;
    case STSL__DEVOP_CLIP: *st = stsl_shim_op_clip(index, shape, d->alpha, &op, err, STSL_ERRMSG_SIZE); break;
    case STSL__DEVOP_CONV:
        *st = stsl_shim_op_conv(index, shape, d->k, d->separable, d->values, d->rows, d->cols, d->fft_n1,
                                d->fft_n2, &op, err, STSL_ERRMSG_SIZE);
        break;
    case STSL__DEVOP_RESAMPLE:
        *st = stsl_shim_op_resample(index, shape, d->out.height, d->out.width, d->v.taps, d->v.idx, d->v.w,
                                    d->h.taps, d->h.idx, d->h.w, &op, err, STSL_ERRMSG_SIZE);
        break;
    case STSL__DEVOP_PHASE:
        *st = stsl_shim_op_phase(index, shape, d->out.height, d->out.width, d->top, d->left, &op, err,
                                 STSL_ERRMSG_SIZE);
        break;
    case STSL__DEVOP_MATRIX:
        *st = stsl_shim_op_matrix(index, shape, d->out.width, d->values, &op, err, STSL_ERRMSG_SIZE);
        break;
    default: *st = stsl__fail(err, STSL_ERR_INTERNAL, "device operator kind %d unknown", (int)d->kind);
    }
    return op;
}

stsl_status stsl__devop_create(const stsl__devop_desc *d, int index, stsl__devop **out, char *err)
{
    *out = NULL;
    stsl__devop *dop = stsl__calloc(1, sizeof *dop);
    if (!dop) return stsl__fail(err, STSL_ERR_NOMEM, "out of memory creating a device operator");
    if (pthread_mutex_init(&dop->lock, NULL) != 0) {
        stsl__free(dop);
        return stsl__fail(err, STSL_ERR_NOMEM, "cannot create a device operator's lock");
    }
    stsl_status st;
    dop->op = make(d, index, err, &st);
    if (st != STSL_OK) {
        stsl__devop_free(dop);
        return st;
    }
    const stsl__device where = {index >= 0 ? STSL__DEVICE_CUDA : STSL__DEVICE_CPU, index};
    stsl__device_name(where, dop->device);
    *out = dop;
    return STSL_OK;
}

stsl_status stsl__devop_apply(stsl__devop *op, stsl__devop_mode mode, const float *x,
                              const float *v, float *out, int batch, int threads, char *err)
{
    pthread_mutex_lock(&op->lock);
    stsl_status st = stsl_shim_op_apply(op->op, (stsl_shim_op_mode)mode, x, v, out, batch, threads, err,
                                        STSL_ERRMSG_SIZE);
    pthread_mutex_unlock(&op->lock);
    return st;
}

const char *stsl__devop_device(const stsl__devop *op) { return op->device; }

void stsl__devop_free(stsl__devop *op)
{
    if (!op) return;
    stsl_shim_op_free(op->op);
    pthread_mutex_destroy(&op->lock);
    stsl__free(op);
}

#endif
