/*
 * dps_mo.c -- DPS with Measurements Optimization (Chen, Wang & Zhou, arXiv 2412.03941; only the
 * summary is in ../shared/papers: "MO l.N" are the lines of the paper's MO algorithm as the
 * summary and public reimplementations give them: l.1 the DPS step, l.2-7 N optimisation steps on
 * the measurement loss from the estimate, l.9 re-noise, l.10 denoise).  The reading here is the
 * one that makes it a valid reverse process (issue 28; docs/algorithms.md, dps-mo).
 *
 * VE coordinates on the VP model: x_vp = sqrt(abar) x, sigma^2 = (1 - abar)/abar, denoiser
 * D(x) = x0hat_vp(sqrt(abar) x, t(sigma)); EDM ladder sigma_1 = SIGMA_MAX > ... > sigma_n =
 * SIGMA_MIN (rho 7), sigma_{n+1} = 0.  The sampler is DDPM/DDIM's step on that ladder with the
 * POSTERIOR denoiser E[x0 | x, y] in place of D(x).  Its estimate (eq. T, Tweedie for p(x0 | x)):
 *   p(x0 | x) ~ N(D(x), C),  C = sigma^2 J,  J = dD/dx (symmetric: Cov[x0 | x] / sigma^2),
 * so E[x0 | x, y] is the minimiser of the surrogate's negative log-posterior, in units of l
 *   F(u) = l(y, A u) + iw/2 (u - D(x))^T C^-1 (u - D(x)),   iw = 1 / (ZETA w(v_y))     (eq. F)
 * (w l: the noise model's negative log-likelihood, stsl__nll_weight; a noiseless operator: iw = 0).
 * DPS and MO are K = 1 + N steps of its minimisation over directions preconditioned by C, each
 * exact along its direction and H-conjugate to the earlier ones (preconditioned CG; H u =
 * grad l(x0 + u) - grad l(x0) + iw C^-1 u, operator work only; C v is one UNet VJP):
 *   x ~ N(0, sigma_1^2 I);  s_prev = 0
 *   for i = 1 .. n (sigma = sigma_i):
 *    for pass = 1 .. PASSES (DENOISE_PASSES), at the point z (pass 1: z = x):
 *     0. x0 = D(z) (kept for its VJP), r = -grad l(x0), u = x0, s = 0        [s = C^-1 (u - x0)]
 *     for j = 0 .. N (one UNet VJP each):
 *       1. DPS (j = 0, N = 0 or i = 1): v = r, the preconditioned DPS gradient C grad l(x0)
 *          (as DPS's J^T A^T (A x0 - y), here exactly line-searched in posterior-mean units)
 *       2. MO l.2-7 (j >= 1; j = 0 when N >= 1 and i > 1: the previous level's correction v =
 *          s_prev, carried as a warm start): v = r
 *          p = C v, conjugated against the earlier p (H-orthogonal); u += a p, s += a C^-1 p,
 *          r -= a H p, a = (r . p) / (p . H p)     (skipped where p . H p <= 0: not convex there)
 *     s_prev = s;  x0' = u                                                   [~ E[x0 | z, y]]
 *     3. MO l.9-10 (pass < PASSES): re-noise x0' with the noise x carries, eps^ = (x - x0) / sigma,
 *        and denoise again with the posterior denoiser: z = x0' + sigma eps^ = x + (u - x0)
 *        (fresh noise here under-dispersed the prior: D(D(x) + sigma xi), issue 28).  Why: on a
 *        mixture the Gaussian of eq. F blurs neighbouring components at the middle levels and
 *        pass 1 alone left 3-5 % of the samples in components of posterior weight 0; z is x moved
 *        sigma^2 along the surrogate's likelihood score, so pass 2 weighs the likelihood again
 *        where it selects the component (the shift is O(sigma^2): nothing at the ladder's end)
 *     4. DDIM's step from x with ETA (fresh noise; ETA 1 = DDPM's ancestral step, the
 *        reverse SDE; 0 = Euler on the probability-flow ODE), eps^ = (x - x0') / sigma:
 *          x <- x0' + sqrt(sigma_{i+1}^2 - e^2) eps^ + e xi,  e = ETA sigma_{i+1} sqrt(1 - sigma_{i+1}^2/sigma^2)
 *        on the levels with sigma > ETA_SIGMA, e = 0 (the ODE) below.  Why [choice]: with x0'
 *        a mean where the transition wants a draw, each coarse ancestral step drops
 *        (1 - sigma_{i+1}^2/sigma^2)^2 Cov[x0 | x] of the variance, so ETA 1 to the end
 *        under-disperses a component (guidance off: spread 0.90 of the truth at 50 levels);
 *        the ODE keeps the spread (0.96-0.98) but on the top levels misplaces the components'
 *        weights (TV 0.13-0.17 at d_x 24-40); the ancestral step above sigma 8, where the
 *        weights are set, and the ODE below give both (0.956-0.987, TV <= 0.09 at d_x 8-40)
 *        RENOISE_LEVEL 1: x <- x0' + sigma_{i+1} xi (all fresh noise, the paper's l.9 read literally)
 *   return x0' of the last level
 * ZETA 0: x0' = D(x), one UNet forward per level: the prior sampler (tests/solvers,
 * test_solvers_exact "dps-mo with guidance and MO off").
 * Where the paper is silent and what was chosen: the MO loss's prior term (none in the paper, whose
 * SGLD drifted freely along A's null space; here the Tweedie Gaussian of eq. F), the optimiser
 * (paper: SGLD with a step and temperature; here conjugate directions, no step to set, no noise:
 * the step needs the mean), the re-noise (paper: fresh noise to the current level and a denoise,
 * which turned D(x) into D(D(x) + sigma xi), an under-dispersed sampler; here the predicted noise
 * and the posterior denoiser, step 3, then DDPM's posterior q(x_{i+1} | x_i, x0')).  Step 3 is
 * exact Gaussian conditioning only for a linear operator, the squared loss and a pixel prior;
 * elsewhere the defaults keep one pass (solver_params.c: it threw images off the prior there).
 * The probe of H p is taken at x0 + tau p with |tau p| = 0.1 max(|x0|, 1) and divided by tau: at
 * small sigma p is tiny and the float difference grad l(x0 + p) - grad l(x0) would be roundoff
 * (exact for a linear A and the squared loss; a secant otherwise).
 * Defaults: the parameter table (solver_params.c).
 * NFE per level (ZETA > 0): PASSES (1 + N) UNet VJPs (the first of each pass one pass with D:
 * stsl__kept); ZETA 0: 1 forward.  Latent prior (l goes through the decoder): PASSES (2 + N)
 * decoder VJPs per level (grad l at x0 and at each probe; one pass each when the autoencoder keeps
 * evaluations, else a forward + a VJP), + 1 decoder forward for the output.
 */
#include "solvers/solver_internal.h"

#include <math.h>
#include <string.h>

/* the probe of H p: |tau p| = STSL__MO_PROBE max(|x0|, 1) (header) */
#define STSL__MO_PROBE 0.1

/* out = C v = sigma^2 J v at the level's kept evaluation: J_vp^T v (stsl__tweedie_kept_vjp; a
 * full VJP at the same point after the first), J = sqrt(ab) J_vp, J^T = J */
static stsl_status cov_times(stsl__run *R, stsl__kept *kp, double s2, double sab, const float *v,
                             float *out)
{
    stsl_status st = stsl__tweedie_kept_vjp(R, kp, v, out);
    const size_t m = (size_t)R->batch * R->dz;
    if (st == STSL_OK)
        for (size_t k = 0; k < m; k++) out[k] = (float)(s2 * sab * out[k]);
    return st;
}

/* The level's work buffers (m = batch * dz floats each; P, SP, HP hold K directions). */
typedef struct mo_work {
    float *xv, *eps, *c0, *r, *s, *xi, *P, *SP, *HP;
    double *pHp, *tau;
} mo_work;

/* Steps 0-2 at the point x (VE coordinates, level sigma, time t): d = D(x), u = the surrogate's
 * E[x0 | x, y] (eq. F's minimiser over K conjugate directions), s = C^-1 (u - d); warm (or NULL):
 * the first MO direction.  K UNet VJPs (the first one pass with D(x): stsl__kept). */
static stsl_status posterior_mean(stsl__run *R, mo_work *W, int K, double iw, const float *x,
                                  double si, double t, const float *warm, float *d, float *u,
                                  float *s)
{
    const size_t m = (size_t)R->batch * R->dz, B = (size_t)R->batch, dz = R->dz;
    const double s2 = si * si, sab = sqrt(stsl__ab(R, t));
    float *r = W->r, *c0 = W->c0, *xi = W->xi;
    for (size_t k = 0; k < m; k++) W->xv[k] = (float)(sab * x[k]);
    /* 0. d = D(x) kept for the VJPs of 1.-2., r = -grad l(d) */
    stsl__kept kp = {0};
    stsl_status st = stsl__tweedie_keep(R, W->xv, t, W->eps, d, R->batch, &kp);
    if (st == STSL_OK) st = stsl__data_cotangent(R, d, 1.0, 1, NULL, NULL, c0);
    memcpy(u, d, m * sizeof(float));
    memset(s, 0, m * sizeof(float));
    for (size_t k = 0; k < m; k++) r[k] = -c0[k];
    for (int j = 0; j < K && st == STSL_OK; j++) {
        float *p = W->P + (size_t)j * m, *sp = W->SP + (size_t)j * m, *hp = W->HP + (size_t)j * m;
        /* 1. DPS: v = r; 2. MO: v = the warm start first, then v = r */
        const float *v = j == 0 && warm ? warm : r;
        memcpy(sp, v, m * sizeof(float));
        if ((st = cov_times(R, &kp, s2, sab, v, p)) != STSL_OK) break;
        /* H p = (grad l(d + tau p) - grad l(d)) / tau + iw C^-1 p */
        for (size_t b = 0; b < B; b++) {
            const size_t o = b * dz;
            const double pn = sqrt(stsl__dot(p + o, p + o, dz)), xn = sqrt(stsl__dot(d + o, d + o, dz));
            W->tau[b] = pn > 0 ? STSL__MO_PROBE * (xn > 1 ? xn : 1) / pn : 1;
            for (size_t k = o; k < o + dz; k++) xi[k] = (float)(d[k] + W->tau[b] * p[k]);
        }
        if ((st = stsl__data_cotangent(R, xi, 1.0, 1, NULL, NULL, hp)) != STSL_OK) break;
        for (size_t b = 0; b < B; b++) {
            const double tau = W->tau[b];
            for (size_t k = b * dz; k < (b + 1) * dz; k++)
                hp[k] = (float)((hp[k] - c0[k]) / tau + iw * sp[k]);
        }
        for (size_t b = 0; b < B; b++) {
            const size_t o = b * dz;
            /* H-conjugate to the earlier directions (Gram-Schmidt in the H inner product) */
            for (int l = 0; l < j; l++) {
                const double dl = W->pHp[(size_t)l * B + b];
                if (!(dl > 0)) continue;
                const size_t ol = (size_t)l * m + o;
                const double be = stsl__dot(W->HP + ol, p + o, dz) / dl;
                /* one array a loop: each vectorises (three writes in one loop would not) */
                for (size_t k = 0; k < dz; k++) p[o + k] = (float)(p[o + k] - be * W->P[ol + k]);
                for (size_t k = 0; k < dz; k++) sp[o + k] = (float)(sp[o + k] - be * W->SP[ol + k]);
                for (size_t k = 0; k < dz; k++) hp[o + k] = (float)(hp[o + k] - be * W->HP[ol + k]);
            }
            /* exact step along p: a = (r . p) / (p . H p) */
            const double dd = stsl__dot(p + o, hp + o, dz);
            W->pHp[(size_t)j * B + b] = dd;
            if (!(dd > 0)) continue;
            const double a = stsl__dot(r + o, p + o, dz) / dd;
            for (size_t k = o; k < o + dz; k++) u[k] = (float)(u[k] + a * p[k]);
            for (size_t k = o; k < o + dz; k++) s[k] = (float)(s[k] + a * sp[k]);
            for (size_t k = o; k < o + dz; k++) r[k] = (float)(r[k] - a * hp[k]);
        }
    }
    stsl__kept_free(&kp);
    return st;
}

stsl_status stsl__solve_dps_mo(stsl__run *R, float *x_out)
{
    const int n = stsl__param_int(R, STSL_PARAM_STEPS);
    const int NS = stsl__param_int(R, STSL_PARAM_INNER_STEPS);
    const int passes = stsl__param_int(R, STSL_PARAM_DENOISE_PASSES);
    const int renoise_next = stsl__param_int(R, STSL_PARAM_RENOISE_LEVEL);
    const double eta = stsl__param(R, STSL_PARAM_ETA);
    const double eta_sigma = stsl__param(R, STSL_PARAM_ETA_SIGMA);
    const double zeta = stsl__param(R, STSL_PARAM_ZETA);
    double smin, smax;   /* SIGMA_MIN, SIGMA_MAX within the schedule (stsl__sigma_range) */
    const int K = 1 + NS;   /* directions (UNet VJPs) per pass */
    const size_t m = (size_t)R->batch * R->dz;
    stsl_status st = STSL_OK;
    mo_work W = {0};
    double *sig = stsl__run_doubles(R, (size_t)n + 1);
    float *x = stsl__run_buffer(R, m), *x0 = stsl__run_buffer(R, m), *d = stsl__run_buffer(R, m),
          *u = stsl__run_buffer(R, m), *s = stsl__run_buffer(R, m), *sprev = stsl__run_buffer(R, m),
          *xp = stsl__run_buffer(R, m), *xi = stsl__run_buffer(R, m);
    W.xv = stsl__run_buffer(R, m);
    W.eps = stsl__run_buffer(R, m);
    W.c0 = stsl__run_buffer(R, m);
    W.r = stsl__run_buffer(R, m);
    W.xi = stsl__run_buffer(R, m);
    W.P = stsl__run_buffer(R, (size_t)K * m);
    W.SP = stsl__run_buffer(R, (size_t)K * m);
    W.HP = stsl__run_buffer(R, (size_t)K * m);
    W.pHp = stsl__run_doubles(R, (size_t)K * R->batch);
    W.tau = stsl__run_doubles(R, (size_t)R->batch);
    if (!sig || !x || !x0 || !d || !u || !s || !sprev || !xp || !xi || !W.xv || !W.eps || !W.c0 ||
        !W.r || !W.xi || !W.P || !W.SP || !W.HP || !W.pHp || !W.tau) {
        st = stsl__fail(R->err, STSL_ERR_NOMEM, "solver dps-mo: out of memory");
        goto done;
    }
    {
        if ((st = stsl__sigma_range(R, "dps-mo", &smin, &smax)) != STSL_OK) goto done;
        if ((st = stsl_sigmas_edm(n, smin, smax, 7.0, sig)) != STSL_OK) {
            st = stsl__fail(R->err, st, "solver dps-mo: cannot build the EDM ladder");
            goto done;
        }
        sig[n] = 0.0;
    }
    /* eq. F's prior weight iw = 1 / (ZETA w(v_y)) */
    const double vy = stsl__noise_var(R);
    const double iw = vy > 0 && zeta > 0 ? 1.0 / (zeta * stsl__nll_weight(R, vy)) : 0.0;
    R->total = n;
    R->step = 0;
    stsl__noise(R, STSL_TAG_INIT_NOISE, 0, 0, x, R->dz);
    for (size_t k = 0; k < m; k++) x[k] = (float)(sig[0] * x[k]);
    memset(x0, 0, m * sizeof(float));
    R->est = x0;
    for (int i = 0; i < n; i++) {
        R->step = i + 1;
        const double si = sig[i];
        const double t = stsl__time_of_sigma(R, si);
        /* step 4's xi does not depend on the network: drawn while steps 0-3 run */
        const double nx = sig[i + 1], q = nx / si;
        /* ETA's step above ETA_SIGMA, the ODE's below */
        const double e = renoise_next ? nx : si > eta_sigma ? eta * nx * sqrt(1 - q * q) : 0.0;
        stsl__noise_ahead step4 = {0};
        if (e > 0) stsl__noise_ahead_begin(R, &step4, STSL_TAG_RENOISE, (uint64_t)i, 0, xi, R->dz);
        if (zeta > 0) {
            /* 0.-2. at x: d = D(x), x0' = u ~ E[x0 | x, y] */
            st = posterior_mean(R, &W, K, iw, x, si, t, NS > 0 && i > 0 ? sprev : NULL, d, u, s);
            /* 3. (pass >= 2) MO l.9-10: re-noise x0' with the noise x carries, eps^ = (x - d) / sigma,
             *    x' = x0' + sigma eps^ = x + (x0' - d), and denoise x' with the posterior denoiser */
            for (int pass = 1; pass < passes && st == STSL_OK; pass++) {
                for (size_t k = 0; k < m; k++) xp[k] = (float)(x[k] + (u[k] - d[k]));
                memcpy(sprev, s, m * sizeof(float));
                st = posterior_mean(R, &W, K, iw, xp, si, t, NS > 0 ? sprev : NULL, d, u, s);
            }
            stsl__noise_ahead_end(&step4);
            if (st != STSL_OK) goto done;
            memcpy(sprev, s, m * sizeof(float));
            memcpy(x0, u, m * sizeof(float));   /* x0' */
        } else {
            const double ab = stsl__ab(R, t), sab = sqrt(ab);
            for (size_t k = 0; k < m; k++) W.xv[k] = (float)(sab * x[k]);
            st = stsl__net_eps_t(R, W.xv, t, W.eps, R->batch);
            stsl__noise_ahead_end(&step4);
            if (st != STSL_OK) goto done;
            stsl__tweedie(ab, W.xv, W.eps, x0, m);
        }
        /* 4. x <- x0' + sqrt(sigma_{i+1}^2 - e^2) (x - x0') / sigma + e xi
         *    (RENOISE_LEVEL 1: e = sigma_{i+1}, so the first term is 0: all fresh noise) */
        const double cd = sqrt(nx * nx - e * e) / si;
        for (size_t k = 0; k < m; k++)
            x[k] = (float)(x0[k] + cd * (x[k] - x0[k]) + (e > 0 ? e * xi[k] : 0.0));
        if ((st = stsl__check_finite(R, x, m, "the DPS-MO iterate")) != STSL_OK) goto done;
        if ((st = stsl__progress(R, R->step, x0)) != STSL_OK) goto done;
    }
done:
    return stsl__end_run(R, st, x0, x_out);
}
