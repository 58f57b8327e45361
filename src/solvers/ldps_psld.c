/*
 * ldps_psld.c -- LDPS and PSLD (Rout et al. 2023, "Solving Linear Inverse Problems Provably via
 * Posterior Sampling with Latent Diffusion Models", Algorithm 2 (PSLD); LDPS = gamma 0).
 *
 *   z_T ~ N(0, I)
 *   for i = T .. 1 (DDIM subsequence, eta = 0, as the reference code):
 *       eps   = eps_theta(z_i, t_i);  z0hat = (z_i - sqrt(1-abar_i) eps) / sqrt(abar_i)      (Tweedie)
 *       z'    = sqrt(abar_{i-1}) z0hat + sqrt(1 - abar_{i-1}) eps                         (DDIM, eta 0)
 *       z_{i-1} = z' - omega grad_{z_i} ||A D(z0hat) - y||                                 (LDPS data term)
 *                    - gamma grad_{z_i} ||E(A^T y + (I - A^T A) D(z0hat)) - z0hat||        (PSLD gluing)
 *   return D(z_0)
 * Both norms are unsquared, as in the reference.  The gradient flows through Tweedie (one UNet
 * VJP with the summed cotangent of both terms) and the decoder (one decoder VJP).
 *
 * The gluing gradient.  The autoencoder interface has no encoder VJP.
 *  - Identity autoencoder (pixel space): E = I, the term is ||A^T (y - A x0hat)|| and its exact
 *    gradient in x0hat is -A^T A A^T (y - A x0hat) / ||A^T (y - A x0hat)|| (two more operator
 *    applications, no network).
 *  - Real autoencoder: E(.) is treated as a constant target (stop-gradient at the encoder's
 *    output): the cotangent on z0hat is -(E(u) - z0hat) / ||E(u) - z0hat||; one encoder forward
 *    per step.  Documented in docs/algorithms.md; an encoder VJP would make it exact.
 * NFE per step: 1 UNet VJP (eps and its VJP in one pass, see stsl__kept); latent: + 1 decoder
 * VJP (D(z0hat) and its VJP in one pass) (+ 1 encoder forward for PSLD with gamma > 0).
 */
#include "solvers/solver_internal.h"

#include <math.h>
#include <string.h>

/* gluing's buffers, held for the run (a fresh image-sized buffer per step cost page faults) */
typedef struct glue_work {
    float *r, *u, *w;   /* B d_y, B d_x, B d_x */
    float *e, *q;       /* B d_z each; real autoencoder only */
} glue_work;

static stsl_status glue_work_alloc(stsl__run *R, glue_work *g)
{
    const size_t B = (size_t)R->batch;
    const int latent = !R->ae_identity;
    *g = (glue_work){stsl__run_buffer(R, B * R->dy), stsl__run_buffer(R, B * R->dx),
                     stsl__run_buffer(R, B * R->dx), latent ? stsl__run_buffer(R, B * R->dz) : NULL,
                     latent ? stsl__run_buffer(R, B * R->dz) : NULL};
    return g->r && g->u && g->w && (!latent || (g->e && g->q)) ? STSL_OK : STSL_ERR_NOMEM;
}

/* adds gamma * d/dzbar ||E(A^T y + (I - A^T A) x) - zbar|| into c (x = D(zbar), batch images) */
static stsl_status gluing(stsl__run *R, const glue_work *g, const float *zbar, const float *x,
                          double gamma, float *c)
{
    const int B = R->batch;
    const size_t dx = R->dx, dy = R->dy, dz = R->dz;
    float *r = g->r, *u = g->u, *w = g->w, *e = g->e;
    stsl_status st = STSL_OK;
    /* r = y - A x; u = A^T r */
    if ((st = stsl_operator_forward(R->op, x, r, B)) != STSL_OK) goto opfail;
    for (size_t k = 0; k < (size_t)B * dy; k++) r[k] = R->y[k] - r[k];
    if ((st = stsl_operator_adjoint(R->op, r, u, B)) != STSL_OK) goto opfail;
    if (R->ae_identity) {
        /* f = ||u||, grad_x f = -A^T A u / f */
        if ((st = stsl_operator_forward(R->op, u, r, B)) != STSL_OK) goto opfail;
        if ((st = stsl_operator_adjoint(R->op, r, w, B)) != STSL_OK) goto opfail;
        for (int b = 0; b < B; b++) {
            double f = 0;
            for (size_t i = 0; i < dx; i++) f += (double)u[b * dx + i] * u[b * dx + i];
            f = sqrt(f);
            if (f > 0)
                for (size_t i = 0; i < dx; i++) c[b * dx + i] -= (float)(gamma * w[b * dx + i] / f);
        }
    } else {
        /* glued image A^T y + (I - A^T A) x = x + A^T (y - A x) = x + u; encode */
        for (size_t k = 0; k < (size_t)B * dx; k++) u[k] += x[k];
        if ((st = stsl__enc(R, u, e, B)) != STSL_OK) goto done;
        /* e <- (E(u) - zbar)/||E(u) - zbar||, the unit cotangent of the norm on E(u) */
        for (int b = 0; b < B; b++) {
            double f = 0;
            for (size_t i = 0; i < dz; i++) {
                double di = (double)e[b * dz + i] - zbar[b * dz + i];
                f += di * di;
            }
            f = sqrt(f);
            for (size_t i = 0; i < dz; i++)
                e[b * dz + i] = f > 0 ? (float)(((double)e[b * dz + i] - zbar[b * dz + i]) / f) : 0.0f;
        }
        /* d/dzbar ||E(u(zbar)) - zbar|| = J_D^T (I - A^T A) J_E(u)^T e - e: through the encoder when
         * the autoencoder has its VJP (as the reference code); otherwise E(u) is a constant target */
        for (size_t k = 0; k < (size_t)B * dz; k++) c[k] -= (float)(gamma * e[k]);
        if (stsl__ae_can_encode_vjp(R->ae)) {
            float *q = g->q;
            st = stsl__enc_vjp(R, u, e, w, B);                      /* w = J_E(u)^T e */
            if (st == STSL_OK && (st = stsl_operator_forward(R->op, w, r, B)) == STSL_OK &&
                (st = stsl_operator_adjoint(R->op, r, u, B)) == STSL_OK) {
                for (size_t k = 0; k < (size_t)B * dx; k++) w[k] -= u[k];   /* (I - A^T A) w */
                st = stsl__dec_vjp(R, zbar, w, NULL, q, B);
                if (st == STSL_OK)
                    for (size_t k = 0; k < (size_t)B * dz; k++) c[k] += (float)(gamma * q[k]);
            } else if (st != STSL_OK && st != STSL_CANCELLED && R->err[0] == 0) {
                st = stsl__fail(R->err, st, "solver psld: operator failed: %s",
                                stsl_operator_last_error(R->op));
            }
        }
    }
    goto done;
opfail:
    st = stsl__fail(R->err, st, "solver psld: operator failed: %s", stsl_operator_last_error(R->op));
done:
    return st;
}

stsl_status stsl__solve_ldps_psld(stsl__run *R, float *x_out)
{
    const int T = stsl__param_int(R, STSL_PARAM_STEPS);
    const double omega = stsl__param(R, STSL_PARAM_OMEGA);
    const double gamma = R->sv->kind == STSL_SOLVER_PSLD ? stsl__param(R, STSL_PARAM_GAMMA) : 0.0;
    const size_t m = (size_t)R->batch * R->dz;
    int *seq = NULL;
    stsl_status st = stsl__ddim_seq(R, T, &seq);
    if (st != STSL_OK) return st;
    float *z = stsl__run_buffer(R, m), *eps = stsl__run_buffer(R, m), *z0 = stsl__run_buffer(R, m),
          *c = stsl__run_buffer(R, m), *g = stsl__run_buffer(R, m),
          *x = stsl__run_buffer(R, (size_t)R->batch * R->dx);
    if (!z || !eps || !z0 || !c || !g || !x) {
        st = STSL_ERR_NOMEM;
        goto done;
    }
    glue_work gw = {0};
    if (gamma > 0 && (st = glue_work_alloc(R, &gw)) != STSL_OK) goto done;
    stsl__start_from_noise(R, T, z);   /* z_T ~ N(0, I) */
    for (int i = T - 1; i >= 0; i--) {
        R->step = T - i;
        const double t = seq[i], abp = stsl__ab(R, i > 0 ? seq[i - 1] : -1);
        stsl__kept kept = {0};
        st = stsl__tweedie_keep(R, z, t, eps, z0, R->batch, &kept);
        /* cotangent on z0hat: omega J_D^T grad_x ||A x - y||  (+ gluing) */
        if (st == STSL_OK) st = stsl__data_cotangent(R, z0, omega, 0, NULL, x, c);
        if (st == STSL_OK && gamma > 0) st = gluing(R, &gw, z0, R->ae_identity ? z0 : x, gamma, c);
        if (st == STSL_OK) st = stsl__tweedie_kept_vjp(R, &kept, c, g);
        stsl__kept_free(&kept);
        if (st != STSL_OK) goto done;
        const double cx = sqrt(abp), ce = sqrt(1 - abp);
        for (size_t k = 0; k < m; k++) z[k] = (float)(cx * z0[k] + ce * eps[k] - g[k]);
        if ((st = stsl__step_end(R, z, m, "the PSLD iterate", z0)) != STSL_OK) goto done;
    }
done:
    stsl__free(seq);
    return stsl__end_run(R, st, z, x_out);
}
