/*
 * timing.h -- the benchmark tools' clock and median, header-only so that scripts/cuda_probe.c
 * (built on its own on a GPU machine) shares them without the tools' common objects.
 */
#ifndef STSL_EX_TIMING_H
#define STSL_EX_TIMING_H

#include <math.h>
#include <stdlib.h>
#include <time.h>

/* seconds on `clk` (CLOCK_MONOTONIC for wall time, CLOCK_THREAD_CPUTIME_ID for this thread's CPU) */
static inline double ex_clock_s(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline double ex_now_ms(void) { return 1e3 * ex_clock_s(CLOCK_MONOTONIC); }

static inline int ex_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts v in place; NaN when n <= 0). */
static inline double ex_median(double *v, int n)
{
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, ex_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#endif
