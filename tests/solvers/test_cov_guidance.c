/*
 * test_cov_guidance.c -- stsl__cov_guidance (common.c), the Tweedie-covariance likelihood gradient
 * g = -J^T A^T M^-1 (y - A x0hat), M = sigma_y^2 I + A Cov A^T, of RMP and of STSL's line 6a:
 *   - S Galerkin steps in one call give what S calls of one step at the same point give (the call
 *     combines the new iterate's J^T A^T zy from the products at hand, by linearity, where each
 *     separate call makes a VJP of its own), for 1 + S UNet VJPs instead of 2 S;
 *   - the steps converge to the exact M^-1 r, M built here column by column from d_y VJPs, and g
 *     to -J^T A^T M^-1 r.
 * On an analytic Gaussian-mixture prior, whose Tweedie Jacobian is symmetric (a covariance), so
 * that M is symmetric positive definite and the guard never replaces a product.
 */
#include "common/testutil.h"
#include "solvers/solver_internal.h"
#include "support/testbed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { DX = 8, DY = 3, B = 2, C = 3 };

static char err[STSL_ERRMSG_SIZE];
static int verbose;
static stsl_context *ctx;
static stsl_schedule *sched;
static stsl_score *gmm;
static stsl_operator *op;
static stsl_solver *sv;
static float Y[B * DY], Z[B * DX];

static void setup(void)
{
    if (ctx) return;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    TU_ASSERT_OK(stsl_schedule_create(ctx, STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 1000, &sched));
    double w[C] = {1, 2, 1}, mu[C * DX], var[C] = {0.5, 0.3, 0.8};
    for (int i = 0; i < C * DX; i++) mu[i] = 1.5 * sin(1.3 * i + 0.5);
    TU_ASSERT_OK(stsl_score_create_gmm(ctx, (stsl_shape){1, 1, DX}, C, w, mu, var, 0, sched, &gmm));
    float M[DY * DX];
    for (int i = 0; i < DY * DX; i++) M[i] = (float)(0.6 * cos(0.7 * i + 0.2));
    TU_ASSERT_OK(stsl_operator_create_matrix(ctx, (stsl_shape){1, 1, DX}, DY, M, &op));
    TU_ASSERT_OK(stsl_solver_create_by_name(ctx, "rmp", &sv));
    for (int i = 0; i < B * DY; i++) Y[i] = (float)(0.8 * sin(0.9 * i) - 0.1);
    for (int i = 0; i < B * DX; i++) Z[i] = (float)(0.7 * cos(1.7 * i + 0.3));
}

/* the fields stsl__cov_guidance and the network calls read; everything else 0 */
static stsl__run new_run(void)
{
    err[0] = '\0';
    return (stsl__run){.sv = sv, .ctx = ctx, .score = gmm, .op = op, .ae_identity = 1, .sched = sched,
                       .T_train = 1000, .batch = B, .dz = DX, .dx = DX, .dy = DY, .y = Y, .limit = 64,
                       .loss_kind = STSL_LOSS_SQUARED, .op_linear = 1, .err = err};
}

/* max |a - b| relative to ||b|| */
static double rel_diff(const float *a, const float *b, size_t n)
{
    return tu_max_abs_diff(a, b, n) / tu_norm(b, n);
}

/* S steps in one call = S calls of one step, with 1 + S VJPs instead of 2 S */
static void test_steps_in_one_call(void)
{
    setup();
    const double t = 300, sy = 0.3;
    enum { S = 3 };
    stsl__run R = new_run();
    stsl__cov_work w1, w2;   /* each with its own warm start, 0 */
    TU_ASSERT_OK(stsl__cov_work_alloc(&R, &w1));
    TU_ASSERT_OK(stsl__cov_work_alloc(&R, &w2));
    const float *zy1 = w1.zy, *zy2 = w2.zy;
    float *eps1 = stsl__run_buffer(&R, B * DX), *eps2 = stsl__run_buffer(&R, B * DX);
    float *x01 = stsl__run_buffer(&R, B * DX), *x02 = stsl__run_buffer(&R, B * DX);
    float *g1 = stsl__run_buffer(&R, B * DX), *g2 = stsl__run_buffer(&R, B * DX);
    CU_ASSERT_FATAL(eps1 && eps2 && x01 && x02 && g1 && g2);
    CU_ASSERT(tu_norm(zy1, B * DY) == 0 && tu_norm(zy2, B * DY) == 0);
    double wb1[B], wb2[B];

    memset(&sv->nfe, 0, sizeof sv->nfe);
    TU_ASSERT_OK(stsl__cov_guidance(&R, &w1, Z, t, sy, 0.0, S, eps1, x01, g1, wb1));
    CU_ASSERT_EQUAL(sv->nfe.unet_vjp, (uint64_t)(1 + S) * B);
    CU_ASSERT_EQUAL(sv->nfe.unet_calls, (uint64_t)(1 + S));
    CU_ASSERT_EQUAL(sv->nfe.unet_forward, 0);

    memset(&sv->nfe, 0, sizeof sv->nfe);
    for (int s = 0; s < S; s++)
        TU_ASSERT_OK(stsl__cov_guidance(&R, &w2, Z, t, sy, 0.0, 1, eps2, x02, g2, wb2));
    CU_ASSERT_EQUAL(sv->nfe.unet_vjp, (uint64_t)2 * S * B);

    /* the same eps and x0hat (the same first pass); the iterates and gradients equal up to the
     * rounding of float products combined in double */
    CU_ASSERT(tu_max_abs_diff(eps1, eps2, B * DX) == 0);
    CU_ASSERT(tu_max_abs_diff(x01, x02, B * DX) == 0);
    const double dzy = rel_diff(zy1, zy2, B * DY), dg = rel_diff(g1, g2, B * DX);
    if (verbose) printf("\n  zy rel diff %.2e, g rel diff %.2e ", dzy, dg);
    CU_ASSERT(dzy < 1e-5);
    CU_ASSERT(dg < 1e-5);
    for (int b = 0; b < B; b++) CU_ASSERT_DOUBLE_EQUAL(wb1[b], wb2[b], 1e-5 * fabs(wb2[b]));
    CU_ASSERT(tu_norm(zy1, B * DY) > 0);   /* the steps did something */
    stsl__run_release(&R);
}

/* M built column by column: M e_i = sigma_y^2 e_i + f A J_x0hat^T A^T e_i (J symmetric here) */
static void exact_solution(stsl__run *R, double t, double sy, const float *x0, float *zexact,
                           float *gexact)
{
    const double ab = stsl__ab(R, t), sa = sqrt(ab), c = sqrt(1 - ab) / sa, f = (1 - ab) / sa;
    float e[B * DY], u[B * DX], eps[B * DX], j[B * DX], aj[B * DY], ax[B * DY], tt[B];
    double M[B][DY][DY], JA[B][DY][DX];   /* JA[b][i] = J_x0hat^T A^T e_i */
    for (int b = 0; b < B; b++) tt[b] = (float)t;
    for (int i = 0; i < DY; i++) {
        memset(e, 0, sizeof e);
        for (int b = 0; b < B; b++) e[b * DY + i] = 1;
        TU_ASSERT_OK(stsl_operator_vjp(op, Z, e, u, B));
        TU_ASSERT_OK(stsl__net_eps_vjp(R, Z, tt, u, eps, j, B));
        for (int k = 0; k < B * DX; k++) j[k] = (float)((double)u[k] / sa - c * (double)j[k]);
        TU_ASSERT_OK(stsl_operator_forward(op, j, aj, B));
        for (int b = 0; b < B; b++) {
            for (int r = 0; r < DY; r++) M[b][r][i] = (r == i ? sy * sy : 0.0) + f * aj[b * DY + r];
            for (int k = 0; k < DX; k++) JA[b][i][k] = j[b * DX + k];
        }
    }
    TU_ASSERT_OK(stsl_operator_forward(op, x0, ax, B));
    for (int b = 0; b < B; b++) {
        /* M symmetric (checked) and positive definite: the testbed's Cholesky solve */
        double a[DY * DY], z[DY];
        for (int r = 0; r < DY; r++) {
            for (int i = 0; i < DY; i++) {
                a[r * DY + i] = 0.5 * (M[b][r][i] + M[b][i][r]);
                CU_ASSERT(fabs(M[b][r][i] - M[b][i][r]) <= 1e-4 * (fabs(M[b][r][i]) + 1e-3));
            }
            z[r] = (double)Y[b * DY + r] - ax[b * DY + r];
        }
        CU_ASSERT_FATAL(stsl__testbed_spd_solve(a, DY, z) == 0);
        for (int p = 0; p < DY; p++) zexact[b * DY + p] = (float)z[p];
        for (int k = 0; k < DX; k++) {
            double s = 0;
            for (int i = 0; i < DY; i++) s += JA[b][i][k] * z[i];
            gexact[b * DX + k] = (float)-s;
        }
    }
}

/* the steps converge to M^-1 r; g to -J^T A^T M^-1 r */
static void test_converges_to_exact(void)
{
    setup();
    const double t = 300, sy = 0.3;
    stsl__run R = new_run();
    stsl__cov_work w;
    TU_ASSERT_OK(stsl__cov_work_alloc(&R, &w));
    float *eps = stsl__run_buffer(&R, B * DX), *x0 = stsl__run_buffer(&R, B * DX),
          *g = stsl__run_buffer(&R, B * DX);
    CU_ASSERT_FATAL(eps && x0 && g);
    TU_ASSERT_OK(stsl__cov_guidance(&R, &w, Z, t, sy, 0.0, 12, eps, x0, g, NULL));
    const float *zy = w.zy;
    float zexact[B * DY], gexact[B * DX];
    exact_solution(&R, t, sy, x0, zexact, gexact);
    CU_ASSERT_FATAL(tu_norm(zexact, B * DY) > 0 && tu_norm(gexact, B * DX) > 0);
    const double dz = rel_diff(zy, zexact, B * DY), dg = rel_diff(g, gexact, B * DX);
    if (verbose) printf("\n  12 steps: zy rel err %.2e, g rel err %.2e ", dz, dg);
    CU_ASSERT(dz <= 1e-3);
    CU_ASSERT(dg <= 1e-3);
    stsl__run_release(&R);
}

static void test_no_steps_refused(void)
{
    setup();
    stsl__run R = new_run();
    stsl__cov_work w;
    TU_ASSERT_OK(stsl__cov_work_alloc(&R, &w));
    float *v = stsl__run_buffer(&R, B * DX);
    CU_ASSERT_FATAL(v != NULL);
    TU_ASSERT_STATUS(stsl__cov_guidance(&R, &w, Z, 300, 0.3, 0.0, 0, v, v, v, NULL),
                     STSL_ERR_INTERNAL);
    CU_ASSERT(err[0] != '\0');
    stsl__run_release(&R);
}

int main(void)
{
    verbose = getenv("STSL_TEST_VERBOSE") != NULL;
    static const stsl_test tests[] = {
        {"S Galerkin steps in one call = S calls of one step, 1 + S VJPs", test_steps_in_one_call},
        {"the steps converge to the exact M^-1 r", test_converges_to_exact},
        {"no step is refused", test_no_steps_refused},
        {NULL, NULL}};
    int rc = stsl_test_main("cov-guidance", tests);
    stsl_solver_destroy(sv);
    stsl_operator_destroy(op);
    stsl_score_destroy(gmm);
    stsl_schedule_destroy(sched);
    stsl_context_destroy(ctx);
    return rc;
}
