/*
 * The measurement operators as libtorch ops (issue 27 item 2; src/models/device_ops.h,
 * shim/ops.cpp): for every operator kind, several shapes and parameters and two batch sizes, the
 * forward and the adjoint (VJP for the nonlinear kinds) through the forced torch-op path on the
 * CPU (stsl__operator_use_device(op, -1)) equal the C operators within 1e-5 (max abs); the
 * measured maxima are printed per kind.  Also: the device chosen from the context ("cuda"
 * without a GPU fails at prepare with STSL_ERR_BACKEND, "auto" without one keeps the C code),
 * data_fit, in-place and concurrent calls on the device path, user callbacks refused.  Built
 * without libtorch, the switch reports STSL_ERR_BACKEND and nothing else runs.  With a usable GPU
 * the same comparisons run on CUDA device 0 (tolerance: docs/cuda.md).
 */
#include "common/testutil.h"
#include "operators/operator_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define TOL_CPU 1e-5   /* max abs, torch ops on the CPU vs the C code */
#define TOL_CUDA 2e-3  /* max abs / (1 + max |C|) on CUDA: cuDNN may convolve in TF32 */

static stsl_context *g_ctx;

static stsl_context *ctx(void)
{
    if (!g_ctx) stsl_context_create(&g_ctx);
    return g_ctx;
}

static size_t ssize(stsl_shape s) { return (size_t)s.channels * s.height * s.width; }

/* The largest difference seen per kind and direction, for the summary. */
typedef struct kind_err {
    const char *name;
    double fwd, adj;
    int cases;
} kind_err;
static kind_err g_errs[24];
static int g_nerrs;

static kind_err *errs_of(const char *name)
{
    for (int i = 0; i < g_nerrs; i++)
        if (strcmp(g_errs[i].name, name) == 0) return &g_errs[i];
    if (g_nerrs == (int)(sizeof g_errs / sizeof g_errs[0])) return &g_errs[0];
    g_errs[g_nerrs] = (kind_err){name, 0, 0, 0};
    return &g_errs[g_nerrs++];
}

static double compare_err(const float *got, const float *ref, size_t n, int device)
{
    return device >= 0 ? tu_rel_err(got, ref, n) : tu_max_abs_diff(got, ref, n);
}

/* C code vs the device path (STSL__DEVOP_CPU, or a GPU) on a batch: forward, and the adjoint
 * (linear) or the VJP at x (nonlinear); a second VJP gives the same bits (for the linear kinds it
 * is their adjoint); switching back to the host gives the C result again.  The operator is
 * destroyed. */
static void compare(stsl_operator *op, const char *name, int batch, uint64_t seed, int device)
{
    stsl_shape in, out;
    TU_ASSERT_OK(stsl_operator_output_shape(op, &out));
    TU_ASSERT_OK(stsl_operator_input_shape(op, &in));
    size_t n = (size_t)batch * ssize(in), m = (size_t)batch * ssize(out);
    float *x = malloc(n * 4), *v = malloc(m * 4), *yc = malloc(m * 4), *yd = malloc(m * 4);
    float *ac = malloc(n * 4), *ad = malloc(n * 4), *t = malloc((n > m ? n : m) * 4);
    tu_fill_uniform(x, n, seed, -1, 1);
    tu_fill_normal(v, m, seed + 1);
    int linear = stsl_operator_is_linear(op);
    TU_ASSERT_OK(stsl_operator_forward(op, x, yc, batch));
    TU_ASSERT_OK(linear ? stsl_operator_adjoint(op, v, ac, batch) : stsl_operator_vjp(op, x, v, ac, batch));
    stsl_status st = stsl__operator_use_device(op, device);
    if (!stsl_has_torch()) {
        TU_ASSERT_STATUS(st, STSL_ERR_BACKEND);
        CU_ASSERT_PTR_NOT_NULL(strstr(stsl_operator_last_error(op), "WITH_TORCH=0"));
    } else {
        TU_ASSERT_OK(st);
        TU_ASSERT_OK(stsl_operator_forward(op, x, yd, batch));
        TU_ASSERT_OK(linear ? stsl_operator_adjoint(op, v, ad, batch) : stsl_operator_vjp(op, x, v, ad, batch));
        /* the same bits again (no atomics: on a GPU the adjoint's fold gathers), and the linear
         * kinds' VJP is their adjoint */
        TU_ASSERT_OK(stsl_operator_vjp(op, x, v, t, batch));
        CU_ASSERT(memcmp(t, ad, n * 4) == 0);
        double ef = compare_err(yd, yc, m, device), ea = compare_err(ad, ac, n, device);
        double tol = device >= 0 ? TOL_CUDA : TOL_CPU;
        if (!(ef <= tol && ea <= tol))
            fprintf(stderr, "\n  %s %dx%dx%d batch %d on %s: forward %.3g, %s %.3g (tolerance %g)\n", name,
                    (int)in.channels, (int)in.height, (int)in.width, batch, device >= 0 ? "cuda" : "cpu", ef,
                    linear ? "adjoint" : "vjp", ea, tol);
        CU_ASSERT(ef <= tol);
        CU_ASSERT(ea <= tol);
        kind_err *e = errs_of(name);
        if (ef > e->fwd) e->fwd = ef;
        if (ea > e->adj) e->adj = ea;
        e->cases++;
        TU_ASSERT_OK(stsl__operator_use_device(op, STSL__DEVOP_HOST));
        TU_ASSERT_OK(stsl_operator_forward(op, x, t, batch));
        CU_ASSERT(memcmp(t, yc, m * 4) == 0);
    }
    stsl_operator_destroy(op);
    free(x), free(v), free(yc), free(yd), free(ac), free(ad), free(t);
}

static stsl_operator *make(stsl_operator_kind kind, stsl_shape s, int factor)
{
    stsl_operator *op = NULL;
    TU_ASSERT_OK(stsl_operator_create(ctx(), kind, s, factor, &op));
    return op;
}

static stsl_operator *with_int(stsl_operator *op, stsl_param key, int64_t value)
{
    TU_ASSERT_OK(stsl_operator_set_int(op, key, value));
    return op;
}

static const stsl_shape SHAPES[] = {{1, 1, 1}, {1, 1, 7}, {3, 13, 5}, {2, 16, 12}, {3, 31, 29}, {3, 64, 64}};
#define NSHAPES (sizeof SHAPES / sizeof SHAPES[0])
static const int BATCHES[] = {1, 3};

/* Every test runs its cases on the CPU (forced torch ops) and, when a GPU is usable, on CUDA 0. */
static int g_device = STSL__DEVOP_CPU;

static void blur_cases(void)
{
    for (size_t si = 0; si < NSHAPES; si++) {
        stsl_shape s = SHAPES[si];
        int side = s.height < s.width ? s.height : s.width, b = BATCHES[si % 2];
        for (int bd = 0; bd < 2; bd++) {
            compare(with_int(make(STSL_OP_GAUSSIAN_BLUR, s, 0), STSL_PARAM_BOUNDARY, bd), "gaussian-blur", b,
                    10 + si, g_device);
            if (side >= 4) {
                stsl_operator *op = with_int(make(STSL_OP_GAUSSIAN_BLUR, s, 0), STSL_PARAM_BOUNDARY, bd);
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_KERNEL_SIZE, 2 * side - 1));
                TU_ASSERT_OK(stsl_operator_set_float(op, STSL_PARAM_BLUR_SIGMA, 0.5 * side));
                compare(op, "gaussian-blur", 2, 20 + si, g_device);
            }
            for (int fft = 0; fft < 2; fft++) {
                stsl_operator *op = with_int(make(STSL_OP_MOTION_BLUR, s, 0), STSL_PARAM_BOUNDARY, bd);
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_FFT_THRESHOLD, fft ? 1 : 1026));
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_SEED, 5 + bd));
                compare(op, "motion-blur", b, 30 + si, g_device);
                /* an asymmetric kernel catches a flipped adjoint */
                int k = 2 * side - 1 < 7 ? 2 * side - 1 : 7;
                float kern[49];
                tu_fill_uniform(kern, (size_t)k * k, 77 + si, 0.0f, 1.0f);
                op = with_int(make(STSL_OP_CONVOLVE, s, 0), STSL_PARAM_BOUNDARY, bd);
                TU_ASSERT_OK(stsl_operator_set_kernel(op, kern, k));
                TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_FFT_THRESHOLD, fft ? 1 : 1026));
                compare(op, "convolve", b, 40 + si, g_device);
            }
        }
    }
    /* the DPS task's size: 61x61 motion kernel (FFT path in C), Gaussian 61 / sigma 3 */
    stsl_shape big = {3, 128, 128};
    compare(make(STSL_OP_MOTION_BLUR, big, 0), "motion-blur", 1, 50, g_device);
    stsl_operator *g = with_int(make(STSL_OP_GAUSSIAN_BLUR, big, 0), STSL_PARAM_KERNEL_SIZE, 61);
    TU_ASSERT_OK(stsl_operator_set_float(g, STSL_PARAM_BLUR_SIGMA, 3.0));
    compare(g, "gaussian-blur", 2, 51, g_device);
}

static void sr_cases(void)
{
    static const stsl_shape shapes[] = {{1, 2, 2}, {3, 8, 8}, {2, 16, 24}, {1, 64, 32}, {3, 64, 64}};
    static const char *names[] = {"sr2", "sr4", "sr8"};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int f = 2, fi = 0; f <= 8; f *= 2, fi++) {
            stsl_shape s = shapes[si];
            if (s.height % f || s.width % f) continue;
            for (int filt = 0; filt < 2; filt++)
                compare(with_int(make(STSL_OP_SR, s, f), STSL_PARAM_SR_FILTER, filt), names[fi], BATCHES[filt],
                        60 + si * 10 + f, g_device);
        }
}

static void pointwise_cases(void)
{
    for (size_t si = 0; si < NSHAPES; si++) {
        stsl_shape s = SHAPES[si];
        int b = BATCHES[si % 2];
        compare(make(STSL_OP_IDENTITY, s, 0), "denoise", b, 100 + si, g_device);
        compare(make(STSL_OP_SALT_PEPPER, s, 0), "salt-pepper", b, 110 + si, g_device);
        compare(make(STSL_OP_RANDOM_INPAINT, s, 0), "random-inpaint", b, 120 + si, g_device);
        stsl_operator *op = make(STSL_OP_RANDOM_INPAINT, s, 0);
        TU_ASSERT_OK(stsl_operator_set_float(op, STSL_PARAM_DROP_RATE, 0.9));
        compare(with_int(op, STSL_PARAM_SEED, 3), "random-inpaint", 2, 130 + si, g_device);
        compare(make(STSL_OP_BOX_INPAINT, s, 0), "box-inpaint", b, 140 + si, g_device);
        if (s.height >= 4 && s.width >= 4) {
            op = with_int(make(STSL_OP_BOX_INPAINT, s, 0), STSL_PARAM_BOX_HEIGHT, 3);
            with_int(with_int(with_int(op, STSL_PARAM_BOX_WIDTH, 2), STSL_PARAM_BOX_TOP, 0), STSL_PARAM_BOX_LEFT,
                     s.width - 2);
            compare(op, "box-inpaint", 1, 150 + si, g_device);
        }
        for (int per_channel = 0; per_channel < 2; per_channel++) {
            size_t count = per_channel ? ssize(s) : (size_t)s.height * s.width;
            float *mk = malloc(count * 4);
            tu_fill_uniform(mk, count, 9 + si, 0, 1);
            op = make(STSL_OP_MASK_INPAINT, s, 0);
            TU_ASSERT_OK(stsl_operator_set_mask(op, mk, count));
            compare(op, "mask-inpaint", b, 160 + si, g_device);
            free(mk);
        }
    }
}

static void nonlinear_cases(void)
{
    for (size_t si = 0; si < NSHAPES; si++) {
        stsl_shape s = SHAPES[si];
        int b = BATCHES[si % 2];
        compare(make(STSL_OP_HDR, s, 0), "hdr", b, 200 + si, g_device);
        stsl_operator *op = make(STSL_OP_HDR, s, 0);
        TU_ASSERT_OK(stsl_operator_set_float(op, STSL_PARAM_HDR_ALPHA, 1.25));
        compare(op, "hdr", 1, 210 + si, g_device);
        compare(make(STSL_OP_PHASE_RETRIEVAL, s, 0), "phase-retrieval", b, 220 + si, g_device);
        op = make(STSL_OP_PHASE_RETRIEVAL, s, 0);
        TU_ASSERT_OK(stsl_operator_set_float(op, STSL_PARAM_OVERSAMPLING, 1.5));
        compare(op, "phase-retrieval", 2, 230 + si, g_device);
    }
}

static void matrix_cases(void)
{
    static const stsl_shape shapes[] = {{1, 1, 1}, {1, 3, 2}, {3, 8, 8}};
    static const int rows[] = {1, 5, 50};
    for (size_t si = 0; si < 3; si++) {
        size_t count = (size_t)rows[si] * ssize(shapes[si]);
        float *mat = malloc(count * 4);
        tu_fill_uniform(mat, count, 300 + si, -0.1f, 0.1f);
        stsl_operator *op = NULL;
        TU_ASSERT_OK(stsl_operator_create_matrix(ctx(), shapes[si], rows[si], mat, &op));
        compare(op, "matrix", BATCHES[si % 2], 310 + si, g_device);
        free(mat);
    }
}

static void run_all_cases(void)
{
    blur_cases();
    sr_cases();
    pointwise_cases();
    nonlinear_cases();
    matrix_cases();
}

static void print_summary(const char *where)
{
    if (!stsl_has_torch()) return;
    fprintf(stderr, "\n  torch ops on %s vs the C operators (%s): forward / adjoint-or-VJP, over the cases\n", where,
            g_device >= 0 ? "max abs / (1 + max |C|)" : "max abs");
    for (int i = 0; i < g_nerrs; i++)
        fprintf(stderr, "    %-16s %9.3g %9.3g  (%d cases)\n", g_errs[i].name, g_errs[i].fwd, g_errs[i].adj,
                g_errs[i].cases);
}

static void test_every_kind_cpu(void)
{
    g_device = STSL__DEVOP_CPU;
    g_nerrs = 0;
    run_all_cases();
    print_summary("the CPU");
    if (stsl_has_torch()) CU_ASSERT(g_nerrs == 14);   /* every kind and SR factor was compared */
}

static void test_every_kind_cuda(void)
{
    if (!stsl_cuda_available()) {
        fprintf(stderr, "\n  (no usable CUDA device: the CUDA comparison is skipped)\n");
        return;
    }
    g_device = 0;
    g_nerrs = 0;
    run_all_cases();
    print_summary("cuda:0");
    g_device = STSL__DEVOP_CPU;
}

/* data_fit (the host's loss over a device forward, the device's VJP) equals the C one. */
static void test_data_fit(void)
{
    if (!stsl_has_torch()) return;
    stsl_shape s = {3, 24, 24};
    size_t n = ssize(s);
    stsl_operator_kind kinds[] = {STSL_OP_GAUSSIAN_BLUR, STSL_OP_SR, STSL_OP_HDR, STSL_OP_PHASE_RETRIEVAL};
    for (int k = 0; k < 4; k++)
        for (int loss = 0; loss < 3; loss++) {
            stsl_operator *op = make(kinds[k], s, kinds[k] == STSL_OP_SR ? 4 : 0);
            TU_ASSERT_OK(stsl_operator_set_int(op, STSL_PARAM_LOSS, loss));
            stsl_shape o;
            TU_ASSERT_OK(stsl_operator_output_shape(op, &o));
            size_t m = 2 * ssize(o);
            float *x = malloc(2 * n * 4), *y = malloc(m * 4), *gc = malloc(2 * n * 4), *gd = malloc(2 * n * 4);
            tu_fill_uniform(x, 2 * n, 400 + k, -1, 1);
            tu_fill_uniform(y, m, 410 + k, -1, 1);
            double lc[2], ld[2];
            TU_ASSERT_OK(stsl_operator_data_fit(op, y, x, 2, lc, gc));
            TU_ASSERT_OK(stsl__operator_use_device(op, STSL__DEVOP_CPU));
            TU_ASSERT_OK(stsl_operator_data_fit(op, y, x, 2, ld, gd));
            for (int b = 0; b < 2; b++) CU_ASSERT(fabs(ld[b] - lc[b]) <= 1e-5 * (1 + fabs(lc[b])));
            /* L1's gradient is sign(r): a residual within rounding of 0 may flip it */
            if (loss != STSL_LOSS_L1) CU_ASSERT(tu_max_abs_diff(gd, gc, 2 * n) <= 1e-4);
            stsl_operator_destroy(op);
            free(x), free(y), free(gc), free(gd);
        }
}

/* One buffer as input and output, and four threads on one handle, on the device path. */
typedef struct tjob {
    stsl_operator *op;
    const float *x;
    float *y, *back;
    stsl_status st;
} tjob;

static void *tjob_run(void *p)
{
    tjob *j = p;
    j->st = stsl_operator_forward(j->op, j->x, j->y, 2);
    if (j->st == STSL_OK) j->st = stsl_operator_adjoint(j->op, j->y, j->back, 2);
    return NULL;
}

static void test_in_place_and_threads(void)
{
    if (!stsl_has_torch()) return;
    stsl_shape s = {3, 32, 32};
    size_t n = 2 * ssize(s);
    stsl_operator *op = make(STSL_OP_MOTION_BLUR, s, 0);
    TU_ASSERT_OK(stsl__operator_use_device(op, STSL__DEVOP_CPU));
    float *x = malloc(n * 4), *ref = malloc(n * 4), *refb = malloc(n * 4), *buf = malloc(n * 4);
    float *outs = malloc(4 * 2 * n * 4);
    tu_fill_uniform(x, n, 500, -1, 1);
    tjob serial = {op, x, ref, refb, STSL_OK};
    tjob_run(&serial);
    TU_ASSERT_OK(serial.st);
    memcpy(buf, x, n * 4);
    TU_ASSERT_OK(stsl_operator_forward(op, buf, buf, 2));
    CU_ASSERT(memcmp(buf, ref, n * 4) == 0);
    pthread_t t[4];
    tjob jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (tjob){op, x, outs + 2 * i * n, outs + (2 * i + 1) * n, STSL_OK};
        pthread_create(&t[i], NULL, tjob_run, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        TU_ASSERT_OK(jobs[i].st);
        CU_ASSERT(memcmp(jobs[i].y, ref, n * 4) == 0);
        CU_ASSERT(memcmp(jobs[i].back, refb, n * 4) == 0);
    }
    stsl_operator_destroy(op);
    free(x), free(ref), free(refb), free(buf), free(outs);
}

static int one(void *u, const float *x, float *y, int batch)
{
    (void)u;
    memcpy(y, x, (size_t)batch * 64 * sizeof(float));   /* the 1x8x8 shape below */
    return 0;
}

/* The device follows the context: "cpu" keeps the C code, "cuda" without a GPU fails at prepare
 * with STSL_ERR_BACKEND and says why, "auto" without one keeps the C code; user callbacks stay on
 * the host whatever the device. */
static void test_device_from_context(void)
{
    stsl_context *c = NULL;
    TU_ASSERT_OK(stsl_context_create(&c));
    stsl_shape s = {1, 8, 8};
    stsl_operator *op = NULL;
    TU_ASSERT_OK(stsl_operator_create(c, STSL_OP_GAUSSIAN_BLUR, s, 0, &op));
    TU_ASSERT_OK(stsl_operator_prepare(op));
    CU_ASSERT_PTR_NULL(op->dev);
    stsl_operator_destroy(op);
    TU_ASSERT_OK(stsl_context_set_device(c, "auto"));
    TU_ASSERT_OK(stsl_operator_create(c, STSL_OP_SR, s, 2, &op));
    TU_ASSERT_OK(stsl_operator_prepare(op));
    CU_ASSERT(stsl_cuda_available() ? op->dev != NULL : op->dev == NULL);
    stsl_operator_destroy(op);
    stsl_operator_vtable vt = {sizeof vt, 1, s, one, one, NULL, NULL};
    TU_ASSERT_OK(stsl_context_set_device(c, "cuda"));
    TU_ASSERT_OK(stsl_operator_create_custom(c, s, &vt, NULL, &op));
    TU_ASSERT_OK(stsl_operator_prepare(op));
    CU_ASSERT_PTR_NULL(op->dev);
    TU_ASSERT_STATUS(stsl__operator_use_device(op, STSL__DEVOP_CPU), STSL_ERR_UNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(stsl_operator_last_error(op), "host only"));
    stsl_operator_destroy(op);
    if (!stsl_cuda_available()) {
        stsl_operator_kind kinds[] = {STSL_OP_GAUSSIAN_BLUR, STSL_OP_RANDOM_INPAINT, STSL_OP_PHASE_RETRIEVAL};
        for (int k = 0; k < 3; k++) {
            TU_ASSERT_OK(stsl_operator_create(c, kinds[k], s, 0, &op));
            TU_ASSERT_STATUS(stsl_operator_prepare(op), STSL_ERR_BACKEND);
            const char *msg = stsl_operator_last_error(op);
            CU_ASSERT_PTR_NOT_NULL(strstr(msg, "\"cuda:0\""));
            CU_ASSERT_PTR_NOT_NULL(strstr(msg, stsl_has_torch() ? "CUDA is not available" : "without libtorch"));
            /* and the first use reports the same */
            float x[64] = {0}, y[64];
            TU_ASSERT_STATUS(stsl_operator_forward(op, x, y, 1), STSL_ERR_BACKEND);
            stsl_operator_destroy(op);
        }
        TU_ASSERT_OK(stsl_operator_create(c, STSL_OP_SR, s, 2, &op));
        TU_ASSERT_STATUS(stsl__operator_use_device(op, 0), STSL_ERR_BACKEND);
        stsl_operator_destroy(op);
    }
    stsl_context_destroy(c);
}

int main(void)
{
    static const stsl_test tests[] = {
        {"every kind: torch ops on the CPU equal the C code (1e-5)", test_every_kind_cpu},
        {"every kind: torch ops on CUDA vs the C code (when a GPU is usable)", test_every_kind_cuda},
        {"data_fit on the device path", test_data_fit},
        {"in-place and concurrent calls on the device path", test_in_place_and_threads},
        {"the device follows the context; user callbacks stay on the host", test_device_from_context},
        {NULL, NULL},
    };
    int rc = stsl_test_main("device_ops", tests);
    stsl_context_destroy(g_ctx);
    return rc;
}
