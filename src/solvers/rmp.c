/*
 * rmp.c -- Reverse Mean Propagation (Xue et al. 2024, "Score-Based Variational Inference for
 * Inverse Problems"), reconstructed from the summary (docs/algorithms.md has the derivation).
 *
 * The reverse conditional p_k(x_k | x_{k+1}, y) ∝ p(x_{k+1} | x_k) p_k(x_k) p(y | x_k) is fitted by
 * q_k = N(mu_k, Lambda_k^-1) with fixed precision; a natural-gradient step on the reverse KL is
 *     mu <- mu + s1 Lambda^-1 E_q[grad log p_k(x | x_{k+1}, y)],
 *     grad log p_k(x | .) ≈ grad_x log p(x_{k+1} | x) + s_theta(x, k) + zeta g(x),
 *     g(x) = grad_x log p(y | x0hat(x)) = -(1/v_k) J_x0hat^T A^T (A x0hat - y),
 *     v_k = sigma_y^2 + lambda r_k^2   (the "MMSE" likelihood: y | x_k ~ N(A x0hat, v_k I)),
 * with x_{k+1} replaced by the propagated mean mu_{k+1} and the expectation taken at the mean.
 * r_k^2 = (1 - abar_k)/abar_k (= sigma_k^2 on the VE ladder) is Var[x0 | x_k] under a flat prior and
 * lambda = tr(A A^T)/d_y the mean gain of A, so lambda r_k^2 I stands for A Cov[x0 | x_k] A^T.
 * Choice (docs/algorithms.md): with the bare 1/sigma_y^2 the first steps at abar ~ 1e-4 move mu
 * by 1e3 and the run overflows on the image prior; r_k^2 without lambda leaves sr4 (lambda ~ 1/16)
 * nearly unguided.
 *
 * VP (STSL_VARIANT_RMP_VP, default; T 400, T_in 1, s1 1):
 *     p(x_{k+1} | x) = N(sqrt(a) x, (1 - a) I), a = abar_{k+1}/abar_k, Lambda = a / (1 - a);
 *     start mu = mu_{k+1} / sqrt(a), then T_in times
 *     mu <- mu + s1 (1-a)/a [ sqrt(a)(mu_{k+1} - sqrt(a) mu)/(1 - a) + s(mu, k) + zeta g(mu, k) ]
 *     (T_in = 1: mu_k = mu_{k+1}/sqrt(a) + (1-a)/a (s + zeta g): a noise-free DDPM step + guidance).
 * VE (STSL_VARIANT_RMP_VE; T 30, T_in 20, s1 0.1 -- chosen on the testbed, docs/algorithms.md): a geometric ladder sigma_max -> sigma_min
 *     mapped onto the VP model by x_ve = x_vp / sqrt(abar), sigma^2 = (1 - abar)/abar, so
 *     s_ve(x) = sqrt(abar) s_vp(sqrt(abar) x) and g_ve = sqrt(abar) g_vp;
 *     Delta = sigma_{k+1}^2 - sigma_k^2, mu <- mu + s1 [(mu_{k+1} - mu) + Delta (s_ve + zeta g_ve)]
 *     T_in times from mu = mu_{k+1}: a damped fixed point of the implicit step.
 * Start: mu_T = 0 (VP: E[x_T] ≈ 0; VE: the prior mean is forgotten at sigma_max).
 * Output: x0hat(mu_0) (VP: mu at the clean end; VE: Tweedie at sigma_min), deterministic.
 * sigma_y is the operator's STSL_PARAM_NOISE_SIGMA (1 when it is 0 or absent); lambda is estimated
 * once per run from 4 Gaussian probes, E||A u||^2 = tr(A^T A) (operator work only).
 * NFE: T T_in UNet VJPs, one pass each (stsl__kept) (+ 1 forward for the VE output);
 * latent: T T_in decoder VJPs (one pass each), + 1 decoder forward.
 */
#include "solvers/solver_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* lambda = tr(A^T A)/d_y = E||A u||^2 / d_y for u ~ N(0, I), Hutchinson with 4 probes around 0.
 * The probes come from a fixed seed, not the run's: sample i of seed s must stay the single run with
 * seed s + i.  1 when the estimate is unusable (e.g. a nonlinear operator that maps 0 to 0 flatly). */
static stsl_status operator_gain(stsl__run *R, double *lambda)
{
    enum { PROBES = 4 };
    *lambda = 1.0;
    float *u = stsl__run_floats(R, PROBES * R->dx), *au = stsl__run_floats(R, PROBES * R->dy);
    stsl_status st = (u && au) ? STSL_OK : stsl__fail(R->err, STSL_ERR_NOMEM, "solver rmp: out of memory");
    if (st == STSL_OK) {
        stsl__rng_normal(0x524d50u, stsl__stream(STSL_TAG_PROBE, 0, 0, 0), 0, u, PROBES * R->dx);
        st = stsl_operator_forward(R->op, u, au, PROBES);
        if (st != STSL_OK)
            st = stsl__fail(R->err, st, "solver rmp: operator forward failed: %s",
                            stsl_operator_last_error(R->op));
    }
    if (st == STSL_OK) {
        double s = 0;
        for (size_t i = 0; i < PROBES * R->dy; i++) s += (double)au[i] * au[i];
        s /= (double)PROBES * (double)R->dy;
        if (isfinite(s) && s > 0) *lambda = s;
    }
    stsl__free(u);
    stsl__free(au);
    return st;
}

/* weight of the data loss at a level with r^2 = (1 - abar)/abar: the negative log-likelihood
 * weight of variance v_k = sigma_y^2 + lambda r^2 (1/(2 v_k) for ||A x0hat - y||^2) */
static double level_weight(const stsl__run *R, double sigma_y, double lambda, double r2)
{
    return stsl__nll_weight(R, sigma_y * sigma_y + lambda * r2);
}

/* g = (1/(2 v_b)) J_x0hat^T J_D^T grad_x ||A D(x0hat) - y||^2 at z (time t), per sample b, with
 * v_b = sigma_y^2 + c_b and c_b = tr(A Cov[x0|z] A^T)/d_y by Hutchinson:
 *     Cov[x0|z] = (1 - abar)/sqrt(abar) J_x0hat,  c_b ≈ (1 - abar)/sqrt(abar) mean_n u_n^T J_x0hat^T u_n / d_y,
 *     u_n = J_D^T A^T w_n, w_n ~ N(0, I_{d_y}),
 * clamped to [0, lambda r^2] (the flat-prior value bounds it: a prior only tightens the posterior
 * of x0 on average).  ONE batched kept evaluation: point b is z_b (the data cotangent), points
 * B + b N + n are copies of z_b (the probes): 1 + N VJPs per sample.  wb (B doubles) receives the
 * weight 1/(2 v_b) (the noise model's, stsl__nll_weight). */
static stsl_status tweedie_var_grad(stsl__run *R, const float *z, double t, double sy, double lambda,
                                    double r2, int N, uint64_t step, uint64_t it, float *eps,
                                    float *x0, float *g, double *wb)
{
    const int B = R->batch, np = B * (1 + N);
    const size_t dz = R->dz, dx = R->dx, dy = R->dy;
    const double ab = stsl__ab(R, t);
    float *pts = stsl__run_floats(R, (size_t)np * dz), *e = stsl__run_floats(R, (size_t)np * dz),
          *x0p = stsl__run_floats(R, (size_t)np * dz), *cot = stsl__run_floats(R, (size_t)np * dz),
          *gp = stsl__run_floats(R, (size_t)np * dz), *xim = stsl__run_floats(R, (size_t)B * N * dx),
          *w = stsl__run_floats(R, (size_t)B * N * dy), *u = stsl__run_floats(R, (size_t)B * N * dx);
    stsl__kept k = {0};
    stsl_status st = (pts && e && x0p && cot && gp && xim && w && u) ? STSL_OK : STSL_ERR_NOMEM;
    if (st == STSL_OK) {
        memcpy(pts, z, (size_t)B * dz * sizeof(float));
        for (int b = 0; b < B; b++)
            for (int n = 0; n < N; n++)
                memcpy(pts + ((size_t)B + (size_t)b * N + n) * dz, z + (size_t)b * dz, dz * sizeof(float));
        st = stsl__tweedie_keep(R, pts, t, e, x0p, np, &k);
    }
    /* data cotangent at the B first points (unit weight), and D(x0hat) for the probes' A^T */
    if (st == STSL_OK) st = stsl__data_cotangent(R, x0p, 1.0, 1, NULL, xim, cot);
    if (st == STSL_OK && R->ae_identity) memcpy(xim, x0p, (size_t)B * dx * sizeof(float));
    if (st == STSL_OK) {
        /* probe images: the decoded x0hat of each sample, N times (xim holds B images first) */
        for (int b = B - 1; b >= 0; b--)
            for (int n = N - 1; n >= 0; n--)
                memmove(xim + ((size_t)b * N + n) * dx, xim + (size_t)b * dx, dx * sizeof(float));
        stsl__noise(R, STSL_TAG_PROBE, step, it, w, (size_t)N * dy);
        st = stsl_operator_vjp(R->op, xim, w, u, B * N);
        if (st != STSL_OK)
            st = stsl__fail(R->err, st, "solver rmp: operator vjp failed: %s", stsl_operator_last_error(R->op));
    }
    if (st == STSL_OK)
        st = stsl__dec_vjp(R, x0p + (size_t)B * dz, u, NULL, cot + (size_t)B * dz, B * N);
    if (st == STSL_OK) st = stsl__tweedie_kept_vjp(R, &k, cot, gp);
    if (st == STSL_OK) {
        const double cmax = lambda * r2, f = (1 - ab) / sqrt(ab);
        for (int b = 0; b < B; b++) {
            double q = 0;
            for (int n = 0; n < N; n++) {
                const size_t o = ((size_t)B + (size_t)b * N + n) * dz;
                for (size_t i = 0; i < dz; i++) q += (double)cot[o + i] * (double)gp[o + i];
            }
            double c = f * q / (double)N / (double)dy;
            if (!(c > 0)) c = 0;   /* also NaN */
            if (c > cmax) c = cmax;
            const double wgt = stsl__nll_weight(R, sy * sy + c);
            wb[b] = wgt;
            for (size_t i = 0; i < dz; i++) {
                const size_t o = (size_t)b * dz + i;
                g[o] = (float)(wgt * gp[o]);
                eps[o] = e[o];
                x0[o] = x0p[o];
            }
        }
    }
    stsl__kept_free(&k);
    stsl__free(pts);
    stsl__free(e);
    stsl__free(x0p);
    stsl__free(cot);
    stsl__free(gp);
    stsl__free(xim);
    stsl__free(w);
    stsl__free(u);
    return st;
}

/* The likelihood step h g (h = (1 - a)/a on VP, Delta on VE) is explicit: on a coarse ladder
 * h zeta kappa w ||A||^2 exceeds 1 near the clean end and the mean oscillates out of range (NaN at
 * 20 steps on the image prior).  Each sample's g is divided by 1 + h zeta kappa w_b ||A||^2: the
 * exact posterior-mean step of a Gaussian likelihood along A's top singular direction (with the
 * Tweedie Jacobian ~ I of the low-noise end, where the step is large); ~1 on fine ladders.
 * hk = h zeta kappa ||A||^2, w: per-sample weights. */
static void damp(const stsl__run *R, float *g, const double *w, double hk)
{
    for (int b = 0; b < R->batch; b++) {
        const double f = 1.0 / (1.0 + hk * w[b]);
        float *gb = g + (size_t)b * R->dz;
        for (size_t i = 0; i < R->dz; i++) gb[i] = (float)(gb[i] * f);
    }
}

stsl_status stsl__solve_rmp(stsl__run *R, float *x_out)
{
    /* steps, inner steps and s1 have VE defaults of their own (solver_params.c) */
    const int variant = stsl__param_int(R, STSL_PARAM_VARIANT) == STSL_VARIANT_RMP_VE ? 2 : 1;
    const int T = stsl__param_int(R, STSL_PARAM_STEPS);
    const int Tin = stsl__param_int(R, STSL_PARAM_INNER_STEPS);
    const double s1 = stsl__param(R, STSL_PARAM_LEARNING_RATE);
    /* zeta: 1 (the likelihood itself) for Gaussian noise; larger unless set for the impulse-noise
     * losses, whose bounded gradient (Huber: delta per pixel) starves the guidance while the
     * residuals of x0hat are large (docs/algorithms.md) */
    const double zeta = stsl__param(R, STSL_PARAM_ZETA);
    const int likvar = stsl__param_int(R, STSL_PARAM_LIKELIHOOD_VARIANCE);
    const int probes = stsl__param_int(R, STSL_PARAM_PROBES);
    /* the noise variance: sigma_y^2, or HUBER_DELTA^2 for the impulse-noise losses (docs) */
    double sy = sqrt(stsl__noise_var(R));
    if (!(sy > 0)) sy = 1.0;
    double lambda = 1.0, L2 = 1.0;
    /* curvature of the data loss per unit weight and ||A||^2: 2 (squared), 1 (Huber), 0 (L1) */
    const double kappa_l = R->loss_kind == STSL_LOSS_L1 ? 0.0 : R->loss_kind == STSL_LOSS_HUBER ? 1.0 : 2.0;
    const size_t m = (size_t)R->batch * R->dz;
    int *seq = NULL;
    double *lev = NULL;   /* VE: time of each sigma */
    stsl_status st = STSL_OK;
    float *mu = stsl__run_floats(R, m), *mup = stsl__run_floats(R, m), *eps = stsl__run_floats(R, m),
          *x0 = stsl__run_floats(R, m), *g = stsl__run_floats(R, m), *xv = stsl__run_floats(R, m);
    double *cov = stsl__alloc_doubles((size_t)R->batch);
    if (!mu || !mup || !eps || !x0 || !g || !xv || !cov) {
        st = STSL_ERR_NOMEM;
        goto done;
    }
    R->total = T;
    R->step = 0;
    memset(mu, 0, m * sizeof(float));
    R->est = mu;
    if ((st = operator_gain(R, &lambda)) != STSL_OK) goto done;
    if ((st = stsl__op_norm2(R, &L2)) != STSL_OK) goto done;
    if (variant == 1) {
        if ((st = stsl__ddim_seq(R, T, &seq)) != STSL_OK) goto done;
        for (int k = T - 1; k >= 0; k--) {         /* from level seq[k] down to seq[k-1] (or clean) */
            R->step = T - k;
            const double tl = k > 0 ? seq[k - 1] : -1;           /* lower level */
            const double tnet = tl < 0 ? 0 : tl;
            const double abl = stsl__ab(R, tnet), a = stsl__ab(R, seq[k]) / stsl__ab(R, tl);
            const double sl1 = sqrt(1 - abl);
            memcpy(mup, mu, m * sizeof(float));
            for (size_t i = 0; i < m; i++) mu[i] = (float)(mup[i] / sqrt(a));
            for (int it = 0; it < Tin; it++) {
                /* s = -eps/sqrt(1-abar); grad = -g (data term through Tweedie) */
                st = likvar == STSL_LIKVAR_TWEEDIE
                         ? tweedie_var_grad(R, mu, tnet, sy, lambda, (1 - abl) / abl, probes,
                                            (uint64_t)R->step, (uint64_t)it, eps, x0, g, cov)
                         : stsl__chain_grad(R, mu, tnet, level_weight(R, sy, lambda, (1 - abl) / abl), 1,
                                            eps, x0, NULL, g);
                if (st != STSL_OK) goto done;
                if (likvar != STSL_LIKVAR_TWEEDIE)
                    for (int b = 0; b < R->batch; b++) cov[b] = level_weight(R, sy, lambda, (1 - abl) / abl);
                damp(R, g, cov, (1 - a) / a * zeta * kappa_l * L2);
                for (size_t i = 0; i < m; i++) {
                    double br = sqrt(a) * ((double)mup[i] - sqrt(a) * mu[i]) / (1 - a)
                                - (double)eps[i] / sl1 - zeta * (double)g[i];
                    mu[i] = (float)(mu[i] + s1 * (1 - a) / a * br);
                }
            }
            if ((st = stsl__check_finite(R, mu, m, "the RMP mean")) != STSL_OK) goto done;
            R->est = x0;
            if ((st = stsl__progress(R, R->step, x0)) != STSL_OK) goto done;
            R->est = mu;
        }
        st = stsl__finish(R, mu, x_out);
    } else {
        double smin = stsl__param(R, STSL_PARAM_SIGMA_MIN), smax = stsl__param(R, STSL_PARAM_SIGMA_MAX);
        const double lo = sqrt((1 - stsl__ab(R, 0)) / stsl__ab(R, 0));
        const double hi = sqrt((1 - stsl__ab(R, R->T_train - 1)) / stsl__ab(R, R->T_train - 1));
        if (smin < lo) smin = lo;
        if (smax > hi) smax = hi;
        if (!(smax > smin)) {
            st = stsl__fail(R->err, STSL_ERR_INVALID_ARG,
                            "solver rmp: VE ladder [%g, %g] is empty on this schedule", smin, smax);
            goto done;
        }
        const int n = T < 2 ? 2 : T;
        lev = stsl__alloc_doubles(2 * (size_t)n);
        if (!lev) {
            st = stsl__fail(R->err, STSL_ERR_NOMEM, "solver rmp: out of memory");
            goto done;
        }
        double *sig = lev + n;
        if ((st = stsl_sigmas_ve(n, smin, smax, sig)) != STSL_OK) {
            st = stsl__fail(R->err, st, "solver rmp: cannot build the VE ladder");
            goto done;
        }
        for (int i = 0; i < n; i++) lev[i] = stsl__time_of_sigma(R, sig[i]);
        R->total = n - 1;
        /* mu at sigma_max = 0; levels i = 1..n-1 */
        for (int i = 1; i < n; i++) {
            R->step = i;
            const double t = lev[i], ab = stsl__ab(R, t), sab = sqrt(ab), sl1 = sqrt(1 - ab);
            const double delta = sig[i - 1] * sig[i - 1] - sig[i] * sig[i];
            memcpy(mup, mu, m * sizeof(float));
            for (int it = 0; it < Tin; it++) {
                /* VP point sqrt(ab) mu; bracket = sqrt(ab) (s_vp + zeta g_vp) */
                for (size_t k = 0; k < m; k++) xv[k] = (float)(sab * mu[k]);
                st = likvar == STSL_LIKVAR_TWEEDIE
                         ? tweedie_var_grad(R, xv, t, sy, lambda, sig[i] * sig[i], probes,
                                            (uint64_t)R->step, (uint64_t)it, eps, x0, g, cov)
                         : stsl__chain_grad(R, xv, t, level_weight(R, sy, lambda, sig[i] * sig[i]), 1, eps,
                                            x0, NULL, g);
                if (st != STSL_OK) goto done;
                if (likvar != STSL_LIKVAR_TWEEDIE)
                    for (int b = 0; b < R->batch; b++) cov[b] = level_weight(R, sy, lambda, sig[i] * sig[i]);
                damp(R, g, cov, delta * zeta * kappa_l * L2);
                for (size_t k = 0; k < m; k++) {
                    double br = sab * (-(double)eps[k] / sl1 - zeta * (double)g[k]);
                    mu[k] = (float)(mu[k] + s1 * (((double)mup[k] - mu[k]) + delta * br));
                }
            }
            if ((st = stsl__check_finite(R, mu, m, "the RMP mean")) != STSL_OK) goto done;
            R->est = x0;
            if ((st = stsl__progress(R, R->step, x0)) != STSL_OK) goto done;
            R->est = mu;
        }
        /* output: Tweedie at sigma_min, x0hat = mu + sigma^2 s_ve */
        {
            const double t = lev[n - 1], ab = stsl__ab(R, t);
            for (size_t k = 0; k < m; k++) xv[k] = (float)(sqrt(ab) * mu[k]);
            if ((st = stsl__net_eps_t(R, xv, t, eps, R->batch)) != STSL_OK) goto done;
            stsl__tweedie(ab, xv, eps, x0, m);
            st = stsl__finish(R, x0, x_out);
        }
    }
done:
    if (st == STSL_ERR_NUMERIC) {
        /* name the settings that keep the mean finite, with the failing step */
        char prev[STSL_ERRMSG_SIZE];
        snprintf(prev, sizeof prev, "%s", R->err);
        st = stsl__fail(R->err, st,
                        "solver rmp: the mean diverged at step %d of %d (%.160s); a longer ladder "
                        "(STSL_PARAM_STEPS, --steps; default 400) or a smaller STSL_PARAM_ZETA "
                        "(--zeta) keeps it finite",
                        R->step, R->total, prev);
    }
    st = stsl__end_run(R, st, x_out);
    stsl__free(seq);
    stsl__free(lev);
    stsl__free(mu);
    stsl__free(mup);
    stsl__free(eps);
    stsl__free(x0);
    stsl__free(g);
    stsl__free(xv);
    stsl__free(cov);
    return st;
}
