/*
 * testbed.h -- the exact-posterior testbed (test and benchmark support, not part of libstsl: built
 * into libstsl_testbed.a for the tests and stsl-bench; Makefile): a Gaussian-mixture
 * prior with isotropic component covariance var * I, a dense linear operator A and Gaussian
 * noise sigma_y, for which the posterior is again a Gaussian mixture:
 *     Sigma = (I / var + A^T A / sigma_y^2)^-1          (shared by all components)
 *     m_i   = Sigma (A^T y / sigma_y^2 + mu_i / var)
 *     w_i  ∝ w_i N(y; A mu_i, sigma_y^2 I + var A A^T)
 * Two builders:
 *  - stsl__testbed_mcg: the MCGdiff benchmark (25 components on the grid (-8i, -8j), i, j in
 *    -2..2, tiled to d_x; var 1; weights ∝ squared standard normals; A = U diag(s) V with U, V
 *    orthonormal (Gram-Schmidt on Gaussian matrices: U and the row space of V are Haar
 *    distributed, as the SVD factors of a Gaussian matrix are) and s sorted uniform(0, 1)
 *    descending; sigma_y = uniform(0, 1) * max(s); y = A x* + sigma_y n with x* from the prior).
 *  - stsl__testbed_image: an image-shaped mixture (means are smooth random images in [-0.8, 0.8])
 *    under a real library operator (linear, its noise sigma = sigma_y), A read off the operator by
 *    applying it to the unit vectors, y from stsl_operator_measure.
 * All randomness from stsl__rng_* with STSL_TAG_TESTBED streams: a seed gives one instance.
 */
#ifndef STSL_TESTBED_H
#define STSL_TESTBED_H

#include "stsl.h"

#include <stddef.h>
#include <stdint.h>

/* Size of the `err` buffers the builders below write a message into. */
#define STSL_TESTBED_ERR_SIZE 512

typedef struct stsl__testbed {
    stsl_shape shape;
    size_t dx, dy;
    int k;
    double var;        /* component variance (isotropic) */
    double *w;         /* k prior weights (normalised) */
    double *mu;        /* k * dx prior means */
    double *A;         /* dy * dx, row-major */
    double *y;         /* dy */
    double sigma_y;
    double *x_true;    /* dx: the signal y was measured from */
    /* posterior */
    double *pw;        /* k weights */
    double *pm;        /* k * dx means */
    double *L;         /* dx * dx lower Cholesky factor of the precision P = Sigma^-1 */
    double *pmean;     /* dx posterior mean */
} stsl__testbed;

stsl_status stsl__testbed_mcg(int dx, int dy, uint64_t seed, stsl__testbed **out, char *err);
/* op: linear, on `shape`, with its noise sigma set (> 0); k components with variance var. */
stsl_status stsl__testbed_image(stsl_operator *op, stsl_shape shape, int k, double var,
                                uint64_t seed, stsl__testbed **out, char *err);
void stsl__testbed_destroy(stsl__testbed *tb);

/* The prior as a gmm score handle (shape (1,1,dx) for mcg, the image shape otherwise). */
stsl_status stsl__testbed_score(const stsl__testbed *tb, stsl_context *ctx,
                                const stsl_schedule *sched, stsl_score **out, char *err);
/* The operator as a dense matrix operator with NOISE_SIGMA = sigma_y. */
stsl_status stsl__testbed_operator(const stsl__testbed *tb, stsl_context *ctx, stsl_operator **out,
                                   char *err);
/* n exact samples (n * dx floats) of the posterior / the prior. */
stsl_status stsl__testbed_sample_posterior(const stsl__testbed *tb, size_t n, uint64_t seed,
                                           float *out);
void stsl__testbed_sample_prior(const stsl__testbed *tb, size_t n, uint64_t seed, float *out);
/* y as floats (dy) */
void stsl__testbed_y(const stsl__testbed *tb, float *y);

/* The settings a solver gets in the testbed (docs/algorithms.md, "exact-posterior testbed"):
 * defaults, except that likelihood weights are made consistent with sigma_y where the solver
 * has one: stsl/stsl-biased LAMBDA = 1/(2 sigma_y^2).  rmp and dps-mo read sigma_y from the
 * operator (zeta = 1 is exact);
 * dps, ldps and psld keep their step-size defaults (they are step sizes, not weights). */
stsl_status stsl__testbed_configure(const stsl__testbed *tb, stsl_solver *solver);

/* Sliced Wasserstein-2 distance between two equally sized sample sets (n points of d floats):
 * sqrt(mean over nproj random unit directions of the 1-D W2^2 of the sorted projections);
 * the directions come from `seed`.  Returns NaN on allocation failure. */
double stsl__sliced_wasserstein(const float *a, const float *b, size_t n, size_t d, int nproj,
                                uint64_t seed);

/* Solve a x = b in place (b becomes x) for an n x n symmetric positive definite a (row-major,
 * overwritten by its lower Cholesky factor): the testbed's own solver.  -1 if a is not SPD. */
int stsl__testbed_spd_solve(double *a, size_t n, double *b);

#endif
