/*
 * solver.c -- solver handles: create/destroy/by_name, typed parameters with per-kind defaults and
 * bounds, progress, cancel (C11 atomic flag), NFE ledger, and stsl_solver_run with full argument
 * validation and dispatch to one file per method.
 */
#include "solvers/solver_internal.h"

#include <math.h>
#include <string.h>
#include <time.h>

static const char *const solver_names[] = {"ddim", "dps",  "ldps", "psld",
                                           "stsl", "stsl-biased", "rmp", "dps-mo"};
#define N_KINDS 8

STSL_API const char *stsl_solver_names(void)
{
    return "stsl stsl-biased psld ldps dps dps-mo rmp ddim";
}

int stsl__solver_slot(stsl_param key)
{
    if (key == STSL_PARAM_SEED) return 0;
    if ((int)key >= STSL__SP_FIRST && (int)key <= STSL__SP_LAST) return (int)key - STSL__SP_FIRST + 1;
    return -1;
}

/* ---- per-kind parameter table: returns 1 and fills b when the kind uses the key ---- */
static int kind_bounds(stsl_solver_kind kind, stsl_param key, stsl_param_bounds *b)
{
#define B(mn, mx, df, isint)                                                   \
    do {                                                                       \
        b->min = (mn);                                                         \
        b->max = (mx);                                                         \
        b->default_value = (df);                                               \
        b->is_integer = (isint);                                               \
        return 1;                                                              \
    } while (0)
    const int stsl_like = kind == STSL_SOLVER_STSL || kind == STSL_SOLVER_STSL_BIASED;
    const double BIG = 1e12;
    switch (key) {
    case STSL_PARAM_SEED: B(0, 9007199254740992.0, 0, 1);
    case STSL_PARAM_BATCH_LIMIT: B(1, STSL_MAX_BATCH, 64, 1);
    case STSL_PARAM_PAD_BATCH: B(0, STSL_MAX_BATCH, 0, 1);
    case STSL_PARAM_PROGRESS_ESTIMATE: B(0, 1, 0, 1);
    case STSL_PARAM_STEPS:
        switch (kind) {
        case STSL_SOLVER_DDIM: B(1, 100000, 50, 1);
        case STSL_SOLVER_DPS: B(1, 100000, 1000, 1);
        case STSL_SOLVER_LDPS:
        case STSL_SOLVER_PSLD: B(1, 100000, 1000, 1);
        case STSL_SOLVER_STSL:
        case STSL_SOLVER_STSL_BIASED: B(1, 100000, 50, 1);
        case STSL_SOLVER_RMP: B(1, 100000, 400, 1);  /* VE: 30 unless set */
        case STSL_SOLVER_DPS_MO: B(2, 100000, 100, 1);
        }
        return 0;
    case STSL_PARAM_INNER_STEPS:
        if (kind == STSL_SOLVER_STSL) B(1, 10000, 5, 1);
        if (kind == STSL_SOLVER_STSL_BIASED) B(1, 10000, 1, 1);
        if (kind == STSL_SOLVER_RMP) B(1, 10000, 1, 1);   /* VE: 20 unless set */
        if (kind == STSL_SOLVER_DPS_MO) B(0, 10000, 3, 1);
        return 0;
    case STSL_PARAM_PROBES:
        if (stsl_like) B(1, 256, 2, 1);
        if (kind == STSL_SOLVER_RMP) B(1, 256, 1, 1);
        return 0;
    case STSL_PARAM_ETA:
        if (kind == STSL_SOLVER_STSL) B(0, BIG, 0.02, 0);
        if (kind == STSL_SOLVER_STSL_BIASED) B(0, BIG, 0.0, 0);
        if (kind == STSL_SOLVER_DDIM) B(0, 1, 0.0, 0);
        return 0;
    case STSL_PARAM_LAMBDA:
        if (stsl_like) B(0, BIG, 1.0, 0);
        return 0;
    case STSL_PARAM_LEARNING_RATE:
        if (stsl_like) B(1e-12, BIG, 0.2, 0);   /* Adam (STEP_RULE 0): 1e-2 unless set */
        if (kind == STSL_SOLVER_RMP) B(1e-12, 2.0, 1.0, 0);   /* VE: 0.1 unless set */
        if (kind == STSL_SOLVER_DPS_MO) B(1e-12, BIG, 0.05, 0);
        return 0;
    case STSL_PARAM_LR_DECAY:
        if (stsl_like) B(1e-6, 10, 0.998, 0);
        return 0;
    case STSL_PARAM_KAPPA:
        if (stsl_like) B(0, BIG, 0.0, 0);
        return 0;
    case STSL_PARAM_ZETA:
        if (kind == STSL_SOLVER_DPS) B(0, BIG, 0.3, 0);  /* 0.5 inpainting, 1.0 phase retrieval */
        if (kind == STSL_SOLVER_RMP) B(0, BIG, 1.0, 0);   /* 10 for impulse-noise losses unless set */
        if (kind == STSL_SOLVER_DPS_MO) B(0, BIG, 0.3, 0);
        return 0;
    case STSL_PARAM_OMEGA:
        if (kind == STSL_SOLVER_LDPS || kind == STSL_SOLVER_PSLD) B(0, BIG, 1.0, 0);
        return 0;
    case STSL_PARAM_GAMMA:
        if (kind == STSL_SOLVER_PSLD) B(0, BIG, 0.1, 0);
        return 0;
    case STSL_PARAM_TEMPERATURE:
        if (kind == STSL_SOLVER_DPS_MO) B(0, BIG, 0.0, 0);   /* plain descent; 2 sigma_y^2 = SGLD on the likelihood */
        return 0;
    case STSL_PARAM_SIGMA_MIN:
        if (kind == STSL_SOLVER_DPS_MO || kind == STSL_SOLVER_RMP) B(1e-6, 1e6, 0.01, 0);
        return 0;
    case STSL_PARAM_SIGMA_MAX:
        if (kind == STSL_SOLVER_DPS_MO || kind == STSL_SOLVER_RMP) B(1e-6, 1e6, 80.0, 0);
        return 0;
    case STSL_PARAM_VARIANT:
        if (kind == STSL_SOLVER_RMP) B(0, 2, STSL_VARIANT_RMP_VP, 1);
        if (stsl_like) B(0, 3, STSL_VARIANT_STSL_SCORE_PLUS, 1);
        return 0;
    case STSL_PARAM_INIT:
        if (stsl_like) B(0, 3, STSL_INIT_FRESH_NOISE, 1);
        return 0;
    case STSL_PARAM_SQUARED_LOSS:
        if (stsl_like) B(0, 1, 1, 1);
        return 0;
    case STSL_PARAM_INNER_INCLUSIVE:
        if (stsl_like) B(0, 1, 0, 1);
        return 0;
    case STSL_PARAM_ADAM_PERSIST:
        if (stsl_like) B(0, 1, 0, 1);
        return 0;
    case STSL_PARAM_STEP_RULE:
        if (stsl_like) B(0, 1, STSL_STEP_SCALED, 1);
        return 0;
    case STSL_PARAM_STEP_NOISE:
        if (stsl_like) B(0, 1, 1.0, 0);
        return 0;
    case STSL_PARAM_LIKELIHOOD_VARIANCE:
        if (kind == STSL_SOLVER_RMP) B(0, 1, STSL_LIKVAR_TWEEDIE, 1);   /* issue 28 */
        return 0;
    case STSL_PARAM_RENOISE_LEVEL:
        if (kind == STSL_SOLVER_DPS_MO) B(0, 1, 0, 1);
        return 0;
    default:
        return 0;
    }
#undef B
}

STSL_API stsl_status stsl_solver_param_bounds(stsl_solver_kind kind, stsl_param key,
                                              stsl_param_bounds *bounds)
{
    if (!bounds || (int)kind < 0 || (int)kind >= N_KINDS) return STSL_ERR_INVALID_ARG;
    return kind_bounds(kind, key, bounds) ? STSL_OK : STSL_ERR_UNSUPPORTED;
}

double stsl__sp(const stsl_solver *s, stsl_param key)
{
    int k = stsl__solver_slot(key);
    return k < 0 ? 0.0 : s->val[k];
}
int stsl__sp_int(const stsl_solver *s, stsl_param key) { return (int)stsl__sp(s, key); }
int stsl__sp_isset(const stsl_solver *s, stsl_param key)
{
    int k = stsl__solver_slot(key);
    return k < 0 ? 0 : s->set[k];
}

STSL_API stsl_status stsl_solver_create(stsl_context *ctx, stsl_solver_kind kind,
                                        stsl_solver **out)
{
    if (!out) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "solver: out is NULL");
    *out = NULL;
    if ((int)kind < 0 || (int)kind >= N_KINDS)
        return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "solver: unknown kind %d", (int)kind);
    stsl_solver *s = (stsl_solver *)stsl__calloc(1, sizeof *s);
    if (!s) return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "solver: out of memory");
    s->ctx = ctx;
    s->kind = kind;
    atomic_init(&s->cancel, 0);
    s->failed_step = -1;
    s->nfe.struct_size = sizeof(stsl_nfe);
    for (int key = 0; key <= STSL__SP_LAST; key++) {
        int slot = stsl__solver_slot((stsl_param)key);
        stsl_param_bounds b;
        if (slot >= 0 && kind_bounds(kind, (stsl_param)key, &b)) s->val[slot] = b.default_value;
    }
    *out = s;
    return STSL_OK;
}

STSL_API stsl_status stsl_solver_create_by_name(stsl_context *ctx, const char *name,
                                                stsl_solver **out)
{
    if (!out) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "solver: out is NULL");
    *out = NULL;
    if (!name) return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "solver: name is NULL");
    for (int k = 0; k < N_KINDS; k++)
        if (strcmp(name, solver_names[k]) == 0) return stsl_solver_create(ctx, (stsl_solver_kind)k, out);
    return stsl__ctx_fail(ctx, STSL_ERR_INVALID_ARG, "solver: unknown solver \"%.64s\" (known: %s)",
                          name, stsl_solver_names());
}

STSL_API void stsl_solver_destroy(stsl_solver *solver)
{
    if (solver) stsl__free(solver);
}

STSL_API stsl_solver_kind stsl_solver_get_kind(const stsl_solver *solver)
{
    return solver ? solver->kind : (stsl_solver_kind)-1;
}

static stsl_status set_value(stsl_solver *s, stsl_param key, double value, int is_int)
{
    if (!s) return STSL_ERR_INVALID_ARG;
    stsl_param_bounds b;
    int slot = stsl__solver_slot(key);
    if (slot < 0 || !kind_bounds(s->kind, key, &b))
        return stsl__fail(s->err, STSL_ERR_UNSUPPORTED, "solver %s: parameter %d is not used",
                          solver_names[s->kind], (int)key);
    if (b.is_integer && !is_int)
        return stsl__fail(s->err, STSL_ERR_INVALID_ARG,
                          "solver %s: parameter %d is an integer (use stsl_solver_set_int)",
                          solver_names[s->kind], (int)key);
    if (!b.is_integer && is_int)
        return stsl__fail(s->err, STSL_ERR_INVALID_ARG,
                          "solver %s: parameter %d is real (use stsl_solver_set_float)",
                          solver_names[s->kind], (int)key);
    if (!(value >= b.min && value <= b.max))
        return stsl__fail(s->err, STSL_ERR_INVALID_ARG,
                          "solver %s: parameter %d = %g is outside [%g, %g]", solver_names[s->kind],
                          (int)key, value, b.min, b.max);
    if (key == STSL_PARAM_VARIANT && (s->kind == STSL_SOLVER_STSL || s->kind == STSL_SOLVER_STSL_BIASED)
        && value != STSL_VARIANT_DEFAULT && value != STSL_VARIANT_STSL_SCORE_PLUS)
        return stsl__fail(s->err, STSL_ERR_INVALID_ARG,
                          "solver %s: variant %g is not an STSL variant (0 or %d)",
                          solver_names[s->kind], value, (int)STSL_VARIANT_STSL_SCORE_PLUS);
    s->val[slot] = value;
    s->set[slot] = 1;
    stsl__clear_error(s->err);
    return STSL_OK;
}

STSL_API stsl_status stsl_solver_set_int(stsl_solver *solver, stsl_param key, int64_t value)
{
    return set_value(solver, key, (double)value, 1);
}

STSL_API stsl_status stsl_solver_set_float(stsl_solver *solver, stsl_param key, double value)
{
    if (solver && !isfinite(value))
        return stsl__fail(solver->err, STSL_ERR_INVALID_ARG, "solver: value is not finite");
    return set_value(solver, key, value, 0);
}

static stsl_status get_value(const stsl_solver *s, stsl_param key, double *value, int is_int)
{
    if (!s || !value) return STSL_ERR_INVALID_ARG;
    stsl_param_bounds b;
    int slot = stsl__solver_slot(key);
    if (slot < 0 || !kind_bounds(s->kind, key, &b)) return STSL_ERR_UNSUPPORTED;
    if (b.is_integer != is_int) return STSL_ERR_INVALID_ARG;
    *value = s->val[slot];
    return STSL_OK;
}

STSL_API stsl_status stsl_solver_get_int(const stsl_solver *solver, stsl_param key, int64_t *value)
{
    double v = 0;
    if (!value) return STSL_ERR_INVALID_ARG;
    stsl_status st = get_value(solver, key, &v, 1);
    if (st == STSL_OK) *value = (int64_t)v;
    return st;
}

STSL_API stsl_status stsl_solver_get_float(const stsl_solver *solver, stsl_param key,
                                           double *value)
{
    return get_value(solver, key, value, 0);
}

STSL_API stsl_status stsl_solver_set_progress(stsl_solver *solver, stsl_progress_fn fn, void *user)
{
    if (!solver) return STSL_ERR_INVALID_ARG;
    solver->progress = fn;
    solver->progress_user = user;
    return STSL_OK;
}

STSL_API void stsl_solver_cancel(stsl_solver *solver)
{
    if (solver) atomic_store(&solver->cancel, 1);
}

STSL_API stsl_status stsl_solver_get_nfe(const stsl_solver *solver, stsl_nfe *nfe)
{
    if (!solver || !nfe) return STSL_ERR_INVALID_ARG;
    if (nfe->struct_size < sizeof(size_t)) return STSL_ERR_INVALID_ARG;
    size_t n = nfe->struct_size < sizeof(stsl_nfe) ? nfe->struct_size : sizeof(stsl_nfe);
    stsl_nfe tmp = solver->nfe;
    tmp.struct_size = nfe->struct_size;
    memcpy(nfe, &tmp, n);
    return STSL_OK;
}

STSL_API int stsl_solver_failed_step(const stsl_solver *solver)
{
    return solver ? solver->failed_step : -1;
}

STSL_API const char *stsl_solver_last_error(const stsl_solver *solver)
{
    return solver ? solver->err : "solver is NULL";
}

static int shape_eq(stsl_shape a, stsl_shape b)
{
    return a.channels == b.channels && a.height == b.height && a.width == b.width;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

STSL_API stsl_status stsl_solver_run(stsl_solver *solver, stsl_score *score, stsl_operator *op,
                                     stsl_autoencoder *ae, const float *y, float *x_out,
                                     int batch)
{
    return stsl_solver_run_seeded(solver, score, op, ae, y, x_out, batch, NULL);
}

STSL_API stsl_status stsl_solver_run_seeded(stsl_solver *solver, stsl_score *score,
                                            stsl_operator *op, stsl_autoencoder *ae,
                                            const float *y, float *x_out, int batch,
                                            const uint64_t *seeds)
{
    if (!solver) return STSL_ERR_INVALID_ARG;
    stsl_solver *sv = solver;
    char *err = sv->err;
    stsl__clear_error(err);
    memset(&sv->nfe, 0, sizeof sv->nfe);
    sv->nfe.struct_size = sizeof(stsl_nfe);
    sv->failed_step = -1;
    const char *name = solver_names[sv->kind];
    STSL_CHECK_ARG(score, err, "solver %s: score is NULL", name);
    STSL_CHECK_ARG(op, err, "solver %s: operator is NULL", name);
    STSL_CHECK_ARG(y, err, "solver %s: y is NULL", name);
    STSL_CHECK_ARG(x_out, err, "solver %s: x_out is NULL", name);
    STSL_CHECK_ARG(batch >= 1 && batch <= STSL_MAX_BATCH, err,
                   "solver %s: batch %d outside 1..%d", name, batch, STSL_MAX_BATCH);
    const stsl_schedule *sched = stsl_score_schedule(score);
    STSL_CHECK_ARG(sched, err, "solver %s: the score has no schedule", name);

    stsl_shape zshape, xshape, opin, yshape;
    stsl_status st = stsl_score_shape(score, &zshape);
    if (st != STSL_OK) return stsl__fail(err, st, "solver %s: cannot read the score's shape", name);
    if (ae) {
        stsl_shape lat;
        stsl_autoencoder_latent_shape(ae, &lat);
        stsl_autoencoder_image_shape(ae, &xshape);
        if (!shape_eq(lat, zshape))
            return stsl__fail(err, STSL_ERR_SHAPE,
                              "solver %s: score shape %dx%dx%d does not match the autoencoder's "
                              "latent shape %dx%dx%d",
                              name, zshape.channels, zshape.height, zshape.width, lat.channels,
                              lat.height, lat.width);
    } else {
        if (stsl_score_is_latent(score) == 1)
            return stsl__fail(err, STSL_ERR_INVALID_ARG,
                              "solver %s: the score is a latent-space prior: pass its autoencoder",
                              name);
        xshape = zshape;
    }
    st = stsl_operator_input_shape(op, &opin);
    if (st != STSL_OK) return stsl__fail(err, st, "solver %s: operator: %s", name, stsl_operator_last_error(op));
    if (!shape_eq(opin, xshape))
        return stsl__fail(err, STSL_ERR_SHAPE,
                          "solver %s: operator input %dx%dx%d does not match the image shape "
                          "%dx%dx%d",
                          name, opin.channels, opin.height, opin.width, xshape.channels,
                          xshape.height, xshape.width);
    st = stsl_operator_output_shape(op, &yshape);
    if (st != STSL_OK) return stsl__fail(err, st, "solver %s: operator: %s", name, stsl_operator_last_error(op));
    int linear = stsl_operator_is_linear(op);
    if (linear < 0) return stsl__fail(err, STSL_ERR_INTERNAL, "solver %s: operator: %s", name, stsl_operator_last_error(op));
    if (sv->kind == STSL_SOLVER_PSLD && !linear)
        return stsl__fail(err, STSL_ERR_UNSUPPORTED,
                          "solver psld: the gluing term needs A^T and A^T A: the operator is "
                          "nonlinear (use ldps, dps or stsl)");

    stsl__run R;
    memset(&R, 0, sizeof R);
    R.sv = sv;
    R.ctx = sv->ctx;
    R.score = score;
    R.op = op;
    R.sched = sched;
    R.T_train = stsl_schedule_timesteps(sched);
    R.batch = batch;
    R.dz = stsl__shape_size(zshape);
    R.dx = stsl__shape_size(xshape);
    R.dy = stsl__shape_size(yshape);
    R.y = y;
    R.seed = (uint64_t)stsl__sp(sv, STSL_PARAM_SEED);
    R.seeds = seeds;
    R.limit = stsl__sp_int(sv, STSL_PARAM_BATCH_LIMIT);
    R.pad_batch = stsl__sp_int(sv, STSL_PARAM_PAD_BATCH);
    R.op_linear = linear;
    R.err = err;
    int64_t lk = STSL_LOSS_SQUARED;
    if (stsl_operator_get_int(op, STSL_PARAM_LOSS, &lk) != STSL_OK) lk = STSL_LOSS_SQUARED;
    R.loss_kind = (int)lk;
    if (stsl__find_nonfinite(y, (size_t)batch * R.dy) != (size_t)-1)
        return stsl__fail(err, STSL_ERR_NUMERIC, "solver %s: y contains NaN or Inf", name);

    stsl_autoencoder *own_ae = NULL;
    if (!ae) {
        st = stsl_autoencoder_create_identity(sv->ctx, xshape, &own_ae);
        if (st != STSL_OK) return stsl__fail(err, st, "solver %s: cannot create the identity autoencoder", name);
        ae = own_ae;
    }
    R.ae = ae;
    R.ae_identity = ae->is_identity;

    atomic_store(&sv->cancel, 0);
    double t0 = now_seconds();
    switch (sv->kind) {
    case STSL_SOLVER_DDIM: st = stsl__solve_ddim(&R, x_out); break;
    case STSL_SOLVER_DPS: st = stsl__solve_dps(&R, x_out); break;
    case STSL_SOLVER_LDPS:
    case STSL_SOLVER_PSLD: st = stsl__solve_ldps_psld(&R, x_out); break;
    case STSL_SOLVER_STSL:
    case STSL_SOLVER_STSL_BIASED: st = stsl__solve_stsl(&R, x_out); break;
    case STSL_SOLVER_RMP: st = stsl__solve_rmp(&R, x_out); break;
    case STSL_SOLVER_DPS_MO: st = stsl__solve_dps_mo(&R, x_out); break;
    default: st = stsl__fail(err, STSL_ERR_INTERNAL, "solver: bad kind"); break;
    }
    if (st == STSL_ERR_NUMERIC && sv->failed_step < 0) sv->failed_step = R.step;
    sv->nfe.seconds = now_seconds() - t0;
    atomic_store(&sv->cancel, 0);
    stsl_autoencoder_destroy(own_ae);
    if (st == STSL_OK) stsl__clear_error(err);
    return st;
}
