/*
 * test_solver_params.c -- parameter metadata (issue 29): a getter reports what the run uses.
 * For every solver, with its defaults and after the settings that change other defaults (RMP's
 * VE variant, STSL's Adam rule), get-after-create equals the values the run logs at debug level
 * (on a 1-D exact GMM prior with A = 1: a generic operator, ||A||_2^2 = 1 exactly), and the
 * run's progress total equals STEPS; after runs with operators whose kind or loss changes a
 * default, the getters report that run's values.  The name/help/value lookups and the key lists
 * refuse bad arguments, and names are unique and round-trip.
 */
#include "common/testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NO_KEY ((stsl_param)0)

static stsl_context *ctx;
static stsl_schedule *sched;
static stsl_score *gmm;
static stsl_operator *op_generic;
static char logged[2048];
static int progress_total;

static void log_sink(void *user, stsl_log_level level, const char *msg)
{
    (void)user;
    if (level == STSL_LOG_DEBUG && strstr(msg, ": parameters ")) snprintf(logged, sizeof logged, "%s", msg);
}

static int stop_at_first(void *user, int step, int total, const float *x0, int batch)
{
    (void)user, (void)step, (void)x0, (void)batch;
    progress_total = total;
    return 1;   /* cancel: the parameters are logged before the first step */
}

static void setup(void)
{
    if (ctx) return;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    TU_ASSERT_OK(stsl_context_set_log(ctx, log_sink, NULL, STSL_LOG_DEBUG));
    TU_ASSERT_OK(stsl_schedule_create(ctx, STSL_SCHEDULE_LINEAR, 1e-4, 0.02, 1000, &sched));
    double w[2] = {1, 2}, mu[2] = {-1.0, 1.5}, var[2] = {0.3, 0.5};
    TU_ASSERT_OK(stsl_score_create_gmm(ctx, (stsl_shape){1, 1, 1}, 2, w, mu, var, 0, sched, &gmm));
    const float one = 1.0f;
    TU_ASSERT_OK(stsl_operator_create_matrix(ctx, (stsl_shape){1, 1, 1}, 1, &one, &op_generic));
    TU_ASSERT_OK(stsl_operator_set_float(op_generic, STSL_PARAM_NOISE_SIGMA, 0.1));
}

/* The value of a key through the getter of its type. */
static double solver_get(const stsl_solver *s, stsl_param key)
{
    stsl_param_bounds b;
    int64_t iv = 0;
    double v = 0;
    TU_ASSERT_OK(stsl_solver_param_bounds(stsl_solver_get_kind(s), key, &b));
    if (!b.is_integer) TU_ASSERT_OK(stsl_solver_get_float(s, key, &v));
    else if (stsl_solver_get_int(s, key, &iv) == STSL_OK) v = (double)iv;
    else CU_FAIL("stsl_solver_get_int");
    return v;
}

/* Run until the first progress report; the run's logged parameters land in `logged`. */
static void run_once(stsl_solver *s, stsl_operator *op)
{
    float y[1] = {0.4f}, x[1];
    logged[0] = '\0';
    progress_total = -1;
    TU_ASSERT_OK(stsl_solver_set_progress(s, stop_at_first, NULL));
    stsl_status st = stsl_solver_run(s, gmm, op, NULL, y, x, 1);
    if (st != STSL_CANCELLED) fprintf(stderr, "\n  run: %s\n", stsl_solver_last_error(s));
    CU_ASSERT_EQUAL(st, STSL_CANCELLED);
}

/* Every "name=value" of the log equals the getter, and the log lists exactly the kind's keys.
 * Returns the number of keys compared. */
static int compare_log(stsl_solver *s, const char *what)
{
    const char *p = strstr(logged, ": parameters ");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    p += strlen(": parameters ");
    stsl_param keys[64];
    int nkeys = 0, seen = 0;
    TU_ASSERT_OK(stsl_solver_param_keys(stsl_solver_get_kind(s), keys, 64, &nkeys));
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", p);
    for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " ")) {
        char *eq = strchr(tok, '=');
        CU_ASSERT_PTR_NOT_NULL_FATAL(eq);
        *eq = '\0';
        stsl_param key;
        TU_ASSERT_OK(stsl_param_from_name(tok, &key));
        stsl_param_bounds b;
        TU_ASSERT_OK(stsl_solver_param_bounds(stsl_solver_get_kind(s), key, &b));
        double got = solver_get(s, key), used = strtod(eq + 1, NULL);
        if (got != used)
            fprintf(stderr, "\n  %s: %s: the getter says %.17g, the run used %.17g\n", what, tok, got, used);
        CU_ASSERT_EQUAL(got, used);
        int listed = 0;
        for (int i = 0; i < nkeys; i++) listed |= keys[i] == key;
        CU_ASSERT(listed);
        seen++;
    }
    CU_ASSERT_EQUAL(seen, nkeys);
    return seen;
}

static void check_steps_total(stsl_solver *s)
{
    int64_t steps = 0, variant = 0;
    TU_ASSERT_OK(stsl_solver_get_int(s, STSL_PARAM_STEPS, &steps));
    /* RMP's VE STEPS counts the ladder's levels: the first is the start, not a step */
    if (stsl_solver_get_kind(s) == STSL_SOLVER_RMP &&
        stsl_solver_get_int(s, STSL_PARAM_VARIANT, &variant) == STSL_OK && variant == STSL_VARIANT_RMP_VE)
        steps -= 1;
    CU_ASSERT_EQUAL(progress_total, steps);   /* the run took the steps the getter reported */
}

static void test_get_after_create_equals_run(void)
{
    setup();
    for (int kind = 0; kind < 8; kind++) {
        stsl_solver *s = NULL;
        TU_ASSERT_OK(stsl_solver_create(ctx, (stsl_solver_kind)kind, &s));
        if (!s) continue;
        /* before any run the getters report the bounds' defaults */
        stsl_param keys[64];
        int n = 0;
        TU_ASSERT_OK(stsl_solver_param_keys((stsl_solver_kind)kind, keys, 64, &n));
        CU_ASSERT(n > 0);
        for (int i = 0; i < n; i++) {
            stsl_param_bounds b;
            TU_ASSERT_OK(stsl_solver_param_bounds((stsl_solver_kind)kind, keys[i], &b));
            double v = solver_get(s, keys[i]);
            CU_ASSERT_EQUAL(v, b.default_value);
            CU_ASSERT(b.default_value >= b.min && b.default_value <= b.max);
        }
        run_once(s, op_generic);
        CU_ASSERT_EQUAL(compare_log(s, "defaults"), n);
        check_steps_total(s);
        stsl_solver_destroy(s);
    }
}

/* Settings that change other defaults: the getters follow at once, and the run agrees. */
static void test_dependent_defaults(void)
{
    setup();
    struct {
        stsl_solver_kind kind;
        stsl_param setting;
        int64_t value;
        stsl_param changed;   /* a key whose default the setting changes */
    } cases[] = {
        {STSL_SOLVER_RMP, STSL_PARAM_VARIANT, STSL_VARIANT_RMP_VE, STSL_PARAM_STEPS},
        {STSL_SOLVER_RMP, STSL_PARAM_VARIANT, STSL_VARIANT_RMP_VE, STSL_PARAM_INNER_STEPS},
        {STSL_SOLVER_RMP, STSL_PARAM_VARIANT, STSL_VARIANT_RMP_VE, STSL_PARAM_LEARNING_RATE},
        {STSL_SOLVER_RMP, STSL_PARAM_VARIANT, STSL_VARIANT_DEFAULT, NO_KEY},
        {STSL_SOLVER_STSL, STSL_PARAM_STEP_RULE, STSL_STEP_ADAM, STSL_PARAM_LEARNING_RATE},
        {STSL_SOLVER_STSL_BIASED, STSL_PARAM_STEP_RULE, STSL_STEP_ADAM, STSL_PARAM_LEARNING_RATE},
        /* one denoiser pass: 100 levels at eta 0.75 (the VJPs of two passes on 50) */
        {STSL_SOLVER_DPS_MO, STSL_PARAM_DENOISE_PASSES, 1, STSL_PARAM_STEPS},
        {STSL_SOLVER_DPS_MO, STSL_PARAM_DENOISE_PASSES, 1, STSL_PARAM_ETA},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        stsl_solver *s = NULL;
        TU_ASSERT_OK(stsl_solver_create(ctx, cases[c].kind, &s));
        if (!s) continue;
        double before = 0, after = 0;
        stsl_param_bounds b = {0, 0, 0, 0};
        int track = cases[c].changed != NO_KEY;
        if (track) TU_ASSERT_OK(stsl_solver_param_bounds(cases[c].kind, cases[c].changed, &b));
        before = b.default_value;
        TU_ASSERT_OK(stsl_solver_set_int(s, cases[c].setting, cases[c].value));
        if (track) {
            after = solver_get(s, cases[c].changed);
            CU_ASSERT(after != before);   /* the setting's own default, reported at once */
        }
        run_once(s, op_generic);
        compare_log(s, "dependent");
        check_steps_total(s);
        /* a value set wins over every rule */
        if (track) {
            if (b.is_integer) TU_ASSERT_OK(stsl_solver_set_int(s, cases[c].changed, (int64_t)before));
            else TU_ASSERT_OK(stsl_solver_set_float(s, cases[c].changed, before));
            run_once(s, op_generic);
            compare_log(s, "set");
            CU_ASSERT_EQUAL(solver_get(s, cases[c].changed), before);
        }
        stsl_solver_destroy(s);
    }
}

/* Operator-dependent defaults: after a run, the getters report that run's values. */
static void test_operator_dependent_defaults(void)
{
    setup();
    stsl_operator *huber = NULL, *inpaint = NULL;
    const float one = 1.0f;
    TU_ASSERT_OK(stsl_operator_create_matrix(ctx, (stsl_shape){1, 1, 1}, 1, &one, &huber));
    TU_ASSERT_OK(stsl_operator_set_int(huber, STSL_PARAM_LOSS, STSL_LOSS_HUBER));
    TU_ASSERT_OK(stsl_operator_create(ctx, STSL_OP_RANDOM_INPAINT, (stsl_shape){1, 1, 1}, 0, &inpaint));
    TU_ASSERT_OK(stsl_operator_set_float(inpaint, STSL_PARAM_DROP_RATE, 0.0));
    struct {
        stsl_solver_kind kind;
        stsl_operator *op;
        stsl_param changed;
    } cases[] = {
        {STSL_SOLVER_RMP, huber, STSL_PARAM_ZETA},
        /* no full Tweedie covariance under an impulse loss: the flat-prior variance */
        {STSL_SOLVER_RMP, huber, STSL_PARAM_LIKELIHOOD_VARIANCE},
        {STSL_SOLVER_DPS, inpaint, STSL_PARAM_ZETA},
        /* not the squared loss: one denoiser pass, and with it 100 levels at eta 0.75 */
        {STSL_SOLVER_DPS_MO, huber, STSL_PARAM_DENOISE_PASSES},
        {STSL_SOLVER_DPS_MO, huber, STSL_PARAM_STEPS},
        {STSL_SOLVER_DPS_MO, huber, STSL_PARAM_ETA},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        stsl_solver *s = NULL;
        TU_ASSERT_OK(stsl_solver_create(ctx, cases[c].kind, &s));
        if (!s || !cases[c].op) continue;
        double before = solver_get(s, cases[c].changed), after = 0;
        run_once(s, cases[c].op);
        compare_log(s, "operator");
        after = solver_get(s, cases[c].changed);
        CU_ASSERT(after != before);
        /* and back: a run with the generic operator restores the generic default */
        run_once(s, op_generic);
        compare_log(s, "generic again");
        after = solver_get(s, cases[c].changed);
        CU_ASSERT_EQUAL(after, before);
        stsl_solver_destroy(s);
    }
    /* two passes set on that operator: the steps and eta of two passes, not one pass's (they
     * follow the passes, not the operator) */
    stsl_solver *mo = NULL;
    TU_ASSERT_OK(stsl_solver_create(ctx, STSL_SOLVER_DPS_MO, &mo));
    if (mo && huber) {
        stsl_param_bounds steps, eta;
        TU_ASSERT_OK(stsl_solver_param_bounds(STSL_SOLVER_DPS_MO, STSL_PARAM_STEPS, &steps));
        TU_ASSERT_OK(stsl_solver_param_bounds(STSL_SOLVER_DPS_MO, STSL_PARAM_ETA, &eta));
        TU_ASSERT_OK(stsl_solver_set_int(mo, STSL_PARAM_DENOISE_PASSES, 2));
        run_once(mo, huber);
        compare_log(mo, "dps-mo 2 passes, huber");
        check_steps_total(mo);
        CU_ASSERT_EQUAL(solver_get(mo, STSL_PARAM_STEPS), steps.default_value);
        CU_ASSERT_EQUAL(solver_get(mo, STSL_PARAM_ETA), eta.default_value);
    }
    stsl_solver_destroy(mo);
    stsl_operator_destroy(huber);
    stsl_operator_destroy(inpaint);
}

/* ---- the lookups: argument validation, uniqueness, round trips ---- */

static void test_lookups_validate(void)
{
    stsl_param key = (stsl_param)0;
    int64_t v = -7;
    CU_ASSERT_PTR_NULL(stsl_param_name((stsl_param)0));
    CU_ASSERT_PTR_NULL(stsl_param_name((stsl_param)99));
    CU_ASSERT_PTR_NULL(stsl_param_name((stsl_param)-1));
    CU_ASSERT_PTR_NULL(stsl_param_aliases((stsl_param)999));
    CU_ASSERT_PTR_NULL(stsl_param_help((stsl_param)999));
    CU_ASSERT_STRING_EQUAL(stsl_param_name(STSL_PARAM_INNER_STEPS), "inner-steps");
    TU_ASSERT_STATUS(stsl_param_from_name(NULL, &key), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_param_from_name("steps", NULL), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_param_from_name("no-such-key", &key), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_param_from_name("--steps", &key), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_param_from_name("", &key), STSL_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(key, (stsl_param)0);   /* untouched on failure */
    TU_ASSERT_OK(stsl_param_from_name("K", &key));   /* an alias */
    CU_ASSERT_EQUAL(key, STSL_PARAM_INNER_STEPS);
    CU_ASSERT_STRING_EQUAL(stsl_param_value_name(STSL_PARAM_VARIANT, STSL_VARIANT_RMP_VE), "rmp-ve");
    CU_ASSERT_PTR_NULL(stsl_param_value_name(STSL_PARAM_VARIANT, 99));
    CU_ASSERT_PTR_NULL(stsl_param_value_name(STSL_PARAM_STEPS, 0));
    CU_ASSERT_PTR_NULL(stsl_param_value_name((stsl_param)999, 0));
    TU_ASSERT_STATUS(stsl_param_value_from_name(STSL_PARAM_LOSS, NULL, &v), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_param_value_from_name(STSL_PARAM_LOSS, "l1", NULL), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_param_value_from_name((stsl_param)999, "l1", &v), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_param_value_from_name(STSL_PARAM_STEPS, "x", &v), STSL_ERR_UNSUPPORTED);
    TU_ASSERT_STATUS(stsl_param_value_from_name(STSL_PARAM_LOSS, "nope", &v), STSL_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(v, -7);
    TU_ASSERT_OK(stsl_param_value_from_name(STSL_PARAM_LOSS, "l2", &v));   /* an alias */
    CU_ASSERT_EQUAL(v, STSL_LOSS_SQUARED);

    stsl_param keys[64];
    int n = -1;
    TU_ASSERT_STATUS(stsl_solver_param_keys((stsl_solver_kind)8, keys, 64, &n), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_solver_param_keys((stsl_solver_kind)-1, keys, 64, &n), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_solver_param_keys(STSL_SOLVER_DPS, keys, 64, NULL), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_solver_param_keys(STSL_SOLVER_DPS, keys, -1, &n), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_solver_param_keys(STSL_SOLVER_DPS, NULL, 1, &n), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_operator_param_keys((stsl_operator_kind)13, keys, 64, &n), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_operator_param_keys(STSL_OP_SR, keys, 64, NULL), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_operator_param_keys(STSL_OP_SR, keys, -1, &n), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl_operator_param_keys(STSL_OP_SR, NULL, 1, &n), STSL_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(n, -1);
    /* capacity smaller than the count: the count, and only `capacity` keys written */
    int all = 0, some = 0;
    TU_ASSERT_OK(stsl_solver_param_keys(STSL_SOLVER_STSL, NULL, 0, &all));
    CU_ASSERT(all > 2);
    keys[2] = (stsl_param)-5;
    TU_ASSERT_OK(stsl_solver_param_keys(STSL_SOLVER_STSL, keys, 2, &some));
    CU_ASSERT_EQUAL(some, all);
    CU_ASSERT_EQUAL(keys[2], (stsl_param)-5);
    TU_ASSERT_OK(stsl_operator_param_keys(STSL_OP_SR, NULL, 0, &all));
    CU_ASSERT(all >= 5);   /* the noise model's keys and the filter */
}

/* Every key a kind uses has a unique name and help; names, aliases and value names round-trip. */
static void test_names_unique_and_round_trip(void)
{
    const char *spellings[256];
    int ns = 0;
    for (int k = 1; k < 200; k++) {
        const char *name = stsl_param_name((stsl_param)k);
        if (!name) continue;
        CU_ASSERT(strlen(name) > 0 && name[0] != '-');
        CU_ASSERT_PTR_NOT_NULL(stsl_param_help((stsl_param)k));
        CU_ASSERT_PTR_NOT_NULL(stsl_param_aliases((stsl_param)k));
        stsl_param back;
        TU_ASSERT_OK(stsl_param_from_name(name, &back));
        CU_ASSERT_EQUAL(back, (stsl_param)k);
        char aliases[256];
        snprintf(aliases, sizeof aliases, "%s", stsl_param_aliases((stsl_param)k));
        if (ns < 256) spellings[ns++] = name;
        for (char *a = strtok(aliases, " "); a; a = strtok(NULL, " ")) {
            TU_ASSERT_OK(stsl_param_from_name(a, &back));
            CU_ASSERT_EQUAL(back, (stsl_param)k);
        }
        for (int64_t v = -1; v < 8; v++) {
            const char *vn = stsl_param_value_name((stsl_param)k, v);
            int64_t vb = -99;
            if (!vn) continue;
            TU_ASSERT_OK(stsl_param_value_from_name((stsl_param)k, vn, &vb));
            CU_ASSERT_EQUAL(vb, v);
        }
    }
    for (int i = 0; i < ns; i++)
        for (int j = i + 1; j < ns; j++) CU_ASSERT(strcmp(spellings[i], spellings[j]) != 0);
    /* every key any kind uses is named */
    for (int kind = 0; kind < 8; kind++) {
        stsl_param keys[64];
        int n = 0;
        TU_ASSERT_OK(stsl_solver_param_keys((stsl_solver_kind)kind, keys, 64, &n));
        for (int i = 0; i < n; i++) CU_ASSERT_PTR_NOT_NULL(stsl_param_name(keys[i]));
    }
    for (int kind = 0; kind <= STSL_OP_CONVOLVE; kind++) {
        stsl_param keys[64];
        int n = 0;
        TU_ASSERT_OK(stsl_operator_param_keys((stsl_operator_kind)kind, keys, 64, &n));
        for (int i = 0; i < n; i++) CU_ASSERT_PTR_NOT_NULL(stsl_param_name(keys[i]));
    }
}

/* An operator created on a 256x256 image starts at the defaults its bounds report. */
static void test_operator_defaults_match_bounds(void)
{
    setup();
    for (int kind = 0; kind <= STSL_OP_CONVOLVE; kind++) {
        if (kind == STSL_OP_MATRIX || kind == STSL_OP_CUSTOM) continue;   /* made from user data */
        stsl_operator *op = NULL;
        TU_ASSERT_OK(stsl_operator_create(ctx, (stsl_operator_kind)kind, (stsl_shape){3, 256, 256},
                                          kind == STSL_OP_SR ? 4 : 0, &op));
        if (!op) continue;
        stsl_param keys[64];
        int n = 0;
        TU_ASSERT_OK(stsl_operator_param_keys((stsl_operator_kind)kind, keys, 64, &n));
        for (int i = 0; i < n; i++) {
            stsl_param_bounds b;
            double v = 0;
            int64_t iv = 0;
            TU_ASSERT_OK(stsl_operator_param_bounds((stsl_operator_kind)kind, keys[i], &b));
            if (!b.is_integer) TU_ASSERT_OK(stsl_operator_get_float(op, keys[i], &v));
            else if (stsl_operator_get_int(op, keys[i], &iv) == STSL_OK) v = (double)iv;
            else CU_FAIL("stsl_operator_get_int");
            if (v != b.default_value)
                fprintf(stderr, "\n  operator kind %d, %s: %g vs bounds %g\n", kind, stsl_param_name(keys[i]), v,
                        b.default_value);
            CU_ASSERT_EQUAL(v, b.default_value);
        }
        stsl_operator_destroy(op);
    }
}

int main(void)
{
    static const stsl_test tests[] = {
        {"get-after-create equals the run's logged parameters", test_get_after_create_equals_run},
        {"settings-dependent defaults: getter == run", test_dependent_defaults},
        {"operator-dependent defaults: getter == last run", test_operator_dependent_defaults},
        {"lookups validate their arguments", test_lookups_validate},
        {"names unique, round trips", test_names_unique_and_round_trip},
        {"operator defaults == bounds", test_operator_defaults_match_bounds},
        {NULL, NULL}};
    int rc = stsl_test_main("solver-params", tests);
    stsl_operator_destroy(op_generic);
    stsl_score_destroy(gmm);
    stsl_schedule_destroy(sched);
    stsl_context_destroy(ctx);
    return rc;
}
