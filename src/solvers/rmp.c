/*
 * rmp.c -- Reverse Mean Propagation (Xue et al. 2024, "Score-Based Variational Inference for
 * Inverse Problems", arXiv 2410.05646), reconstructed from the summary in ../shared/papers
 * (docs/algorithms.md has the derivation and the evidence for every choice).  Equation numbers
 * are the paper's where the summary gives them ((3) forward process, (10) joint posterior,
 * Propositions 1-2); the rest is named by what it is.
 *
 * Algorithm box (VP, the default; "[choice]" marks what the paper/summary does not fix):
 *   input y, A, sigma_y; ladder T (400), T_in (1), s1 (1), zeta (1)
 *   1  mu_T = 0                                      (E[x_T] under (3); deterministic start)
 *   2  for k = T-1 .. 0:                            (Prop. 1: p_k(x_k | x_{k+1}, y) is Gaussian)
 *   3    q_k = N(mu_k, Lambda^-1), Lambda = a/(1-a), a = abar_{k+1}/abar_k   (fixed precision)
 *   4    mu = mu_{k+1}/sqrt(a)                       (the mean of p(x_k | x_{k+1} = mu_{k+1}))
 *   5    repeat T_in times: natural-gradient step on KL(q_k || p_k) (Prop. 2 / (10) split the
 *        joint KL into these per-step terms), the expectation taken at the mean:
 *          mu <- mu + s1 Lambda^-1 [grad log p(mu_{k+1} | mu) + s_theta(mu, k) + zeta g(mu)]
 *   6      g = grad_x log p(y | x_k) with the "MMSE" likelihood y | x_k ~ N(A x0hat, M_k),
 *          M_k = sigma_y^2 I + A Cov[x0 | x_k] A^T                     [choice: M_k below]
 *   7  output x0hat(mu_0) = mu_0
 * M_k (STSL_PARAM_LIKELIHOOD_VARIANCE; the summary only says "approximated using MMSE estimation"):
 *   TWEEDIE (default, issue 28): Cov = (1 - abar)/sqrt(abar) J_x0hat (Tweedie's second moment) in
 *     full, M^-1 r by one warm-started Galerkin step on span{zy, r - M zy} per evaluation
 *     (stsl__cov_guidance: two VJPs, products guarded against a Jacobian that is no covariance;
 *     a plain CG step, beta = 1, cannot rescale a stale zy); on a latent prior, a
 *     nonlinear operator or an impulse-noise loss, where the products do not exist, the default
 *     stays FLAT and an explicit TWEEDIE takes its trace tr(A Cov A^T)/d_y by Hutchinson
 *     (tweedie_var_grad, PROBES probes, 1 + PROBES VJPs).
 *   FLAT (the default before issue 28): M = (sigma_y^2 + lambda r_k^2) I, r_k^2 = (1-abar)/abar
 *     (Var[x0|x_k] under a flat prior), lambda = tr(A^T A)/d_y (4 fixed probes, operator only).
 *     It over-states A Cov A^T 5-45x on a mixture: guidance comes late and the deterministic
 *     path commits to a mode of posterior weight ~0 (on fresh GMM instances 13 of 24 within 5 %,
 *     TWEEDIE 23 of 24, its trace alone 20 of 24).
 * The likelihood part of step 5 is explicit and divided by 1 + h zeta kappa w ||A||^2 (damp();
 * h = (1-a)/a on VP, Delta on VE): finite on coarse ladders [choice].
 * With T_in = 1 step 5 is mu_k = mu_{k+1}/sqrt(a) + (1-a)/a (s + zeta g): a noise-free DDPM step
 * plus guidance, the paper's VP setting.
 * VE (STSL_VARIANT_RMP_VE; T 30, T_in 20, s1 0.1 -- chosen on the testbed): a geometric ladder
 *     sigma_max -> sigma_min mapped onto the VP model by x_ve = x_vp / sqrt(abar),
 *     sigma^2 = (1 - abar)/abar, s_ve(x) = sqrt(abar) s_vp(sqrt(abar) x), g_ve = sqrt(abar) g_vp;
 *     Delta = sigma_{k+1}^2 - sigma_k^2, mu <- mu + s1 [(mu_{k+1} - mu) + Delta (s_ve + zeta g_ve)]
 *     T_in times from mu = mu_{k+1}: a damped fixed point of the implicit step; output Tweedie at
 *     sigma_min.
 * Mode commitment: the path is deterministic, so on a posterior with several modes of comparable
 * weight it ends in one of them, not at their weighted mean; no remedy is in the summary, and
 * none within the same budget beat the single path (docs/algorithms.md).
 * sigma_y is the operator's STSL_PARAM_NOISE_SIGMA (1 when it is 0 or absent).
 * NFE per evaluation of step 5 (T T_in evaluations on VP, (T-1) T_in on VE + 1 forward for the
 * VE output): TWEEDIE in full 2 UNet VJPs; TWEEDIE by trace 1 + PROBES (one kept pass) and, on a
 * latent prior, PROBES decoder VJPs; FLAT 1 UNet VJP (one pass, stsl__kept); a latent prior adds
 * 1 decoder VJP per evaluation and 1 decoder forward at the end.
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
    stsl__run_give(R, u);
    stsl__run_give(R, au);
    return st;
}

/* weight of the data loss at a level with r^2 = (1 - abar)/abar: the negative log-likelihood
 * weight of variance v_k = sigma_y^2 + lambda r^2 (1/(2 v_k) for ||A x0hat - y||^2) */
static double level_weight(const stsl__run *R, double sigma_y, double lambda, double r2)
{
    return stsl__nll_weight(R, sigma_y * sigma_y + lambda * r2);
}

/* tweedie_var_grad's buffers for N probes, held for the run (a fresh set per evaluation cost
 * page faults on every step) */
typedef struct trace_work {
    float *pts, *e, *x0p, *cot, *gp;   /* B (1 + N) latents each */
    float *xim, *u;                    /* B N images */
    float *w;                          /* B N measurements */
} trace_work;

static stsl_status trace_work_alloc(stsl__run *R, int N, trace_work *tw)
{
    const size_t B = (size_t)R->batch, np = B * (1 + (size_t)N), bn = B * (size_t)N;
    *tw = (trace_work){stsl__run_buffer(R, np * R->dz), stsl__run_buffer(R, np * R->dz),
                       stsl__run_buffer(R, np * R->dz), stsl__run_buffer(R, np * R->dz),
                       stsl__run_buffer(R, np * R->dz), stsl__run_buffer(R, bn * R->dx),
                       stsl__run_buffer(R, bn * R->dx), stsl__run_buffer(R, bn * R->dy)};
    return tw->pts && tw->e && tw->x0p && tw->cot && tw->gp && tw->xim && tw->u && tw->w
               ? STSL_OK : STSL_ERR_NOMEM;
}

/* g = (1/(2 v_b)) J_x0hat^T J_D^T grad_x ||A D(x0hat) - y||^2 at z (time t), per sample b, with
 * v_b = sigma_y^2 + c_b and c_b = tr(A Cov[x0|z] A^T)/d_y by Hutchinson:
 *     Cov[x0|z] = (1 - abar)/sqrt(abar) J_x0hat,  c_b ≈ (1 - abar)/sqrt(abar) mean_n u_n^T J_x0hat^T u_n / d_y,
 *     u_n = J_D^T A^T w_n, w_n ~ N(0, I_{d_y}),
 * taken when in (0, lambda r^2] (the flat-prior value bounds it: a prior only tightens the posterior
 * of x0 on average), else lambda r^2: a negative form is no covariance, and reading it as 0 (the
 * full 1/sigma_y^2 weight) threw box-inpaint on the image prior off the manifold.  ONE batched kept evaluation: point b is z_b (the data cotangent), points
 * B + b N + n are copies of z_b (the probes): 1 + N VJPs per sample.  wb (B doubles) receives the
 * weight 1/(2 v_b) (the noise model's, stsl__nll_weight). */
static stsl_status tweedie_var_grad(stsl__run *R, const trace_work *tw, const float *z, double t,
                                    double sy, double lambda, double r2, int N, uint64_t step,
                                    uint64_t it, float *eps, float *x0, float *g, double *wb)
{
    const int B = R->batch, np = B * (1 + N);
    const size_t dz = R->dz, dx = R->dx, dy = R->dy;
    const double ab = stsl__ab(R, t);
    float *pts = tw->pts, *e = tw->e, *x0p = tw->x0p, *cot = tw->cot, *gp = tw->gp, *xim = tw->xim,
          *w = tw->w, *u = tw->u;
    stsl__kept k = {0};
    memcpy(pts, z, (size_t)B * dz * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int n = 0; n < N; n++)
            memcpy(pts + ((size_t)B + (size_t)b * N + n) * dz, z + (size_t)b * dz, dz * sizeof(float));
    stsl_status st = stsl__tweedie_keep(R, pts, t, e, x0p, np, &k);
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
            if (!(c > 0) || c > cmax) c = cmax;   /* not a covariance (also NaN): the flat prior's */
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
    /* TWEEDIE: the full covariance where its products exist (stsl__cov_guidance); elsewhere (latent
     * prior, nonlinear operator, impulse loss) its trace.  There the default is FLAT
     * (solver_params.c: the trace form has not been shown to win, salt-pepper +0.8 +- 1.4 dB at
     * 400 steps, equal at 50; docs/algorithms.md), so the trace runs only when asked for. */
    const int likvar = stsl__param_int(R, STSL_PARAM_LIKELIHOOD_VARIANCE);
    const int probes = stsl__param_int(R, STSL_PARAM_PROBES);
    const int full_cov = likvar == STSL_LIKVAR_TWEEDIE && stsl__cov_guidance_applies(R);
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
    float *mu = stsl__run_buffer(R, m), *mup = stsl__run_buffer(R, m), *eps = stsl__run_buffer(R, m),
          *x0 = stsl__run_buffer(R, m), *g = stsl__run_buffer(R, m), *xv = stsl__run_buffer(R, m);
    double *cov = stsl__alloc_doubles((size_t)R->batch);
    if (!mu || !mup || !eps || !x0 || !g || !xv || !cov) {
        st = STSL_ERR_NOMEM;
        goto done;
    }
    stsl__cov_work cw = {0};
    trace_work tw = {0};
    if (full_cov && (st = stsl__cov_work_alloc(R, &cw)) != STSL_OK) goto done;
    if (!full_cov && likvar == STSL_LIKVAR_TWEEDIE && (st = trace_work_alloc(R, probes, &tw)) != STSL_OK)
        goto done;
    R->total = T;
    R->step = 0;
    memset(mu, 0, m * sizeof(float));   /* box line 1: mu_T = 0 */
    R->est = mu;
    if ((st = operator_gain(R, &lambda)) != STSL_OK) goto done;
    if ((st = stsl__op_norm2(R, &L2)) != STSL_OK) goto done;
    if (variant == 1) {
        if ((st = stsl__ddim_seq(R, T, &seq)) != STSL_OK) goto done;
        for (int k = T - 1; k >= 0; k--) {   /* box line 2: level seq[k] down to seq[k-1] (or clean) */
            R->step = T - k;
            const double tl = k > 0 ? seq[k - 1] : -1;           /* lower level */
            const double tnet = tl < 0 ? 0 : tl;
            const double abl = stsl__ab(R, tnet), a = stsl__ab(R, seq[k]) / stsl__ab(R, tl);
            const double sl1 = sqrt(1 - abl), sqa = sqrt(a);   /* sqrt outside the loops: vectorised */
            memcpy(mup, mu, m * sizeof(float));
            for (size_t i = 0; i < m; i++) mu[i] = (float)(mup[i] / sqa);   /* line 4 */
            for (int it = 0; it < Tin; it++) {   /* line 5; line 6: g by the likelihood-variance rule */
                /* s = -eps/sqrt(1-abar); grad = -g (data term through Tweedie) */
                const double r2 = (1 - abl) / abl;
                st = full_cov ? stsl__cov_guidance(R, &cw, mu, tnet, sy, lambda * r2, 1, eps, x0, g, cov)
                     : likvar == STSL_LIKVAR_TWEEDIE
                         ? tweedie_var_grad(R, &tw, mu, tnet, sy, lambda, r2, probes,
                                            (uint64_t)R->step, (uint64_t)it, eps, x0, g, cov)
                         : stsl__chain_grad(R, mu, tnet, level_weight(R, sy, lambda, r2), 1,
                                            eps, x0, NULL, g);
                if (st != STSL_OK) goto done;
                if (likvar != STSL_LIKVAR_TWEEDIE)
                    for (int b = 0; b < R->batch; b++) cov[b] = level_weight(R, sy, lambda, (1 - abl) / abl);
                damp(R, g, cov, (1 - a) / a * zeta * kappa_l * L2);
                /* line 5: Lambda^-1 = (1-a)/a times [grad log p(mu_{k+1}|mu) + s + zeta g] */
                for (size_t i = 0; i < m; i++) {
                    double br = sqa * ((double)mup[i] - sqa * mu[i]) / (1 - a)
                                - (double)eps[i] / sl1 - zeta * (double)g[i];
                    mu[i] = (float)(mu[i] + s1 * (1 - a) / a * br);
                }
            }
            if ((st = stsl__check_finite(R, mu, m, "the RMP mean")) != STSL_OK) goto done;
            R->est = x0;
            if ((st = stsl__progress(R, R->step, x0)) != STSL_OK) goto done;
            R->est = mu;
        }
        st = stsl__finish(R, mu, x_out);   /* line 7 */
    } else {
        double smin, smax;
        if ((st = stsl__sigma_range(R, "rmp", &smin, &smax)) != STSL_OK) goto done;
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
                const double r2 = sig[i] * sig[i];
                st = full_cov ? stsl__cov_guidance(R, &cw, xv, t, sy, lambda * r2, 1, eps, x0, g, cov)
                     : likvar == STSL_LIKVAR_TWEEDIE
                         ? tweedie_var_grad(R, &tw, xv, t, sy, lambda, sig[i] * sig[i], probes,
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
        stsl_param_bounds b = {0, 0, 0, 1};
        stsl__sp_bounds(R->sv->kind, STSL_PARAM_STEPS, &b);
        st = stsl__fail(R->err, st,
                        "solver rmp: the mean diverged at step %d of %d (%.160s); a longer ladder "
                        "(STSL_PARAM_STEPS, --steps; default %.0f) or a smaller STSL_PARAM_ZETA "
                        "(--zeta) keeps it finite",
                        stsl__run_step(R, R->step), stsl__run_total(R), prev, b.default_value);
    }
    st = stsl__end_run(R, st, NULL, x_out);   /* decoded above (stsl__finish) */
    stsl__free(seq);
    stsl__free(lev);
    stsl__free(cov);
    return st;
}
