/*
 * conv.c -- blur operators: y = K * x with a reflect or zero boundary.
 *
 * Convention (as the DPS reference: ReflectionPad2d then conv2d): the image is padded by the
 * kernel radius r with the boundary rule, then cross-correlated with K over the valid region:
 *     y[i][j] = sum_{a,b} K[a][b] xpad[i+a][j+b],   xpad[p][q] = x[refl(p-r)][refl(q-r)].
 * So A = C P with P the padding matrix; the adjoint is P^T C^T: a full convolution into the
 * padded buffer, then scattered back through the same reflection indices (exact for both
 * boundaries).  Three paths compute it: separable 1-D passes (Gaussian), direct 2-D (small
 * general kernels) and FFTW r2c/c2r on a zero-extended buffer large enough that the circular
 * correlation has no wrap-around (large general kernels).
 */
#include "operators/operator_internal.h"

#include <fftw3.h>
#include <math.h>
#include <string.h>

typedef struct conv_state {
    int C, H, W;
    int r, k;              /* radius, width 2r+1 of the (effective) kernel */
    int Hp, Wp;            /* padded sizes H+2r, W+2r */
    int *rmap, *cmap;      /* padded row/col -> source index or -1 (zero) */
    int separable;
    float *w1, *w1f;       /* separable: k taps, and reversed (adjoint) */
    float *kernel, *kflip; /* general: k*k, and rotated by 180 degrees (adjoint) */
    int use_fft;
    int N1, N2;            /* FFT grid */
    fftwf_plan fwd, inv;
    float *kspec;          /* N1*(N2/2+1) complex, interleaved, includes 1/(N1 N2) */
    void *kspec_raw;
} conv_state;

static void conv_release(void *state)
{
    conv_state *s = state;
    if (!s) return;
    stsl__fftw_destroy_plans(s->fwd, s->inv);
    stsl__free(s->rmap);
    stsl__free(s->cmap);
    stsl__free(s->w1);
    stsl__free(s->w1f);
    stsl__free(s->kernel);
    stsl__free(s->kflip);
    stsl__free(s->kspec_raw);
    stsl__free(s);
}

/* ---- per-plane kernels: `scratch` is sized by scratch_floats() ---- */

/* Scratch per plane.  Separable: the row-filtered plane (Hp x W, forward uses H rows) plus one
 * extended row; direct: the padded plane plus (adjoint) the zero-extended measurement. */
static size_t scratch_floats(const conv_state *s)
{
    if (s->use_fft) return (size_t)s->N1 * s->N2 + 2 * (size_t)s->N1 * (s->N2 / 2 + 1) + 64;
    if (s->separable) return (size_t)s->Hp * s->W + (size_t)s->W + 4 * (size_t)s->r + (size_t)s->Wp;
    return (size_t)s->Hp * s->Wp + (size_t)(s->H + 4 * s->r) * (s->W + 4 * s->r);
}

/* Every filter below is a gather "out[j] = sum_b w[b] in[j + b]" with the sum in ascending b,
 * computed in blocks of 16 outputs held in four 4-float registers: one load per tap and vector
 * instead of the load/store of an axpy per tap.  GCC/Clang vector extensions; other compilers get
 * the same arithmetic in plain C. */
#if defined(__GNUC__)
typedef float v4 __attribute__((vector_size(16)));
typedef struct acc16 {
    v4 a0, a1, a2, a3;
} acc16;
static inline v4 ld4(const float *p)
{
    v4 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void acc_zero(acc16 *a) { a->a0 = a->a1 = a->a2 = a->a3 = (v4){0, 0, 0, 0}; }
static inline void acc_add(acc16 *a, float w, const float *src)
{
    a->a0 += w * ld4(src);
    a->a1 += w * ld4(src + 4);
    a->a2 += w * ld4(src + 8);
    a->a3 += w * ld4(src + 12);
}
static inline void acc_store(const acc16 *a, float *out)
{
    memcpy(out, &a->a0, 16);
    memcpy(out + 4, &a->a1, 16);
    memcpy(out + 8, &a->a2, 16);
    memcpy(out + 12, &a->a3, 16);
}
#else
typedef struct acc16 {
    float v[16];
} acc16;
static inline void acc_zero(acc16 *a) { memset(a, 0, sizeof *a); }
static inline void acc_add(acc16 *a, float w, const float *src)
{
    for (int t = 0; t < 16; t++) a->v[t] += w * src[t];
}
static inline void acc_store(const acc16 *a, float *out) { memcpy(out, a->v, sizeof a->v); }
#endif
#define BLK 16

static void corr_row(const float *in, const float *w, int k, float *out, int n)
{
    int j = 0;
    for (; j + BLK <= n; j += BLK) {
        acc16 acc;
        acc_zero(&acc);
        for (int b = 0; b < k; b++) acc_add(&acc, w[b], in + j + b);
        acc_store(&acc, out + j);
    }
    for (; j < n; j++) {
        float acc = 0;
        for (int b = 0; b < k; b++) acc += w[b] * in[j + b];
        out[j] = acc;
    }
}

/* out[j] = sum_b w[b] rows[b][j]; a NULL row is zero. */
static void corr_rows(const float *const *rows, const float *w, int k, float *out, int n)
{
    int j = 0;
    for (; j + BLK <= n; j += BLK) {
        acc16 acc;
        acc_zero(&acc);
        for (int b = 0; b < k; b++)
            if (rows[b]) acc_add(&acc, w[b], rows[b] + j);
        acc_store(&acc, out + j);
    }
    for (; j < n; j++) {
        float acc = 0;
        for (int b = 0; b < k; b++)
            if (rows[b]) acc += w[b] * rows[b][j];
        out[j] = acc;
    }
}

/* 2-D: out[i][j] = sum_{a,b} K[a][b] in[i+a][j+b] for an n1 x n2 output, in with row stride ld. */
static void corr_2d(const float *in, int ld, const float *K, int k, float *out, int n1, int n2)
{
    for (int i = 0; i < n1; i++) {
        float *o = out + (size_t)i * n2;
        int j = 0;
        for (; j + BLK <= n2; j += BLK) {
            acc16 acc;
            acc_zero(&acc);
            for (int a = 0; a < k; a++) {
                const float *row = in + (size_t)(i + a) * ld + j;
                const float *kr = K + (size_t)a * k;
                for (int b = 0; b < k; b++) acc_add(&acc, kr[b], row + b);
            }
            acc_store(&acc, o + j);
        }
        for (; j < n2; j++) {
            float acc = 0;
            for (int a = 0; a < k; a++)
                for (int b = 0; b < k; b++) acc += K[(size_t)a * k + b] * in[(size_t)(i + a) * ld + j + b];
            o[j] = acc;
        }
    }
}

/* Padding and its transpose.  The interior columns [r, r + W) map to 0..W-1 in order, so only
 * the 2r border columns go through the index map. */
static void pad_plane(const conv_state *s, const float *x, float *p, int ld)
{
    int r = s->r, W = s->W;
    for (int pi = 0; pi < s->Hp; pi++) {
        float *row = p + (size_t)pi * ld;
        int src = s->rmap[pi];
        if (src < 0) {
            memset(row, 0, (size_t)s->Wp * sizeof(float));
            continue;
        }
        const float *xr = x + (size_t)src * W;
        memcpy(row + r, xr, (size_t)W * sizeof(float));
        for (int pj = 0; pj < r; pj++) {
            int c0 = s->cmap[pj], c1 = s->cmap[r + W + pj];
            row[pj] = c0 < 0 ? 0.0f : xr[c0];
            row[r + W + pj] = c1 < 0 ? 0.0f : xr[c1];
        }
    }
}

/* x = P^T buf: each padded value goes back to the pixel it was copied from. */
static void fold_plane(const conv_state *s, const float *p, int ld, float *x)
{
    int r = s->r, W = s->W;
    memset(x, 0, (size_t)s->H * W * sizeof(float));
    for (int pi = 0; pi < s->Hp; pi++) {
        int dst = s->rmap[pi];
        if (dst < 0) continue;
        const float *row = p + (size_t)pi * ld;
        float *xr = x + (size_t)dst * W;
        for (int j = 0; j < W; j++) xr[j] += row[r + j];
        for (int pj = 0; pj < r; pj++) {
            int c0 = s->cmap[pj], c1 = s->cmap[r + W + pj];
            if (c0 >= 0) xr[c0] += row[pj];
            if (c1 >= 0) xr[c1] += row[r + W + pj];
        }
    }
}

/* Forward: rows filtered with the horizontal padding, then columns with the vertical one. */
static void sep_forward(const conv_state *s, const float *x, float *y, float *scratch)
{
    int H = s->H, W = s->W, k = s->k;
    float *t = scratch, *prow = scratch + (size_t)s->Hp * W;
    const float *rows[2 * STSL_MAX_KERNEL_SIZE];
    for (int i = 0; i < H; i++) {
        const float *xr = x + (size_t)i * W;
        for (int pj = 0; pj < s->Wp; pj++) prow[pj] = s->cmap[pj] < 0 ? 0.0f : xr[s->cmap[pj]];
        corr_row(prow, s->w1, k, t + (size_t)i * W, W);
    }
    for (int i = 0; i < H; i++) {
        for (int a = 0; a < k; a++) rows[a] = s->rmap[i + a] < 0 ? NULL : t + (size_t)s->rmap[i + a] * W;
        corr_rows(rows, s->w1, k, y + (size_t)i * W, W);
    }
}

/* Adjoint = P_v^T C_v^T then P_h^T C_h^T, each C^T written as a correlation with the flipped taps
 * (w1f) over the zero-extended input, so it runs through the same gather kernels. */
static void sep_adjoint(const conv_state *s, const float *y, float *x, float *scratch)
{
    int H = s->H, W = s->W, k = s->k, r = s->r;
    float *z = scratch;                            /* Hp x W: C_v^T y */
    float *ue = scratch + (size_t)s->Hp * W;       /* W + 4r: zero-extended row */
    float *buf = ue + W + 4 * r;                   /* Wp */
    const float *rows[2 * STSL_MAX_KERNEL_SIZE];
    for (int p = 0; p < s->Hp; p++) {
        for (int b = 0; b < k; b++) {
            int q = p - 2 * r + b;
            rows[b] = (q < 0 || q >= H) ? NULL : y + (size_t)q * W;
        }
        corr_rows(rows, s->w1f, k, z + (size_t)p * W, W);
    }
    /* fold the rows (P_v^T) into x, used as the row-adjoint input */
    memset(x, 0, (size_t)H * W * sizeof(float));
    for (int p = 0; p < s->Hp; p++) {
        int dst = s->rmap[p];
        if (dst < 0) continue;
        float *xr = x + (size_t)dst * W;
        const float *zr = z + (size_t)p * W;
        for (int j = 0; j < W; j++) xr[j] += zr[j];
    }
    memset(ue, 0, (size_t)(W + 4 * r) * sizeof(float));
    for (int i = 0; i < H; i++) {
        float *xr = x + (size_t)i * W;
        memcpy(ue + 2 * r, xr, (size_t)W * sizeof(float));
        corr_row(ue, s->w1f, k, buf, s->Wp);
        memset(xr, 0, (size_t)W * sizeof(float));
        for (int pj = 0; pj < s->Wp; pj++)
            if (s->cmap[pj] >= 0) xr[s->cmap[pj]] += buf[pj];
    }
}

static void direct_forward(const conv_state *s, const float *x, float *y, float *scratch)
{
    pad_plane(s, x, scratch, s->Wp);
    corr_2d(scratch, s->Wp, s->kernel, s->k, y, s->H, s->W);
}

/* C^T y = correlation of the zero-extended y (H+4r x W+4r) with the flipped kernel. */
static void direct_adjoint(const conv_state *s, const float *y, float *x, float *scratch)
{
    int H = s->H, W = s->W, r = s->r, le = W + 4 * r;
    float *p = scratch, *ye = scratch + (size_t)s->Hp * s->Wp;
    memset(ye, 0, (size_t)(H + 4 * r) * le * sizeof(float));
    for (int i = 0; i < H; i++) memcpy(ye + (size_t)(i + 2 * r) * le + 2 * r, y + (size_t)i * W, (size_t)W * sizeof(float));
    corr_2d(ye, le, s->kflip, s->k, p, s->Hp, s->Wp);
    fold_plane(s, p, s->Wp, x);
}

static float *align64(float *p)
{
    return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

static void fft_apply(const conv_state *s, float *buf, float *spec, int conj)
{
    size_t nc = (size_t)s->N1 * (s->N2 / 2 + 1);
    fftwf_execute_dft_r2c(s->fwd, buf, (fftwf_complex *)spec);
    const float *g = s->kspec;
    for (size_t i = 0; i < nc; i++) {
        float ar = spec[2 * i], ai = spec[2 * i + 1];
        float br = g[2 * i], bi = conj ? -g[2 * i + 1] : g[2 * i + 1];
        spec[2 * i] = ar * br - ai * bi;
        spec[2 * i + 1] = ar * bi + ai * br;
    }
    fftwf_execute_dft_c2r(s->inv, (fftwf_complex *)spec, buf);
}

/* The scratch block is 64-aligned (it comes from stsl__op_aligned_floats) and N1*N2 is rounded
 * so that spec stays 64-aligned: the plans were made on buffers with the same alignment. */
static size_t fft_real_floats(const conv_state *s) { return ((size_t)s->N1 * s->N2 + 15) & ~(size_t)15; }

static void fft_forward(const conv_state *s, const float *x, float *y, float *scratch)
{
    float *buf = scratch, *spec = align64(scratch + fft_real_floats(s));
    memset(buf, 0, (size_t)s->N1 * s->N2 * sizeof(float));
    pad_plane(s, x, buf, s->N2);
    fft_apply(s, buf, spec, 0);
    for (int i = 0; i < s->H; i++) memcpy(y + (size_t)i * s->W, buf + (size_t)i * s->N2, (size_t)s->W * sizeof(float));
}

static void fft_adjoint(const conv_state *s, const float *y, float *x, float *scratch)
{
    float *buf = scratch, *spec = align64(scratch + fft_real_floats(s));
    memset(buf, 0, (size_t)s->N1 * s->N2 * sizeof(float));
    for (int i = 0; i < s->H; i++) memcpy(buf + (size_t)i * s->N2, y + (size_t)i * s->W, (size_t)s->W * sizeof(float));
    fft_apply(s, buf, spec, 1);
    fold_plane(s, buf, s->N2, x);
}

static void conv_plane(const void *state, int adjoint, const float *in, const float *v, float *out,
                       float *scratch)
{
    const conv_state *s = state;
    (void)v;
    if (s->use_fft)
        (adjoint ? fft_adjoint : fft_forward)(s, in, out, scratch);
    else if (s->separable)
        (adjoint ? sep_adjoint : sep_forward)(s, in, out, scratch);
    else
        (adjoint ? direct_adjoint : direct_forward)(s, in, out, scratch);
}

static stsl_status conv_run(const stsl_operator *op, const float *in, float *out, int batch,
                            int adjoint, char *err)
{
    const conv_state *s = op->state;
    const size_t plane = (size_t)s->H * s->W;
    const stsl__planes p = {conv_plane, s, adjoint, in, NULL, out, plane, 0, plane};   /* distinct buffers (operator.c) */
    return stsl__op_run_planes(op, (size_t)batch * s->C, scratch_floats(s), &p, "in blur scratch", err);
}

static stsl_status conv_forward(const stsl_operator *op, const float *x, float *y, int batch, char *err)
{
    return conv_run(op, x, y, batch, 0, err);
}

static stsl_status conv_adjoint(const stsl_operator *op, const float *y, float *x, int batch, char *err)
{
    return conv_run(op, y, x, batch, 1, err);
}

/* The device path (models/device_ops.h) uses the same kernel and padding maps, and FFTs of the
 * same size where the C code does (large kernels: a direct conv2d was 40x slower on the CPU). */
static void conv_describe(const stsl_operator *op, stsl__devop_desc *d)
{
    const conv_state *s = op->state;
    d->kind = STSL__DEVOP_CONV;
    d->k = s->k;
    d->separable = s->separable;
    d->values = s->separable ? s->w1 : s->kernel;
    d->rows = s->rmap;
    d->cols = s->cmap;
    if (s->use_fft) {
        d->fft_n1 = s->N1;
        d->fft_n2 = s->N2;
    }
}

static const stsl__op_impl CONV_IMPL = {conv_forward, conv_adjoint, NULL, NULL, conv_release, 0, conv_describe};

static stsl_status make_fft(stsl_operator *op, conv_state *s)
{
    s->N1 = stsl__fft_good_size(s->Hp);
    s->N2 = stsl__fft_good_size(s->Wp);
    while (s->N2 % 2) s->N2 = stsl__fft_good_size(s->N2 + 1);   /* r2c prefers an even last axis */
    size_t nr = (size_t)s->N1 * s->N2, nc = (size_t)s->N1 * (s->N2 / 2 + 1);
    s->kspec = stsl__op_aligned_floats(2 * nc, &s->kspec_raw);
    void *raw;
    float *buf = stsl__op_aligned_floats(scratch_floats(s), &raw);
    if (!s->kspec || !buf) {
        stsl__free(raw);
        return stsl__fail(op->err, STSL_ERR_NOMEM, "out of memory preparing the FFT blur (%dx%d)", s->N1, s->N2);
    }
    float *spec = align64(buf + fft_real_floats(s));
    stsl__fftw_lock();
    s->fwd = fftwf_plan_dft_r2c_2d(s->N1, s->N2, buf, (fftwf_complex *)spec, FFTW_ESTIMATE);
    s->inv = fftwf_plan_dft_c2r_2d(s->N1, s->N2, (fftwf_complex *)spec, buf, FFTW_ESTIMATE);
    stsl__fftw_unlock();
    if (!s->fwd || !s->inv) {
        stsl__free(raw);
        return stsl__fail(op->err, STSL_ERR_INTERNAL, "FFTW could not plan a %dx%d transform", s->N1, s->N2);
    }
    /* Correlation with K is circular convolution with g[-a][-b] = K[a][b]; the 1/(N1 N2) of the
     * unnormalised inverse is folded in here. */
    memset(buf, 0, nr * sizeof(float));
    float scale = 1.0f / (float)nr;
    for (int a = 0; a < s->k; a++)
        for (int b = 0; b < s->k; b++) {
            int i = (s->N1 - a) % s->N1, j = (s->N2 - b) % s->N2;
            buf[(size_t)i * s->N2 + j] = s->kernel[(size_t)a * s->k + b] * scale;
        }
    fftwf_execute_dft_r2c(s->fwd, buf, (fftwf_complex *)s->kspec);
    stsl__free(raw);
    return STSL_OK;
}

stsl_status stsl__op_prepare_conv(stsl_operator *op)
{
    int H = op->in.height, W = op->in.width, side = H < W ? H : W;
    int ksize;
    if (op->kind == STSL_OP_CONVOLVE) {
        if (!op->user_kernel)
            return stsl__fail(op->err, STSL_ERR_INVALID_ARG, "convolve operator needs a kernel: call stsl_operator_set_kernel");
        ksize = op->user_kernel_size;
    } else if (op->kind == STSL_OP_MOTION_BLUR && op->user_kernel) {
        ksize = op->user_kernel_size;
    } else {
        ksize = op->p.kernel_size;
    }
    if (ksize > 2 * side - 1)
        return stsl__fail(op->err, STSL_ERR_SHAPE,
                          "kernel %dx%d is too large for a %dx%d image (at most %d: the radius must be smaller than the image side)",
                          ksize, ksize, H, W, 2 * side - 1);
    conv_state *s = stsl__op_new_state(op, sizeof *s, &CONV_IMPL);
    if (!s) return stsl__fail(op->err, STSL_ERR_NOMEM, "out of memory preparing a blur");
    s->C = op->in.channels;
    s->H = H;
    s->W = W;
    if (op->kind == STSL_OP_GAUSSIAN_BLUR) {
        /* As the DPS reference (scipy.ndimage.gaussian_filter of a delta, truncate = 4): taps
         * beyond 4 sigma are zero, so only the inner radius is stored. */
        double sg = op->p.blur_sigma;
        int r = ksize / 2, rt = (int)(4.0 * sg + 0.5);
        if (rt < r) r = rt;
        s->separable = 1;
        s->r = r;
        s->k = 2 * r + 1;
        s->w1 = stsl__alloc_floats((size_t)s->k);
        s->w1f = stsl__alloc_floats((size_t)s->k);
        if (!s->w1 || !s->w1f) return stsl__fail(op->err, STSL_ERR_NOMEM, "out of memory preparing a blur");
        double sum = 0;
        for (int a = -r; a <= r; a++) sum += exp(-0.5 * a * a / (sg * sg));
        for (int a = -r; a <= r; a++) s->w1[a + r] = (float)(exp(-0.5 * a * a / (sg * sg)) / sum);
        for (int a = 0; a < s->k; a++) s->w1f[a] = s->w1[s->k - 1 - a];
    } else {
        s->r = ksize / 2;
        s->k = ksize;
        s->kernel = stsl__alloc_floats((size_t)ksize * ksize);
        if (!s->kernel) return stsl__fail(op->err, STSL_ERR_NOMEM, "out of memory preparing a blur kernel");
        if (op->user_kernel) {
            memcpy(s->kernel, op->user_kernel, (size_t)ksize * ksize * sizeof(float));
        } else {
            stsl_status st = stsl__op_motion_kernel(ksize, op->p.motion_intensity, (uint64_t)op->p.seed, s->kernel);
            if (st != STSL_OK) return stsl__fail(op->err, st, "out of memory generating the motion-blur kernel");
        }
        s->kflip = stsl__alloc_floats((size_t)ksize * ksize);
        if (!s->kflip) return stsl__fail(op->err, STSL_ERR_NOMEM, "out of memory preparing a blur kernel");
        for (size_t i = 0, n = (size_t)ksize * ksize; i < n; i++) s->kflip[i] = s->kernel[n - 1 - i];
        s->use_fft = ksize >= op->p.fft_threshold;
    }
    s->Hp = H + 2 * s->r;
    s->Wp = W + 2 * s->r;
    s->rmap = stsl__malloc((size_t)s->Hp * sizeof(int));
    s->cmap = stsl__malloc((size_t)s->Wp * sizeof(int));
    if (!s->rmap || !s->cmap) return stsl__fail(op->err, STSL_ERR_NOMEM, "out of memory preparing a blur");
    for (int p = 0; p < s->Hp; p++) s->rmap[p] = stsl__op_boundary_index(p - s->r, H, op->p.boundary);
    for (int p = 0; p < s->Wp; p++) s->cmap[p] = stsl__op_boundary_index(p - s->r, W, op->p.boundary);
    if (s->use_fft) {
        stsl_status st = make_fft(op, s);
        if (st != STSL_OK) return st;
    }
    op->out = op->in;
    return STSL_OK;
}
