/*
 * solver_internal.h -- what every solver shares, written once (common.c, solver_params.c, solver.c).
 *
 * A run (stsl__run) bundles the borrowed handles, the shapes, the ledger and the per-run state.
 * Every network call of a solver goes through stsl__net_* / stsl__dec_* / stsl__enc_*, which
 *   - check the cancel flag BEFORE the call (so a cancel ends the run within one evaluation),
 *   - split the points into calls of at most STSL_PARAM_BATCH_LIMIT points, and with
 *     STSL_PARAM_PAD_BATCH P into calls of exactly min(P * points per sample, limit) points, the
 *     last one padded (repeating its last point; padded outputs dropped, padded cotangents 0),
 *     so that every point is computed in a call of the same size whatever the real batch (a
 *     batch larger than P runs as groups of P, each a run of its own: solver.c),
 *   - count per-sample evaluations and batched calls in the NFE ledger (a VJP counts as a VJP
 *     only; identity-autoencoder calls are copies and are not counted).
 * Randomness: sample i of a run with seed s draws from seed s + i, or from the caller's seeds[i]
 * (stsl__sample_seed) with streams stsl__stream(tag, 0, step, inner), so a batch equals the same
 * samples run one by one with seeds s, s+1, ... (or seeds[0], seeds[1], ...)
 */
#ifndef STSL_SOLVER_INTERNAL_H
#define STSL_SOLVER_INTERNAL_H

#include "autoencoders/autoencoder_internal.h"
#include "core/internal.h"
#include "scores/score_internal.h"
#include "solvers/solver_params.h"

#include <pthread.h>
#include <stdatomic.h>

struct stsl_solver {
    stsl_context *ctx;
    stsl_solver_kind kind;
    double val[STSL__SP_COUNT];          /* as the caller set them (slots: stsl__solver_slot) */
    unsigned char set[STSL__SP_COUNT];   /* 1 when the caller set it explicitly */
    stsl__op_facts facts;                /* of the last run's operator (getters resolve with it) */
    stsl_progress_fn progress;
    void *progress_user;
    atomic_int cancel;
    stsl_nfe nfe;
    int failed_step;
    char err[STSL_ERRMSG_SIZE];
};

enum { STSL__RUN_WORK_MAX = 32 };   /* work buffers one method may hold (stsl__run_buffer) */
enum { STSL__RUN_SCRATCH_MAX = 16 };   /* scratch buffers the run keeps for reuse (stsl__run_floats) */
typedef struct stsl__scratch_slot {
    float *p;
    size_t n;   /* floats */
    int busy;
} stsl__scratch_slot;

typedef struct stsl__run {
    stsl_solver *sv;
    stsl_context *ctx;
    stsl_score *score;
    stsl_operator *op;
    stsl_autoencoder *ae;      /* never NULL during a run (identity when the caller gave none) */
    int ae_identity;
    const stsl_schedule *sched;
    int T_train;
    int batch;
    size_t dz, dx, dy;          /* latent, image, measurement sizes of one sample */
    const float *y;             /* batch * dy */
    uint64_t seed;
    const uint64_t *seeds;      /* per-sample seeds (stsl_solver_run_seeded), or NULL: seed + i */
    int limit;                  /* points per network call */
    int pad_batch;              /* STSL_PARAM_PAD_BATCH: 0, or calls shaped as for this batch */
    int group, groups, first;   /* this group of samples, their number, its first sample's index
                                 * in the caller's batch (PAD_BATCH < batch: solver.c) */
    int loss_kind;              /* stsl_loss of the operator (squared when it has none) */
    int op_linear;
    double p[STSL__SP_COUNT];   /* the parameters of this run, resolved (stsl__sp_resolve) */
    int step, total;            /* current progress step (0 = initialisation) and total */
    float *est;                 /* current clean LATENT estimate (batch * dz), kept by solvers */
    void *work[STSL__RUN_WORK_MAX];   /* the method's buffers (stsl__run_buffer): freed after it */
    int n_work;
    stsl__scratch_slot scratch[STSL__RUN_SCRATCH_MAX];   /* stsl__run_floats' pool */
    char *err;
} stsl__run;

/* The run's value of a parameter (resolved: what was set, else the default that applies to this
 * run).  The only way a method reads its parameters. */
static inline double stsl__param(const stsl__run *R, stsl_param key)
{
    int k = stsl__solver_slot(key);
    return k < 0 ? 0.0 : R->p[k];
}
static inline int stsl__param_int(const stsl__run *R, stsl_param key) { return (int)stsl__param(R, key); }

/* Progress counts across the groups of a split batch: step `step` of this group as the caller
 * sees it, and the run's total. */
static inline int stsl__run_step(const stsl__run *R, int step) { return R->group * R->total + step; }
static inline int stsl__run_total(const stsl__run *R) { return R->groups * R->total; }

/* ---- schedule helpers ---- */
static inline double stsl__ab(const stsl__run *R, double t)
{
    return t < 0 ? 1.0 : stsl__alpha_bar_at(R->sched, t);
}
/* Continuous VP time t with (1 - abar_t)/abar_t = sigma^2 (the VE/EDM sigma of a VP model),
 * by bisection on the interpolated table; used by the sigma-ladder solvers (rmp VE, dps-mo). */
double stsl__time_of_sigma(const stsl__run *R, double sigma);
/* SIGMA_MIN..SIGMA_MAX clamped to the sigmas the schedule has (t = 0 .. T_train - 1), into
 * *smin, *smax; STSL_ERR_INVALID_ARG (message naming `solver`) when nothing is left. */
stsl_status stsl__sigma_range(stsl__run *R, const char *solver, double *smin, double *smax);
/* The DDIM subsequence of n steps, ascending, into a fresh array (free with stsl__free). */
stsl_status stsl__ddim_seq(stsl__run *R, int n, int **out);

/* ---- RNG ---- */
static inline uint64_t stsl__sample_seed(const stsl__run *R, int i)
{
    return R->seeds ? R->seeds[i] : R->seed + (uint64_t)i;
}
/* Standard normals for every sample: out[i*n ..) from (sample seed i, stream(tag, 0, a, b)). */
void stsl__noise(const stsl__run *R, uint32_t tag, uint64_t a, uint64_t b, float *out, size_t n);
/* The same draws made while the caller waits on the network: stsl__noise_ahead_begin, the network
 * call, stsl__noise_ahead_end (on every path, also after a failed call), then out is filled.  A
 * draw of at least STSL__NOISE_AHEAD_MIN normals runs on a thread of its own (on a GPU the host
 * would otherwise wait for the network, then draw: some 0.6 ms of a 3x256x256 step on one core);
 * a smaller one, or one whose thread cannot start, is drawn in begin.  The values are
 * stsl__noise's either way (counter-based draws).  The caller must not touch out, nor change
 * R->batch, R->seed, R->seeds or R->ctx's threads, between the two. */
#define STSL__NOISE_AHEAD_MIN ((size_t)1 << 16)
typedef struct stsl__noise_ahead {
    const stsl__run *R;
    uint32_t tag;
    uint64_t a, b;
    float *out;
    size_t n;
    pthread_t thread;
    int started;
} stsl__noise_ahead;
void stsl__noise_ahead_begin(const stsl__run *R, stsl__noise_ahead *job, uint32_t tag, uint64_t a,
                             uint64_t b, float *out, size_t n);
void stsl__noise_ahead_end(stsl__noise_ahead *job);

/* ---- network calls (cancel check, chunking, ledger) ---- */
/* t: one value per point (n points of dz floats) */
stsl_status stsl__net_eps(stsl__run *R, const float *z, const float *t, float *eps, int n);
stsl_status stsl__net_eps_vjp(stsl__run *R, const float *z, const float *t, const float *v,
                              float *eps, float *vjp, int n);
/* same time for every point */
stsl_status stsl__net_eps_t(stsl__run *R, const float *z, double t, float *eps, int n);
stsl_status stsl__dec(stsl__run *R, const float *z, float *x, int n);
stsl_status stsl__dec_vjp(stsl__run *R, const float *z, const float *u, float *x, float *out, int n);
stsl_status stsl__enc(stsl__run *R, const float *x, float *z, int n);
/* out = J_E(x)^T v (n images); counted as n encoder forwards in the ledger (stsl_nfe has no
 * encoder-VJP field; one encoder pass each).  STSL_ERR_UNSUPPORTED when the autoencoder has none. */
stsl_status stsl__enc_vjp(stsl__run *R, const float *x, const float *v, float *out, int n);
/* cancel flag -> STSL_CANCELLED with a message */
stsl_status stsl__check_cancel(stsl__run *R);

/* An evaluation kept for its VJP: the output now (eps, D(z)), J^T v once the solver has formed v
 * from it.  ONE pass (forward + backward, counted as one VJP in the ledger) when the backend
 * keeps graphs and the n points fit one call (n <= STSL_PARAM_BATCH_LIMIT: the graphs of several
 * calls would hold all their activations at once, which is what the limit bounds); otherwise a
 * forward now and a full VJP later, counted as both.  The points (and t) are borrowed: keep them
 * unchanged until the VJP.  Zero-initialise, then free with stsl__kept_free whatever happened. */
typedef struct stsl__kept {
    stsl__score_pass *unet;    /* one-pass UNet evaluation */
    stsl__ae_pass *dec;        /* one-pass decoder evaluation */
    const float *z, *t;        /* the points and their times (two-pass VJP) */
    float *own_t;              /* t when the Tweedie helpers made it */
    double t_value;            /* the Tweedie helpers' common time */
    int n;
    int rows;                  /* points of the one-pass call (n, or more when padded) */
} stsl__kept;
/* 1 when stsl__net_eps_keep on n points is one pass */
int stsl__net_can_keep(const stsl__run *R, int n);
stsl_status stsl__net_eps_keep(stsl__run *R, const float *z, const float *t, float *eps, int n,
                               stsl__kept *k);
/* vjp = J_eps^T v at the kept points (v, vjp: n points) */
stsl_status stsl__net_kept_vjp(stsl__run *R, stsl__kept *k, const float *v, float *vjp);
stsl_status stsl__dec_keep(stsl__run *R, const float *z, float *x, int n, stsl__kept *k);
/* out = J_D^T u at the kept points (u: n images, out: n latents) */
stsl_status stsl__dec_kept_vjp(stsl__run *R, stsl__kept *k, const float *u, float *out);
void stsl__kept_free(stsl__kept *k);

/* ---- Tweedie and its VJP ---- */
/* x0 = (z - sqrt(1 - ab) eps) / sqrt(ab), n floats */
void stsl__tweedie(double ab, const float *z, const float *eps, float *x0, size_t n);
/* eps = eps(z, t) and x0 = x0hat(z, t) for n points at one time t, the evaluation kept for
 * stsl__tweedie_kept_vjp (z borrowed until then). */
stsl_status stsl__tweedie_keep(stsl__run *R, const float *z, double t, float *eps, float *x0,
                               int n, stsl__kept *k);
/* grad = J_x0hat(z)^T c = c / sqrt(ab) - sqrt(1-ab)/sqrt(ab) J_eps^T c at the kept points */
stsl_status stsl__tweedie_kept_vjp(stsl__run *R, stsl__kept *k, const float *c, float *grad);

/* ---- data fit ---- */
/* Loss of one sample l_i and grad_x, for x = batch images: squared = 1 gives
 * l = ||y - A x||^2 (Gaussian noise model; other noise models use the operator's own loss),
 * squared = 0 gives the plain norm sqrt(l) with grad l / (2 sqrt(l)) (DPS/PSLD).
 * grad is multiplied by weight.  loss may be NULL. */
stsl_status stsl__data_grad(stsl__run *R, const float *x, double weight, int squared, double *loss,
                            float *grad);
/* Through the decoder: x = D(zbar), g_zbar = J_D^T (weight * grad_x l), one decoder pass
 * (stsl__dec_keep).  x may be NULL. */
stsl_status stsl__data_cotangent(stsl__run *R, const float *zbar, double weight, int squared,
                                 double *loss, float *x, float *g_zbar);
/* The data-fit gradient through the whole chain, at time t for all samples:
 *   grad_z l(y, A D(x0hat(z))) = J_x0hat^T J_D^T grad_x l
 * (one UNet pass and one decoder pass, see stsl__kept).  eps/zbar receive eps(z,t) and
 * x0hat(z,t) of the same evaluation (either may be NULL). */
stsl_status stsl__chain_grad(stsl__run *R, const float *z, double t, double weight, int squared,
                             float *eps, float *zbar, double *loss, float *grad);

/* ---- the Tweedie-covariance likelihood (RMP's TWEEDIE, STSL's upper levels) ---- */
/* Buffers of stsl__cov_guidance, held for the run (stsl__run_buffer); zy (B x d_y) is its warm
 * start, M^-1 r of the evaluation before, 0 after stsl__cov_work_alloc. */
typedef struct stsl__cov_work {
    float *tt, *u0, *u1, *j0, *j1, *e1, *r, *rr, *aj, *zy;
} stsl__cov_work;
stsl_status stsl__cov_work_alloc(stsl__run *R, stsl__cov_work *w);
/* 1 where stsl__cov_guidance's products exist: a linear operator, a pixel prior, the squared loss */
int stsl__cov_guidance_applies(const stsl__run *R);
/* g = -J_x0hat^T A^T M^-1 (y - A x0hat(z)), M = sigma_y^2 I + A Cov[x0|z] A^T with Tweedie's
 * Cov = (1 - abar)/sqrt(abar) J_x0hat, at time t for all samples; M^-1 r by `steps` (>= 1)
 * Galerkin steps on span{zy, r - M zy} from the warm start w->zy (updated in place).  1 + steps
 * UNet VJPs.  Only where stsl__cov_guidance_applies.  eps/x0 receive eps(z,t)
 * and x0hat(z,t); wb (B doubles, or NULL) the noise-model weight of the effective scalar variance
 * ||r||^2 / r.M^-1 r (sigma_y^2 + cflat where undefined). */
stsl_status stsl__cov_guidance(stsl__run *R, const stsl__cov_work *w, const float *z, double t,
                               double sy, double cflat, int steps, float *eps, float *x0, float *g,
                               double *wb);

/* ---- operator gain ---- */
/* L2 = ||A||_2^2 by 30 power iterations on A^T A (forward + VJP, a fixed seed, no network call);
 * for a nonlinear operator the VJP at the iterate stands for A^T.  1 when the estimate is unusable. */
stsl_status stsl__op_norm2(stsl__run *R, double *L2);

/* ---- Adam (beta1 0.9, beta2 0.999, eps 1e-8), per-coordinate state ---- */
typedef struct stsl__adam {
    double *m, *v;
    size_t n;
    long t;
} stsl__adam;
stsl_status stsl__adam_init(stsl__run *R, stsl__adam *a, size_t n);
void stsl__adam_reset(stsl__adam *a);
void stsl__adam_step(stsl__adam *a, float *x, const float *g, double lr);
void stsl__adam_free(stsl__adam *a);

/* ---- progress, numerics ---- */
/* Report step (1..total); the estimate (latent, batch*dz, may be NULL) is decoded for the
 * callback only when STSL_PARAM_PROGRESS_ESTIMATE is 1.  Non-zero from the callback cancels. */
stsl_status stsl__progress(stsl__run *R, int step, const float *z0_est);
/* NaN/Inf anywhere in buf (n floats) -> STSL_ERR_NUMERIC naming the step */
stsl_status stsl__check_finite(stsl__run *R, const float *buf, size_t n, const char *what);

/* ---- scratch ---- */
/* Scratch for one helper call (n floats, contents undefined; NULL and R->err set when out of
 * memory), given back with stsl__run_give before the helper returns.  The run keeps what is given
 * back and lends it again, so a step does not map and fault in fresh pages for its image-sized
 * temporaries: glibc hands freed blocks of that size back to the system, which cost a 3x256x256
 * DPS step about 1.1 ms of host time (docs/cuda.md).  stsl__run_release frees the pool. */
float *stsl__run_floats(stsl__run *R, size_t n);
void stsl__run_give(stsl__run *R, float *p);   /* NULL is a no-op */
/* A work buffer the run owns (floats / doubles; NULL and R->err set when out of memory): freed
 * by stsl__run_release once the method returns (solver.c), so a method frees none of them. */
float *stsl__run_buffer(stsl__run *R, size_t n);
double *stsl__run_doubles(stsl__run *R, size_t n);
void stsl__run_release(stsl__run *R);

/* ---- solver entry points (one file each) ---- */
stsl_status stsl__solve_ddim(stsl__run *R, float *x_out);
stsl_status stsl__solve_dps(stsl__run *R, float *x_out);
stsl_status stsl__solve_ldps_psld(stsl__run *R, float *x_out);
stsl_status stsl__solve_stsl(stsl__run *R, float *x_out);
stsl_status stsl__solve_rmp(stsl__run *R, float *x_out);
stsl_status stsl__solve_dps_mo(stsl__run *R, float *x_out);

/* Finish: decode the latent estimate into x_out (n samples).  Used on success and cancel. */
stsl_status stsl__finish(stsl__run *R, const float *z, float *x_out);

/* A sampler's start: progress total `total` at step 0, z (batch * dz) ~ N(0, I) from each sample's
 * initial-noise stream, and z as the current estimate. */
void stsl__start_from_noise(stsl__run *R, int total, float *z);
/* The end of a reverse step: the new iterate z (m floats) must be finite; then `est`, the step's
 * clean estimate, becomes the run's current estimate and goes to progress. */
stsl_status stsl__step_end(stsl__run *R, const float *z, size_t m, const char *what, float *est);
/* The solvers' common exit (at their `done:` label): a run that succeeded (st OK) decodes its
 * `result` (batch * dz, the final latent) into x_out, and the decode's status is returned; a
 * cancelled run still writes its current estimate R->est to x_out and returns STSL_CANCELLED;
 * any other failure is returned as it is.  R->est is cleared.  `result` NULL: the solver has
 * decoded its result itself (rmp, whose failure message covers that decode too). */
stsl_status stsl__end_run(stsl__run *R, stsl_status st, const float *result, float *x_out);

/* The operator's Gaussian measurement noise sigma_y (STSL_PARAM_NOISE_SIGMA); 0 when it has none. */
double stsl__noise_sigma(const stsl__run *R);
/* The noise variance of the operator's noise model: NOISE_SIGMA^2; for the impulse-noise losses
 * (L1, Huber) without a NOISE_SIGMA, HUBER_DELTA^2 (the residual scale the loss still treats as
 * Gaussian).  0 when there is none. */
double stsl__noise_var(const stsl__run *R);
/* The factor w that makes w * (the solver's data loss) the negative log-likelihood of noise of
 * variance v: 1/(2v) for ||y - A x||^2, 1/v for Huber (r^2/2 inside delta), sqrt(2/v) for L1
 * (Laplace).  0 when v <= 0. */
double stsl__nll_weight(const stsl__run *R, double v);

#endif
