/*
 * solver.c -- solver handles: create/destroy/by_name, typed parameters (their table and defaults:
 * solver_params.c), progress, cancel (C11 atomic flag), NFE ledger, and stsl_solver_run with full
 * argument validation, the parameters resolved for the run, and dispatch to one file per method.
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
    s->facts = STSL__OP_FACTS_GENERIC;
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
    const char *pname = stsl_param_name(key) ? stsl_param_name(key) : "?";
    if (slot < 0 || !stsl__sp_bounds(s->kind, key, &b))
        return stsl__fail(s->err, STSL_ERR_UNSUPPORTED, "solver %s: parameter %d is not used",
                          solver_names[s->kind], (int)key);
    if (b.is_integer && !is_int)
        return stsl__fail(s->err, STSL_ERR_INVALID_ARG,
                          "solver %s: parameter %d (%s) is an integer (use stsl_solver_set_int)",
                          solver_names[s->kind], (int)key, pname);
    if (!b.is_integer && is_int)
        return stsl__fail(s->err, STSL_ERR_INVALID_ARG,
                          "solver %s: parameter %d (%s) is real (use stsl_solver_set_float)",
                          solver_names[s->kind], (int)key, pname);
    if (!(value >= b.min && value <= b.max))
        return stsl__fail(s->err, STSL_ERR_INVALID_ARG,
                          "solver %s: parameter %d (%s) = %g is outside [%g, %g]", solver_names[s->kind],
                          (int)key, pname, value, b.min, b.max);
    if (!stsl__sp_value_allowed(s->kind, key, value)) {
        const char *vn = stsl_param_value_name(key, (int64_t)value);
        return stsl__fail(s->err, STSL_ERR_INVALID_ARG, "solver %s: %s %g (%s) does not apply to it",
                          solver_names[s->kind], pname, value, vn ? vn : "unnamed");
    }
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

/* What a run would use (stsl__sp_resolve against the last run's operator, or the generic one). */
static stsl_status get_value(const stsl_solver *s, stsl_param key, double *value, int is_int)
{
    if (!s || !value) return STSL_ERR_INVALID_ARG;
    stsl_param_bounds b;
    int slot = stsl__solver_slot(key);
    if (slot < 0 || !stsl__sp_bounds(s->kind, key, &b)) return STSL_ERR_UNSUPPORTED;
    if (b.is_integer != is_int) return STSL_ERR_INVALID_ARG;
    double p[STSL__SP_COUNT];
    stsl__sp_resolve(s->kind, s->val, s->set, &s->facts, p);
    *value = p[slot];
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

/* One group of a run (all of it unless STSL_PARAM_PAD_BATCH splits it): the method's algorithm. */
static stsl_status shape_mismatch(char *err, const char *solver, const char *what, stsl_shape a,
                                  const char *expected, stsl_shape b)
{
    return stsl__fail(err, STSL_ERR_SHAPE, "solver %s: %s %dx%dx%d does not match %s %dx%dx%d", solver, what,
                      a.channels, a.height, a.width, expected, b.channels, b.height, b.width);
}

static stsl_status run_method(stsl__run *R, float *x_out)
{
    switch (R->sv->kind) {
    case STSL_SOLVER_DDIM: return stsl__solve_ddim(R, x_out);
    case STSL_SOLVER_DPS: return stsl__solve_dps(R, x_out);
    case STSL_SOLVER_LDPS:
    case STSL_SOLVER_PSLD: return stsl__solve_ldps_psld(R, x_out);
    case STSL_SOLVER_STSL:
    case STSL_SOLVER_STSL_BIASED: return stsl__solve_stsl(R, x_out);
    case STSL_SOLVER_RMP: return stsl__solve_rmp(R, x_out);
    case STSL_SOLVER_DPS_MO: return stsl__solve_dps_mo(R, x_out);
    default: return stsl__fail(R->err, STSL_ERR_INTERNAL, "solver: bad kind");
    }
}

/* One group's run of the method; the buffers it took from the run are freed here, whatever the
 * outcome. */
static stsl_status solve_group(stsl__run *R, float *x_out)
{
    stsl_status st = run_method(R, x_out);
    stsl__run_release(R);
    return st;
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
            return shape_mismatch(err, name, "score shape", zshape, "the autoencoder's latent shape", lat);
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
        return shape_mismatch(err, name, "operator input", opin, "the image shape", xshape);
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
    R.dz = stsl__shape_size(zshape);
    R.dx = stsl__shape_size(xshape);
    R.dy = stsl__shape_size(yshape);
    R.op_linear = linear;
    R.err = err;
    int64_t lk = STSL_LOSS_SQUARED;
    if (stsl_operator_get_int(op, STSL_PARAM_LOSS, &lk) != STSL_OK) lk = STSL_LOSS_SQUARED;
    R.loss_kind = (int)lk;
    if (stsl__find_nonfinite(y, (size_t)batch * R.dy) != (size_t)-1)
        return stsl__fail(err, STSL_ERR_NUMERIC, "solver %s: y contains NaN or Inf", name);
    /* The parameters of this run, resolved once against this operator (solver_params.c); the
     * getters report the same from now on. */
    sv->facts = (stsl__op_facts){(int)stsl_operator_get_kind(op), R.loss_kind, linear == 1, ae != NULL};
    stsl__sp_resolve(sv->kind, sv->val, sv->set, &sv->facts, R.p);
    if (sv->ctx && sv->ctx->log_fn && sv->ctx->log_level <= STSL_LOG_DEBUG) {
        char line[900];
        stsl__sp_format(sv->kind, R.p, line, sizeof line);
        stsl__log(sv->ctx, STSL_LOG_DEBUG, "solver %s: parameters %s", name, line);
    }
    R.limit = stsl__param_int(&R, STSL_PARAM_BATCH_LIMIT);
    R.pad_batch = stsl__param_int(&R, STSL_PARAM_PAD_BATCH);

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
    /* STSL_PARAM_PAD_BATCH P < batch: the batch runs as consecutive groups of at most P samples,
     * each a run of its own shaped as for P samples, so that what a sample computes depends on
     * P and never on the batch it came in; P = 1 makes it the very program of a one-sample run
     * (the promise in stsl.h).  Progress and the failed step count across the groups. */
    const int group = R.pad_batch > 0 && R.pad_batch < batch ? R.pad_batch : batch;
    R.groups = (batch + group - 1) / group;
    for (R.group = 0; R.group < R.groups && st == STSL_OK; R.group++) {
        R.first = R.group * group;
        R.batch = batch - R.first < group ? batch - R.first : group;
        R.y = y + (size_t)R.first * R.dy;
        R.seeds = seeds ? seeds + R.first : NULL;
        R.seed = (uint64_t)stsl__param(&R, STSL_PARAM_SEED) + (uint64_t)R.first;
        R.step = R.total = 0;
        R.est = NULL;
        st = solve_group(&R, x_out + (size_t)R.first * R.dx);
        if (st == STSL_ERR_NUMERIC && sv->failed_step < 0) sv->failed_step = stsl__run_step(&R, R.step);
    }
    sv->nfe.seconds = now_seconds() - t0;
    atomic_store(&sv->cancel, 0);
    stsl_autoencoder_destroy(own_ae);
    if (st == STSL_OK) stsl__clear_error(err);
    return st;
}
