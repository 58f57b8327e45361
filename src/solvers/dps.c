/*
 * dps.c -- Diffusion Posterior Sampling (Chung et al. 2023, Algorithm 1 "DPS - Gaussian").
 *
 *   x_N ~ N(0, I)                                                        (line 1)
 *   for i = N-1 .. 0:                                                    (line 2)
 *       eps   = eps_theta(x_i, i);  x0hat = (x_i - sqrt(1-abar_i) eps) / sqrt(abar_i)   (lines 3-4)
 *       z ~ N(0, I)                                                      (line 5)
 *       x'_{i-1} = sqrt(alpha_i)(1-abar_{i-1})/(1-abar_i) x_i
 *                + sqrt(abar_{i-1}) beta_i/(1-abar_i) x0hat + sigma_i z  (line 6, DDPM ancestral,
 *                  sigma_i^2 = beta_i (1-abar_{i-1})/(1-abar_i); no noise at the last step)
 *       x_{i-1} = x'_{i-1} - zeta * grad_{x_i} ||y - A D(x0hat)||       (line 7: the NORM, as the
 *                  reference code; zeta by task: solver_params.c)
 * On a DDIM subsequence (steps < timesteps) alpha_i = abar_i / abar_{i-1}.  x0hat is not clipped
 * (the reference clips to [-1, 1]; the exact-posterior testbed lives outside that box).
 * NFE per step: 1 UNet VJP -- eps is needed before the cotangent exists, so the evaluation is kept
 * and differentiated once x0hat has given the cotangent: one pass (stsl__kept) -- plus for a latent
 * prior 1 decoder VJP (same), and 1 decoder forward for the output.
 */
#include "solvers/solver_internal.h"

#include <math.h>
#include <string.h>

stsl_status stsl__solve_dps(stsl__run *R, float *x_out)
{
    const int T = stsl__param_int(R, STSL_PARAM_STEPS);
    const double zeta = stsl__param(R, STSL_PARAM_ZETA);   /* by task unless set */
    const size_t m = (size_t)R->batch * R->dz;
    int *seq = NULL;
    stsl_status st = stsl__ddim_seq(R, T, &seq);
    if (st != STSL_OK) return st;
    float *z = stsl__run_buffer(R, m), *eps = stsl__run_buffer(R, m), *x0 = stsl__run_buffer(R, m),
          *xi = stsl__run_buffer(R, m), *g = stsl__run_buffer(R, m);
    if (!z || !eps || !x0 || !xi || !g) {
        st = STSL_ERR_NOMEM;
        goto done;
    }
    stsl__start_from_noise(R, T, z);   /* line 1 */
    for (int i = T - 1; i >= 0; i--) {                               /* line 2 */
        R->step = T - i;
        const double t = seq[i], ab = stsl__ab(R, t), abp = stsl__ab(R, i > 0 ? seq[i - 1] : -1);
        const double alpha = ab / abp, beta = 1 - alpha;
        const double cz = sqrt(alpha) * (1 - abp) / (1 - ab), c0 = sqrt(abp) * beta / (1 - ab);
        const double sig = i > 0 ? sqrt(beta * (1 - abp) / (1 - ab)) : 0.0;
        /* line 5's z does not depend on the network: drawn while lines 3-4 run */
        stsl__noise_ahead line5 = {0};
        if (sig > 0) stsl__noise_ahead_begin(R, &line5, STSL_TAG_STEP_NOISE, (uint64_t)i, 0, xi, R->dz);
        else memset(xi, 0, m * sizeof(float));          /* the last step: one loop, vectorised */
        /* lines 3-4 and the gradient of line 7 */
        st = stsl__chain_grad(R, z, t, 1.0, 0, eps, x0, NULL, g);
        stsl__noise_ahead_end(&line5);
        if (st != STSL_OK) goto done;
        for (size_t k = 0; k < m; k++)                                  /* lines 6-7 */
            z[k] = (float)(cz * z[k] + c0 * x0[k] + sig * xi[k] - zeta * g[k]);
        if ((st = stsl__step_end(R, z, m, "the DPS iterate", x0)) != STSL_OK) goto done;
    }
done:
    stsl__free(seq);
    return stsl__end_run(R, st, z, x_out);                               /* return x_0 */
}
