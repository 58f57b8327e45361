/*
 * testbed.c -- exact-posterior Gaussian-mixture testbed (see testbed.h).  Small dense linear
 * algebra in double: Gram-Schmidt, Cholesky, triangular solves.
 */
#include "support/testbed.h"

#include "core/internal.h"   /* the library's allocator, errors and seeded streams */

_Static_assert(STSL_TESTBED_ERR_SIZE >= STSL_ERRMSG_SIZE, "stsl__fail writes STSL_ERRMSG_SIZE bytes");

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- random draws (stream per purpose) ---- */
enum { TB_MEANS = 1, TB_WEIGHTS, TB_U, TB_V, TB_S, TB_SIGMA, TB_XTRUE, TB_NOISE, TB_POST, TB_PRIOR,
       TB_PROJ, TB_IMG };

static uint64_t tb_stream(int purpose, uint64_t a) { return stsl__stream(STSL_TAG_TESTBED, (uint64_t)purpose, a, 0); }

static double tb_normal(uint64_t seed, int purpose, uint64_t a, uint64_t i)
{
    /* Box-Muller on two 53-bit uniforms: double-precision normals */
    double u1 = stsl__rng_uniform_double(seed, tb_stream(purpose, a), 2 * i);
    double u2 = stsl__rng_uniform_double(seed, tb_stream(purpose, a), 2 * i + 1);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static double tb_uniform(uint64_t seed, int purpose, uint64_t a, uint64_t i)
{
    return stsl__rng_uniform_double(seed, tb_stream(purpose, a), i);
}

/* ---- linear algebra ---- */

/* rows x cols Gaussian matrix, rows orthonormalised by modified Gram-Schmidt (rows <= cols) */
static void gram_schmidt_rows(double *M, size_t rows, size_t cols)
{
    for (size_t r = 0; r < rows; r++) {
        double *v = M + r * cols;
        for (size_t q = 0; q < r; q++) {
            const double *u = M + q * cols;
            double d = 0;
            for (size_t i = 0; i < cols; i++) d += v[i] * u[i];
            for (size_t i = 0; i < cols; i++) v[i] -= d * u[i];
        }
        double n = 0;
        for (size_t i = 0; i < cols; i++) n += v[i] * v[i];
        n = sqrt(n);
        for (size_t i = 0; i < cols; i++) v[i] /= n;
    }
}

/* in-place lower Cholesky of an n x n SPD matrix (upper part zeroed); -1 if not SPD */
static int cholesky(double *a, size_t n)
{
    for (size_t j = 0; j < n; j++) {
        double s = a[j * n + j];
        for (size_t k = 0; k < j; k++) s -= a[j * n + k] * a[j * n + k];
        if (!(s > 0)) return -1;
        double l = sqrt(s);
        a[j * n + j] = l;
        for (size_t i = j + 1; i < n; i++) {
            double t = a[i * n + j];
            for (size_t k = 0; k < j; k++) t -= a[i * n + k] * a[j * n + k];
            a[i * n + j] = t / l;
        }
        for (size_t k = j + 1; k < n; k++) a[j * n + k] = 0;
    }
    return 0;
}

/* solve L x = b (forward) in place */
static void solve_lower(const double *L, size_t n, double *b)
{
    for (size_t i = 0; i < n; i++) {
        double s = b[i];
        for (size_t k = 0; k < i; k++) s -= L[i * n + k] * b[k];
        b[i] = s / L[i * n + i];
    }
}

/* solve L^T x = b (backward) in place */
static void solve_upper_t(const double *L, size_t n, double *b)
{
    for (size_t ii = n; ii-- > 0;) {
        double s = b[ii];
        for (size_t k = ii + 1; k < n; k++) s -= L[k * n + ii] * b[k];
        b[ii] = s / L[ii * n + ii];
    }
}

int stsl__testbed_spd_solve(double *a, size_t n, double *b)
{
    if (cholesky(a, n) != 0) return -1;
    solve_lower(a, n, b);
    solve_upper_t(a, n, b);
    return 0;
}

/* ---- construction ---- */

static stsl__testbed *tb_alloc(size_t dx, size_t dy, int k)
{
    stsl__testbed *tb = (stsl__testbed *)stsl__calloc(1, sizeof *tb);
    if (!tb) return NULL;
    tb->dx = dx;
    tb->dy = dy;
    tb->k = k;
    tb->w = stsl__alloc_doubles((size_t)k);
    tb->mu = stsl__alloc_doubles((size_t)k * dx);
    tb->A = stsl__alloc_doubles(dy * dx);
    tb->y = stsl__alloc_doubles(dy);
    tb->x_true = stsl__alloc_doubles(dx);
    tb->pw = stsl__alloc_doubles((size_t)k);
    tb->pm = stsl__alloc_doubles((size_t)k * dx);
    tb->L = stsl__alloc_doubles(dx * dx);
    tb->pmean = stsl__alloc_doubles(dx);
    if (!tb->w || !tb->mu || !tb->A || !tb->y || !tb->x_true || !tb->pw || !tb->pm || !tb->L ||
        !tb->pmean) {
        stsl__testbed_destroy(tb);
        return NULL;
    }
    return tb;
}

void stsl__testbed_destroy(stsl__testbed *tb)
{
    if (!tb) return;
    stsl__free(tb->w);
    stsl__free(tb->mu);
    stsl__free(tb->A);
    stsl__free(tb->y);
    stsl__free(tb->x_true);
    stsl__free(tb->pw);
    stsl__free(tb->pm);
    stsl__free(tb->L);
    stsl__free(tb->pmean);
    stsl__free(tb);
}

/* The mixture component a uniform u picks under weights w[0..k-1] (the last one when rounding
 * leaves u above the weights' sum). */
static int pick_component(const double *w, int k, double u)
{
    double c = 0;
    for (int j = 0; j < k; j++) {
        c += w[j];
        if (u < c) return j;
    }
    return k - 1;
}

/* one exact prior draw into x (double), draw index i of stream `purpose` */
static void prior_draw(const stsl__testbed *tb, uint64_t seed, int purpose, uint64_t i, double *x)
{
    int comp = pick_component(tb->w, tb->k, tb_uniform(seed, purpose, i, 0));
    const double sd = sqrt(tb->var);
    for (size_t d = 0; d < tb->dx; d++)
        x[d] = tb->mu[(size_t)comp * tb->dx + d] + sd * tb_normal(seed, purpose, i, d + 1);
}

/* Exact posterior from prior (w, mu, var), A, y, sigma_y. */
static stsl_status posterior(stsl__testbed *tb, char *err)
{
    const size_t dx = tb->dx, dy = tb->dy;
    const double s2 = tb->sigma_y * tb->sigma_y, var = tb->var;
    /* precision P = I/var + A^T A / s2 */
    double *P = tb->L;
    for (size_t i = 0; i < dx; i++)
        for (size_t j = 0; j <= i; j++) {
            double s = 0;
            for (size_t r = 0; r < dy; r++) s += tb->A[r * dx + i] * tb->A[r * dx + j];
            P[i * dx + j] = P[j * dx + i] = s / s2 + (i == j ? 1.0 / var : 0.0);
        }
    if (cholesky(P, dx) != 0) return stsl__fail(err, STSL_ERR_NUMERIC, "testbed: precision not SPD");
    /* C = s2 I + var A A^T (dy x dy) */
    double *C = stsl__alloc_doubles(dy * dy), *r = stsl__alloc_doubles(dy > dx ? dy : dx),
           *aty = stsl__alloc_doubles(dx);
    if (!C || !r || !aty) {
        stsl__free(C);
        stsl__free(r);
        stsl__free(aty);
        return stsl__fail(err, STSL_ERR_NOMEM, "testbed: out of memory");
    }
    for (size_t i = 0; i < dy; i++)
        for (size_t j = 0; j < dy; j++) {
            double s = 0;
            for (size_t k = 0; k < dx; k++) s += tb->A[i * dx + k] * tb->A[j * dx + k];
            C[i * dy + j] = var * s + (i == j ? s2 : 0.0);
        }
    if (cholesky(C, dy) != 0) {
        stsl__free(C);
        stsl__free(r);
        stsl__free(aty);
        return stsl__fail(err, STSL_ERR_NUMERIC, "testbed: measurement covariance not SPD");
    }
    for (size_t k = 0; k < dx; k++) {
        double s = 0;
        for (size_t i = 0; i < dy; i++) s += tb->A[i * dx + k] * tb->y[i];
        aty[k] = s / s2;
    }
    double mx = -INFINITY;
    for (int c = 0; c < tb->k; c++) {
        const double *mu = tb->mu + (size_t)c * dx;
        /* log w_c + log N(y; A mu_c, C) (common constants dropped) */
        for (size_t i = 0; i < dy; i++) {
            double s = 0;
            for (size_t k = 0; k < dx; k++) s += tb->A[i * dx + k] * mu[k];
            r[i] = tb->y[i] - s;
        }
        solve_lower(C, dy, r);
        double q = 0;
        for (size_t i = 0; i < dy; i++) q += r[i] * r[i];
        tb->pw[c] = log(tb->w[c]) - 0.5 * q;
        if (tb->pw[c] > mx) mx = tb->pw[c];
        /* m_c = P^-1 (A^T y / s2 + mu_c / var) */
        double *m = tb->pm + (size_t)c * dx;
        for (size_t k = 0; k < dx; k++) m[k] = aty[k] + mu[k] / var;
        solve_lower(tb->L, dx, m);
        solve_upper_t(tb->L, dx, m);
    }
    double z = 0;
    for (int c = 0; c < tb->k; c++) z += (tb->pw[c] = exp(tb->pw[c] - mx));
    memset(tb->pmean, 0, dx * sizeof(double));
    for (int c = 0; c < tb->k; c++) {
        tb->pw[c] /= z;
        for (size_t k = 0; k < dx; k++) tb->pmean[k] += tb->pw[c] * tb->pm[(size_t)c * dx + k];
    }
    stsl__free(C);
    stsl__free(r);
    stsl__free(aty);
    return STSL_OK;
}

stsl_status stsl__testbed_mcg(int dx_i, int dy_i, uint64_t seed, stsl__testbed **out, char *err)
{
    *out = NULL;
    if (dx_i < 2 || dy_i < 1 || dy_i > dx_i || dx_i > 4096)
        return stsl__fail(err, STSL_ERR_INVALID_ARG, "testbed: need 1 <= d_y <= d_x <= 4096, d_x >= 2");
    const size_t dx = (size_t)dx_i, dy = (size_t)dy_i;
    stsl__testbed *tb = tb_alloc(dx, dy, 25);
    if (!tb) return stsl__fail(err, STSL_ERR_NOMEM, "testbed: out of memory");
    tb->shape = (stsl_shape){1, 1, dx_i};
    tb->var = 1.0;
    /* means: (-8i, -8j) tiled: mu[c][d] = 8 * (d even ? i : j) */
    double ws = 0;
    for (int c = 0; c < 25; c++) {
        const int i = c / 5 - 2, j = c % 5 - 2;
        for (size_t d = 0; d < dx; d++) tb->mu[(size_t)c * dx + d] = -8.0 * (d % 2 == 0 ? i : j);
        double g = tb_normal(seed, TB_WEIGHTS, 0, (uint64_t)c);
        tb->w[c] = g * g + 1e-12;
        ws += tb->w[c];
    }
    for (int c = 0; c < 25; c++) tb->w[c] /= ws;
    /* A = U diag(s) V */
    double *U = stsl__alloc_doubles(dy * dy), *V = stsl__alloc_doubles(dy * dx),
           *s = stsl__alloc_doubles(dy);
    if (!U || !V || !s) {
        stsl__free(U);
        stsl__free(V);
        stsl__free(s);
        stsl__testbed_destroy(tb);
        return stsl__fail(err, STSL_ERR_NOMEM, "testbed: out of memory");
    }
    for (size_t i = 0; i < dy * dy; i++) U[i] = tb_normal(seed, TB_U, 0, i);
    for (size_t i = 0; i < dy * dx; i++) V[i] = tb_normal(seed, TB_V, 0, i);
    gram_schmidt_rows(U, dy, dy);
    gram_schmidt_rows(V, dy, dx);
    for (size_t i = 0; i < dy; i++) s[i] = tb_uniform(seed, TB_S, 0, i);
    for (size_t i = 0; i < dy; i++)   /* sort descending */
        for (size_t j = i + 1; j < dy; j++)
            if (s[j] > s[i]) {
                double t = s[i];
                s[i] = s[j];
                s[j] = t;
            }
    for (size_t r = 0; r < dy; r++)
        for (size_t c = 0; c < dx; c++) {
            double a = 0;
            for (size_t k = 0; k < dy; k++) a += U[r * dy + k] * s[k] * V[k * dx + c];
            tb->A[r * dx + c] = a;
        }
    tb->sigma_y = tb_uniform(seed, TB_SIGMA, 0, 0) * s[0];
    if (tb->sigma_y < 1e-3 * s[0]) tb->sigma_y = 1e-3 * s[0];
    stsl__free(U);
    stsl__free(V);
    stsl__free(s);
    /* y = A x* + sigma_y n */
    prior_draw(tb, seed, TB_XTRUE, 0, tb->x_true);
    for (size_t r = 0; r < dy; r++) {
        double a = 0;
        for (size_t c = 0; c < dx; c++) a += tb->A[r * dx + c] * tb->x_true[c];
        tb->y[r] = a + tb->sigma_y * tb_normal(seed, TB_NOISE, 0, r);
    }
    stsl_status st = posterior(tb, err);
    if (st != STSL_OK) {
        stsl__testbed_destroy(tb);
        return st;
    }
    *out = tb;
    return STSL_OK;
}

stsl_status stsl__testbed_image(stsl_operator *op, stsl_shape shape, int k, double var,
                                uint64_t seed, stsl__testbed **out, char *err)
{
    *out = NULL;
    if (!op || k < 1 || !(var > 0))
        return stsl__fail(err, STSL_ERR_INVALID_ARG, "testbed: operator, k >= 1 and var > 0 needed");
    if (stsl_operator_is_linear(op) != 1)
        return stsl__fail(err, STSL_ERR_UNSUPPORTED,
                          "testbed: the exact posterior needs a linear operator");
    stsl_shape ys;
    stsl_status st = stsl_operator_output_shape(op, &ys);
    if (st != STSL_OK) return stsl__fail(err, st, "testbed: %s", stsl_operator_last_error(op));
    double sy = 0;
    if (stsl_operator_get_float(op, STSL_PARAM_NOISE_SIGMA, &sy) != STSL_OK || !(sy > 0))
        return stsl__fail(err, STSL_ERR_INVALID_ARG, "testbed: the operator's noise sigma must be > 0");
    const size_t dx = stsl__shape_size(shape), dy = stsl__shape_size(ys);
    if (dx > 1024 || dx > STSL_MAX_BATCH)
        return stsl__fail(err, STSL_ERR_LIMIT, "testbed: images up to 1024 values");
    stsl__testbed *tb = tb_alloc(dx, dy, k);
    if (!tb) return stsl__fail(err, STSL_ERR_NOMEM, "testbed: out of memory");
    tb->shape = shape;
    tb->var = var;
    tb->sigma_y = sy;
    float *E = stsl__alloc_floats(dx * dx), *AE = stsl__alloc_floats(dx * dy),
          *xf = stsl__alloc_floats(dx), *yf = stsl__alloc_floats(dy);
    if (!E || !AE || !xf || !yf) {
        st = stsl__fail(err, STSL_ERR_NOMEM, "testbed: out of memory");
        goto fail;
    }
    /* means: smooth random images, sum of 3 random 2-D cosines, amplitude 0.8 */
    double ws = 0;
    for (int c = 0; c < k; c++) {
        double *m = tb->mu + (size_t)c * dx, mxa = 0;
        memset(m, 0, dx * sizeof(double));
        for (int h = 0; h < 3; h++) {
            double fy = 3.0 * tb_uniform(seed, TB_IMG, (uint64_t)c, 4 * (uint64_t)h);
            double fx = 3.0 * tb_uniform(seed, TB_IMG, (uint64_t)c, 4 * (uint64_t)h + 1);
            double ph = 6.283185307179586 * tb_uniform(seed, TB_IMG, (uint64_t)c, 4 * (uint64_t)h + 2);
            double a = tb_normal(seed, TB_IMG, (uint64_t)c + 1000, (uint64_t)h);
            for (int ch = 0; ch < shape.channels; ch++)
                for (int yy = 0; yy < shape.height; yy++)
                    for (int xx = 0; xx < shape.width; xx++) {
                        size_t idx = ((size_t)ch * shape.height + yy) * shape.width + xx;
                        m[idx] += a * cos(6.283185307179586 *
                                              (fy * yy / shape.height + fx * xx / shape.width) + ph + ch);
                    }
        }
        for (size_t i = 0; i < dx; i++) mxa = fmax(mxa, fabs(m[i]));
        for (size_t i = 0; i < dx; i++) m[i] *= mxa > 0 ? 0.8 / mxa : 0;
        double g = tb_normal(seed, TB_WEIGHTS, 0, (uint64_t)c);
        tb->w[c] = g * g + 0.1;
        ws += tb->w[c];
    }
    for (int c = 0; c < k; c++) tb->w[c] /= ws;
    /* A column by column: A e_j */
    memset(E, 0, dx * dx * sizeof(float));
    for (size_t j = 0; j < dx; j++) E[j * dx + j] = 1.0f;
    if ((st = stsl_operator_forward(op, E, AE, (int)dx)) != STSL_OK) {
        st = stsl__fail(err, st, "testbed: operator forward: %s", stsl_operator_last_error(op));
        goto fail;
    }
    for (size_t j = 0; j < dx; j++)
        for (size_t r = 0; r < dy; r++) tb->A[r * dx + j] = AE[j * dy + r];
    /* y from the operator's own noise model */
    prior_draw(tb, seed, TB_XTRUE, 0, tb->x_true);
    for (size_t i = 0; i < dx; i++) xf[i] = (float)tb->x_true[i];
    if ((st = stsl_operator_measure(op, xf, yf, 1, seed)) != STSL_OK) {
        st = stsl__fail(err, st, "testbed: operator measure: %s", stsl_operator_last_error(op));
        goto fail;
    }
    for (size_t r = 0; r < dy; r++) tb->y[r] = yf[r];
    if ((st = posterior(tb, err)) != STSL_OK) goto fail;
    stsl__free(E);
    stsl__free(AE);
    stsl__free(xf);
    stsl__free(yf);
    *out = tb;
    return STSL_OK;
fail:
    stsl__free(E);
    stsl__free(AE);
    stsl__free(xf);
    stsl__free(yf);
    stsl__testbed_destroy(tb);
    return st;
}

stsl_status stsl__testbed_score(const stsl__testbed *tb, stsl_context *ctx,
                                const stsl_schedule *sched, stsl_score **out, char *err)
{
    double *v = stsl__alloc_doubles((size_t)tb->k);
    if (!v) return stsl__fail(err, STSL_ERR_NOMEM, "testbed: out of memory");
    for (int c = 0; c < tb->k; c++) v[c] = tb->var;
    stsl_status st = stsl_score_create_gmm(ctx, tb->shape, tb->k, tb->w, tb->mu, v, 0, sched, out);
    stsl__free(v);
    if (st != STSL_OK) return stsl__fail(err, st, "testbed: cannot create the gmm score");
    return STSL_OK;
}

stsl_status stsl__testbed_operator(const stsl__testbed *tb, stsl_context *ctx, stsl_operator **out,
                                   char *err)
{
    float *M = stsl__alloc_floats(tb->dx * tb->dy);
    if (!M) return stsl__fail(err, STSL_ERR_NOMEM, "testbed: out of memory");
    for (size_t i = 0; i < tb->dx * tb->dy; i++) M[i] = (float)tb->A[i];
    stsl_status st = stsl_operator_create_matrix(ctx, tb->shape, (int)tb->dy, M, out);
    stsl__free(M);
    if (st != STSL_OK) return stsl__fail(err, st, "testbed: cannot create the matrix operator");
    st = stsl_operator_set_float(*out, STSL_PARAM_NOISE_SIGMA, tb->sigma_y);
    if (st != STSL_OK) {
        stsl__fail(err, st, "testbed: cannot set the noise sigma: %s", stsl_operator_last_error(*out));
        stsl_operator_destroy(*out);
        *out = NULL;
    }
    return st;
}

stsl_status stsl__testbed_sample_posterior(const stsl__testbed *tb, size_t n, uint64_t seed,
                                           float *out)
{
    const size_t dx = tb->dx;
    double *z = stsl__alloc_doubles(dx);
    if (!z) return STSL_ERR_NOMEM;
    for (size_t s = 0; s < n; s++) {
        int comp = pick_component(tb->pw, tb->k, tb_uniform(seed, TB_POST, s, 0));
        /* x = m + L^-T z  (covariance P^-1 = L^-T L^-1) */
        for (size_t d = 0; d < dx; d++) z[d] = tb_normal(seed, TB_POST, s, d + 1);
        solve_upper_t(tb->L, dx, z);
        for (size_t d = 0; d < dx; d++)
            out[s * dx + d] = (float)(tb->pm[(size_t)comp * dx + d] + z[d]);
    }
    stsl__free(z);
    return STSL_OK;
}

void stsl__testbed_sample_prior(const stsl__testbed *tb, size_t n, uint64_t seed, float *out)
{
    double x[1024];
    double *buf = tb->dx <= 1024 ? x : stsl__alloc_doubles(tb->dx);
    if (!buf) return;
    for (size_t s = 0; s < n; s++) {
        prior_draw(tb, seed, TB_PRIOR, s, buf);
        for (size_t d = 0; d < tb->dx; d++) out[s * tb->dx + d] = (float)buf[d];
    }
    if (buf != x) stsl__free(buf);
}

void stsl__testbed_y(const stsl__testbed *tb, float *y)
{
    for (size_t i = 0; i < tb->dy; i++) y[i] = (float)tb->y[i];
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double stsl__sliced_wasserstein(const float *a, const float *b, size_t n, size_t d, int nproj,
                                uint64_t seed)
{
    double *dir = stsl__alloc_doubles(d), *pa = stsl__alloc_doubles(n), *pb = stsl__alloc_doubles(n);
    double total = 0;
    if (!dir || !pa || !pb || n == 0) {
        stsl__free(dir);
        stsl__free(pa);
        stsl__free(pb);
        return NAN;
    }
    for (int p = 0; p < nproj; p++) {
        double nn = 0;
        for (size_t i = 0; i < d; i++) {
            dir[i] = tb_normal(seed, TB_PROJ, (uint64_t)p, i);
            nn += dir[i] * dir[i];
        }
        nn = sqrt(nn);
        for (size_t i = 0; i < d; i++) dir[i] /= nn;
        for (size_t s = 0; s < n; s++) {
            double x = 0, y = 0;
            for (size_t i = 0; i < d; i++) {
                x += dir[i] * a[s * d + i];
                y += dir[i] * b[s * d + i];
            }
            pa[s] = x;
            pb[s] = y;
        }
        qsort(pa, n, sizeof(double), cmp_double);
        qsort(pb, n, sizeof(double), cmp_double);
        double w = 0;
        for (size_t s = 0; s < n; s++) w += (pa[s] - pb[s]) * (pa[s] - pb[s]);
        total += w / (double)n;
    }
    stsl__free(dir);
    stsl__free(pa);
    stsl__free(pb);
    return sqrt(total / nproj);
}

stsl_status stsl__testbed_configure(const stsl__testbed *tb, stsl_solver *solver)
{
    const double s2 = tb->sigma_y * tb->sigma_y;
    stsl_status st = STSL_OK;
    switch (stsl_solver_get_kind(solver)) {
    case STSL_SOLVER_STSL:
    case STSL_SOLVER_STSL_BIASED:
        st = stsl_solver_set_float(solver, STSL_PARAM_LAMBDA, 1.0 / (2.0 * s2));
        break;
    default: break;
    }
    return st;
}
