/*
 * stsl.c -- STSL (Rout et al., "Beyond First-Order Tweedie: Solving Inverse Problems using Latent
 * Diffusion", Algorithm 1, eq. (5), §3.2, App. A.4, B.1) and the stsl-biased ablation (eta 0, K 1).
 *
 * Levels: the DDIM subsequence t_1 < ... < t_T of the training steps, t_0 = the clean end
 * (abar = 1); alpha_k = abar_{t_k} / abar_{t_{k-1}}.
 *
 *   1  zf_0 = E(B y)                        B = the operator's back-projection (A^T y in the paper)
 *   2  for k = 1 .. T:                      forward process to t = T
 *   3      zf_k = sqrt(alpha_k) zf_{k-1} - sqrt(1 - alpha_k) sqrt(1 - abar_{k-1}) s(zf_{k-1})
 *              = sqrt(alpha_k) zf_{k-1} + sqrt(1 - alpha_k) eps(zf_{k-1}, t_{k-1})
 *          (STSL_INIT_PREDICTED_NOISE, line 3 as written; the network is evaluated at
 *           max(t_{k-1}, 0).  FRESH_NOISE, the default (docs/algorithms.md), uses xi ~ N(0, I)
 *           instead of eps (0 NFE); DDIM_INVERSION uses
 *           zf_k = sqrt(abar_k) x0hat(zf_{k-1}) + sqrt(1 - abar_k) eps(zf_{k-1}); PRIOR starts the
 *           reverse process from N(0, I) as PSLD, zf (only used by kappa) then follows FRESH_NOISE.)
 *   5  Z = zf_T
 *   6  for k = T .. 1 (reverse step at t_k):
 *  6a      [upper half, t_k > (T_train - 1)/2, LIKELIHOOD_VARIANCE TWEEDIE; not in the paper]
 *          Z <- Z + (1 - alpha_k) J_zbar^T A^T M^-1 (y - A zbar),  M = sigma_y^2 I + A Cov A^T,
 *          Cov = Cov[x0 | Z] = (1 - abar_k)/sqrt(abar_k) J_zbar (Tweedie's second moment): the
 *          share of the likelihood score grad log N(y; A zbar, M) that a DDPM step of this size
 *          gives the prior's score; M^-1 r by COV_STEPS Galerkin steps warm-started from the
 *          level above (stsl__cov_guidance, RMP's); the move at most sqrt(beta~_k d_z) per sample.
 *          On a lower level the same step, for a sample whose data term the passes of the level
 *          above left above COV_LOW_EXCESS L* (first-order steps stall on an ill-conditioned A)
 *   7      for pass = 1 .. K  (K + 1 passes with STSL_PARAM_INNER_INCLUSIVE = 1)
 *   8          e_1..e_N ~ N(0, I)                                          (fresh probes per pass)
 *   9          zbar = (Z + (1 - abar_k) s(Z, t_k)) / sqrt(abar_k)          ('+': Tweedie, Prop. 4.1)
 *  10-11       Z <- step on L(Z) = lambda ||y - A D(zbar)||^2                     (eq. 5; or the
 *                                         plain norm of line 10 with STSL_PARAM_SQUARED_LOSS = 0)
 *                     + (eta/d) mean_n [e_n^T s(Z + e_n) - e_n^T s(Z)]   (Hutchinson, App. A.4)
 *                     [+ kappa ||Z - zf_k||^2]                            (proximal term, §3.2)
 *              grad L = J_zbar^T J_D^T grad_x l
 *                     + (eta/d) mean_n [J_s(Z + e_n)^T e_n - J_s(Z)^T e_n] [+ 2 kappa (Z - zf_k)]
 *              with J_s^T v = -J_eps^T v / sqrt(1 - abar) and
 *                   J_zbar^T c = c / sqrt(abar) - sqrt(1 - abar)/sqrt(abar) J_eps^T c:
 *              the two VJPs at Z share ONE VJP with the summed cotangent and the N + 1 points
 *              of every sample go in ONE batched network call -- the same call that gave line
 *              9's eps at Z: evaluated once, kept, differentiated once the cotangent exists.
 *  13      zbar = (Z + (1 - abar_k) s(Z, t_k)) / sqrt(abar_k)
 *  14      Z <- sqrt(alpha_k)(1 - abar_{k-1})/(1 - abar_k) Z + sqrt(abar_{k-1})(1 - alpha_k)/(1 - abar_k) zbar
 *               + s14 sqrt(beta~_k) xi,   beta~_k = (1 - alpha_k)(1 - abar_{k-1})/(1 - abar_k)
 *          (STSL_PARAM_STEP_NOISE s14: 1 = DDPM ancestral, default; 0 = as written, noise-free)
 *          lr <- lr * decay  (Adam only)
 *  16  return D(Z)
 * The step of lines 10-11 (STSL_PARAM_STEP_RULE, docs/algorithms.md has the evidence):
 *   SCALED (default): per sample a Polyak step towards the noise level,
 *       Z <- Z - lr (L_data(Z) - L*)_+ / ||grad L||^2 grad L,  L* = lambda d_y sigma_y^2
 *     (the data term at the truth; lambda sqrt(d_y) sigma_y for the plain norm, 0 for the impulse
 *     losses): the first-order model of the data term drops by the fraction lr (0.2) of its excess
 *     over the noise level.  Scale-free: lambda, ||A||, d_x and the Tweedie Jacobian drop out.
 *     On the first pass of every level in the upper half of the schedule (t > (T_train - 1)/2)
 *     the step adds DPS's (its Alg. 1 line 7), zeta grad_Z ||y - A D(zbar)|| (zeta 0.3; the
 *     Gaussian noise model only): a pull that grows with the Jacobian of the Tweedie estimate,
 *     strongest where a sample sits between modes, where the Polyak step shrinks.  Without it
 *     7-12 % of the samples of some mixture posteriors ended in components of posterior weight
 *     ~0 (issue 28).  Not in the paper, whose Adam step has no such term (docs/algorithms.md).
 *     With line 6a (TWEEDIE, the default on a pixel prior with a linear operator and Gaussian
 *     noise) every pass of the upper half takes the pull alone, no Polyak step: the Polyak step
 *     holds the estimate on y while the samples drift, inside that set, into the tails of
 *     components the likelihood rules out (11-29 % of the samples on 17/6/2068, 23/3/3679,
 *     12/3/9542); line 6a weighs the components by the likelihood with the covariance, the
 *     pull keeps DPS's selection; the lower half keeps the Polyak step's precision.
 *   ADAM (App. B.1 as written; beta 0.9/0.999, eps 1e-8): lr 1e-2 unless set, x0.998 per reverse
 *     step; moments reset at every reverse step unless STSL_PARAM_ADAM_PERSIST = 1.  Each update
 *     moves every coordinate by ~lr whatever lambda: the per-step budget is K lr.
 * With eta = 0 the probe VJPs are skipped (they would be multiplied by 0).
 *
 * NFE (P = K, or K + 1 inclusive; N' = N, or 0 when eta = 0; identity autoencoder):
 *   UNet VJPs     = T P (1 + N')  (line 9's eps at Z is kept from the same pass: the probes are
 *                   drawn first, all N' + 1 points evaluated once, differentiated after line 10)
 *                   + (1 + COV_STEPS) T_up with line 6a (T_up levels in the upper half: 25 of 50)
 *                   + (1 + COV_STEPS) per lower level where a sample of the batch takes line 6a
 *   UNet forwards = T (line 13, at the updated Z) + T_init
 *                   (T_init = T for PREDICTED_NOISE and DDIM_INVERSION, 0 for FRESH_NOISE/PRIOR)
 *   When B (N' + 1) > STSL_PARAM_BATCH_LIMIT the points cannot be kept in one call: line 9 is then
 *   a forward at Z of its own (+ T P forwards).
 * Latent prior: + 1 encoder forward (line 1), T P decoder VJPs (line 10, one pass each),
 * + 1 decoder forward (line 16).
 */
#include "solvers/solver_internal.h"

#include <math.h>
#include <string.h>

/* Galerkin steps of M^-1 r per upper level (TWEEDIE): one left 2 of 6 GMM instances over 1.5x
 * DPS, three none (docs/algorithms.md) */
enum { COV_STEPS = 3 };
/* A lower level takes line 6a for a sample whose data term, at the last pass of the level above,
 * exceeded COV_LOW_EXCESS times its noise level L*: there the Polyak steps, first-order, stall on an
 * ill-conditioned A (GMM 16/15/2896, sigma_y 1e-3 of ||A||: L/L* 3e3-2e5 on every lower level;
 * 0.2-1.3 on an instance the Polyak steps serve, 23/4/9001); line 6a there is the exact move
 * (docs/algorithms.md, "A lower level's covariance step") */
enum { COV_LOW_EXCESS = 4 };

stsl_status stsl__solve_stsl(stsl__run *R, float *x_out)
{
    const int T = stsl__param_int(R, STSL_PARAM_STEPS);
    const int K = stsl__param_int(R, STSL_PARAM_INNER_STEPS);
    const int P = K + (stsl__param_int(R, STSL_PARAM_INNER_INCLUSIVE) ? 1 : 0);
    const double eta = stsl__param(R, STSL_PARAM_ETA);
    const int N = eta > 0 ? stsl__param_int(R, STSL_PARAM_PROBES) : 0;
    const double lambda = stsl__param(R, STSL_PARAM_LAMBDA);
    const double zeta = stsl__param(R, STSL_PARAM_ZETA);
    const double decay = stsl__param(R, STSL_PARAM_LR_DECAY);
    const double kappa = stsl__param(R, STSL_PARAM_KAPPA);
    const int init = stsl__param_int(R, STSL_PARAM_INIT);
    const int squared = stsl__param_int(R, STSL_PARAM_SQUARED_LOSS);
    const int persist = stsl__param_int(R, STSL_PARAM_ADAM_PERSIST);
    const int rule = stsl__param_int(R, STSL_PARAM_STEP_RULE);
    const double noise14 = stsl__param(R, STSL_PARAM_STEP_NOISE);
    double lr = stsl__param(R, STSL_PARAM_LEARNING_RATE);   /* Adam's own unless set */
    const double sy = stsl__noise_sigma(R);
    /* STSL_LIKVAR_TWEEDIE (the default where its products exist: pixel prior, linear operator,
     * Gaussian noise; solver_params.c): the upper levels' likelihood step with the Tweedie
     * covariance, their passes DPS's pull alone.  FLAT: the Polyak step on every level. */
    const int cov_step = stsl__param_int(R, STSL_PARAM_LIKELIHOOD_VARIANCE) == STSL_LIKVAR_TWEEDIE;
    if (cov_step && !stsl__cov_guidance_applies(R))
        return stsl__fail(R->err, STSL_ERR_UNSUPPORTED,
                          "solver stsl: likelihood-variance tweedie needs a pixel-space prior, a linear "
                          "operator and Gaussian noise (use flat)");
    /* the data term at the truth: lambda d_y sigma_y^2 (squared), lambda sqrt(d_y) sigma_y (norm);
     * 0 for the impulse-noise losses */
    const double lstar = R->loss_kind != STSL_LOSS_SQUARED ? 0.0
                         : squared ? lambda * (double)R->dy * sy * sy
                                   : lambda * sqrt((double)R->dy) * sy;
    const int B = R->batch;
    const size_t dz = R->dz, m = (size_t)B * dz;
    const size_t npts = (size_t)B * (size_t)(N + 1);
    const int one_pass = stsl__net_can_keep(R, (int)npts);

    int *seq = NULL;
    stsl__adam adam = {0};
    stsl_status st = stsl__ddim_seq(R, T, &seq);
    if (st != STSL_OK) return st;
    double *loss = stsl__run_doubles(R, (size_t)B);
    /* zf levels are kept only when the proximal term needs them */
    const size_t nzf = kappa > 0 ? (size_t)T + 1 : 1;
    float *zf = stsl__run_buffer(R, nzf * m);
    float *Z = stsl__run_buffer(R, m), *eps = stsl__run_buffer(R, m), *zbar = stsl__run_buffer(R, m),
          *c = stsl__run_buffer(R, m), *grad = stsl__run_buffer(R, m),
          *xb = stsl__run_buffer(R, (size_t)B * R->dx), *tmp = stsl__run_buffer(R, m);
    float *pts = stsl__run_buffer(R, npts * dz), *cot = stsl__run_buffer(R, npts * dz),
          *vjp = stsl__run_buffer(R, npts * dz), *tt = stsl__run_buffer(R, npts),
          *probe = stsl__run_buffer(R, (size_t)B * (size_t)(N > 0 ? N : 1) * dz);
    if (!zf || !Z || !eps || !zbar || !c || !grad || !xb || !tmp || !pts || !cot || !vjp || !tt ||
        !probe || !loss) {
        st = STSL_ERR_NOMEM;
        goto done;
    }
    if ((st = stsl__adam_init(R, &adam, m)) != STSL_OK) goto done;
    stsl__cov_work cw = {0};
    if (cov_step && (st = stsl__cov_work_alloc(R, &cw)) != STSL_OK) goto done;
    /* a lower level's line 6a: the warm starts of the samples that do not take it, kept as they
     * were, so that a sample's path does not depend on the rest of its batch */
    float *zy_keep = cov_step ? stsl__run_buffer(R, (size_t)B * R->dy) : NULL;
    if (cov_step && !zy_keep) {
        st = STSL_ERR_NOMEM;
        goto done;
    }
    R->total = T;
    R->step = 0;

    /* line 1: zf_0 = E(B y) */
    st = stsl_operator_backproject(R->op, R->y, xb, B);
    if (st != STSL_OK) {
        st = stsl__fail(R->err, st, "solver stsl: back-projection failed: %s",
                        stsl_operator_last_error(R->op));
        goto done;
    }
    if ((st = stsl__enc(R, xb, zf, B)) != STSL_OK) goto done;
    if ((st = stsl__check_finite(R, zf, m, "E(B y)")) != STSL_OK) goto done;
    R->est = zf;

    /* lines 2-4: forward process, zf_k for k = 1..T (in place unless kappa keeps every level) */
    for (int k = 1; k <= T; k++) {
        float *prev = zf + (kappa > 0 ? (size_t)(k - 1) * m : 0);
        float *cur = zf + (kappa > 0 ? (size_t)k * m : 0);
        const double tp = k > 1 ? seq[k - 2] : -1, tk = seq[k - 1];
        const double abp = stsl__ab(R, tp), ab = stsl__ab(R, tk), alpha = ab / abp;
        const double tnet = tp < 0 ? 0 : tp;
        if (init == STSL_INIT_PREDICTED_NOISE || init == STSL_INIT_DDIM_INVERSION) {
            if ((st = stsl__net_eps_t(R, prev, tnet, eps, B)) != STSL_OK) goto done;
        } else {
            stsl__noise(R, STSL_TAG_INIT_NOISE, (uint64_t)k, 0, eps, dz);
        }
        if (init == STSL_INIT_DDIM_INVERSION) {
            /* the Tweedie estimate at the network's level, carried to level k */
            stsl__tweedie(stsl__ab(R, tnet), prev, eps, tmp, m);
            const double cx = sqrt(ab), ce = sqrt(1 - ab);
            for (size_t i = 0; i < m; i++) cur[i] = (float)(cx * tmp[i] + ce * eps[i]);
        } else {
            const double cx = sqrt(alpha), ce = sqrt(1 - alpha);
            for (size_t i = 0; i < m; i++) cur[i] = (float)(cx * prev[i] + ce * eps[i]);
        }
        if ((st = stsl__check_finite(R, cur, m, "the forward process")) != STSL_OK) goto done;
    }
    /* line 5 */
    if (init == STSL_INIT_PRIOR)
        stsl__noise(R, STSL_TAG_STEP_NOISE, (uint64_t)T + 1, 0, Z, dz);
    else
        memcpy(Z, zf + (kappa > 0 ? (size_t)T * m : 0), m * sizeof(float));
    R->est = Z;

    /* lines 6-15: reverse process.  Line 8's probes do not depend on the network: the first
     * pass's are drawn here, every later pass's while the VJP of the pass before it runs. */
    if (N > 0) stsl__noise(R, STSL_TAG_PROBE, (uint64_t)T, 0, probe, (size_t)N * dz);
    for (int k = T; k >= 1; k--) {
        R->step = T - k + 1;
        const double t = seq[k - 1], ab = stsl__ab(R, t), abp = stsl__ab(R, k > 1 ? seq[k - 2] : -1);
        const double alpha = ab / abp, sa = sqrt(ab), s1 = sqrt(1 - ab);
        const float *zfk = kappa > 0 ? zf + (size_t)k * m : NULL;
        if (!persist) stsl__adam_reset(&adam);
        for (size_t i = 0; i < npts; i++) tt[i] = (float)t;
        const int upper = t > 0.5 * (double)(R->T_train - 1);
        /* line 6a on a lower level: the samples whose data term the level above left above
         * COV_LOW_EXCESS L* (loss holds it from that level's last pass; for the plain norm the
         * bar of its square) */
        const double low_bar = (squared ? COV_LOW_EXCESS : sqrt((double)COV_LOW_EXCESS)) * lstar;
        int any_low = 0;
        if (cov_step && !upper && k < T && lstar > 0)
            for (int b = 0; b < B; b++) any_low |= loss[b] > low_bar;
        if (any_low) memcpy(zy_keep, cw.zy, (size_t)B * R->dy * sizeof(float));
        if (cov_step && (upper || any_low)) {
            /* the Tweedie-covariance likelihood step (not in the paper; docs/algorithms.md):
             * Z <- Z + (1 - alpha_k) grad_Z log N(y; A zbar(Z), sigma_y^2 I + A Cov[x0|Z] A^T),
             * the DDPM step's share of the likelihood score, M^-1 r by COV_STEPS Galerkin steps
             * warm-started from the level above (1 + COV_STEPS UNet VJPs) */
            if ((st = stsl__cov_guidance(R, &cw, Z, t, sy, 0.0, COV_STEPS, eps, zbar, grad, NULL)) != STSL_OK)
                goto done;
            /* per sample at most the level's DDPM noise, sqrt(beta~_k d_z): on the image prior
             * the network's Jacobian at high noise made M^-1 r 50 noise scales long on one
             * random-inpaint image (8.6 dB); on the GMM testbed it never binds (<= 0.3 of it) */
            const double cap = sqrt((1 - alpha) * (1 - abp) / (1 - ab) * (double)dz);
            for (int b = 0; b < B; b++) {
                if (!upper && !(loss[b] > low_bar)) {
                    memcpy(cw.zy + (size_t)b * R->dy, zy_keep + (size_t)b * R->dy, R->dy * sizeof(float));
                    continue;
                }
                float *zb = Z + (size_t)b * dz;
                const float *gb = grad + (size_t)b * dz;
                const double len = (1 - alpha) * sqrt(stsl__dot(gb, gb, dz));
                const double h = (1 - alpha) * (len > cap ? cap / len : 1.0);
                for (size_t i = 0; i < dz; i++) zb[i] = (float)((double)zb[i] - h * (double)gb[i]);
            }
            if ((st = stsl__check_finite(R, Z, m, "the STSL likelihood step")) != STSL_OK) goto done;
        }
        for (int p = 0; p < P; p++) {                                      /* line 7 */
            /* line 8 (probe holds this pass's e_n, stream (k, p)) and the points of the one
             * batched call: per sample, point 0 = Z, points 1..N = Z + e_n */
            for (int b = 0; b < B; b++) {
                float *p0 = pts + (size_t)b * (N + 1) * dz;
                const float *zb = Z + (size_t)b * dz, *eb = probe + (size_t)b * N * dz;
                memcpy(p0, zb, dz * sizeof(float));
                for (int n = 0; n < N; n++) {
                    float *pn = p0 + (size_t)(n + 1) * dz;
                    const float *en = eb + (size_t)n * dz;
                    for (size_t i = 0; i < dz; i++) pn[i] = zb[i] + en[i];
                }
            }
            /* line 9: zbar at Z.  One pass: eps of all N + 1 points, kept for the VJP below
             * (vjp holds those eps until then); otherwise eps at Z alone now, the VJP later. */
            stsl__kept kept = {0};
            if (one_pass) {
                st = stsl__net_eps_keep(R, pts, tt, vjp, (int)npts, &kept);
                for (int b = 0; b < B && st == STSL_OK; b++)
                    memcpy(eps + (size_t)b * dz, vjp + (size_t)b * (N + 1) * dz, dz * sizeof(float));
            } else {
                st = stsl__net_eps_t(R, Z, t, eps, B);
            }
            if (st == STSL_OK) {
                stsl__tweedie(ab, Z, eps, zbar, m);
                R->est = zbar;   /* the clean estimate a cancel returns */
                /* line 10: c = lambda J_D^T grad_x l(y, A D(zbar)) */
                st = stsl__data_cotangent(R, zbar, lambda, squared, loss, NULL, c);
            }
            if (st != STSL_OK) {
                stsl__kept_free(&kept);
                goto done;
            }
            /* the cotangents: point 0 the data term's plus the probes' second halves */
            const double h = N > 0 ? eta / (double)dz / (double)N / s1 : 0.0;
            for (int b = 0; b < B; b++) {
                float *c0 = cot + (size_t)b * (N + 1) * dz;
                const float *cb = c + (size_t)b * dz, *eb = probe + (size_t)b * N * dz;
                for (size_t i = 0; i < dz; i++) c0[i] = (float)(-s1 / sa * cb[i]);
                for (int n = 0; n < N; n++) {
                    const float *e = eb + (size_t)n * dz;
                    float *cn = c0 + (size_t)(n + 1) * dz;
                    for (size_t i = 0; i < dz; i++) {
                        cn[i] = (float)(-h * e[i]);     /* J_s(Z+e)^T e -> -J_eps^T e / s1 */
                        c0[i] = (float)(c0[i] + h * e[i]); /* -J_s(Z)^T e -> +J_eps^T e / s1 */
                    }
                }
            }
            /* the probes are spent: the next pass's (this level's next, or the first of level
             * k - 1) are drawn while the VJP runs */
            stsl__noise_ahead next_probes = {0};
            if (N > 0 && (p + 1 < P || k > 1))
                stsl__noise_ahead_begin(R, &next_probes, STSL_TAG_PROBE,
                                        (uint64_t)(p + 1 < P ? k : k - 1),
                                        (uint64_t)(p + 1 < P ? p + 1 : 0), probe, (size_t)N * dz);
            st = one_pass ? stsl__net_kept_vjp(R, &kept, cot, vjp)
                          : stsl__net_eps_vjp(R, pts, tt, cot, NULL, vjp, (int)npts);
            stsl__noise_ahead_end(&next_probes);
            stsl__kept_free(&kept);
            if (st != STSL_OK) goto done;
            for (int b = 0; b < B; b++) {
                float *gb = grad + (size_t)b * dz;
                const float *cb = c + (size_t)b * dz, *vb = vjp + (size_t)b * (N + 1) * dz;
                const float *zb = Z + (size_t)b * dz, *fb = zfk ? zfk + (size_t)b * dz : NULL;
                /* per element: c / sqrt(abar) + the N + 1 VJPs in order [+ the proximal term],
                 * in double; blocks of elements so that each term is one vectorised loop */
                double acc[256];
                for (size_t i0 = 0; i0 < dz; i0 += 256) {
                    const size_t len = dz - i0 < 256 ? dz - i0 : 256;
                    for (size_t i = 0; i < len; i++) acc[i] = (double)cb[i0 + i] / sa;
                    for (int n = 0; n <= N; n++) {
                        const float *vn = vb + (size_t)n * dz + i0;
                        for (size_t i = 0; i < len; i++) acc[i] += (double)vn[i];
                    }
                    if (fb)
                        for (size_t i = 0; i < len; i++)
                            acc[i] += 2.0 * kappa * ((double)zb[i0 + i] - fb[i0 + i]);
                    for (size_t i = 0; i < len; i++) gb[i0 + i] = (float)acc[i];
                }
            }
            if ((st = stsl__check_finite(R, grad, m, "the STSL gradient")) != STSL_OK) goto done;
            if (rule == STSL_STEP_SCALED) {                                 /* lines 10-11 */
                /* Polyak step towards the noise level: the first-order model of L drops by
                 * lr (L - L*), L* = lambda d_y sigma_y^2 (squared) the loss at the truth; plus,
                 * on the first pass of an upper level, DPS's pull zeta grad ||r||; after line
                 * 6a the upper levels' passes take the pull alone */
                const int pull = zeta > 0 && upper && (p == 0 || cov_step) &&
                                 R->loss_kind == STSL_LOSS_SQUARED;
                const int polyak = !(cov_step && upper);
                for (int b = 0; b < B; b++) {
                    float *zb = Z + (size_t)b * dz;
                    const float *gb = grad + (size_t)b * dz;
                    const double g2 = stsl__dot(gb, gb, dz);
                    const double excess = loss[b] - lstar;
                    double gam = (polyak && excess > 0 && g2 > 0) ? lr * excess / g2 : 0.0;
                    /* grad ||r|| = grad L / (2 sqrt(lambda L)) (squared), grad L / lambda (norm) */
                    if (pull && loss[b] > 0)
                        gam += squared ? zeta / (2.0 * sqrt(lambda * loss[b])) : zeta / lambda;
                    for (size_t i = 0; i < dz; i++) zb[i] = (float)((double)zb[i] - gam * (double)gb[i]);
                }
            } else {
                stsl__adam_step(&adam, Z, grad, lr);
            }
        }
        /* line 13, with line 14's xi (independent of it) drawn into tmp while the network runs */
        const int noisy14 = noise14 > 0 && k > 1;
        stsl__noise_ahead xi14 = {0};
        if (noisy14) stsl__noise_ahead_begin(R, &xi14, STSL_TAG_STEP_NOISE, (uint64_t)k, 0, tmp, dz);
        st = stsl__net_eps_t(R, Z, t, eps, B);
        stsl__noise_ahead_end(&xi14);
        if (st != STSL_OK) goto done;
        stsl__tweedie(ab, Z, eps, zbar, m);
        /* line 14 */
        const double cz = sqrt(alpha) * (1 - abp) / (1 - ab), cb = sqrt(abp) * (1 - alpha) / (1 - ab);
        for (size_t i = 0; i < m; i++) Z[i] = (float)(cz * Z[i] + cb * zbar[i]);
        if (noisy14) {
            /* DDPM ancestral noise, beta~_k = (1 - alpha_k)(1 - abar_{k-1})/(1 - abar_k) */
            const double sig = noise14 * sqrt((1 - alpha) * (1 - abp) / (1 - ab));
            for (size_t i = 0; i < m; i++) Z[i] = (float)(Z[i] + sig * tmp[i]);
        }
        if ((st = stsl__check_finite(R, Z, m, "the STSL iterate")) != STSL_OK) goto done;
        if (rule != STSL_STEP_SCALED) lr *= decay;
        R->est = zbar;
        if ((st = stsl__progress(R, R->step, zbar)) != STSL_OK) goto done;
    }
done:
    stsl__adam_free(&adam);
    stsl__free(seq);
    return stsl__end_run(R, st, Z, x_out);   /* line 16: decode Z */
}
