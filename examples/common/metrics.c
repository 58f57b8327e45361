/*
 * metrics.c -- see metrics.h.
 */
#include "common/metrics.h"

#include <math.h>

static double unit(float v)
{
    double u = 0.5 * ((double)v + 1.0);
    return u < 0.0 ? 0.0 : u > 1.0 ? 1.0 : u;
}

double metric_psnr(const float *a, const float *b, size_t n)
{
    double se = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = unit(a[i]) - unit(b[i]);
        se += d * d;
    }
    double mse = se / (double)n;
    if (mse <= 1e-12) return 120.0;
    return 10.0 * log10(1.0 / mse);
}

double metric_ssim(const float *a, const float *b, int channels, int height, int width)
{
    enum { K = 11 };
    double g[K], gs = 0.0;
    for (int i = 0; i < K; i++) {
        double d = i - K / 2;
        g[i] = exp(-d * d / (2.0 * 1.5 * 1.5));
        gs += g[i];
    }
    for (int i = 0; i < K; i++) g[i] /= gs;
    const double C1 = 0.01 * 0.01, C2 = 0.03 * 0.03;
    int kh = height < K ? height : K, kw = width < K ? width : K;
    /* Images smaller than the window: use a window as large as the image (renormalised). */
    double total = 0.0;
    long count = 0;
    for (int c = 0; c < channels; c++) {
        const float *pa = a + (size_t)c * height * width, *pb = b + (size_t)c * height * width;
        for (int i = 0; i + kh <= height; i++)
            for (int j = 0; j + kw <= width; j++) {
                double ma = 0, mb = 0, saa = 0, sbb = 0, sab = 0, ws = 0;
                for (int u = 0; u < kh; u++)
                    for (int v = 0; v < kw; v++) {
                        double wgt = g[u + (K - kh) / 2] * g[v + (K - kw) / 2];
                        double xa = unit(pa[(size_t)(i + u) * width + j + v]);
                        double xb = unit(pb[(size_t)(i + u) * width + j + v]);
                        ws += wgt;
                        ma += wgt * xa;
                        mb += wgt * xb;
                        saa += wgt * xa * xa;
                        sbb += wgt * xb * xb;
                        sab += wgt * xa * xb;
                    }
                ma /= ws;
                mb /= ws;
                double va = saa / ws - ma * ma, vb = sbb / ws - mb * mb, cab = sab / ws - ma * mb;
                total += ((2 * ma * mb + C1) * (2 * cab + C2)) /
                         ((ma * ma + mb * mb + C1) * (va + vb + C2));
                count++;
            }
    }
    return count ? total / (double)count : 1.0;
}
