/*
 * phase.c -- Fourier phase retrieval: y = |U P x| per channel, where P centres the H x W image
 * in an N1 x N2 = ceil(s H) x ceil(s W) zero canvas (s = oversampling, default 2) and U is the
 * orthonormal 2-D DFT.  The output is the full N1 x N2 magnitude, fftshifted (DC at the centre).
 *
 * VJP: with F = U P x and phase = F/|F| (0 where |F| = 0, a valid subgradient),
 *     J^T v = P^T Re(U^H (v . phase)).
 * Re(U^H z) equals U^H of the Hermitian part of z, which is what a c2r transform of the
 * symmetrised half spectrum computes.
 */
#include "operators/operator_internal.h"

#include <fftw3.h>
#include <math.h>
#include <string.h>

typedef struct phase_state {
    int C, H, W, N1, N2, top, left, nh;   /* nh = N2/2 + 1 */
    fftwf_plan fwd, inv;
} phase_state;

static void phase_release(void *state)
{
    phase_state *s = state;
    if (!s) return;
    stsl__fftw_destroy_plans(s->fwd, s->inv);
    stsl__free(s);
}

static size_t real_floats(const phase_state *s) { return ((size_t)s->N1 * s->N2 + 15) & ~(size_t)15; }
/* real buffer and half spectrum */
static size_t scratch_floats(const phase_state *s) { return real_floats(s) + 2 * (size_t)s->N1 * s->nh; }

/* spec (half spectrum) of P x, unnormalised */
static void transform(const phase_state *s, const float *x, float *buf, float *spec)
{
    memset(buf, 0, (size_t)s->N1 * s->N2 * sizeof(float));
    for (int i = 0; i < s->H; i++)
        memcpy(buf + (size_t)(i + s->top) * s->N2 + s->left, x + (size_t)i * s->W, (size_t)s->W * sizeof(float));
    fftwf_execute_dft_r2c(s->fwd, buf, (fftwf_complex *)spec);
}

/* The input is real, so F(-k) = conj(F(k)): the half spectrum k2 < nh determines everything,
 * |F(-k)| = |F(k)|, and the phase at -k is the conjugate of the phase at k. */
static void plane_forward(const phase_state *s, const float *x, float *y, float *scratch)
{
    float *buf = scratch, *spec = scratch + real_floats(s);
    transform(s, x, buf, spec);
    float norm = 1.0f / sqrtf((float)s->N1 * (float)s->N2);
    int N1 = s->N1, N2 = s->N2, h1 = N1 / 2, h2 = N2 / 2, nh = s->nh;
    for (int k1 = 0; k1 < N1; k1++) {
        const float *row = spec + 2 * (size_t)k1 * nh;
        const float *mrow = spec + 2 * (size_t)((N1 - k1) % N1) * nh;
        float *yr = y + (size_t)((k1 + h1) % N1) * N2;   /* fftshift: frequency k sits at k + N/2 */
        for (int k2 = 0; k2 < nh; k2++) {
            int c = k2 + h2 < N2 ? k2 + h2 : k2 + h2 - N2;
            yr[c] = sqrtf(row[2 * k2] * row[2 * k2] + row[2 * k2 + 1] * row[2 * k2 + 1]) * norm;
        }
        for (int k2 = nh; k2 < N2; k2++) {   /* |F(k1, k2)| = |F(-k1, N2 - k2)| */
            const float *c = mrow + 2 * (N2 - k2);
            yr[k2 + h2 - N2] = sqrtf(c[0] * c[0] + c[1] * c[1]) * norm;
        }
    }
}

static void plane_vjp(const phase_state *s, const float *x, const float *v, float *out, float *scratch)
{
    float *buf = scratch, *spec = scratch + real_floats(s);
    transform(s, x, buf, spec);
    int N1 = s->N1, N2 = s->N2, h1 = N1 / 2, h2 = N2 / 2, nh = s->nh;
    /* Hermitian part of z = v . phase: (z(k) + conj(z(-k)))/2 = (v(k) + v(-k))/2 . phase(k) */
    for (int k1 = 0; k1 < N1; k1++) {
        float *row = spec + 2 * (size_t)k1 * nh;
        const float *vr = v + (size_t)((k1 + h1) % N1) * N2;
        const float *vmr = v + (size_t)(((N1 - k1) % N1 + h1) % N1) * N2;
        for (int k2 = 0; k2 < nh; k2++) {
            int c = (k2 + h2) % N2, cm = ((N2 - k2) % N2 + h2) % N2;
            float re = row[2 * k2], im = row[2 * k2 + 1], a = sqrtf(re * re + im * im);
            float g = a > 0 ? 0.5f * (vr[c] + vmr[cm]) / a : 0.0f;   /* |F| = 0: phase taken as 0 */
            row[2 * k2] = g * re;
            row[2 * k2 + 1] = g * im;
        }
    }
    fftwf_execute_dft_c2r(s->inv, (fftwf_complex *)spec, buf);
    float norm = 1.0f / sqrtf((float)N1 * (float)N2);
    for (int i = 0; i < s->H; i++)
        for (int j = 0; j < s->W; j++)
            out[(size_t)i * s->W + j] = buf[(size_t)(i + s->top) * N2 + s->left + j] * norm;
}

static void phase_plane(const void *state, int mode, const float *x, const float *v, float *out,
                        float *scratch)
{
    (void)mode;
    if (v)
        plane_vjp(state, x, v, out, scratch);
    else
        plane_forward(state, x, out, scratch);
}

static stsl_status phase_run(const stsl_operator *op, const float *x, const float *v, float *out,
                             int batch, char *err)
{
    const phase_state *s = op->state;
    const size_t in_plane = (size_t)s->H * s->W, out_plane = (size_t)s->N1 * s->N2;
    const stsl__planes p = {phase_plane, s, 0, x, v, out, in_plane, out_plane, v ? in_plane : out_plane};
    return stsl__op_run_planes(op, (size_t)batch * s->C, scratch_floats(s), &p, "in phase retrieval", err);
}

static stsl_status phase_forward(const stsl_operator *op, const float *x, float *y, int batch, char *err)
{
    return phase_run(op, x, NULL, y, batch, err);
}

static stsl_status phase_vjp(const stsl_operator *op, const float *x, const float *v, float *out, int batch,
                             char *err)
{
    return phase_run(op, x, v, out, batch, err);
}

/* No cheap inverse of a magnitude: start from zeros. */
static stsl_status phase_backproject(const stsl_operator *op, const float *y, float *x, int batch, char *err)
{
    (void)y;
    (void)err;
    memset(x, 0, (size_t)batch * stsl__shape_size(op->in) * sizeof(float));
    return STSL_OK;
}

/* The device path (models/device_ops.h): the same canvas (op->out's plane) and placement. */
static void phase_describe(const stsl_operator *op, stsl__devop_desc *d)
{
    const phase_state *s = op->state;
    d->kind = STSL__DEVOP_PHASE;
    d->top = s->top;
    d->left = s->left;
}

static const stsl__op_impl PHASE_IMPL = {phase_forward, NULL, phase_vjp, phase_backproject, phase_release, 0,
                                         phase_describe};

stsl_status stsl__op_prepare_phase(stsl_operator *op)
{
    phase_state *s = stsl__op_new_state(op, sizeof *s, &PHASE_IMPL);
    if (!s) return stsl__fail(op->err, STSL_ERR_NOMEM, "out of memory preparing phase retrieval");
    s->C = op->in.channels;
    s->H = op->in.height;
    s->W = op->in.width;
    s->N1 = (int)ceil(op->p.oversampling * s->H - 1e-9);
    s->N2 = (int)ceil(op->p.oversampling * s->W - 1e-9);
    if (s->N1 < s->H) s->N1 = s->H;
    if (s->N2 < s->W) s->N2 = s->W;
    s->top = (s->N1 - s->H) / 2;
    s->left = (s->N2 - s->W) / 2;
    s->nh = s->N2 / 2 + 1;
    stsl_shape out = {op->in.channels, s->N1, s->N2};
    char err[STSL_ERRMSG_SIZE];
    stsl_status st = stsl__check_shape(err, out);
    if (st != STSL_OK) return stsl__fail(op->err, st, "phase retrieval output: %s", err);
    void *raw;
    float *buf = stsl__op_aligned_floats(scratch_floats(s), &raw);
    if (!buf) return stsl__fail(op->err, STSL_ERR_NOMEM, "out of memory preparing phase retrieval");
    float *spec = buf + real_floats(s);
    stsl__fftw_lock();
    s->fwd = fftwf_plan_dft_r2c_2d(s->N1, s->N2, buf, (fftwf_complex *)spec, FFTW_ESTIMATE);
    s->inv = fftwf_plan_dft_c2r_2d(s->N1, s->N2, (fftwf_complex *)spec, buf, FFTW_ESTIMATE);
    stsl__fftw_unlock();
    stsl__free(raw);
    if (!s->fwd || !s->inv)
        return stsl__fail(op->err, STSL_ERR_INTERNAL, "FFTW could not plan a %dx%d transform", s->N1, s->N2);
    op->out = out;
    return STSL_OK;
}
