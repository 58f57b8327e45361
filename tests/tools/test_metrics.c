/*
 * test_metrics.c -- the one PSNR/SSIM (examples/common/metrics.c): values known in closed form,
 * and agreement with the one Python definition (scripts/stsl_metrics.py) on the same arrays when
 * Debian's python3 with NumPy is there (else that test says it is skipped).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/metrics.h"
#include "common/testutil.h"

static void fill(float *x, size_t n, float v)
{
    for (size_t i = 0; i < n; i++) x[i] = v;
}

static void test_psnr_closed_form(void)
{
    float a[2 * 6 * 7], b[2 * 6 * 7];
    const size_t n = sizeof a / sizeof *a;
    fill(a, n, 0.0f);
    fill(b, n, 0.2f);   /* [0, 1]: 0.5 vs 0.6, MSE 0.01 */
    CU_ASSERT_DOUBLE_EQUAL(metric_psnr(a, b, n), 20.0, 1e-5);
    CU_ASSERT_DOUBLE_EQUAL(metric_psnr(b, a, n), 20.0, 1e-5);
    CU_ASSERT_DOUBLE_EQUAL(metric_psnr(a, a, n), 120.0, 0.0);
    /* values outside [-1, 1] are clipped first: 1.5 counts as 1 */
    fill(a, n, 1.5f);
    fill(b, n, 0.8f);   /* 1 vs 0.9 */
    CU_ASSERT_DOUBLE_EQUAL(metric_psnr(a, b, n), 20.0, 1e-5);
}

static void test_ssim_closed_form(void)
{
    enum { C = 2, H = 13, W = 12 };
    float a[C * H * W], b[C * H * W];
    tu_fill_uniform(a, C * H * W, 3, -1.0f, 1.0f);
    CU_ASSERT_DOUBLE_EQUAL(metric_ssim(a, a, C, H, W), 1.0, 1e-12);
    /* constant images: only the luminance term, (2 m_a m_b + C1) / (m_a^2 + m_b^2 + C1) */
    fill(a, C * H * W, 0.0f);
    fill(b, C * H * W, 0.2f);
    const double c1 = 1e-4, want = (2 * 0.5 * 0.6 + c1) / (0.25 + 0.36 + c1);
    CU_ASSERT_DOUBLE_EQUAL(metric_ssim(a, b, C, H, W), want, 1e-6);
    /* a window larger than the image is cut to it (5x4: one window) */
    CU_ASSERT_DOUBLE_EQUAL(metric_ssim(a, b, 1, 5, 4), want, 1e-6);
    /* structure lost: an image against its negative is far below 1 */
    tu_fill_uniform(a, C * H * W, 4, -1.0f, 1.0f);
    for (int i = 0; i < C * H * W; i++) b[i] = -a[i];
    CU_ASSERT(metric_ssim(a, b, C, H, W) < 0.0);
}

/* Both definitions on the same arrays: seeded images, one of 28x28 and one smaller than the window. */
static void test_python_agrees(void)
{
    const char *py = "/usr/bin/python3";
    char module_dir[1024];
    snprintf(module_dir, sizeof module_dir, "%s", tu_path("../scripts"));
    char probe[1200];
    snprintf(probe, sizeof probe, "%s -c 'import numpy' >/dev/null 2>&1", py);
    if (access(py, X_OK) != 0 || system(probe) != 0) {
        printf("\n  skipped: no %s with NumPy\n", py);
        return;
    }
    static const int shapes[2][3] = {{3, 28, 28}, {1, 7, 9}};
    for (int s = 0; s < 2; s++) {
        const int c = shapes[s][0], h = shapes[s][1], w = shapes[s][2];
        const size_t n = (size_t)c * h * w;
        float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
        CU_ASSERT_PTR_NOT_NULL_FATAL(a && b);
        tu_fill_uniform(a, n, 10 + s, -1.1f, 1.1f);   /* a little outside [-1, 1]: the clipping */
        tu_fill_normal(b, n, 20 + s);
        for (size_t i = 0; i < n; i++) b[i] = a[i] + 0.15f * b[i];
        char path[1024];
        snprintf(path, sizeof path, "%s/metrics-%d.f32", tu_tmpdir(), s);
        FILE *f = fopen(path, "wb");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        CU_ASSERT_EQUAL(fwrite(a, sizeof *a, n, f), n);
        CU_ASSERT_EQUAL(fwrite(b, sizeof *b, n, f), n);
        fclose(f);
        char cmd[4096];
        snprintf(cmd, sizeof cmd,
                 "%s -c 'import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import stsl_metrics as m; "
                 "x = np.fromfile(sys.argv[2], dtype=np.float32).reshape(2, %d, %d, %d); "
                 "print(\"%%.12f %%.12f\" %% (m.psnr(x[0], x[1]), m.ssim(x[0], x[1])))' '%s' '%s'",
                 py, c, h, w, module_dir, path);
        FILE *p = popen(cmd, "r");
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        double ppsnr = NAN, pssim = NAN;
        CU_ASSERT_EQUAL(fscanf(p, "%lf %lf", &ppsnr, &pssim), 2);
        CU_ASSERT_EQUAL(pclose(p), 0);
        double cpsnr = metric_psnr(a, b, n), cssim = metric_ssim(a, b, c, h, w);
        printf("\n  %dx%dx%d: PSNR C %.9f Python %.9f, SSIM C %.9f Python %.9f", c, h, w, cpsnr,
               ppsnr, cssim, pssim);
        CU_ASSERT_DOUBLE_EQUAL(cpsnr, ppsnr, 1e-9);
        CU_ASSERT_DOUBLE_EQUAL(cssim, pssim, 1e-9);
        CU_ASSERT(cpsnr > 5.0 && cpsnr < 60.0);   /* a real comparison, not two degenerate values */
        CU_ASSERT(cssim > 0.05 && cssim < 0.999);
        free(a), free(b);
    }
}

int main(void)
{
    static const stsl_test tests[] = {
        {"PSNR closed forms", test_psnr_closed_form},
        {"SSIM closed forms", test_ssim_closed_form},
        {"Python's definition agrees", test_python_agrees},
        {NULL, NULL},
    };
    return stsl_test_main("metrics", tests);
}
