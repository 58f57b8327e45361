/*
 * metrics.h -- PSNR and SSIM of images in [-1, 1] (the library's scale), the one C definition:
 * every C program of the project (stsl-bench, scripts/cuda_probe.c) measures with these, and
 * scripts/stsl_metrics.py is the same definition for the Python scripts (tests/tools/test_metrics.c
 * checks that the two agree).  Both map the values to [0, 1] and clip them there first.
 * No dependency but libm: a program may compile this file alone.
 */
#ifndef STSL_METRICS_H
#define STSL_METRICS_H

#include <stddef.h>

/* PSNR in dB with peak 1 over n values; 120 dB when the mean squared error is at most 1e-12. */
double metric_psnr(const float *a, const float *b, size_t n);
/* SSIM with an 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, L 1, over the valid region,
 * averaged over windows and channels (Wang et al. 2004); a side shorter than 11 uses the centred
 * part of the window that fits, renormalised.  Planar channels x height x width. */
double metric_ssim(const float *a, const float *b, int channels, int height, int width);

#endif
