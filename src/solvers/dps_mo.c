/*
 * dps_mo.c -- DPS with Measurement Optimisation (MO summary; structure from the summary, settings
 * chosen on the GMM testbed, docs/algorithms.md).  The DPS step of 1. is taken in the model's VP
 * coordinates (x_vp -= zeta grad_{x_vp} ||.||, i.e. x -= zeta grad_{x_vp} / sqrt(abar)), so zeta means
 * what it means for dps; taking it in VE coordinates (x -= zeta grad_x) made it ~abar times weaker
 * and the sampler 5x worse on the testbed.
 *
 * Outer loop: an EDM (Karras) ladder sigma_1 = sigma_max > ... > sigma_n = sigma_min (rho 7),
 * sigma_{n+1} = 0, in VE coordinates mapped onto the VP model: x_vp = sqrt(abar) x,
 * sigma^2 = (1 - abar)/abar, denoiser D(x, sigma) = x0hat_vp(sqrt(abar) x, t(sigma)).
 *   x ~ N(0, sigma_max^2 I)
 *   for i = 1 .. n:
 *     1. x0 = D(x, sigma_i) and the DPS step on x (one UNet forward + one VJP):
 *          x_vp <- x_vp - zeta grad_{x_vp} ||y - A x0hat||          (norm, as DPS)
 *     2. MO: N SGLD steps on the measurement loss only, from x0 (operator work only):
 *          x0 <- x0 - step grad ||y - A x0||^2 + sqrt(2 step temperature) xi
 *     3. re-noise to the current level and denoise: x0 <- D(x0 + sigma_i xi', sigma_i)  (one forward)
 *     4. Euler step to the next level: x <- x0 + (sigma_{i+1}/sigma_i) (x - x0)
 *   return x0 of the last level
 * Defaults (STEPS 100, INNER 3, LEARNING_RATE (SGLD step) 0.25/||A||_2^2, ZETA 0.3 (1.5 for the
 * impulse-noise losses), SIGMA_MAX 80,
 * SIGMA_MIN 0.01 clamped to the schedule's range, TEMPERATURE 0).  TEMPERATURE 2 sigma_y^2 makes the
 * SGLD target the Gaussian likelihood exp(-||y - A x0||^2 / (2 sigma_y^2)) (the GMM testbed sets it),
 * but that target is flat along A's null space: every step adds sqrt(2 step temperature) of noise
 * there that nothing in MO pulls back, and the re-noise/denoise at small sigma cannot remove it.  On
 * the shipped prior plain descent (temperature 0) restored 1.2-3.8 dB better on every validation
 * task (sr4 17.3 vs 13.7 dB: the operator-scaled step is 4 there), docs/algorithms.md.
 * With INNER = 0 it is DPS on an EDM/Euler ladder.
 * NFE: n UNet VJPs (step 1, one pass each: stsl__kept) + n UNet forwards (step 3).  Latent prior
 * (SGLD acts on z0 through D): n (1 + N) decoder VJPs (one pass each), + 1 decoder forward for
 * the output.
 */
/*
 * dps_mo.c -- DPS with Measurements Optimization (Chen, Wang & Zhou, arXiv 2412.03941; only the
 * summary is in ../shared/papers, so "MO l.N" below are the lines of the paper's MO algorithm as
 * the summary and public reimplementations give them: l.2-7 N SGLD steps on ||y - A x0||^2 from
 * the estimate, l.9 re-noise to the current level, l.10 denoise; "EDM" is Karras et al.'s Euler
 * step, the paper's outer loop).  The reading here is the one that makes it a valid reverse
 * process (issue 28; docs/algorithms.md, dps-mo):
 *
 * VE coordinates on the VP model: x_vp = sqrt(abar) x, sigma^2 = (1 - abar)/abar, denoiser
 * D(x, sigma) = x0hat_vp(sqrt(abar) x, t(sigma)); EDM ladder sigma_1 = SIGMA_MAX > ... > sigma_n =
 * SIGMA_MIN (rho 7), sigma_{n+1} = 0.  The sampler is the Euler discretisation of the posterior
 * probability-flow ODE dx/dsigma = (x - E[x0 | x, y]) / sigma: EDM's step with the posterior
 * denoiser E[x0 | x, y] in place of D(x).  DPS and MO are two estimates of that denoiser's
 * correction E[x0 | x, y] - D(x) = sigma^2 grad_x log p(y | x) (Tweedie's formula for p(x | y)):
 *   x ~ N(0, sigma_1^2 I)
 *   for i = 1 .. n (sigma = sigma_i, r = sigma_{i+1}/sigma_i):
 *     1. DPS (one UNet VJP): x0 = D(x), and with DPS's p(y | x) ~ p(y | x0 = D(x)), Gaussian of
 *        variance v = sigma_y^2 + sigma^2 ||A||_2^2 (sigma_y^2 plus the bound sigma^2 on
 *        Cov[x0 | x] seen through A, as PiGDM does with its r^2):
 *          xd = x0 - zeta sigma^2 grad_x [w(v) l(y, A D(x))]
 *        with w(v) l the noise model's negative log-likelihood (stsl__nll_weight).  ZETA = 1 is
 *        that likelihood; the step is in the units of the posterior mean, so it does not depend
 *        on the number of levels (the Euler step below lets (1 - r) of it into x, a Riemann sum
 *        of the ODE), on d_y (squared residual, not its norm) or on sigma_y (it is in v).
 *     2. MO l.2-7 (N steps, operator work only): SGLD from u = xd on the surrogate posterior of
 *        the clean image, q(u) ~ exp(-w(sigma_y^2) l(y, A u) - ||u - xd||^2 / (2 sigma^2)):
 *          u <- u - h grad(-log q)(u) + sqrt(2 h TEMPERATURE) xi,
 *          h = LEARNING_RATE / (w L + 1/sigma^2)  (L: Lipschitz constant of grad l)
 *        The paper's loss has no prior term; its SGLD is then flat along A's null space and every
 *        step adds noise there that nothing takes out (docs/algorithms.md).  The term
 *        ||u - xd||^2 / (2 sigma^2) is the forward kernel x = x0 + sigma eps seen from x0: it holds
 *        u to what the current level allows, so TEMPERATURE 1 (q itself) samples and 0 optimises.
 *     3. MO l.9-10 (one UNet forward, only when N > 0): re-noise to the CURRENT level with the
 *        path's own noise x - x0 (the paper draws fresh noise: with N = 0 that turned D(x) into
 *        D(D(x) + sigma xi), an under-dispersed sampler, spread 0.61 of the prior) and denoise:
 *          x0' = D(x + (u - xd), sigma) + (xd - x0)
 *        D(x + delta) - D(x) ~ J_D delta = Cov[x0 | x] delta / sigma^2: the denoiser projects MO's
 *        increment delta onto what the prior allows at this level; DPS's increment, already a
 *        posterior-mean correction, is added as is.  N = 0: x0' = xd, no forward.
 *     4. EDM Euler step: x <- x0' + r (x - x0').
 *   return x0' of the last level
 * With zeta 0 and N 0 this is EDM's deterministic sampler of the prior (tests/solvers,
 * test_solvers_exact: "dps-mo with guidance and MO off").  RENOISE_LEVEL 1 replaces 3.-4. by the
 * fresh re-noising of u to the NEXT level, x <- u + sigma_{i+1} xi (no forward; the option kept for
 * comparison, worse on the testbed).
 * Defaults: the parameter table (solver.c).
 * NFE: n UNet VJPs (step 1, one pass each: stsl__kept) + n UNet forwards (step 3, when N > 0).
 * Latent prior (SGLD acts on z0 through the decoder): n (1 + N) decoder VJPs (one pass each),
 * + 1 decoder forward for the output.
 */
#include "solvers/solver_internal.h"

#include <math.h>
#include <string.h>

/* lower bound on j (a Rayleigh quotient of the denoiser's Jacobian, in (0, 1] for a log-concave
 * prior) where it divides MO's increment: a flat direction of the prior takes no correction */
#define STSL__MO_J_FLOOR 1e-2

stsl_status stsl__solve_dps_mo(stsl__run *R, float *x_out)
{
    stsl_solver *sv = R->sv;
    const int n = stsl__sp_int(sv, STSL_PARAM_STEPS);
    const int NS = stsl__sp_int(sv, STSL_PARAM_INNER_STEPS);
    const int renoise_next = stsl__sp_int(sv, STSL_PARAM_RENOISE_LEVEL);
    const double step_frac = stsl__sp(sv, STSL_PARAM_LEARNING_RATE);
    const double temp = stsl__sp(sv, STSL_PARAM_TEMPERATURE);
    const double zeta = stsl__sp(sv, STSL_PARAM_ZETA);
    double smin = stsl__sp(sv, STSL_PARAM_SIGMA_MIN), smax = stsl__sp(sv, STSL_PARAM_SIGMA_MAX);
    const size_t m = (size_t)R->batch * R->dz;
    stsl_status st = STSL_OK;
    double *sig = stsl__alloc_doubles((size_t)n + 1), *loss = NULL, *jr = NULL, *loss1 = NULL;
    float *x = stsl__run_floats(R, m), *x0 = stsl__run_floats(R, m), *xv = stsl__run_floats(R, m),
          *eps = stsl__run_floats(R, m), *g = stsl__run_floats(R, m), *xi = stsl__run_floats(R, m),
          *c = stsl__run_floats(R, m), *xd = stsl__run_floats(R, m), *u = stsl__run_floats(R, m);
    if (!sig || !x || !x0 || !xv || !eps || !g || !xi || !c || !xd || !u) {
        st = stsl__fail(R->err, STSL_ERR_NOMEM, "solver dps-mo: out of memory");
        goto done;
    }
    {
        const double lo = sqrt((1 - stsl__ab(R, 0)) / stsl__ab(R, 0));
        const double hi = sqrt((1 - stsl__ab(R, R->T_train - 1)) / stsl__ab(R, R->T_train - 1));
        if (smin < lo) smin = lo;
        if (smax > hi) smax = hi;
        if (!(smax > smin)) {
            st = stsl__fail(R->err, STSL_ERR_INVALID_ARG,
                            "solver dps-mo: sigma ladder [%g, %g] is empty on this schedule", smin,
                            smax);
            goto done;
        }
        if ((st = stsl_sigmas_edm(n, smin, smax, 7.0, sig)) != STSL_OK) {
            st = stsl__fail(R->err, st, "solver dps-mo: cannot build the EDM ladder");
            goto done;
        }
        sig[n] = 0.0;
    }
    /* ||A||_2^2 (power iteration, no network call): the bound on A Cov[x0|x] A^T in step 1 and
     * the curvature of the likelihood in step 2 */
    double L2 = 1.0;
    if ((st = stsl__op_norm2(R, &L2)) != STSL_OK) goto done;
    /* the noise model: variance vy and the factor wy making wy * l its negative log-likelihood;
     * a noiseless operator (vy = 0) makes the likelihood a constraint: 1/wy = 0 below */
    const double vy = stsl__noise_var(R);
    const double inv_wy = vy > 0 ? 1.0 / stsl__nll_weight(R, vy) : 0.0;
    /* Lipschitz constant of grad l: 2 ||A||^2 for ||y - A x||^2, ||A||^2 for Huber (r^2/2) and
     * as the scale of L1's */
    const double lip = (R->loss_kind == STSL_LOSS_SQUARED ? 2.0 : 1.0) * L2;   /* kappa L2 */
    /* l = (kappa/2) ||r||^2: kappa 2 for ||y - A x||^2, 1 for Huber inside delta (L1: as Huber) */
    const double kappa = R->loss_kind == STSL_LOSS_SQUARED ? 2.0 : 1.0;
    loss = stsl__alloc_doubles((size_t)R->batch);
    jr = stsl__alloc_doubles((size_t)R->batch);
    loss1 = stsl__alloc_doubles((size_t)R->batch);
    if (!loss || !jr || !loss1) {
        st = stsl__fail(R->err, STSL_ERR_NOMEM, "solver dps-mo: out of memory");
        goto done;
    }
    R->total = n;
    R->step = 0;
    stsl__noise(R, STSL_TAG_INIT_NOISE, 0, 0, x, R->dz);
    for (size_t k = 0; k < m; k++) x[k] = (float)(sig[0] * x[k]);
    memset(x0, 0, m * sizeof(float));
    R->est = x0;
    for (int i = 0; i < n; i++) {
        R->step = i + 1;
        const double si = sig[i], s2 = si * si;
        const double t = stsl__time_of_sigma(R, si), ab = stsl__ab(R, t), sab = sqrt(ab);
        /* 1. x0 = D(x), c = grad_x0 l(y, A x0) and g = J_vp^T c in one kept UNet pass; the
         * VE Jacobian of D is J = sqrt(ab) J_vp (symmetric: Cov[x0|x] / sigma^2) */
        for (size_t k = 0; k < m; k++) xv[k] = (float)(sab * x[k]);
        {
            stsl__kept kp = {0};
            st = stsl__tweedie_keep(R, xv, t, eps, x0, R->batch, &kp);
            if (st == STSL_OK) st = stsl__data_cotangent(R, x0, 1.0, 1, loss, NULL, c);
            if (st == STSL_OK) st = stsl__tweedie_kept_vjp(R, &kp, c, g);
            stsl__kept_free(&kp);
            if (st != STSL_OK) goto done;
        }
        /* d = J c (the DPS direction), and ||A d||^2 from the loss at x0 + d (linear A:
         * l(x0 + d) = l(x0) + q + (kappa/2) ||A d||^2, q = c^T J c; operator work only) */
        for (size_t k = 0; k < m; k++) u[k] = (float)(x0[k] + sab * g[k]);
        if ((st = stsl__data_cotangent(R, u, 1.0, 1, loss1, NULL, xi)) != STSL_OK) goto done;
        for (int b = 0; b < R->batch; b++) {
            const size_t o = (size_t)b * R->dz;
            double q = 0, cc = 0;
            for (size_t k = o; k < o + R->dz; k++) {
                q += (double)c[k] * sab * g[k];
                cc += (double)c[k] * c[k];
            }
            /* j: the Rayleigh quotient of J along c, Cov[x0|x] / sigma^2 in that direction;
             * in (0, 1] for a log-concave prior, clamped there for a learned denoiser */
            jr[b] = cc > 0 && q > 0 ? q / cc : 1.0;
            jr[b] = jr[b] < STSL__MO_J_FLOOR ? STSL__MO_J_FLOOR : jr[b] > 1.0 ? 1.0 : jr[b];
            /* exact minimiser along d of w l(x0 + a d) + a^2 d^T Cov^-1 d / 2, d^T Cov^-1 d =
             * q / sigma^2 (the Gaussian approximation N(x0hat, sigma^2 J) of p(x0 | x)) */
            double Ad2 = 2.0 / kappa * (loss1[b] - loss[b] - q);
            if (Ad2 < 0) Ad2 = 0;
            const double den = kappa * s2 * Ad2 + inv_wy * q;
            const double alpha = q > 0 && den > 0 ? -s2 * q / den : 0.0;
            for (size_t k = o; k < o + R->dz; k++)
                xd[k] = (float)(x0[k] + zeta * alpha * sab * g[k]);
        }
        /* 2. MO l.2-7: SGLD from xd on -log q(u) = wy l(y, A u) + ||u - x0||^2 / (2 sigma^2 j),
         * the Gaussian conditional of x0 ~ N(x0hat, sigma^2 j I); h wy and h / (sigma^2 j) written
         * so that a noiseless operator (1/wy = 0) is finite */
        memcpy(u, xd, m * sizeof(float));
        for (int s = 0; s < NS; s++) {
            if ((st = stsl__data_cotangent(R, u, 1.0, 1, NULL, NULL, c)) != STSL_OK) goto done;
            if (temp > 0) stsl__noise(R, STSL_TAG_SGLD, (uint64_t)i, (uint64_t)s, xi, R->dz);
            for (int b = 0; b < R->batch; b++) {
                const size_t o = (size_t)b * R->dz;
                const double sj = s2 * jr[b], curv = lip * sj + inv_wy;
                const double h_data = step_frac * sj / curv, h_prior = step_frac * inv_wy / curv;
                const double sd = sqrt(2.0 * step_frac * sj * inv_wy / curv * temp);
                for (size_t k = o; k < o + R->dz; k++)
                    u[k] = (float)(u[k] - h_data * c[k] - h_prior * (u[k] - x0[k]) +
                                   (temp > 0 ? sd * xi[k] : 0.0));
            }
        }
        if (renoise_next) {
            /* 3'. the MO result re-noised with fresh noise to the NEXT level (no Euler step) */
            stsl__noise(R, STSL_TAG_RENOISE, (uint64_t)i, 0, xi, R->dz);
            for (size_t k = 0; k < m; k++) x[k] = (float)(u[k] + sig[i + 1] * xi[k]);
            memcpy(x0, u, m * sizeof(float));
        } else {
            if (NS > 0) {
                /* 3. MO l.9-10: re-noise with the path's own noise, denoise at sigma_i:
                 * x0' = D(x + (u - xd)) + (xd - x0) */
                for (int b = 0; b < R->batch; b++)
                    for (size_t k = (size_t)b * R->dz; k < (size_t)(b + 1) * R->dz; k++)
                        xv[k] = (float)(sab * (x[k] + (u[k] - x0[k]) / jr[b]));
                if ((st = stsl__net_eps_t(R, xv, t, eps, R->batch)) != STSL_OK) goto done;
                stsl__tweedie(ab, xv, eps, x0, m);
            } else {
                memcpy(x0, xd, m * sizeof(float));
            }
            /* 4. EDM Euler step with the posterior-denoiser estimate x0' */
            const double r = sig[i + 1] / si;
            for (size_t k = 0; k < m; k++) x[k] = (float)(x0[k] + r * (x[k] - x0[k]));
        }
        if ((st = stsl__check_finite(R, x, m, "the DPS-MO iterate")) != STSL_OK) goto done;
        if ((st = stsl__progress(R, R->step, x0)) != STSL_OK) goto done;
    }
    st = stsl__finish(R, x0, x_out);
done:
    st = stsl__end_run(R, st, x_out);
    stsl__free(sig);
    stsl__free(x);
    stsl__free(x0);
    stsl__free(xv);
    stsl__free(eps);
    stsl__free(g);
    stsl__free(xi);
    stsl__free(c);
    stsl__free(loss);
    stsl__free(jr);
    stsl__free(loss1);
    stsl__free(xd);
    stsl__free(u);
    return st;
}
