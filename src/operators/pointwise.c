/*
 * pointwise.c -- operators that act on each value independently: identity (denoise,
 * salt-pepper), inpainting masks (random, box, user) and hdr clipping.
 */
#include "operators/operator_internal.h"

#include <math.h>
#include <string.h>

typedef struct mask_state {
    float *mask;   /* C*H*W values in {0, 1} */
} mask_state;

static void mask_release(void *state)
{
    mask_state *s = state;
    if (!s) return;
    stsl__free(s->mask);
    stsl__free(s);
}

static stsl_status identity_apply(const stsl_operator *op, const float *x, float *y, int batch,
                                  char *err)
{
    (void)err;
    if (x != y) memcpy(y, x, (size_t)batch * stsl__shape_size(op->in) * sizeof(float));
    return STSL_OK;
}

/* The mask is its own adjoint (diagonal 0/1) and, zero-filling, its back-projection. */
static stsl_status mask_apply(const stsl_operator *op, const float *x, float *y, int batch,
                              char *err)
{
    (void)err;
    const mask_state *s = op->state;
    size_t n = stsl__shape_size(op->in);
    for (int b = 0; b < batch; b++) {
        const float *xb = x + (size_t)b * n;
        float *yb = y + (size_t)b * n;
        for (size_t i = 0; i < n; i++) yb[i] = s->mask[i] * xb[i];
    }
    return STSL_OK;
}

/* The HDR sensor's saturation: clip to [-1, 1]. */
static float clip_unit(float v) { return v > 1.0f ? 1.0f : (v < -1.0f ? -1.0f : v); }

static stsl_status hdr_forward(const stsl_operator *op, const float *x, float *y, int batch,
                               char *err)
{
    (void)err;
    size_t n = (size_t)batch * stsl__shape_size(op->in);
    float a = (float)op->p.hdr_alpha;
    for (size_t i = 0; i < n; i++) y[i] = clip_unit(a * x[i]);
    return STSL_OK;
}

/* J^T v = alpha v where the clip is inactive (|alpha x| < 1), 0 where it saturates. */
static stsl_status hdr_vjp(const stsl_operator *op, const float *x, const float *v, float *out,
                           int batch, char *err)
{
    (void)err;
    size_t n = (size_t)batch * stsl__shape_size(op->in);
    float a = (float)op->p.hdr_alpha;
    /* |a x| < 1 tested on the IEEE bits (an integer compare, NaN counts as saturated): the loop
     * vectorises, where a data-dependent branch would mispredict half the time */
    for (size_t i = 0; i < n; i++) {
        float t = a * x[i];
        uint32_t u;
        memcpy(&u, &t, sizeof u);
        int32_t inside = (int32_t)((u & 0x7fffffffu) < 0x3f800000u);
        out[i] = (float)inside * a * v[i];
    }
    return STSL_OK;
}

/* Right inverse on the unsaturated range: clip(y)/alpha. */
static stsl_status hdr_backproject(const stsl_operator *op, const float *y, float *x, int batch,
                                   char *err)
{
    (void)err;
    size_t n = (size_t)batch * stsl__shape_size(op->in);
    float a = (float)op->p.hdr_alpha;
    for (size_t i = 0; i < n; i++) x[i] = clip_unit(y[i]) / a;
    return STSL_OK;
}

/* The device path (models/device_ops.h): identity, the same mask, the same clip. */
static void identity_describe(const stsl_operator *op, stsl__devop_desc *d)
{
    (void)op;
    d->kind = STSL__DEVOP_POINTWISE;
}

static void mask_describe(const stsl_operator *op, stsl__devop_desc *d)
{
    d->kind = STSL__DEVOP_POINTWISE;
    d->values = ((const mask_state *)op->state)->mask;
}

static void hdr_describe(const stsl_operator *op, stsl__devop_desc *d)
{
    d->kind = STSL__DEVOP_CLIP;
    d->alpha = (float)op->p.hdr_alpha;
}

static const stsl__op_impl IDENTITY_IMPL = {identity_apply, identity_apply, NULL, identity_apply,
                                            NULL, 0, identity_describe};
static const stsl__op_impl MASK_IMPL = {mask_apply, mask_apply, NULL, mask_apply, mask_release, 1,
                                        mask_describe};
static const stsl__op_impl HDR_IMPL = {hdr_forward, NULL, hdr_vjp, hdr_backproject, NULL, 0, hdr_describe};

/* DPS-style random mask: exactly floor(rate * H * W) pixels dropped, chosen by a partial
 * Fisher-Yates shuffle driven by the counter RNG; shared by all channels. */
static stsl_status random_mask(stsl_operator *op, float *mask)
{
    size_t hw = (size_t)op->in.height * (size_t)op->in.width;
    size_t drop = (size_t)floor(op->p.drop_rate * (double)hw + 1e-9);
    if (drop > hw) drop = hw;
    uint32_t *perm = stsl__malloc(hw * sizeof *perm);
    if (!perm) return stsl__fail(op->err, STSL_ERR_NOMEM, "out of memory building the inpainting mask");
    for (size_t i = 0; i < hw; i++) perm[i] = (uint32_t)i;
    uint64_t stream = stsl__stream(STSL_TAG_MASK, 0, 0, 0);
    for (size_t i = 0; i < drop; i++) {
        double u = stsl__rng_uniform_double((uint64_t)op->p.seed, stream, i);
        size_t j = i + (size_t)(u * (double)(hw - i));
        if (j >= hw) j = hw - 1;
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (size_t i = 0; i < hw; i++) mask[i] = 1.0f;
    for (size_t i = 0; i < drop; i++) mask[perm[i]] = 0.0f;
    stsl__free(perm);
    return STSL_OK;
}

static stsl_status box_mask(stsl_operator *op, float *mask)
{
    int H = op->in.height, W = op->in.width;
    int bh = op->p.box_height, bw = op->p.box_width;
    if (bh > H || bw > W)
        return stsl__fail(op->err, STSL_ERR_SHAPE, "box %dx%d is larger than the image %dx%d", bh, bw, H, W);
    int top = op->p.box_top < 0 ? (H - bh) / 2 : op->p.box_top;
    int left = op->p.box_left < 0 ? (W - bw) / 2 : op->p.box_left;
    if (top + bh > H || left + bw > W)
        return stsl__fail(op->err, STSL_ERR_SHAPE, "box %dx%d at (%d, %d) does not fit in the image %dx%d",
                          bh, bw, top, left, H, W);
    for (int i = 0; i < H; i++)
        for (int j = 0; j < W; j++)
            mask[(size_t)i * W + j] = (i >= top && i < top + bh && j >= left && j < left + bw) ? 0.0f : 1.0f;
    return STSL_OK;
}

stsl_status stsl__op_prepare_pointwise(stsl_operator *op)
{
    op->out = op->in;
    switch (op->kind) {
    case STSL_OP_IDENTITY:
    case STSL_OP_SALT_PEPPER: op->impl = &IDENTITY_IMPL; return STSL_OK;
    case STSL_OP_HDR: op->impl = &HDR_IMPL; return STSL_OK;
    default: break;
    }
    if (op->kind == STSL_OP_MASK_INPAINT && !op->user_mask)
        return stsl__fail(op->err, STSL_ERR_INVALID_ARG, "mask-inpaint needs a mask: call stsl_operator_set_mask");
    size_t n = stsl__shape_size(op->in), hw = (size_t)op->in.height * (size_t)op->in.width;
    mask_state *s = stsl__calloc(1, sizeof *s);
    if (!s) return stsl__fail(op->err, STSL_ERR_NOMEM, "out of memory preparing the mask");
    s->mask = stsl__alloc_floats(n);
    if (!s->mask) {
        stsl__free(s);
        return stsl__fail(op->err, STSL_ERR_NOMEM, "out of memory preparing the mask");
    }
    stsl_status st = STSL_OK;
    if (op->kind == STSL_OP_MASK_INPAINT) {
        memcpy(s->mask, op->user_mask, n * sizeof(float));
    } else {
        st = op->kind == STSL_OP_RANDOM_INPAINT ? random_mask(op, s->mask) : box_mask(op, s->mask);
        /* one H*W mask, the same for every channel */
        for (int c = 1; st == STSL_OK && c < op->in.channels; c++)
            memcpy(s->mask + (size_t)c * hw, s->mask, hw * sizeof(float));
    }
    if (st != STSL_OK) {
        mask_release(s);
        return st;
    }
    op->impl = &MASK_IMPL;
    op->state = s;
    return STSL_OK;
}
