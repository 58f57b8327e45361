/* Noise schedules of VP diffusion (x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps) and the
 * sigma ladders of EDM/VE samplers. */
#include "core/internal.h"

#include <math.h>

STSL_API stsl_status stsl_schedule_create(stsl_context *ctx, stsl_schedule_kind kind,
                                          double beta_start, double beta_end, int timesteps,
                                          stsl_schedule **out)
{
    if (!out) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "schedule: out is NULL");
    *out = NULL;
    if (timesteps < 1 || timesteps > 100000)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "schedule: timesteps %d out of range 1..100000",
                              timesteps);
    if (kind == STSL_SCHEDULE_LINEAR || kind == STSL_SCHEDULE_SCALED_LINEAR) {
        if (!(beta_start > 0 && beta_start <= beta_end && beta_end < 1))
            return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG,
                                  "schedule: need 0 < beta_start <= beta_end < 1, got %g, %g",
                                  beta_start, beta_end);
    } else if (kind == STSL_SCHEDULE_COSINE) {
        if (!(beta_start >= 0 && beta_start < 1))
            return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG,
                                  "schedule: cosine offset s = %g must be in [0, 1)", beta_start);
    } else {
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "schedule: unknown kind %d", (int)kind);
    }
    stsl_schedule *s = stsl__calloc(1, sizeof *s);
    if (!s) return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "schedule: out of memory");
    s->alpha_bar = stsl__alloc_doubles((size_t)timesteps);
    if (!s->alpha_bar) {
        stsl__free(s);
        return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "schedule: out of memory");
    }
    s->kind = kind;
    s->timesteps = timesteps;
    s->beta_start = beta_start;
    s->beta_end = beta_end;
    const int T = timesteps;
    double abar = 1.0;
    for (int i = 0; i < T; i++) {
        double frac = T > 1 ? (double)i / (T - 1) : 0.0, beta;
        if (kind == STSL_SCHEDULE_LINEAR) {
            beta = beta_start + (beta_end - beta_start) * frac;
        } else if (kind == STSL_SCHEDULE_SCALED_LINEAR) {
            double r = sqrt(beta_start) + (sqrt(beta_end) - sqrt(beta_start)) * frac;
            beta = r * r;
        } else {
            /* Nichol & Dhariwal (2021) eq. 17, betas clipped at 0.999 as in their code */
            const double sh = beta_start, half_pi = 1.5707963267948966;
            double f0 = cos((((double)i / T) + sh) / (1 + sh) * half_pi);
            double f1 = cos((((double)(i + 1) / T) + sh) / (1 + sh) * half_pi);
            beta = 1.0 - (f1 * f1) / (f0 * f0);
            if (beta > 0.999) beta = 0.999;
        }
        abar *= 1.0 - beta;
        s->alpha_bar[i] = abar;
    }
    *out = s;
    return STSL_OK;
}

STSL_API void stsl_schedule_destroy(stsl_schedule *s)
{
    if (!s) return;
    stsl__free(s->alpha_bar);
    stsl__free(s);
}

STSL_API int stsl_schedule_timesteps(const stsl_schedule *s) { return s ? s->timesteps : 0; }

STSL_API double stsl_schedule_alpha_bar(const stsl_schedule *s, int t)
{
    if (!s || t < -1 || t >= s->timesteps) return NAN;
    return t < 0 ? 1.0 : s->alpha_bar[t];
}

double stsl__alpha_bar_at(const stsl_schedule *s, double t)
{
    if (!s || isnan(t)) return NAN;
    double tmax = s->timesteps - 1;
    if (t <= -1) return 1.0;
    if (t >= tmax) return s->alpha_bar[s->timesteps - 1];
    int lo = (int)floor(t);
    double w = t - lo;
    double a = lo < 0 ? 1.0 : s->alpha_bar[lo];
    double b = s->alpha_bar[lo + 1];
    return a + (b - a) * w;
}

STSL_API stsl_status stsl_schedule_ddim_steps(const stsl_schedule *s, int n, int *out)
{
    if (!s || !out) return STSL_ERR_INVALID_ARG;
    if (n < 1 || n > s->timesteps) return STSL_ERR_INVALID_ARG;
    /* floor(i * T / n): "leading" spacing, equal to i * (T / n) when n divides T (DDIM code) */
    for (int i = 0; i < n; i++) out[i] = (int)(((int64_t)i * s->timesteps) / n);
    return STSL_OK;
}

STSL_API stsl_status stsl_sigmas_edm(int n, double sigma_min, double sigma_max, double rho,
                                     double *out)
{
    if (!out || n < 2 || !(sigma_min > 0) || !(sigma_max > sigma_min) || !(rho > 0) ||
        !isfinite(sigma_max) || !isfinite(rho))
        return STSL_ERR_INVALID_ARG;
    /* Karras et al. (2022) eq. 5 */
    double a = pow(sigma_max, 1.0 / rho), b = pow(sigma_min, 1.0 / rho);
    for (int i = 0; i < n; i++) out[i] = pow(a + (double)i / (n - 1) * (b - a), rho);
    out[0] = sigma_max;
    out[n - 1] = sigma_min;
    return STSL_OK;
}

STSL_API stsl_status stsl_sigmas_ve(int n, double sigma_min, double sigma_max, double *out)
{
    if (!out || n < 2 || !(sigma_min > 0) || !(sigma_max > sigma_min) || !isfinite(sigma_max))
        return STSL_ERR_INVALID_ARG;
    for (int i = 0; i < n; i++) out[i] = sigma_max * pow(sigma_min / sigma_max, (double)i / (n - 1));
    out[0] = sigma_max;
    out[n - 1] = sigma_min;
    return STSL_OK;
}
