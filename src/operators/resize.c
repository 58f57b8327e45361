/*
 * resize.c -- super-resolution operators: y = R_v X R_h^T per channel, with R a sparse
 * resampling matrix per axis built as the DPS reference's Resizer (Shocher's MATLAB-imresize
 * port): cubic kernel a = -0.5 (or box), widened by the factor when downscaling (antialiasing),
 * weights normalised per output, and out-of-range taps mirrored with edge repeat
 * (MATLAB's symmetric padding).  Adjoint: X = R_v^T Y R_h.  Back-projection: the same Resizer
 * upscaling by the factor (bicubic, or nearest for the box filter).
 */
#include "operators/operator_internal.h"

#include <math.h>
#include <string.h>

/* One axis: out_len rows of `taps` (index, weight) pairs. */
typedef struct axis_table {
    int in_len, out_len, taps;
    int *idx;
    float *w;
} axis_table;

typedef struct resize_state {
    int C, H, W, h, w;
    axis_table down_v, down_h, up_v, up_h;
} resize_state;

static void table_free(axis_table *t)
{
    stsl__free(t->idx);
    stsl__free(t->w);
}

static void resize_release(void *state)
{
    resize_state *s = state;
    if (!s) return;
    table_free(&s->down_v);
    table_free(&s->down_h);
    table_free(&s->up_v);
    table_free(&s->up_h);
    stsl__free(s);
}

static double cubic(double x)
{
    double a = fabs(x), a2 = a * a, a3 = a2 * a;
    if (a <= 1) return 1.5 * a3 - 2.5 * a2 + 1;
    if (a <= 2) return -0.5 * a3 + 2.5 * a2 - 4 * a + 2;
    return 0;
}

static double box(double x) { return (x >= -0.5 && x < 0.5) ? 1.0 : 0.0; }

/* Symmetric mirror with edge repeat: ... 1 0 | 0 1 ... n-1 | n-1 n-2 ..., period 2n. */
static int mirror(int p, int n)
{
    int q = p % (2 * n);
    if (q < 0) q += 2 * n;
    return q < n ? q : 2 * n - 1 - q;
}

/* Resizer.contributions(): scale = out/in; the kernel is widened by 1/scale when scale < 1. */
static int build_table(axis_table *t, int in_len, int out_len, double scale, int bicubic)
{
    double (*kern)(double) = bicubic ? cubic : box;
    double kw = bicubic ? 4.0 : 1.0;
    int antialias = scale < 1.0;
    if (antialias) kw /= scale;
    int taps = (int)ceil(kw) + 2;
    t->in_len = in_len;
    t->out_len = out_len;
    t->taps = taps;
    t->idx = stsl__malloc((size_t)out_len * taps * sizeof(int));
    t->w = stsl__alloc_floats((size_t)out_len * taps);
    if (!t->idx || !t->w) return 0;
    double *wd = stsl__alloc_doubles((size_t)taps);
    if (!wd) return 0;
    for (int i = 0; i < out_len; i++) {
        /* 1-based centre of output pixel i+1 in input coordinates */
        double match = (i + 1) / scale + 0.5 * (1.0 - 1.0 / scale);
        int left = (int)floor(match - kw / 2.0);
        double sum = 0;
        for (int k = 0; k < taps; k++) {
            int fov = left + k - 1;            /* 0-based input index */
            double d = match - fov - 1;        /* distance in input pixels */
            double v = antialias ? scale * kern(scale * d) : kern(d);
            wd[k] = v;
            sum += v;
        }
        if (sum == 0) sum = 1;
        for (int k = 0; k < taps; k++) {
            t->idx[(size_t)i * taps + k] = mirror(left + k - 1, in_len);
            t->w[(size_t)i * taps + k] = (float)(wd[k] / sum);
        }
    }
    stsl__free(wd);
    return 1;
}

/* out (V.out x H.out) = V * in (V.in x H.in) * H^T;  tmp: V.in x H.out */
static void apply_fwd(const axis_table *V, const axis_table *Hh, const float *in, float *out, float *tmp)
{
    int hin = V->in_len, win = Hh->in_len, wout = Hh->out_len;
    for (int r = 0; r < hin; r++) {
        const float *ir = in + (size_t)r * win;
        float *tr = tmp + (size_t)r * wout;
        for (int j = 0; j < wout; j++) {
            const int *ix = Hh->idx + (size_t)j * Hh->taps;
            const float *w = Hh->w + (size_t)j * Hh->taps;
            float acc = 0;
            for (int k = 0; k < Hh->taps; k++) acc += w[k] * ir[ix[k]];
            tr[j] = acc;
        }
    }
    for (int i = 0; i < V->out_len; i++) {
        float *orow = out + (size_t)i * wout;
        memset(orow, 0, (size_t)wout * sizeof(float));
        const int *ix = V->idx + (size_t)i * V->taps;
        const float *w = V->w + (size_t)i * V->taps;
        for (int k = 0; k < V->taps; k++) {
            if (w[k] == 0.0f) continue;
            const float *tr = tmp + (size_t)ix[k] * wout;
            for (int j = 0; j < wout; j++) orow[j] += w[k] * tr[j];
        }
    }
}

/* in (V.in x H.in) = V^T * out * H, the exact transpose of apply_fwd. */
static void apply_adj(const axis_table *V, const axis_table *Hh, const float *out, float *in, float *tmp)
{
    int hin = V->in_len, win = Hh->in_len, wout = Hh->out_len;
    memset(tmp, 0, (size_t)hin * wout * sizeof(float));
    for (int i = 0; i < V->out_len; i++) {
        const float *orow = out + (size_t)i * wout;
        const int *ix = V->idx + (size_t)i * V->taps;
        const float *w = V->w + (size_t)i * V->taps;
        for (int k = 0; k < V->taps; k++) {
            if (w[k] == 0.0f) continue;
            float *tr = tmp + (size_t)ix[k] * wout;
            for (int j = 0; j < wout; j++) tr[j] += w[k] * orow[j];
        }
    }
    for (int r = 0; r < hin; r++) {
        float *ir = in + (size_t)r * win;
        const float *tr = tmp + (size_t)r * wout;
        memset(ir, 0, (size_t)win * sizeof(float));
        for (int j = 0; j < wout; j++) {
            const int *ix = Hh->idx + (size_t)j * Hh->taps;
            const float *w = Hh->w + (size_t)j * Hh->taps;
            for (int k = 0; k < Hh->taps; k++) ir[ix[k]] += w[k] * tr[j];
        }
    }
}

enum { MODE_DOWN, MODE_ADJ, MODE_UP };

static void resize_plane(const void *state, int mode, const float *in, const float *v, float *out,
                         float *tmp)
{
    const resize_state *s = state;
    (void)v;
    switch (mode) {
    case MODE_DOWN: apply_fwd(&s->down_v, &s->down_h, in, out, tmp); break;
    case MODE_ADJ: apply_adj(&s->down_v, &s->down_h, in, out, tmp); break;
    default: apply_fwd(&s->up_v, &s->up_h, in, out, tmp); break;
    }
}

static stsl_status resize_run(const stsl_operator *op, const float *in, float *out, int batch, int mode,
                              char *err)
{
    const resize_state *s = op->state;
    const size_t big = (size_t)s->H * s->W, small = (size_t)s->h * s->w;
    const stsl__planes p = {resize_plane, s, mode, in, NULL, out, mode == MODE_DOWN ? big : small, 0,
                            mode == MODE_DOWN ? small : big};
    /* scratch: the largest intermediate, H x W (upsampling: h x W) */
    return stsl__op_run_planes(op, (size_t)batch * s->C, big, &p, "in resize", err);
}

static stsl_status sr_forward(const stsl_operator *op, const float *x, float *y, int batch, char *err)
{
    return resize_run(op, x, y, batch, MODE_DOWN, err);
}

static stsl_status sr_adjoint(const stsl_operator *op, const float *y, float *x, int batch, char *err)
{
    return resize_run(op, y, x, batch, MODE_ADJ, err);
}

static stsl_status sr_backproject(const stsl_operator *op, const float *y, float *x, int batch, char *err)
{
    return resize_run(op, y, x, batch, MODE_UP, err);
}

static stsl__devop_axis devop_axis(const axis_table *t)
{
    return (stsl__devop_axis){t->out_len, t->taps, t->idx, t->w};
}

/* The device path resamples with the same tables (the back-projection stays in C: once a run). */
static void sr_describe(const stsl_operator *op, stsl__devop_desc *d)
{
    const resize_state *s = op->state;
    d->kind = STSL__DEVOP_RESAMPLE;
    d->v = devop_axis(&s->down_v);
    d->h = devop_axis(&s->down_h);
}

static const stsl__op_impl SR_IMPL = {sr_forward, sr_adjoint, NULL, sr_backproject, resize_release, 0,
                                      sr_describe};

stsl_status stsl__op_prepare_resize(stsl_operator *op)
{
    int f = op->factor;
    resize_state *s = stsl__op_new_state(op, sizeof *s, &SR_IMPL);
    if (!s) return stsl__fail(op->err, STSL_ERR_NOMEM, "out of memory preparing super-resolution");
    s->C = op->in.channels;
    s->H = op->in.height;
    s->W = op->in.width;
    s->h = s->H / f;
    s->w = s->W / f;
    int bic = op->p.sr_filter == STSL_SR_BICUBIC;
    if (!build_table(&s->down_v, s->H, s->h, 1.0 / f, bic) || !build_table(&s->down_h, s->W, s->w, 1.0 / f, bic) ||
        !build_table(&s->up_v, s->h, s->H, f, bic) || !build_table(&s->up_h, s->w, s->W, f, bic))
        return stsl__fail(op->err, STSL_ERR_NOMEM, "out of memory preparing super-resolution tables");
    op->out = (stsl_shape){op->in.channels, s->h, s->w};
    return STSL_OK;
}
