/*
 * operator.c -- public operator API: creation, parameters (their table: operator_params.c),
 * validation, dispatch, the noise model (measure) and the data-fit loss.  The maps themselves live in conv.c, resize.c, pointwise.c,
 * phase.c; matrix and custom operators are small enough to live here.
 */
#include "operators/operator_internal.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Parameters                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* Bounds, defaults and names: operator_params.c.  Here: where each value is stored. */

static const char *param_name(stsl_param key)
{
    const stsl__param_meta *m = stsl__op_param_meta(key);
    return m ? m->name : "?";
}

/* Store v (integer keys: iv) in its field, unchecked. */
static void put_field(stsl__op_params *p, stsl_param key, double v, int64_t iv)
{
    switch (key) {
    case STSL_PARAM_NOISE_SIGMA: p->noise_sigma = v; break;
    case STSL_PARAM_SEED: p->seed = iv; break;
    case STSL_PARAM_KERNEL_SIZE: p->kernel_size = (int)iv; break;
    case STSL_PARAM_BLUR_SIGMA: p->blur_sigma = v; break;
    case STSL_PARAM_BOUNDARY: p->boundary = (int)iv; break;
    case STSL_PARAM_MOTION_INTENSITY: p->motion_intensity = v; break;
    case STSL_PARAM_SR_FILTER: p->sr_filter = (int)iv; break;
    case STSL_PARAM_DROP_RATE: p->drop_rate = v; break;
    case STSL_PARAM_BOX_HEIGHT: p->box_height = (int)iv; break;
    case STSL_PARAM_BOX_WIDTH: p->box_width = (int)iv; break;
    case STSL_PARAM_BOX_TOP: p->box_top = (int)iv; break;
    case STSL_PARAM_BOX_LEFT: p->box_left = (int)iv; break;
    case STSL_PARAM_IMPULSE_FRACTION: p->impulse_fraction = v; break;
    case STSL_PARAM_LOSS: p->loss = (int)iv; break;
    case STSL_PARAM_HUBER_DELTA: p->huber_delta = v; break;
    case STSL_PARAM_HDR_ALPHA: p->hdr_alpha = v; break;
    case STSL_PARAM_OVERSAMPLING: p->oversampling = v; break;
    case STSL_PARAM_FFT_THRESHOLD: p->fft_threshold = (int)iv; break;
    default: break;
    }
}

static void set_defaults(stsl_operator *op)
{
    memset(&op->p, 0, sizeof op->p);
    for (int key = 1; key < 100; key++) {
        double v;
        if (stsl__op_param_default(op->kind, op->in, (stsl_param)key, &v))
            put_field(&op->p, (stsl_param)key, v, (int64_t)v);
    }
}

/* Common checks of the setters/getters: the limits of the key for this kind, or a status. */
static stsl_status check_key(const stsl_operator *op, stsl_param key, stsl__op_limits *out)
{
    char *err = (char *)op->err;
    if (!stsl__op_param_known(key)) return stsl__fail(err, STSL_ERR_UNSUPPORTED, "unknown operator parameter %d", (int)key);
    if (!stsl__op_param_limits(op->kind, key, out))
        return stsl__fail(err, STSL_ERR_UNSUPPORTED, "parameter '%s' does not apply to this operator kind (%d)",
                          param_name(key), (int)op->kind);
    return STSL_OK;
}

static stsl_status store_value(stsl_operator *op, stsl_param key, const stsl__op_limits *l, double v,
                               int64_t iv)
{
    const char *name = param_name(key);
    if (l->is_integer) {
        if ((double)iv < l->min || (double)iv > l->max)
            return stsl__fail(op->err, STSL_ERR_INVALID_ARG, "%s %lld out of range [%.0f, %.0f]",
                              name, (long long)iv, l->min, l->max);
    } else {
        if (!isfinite(v) || v < l->min || v > l->max || (l->min_exclusive && v <= l->min))
            return stsl__fail(op->err, STSL_ERR_INVALID_ARG, "%s %g out of range %s%g, %g]", name,
                              v, l->min_exclusive ? "(" : "[", l->min, l->max);
    }
    if (key == STSL_PARAM_KERNEL_SIZE && iv % 2 == 0)
        return stsl__fail(op->err, STSL_ERR_INVALID_ARG, "kernel size %lld is even; blur kernels have odd sizes",
                          (long long)iv);
    put_field(&op->p, key, v, iv);
    return STSL_OK;
}

/* What both setters check first: the operator is not prepared yet and the key is one of its kind's. */
/* Both setters: the operator is not prepared yet, the key is one of its kind's, and a real value
 * is not given to an integer key (an integer is a valid real value: real keys accept set_int). */
static stsl_status set_value(stsl_operator *op, stsl_param key, double v, int64_t iv, int given_as_int)
{
    if (!op) return STSL_ERR_INVALID_ARG;
    if (op->prepared)
        return stsl__fail(op->err, STSL_ERR_INVALID_ARG, "operator already prepared: parameters are fixed");
    stsl__op_limits l;
    stsl_status st = check_key(op, key, &l);
    if (st != STSL_OK) return st;
    if (!given_as_int && l.is_integer)
        return stsl__fail(op->err, STSL_ERR_INVALID_ARG, "parameter '%s' is an integer: use stsl_operator_set_int",
                          param_name(key));
    return store_value(op, key, &l, v, iv);
}

STSL_API stsl_status stsl_operator_set_int(stsl_operator *op, stsl_param key, int64_t value)
{
    return set_value(op, key, (double)value, value, 1);
}

STSL_API stsl_status stsl_operator_set_float(stsl_operator *op, stsl_param key, double value)
{
    return set_value(op, key, value, 0, 0);
}

static double get_value(const stsl_operator *op, stsl_param key)
{
    const stsl__op_params *p = &op->p;
    switch (key) {
    case STSL_PARAM_NOISE_SIGMA: return p->noise_sigma;
    case STSL_PARAM_SEED: return (double)p->seed;
    case STSL_PARAM_KERNEL_SIZE: return op->user_kernel ? op->user_kernel_size : p->kernel_size;
    case STSL_PARAM_BLUR_SIGMA: return p->blur_sigma;
    case STSL_PARAM_BOUNDARY: return p->boundary;
    case STSL_PARAM_MOTION_INTENSITY: return p->motion_intensity;
    case STSL_PARAM_SR_FILTER: return p->sr_filter;
    case STSL_PARAM_DROP_RATE: return p->drop_rate;
    case STSL_PARAM_BOX_HEIGHT: return p->box_height;
    case STSL_PARAM_BOX_WIDTH: return p->box_width;
    case STSL_PARAM_BOX_TOP: return p->box_top;
    case STSL_PARAM_BOX_LEFT: return p->box_left;
    case STSL_PARAM_IMPULSE_FRACTION: return p->impulse_fraction;
    case STSL_PARAM_LOSS: return p->loss;
    case STSL_PARAM_HUBER_DELTA: return p->huber_delta;
    case STSL_PARAM_HDR_ALPHA: return p->hdr_alpha;
    case STSL_PARAM_OVERSAMPLING: return p->oversampling;
    case STSL_PARAM_FFT_THRESHOLD: return p->fft_threshold;
    default: return 0;
    }
}

/* What both getters check first: a handle, somewhere to write, and a key of the operator's kind. */
static stsl_status gettable_key(const stsl_operator *op, stsl_param key, const void *value, stsl__op_limits *l)
{
    if (!op) return STSL_ERR_INVALID_ARG;
    if (!value) return stsl__fail((char *)op->err, STSL_ERR_INVALID_ARG, "value is NULL");
    return check_key(op, key, l);
}

STSL_API stsl_status stsl_operator_get_int(const stsl_operator *op, stsl_param key, int64_t *value)
{
    stsl__op_limits l;
    stsl_status st = gettable_key(op, key, value, &l);
    if (st != STSL_OK) return st;
    if (!l.is_integer)
        return stsl__fail((char *)op->err, STSL_ERR_INVALID_ARG,
                          "parameter '%s' is real: use stsl_operator_get_float", param_name(key));
    *value = key == STSL_PARAM_SEED ? op->p.seed : (int64_t)get_value(op, key);
    return STSL_OK;
}

STSL_API stsl_status stsl_operator_get_float(const stsl_operator *op, stsl_param key, double *value)
{
    stsl__op_limits l;
    stsl_status st = gettable_key(op, key, value, &l);
    if (st != STSL_OK) return st;
    *value = get_value(op, key);
    return STSL_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Creation                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* ctx may be NULL everywhere below (1 thread, no log sink), as for the other layers. */
static stsl_status new_operator(stsl_context *ctx, stsl_operator_kind kind, stsl_shape input,
                                stsl_operator **out)
{
    stsl_operator *op = stsl__calloc(1, sizeof *op);
    if (!op) return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "out of memory creating an operator");
    op->ctx = ctx;
    op->kind = kind;
    op->in = input;
    op->out = input;
    op->linear = kind != STSL_OP_HDR && kind != STSL_OP_PHASE_RETRIEVAL;
    set_defaults(op);
    *out = op;
    return STSL_OK;
}

STSL_API stsl_status stsl_operator_create(stsl_context *ctx, stsl_operator_kind kind,
                                          stsl_shape input, int factor, stsl_operator **out)
{
    if (out) *out = NULL;
    if (!out) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "out is NULL");
    if (!stsl__op_valid_kind(kind))
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "unknown operator kind %d", (int)kind);
    if (kind == STSL_OP_MATRIX || kind == STSL_OP_CUSTOM)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG,
                              "matrix and custom operators are made with stsl_operator_create_matrix/_custom");
    char err[STSL_ERRMSG_SIZE];
    stsl_status st = stsl__check_shape(err, input);
    if (st != STSL_OK) return stsl__ctx_fail(ctx, st, "operator input: %s", err);
    if (kind == STSL_OP_SR) {
        if (factor < 2 || factor > 16)
            return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "super-resolution factor %d: use 2, 4 or 8",
                                  factor);
        if (input.height % factor || input.width % factor)
            return stsl__ctx_fail(ctx, STSL_ERR_SHAPE,
                                  "super-resolution factor %d does not divide the image size %dx%d",
                                  factor, (int)input.height, (int)input.width);
    }
    stsl_operator *op;
    st = new_operator(ctx, kind, input, &op);
    if (st != STSL_OK) return st;
    if (kind == STSL_OP_SR) op->factor = factor;
    *out = op;
    return STSL_OK;
}

static const struct {
    const char *name;
    stsl_operator_kind kind;
    int factor;
} NAMES[] = {
    {"gaussian-blur", STSL_OP_GAUSSIAN_BLUR, 0}, {"motion-blur", STSL_OP_MOTION_BLUR, 0},
    {"sr2", STSL_OP_SR, 2},                      {"sr4", STSL_OP_SR, 4},
    {"sr8", STSL_OP_SR, 8},                      {"random-inpaint", STSL_OP_RANDOM_INPAINT, 0},
    {"box-inpaint", STSL_OP_BOX_INPAINT, 0},     {"mask-inpaint", STSL_OP_MASK_INPAINT, 0},
    {"salt-pepper", STSL_OP_SALT_PEPPER, 0},     {"denoise", STSL_OP_IDENTITY, 0},
    {"hdr", STSL_OP_HDR, 0},                     {"phase-retrieval", STSL_OP_PHASE_RETRIEVAL, 0},
};

STSL_API const char *stsl_operator_names(void)
{
    return "gaussian-blur motion-blur sr2 sr4 sr8 random-inpaint box-inpaint mask-inpaint "
           "salt-pepper denoise hdr phase-retrieval";
}

STSL_API stsl_status stsl_operator_create_by_name(stsl_context *ctx, const char *name,
                                                  stsl_shape input, stsl_operator **out)
{
    if (out) *out = NULL;
    if (!name) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "operator name is NULL");
    for (size_t i = 0; i < sizeof NAMES / sizeof NAMES[0]; i++)
        if (strcmp(name, NAMES[i].name) == 0)
            return stsl_operator_create(ctx, NAMES[i].kind, input, NAMES[i].factor, out);
    return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "unknown operator '%.64s' (known: %s)", name,
                          stsl_operator_names());
}

STSL_API stsl_status stsl_operator_create_matrix(stsl_context *ctx, stsl_shape input, int rows,
                                                 const float *matrix, stsl_operator **out)
{
    if (out) *out = NULL;
    if (!out) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "out is NULL");
    if (!matrix) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "matrix is NULL");
    char err[STSL_ERRMSG_SIZE];
    stsl_status st = stsl__check_shape(err, input);
    if (st != STSL_OK) return stsl__ctx_fail(ctx, st, "operator input: %s", err);
    if (rows < 1 || rows > STSL_MAX_IMAGE_DIM)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "matrix rows %d out of range [1, %d]", rows,
                              STSL_MAX_IMAGE_DIM);
    size_t d = stsl__shape_size(input), n;
    if (!stsl__mul_size(d, (size_t)rows, &n) || n > ((size_t)1 << 28))
        return stsl__ctx_fail(ctx, STSL_ERR_LIMIT, "matrix %d x %zu is too large", rows, d);
    if (stsl__find_nonfinite(matrix, n) != (size_t)-1)
        return stsl__ctx_fail(ctx, STSL_ERR_NUMERIC, "matrix contains NaN or Inf");
    stsl_operator *op;
    st = new_operator(ctx, STSL_OP_MATRIX, input, &op);
    if (st != STSL_OK) return st;
    op->matrix = stsl__alloc_floats(n);
    if (!op->matrix) {
        stsl__free(op);
        return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "out of memory copying a %d x %zu matrix", rows, d);
    }
    memcpy(op->matrix, matrix, n * sizeof(float));
    op->rows = rows;
    op->out = (stsl_shape){1, 1, rows};
    *out = op;
    return STSL_OK;
}

/* The first published vtable ends with `destroy`; refuse anything shorter. */
#define VTABLE_V1_SIZE (offsetof(stsl_operator_vtable, destroy) + sizeof(void (*)(void *)))

STSL_API stsl_status stsl_operator_create_custom(stsl_context *ctx, stsl_shape input,
                                                 const stsl_operator_vtable *vtable, void *user,
                                                 stsl_operator **out)
{
    if (out) *out = NULL;
    if (!out) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "out is NULL");
    if (!vtable) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "vtable is NULL");
    if (vtable->struct_size < VTABLE_V1_SIZE)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG,
                              "vtable struct_size %zu is smaller than the first version's (%zu)",
                              vtable->struct_size, (size_t)VTABLE_V1_SIZE);
    if (!vtable->forward) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "vtable has no forward callback");
    if (vtable->linear && !vtable->adjoint)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "a linear custom operator needs an adjoint callback");
    if (!vtable->linear && !vtable->vjp)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "a nonlinear custom operator needs a vjp callback");
    char err[STSL_ERRMSG_SIZE];
    stsl_status st = stsl__check_shape(err, input);
    if (st != STSL_OK) return stsl__ctx_fail(ctx, st, "operator input: %s", err);
    st = stsl__check_shape(err, vtable->output);
    if (st != STSL_OK) return stsl__ctx_fail(ctx, st, "custom operator output: %s", err);
    stsl_operator *op;
    st = new_operator(ctx, STSL_OP_CUSTOM, input, &op);
    if (st != STSL_OK) return st;
    /* Copy only what this version knows; a newer caller's extra fields are ignored. */
    memcpy(&op->vt, vtable, sizeof op->vt);
    op->vt.struct_size = sizeof op->vt;
    op->linear = vtable->linear ? 1 : 0;
    op->user = user;
    op->out = vtable->output;
    *out = op;
    return STSL_OK;
}

STSL_API void stsl_operator_destroy(stsl_operator *op)
{
    if (!op) return;
    stsl__devop_free(op->dev);
    if (op->impl && op->impl->release) op->impl->release(op->state);
    if (op->kind == STSL_OP_CUSTOM && op->vt.destroy) op->vt.destroy(op->user);
    stsl__free(op->user_kernel);
    stsl__free(op->user_mask);
    stsl__free(op->matrix);
    stsl__free(op);
}

STSL_API stsl_status stsl_operator_set_kernel(stsl_operator *op, const float *kernel, int size)
{
    if (!op) return STSL_ERR_INVALID_ARG;
    if (op->prepared)
        return stsl__fail(op->err, STSL_ERR_INVALID_ARG, "operator already prepared: the kernel is fixed");
    if (op->kind != STSL_OP_MOTION_BLUR && op->kind != STSL_OP_CONVOLVE)
        return stsl__fail(op->err, STSL_ERR_UNSUPPORTED,
                          "a kernel can be set on motion-blur and convolve operators only");
    if (!kernel) return stsl__fail(op->err, STSL_ERR_INVALID_ARG, "kernel is NULL");
    if (size < 1 || size > STSL_MAX_KERNEL_SIZE || size % 2 == 0)
        return stsl__fail(op->err, STSL_ERR_INVALID_ARG, "kernel size %d: must be odd, 1..%d", size,
                          STSL_MAX_KERNEL_SIZE);
    size_t n = (size_t)size * (size_t)size;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(kernel[i]))
            return stsl__fail(op->err, STSL_ERR_NUMERIC, "kernel value %zu is NaN or Inf", i);
        sum += kernel[i];
    }
    if (sum == 0 || !isfinite(sum))
        return stsl__fail(op->err, STSL_ERR_INVALID_ARG, "kernel sums to 0: cannot be normalised");
    float *k = stsl__alloc_floats(n);
    if (!k) return stsl__fail(op->err, STSL_ERR_NOMEM, "out of memory copying a %dx%d kernel", size, size);
    for (size_t i = 0; i < n; i++) k[i] = (float)(kernel[i] / sum);
    stsl__free(op->user_kernel);
    op->user_kernel = k;
    op->user_kernel_size = size;
    return STSL_OK;
}

STSL_API stsl_status stsl_operator_set_mask(stsl_operator *op, const float *mask, size_t count)
{
    if (!op) return STSL_ERR_INVALID_ARG;
    if (op->prepared)
        return stsl__fail(op->err, STSL_ERR_INVALID_ARG, "operator already prepared: the mask is fixed");
    if (op->kind != STSL_OP_MASK_INPAINT)
        return stsl__fail(op->err, STSL_ERR_UNSUPPORTED, "a mask can be set on mask-inpaint operators only");
    if (!mask) return stsl__fail(op->err, STSL_ERR_INVALID_ARG, "mask is NULL");
    size_t hw = (size_t)op->in.height * (size_t)op->in.width, chw = stsl__shape_size(op->in);
    if (count != hw && count != chw)
        return stsl__fail(op->err, STSL_ERR_SHAPE,
                          "mask has %zu values; expected height*width = %zu or channels*height*width = %zu",
                          count, hw, chw);
    float *m = stsl__alloc_floats(chw);
    if (!m) return stsl__fail(op->err, STSL_ERR_NOMEM, "out of memory copying the mask");
    for (size_t i = 0; i < chw; i++) {
        float v = mask[count == chw ? i : i % hw];
        m[i] = v >= 0.5f ? 1.0f : 0.0f;   /* NaN counts as missing */
    }
    stsl__free(op->user_mask);
    op->user_mask = m;
    return STSL_OK;
}

/* ---- matrix and custom implementations ---- */

static stsl_status matrix_forward(const stsl_operator *op, const float *x, float *y, int batch,
                                  char *err)
{
    (void)err;
    size_t d = stsl__shape_size(op->in);
    for (int b = 0; b < batch; b++)
        for (int r = 0; r < op->rows; r++) {
            const float *m = op->matrix + (size_t)r * d, *xb = x + (size_t)b * d;
            double s = 0;
            for (size_t j = 0; j < d; j++) s += (double)m[j] * xb[j];
            y[(size_t)b * op->rows + r] = (float)s;
        }
    return STSL_OK;
}

static stsl_status matrix_adjoint(const stsl_operator *op, const float *y, float *x, int batch,
                                  char *err)
{
    size_t d = stsl__shape_size(op->in);
    double *acc = stsl__alloc_doubles(d);
    if (!acc) return stsl__fail(err, STSL_ERR_NOMEM, "out of memory in matrix adjoint");
    for (int b = 0; b < batch; b++) {
        memset(acc, 0, d * sizeof *acc);
        for (int r = 0; r < op->rows; r++) {
            const float *m = op->matrix + (size_t)r * d;
            double v = y[(size_t)b * op->rows + r];
            for (size_t j = 0; j < d; j++) acc[j] += m[j] * v;
        }
        for (size_t j = 0; j < d; j++) x[(size_t)b * d + j] = (float)acc[j];
    }
    stsl__free(acc);
    return STSL_OK;
}

static void matrix_describe(const stsl_operator *op, stsl__devop_desc *d)
{
    d->kind = STSL__DEVOP_MATRIX;
    d->values = op->matrix;
}

static const stsl__op_impl MATRIX_IMPL = {matrix_forward, matrix_adjoint, NULL, NULL, NULL, 0, matrix_describe};

static stsl_status custom_forward(const stsl_operator *op, const float *x, float *y, int batch,
                                  char *err)
{
    int rc = op->vt.forward(op->user, x, y, batch);
    return rc ? stsl__fail(err, STSL_ERR_INTERNAL, "custom forward callback failed (code %d)", rc) : STSL_OK;
}

static stsl_status custom_adjoint(const stsl_operator *op, const float *y, float *x, int batch,
                                  char *err)
{
    int rc = op->vt.adjoint(op->user, y, x, batch);
    return rc ? stsl__fail(err, STSL_ERR_INTERNAL, "custom adjoint callback failed (code %d)", rc) : STSL_OK;
}

static stsl_status custom_vjp(const stsl_operator *op, const float *x, const float *v, float *out,
                              int batch, char *err)
{
    int rc = op->vt.vjp ? op->vt.vjp(op->user, x, v, out, batch) : op->vt.adjoint(op->user, v, out, batch);
    return rc ? stsl__fail(err, STSL_ERR_INTERNAL, "custom vjp callback failed (code %d)", rc) : STSL_OK;
}

/* A nonlinear custom operator without an adjoint has no cheap inverse: start from zeros. */
static stsl_status custom_backproject(const stsl_operator *op, const float *y, float *x, int batch,
                                      char *err)
{
    if (op->vt.adjoint) return custom_adjoint(op, y, x, batch, err);
    memset(x, 0, (size_t)batch * stsl__shape_size(op->in) * sizeof(float));
    return STSL_OK;
}

/* User callbacks stay on the host (no describe). */
static const stsl__op_impl CUSTOM_LINEAR_IMPL = {custom_forward, custom_adjoint, custom_vjp,
                                                 custom_backproject, NULL, 0, NULL};
static const stsl__op_impl CUSTOM_NONLINEAR_IMPL = {custom_forward, NULL, custom_vjp,
                                                    custom_backproject, NULL, 0, NULL};

/* ------------------------------------------------------------------------------------------ */
/* Where the maps run: the C code of op->impl, or libtorch ops (op->dev, models/device_ops.h)   */
/* ------------------------------------------------------------------------------------------ */

/* The prepared map as libtorch ops on CUDA device `index` or the CPU (STSL__DEVOP_CPU). */
static stsl_status attach_device(stsl_operator *op, int index)
{
    if (!op->impl->describe)
        return stsl__fail(op->err, STSL_ERR_UNSUPPORTED,
                          "operator kind %d calls the user's callbacks: it runs on the host only", (int)op->kind);
    stsl__devop_desc d;
    memset(&d, 0, sizeof d);
    d.in = op->in;
    d.out = op->out;
    op->impl->describe(op, &d);
    stsl__devop *dev;
    char msg[STSL_ERRMSG_SIZE];
    stsl_status st = stsl__devop_create(&d, index, &dev, msg);
    if (st != STSL_OK)
        return stsl__fail(op->err, st, "operator kind %d cannot run on the device: %s", (int)op->kind, msg);
    stsl__devop_free(op->dev);
    op->dev = dev;
    return STSL_OK;
}

stsl_status stsl__operator_use_device(stsl_operator *op, int device_index)
{
    if (!op) return STSL_ERR_INVALID_ARG;
    stsl_status st = stsl_operator_prepare(op);
    if (st != STSL_OK) return st;
    if (device_index == STSL__DEVOP_HOST) {
        stsl__devop_free(op->dev);
        op->dev = NULL;
        return STSL_OK;
    }
    if (device_index < STSL__DEVOP_CPU)
        return stsl__fail(op->err, STSL_ERR_INVALID_ARG, "device index %d: use -2 (C code), -1 (CPU) or a GPU",
                          device_index);
    return attach_device(op, device_index);
}

static stsl_status run_forward(const stsl_operator *op, const float *x, float *y, int batch, char *err)
{
    if (op->dev)
        return stsl__devop_apply(op->dev, STSL__DEVOP_FORWARD, x, NULL, y, batch, stsl__ctx_threads(op->ctx), err);
    return op->impl->forward(op, x, y, batch, err);
}

static stsl_status run_adjoint(const stsl_operator *op, const float *y, float *x, int batch, char *err)
{
    if (op->dev)
        return stsl__devop_apply(op->dev, STSL__DEVOP_ADJOINT, NULL, y, x, batch, stsl__ctx_threads(op->ctx), err);
    return op->impl->adjoint(op, y, x, batch, err);
}

/* J^T v at x (x unused, may be NULL, for a linear operator) */
static stsl_status run_vjp(const stsl_operator *op, const float *x, const float *v, float *out, int batch,
                           char *err)
{
    if (op->dev)
        return stsl__devop_apply(op->dev, STSL__DEVOP_VJP, x, v, out, batch, stsl__ctx_threads(op->ctx), err);
    return op->impl->vjp ? op->impl->vjp(op, x, v, out, batch, err) : op->impl->adjoint(op, v, out, batch, err);
}

/* ------------------------------------------------------------------------------------------ */
/* Prepare and queries                                                                         */
/* ------------------------------------------------------------------------------------------ */

STSL_API stsl_status stsl_operator_prepare(stsl_operator *op)
{
    if (!op) return STSL_ERR_INVALID_ARG;
    if (op->prepared) return STSL_OK;
    stsl_status st;
    switch (op->kind) {
    case STSL_OP_GAUSSIAN_BLUR:
    case STSL_OP_MOTION_BLUR:
    case STSL_OP_CONVOLVE: st = stsl__op_prepare_conv(op); break;
    case STSL_OP_SR: st = stsl__op_prepare_resize(op); break;
    case STSL_OP_IDENTITY:
    case STSL_OP_SALT_PEPPER:
    case STSL_OP_RANDOM_INPAINT:
    case STSL_OP_BOX_INPAINT:
    case STSL_OP_MASK_INPAINT:
    case STSL_OP_HDR: st = stsl__op_prepare_pointwise(op); break;
    case STSL_OP_PHASE_RETRIEVAL: st = stsl__op_prepare_phase(op); break;
    case STSL_OP_MATRIX: op->impl = &MATRIX_IMPL; st = STSL_OK; break;
    case STSL_OP_CUSTOM:
        op->impl = op->linear ? &CUSTOM_LINEAR_IMPL : &CUSTOM_NONLINEAR_IMPL;
        st = STSL_OK;
        break;
    default: st = stsl__fail(op->err, STSL_ERR_INTERNAL, "operator kind %d has no implementation", (int)op->kind);
    }
    /* On a CUDA context the maps run there (user callbacks excepted); "cuda" without a GPU fails
     * here, "auto" without one keeps the C code. */
    if (st == STSL_OK && op->impl->describe) {
        int target = stsl__devop_target(op->ctx);
        if (target != STSL__DEVOP_HOST) st = attach_device(op, target);
    }
    if (st != STSL_OK) {
        if (op->impl && op->impl->release) op->impl->release(op->state);
        op->impl = NULL;
        op->state = NULL;
        return st;
    }
    op->prepared = 1;
    stsl__log(op->ctx, STSL_LOG_DEBUG, "operator kind %d prepared: %dx%dx%d -> %dx%dx%d, on %s%s", (int)op->kind,
              (int)op->in.channels, (int)op->in.height, (int)op->in.width, (int)op->out.channels,
              (int)op->out.height, (int)op->out.width, op->dev ? stsl__devop_device(op->dev) : "the host",
              op->dev ? " (libtorch ops)" : "");
    return STSL_OK;
}

STSL_API stsl_status stsl_operator_input_shape(const stsl_operator *op, stsl_shape *shape)
{
    if (!op) return STSL_ERR_INVALID_ARG;
    if (!shape) return stsl__fail((char *)op->err, STSL_ERR_INVALID_ARG, "shape is NULL");
    *shape = op->in;
    return STSL_OK;
}

STSL_API stsl_status stsl_operator_output_shape(stsl_operator *op, stsl_shape *shape)
{
    if (!op) return STSL_ERR_INVALID_ARG;
    if (!shape) return stsl__fail(op->err, STSL_ERR_INVALID_ARG, "shape is NULL");
    stsl_status st = stsl_operator_prepare(op);
    if (st != STSL_OK) return st;
    *shape = op->out;
    return STSL_OK;
}

STSL_API int stsl_operator_is_linear(stsl_operator *op)
{
    if (!op) return -1;
    return op->linear;
}

STSL_API stsl_operator_kind stsl_operator_get_kind(const stsl_operator *op)
{
    /* No error channel in the signature: NULL maps to the identity kind. */
    return op ? op->kind : STSL_OP_IDENTITY;
}

STSL_API const char *stsl_operator_last_error(const stsl_operator *op)
{
    return op ? op->err : "operator handle is NULL";
}

/* ------------------------------------------------------------------------------------------ */
/* Dispatch                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Shared argument checks; prepares lazily (the header asks the first use to be single-threaded). */
static stsl_status check_call(stsl_operator *op, const void *a, const char *an, const void *b,
                              const char *bn, int batch, char *err)
{
    if (!a) return stsl__fail(err, STSL_ERR_INVALID_ARG, "%s is NULL", an);
    if (!b) return stsl__fail(err, STSL_ERR_INVALID_ARG, "%s is NULL", bn);
    if (batch < 1 || batch > STSL_MAX_BATCH)
        return stsl__fail(err, STSL_ERR_INVALID_ARG, "batch %d out of range [1, %d]", batch, STSL_MAX_BATCH);
    if (!op->prepared) {
        stsl_status st = stsl_operator_prepare(op);
        if (st != STSL_OK) {
            if (err != op->err) memcpy(err, op->err, STSL_ERRMSG_SIZE);
            return st;
        }
    }
    return STSL_OK;
}

/* An input that overlaps the output is copied first, so every implementation may assume
 * distinct buffers (callers do pass one buffer twice, e.g. a gradient written over x). */
static int overlaps(const float *a, size_t na, const float *b, size_t nb)
{
    uintptr_t a0 = (uintptr_t)a, a1 = (uintptr_t)(a + na), b0 = (uintptr_t)b, b1 = (uintptr_t)(b + nb);
    return a0 < b1 && b0 < a1;
}

static stsl_status separate(const float **in, size_t nin, const float *out, size_t nout, float **tmp, char *err)
{
    *tmp = NULL;
    if (!overlaps(*in, nin, out, nout)) return STSL_OK;
    *tmp = stsl__alloc_floats(nin);
    if (!*tmp) return stsl__fail(err, STSL_ERR_NOMEM, "out of memory copying an input that overlaps the output");
    memcpy(*tmp, *in, nin * sizeof(float));
    *in = *tmp;
    return STSL_OK;
}

static size_t n_in(const stsl_operator *op, int batch) { return (size_t)batch * stsl__shape_size(op->in); }
static size_t n_out(const stsl_operator *op, int batch) { return (size_t)batch * stsl__shape_size(op->out); }

/* J^T v at x into out, for linear and nonlinear operators alike (after check_call). */
static stsl_status apply_vjp(stsl_operator *op, const float *x, const float *v, float *out, int batch, char *err)
{
    float *t1 = NULL, *t2 = NULL;
    stsl_status st = separate(&v, n_out(op, batch), out, n_in(op, batch), &t1, err);
    if (st == STSL_OK && op->impl->vjp) st = separate(&x, n_in(op, batch), out, n_in(op, batch), &t2, err);
    if (st == STSL_OK) st = run_vjp(op, x, v, out, batch, err);
    stsl__free(t1);
    stsl__free(t2);
    return st;
}

stsl_status stsl__operator_forward(stsl_operator *op, const float *x, float *y, int batch, char *err)
{
    stsl_status st = check_call(op, x, "x", y, "y", batch, err);
    if (st != STSL_OK) return st;
    float *tmp;
    if ((st = separate(&x, n_in(op, batch), y, n_out(op, batch), &tmp, err)) != STSL_OK) return st;
    st = run_forward(op, x, y, batch, err);
    stsl__free(tmp);
    return st;
}

static stsl_status operator_adjoint(stsl_operator *op, const float *y, float *x, int batch, char *err)
{
    stsl_status st = check_call(op, y, "y", x, "x", batch, err);
    if (st != STSL_OK) return st;
    if (!op->linear || !op->impl->adjoint)
        return stsl__fail(err, STSL_ERR_UNSUPPORTED,
                          "operator kind %d is nonlinear: it has no adjoint (use stsl_operator_vjp)",
                          (int)op->kind);
    float *tmp;
    if ((st = separate(&y, n_out(op, batch), x, n_in(op, batch), &tmp, err)) != STSL_OK) return st;
    st = run_adjoint(op, y, x, batch, err);
    stsl__free(tmp);
    return st;
}

stsl_status stsl__operator_vjp(stsl_operator *op, const float *x, const float *v, float *out,
                               int batch, char *err)
{
    stsl_status st = check_call(op, v, "v", out, "out", batch, err);
    if (st != STSL_OK) return st;
    /* Linear: J^T v = A^T v whatever x is (x may then be NULL). */
    if (op->impl->vjp && !x)
        return stsl__fail(err, STSL_ERR_INVALID_ARG, "x is NULL (a nonlinear operator's VJP needs it)");
    return apply_vjp(op, x, v, out, batch, err);
}

stsl_status stsl__operator_backproject(stsl_operator *op, const float *y, float *x, int batch,
                                       char *err)
{
    stsl_status st = check_call(op, y, "y", x, "x", batch, err);
    if (st != STSL_OK) return st;
    float *tmp;
    if ((st = separate(&y, n_out(op, batch), x, n_in(op, batch), &tmp, err)) != STSL_OK) return st;
    if (op->impl->backproject)
        st = op->impl->backproject(op, y, x, batch, err);
    else if (op->impl->adjoint)
        st = run_adjoint(op, y, x, batch, err);
    else
        st = stsl__fail(err, STSL_ERR_INTERNAL, "operator kind %d has no back-projection", (int)op->kind);
    stsl__free(tmp);
    return st;
}

STSL_API stsl_status stsl_operator_forward(stsl_operator *op, const float *x, float *y, int batch)
{
    if (!op) return STSL_ERR_INVALID_ARG;
    return stsl__operator_forward(op, x, y, batch, op->err);
}

STSL_API stsl_status stsl_operator_adjoint(stsl_operator *op, const float *y, float *x, int batch)
{
    if (!op) return STSL_ERR_INVALID_ARG;
    return operator_adjoint(op, y, x, batch, op->err);
}

STSL_API stsl_status stsl_operator_vjp(stsl_operator *op, const float *x, const float *v,
                                       float *out, int batch)
{
    if (!op) return STSL_ERR_INVALID_ARG;
    return stsl__operator_vjp(op, x, v, out, batch, op->err);
}

STSL_API stsl_status stsl_operator_backproject(stsl_operator *op, const float *y, float *x,
                                               int batch)
{
    if (!op) return STSL_ERR_INVALID_ARG;
    return stsl__operator_backproject(op, y, x, batch, op->err);
}

/* ------------------------------------------------------------------------------------------ */
/* Noise model: measure and data fit                                                            */
/* ------------------------------------------------------------------------------------------ */

typedef struct noise_job {
    const stsl_operator *op;
    float *y;
    size_t m;
    uint64_t seed;
} noise_job;

enum { NOISE_CHUNK = 4096 };   /* draws per refill of a worker's scratch (2x for impulses) */

/* Per sample: Gaussian noise from its own stream, then (salt-pepper) impulses, so a sample's
 * measurement does not depend on the batch it is in nor on the thread count. */
static void noise_range(void *arg, size_t begin, size_t end, float *buf)
{
    noise_job *j = arg;
    const stsl_operator *op = j->op;
    for (size_t b = begin; b < end; b++) {
        float *y = j->y + b * j->m;
        for (size_t o = 0; o < j->m; o += NOISE_CHUNK) {
            size_t n = j->m - o < NOISE_CHUNK ? j->m - o : NOISE_CHUNK;
            if (op->p.noise_sigma > 0) {
                stsl__rng_normal(j->seed, stsl__stream(STSL_TAG_MEASURE_NOISE, b, 0, 0), o, buf, n);
                float s = (float)op->p.noise_sigma;
                for (size_t i = 0; i < n; i++) y[o + i] += s * buf[i];
            }
            if (op->kind == STSL_OP_SALT_PEPPER && op->p.impulse_fraction > 0) {
                /* two uniforms per value: corrupt?, then pepper (-1) or salt (+1) */
                stsl__rng_uniform(j->seed, stsl__stream(STSL_TAG_IMPULSE, b, 0, 0), 2 * o, buf, 2 * n);
                float f = (float)op->p.impulse_fraction;
                for (size_t i = 0; i < n; i++)
                    if (buf[2 * i] < f) y[o + i] = buf[2 * i + 1] < 0.5f ? -1.0f : 1.0f;
            }
        }
    }
}

STSL_API stsl_status stsl_operator_measure(stsl_operator *op, const float *x, float *y, int batch,
                                           uint64_t seed)
{
    if (!op) return STSL_ERR_INVALID_ARG;
    stsl_status st = stsl__operator_forward(op, x, y, batch, op->err);
    if (st != STSL_OK) return st;
    noise_job j = {.op = op, .y = y, .m = stsl__shape_size(op->out), .seed = seed};
    st = stsl__op_parallel_scratch(op, (size_t)batch, 2 * NOISE_CHUNK, noise_range, &j, "drawing noise",
                                   op->err);
    if (st != STSL_OK) return st;
    if (op->impl->mask_noise && op->p.noise_sigma > 0) {
        /* A is a 0/1 mask, A(Ax + s n) = Ax + s A n: missing pixels stay exactly 0. */
        size_t m = (size_t)batch * j.m;
        float *tmp = stsl__alloc_floats(m);
        if (!tmp) return stsl__fail(op->err, STSL_ERR_NOMEM, "out of memory masking noise");
        memcpy(tmp, y, m * sizeof(float));
        st = run_forward(op, tmp, y, batch, op->err);
        stsl__free(tmp);
    }
    return st;
}

stsl_status stsl__operator_data_fit(stsl_operator *op, const float *y, const float *x, int batch,
                                    double *loss, float *grad_x, char *err)
{
    stsl_status st = check_call(op, y, "y", x, "x", batch, err);
    if (st != STSL_OK) return st;
    size_t m = stsl__shape_size(op->out), total = (size_t)batch * m;
    float *r = stsl__alloc_floats(total);
    if (!r) return stsl__fail(err, STSL_ERR_NOMEM, "out of memory in data_fit (%zu floats)", total);
    st = run_forward(op, x, r, batch, err);
    if (st != STSL_OK) {
        stsl__free(r);
        return st;
    }
    int loss_kind = op->p.loss;
    float delta = (float)op->p.huber_delta;
    /* r <- y - A x, then r <- dl/d(Ax) * (-1) written as psi(r) so grad = scale * J^T psi. */
    for (int b = 0; b < batch; b++) {
        double l = 0;
        float *rb = r + (size_t)b * m;
        const float *yb = y + (size_t)b * m;
        for (size_t i = 0; i < m; i++) {
            float res = yb[i] - rb[i];
            float a = fabsf(res);
            switch (loss_kind) {
            case STSL_LOSS_L1:
                l += a;
                rb[i] = res > 0 ? 1.0f : (res < 0 ? -1.0f : 0.0f);
                break;
            case STSL_LOSS_HUBER:
                if (a <= delta) {
                    l += 0.5 * (double)res * res;
                    rb[i] = res;
                } else {
                    l += (double)delta * (a - 0.5 * delta);
                    rb[i] = res > 0 ? delta : -delta;
                }
                break;
            default:
                l += (double)res * res;
                rb[i] = 2.0f * res;
                break;
            }
        }
        if (!isfinite(l)) {
            stsl__free(r);
            return stsl__fail(err, STSL_ERR_NUMERIC, "data-fit loss of sample %d is not finite", b);
        }
        if (loss) loss[b] = l;
    }
    if (grad_x) {
        st = apply_vjp(op, x, r, grad_x, batch, err);
        if (st == STSL_OK) {
            size_t n = (size_t)batch * stsl__shape_size(op->in);
            for (size_t i = 0; i < n; i++) grad_x[i] = -grad_x[i];
        }
    }
    stsl__free(r);
    return st;
}

STSL_API stsl_status stsl_operator_data_fit(stsl_operator *op, const float *y, const float *x,
                                            int batch, double *loss, float *grad_x)
{
    if (!op) return STSL_ERR_INVALID_ARG;
    return stsl__operator_data_fit(op, y, x, batch, loss, grad_x, op->err);
}
