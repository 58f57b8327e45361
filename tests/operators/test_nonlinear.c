/*
 * Nonlinear operators (hdr, phase retrieval): forward against independent double-precision
 * references, VJPs against central finite differences of those references, and the
 * linear-only calls refused with a message.
 */
#include "common/testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PI 3.14159265358979323846

static size_t ssize(stsl_shape s) { return (size_t)s.channels * s.height * s.width; }

static void test_hdr(void)
{
    stsl_shape s = {3, 5, 7};
    size_t n = ssize(s);
    float x[105], y[105], v[105], g[105], b[105];
    tu_fill_uniform(x, n, 1, -1, 1);
    tu_fill_normal(v, n, 2);
    stsl_operator *op = NULL;
    TU_ASSERT_OK(stsl_operator_create(NULL, STSL_OP_HDR, s, 0, &op));
    CU_ASSERT_EQUAL(stsl_operator_is_linear(op), 0);
    TU_ASSERT_OK(stsl_operator_forward(op, x, y, 1));
    for (size_t i = 0; i < n; i++) CU_ASSERT(y[i] == fmaxf(-1.0f, fminf(1.0f, 2.0f * x[i])));
    TU_ASSERT_OK(stsl_operator_vjp(op, x, v, g, 1));
    /* central differences of the exact map in double, away from the kinks |2x| = 1 */
    int checked = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(fabs(2.0 * x[i]) - 1.0) < 1e-2) continue;
        double h = 1e-3, xp = x[i] + h, xm = x[i] - h;
        double fp = fmax(-1, fmin(1, 2 * xp)), fm = fmax(-1, fmin(1, 2 * xm));
        double fd = v[i] * (fp - fm) / (2 * h);
        CU_ASSERT(fabs(fd - g[i]) < 1e-4 * (1 + fabs(fd)));
        checked++;
    }
    CU_ASSERT(checked > 50);
    /* back-projection inverts the unsaturated part */
    TU_ASSERT_OK(stsl_operator_backproject(op, y, b, 1));
    for (size_t i = 0; i < n; i++)
        if (fabsf(2 * x[i]) < 1) CU_ASSERT(fabsf(b[i] - x[i]) < 1e-6f);
    /* no adjoint for a nonlinear operator */
    TU_ASSERT_STATUS(stsl_operator_adjoint(op, y, b, 1), STSL_ERR_UNSUPPORTED);
    CU_ASSERT(strstr(stsl_operator_last_error(op), "nonlinear") != NULL);
    TU_ASSERT_STATUS(stsl_operator_vjp(op, NULL, v, g, 1), STSL_ERR_INVALID_ARG);
    stsl_operator_destroy(op);
    /* alpha is a parameter */
    TU_ASSERT_OK(stsl_operator_create_by_name(NULL, "hdr", s, &op));
    TU_ASSERT_OK(stsl_operator_set_float(op, STSL_PARAM_HDR_ALPHA, 0.5));
    TU_ASSERT_OK(stsl_operator_vjp(op, x, v, g, 1));
    for (size_t i = 0; i < n; i++) CU_ASSERT(fabsf(g[i] - 0.5f * v[i]) < 1e-7f);
    TU_ASSERT_STATUS(stsl_operator_set_float(op, STSL_PARAM_HDR_ALPHA, -1.0), STSL_ERR_INVALID_ARG);
    stsl_operator_destroy(op);
}

/* |DFT| of the zero-padded plane, orthonormal, fftshifted: naive double reference. */
static void ref_phase(const double *x, int H, int W, int N1, int N2, double *y)
{
    int top = (N1 - H) / 2, left = (N2 - W) / 2;
    double norm = 1.0 / sqrt((double)N1 * N2);
    for (int k1 = 0; k1 < N1; k1++)
        for (int k2 = 0; k2 < N2; k2++) {
            double re = 0, im = 0;
            for (int i = 0; i < H; i++)
                for (int j = 0; j < W; j++) {
                    double a = -2 * PI * ((double)k1 * (i + top) / N1 + (double)k2 * (j + left) / N2);
                    re += x[i * W + j] * cos(a);
                    im += x[i * W + j] * sin(a);
                }
            int s1 = (k1 + N1 / 2) % N1, s2 = (k2 + N2 / 2) % N2;
            y[s1 * N2 + s2] = sqrt(re * re + im * im) * norm;
        }
}

static void check_phase(stsl_shape s, double os, int N1, int N2)
{
    stsl_operator *op = NULL;
    TU_ASSERT_OK(stsl_operator_create(NULL, STSL_OP_PHASE_RETRIEVAL, s, 0, &op));
    TU_ASSERT_OK(stsl_operator_set_float(op, STSL_PARAM_OVERSAMPLING, os));
    stsl_shape o;
    TU_ASSERT_OK(stsl_operator_output_shape(op, &o));
    CU_ASSERT(o.channels == s.channels && o.height == N1 && o.width == N2);
    if (o.height != N1 || o.width != N2) {
        stsl_operator_destroy(op);
        return;
    }
    int H = s.height, W = s.width, C = s.channels;
    size_t n = ssize(s), m = (size_t)C * N1 * N2, plane = (size_t)H * W, oplane = (size_t)N1 * N2;
    float *x = malloc(n * 4), *y = malloc(m * 4), *v = malloc(m * 4), *g = malloc(n * 4);
    double *xd = malloc(plane * 8), *yd = malloc(oplane * 8), *yp = malloc(oplane * 8), *ym = malloc(oplane * 8);
    tu_fill_uniform(x, n, 40 + H, -1, 1);
    tu_fill_normal(v, m, 41 + W);
    TU_ASSERT_OK(stsl_operator_forward(op, x, y, 1));
    TU_ASSERT_OK(stsl_operator_vjp(op, x, v, g, 1));
    double worst_f = 0, worst_g = 0;
    for (int c = 0; c < C; c++) {
        for (size_t i = 0; i < plane; i++) xd[i] = x[c * plane + i];
        ref_phase(xd, H, W, N1, N2, yd);
        for (size_t k = 0; k < oplane; k++) worst_f = fmax(worst_f, fabs(yd[k] - y[c * oplane + k]));
        /* d/dx_i <v, |F P x|> by central differences of the double reference */
        for (size_t i = 0; i < plane; i++) {
            double h = 1e-5, keep = xd[i];
            xd[i] = keep + h;
            ref_phase(xd, H, W, N1, N2, yp);
            xd[i] = keep - h;
            ref_phase(xd, H, W, N1, N2, ym);
            xd[i] = keep;
            double fd = 0;
            for (size_t k = 0; k < oplane; k++) fd += v[c * oplane + k] * (yp[k] - ym[k]) / (2 * h);
            worst_g = fmax(worst_g, fabs(fd - g[c * plane + i]) / (1 + fabs(fd)));
        }
    }
    if (!(worst_f < 1e-5 && worst_g < 1e-4))
        fprintf(stderr, "\n  phase %dx%dx%d os %g: forward err %g, vjp err %g\n", C, H, W, os, worst_f, worst_g);
    CU_ASSERT(worst_f < 1e-5);
    CU_ASSERT(worst_g < 1e-4);
    stsl_operator_destroy(op);
    free(x), free(y), free(v), free(g), free(xd), free(yd), free(yp), free(ym);
}

static void test_phase_retrieval(void)
{
    check_phase((stsl_shape){1, 4, 5}, 2.0, 8, 10);
    check_phase((stsl_shape){2, 3, 3}, 2.0, 6, 6);
    check_phase((stsl_shape){1, 5, 4}, 1.5, 8, 6);   /* odd padded size */
    check_phase((stsl_shape){1, 1, 1}, 2.0, 2, 2);
    check_phase((stsl_shape){3, 1, 6}, 1.0, 1, 6);

    stsl_shape s = {1, 8, 8};
    stsl_operator *op = NULL;
    TU_ASSERT_OK(stsl_operator_create_by_name(NULL, "phase-retrieval", s, &op));
    CU_ASSERT_EQUAL(stsl_operator_is_linear(op), 0);
    float x[64], y[256], b[64];
    tu_fill_uniform(x, 64, 3, -1, 1);
    TU_ASSERT_OK(stsl_operator_forward(op, x, y, 1));
    TU_ASSERT_STATUS(stsl_operator_adjoint(op, y, b, 1), STSL_ERR_UNSUPPORTED);
    CU_ASSERT(strlen(stsl_operator_last_error(op)) > 0);
    TU_ASSERT_OK(stsl_operator_backproject(op, y, b, 1));
    /* |F| = 0 everywhere (x = 0) must not produce NaN in the VJP */
    float z[64] = {0}, v[256], g[64];
    tu_fill_normal(v, 256, 9);
    TU_ASSERT_OK(stsl_operator_vjp(op, z, v, g, 1));
    for (int i = 0; i < 64; i++) CU_ASSERT(isfinite(g[i]));
    TU_ASSERT_STATUS(stsl_operator_set_float(op, STSL_PARAM_OVERSAMPLING, 0.5), STSL_ERR_INVALID_ARG);
    stsl_operator_destroy(op);
}

/* data_fit through a nonlinear operator uses its VJP: compare with finite differences. */
static void test_nonlinear_data_fit(void)
{
    stsl_shape s = {1, 4, 4};
    const char *names[2] = {"hdr", "phase-retrieval"};
    for (int k = 0; k < 2; k++) {
        stsl_operator *op = NULL;
        TU_ASSERT_OK(stsl_operator_create_by_name(NULL, names[k], s, &op));
        stsl_shape o;
        TU_ASSERT_OK(stsl_operator_output_shape(op, &o));
        size_t m = ssize(o);
        float x[16], xp[16], g[16], *y = malloc(m * 4);
        tu_fill_uniform(x, 16, 5, -0.45f, 0.45f);
        TU_ASSERT_OK(stsl_operator_measure(op, x, y, 1, 3));
        tu_fill_uniform(x, 16, 6, -0.45f, 0.45f);
        double l, lp, lm, worst = 0;
        TU_ASSERT_OK(stsl_operator_data_fit(op, y, x, 1, &l, g));
        for (int i = 0; i < 16; i++) {
            double h = 1e-3;
            memcpy(xp, x, sizeof x);
            xp[i] = x[i] + (float)h;
            TU_ASSERT_OK(stsl_operator_data_fit(op, y, xp, 1, &lp, NULL));
            xp[i] = x[i] - (float)h;
            TU_ASSERT_OK(stsl_operator_data_fit(op, y, xp, 1, &lm, NULL));
            worst = fmax(worst, fabs((lp - lm) / (2 * h) - g[i]) / (1 + fabs(g[i])));
        }
        if (!(worst < 1e-2)) fprintf(stderr, "\n  %s data_fit fd error %g\n", names[k], worst);
        CU_ASSERT(worst < 1e-2);
        stsl_operator_destroy(op);
        free(y);
    }
}

int main(void)
{
    static const stsl_test tests[] = {
        {"hdr forward, vjp, back-projection", test_hdr},
        {"phase retrieval vs naive DFT and finite differences", test_phase_retrieval},
        {"data_fit gradient through nonlinear operators", test_nonlinear_data_fit},
        {NULL, NULL},
    };
    return stsl_test_main("operators-nonlinear", tests);
}
