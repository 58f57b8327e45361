/*
 * Linear measurement operators: exact adjoints (dot-product test), agreement with independent
 * reference implementations written here, FFT vs direct paths, defaults, the noise model and
 * argument validation.
 */
#include "common/testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static stsl_context *g_ctx;

static stsl_context *ctx(void)
{
    if (!g_ctx) stsl_context_create(&g_ctx);
    return g_ctx;
}

static size_t ssize(stsl_shape s) { return (size_t)s.channels * s.height * s.width; }

/* <A x, y> against <x, A^T y> for a batch of 2, relative to ||A x|| ||y||. */
static void check_adjoint(stsl_operator *op, const char *label, uint64_t seed)
{
    stsl_shape in, out;
    TU_ASSERT_OK(stsl_operator_input_shape(op, &in));
    TU_ASSERT_OK(stsl_operator_output_shape(op, &out));
    size_t n = 2 * ssize(in), m = 2 * ssize(out);
    float *x = malloc(n * sizeof *x), *y = malloc(m * sizeof *y);
    float *ax = malloc(m * sizeof *ax), *aty = malloc(n * sizeof *aty), *v = malloc(n * sizeof *v);
    tu_fill_normal(x, n, seed);
    tu_fill_normal(y, m, seed + 1);
    TU_ASSERT_OK(stsl_operator_forward(op, x, ax, 2));
    TU_ASSERT_OK(stsl_operator_adjoint(op, y, aty, 2));
    double lhs = tu_dot(ax, y, m), rhs = tu_dot(x, aty, n);
    double scale = tu_norm(ax, m) * tu_norm(y, m) + tu_norm(x, n) * tu_norm(aty, n) + 1e-30;
    double rel = fabs(lhs - rhs) / scale;
    if (!(rel < 1e-5))
        fprintf(stderr, "\n  adjoint %s %dx%dx%d: <Ax,y>=%.9g <x,A^Ty>=%.9g rel %.3g\n", label,
                (int)in.channels, (int)in.height, (int)in.width, lhs, rhs, rel);
    CU_ASSERT(rel < 1e-5);
    /* the VJP of a linear operator is its adjoint, whatever x */
    TU_ASSERT_OK(stsl_operator_vjp(op, x, y, v, 2));
    CU_ASSERT(tu_max_abs_diff(v, aty, n) == 0.0);
    free(x), free(y), free(ax), free(aty), free(v);
}

static stsl_operator *make(stsl_operator_kind kind, stsl_shape s, int factor)
{
    stsl_operator *op = NULL;
    TU_ASSERT_OK(stsl_operator_create(ctx(), kind, s, factor, &op));
    return op;
}

static const stsl_shape SHAPES[] = {{1, 1, 1}, {1, 1, 7}, {1, 7, 1}, {3, 13, 5}, {2, 16, 12}, {3, 31, 29}, {1, 40, 48}};
#define NSHAPES (sizeof SHAPES / sizeof SHAPES[0])

static void test_adjoint_blur(void)
{
    for (size_t si = 0; si < NSHAPES; si++) {
        stsl_shape s = SHAPES[si];
        int side = s.height < s.width ? s.height : s.width;
        for (int bd = 0; bd < 2; bd++) {
            stsl_operator *op = make(STSL_OP_GAUSSIAN_BLUR, s, 0);
            TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_BOUNDARY, bd));
            check_adjoint(op, "gaussian default", 10 + si);
            stsl_operator_destroy(op);
            if (side >= 4) {
                op = make(STSL_OP_GAUSSIAN_BLUR, s, 0);
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_BOUNDARY, bd));
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_KERNEL_SIZE, 2 * side - 1));
                TU_ASSERT_OK(stsl_operator_set_float(op, STSL_PARAM_BLUR_SIGMA, side));
                check_adjoint(op, "gaussian max kernel", 20 + si);
                stsl_operator_destroy(op);
            }
            for (int fft = 0; fft < 2; fft++) {
                op = make(STSL_OP_MOTION_BLUR, s, 0);
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_BOUNDARY, bd));
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_FFT_THRESHOLD, fft ? 1 : 1026));
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_SEED, 5));
                check_adjoint(op, fft ? "motion fft" : "motion direct", 30 + si);
                stsl_operator_destroy(op);
                /* an asymmetric random kernel catches a flipped adjoint */
                int k = 2 * side - 1 < 7 ? 2 * side - 1 : 7;
                float kern[49];
                tu_fill_uniform(kern, (size_t)k * k, 77 + si, 0.0f, 1.0f);
                op = make(STSL_OP_CONVOLVE, s, 0);
                TU_ASSERT_OK(stsl_operator_set_kernel(op, kern, k));
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_BOUNDARY, bd));
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_FFT_THRESHOLD, fft ? 1 : 1026));
                check_adjoint(op, fft ? "convolve fft" : "convolve direct", 40 + si);
                stsl_operator_destroy(op);
            }
        }
    }
}

static void test_adjoint_sr(void)
{
    static const stsl_shape shapes[] = {{1, 2, 2}, {3, 4, 8}, {1, 8, 2}, {2, 16, 24}, {3, 24, 40}, {1, 64, 64}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int f = 2; f <= 8; f *= 2) {
            stsl_shape s = shapes[si];
            if (s.height % f || s.width % f) continue;
            for (int filt = 0; filt < 2; filt++) {
                stsl_operator *op = make(STSL_OP_SR, s, f);
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_SR_FILTER, filt));
                check_adjoint(op, filt ? "sr box" : "sr bicubic", 50 + si * 10 + f);
                stsl_shape o;
                TU_ASSERT_OK(stsl_operator_output_shape(op, &o));
                CU_ASSERT(o.channels == s.channels && o.height == s.height / f && o.width == s.width / f);
                stsl_operator_destroy(op);
            }
        }
}


/* Random shapes (seeded, so a failure reproduces), every linear kind, both boundaries. */
static void test_adjoint_random_shapes(void)
{
    float u[4 * 8];
    tu_fill_uniform(u, 32, 2024, 0, 1);
    for (int t = 0; t < 8; t++) {
        stsl_shape s = {1 + (int)(u[4 * t] * 3), 1 + (int)(u[4 * t + 1] * 37), 1 + (int)(u[4 * t + 2] * 37)};
        int side = s.height < s.width ? s.height : s.width;
        int bd = t % 2, k = 2 * (int)(u[4 * t + 3] * side) + 1;   /* odd, <= 2 side - 1 */
        stsl_operator_kind kinds[] = {STSL_OP_GAUSSIAN_BLUR, STSL_OP_MOTION_BLUR, STSL_OP_MOTION_BLUR,
                                      STSL_OP_RANDOM_INPAINT, STSL_OP_BOX_INPAINT};
        for (int q = 0; q < 5; q++) {
            stsl_operator *op = make(kinds[q], s, 0);
            if (kinds[q] == STSL_OP_GAUSSIAN_BLUR || kinds[q] == STSL_OP_MOTION_BLUR) {
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_BOUNDARY, bd));
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_KERNEL_SIZE, k));
            }
            if (kinds[q] == STSL_OP_GAUSSIAN_BLUR) TU_ASSERT_OK(stsl_operator_set_float(op, STSL_PARAM_BLUR_SIGMA, 0.3 + k / 3.0));
            if (q == 2) TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_FFT_THRESHOLD, 1));
            check_adjoint(op, "random shape", 300 + 10 * t + q);
            stsl_operator_destroy(op);
        }
        for (int f = 2; f <= 8; f *= 2) {
            stsl_shape ss = {s.channels, f * (1 + s.height / 4), f * (1 + s.width / 4)};
            stsl_operator *op = make(STSL_OP_SR, ss, f);
            check_adjoint(op, "random sr", 400 + t * 10 + f);
            stsl_operator_destroy(op);
        }
    }
}

static void test_adjoint_pointwise(void)
{
    for (size_t si = 0; si < NSHAPES; si++) {
        stsl_shape s = SHAPES[si];
        stsl_operator_kind kinds[] = {STSL_OP_IDENTITY, STSL_OP_SALT_PEPPER, STSL_OP_RANDOM_INPAINT,
                                      STSL_OP_BOX_INPAINT, STSL_OP_MASK_INPAINT};
        for (int k = 0; k < 5; k++) {
            stsl_operator *op = make(kinds[k], s, 0);
            if (kinds[k] == STSL_OP_MASK_INPAINT) {
                size_t hw = (size_t)s.height * s.width;
                float *mk = malloc(hw * sizeof *mk);
                tu_fill_uniform(mk, hw, 9, 0, 1);
                TU_ASSERT_OK(stsl_operator_set_mask(op, mk, hw));
                free(mk);
            }
            check_adjoint(op, "pointwise", 60 + si);
            stsl_operator_destroy(op);
        }
    }
}

/* ---- matrix and custom ---- */

static void test_matrix(void)
{
    stsl_shape s = {1, 3, 2};
    float M[4 * 6], x[6], y[4];
    tu_fill_normal(M, 24, 3);
    tu_fill_normal(x, 6, 4);
    stsl_operator *op = NULL;
    TU_ASSERT_OK(stsl_operator_create_matrix(ctx(), s, 4, M, &op));
    TU_ASSERT_OK(stsl_operator_forward(op, x, y, 1));
    for (int r = 0; r < 4; r++) {
        double e = 0;
        for (int j = 0; j < 6; j++) e += (double)M[r * 6 + j] * x[j];
        CU_ASSERT(fabs(e - y[r]) < 1e-5);
    }
    stsl_shape o;
    TU_ASSERT_OK(stsl_operator_output_shape(op, &o));
    CU_ASSERT(o.channels == 1 && o.height == 1 && o.width == 4);
    CU_ASSERT_EQUAL(stsl_operator_get_kind(op), STSL_OP_MATRIX);
    check_adjoint(op, "matrix", 5);
    stsl_operator_destroy(op);
    TU_ASSERT_STATUS(stsl_operator_create_matrix(ctx(), s, 0, M, &op), STSL_ERR_INVALID_ARG);
    CU_ASSERT_PTR_NULL(op);
    TU_ASSERT_STATUS(stsl_operator_create_matrix(ctx(), s, 4, NULL, &op), STSL_ERR_INVALID_ARG);
}

typedef struct cuser {
    int destroyed;
    int fail;
} cuser;

/* A = 2 * reversal of the flattened vector */
static int c_fwd(void *u, const float *x, float *y, int batch)
{
    if (((cuser *)u)->fail) return 42;
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < 6; i++) y[b * 6 + i] = 2.0f * x[b * 6 + 5 - i];
    return 0;
}
static int c_adj(void *u, const float *y, float *x, int batch) { return c_fwd(u, y, x, batch); }
static void c_destroy(void *u) { ((cuser *)u)->destroyed++; }

static void test_custom(void)
{
    stsl_shape s = {1, 2, 3};
    cuser u = {0, 0};
    stsl_operator_vtable vt = {sizeof vt, 1, {1, 2, 3}, c_fwd, c_adj, NULL, c_destroy};
    stsl_operator *op = NULL;
    TU_ASSERT_OK(stsl_operator_create_custom(ctx(), s, &vt, &u, &op));
    check_adjoint(op, "custom", 6);
    CU_ASSERT_EQUAL(stsl_operator_is_linear(op), 1);
    float x[6] = {1, 2, 3, 4, 5, 6}, y[6];
    TU_ASSERT_OK(stsl_operator_forward(op, x, y, 1));
    CU_ASSERT(y[0] == 12.0f && y[5] == 2.0f);
    u.fail = 1;
    TU_ASSERT_STATUS(stsl_operator_forward(op, x, y, 1), STSL_ERR_INTERNAL);
    CU_ASSERT(strstr(stsl_operator_last_error(op), "42") != NULL);
    stsl_operator_destroy(op);
    CU_ASSERT_EQUAL(u.destroyed, 1);
    /* an older, shorter vtable is refused, as are missing callbacks */
    stsl_operator_vtable bad = vt;
    bad.struct_size = sizeof(size_t) + sizeof(int);
    TU_ASSERT_STATUS(stsl_operator_create_custom(ctx(), s, &bad, &u, &op), STSL_ERR_INVALID_ARG);
    CU_ASSERT_PTR_NULL(op);
    bad = vt;
    bad.adjoint = NULL;
    TU_ASSERT_STATUS(stsl_operator_create_custom(ctx(), s, &bad, &u, &op), STSL_ERR_INVALID_ARG);
    bad = vt;
    bad.linear = 0;   /* nonlinear needs a vjp */
    TU_ASSERT_STATUS(stsl_operator_create_custom(ctx(), s, &bad, &u, &op), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_operator_create_custom(ctx(), s, NULL, &u, &op), STSL_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(u.destroyed, 1);
}

/* ---- independent references ---- */

/* numpy/torch "reflect": -1 -> 1, n -> n-2 (folded repeatedly) */
static int ref_reflect(int p, int n)
{
    if (n == 1) return 0;
    while (p < 0 || p >= n) p = p < 0 ? -p : 2 * (n - 1) - p;
    return p;
}

/* y[i][j] = sum_ab K[a][b] xpad[i+a][j+b], computed naively in double */
static void ref_correlate(const float *x, int H, int W, const double *K, int k, int zero, float *y)
{
    int r = k / 2;
    for (int i = 0; i < H; i++)
        for (int j = 0; j < W; j++) {
            double acc = 0;
            for (int a = 0; a < k; a++)
                for (int b = 0; b < k; b++) {
                    int p = i + a - r, q = j + b - r;
                    if (zero && (p < 0 || p >= H || q < 0 || q >= W)) continue;
                    acc += K[a * k + b] * x[ref_reflect(p, H) * W + ref_reflect(q, W)];
                }
            y[i * W + j] = (float)acc;
        }
}

static void test_blur_matches_reference(void)
{
    int H = 23, W = 17;
    float x[23 * 17], y[23 * 17], yr[23 * 17];
    tu_fill_uniform(x, (size_t)H * W, 8, -1, 1);
    for (int zero = 0; zero < 2; zero++) {
        /* Gaussian: scipy-style truncation at 4 sigma inside the 15x15 window */
        double sg = 1.3, K[15 * 15], g[15], sum = 0;
        int k = 15, r = 7, rt = (int)(4 * sg + 0.5);
        for (int a = 0; a < k; a++) {
            g[a] = abs(a - r) <= rt ? exp(-0.5 * (a - r) * (a - r) / (sg * sg)) : 0.0;
            sum += g[a];
        }
        for (int a = 0; a < k; a++)
            for (int b = 0; b < k; b++) K[a * k + b] = g[a] * g[b] / (sum * sum);
        stsl_operator *op = make(STSL_OP_GAUSSIAN_BLUR, (stsl_shape){1, H, W}, 0);
        TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_KERNEL_SIZE, k));
        TU_ASSERT_OK(stsl_operator_set_float(op, STSL_PARAM_BLUR_SIGMA, sg));
        TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_BOUNDARY, zero));
        TU_ASSERT_OK(stsl_operator_forward(op, x, y, 1));
        ref_correlate(x, H, W, K, k, zero, yr);
        CU_ASSERT(tu_max_abs_diff(y, yr, (size_t)H * W) < 1e-5);
        stsl_operator_destroy(op);
        /* asymmetric user kernel, both paths (orientation: correlation, as conv2d) */
        float kf[9 * 9];
        double kd[9 * 9], ks = 0;
        tu_fill_uniform(kf, 81, 21, 0, 1);
        for (int i = 0; i < 81; i++) ks += kf[i];
        for (int i = 0; i < 81; i++) kd[i] = kf[i] / ks;
        ref_correlate(x, H, W, kd, 9, zero, yr);
        for (int fft = 0; fft < 2; fft++) {
            op = make(STSL_OP_CONVOLVE, (stsl_shape){1, H, W}, 0);
            TU_ASSERT_OK(stsl_operator_set_kernel(op, kf, 9));
            TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_BOUNDARY, zero));
            TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_FFT_THRESHOLD, fft ? 3 : 99));
            TU_ASSERT_OK(stsl_operator_forward(op, x, y, 1));
            double d = tu_max_abs_diff(y, yr, (size_t)H * W);
            if (!(d < 1e-5)) fprintf(stderr, "\n  convolve fft=%d zero=%d diff %g\n", fft, zero, d);
            CU_ASSERT(d < 1e-5);
            stsl_operator_destroy(op);
        }
    }
}

static void test_fft_matches_direct(void)
{
    /* the papers' 61x61 motion kernel on a non-square image, both boundaries, 3 channels */
    stsl_shape s = {3, 64, 70};
    size_t n = ssize(s);
    float *x = malloc(n * 4), *y1 = malloc(n * 4), *y2 = malloc(n * 4);
    tu_fill_uniform(x, n, 31, -1, 1);
    for (int bd = 0; bd < 2; bd++) {
        for (int adj = 0; adj < 2; adj++) {
            float *out[2] = {y1, y2};
            for (int fft = 0; fft < 2; fft++) {
                stsl_operator *op = make(STSL_OP_MOTION_BLUR, s, 0);
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_KERNEL_SIZE, 61));
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_BOUNDARY, bd));
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_FFT_THRESHOLD, fft ? 61 : 62));
                if (adj)
                    TU_ASSERT_OK(stsl_operator_adjoint(op, x, out[fft], 1));
                else
                    TU_ASSERT_OK(stsl_operator_forward(op, x, out[fft], 1));
                stsl_operator_destroy(op);
            }
            double d = tu_max_abs_diff(y1, y2, n);
            if (!(d < 2e-5)) fprintf(stderr, "\n  fft vs direct bd=%d adj=%d: %g\n", bd, adj, d);
            CU_ASSERT(d < 2e-5);
        }
    }
    free(x), free(y1), free(y2);
}

static void test_constant_preserved(void)
{
    stsl_shape s = {3, 40, 36};
    size_t n = ssize(s);
    float *x = malloc(n * 4), *y = malloc(n * 4);
    for (size_t i = 0; i < n; i++) x[i] = 0.3f;
    /* blur (reflect): constant in, constant out */
    stsl_operator_kind kinds[] = {STSL_OP_GAUSSIAN_BLUR, STSL_OP_MOTION_BLUR};
    for (int k = 0; k < 2; k++)
        for (int fft = 0; fft < 2; fft++) {
            stsl_operator *op = make(kinds[k], s, 0);
            if (kinds[k] == STSL_OP_MOTION_BLUR)
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_FFT_THRESHOLD, fft ? 1 : 1026));
            TU_ASSERT_OK(stsl_operator_forward(op, x, y, 1));
            double d = 0;
            for (size_t i = 0; i < n; i++) d = fmax(d, fabs(y[i] - 0.3));
            CU_ASSERT(d < 1e-5);
            stsl_operator_destroy(op);
        }
    /* sr bicubic and box: constant in, constant out; so is the bicubic upsampling */
    for (int f = 2; f <= 4; f *= 2)
        for (int filt = 0; filt < 2; filt++) {
            stsl_operator *op = make(STSL_OP_SR, s, f);
            TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_SR_FILTER, filt));
            TU_ASSERT_OK(stsl_operator_forward(op, x, y, 1));
            size_t m = n / (f * f);
            double d = 0;
            for (size_t i = 0; i < m; i++) d = fmax(d, fabs(y[i] - 0.3));
            CU_ASSERT(d < 1e-6);
            TU_ASSERT_OK(stsl_operator_backproject(op, y, x, 1));
            d = 0;
            for (size_t i = 0; i < n; i++) d = fmax(d, fabs(x[i] - 0.3));
            CU_ASSERT(d < 1e-6);
            stsl_operator_destroy(op);
        }
    free(x), free(y);
}

/* Cubic (a = -0.5) reproduces linear functions, so away from the border a ramp x[j] = j maps to
 * its value at the output pixel's centre in input coordinates, (i + 0.5) f - 0.5. Box averaging
 * maps it to the block mean, which is the same number. */
static void test_sr_ramp(void)
{
    int H = 32, W = 64;
    float *x = malloc((size_t)H * W * 4), *y = malloc((size_t)H * W * 4);
    for (int i = 0; i < H; i++)
        for (int j = 0; j < W; j++) x[i * W + j] = (float)j / W;
    for (int f = 2; f <= 8; f *= 2)
        for (int filt = 0; filt < 2; filt++) {
            stsl_operator *op = make(STSL_OP_SR, (stsl_shape){1, H, W}, f);
            TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_SR_FILTER, filt));
            TU_ASSERT_OK(stsl_operator_forward(op, x, y, 1));
            int w = W / f, margin = filt ? 0 : 2;
            double d = 0;
            for (int i = 0; i < H / f; i++)
                for (int j = margin; j < w - margin; j++)
                    d = fmax(d, fabs(y[i * w + j] - ((j + 0.5) * f - 0.5) / W));
            if (!(d < 1e-5)) fprintf(stderr, "\n  ramp f=%d filt=%d: %g\n", f, filt, d);
            CU_ASSERT(d < 1e-5);
            stsl_operator_destroy(op);
        }
    free(x), free(y);
}

static void test_inpaint_masks(void)
{
    stsl_shape s = {3, 20, 30};
    size_t n = ssize(s), hw = 600;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    for (size_t i = 0; i < n; i++) x[i] = 1.0f;
    stsl_operator *op = make(STSL_OP_RANDOM_INPAINT, s, 0);
    TU_ASSERT_OK(stsl_operator_forward(op, x, y, 1));
    size_t dropped = 0;
    for (size_t i = 0; i < hw; i++) {
        dropped += y[i] == 0.0f;
        CU_ASSERT(y[i] == y[hw + i] && y[i] == y[2 * hw + i]);   /* same mask for every channel */
    }
    CU_ASSERT_EQUAL(dropped, (size_t)(0.4 * hw));
    /* back-projection is the zero-filled measurement */
    TU_ASSERT_OK(stsl_operator_backproject(op, y, x, 1));
    CU_ASSERT(tu_max_abs_diff(x, y, n) == 0);
    stsl_operator_destroy(op);
    /* a different seed gives a different mask */
    for (size_t i = 0; i < n; i++) x[i] = 1.0f;
    float *y2 = malloc(n * 4);
    op = make(STSL_OP_RANDOM_INPAINT, s, 0);
    TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_SEED, 1));
    TU_ASSERT_OK(stsl_operator_forward(op, x, y2, 1));
    CU_ASSERT(tu_max_abs_diff(y, y2, n) > 0);
    stsl_operator_destroy(op);
    /* box: default centred half-size box */
    op = make(STSL_OP_BOX_INPAINT, s, 0);
    TU_ASSERT_OK(stsl_operator_forward(op, x, y, 1));
    for (int i = 0; i < 20; i++)
        for (int j = 0; j < 30; j++) {
            int inside = i >= 5 && i < 15 && j >= 7 && j < 22;   /* top = (20-10)/2, left = (30-15)/2 rounded down */
            CU_ASSERT(y[i * 30 + j] == (inside ? 0.0f : 1.0f));
        }
    stsl_operator_destroy(op);
    op = make(STSL_OP_BOX_INPAINT, s, 0);
    TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_BOX_HEIGHT, 3));
    TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_BOX_WIDTH, 4));
    TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_BOX_TOP, 0));
    TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_BOX_LEFT, 26));
    TU_ASSERT_OK(stsl_operator_forward(op, x, y, 1));
    size_t zeros = 0;
    for (size_t i = 0; i < n; i++) zeros += y[i] == 0;
    CU_ASSERT_EQUAL(zeros, 3 * 12);
    CU_ASSERT(y[0 * 30 + 26] == 0 && y[2 * 30 + 29] == 0 && y[3 * 30 + 29] == 1);
    stsl_operator_destroy(op);
    /* measured inpainting keeps missing pixels at exactly 0 even with noise */
    op = make(STSL_OP_RANDOM_INPAINT, s, 0);
    TU_ASSERT_OK(stsl_operator_set_float(op, STSL_PARAM_NOISE_SIGMA, 0.1));
    TU_ASSERT_OK(stsl_operator_measure(op, x, y, 1, 3));
    size_t z2 = 0;
    for (size_t i = 0; i < hw; i++) z2 += y[i] == 0.0f;
    CU_ASSERT_EQUAL(z2, (size_t)(0.4 * hw));
    stsl_operator_destroy(op);
    free(x), free(y), free(y2);
}

static void test_defaults_and_bounds(void)
{
    stsl_param_bounds b;
    TU_ASSERT_OK(stsl_operator_param_bounds(STSL_OP_GAUSSIAN_BLUR, STSL_PARAM_KERNEL_SIZE, &b));
    CU_ASSERT(b.default_value == 61 && b.is_integer && b.min == 1 && b.max == STSL_MAX_KERNEL_SIZE);
    TU_ASSERT_OK(stsl_operator_param_bounds(STSL_OP_GAUSSIAN_BLUR, STSL_PARAM_BLUR_SIGMA, &b));
    CU_ASSERT(b.default_value == 3.0 && !b.is_integer);
    TU_ASSERT_OK(stsl_operator_param_bounds(STSL_OP_MOTION_BLUR, STSL_PARAM_MOTION_INTENSITY, &b));
    CU_ASSERT(b.default_value == 0.5);
    TU_ASSERT_OK(stsl_operator_param_bounds(STSL_OP_RANDOM_INPAINT, STSL_PARAM_DROP_RATE, &b));
    CU_ASSERT(b.default_value == 0.4 && b.min == 0 && b.max == 1);
    TU_ASSERT_OK(stsl_operator_param_bounds(STSL_OP_SALT_PEPPER, STSL_PARAM_IMPULSE_FRACTION, &b));
    CU_ASSERT(b.default_value == 0.02);
    TU_ASSERT_OK(stsl_operator_param_bounds(STSL_OP_SALT_PEPPER, STSL_PARAM_LOSS, &b));
    CU_ASSERT(b.default_value == STSL_LOSS_HUBER);
    TU_ASSERT_OK(stsl_operator_param_bounds(STSL_OP_GAUSSIAN_BLUR, STSL_PARAM_LOSS, &b));
    CU_ASSERT(b.default_value == STSL_LOSS_SQUARED);
    TU_ASSERT_OK(stsl_operator_param_bounds(STSL_OP_HDR, STSL_PARAM_HDR_ALPHA, &b));
    CU_ASSERT(b.default_value == 2.0);
    TU_ASSERT_OK(stsl_operator_param_bounds(STSL_OP_PHASE_RETRIEVAL, STSL_PARAM_OVERSAMPLING, &b));
    CU_ASSERT(b.default_value == 2.0);
    TU_ASSERT_STATUS(stsl_operator_param_bounds(STSL_OP_SR, STSL_PARAM_KERNEL_SIZE, &b), STSL_ERR_UNSUPPORTED);
    TU_ASSERT_STATUS(stsl_operator_param_bounds(STSL_OP_SR, STSL_PARAM_STEPS, &b), STSL_ERR_UNSUPPORTED);
    TU_ASSERT_STATUS(stsl_operator_param_bounds(STSL_OP_SR, STSL_PARAM_SR_FILTER, NULL), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_operator_param_bounds((stsl_operator_kind)99, STSL_PARAM_SEED, &b), STSL_ERR_INVALID_ARG);

    /* size-dependent defaults: 61 / 3.0 from 256 px, scaled for small images */
    int64_t k;
    double sg;
    stsl_operator *op = make(STSL_OP_GAUSSIAN_BLUR, (stsl_shape){3, 256, 300}, 0);
    TU_ASSERT_OK(stsl_operator_get_int(op, STSL_PARAM_KERNEL_SIZE, &k));
    TU_ASSERT_OK(stsl_operator_get_float(op, STSL_PARAM_BLUR_SIGMA, &sg));
    CU_ASSERT(k == 61 && sg == 3.0);
    stsl_operator_destroy(op);
    op = make(STSL_OP_GAUSSIAN_BLUR, (stsl_shape){1, 28, 28}, 0);
    TU_ASSERT_OK(stsl_operator_get_int(op, STSL_PARAM_KERNEL_SIZE, &k));
    TU_ASSERT_OK(stsl_operator_get_float(op, STSL_PARAM_BLUR_SIGMA, &sg));
    CU_ASSERT(k == 9 && fabs(sg - 3.0 * sqrt(28.0 / 256.0)) < 1e-12);
    double v;
    TU_ASSERT_OK(stsl_operator_get_float(op, STSL_PARAM_NOISE_SIGMA, &v));
    CU_ASSERT(v == 0.05);
    stsl_operator_destroy(op);
    op = make(STSL_OP_MOTION_BLUR, (stsl_shape){1, 64, 64}, 0);
    TU_ASSERT_OK(stsl_operator_get_int(op, STSL_PARAM_KERNEL_SIZE, &k));
    CU_ASSERT(k == 17);
    stsl_operator_destroy(op);
}

static void test_names(void)
{
    const char *names = stsl_operator_names();
    CU_ASSERT(strstr(names, "gaussian-blur") && strstr(names, "phase-retrieval") && strstr(names, "sr8"));
    char buf[512];
    snprintf(buf, sizeof buf, "%s", names);
    stsl_shape s = {3, 32, 32};
    size_t n = ssize(s);
    float *x = malloc(n * 4), *y = malloc(8 * n * 4), *mk = malloc(1024 * 4);
    tu_fill_uniform(x, n, 2, -1, 1);
    for (int i = 0; i < 1024; i++) mk[i] = (i % 3) != 0;
    int count = 0;
    for (char *t = strtok(buf, " "); t; t = strtok(NULL, " ")) {
        stsl_operator *op = NULL;
        TU_ASSERT_OK(stsl_operator_create_by_name(NULL, t, s, &op));
        if (!op) continue;
        if (strcmp(t, "mask-inpaint") == 0) TU_ASSERT_OK(stsl_operator_set_mask(op, mk, 1024));
        TU_ASSERT_OK(stsl_operator_prepare(op));
        TU_ASSERT_OK(stsl_operator_forward(op, x, y, 1));
        TU_ASSERT_OK(stsl_operator_measure(op, x, y, 1, 7));
        TU_ASSERT_OK(stsl_operator_data_fit(op, y, x, 1, NULL, x));
        stsl_operator_destroy(op);
        count++;
    }
    CU_ASSERT_EQUAL(count, 12);
    stsl_operator *op = NULL;
    TU_ASSERT_STATUS(stsl_operator_create_by_name(ctx(), "blur", s, &op), STSL_ERR_INVALID_ARG);
    CU_ASSERT(strstr(stsl_context_last_error(ctx()), "blur") != NULL);
    TU_ASSERT_STATUS(stsl_operator_create_by_name(ctx(), NULL, s, &op), STSL_ERR_INVALID_ARG);
    free(x), free(y), free(mk);
}

/* ---- noise model ---- */

static void test_measure_reproducible(void)
{
    stsl_shape s = {3, 24, 20};
    size_t n = ssize(s);
    float *x = malloc(2 * n * 4), *y1 = malloc(2 * n * 4), *y2 = malloc(2 * n * 4), *y3 = malloc(2 * n * 4);
    tu_fill_uniform(x, 2 * n, 4, -1, 1);
    stsl_operator *op = make(STSL_OP_GAUSSIAN_BLUR, s, 0);
    TU_ASSERT_OK(stsl_operator_measure(op, x, y1, 2, 1234));
    TU_ASSERT_OK(stsl_operator_measure(op, x, y2, 2, 1234));
    CU_ASSERT(memcmp(y1, y2, 2 * n * 4) == 0);
    TU_ASSERT_OK(stsl_operator_measure(op, x, y3, 2, 1235));
    CU_ASSERT(memcmp(y1, y3, 2 * n * 4) != 0);
    /* sample 0 of a batch equals the same sample measured alone */
    TU_ASSERT_OK(stsl_operator_measure(op, x, y3, 1, 1234));
    CU_ASSERT(memcmp(y1, y3, n * 4) == 0);
    /* noise has the configured standard deviation */
    TU_ASSERT_OK(stsl_operator_forward(op, x, y3, 2));
    double ss = 0;
    for (size_t i = 0; i < 2 * n; i++) ss += (double)(y1[i] - y3[i]) * (y1[i] - y3[i]);
    double sd = sqrt(ss / (2 * n));
    CU_ASSERT(sd > 0.045 && sd < 0.055);
    stsl_operator_destroy(op);
    /* the thread count does not change a bit */
    stsl_context *c4 = NULL;
    TU_ASSERT_OK(stsl_context_create(&c4));
    TU_ASSERT_OK(stsl_context_set_threads(c4, 3));
    stsl_operator_destroy(NULL);
    op = NULL;
    TU_ASSERT_OK(stsl_operator_create(c4, STSL_OP_MOTION_BLUR, s, 0, &op));
    TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_FFT_THRESHOLD, 1));
    TU_ASSERT_OK(stsl_operator_measure(op, x, y2, 2, 99));
    stsl_operator_destroy(op);
    op = make(STSL_OP_MOTION_BLUR, s, 0);
    TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_FFT_THRESHOLD, 1));
    TU_ASSERT_OK(stsl_operator_measure(op, x, y1, 2, 99));
    CU_ASSERT(memcmp(y1, y2, 2 * n * 4) == 0);
    stsl_operator_destroy(op);
    stsl_context_destroy(c4);
    free(x), free(y1), free(y2), free(y3);
}

static void test_salt_pepper(void)
{
    stsl_shape s = {3, 100, 100};
    size_t n = ssize(s);
    float *x = malloc(n * 4), *y = malloc(n * 4), *g = malloc(n * 4);
    tu_fill_uniform(x, n, 6, -0.5f, 0.5f);
    stsl_operator *op = make(STSL_OP_SALT_PEPPER, s, 0);
    int64_t loss;
    TU_ASSERT_OK(stsl_operator_get_int(op, STSL_PARAM_LOSS, &loss));
    CU_ASSERT_EQUAL(loss, STSL_LOSS_HUBER);
    TU_ASSERT_OK(stsl_operator_measure(op, x, y, 1, 5));
    size_t salt = 0, pepper = 0, other = 0;
    for (size_t i = 0; i < n; i++) {
        if (y[i] == 1.0f) salt++;
        else if (y[i] == -1.0f) pepper++;
        else other += y[i] != x[i];
    }
    CU_ASSERT(other == 0);   /* impulses only: no Gaussian noise by default */
    double frac = (double)(salt + pepper) / n;
    CU_ASSERT(frac > 0.017 && frac < 0.023);
    CU_ASSERT(salt > 0.35 * (salt + pepper) && pepper > 0.35 * (salt + pepper));
    /* robust loss: an impulse of size ~1.5 costs delta*(|r| - delta/2), not r^2 */
    double l;
    TU_ASSERT_OK(stsl_operator_data_fit(op, y, x, 1, &l, g));
    double expect = 0;
    for (size_t i = 0; i < n; i++) {
        double r = fabs((double)y[i] - x[i]);
        expect += r <= 0.1 ? 0.5 * r * r : 0.1 * (r - 0.05);
    }
    CU_ASSERT(fabs(l - expect) < 1e-6 * expect);
    stsl_operator_destroy(op);
    free(x), free(y), free(g);
}

/* data_fit gradient against central differences of its own loss, for every loss */
static void test_data_fit_gradient(void)
{
    stsl_shape s = {2, 7, 6};
    size_t n = ssize(s);
    float x[84], y[84], g[84], xp[84], ax[84];
    for (int loss = 0; loss < 3; loss++) {
        stsl_operator *op = make(STSL_OP_GAUSSIAN_BLUR, s, 0);
        TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_KERNEL_SIZE, 5));
        TU_ASSERT_OK(stsl_operator_set_float(op, STSL_PARAM_BLUR_SIGMA, 1.0));
        TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_LOSS, loss));
        TU_ASSERT_OK(stsl_operator_set_float(op, STSL_PARAM_HUBER_DELTA, 0.3));
        tu_fill_uniform(x, n, 70 + loss, -1, 1);
        tu_fill_uniform(y, n, 80 + loss, -1, 1);
        double l;
        TU_ASSERT_OK(stsl_operator_data_fit(op, y, x, 1, &l, g));
        /* loss value against a direct evaluation */
        TU_ASSERT_OK(stsl_operator_forward(op, x, ax, 1));
        double e = 0;
        for (size_t i = 0; i < n; i++) {
            double r = (double)y[i] - ax[i], a = fabs(r);
            e += loss == 0 ? r * r : loss == 1 ? a : (a <= 0.3 ? 0.5 * r * r : 0.3 * (a - 0.15));
        }
        CU_ASSERT(fabs(l - e) < 1e-5 * (1 + e));
        double worst = 0;
        for (size_t i = 0; i < n; i += 5) {
            double h = 1e-3, lp, lm;
            memcpy(xp, x, sizeof x);
            xp[i] += (float)h;
            TU_ASSERT_OK(stsl_operator_data_fit(op, y, xp, 1, &lp, NULL));
            xp[i] = x[i] - (float)h;
            TU_ASSERT_OK(stsl_operator_data_fit(op, y, xp, 1, &lm, NULL));
            double fd = (lp - lm) / (2 * h);
            worst = fmax(worst, fabs(fd - g[i]) / (1 + fabs(fd)));
        }
        if (!(worst < 2e-2)) fprintf(stderr, "\n  data_fit loss %d: fd error %g\n", loss, worst);
        CU_ASSERT(worst < 2e-2);
        stsl_operator_destroy(op);
    }
    /* squared loss is quadratic: the gradient is exactly -2 A^T (y - A x) */
    stsl_operator *op = make(STSL_OP_SR, (stsl_shape){1, 8, 8}, 2);
    float xs[64], ys[16], r[16], gs[64], ref[64];
    tu_fill_uniform(xs, 64, 1, -1, 1);
    tu_fill_uniform(ys, 16, 2, -1, 1);
    TU_ASSERT_OK(stsl_operator_data_fit(op, ys, xs, 1, NULL, gs));
    TU_ASSERT_OK(stsl_operator_forward(op, xs, r, 1));
    for (int i = 0; i < 16; i++) r[i] = -2.0f * (ys[i] - r[i]);
    TU_ASSERT_OK(stsl_operator_adjoint(op, r, ref, 1));
    CU_ASSERT(tu_max_abs_diff(gs, ref, 64) < 1e-5);
    stsl_operator_destroy(op);
}

/* ---- argument validation: each failure returns a status and a message ---- */

#define EXPECT_FAIL(expr, status, op)                                      \
    do {                                                                   \
        TU_ASSERT_STATUS(expr, status);                                    \
        CU_ASSERT(strlen(stsl_operator_last_error(op)) > 0);               \
    } while (0)

static void test_bad_parameters(void)
{
    stsl_shape s = {3, 32, 32};
    float x[3 * 32 * 32], y[3 * 32 * 32];
    memset(x, 0, sizeof x);
    stsl_operator *op = make(STSL_OP_GAUSSIAN_BLUR, s, 0);
    EXPECT_FAIL(stsl_operator_set_float(op, STSL_PARAM_BLUR_SIGMA, -1.0), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_set_float(op, STSL_PARAM_BLUR_SIGMA, 0.0), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_set_float(op, STSL_PARAM_BLUR_SIGMA, NAN), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_set_float(op, STSL_PARAM_NOISE_SIGMA, -0.1), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_set_int(op, STSL_PARAM_KERNEL_SIZE, 8), STSL_ERR_INVALID_ARG, op);
    CU_ASSERT(strstr(stsl_operator_last_error(op), "even") != NULL);
    EXPECT_FAIL(stsl_operator_set_int(op, STSL_PARAM_KERNEL_SIZE, 1027), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_set_int(op, STSL_PARAM_KERNEL_SIZE, -3), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_set_int(op, STSL_PARAM_BOUNDARY, 2), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_set_float(op, STSL_PARAM_KERNEL_SIZE, 5.0), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_set_float(op, STSL_PARAM_DROP_RATE, 0.5), STSL_ERR_UNSUPPORTED, op);
    EXPECT_FAIL(stsl_operator_set_int(op, STSL_PARAM_STEPS, 5), STSL_ERR_UNSUPPORTED, op);
    EXPECT_FAIL(stsl_operator_get_int(op, STSL_PARAM_KERNEL_SIZE, NULL), STSL_ERR_INVALID_ARG, op);
    /* kernel larger than the image allows: refused at prepare */
    TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_KERNEL_SIZE, 65));
    EXPECT_FAIL(stsl_operator_prepare(op), STSL_ERR_SHAPE, op);
    EXPECT_FAIL(stsl_operator_forward(op, x, y, 1), STSL_ERR_SHAPE, op);
    TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_KERNEL_SIZE, 63));
    TU_ASSERT_OK(stsl_operator_prepare(op));
    EXPECT_FAIL(stsl_operator_set_int(op, STSL_PARAM_KERNEL_SIZE, 5), STSL_ERR_INVALID_ARG, op);
    CU_ASSERT(strstr(stsl_operator_last_error(op), "prepared") != NULL);
    /* buffers and batch */
    EXPECT_FAIL(stsl_operator_forward(op, NULL, y, 1), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_forward(op, x, NULL, 1), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_forward(op, x, y, 0), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_forward(op, x, y, STSL_MAX_BATCH + 1), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_adjoint(op, x, NULL, 1), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_vjp(op, x, NULL, y, 1), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_backproject(op, NULL, y, 1), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_measure(op, x, y, -1, 0), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_data_fit(op, NULL, x, 1, NULL, NULL), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_output_shape(op, NULL), STSL_ERR_INVALID_ARG, op);
    stsl_operator_destroy(op);
    /* NULL handles */
    CU_ASSERT_EQUAL(stsl_operator_forward(NULL, x, y, 1), STSL_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(stsl_operator_adjoint(NULL, x, y, 1), STSL_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(stsl_operator_vjp(NULL, x, x, y, 1), STSL_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(stsl_operator_backproject(NULL, x, y, 1), STSL_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(stsl_operator_measure(NULL, x, y, 1, 0), STSL_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(stsl_operator_data_fit(NULL, x, y, 1, NULL, NULL), STSL_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(stsl_operator_prepare(NULL), STSL_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(stsl_operator_set_int(NULL, STSL_PARAM_SEED, 1), STSL_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(stsl_operator_set_kernel(NULL, x, 3), STSL_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(stsl_operator_is_linear(NULL), -1);
    CU_ASSERT(stsl_operator_last_error(NULL) != NULL);
    /* creation */
    TU_ASSERT_STATUS(stsl_operator_create(ctx(), STSL_OP_SR, (stsl_shape){3, 30, 32}, 4, &op), STSL_ERR_SHAPE);
    CU_ASSERT_PTR_NULL(op);
    CU_ASSERT(strstr(stsl_context_last_error(ctx()), "divide") != NULL);
    TU_ASSERT_STATUS(stsl_operator_create(ctx(), STSL_OP_SR, s, 1, &op), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_operator_create(ctx(), STSL_OP_IDENTITY, (stsl_shape){3, 0, 32}, 0, &op),
                     STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_operator_create(ctx(), STSL_OP_IDENTITY, (stsl_shape){3, 20000, 32}, 0, &op),
                     STSL_ERR_LIMIT);
    TU_ASSERT_STATUS(stsl_operator_create(ctx(), (stsl_operator_kind)77, s, 0, &op), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_operator_create(ctx(), STSL_OP_MATRIX, s, 0, &op), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_operator_create(ctx(), STSL_OP_IDENTITY, s, 0, NULL), STSL_ERR_INVALID_ARG);
    /* drop rate outside [0, 1] */
    op = make(STSL_OP_RANDOM_INPAINT, s, 0);
    EXPECT_FAIL(stsl_operator_set_float(op, STSL_PARAM_DROP_RATE, 1.5), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_set_float(op, STSL_PARAM_DROP_RATE, -0.1), STSL_ERR_INVALID_ARG, op);
    stsl_operator_destroy(op);
    /* mask of the wrong size, missing mask */
    op = make(STSL_OP_MASK_INPAINT, s, 0);
    EXPECT_FAIL(stsl_operator_set_mask(op, x, 1000), STSL_ERR_SHAPE, op);
    EXPECT_FAIL(stsl_operator_set_mask(op, NULL, 1024), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_prepare(op), STSL_ERR_INVALID_ARG, op);
    TU_ASSERT_OK(stsl_operator_set_mask(op, x, 3 * 1024));
    stsl_operator_destroy(op);
    /* kernels: even size, zero sum, wrong operator, too large for the image */
    float kern[9] = {0};
    op = make(STSL_OP_CONVOLVE, s, 0);
    EXPECT_FAIL(stsl_operator_prepare(op), STSL_ERR_INVALID_ARG, op);   /* no kernel yet */
    EXPECT_FAIL(stsl_operator_set_kernel(op, kern, 3), STSL_ERR_INVALID_ARG, op);
    kern[4] = 1;
    EXPECT_FAIL(stsl_operator_set_kernel(op, kern, 2), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_set_kernel(op, NULL, 3), STSL_ERR_INVALID_ARG, op);
    stsl_operator_destroy(op);
    op = make(STSL_OP_CONVOLVE, (stsl_shape){1, 1, 5}, 0);
    TU_ASSERT_OK(stsl_operator_set_kernel(op, kern, 3));
    EXPECT_FAIL(stsl_operator_prepare(op), STSL_ERR_SHAPE, op);
    stsl_operator_destroy(op);
    op = make(STSL_OP_SR, s, 2);
    EXPECT_FAIL(stsl_operator_set_kernel(op, kern, 3), STSL_ERR_UNSUPPORTED, op);
    EXPECT_FAIL(stsl_operator_set_mask(op, x, 1024), STSL_ERR_UNSUPPORTED, op);
    EXPECT_FAIL(stsl_operator_set_int(op, STSL_PARAM_SR_FILTER, 3), STSL_ERR_INVALID_ARG, op);
    stsl_operator_destroy(op);
    /* box that does not fit */
    op = make(STSL_OP_BOX_INPAINT, s, 0);
    TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_BOX_HEIGHT, 20));
    TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_BOX_TOP, 20));
    EXPECT_FAIL(stsl_operator_prepare(op), STSL_ERR_SHAPE, op);
    stsl_operator_destroy(op);
    /* other ranges */
    op = make(STSL_OP_SALT_PEPPER, s, 0);
    EXPECT_FAIL(stsl_operator_set_float(op, STSL_PARAM_IMPULSE_FRACTION, 1.01), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_set_float(op, STSL_PARAM_HUBER_DELTA, 0.0), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_set_int(op, STSL_PARAM_LOSS, 3), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_set_int(op, STSL_PARAM_SEED, -1), STSL_ERR_INVALID_ARG, op);
    stsl_operator_destroy(op);
    op = make(STSL_OP_MOTION_BLUR, s, 0);
    EXPECT_FAIL(stsl_operator_set_float(op, STSL_PARAM_MOTION_INTENSITY, 1.5), STSL_ERR_INVALID_ARG, op);
    EXPECT_FAIL(stsl_operator_set_int(op, STSL_PARAM_FFT_THRESHOLD, 0), STSL_ERR_INVALID_ARG, op);
    stsl_operator_destroy(op);
}

static void test_motion_kernel(void)
{
    /* a 1-channel delta image through the motion blur reveals the (flipped) kernel */
    stsl_shape s = {1, 121, 121};
    size_t n = ssize(s);
    float *x = calloc(n, 4), *k1 = malloc(n * 4), *k2 = malloc(n * 4), *k3 = malloc(n * 4);
    x[60 * 121 + 60] = 1.0f;
    float *outs[3] = {k1, k2, k3};
    int seeds[3] = {3, 3, 4};
    for (int t = 0; t < 3; t++) {
        stsl_operator *op = make(STSL_OP_MOTION_BLUR, s, 0);
        TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_KERNEL_SIZE, 61));
        TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_SEED, seeds[t]));
        TU_ASSERT_OK(stsl_operator_forward(op, x, outs[t], 1));
        stsl_operator_destroy(op);
    }
    double sum = 0, mn = 0;
    int support = 0;
    for (size_t i = 0; i < n; i++) {
        sum += k1[i];
        mn = fmin(mn, k1[i]);
        support += k1[i] > 1e-4f;
    }
    CU_ASSERT(fabs(sum - 1) < 1e-4);
    CU_ASSERT(mn > -1e-6);
    CU_ASSERT(support > 20);   /* a trajectory, not a point */
    CU_ASSERT(memcmp(k1, k2, n * 4) == 0);
    CU_ASSERT(tu_max_abs_diff(k1, k3, n) > 1e-3);
    /* the intensity extremes terminate and still give a normalised kernel */
    for (int t = 0; t <= 1; t++) {
        stsl_operator *op = make(STSL_OP_MOTION_BLUR, s, 0);
        TU_ASSERT_OK(stsl_operator_set_float(op, STSL_PARAM_MOTION_INTENSITY, (double)t));
        TU_ASSERT_OK(stsl_operator_forward(op, x, k1, 1));
        sum = 0;
        for (size_t i = 0; i < n; i++) sum += k1[i];
        CU_ASSERT(fabs(sum - 1) < 1e-4);
        stsl_operator_destroy(op);
    }
    free(x), free(k1), free(k2), free(k3);
}

/* Several threads share one prepared handle: results are identical to the serial ones. */
typedef struct tjob {
    stsl_operator *op;
    const float *x;
    float *y;
    stsl_status st;
} tjob;

static void *tjob_run(void *p)
{
    tjob *j = p;
    j->st = stsl_operator_forward(j->op, j->x, j->y, 1);
    if (j->st == STSL_OK) j->st = stsl_operator_adjoint(j->op, j->y, j->y + 3 * 48 * 48, 1);
    return NULL;
}

static void test_concurrent_calls(void)
{
    stsl_shape s = {3, 48, 48};
    size_t n = ssize(s);
    stsl_operator_kind kinds[] = {STSL_OP_MOTION_BLUR, STSL_OP_GAUSSIAN_BLUR, STSL_OP_SR};
    for (int k = 0; k < 3; k++) {
        stsl_operator *op = make(kinds[k], s, kinds[k] == STSL_OP_SR ? 4 : 0);
        if (kinds[k] == STSL_OP_MOTION_BLUR) TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_FFT_THRESHOLD, 1));
        TU_ASSERT_OK(stsl_operator_prepare(op));
        float *x = malloc(n * 4), *ref = calloc(2 * n, 4), *outs = calloc(4 * 2 * n, 4);
        tu_fill_uniform(x, n, 13, -1, 1);
        tjob serial = {op, x, ref, STSL_OK};
        tjob_run(&serial);
        TU_ASSERT_OK(serial.st);
        pthread_t t[4];
        tjob jobs[4];
        for (int i = 0; i < 4; i++) {
            jobs[i] = (tjob){op, x, outs + i * 2 * n, STSL_OK};
            pthread_create(&t[i], NULL, tjob_run, &jobs[i]);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(t[i], NULL);
            TU_ASSERT_OK(jobs[i].st);
            CU_ASSERT(memcmp(outs + i * 2 * n, ref, 2 * n * 4) == 0);
        }
        stsl_operator_destroy(op);
        free(x), free(ref), free(outs);
    }
}


/* One buffer as input and output (callers write a gradient over x) gives the out-of-place result. */
static void test_in_place(void)
{
    stsl_shape s = {3, 24, 32};
    size_t n = ssize(s);
    const char *names[] = {"gaussian-blur", "motion-blur", "sr4", "hdr", "phase-retrieval", "random-inpaint"};
    for (int k = 0; k < 6; k++) {
        stsl_operator *op = NULL;
        TU_ASSERT_OK(stsl_operator_create_by_name(NULL, names[k], s, &op));
        if (!op) continue;
        stsl_shape o;
        TU_ASSERT_OK(stsl_operator_output_shape(op, &o));
        size_t m = ssize(o), big = (m > n ? m : n);
        float *x = malloc(n * 4), *ref = malloc(big * 4), *buf = malloc(big * 4), *v = malloc(m * 4), *y = malloc(m * 4);
        tu_fill_uniform(x, n, 17 + k, -1, 1);
        tu_fill_normal(v, m, 18 + k);
        /* forward */
        TU_ASSERT_OK(stsl_operator_forward(op, x, ref, 1));
        memcpy(buf, x, n * 4);
        TU_ASSERT_OK(stsl_operator_forward(op, buf, buf, 1));
        CU_ASSERT(memcmp(buf, ref, m * 4) == 0);
        /* vjp with out == x */
        TU_ASSERT_OK(stsl_operator_vjp(op, x, v, ref, 1));
        memcpy(buf, x, n * 4);
        TU_ASSERT_OK(stsl_operator_vjp(op, buf, v, buf, 1));
        CU_ASSERT(memcmp(buf, ref, n * 4) == 0);
        /* data_fit gradient written over x */
        TU_ASSERT_OK(stsl_operator_forward(op, x, y, 1));
        for (size_t i = 0; i < m; i++) y[i] += 0.1f * v[i];
        double l1, l2;
        TU_ASSERT_OK(stsl_operator_data_fit(op, y, x, 1, &l1, ref));
        memcpy(buf, x, n * 4);
        TU_ASSERT_OK(stsl_operator_data_fit(op, y, buf, 1, &l2, buf));
        CU_ASSERT(l1 == l2);
        CU_ASSERT(memcmp(buf, ref, n * 4) == 0);
        stsl_operator_destroy(op);
        free(x), free(ref), free(buf), free(v), free(y);
    }
}

static void test_cleanup(void)
{
    stsl_context_destroy(g_ctx);
    g_ctx = NULL;
}

int main(void)
{
    static const stsl_test tests[] = {
        {"adjoint: blur (gaussian, motion, convolve; reflect/zero; direct/fft)", test_adjoint_blur},
        {"adjoint: super-resolution (bicubic, box)", test_adjoint_sr},
        {"adjoint: identity, salt-pepper, inpainting", test_adjoint_pointwise},
        {"adjoint: random shapes", test_adjoint_random_shapes},
        {"matrix operator", test_matrix},
        {"custom operator", test_custom},
        {"blur matches a naive reference", test_blur_matches_reference},
        {"fft path matches direct path (61x61 motion kernel)", test_fft_matches_direct},
        {"constant images are preserved (blur, sr, upsampling)", test_constant_preserved},
        {"sr reproduces a ramp", test_sr_ramp},
        {"inpainting masks", test_inpaint_masks},
        {"defaults and bounds", test_defaults_and_bounds},
        {"every name creates a working operator", test_names},
        {"measure is bit-reproducible", test_measure_reproducible},
        {"salt-pepper impulses and robust loss", test_salt_pepper},
        {"data_fit gradient", test_data_fit_gradient},
        {"bad parameters return a status and a message", test_bad_parameters},
        {"motion kernel", test_motion_kernel},
        {"concurrent calls on one handle", test_concurrent_calls},
        {"in-place calls", test_in_place},
        {"cleanup", test_cleanup},
        {NULL, NULL},
    };
    return stsl_test_main("operators", tests);
}
