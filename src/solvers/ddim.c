/*
 * ddim.c -- unconditional DDIM (Song et al., "Denoising Diffusion Implicit Models", eq. 12):
 * the reference sampler; it ignores y (a sanity check and the "ignores the measurement" baseline
 * of the testbed).
 *
 *   x_T ~ N(0, I)
 *   for i = T .. 1 on the DDIM subsequence t_i (leading spacing), t_0 = clean end (abar = 1):
 *       eps   = eps_theta(x, t_i)                                   (1 UNet forward)
 *       x0hat = (x - sqrt(1 - abar_i) eps) / sqrt(abar_i)            (Tweedie)
 *       sigma = eta sqrt((1 - abar_{i-1}) / (1 - abar_i)) sqrt(1 - abar_i / abar_{i-1})   (eq. 16)
 *       x     = sqrt(abar_{i-1}) x0hat + sqrt(1 - abar_{i-1} - sigma^2) eps + sigma xi     (eq. 12)
 *   return D(x)
 * NFE: T UNet forwards.
 */
#include "solvers/solver_internal.h"

#include <math.h>

stsl_status stsl__solve_ddim(stsl__run *R, float *x_out)
{
    const int T = stsl__param_int(R, STSL_PARAM_STEPS);
    const double eta = stsl__param(R, STSL_PARAM_ETA);
    const size_t m = (size_t)R->batch * R->dz;
    int *seq = NULL;
    stsl_status st = stsl__ddim_seq(R, T, &seq);
    if (st != STSL_OK) return st;
    float *z = stsl__run_buffer(R, m), *eps = stsl__run_buffer(R, m), *x0 = stsl__run_buffer(R, m),
          *xi = stsl__run_buffer(R, m);
    if (!z || !eps || !x0 || !xi) {
        st = STSL_ERR_NOMEM;
        goto done;
    }
    stsl__start_from_noise(R, T, z);   /* x_T ~ N(0, I) */
    for (int i = T - 1; i >= 0; i--) {
        R->step = T - i;
        const double t = seq[i], ab = stsl__ab(R, t), abp = stsl__ab(R, i > 0 ? seq[i - 1] : -1);
        double sigma = eta > 0 ? eta * sqrt((1 - abp) / (1 - ab)) * sqrt(1 - ab / abp) : 0.0;
        double ce = sqrt(fmax(0.0, 1 - abp - sigma * sigma)), cx = sqrt(abp);
        stsl__noise_ahead noise = {0};   /* the step's noise, drawn while the network runs */
        if (sigma > 0) stsl__noise_ahead_begin(R, &noise, STSL_TAG_STEP_NOISE, (uint64_t)i, 0, xi, R->dz);
        st = stsl__net_eps_t(R, z, t, eps, R->batch);
        stsl__noise_ahead_end(&noise);
        if (st != STSL_OK) goto done;
        stsl__tweedie(ab, z, eps, x0, m);
        for (size_t k = 0; k < m; k++)
            z[k] = (float)(cx * x0[k] + ce * eps[k] + (sigma > 0 ? sigma * xi[k] : 0.0));
        if ((st = stsl__step_end(R, z, m, "the DDIM iterate", x0)) != STSL_OK) goto done;
    }
done:
    stsl__free(seq);
    return stsl__end_run(R, st, z, x_out);
}
