/*
 * solver_params.c -- the solvers' parameters, written once: what each is called and does (META),
 * which solvers use it with which bounds and default (ROWS), the defaults that depend on another
 * setting or on the operator (RULES), and the resolution every run and every getter goes through
 * (solver_params.h).  Also the public name lookups over both tables (this layer sits above the
 * operators', whose keys 1..99 operators/operator_params.c describes).
 */
#include "solvers/solver_internal.h"

#include <stdio.h>
#include <string.h>

/* ---- what each key is called ------------------------------------------------------------- */

static const stsl__value_name VARIANT_NAMES[] = {
    {"default", STSL_VARIANT_DEFAULT},   {"rmp-vp", STSL_VARIANT_RMP_VP},
    {"rmp-ve", STSL_VARIANT_RMP_VE},     {"score-plus", STSL_VARIANT_STSL_SCORE_PLUS},
    {NULL, 0}};
static const stsl__value_name INIT_NAMES[] = {
    {"predicted-noise", STSL_INIT_PREDICTED_NOISE}, {"fresh-noise", STSL_INIT_FRESH_NOISE},
    {"ddim-inversion", STSL_INIT_DDIM_INVERSION},   {"prior", STSL_INIT_PRIOR},
    {NULL, 0}};
static const stsl__value_name STEP_RULE_NAMES[] = {
    {"adam", STSL_STEP_ADAM}, {"scaled", STSL_STEP_SCALED}, {NULL, 0}};
static const stsl__value_name LIKVAR_NAMES[] = {
    {"flat", STSL_LIKVAR_FLAT}, {"tweedie", STSL_LIKVAR_TWEEDIE}, {NULL, 0}};

/* In the order the tools list them.  The aliases keep the spellings the tools have accepted
 * (stsl-restore's --K, stsl-bench's k=, temp=, sigma_min=, ...). */
static const stsl__param_meta META[] = {
    {STSL_PARAM_STEPS, "steps", "", "reverse (outer) steps T", NULL},
    {STSL_PARAM_INNER_STEPS, "inner-steps", "K k inner", "inner steps: STSL K, RMP T_in, DPS-MO MO directions per level", NULL},
    {STSL_PARAM_PROBES, "probes", "", "STSL / RMP (tweedie) Hutchinson probes N", NULL},
    {STSL_PARAM_ETA, "eta", "", "STSL second-order weight; DDIM eta; DPS-MO step eta above eta-sigma (1 ancestral, 0 ODE)", NULL},
    {STSL_PARAM_LAMBDA, "lambda", "", "STSL likelihood strength", NULL},
    {STSL_PARAM_LEARNING_RATE, "lr", "learning-rate",
     "STSL step fraction (scaled) or Adam lr; RMP s1", NULL},
    {STSL_PARAM_LR_DECAY, "lr-decay", "decay", "STSL lr multiplier per reverse step", NULL},
    {STSL_PARAM_KAPPA, "kappa", "", "STSL proximal weight", NULL},
    {STSL_PARAM_ZETA, "zeta", "",
     "DPS / RMP guidance scale (unset: DPS's by task, RMP's larger for l1/huber losses); DPS-MO likelihood weight (1 = the likelihood); STSL: DPS's pull on the upper levels' first passes (0 = the Polyak step alone)", NULL},
    {STSL_PARAM_OMEGA, "omega", "", "LDPS/PSLD data weight", NULL},
    {STSL_PARAM_GAMMA, "gamma", "", "PSLD gluing weight", NULL},
    {STSL_PARAM_TEMPERATURE, "temperature", "temp", "no solver uses it since 1.2 (DPS-MO's measurement optimisation has no SGLD)", NULL},
    {STSL_PARAM_SIGMA_MIN, "sigma-min", "sigma_min", "DPS-MO / RMP-VE ladder end", NULL},
    {STSL_PARAM_SIGMA_MAX, "sigma-max", "sigma_max", "DPS-MO / RMP-VE ladder start", NULL},
    {STSL_PARAM_VARIANT, "variant", "", "solver variant", VARIANT_NAMES},
    {STSL_PARAM_INIT, "init", "", "STSL start", INIT_NAMES},
    {STSL_PARAM_SQUARED_LOSS, "squared-loss", "squared", "STSL data term squared (1, eq. 5) or not (0)", NULL},
    {STSL_PARAM_INNER_INCLUSIVE, "inner-inclusive", "inclusive", "STSL K+1 inner passes (1) or K (0)", NULL},
    {STSL_PARAM_ADAM_PERSIST, "adam-persist", "persist", "STSL keeps Adam moments across steps (1)", NULL},
    {STSL_PARAM_STEP_RULE, "step-rule", "rule", "STSL inner update", STEP_RULE_NAMES},
    {STSL_PARAM_STEP_NOISE, "step-noise", "stepnoise", "STSL line-14 noise (0 as written, 1 DDPM)", NULL},
    {STSL_PARAM_LIKELIHOOD_VARIANCE, "likelihood-variance", "likvar", "RMP v_k; STSL: tweedie = the upper levels take a Tweedie-covariance likelihood step and DPS's pull, the lower levels the same step where the data term stays over 4x its noise level (pixel prior, linear operator, Gaussian noise), flat = the Polyak step on every level", LIKVAR_NAMES},
    {STSL_PARAM_RENOISE_LEVEL, "renoise-level", "renoise", "DPS-MO next level by the eta step (0) or all fresh noise (1)", NULL},
    {STSL_PARAM_DENOISE_PASSES, "denoise-passes", "passes",
     "DPS-MO posterior-denoiser passes per level (2: re-noise the estimate and denoise again; unset: 1 unless the operator is linear, the loss squared and the prior in pixels)", NULL},
    {STSL_PARAM_ETA_SIGMA, "eta-sigma", "",
     "DPS-MO: eta's step on the levels with sigma above this, the ODE step (eta 0) below; 0: eta on every level", NULL},
    {STSL_PARAM_BATCH_LIMIT, "batch-limit", "", "max points per network call (memory bound)", NULL},
    {STSL_PARAM_PAD_BATCH, "pad-batch", "",
     "run a batch as groups of P, calls shaped for P (1: same bits at any batch)", NULL},
    {STSL_PARAM_PROGRESS_ESTIMATE, "progress-estimate", "", "pass the current x0 estimate to progress (1)", NULL},
};
#define N_META (sizeof META / sizeof META[0])

static const stsl__param_meta *sp_meta(stsl_param key)
{
    return stsl__param_meta_find(META, N_META, key);
}

/* ---- which solvers use a key: bounds and default per kind -------------------------------- */

#define K(kind) (1u << STSL_SOLVER_##kind)
#define ALL_KINDS 0xffu
#define STSL_LIKE (K(STSL) | K(STSL_BIASED))
#define BIG 1e12

typedef struct sp_row {
    stsl_param key;
    unsigned kinds;       /* bit per stsl_solver_kind */
    double min, max, def;
    int is_integer;
    unsigned only;        /* integer keys: the values allowed (bit per value), 0: all in range */
} sp_row;

/* One row per (key, group of kinds with the same bounds and default): edit a kind's default on
 * its row.  Defaults here are the ones for every other setting at its default and a generic
 * operator; RULES below change them. */
static const sp_row ROWS[] = {
    /* key                            kinds                    min    max     default int */
    {STSL_PARAM_SEED,                 ALL_KINDS,               0, 9007199254740992.0, 0, 1, 0},
    {STSL_PARAM_BATCH_LIMIT,          ALL_KINDS,               1, STSL_MAX_BATCH, 64, 1, 0},
    {STSL_PARAM_PAD_BATCH,            ALL_KINDS,               0, STSL_MAX_BATCH, 0, 1, 0},
    {STSL_PARAM_PROGRESS_ESTIMATE,    ALL_KINDS,               0, 1, 0, 1, 0},
    {STSL_PARAM_STEPS,                K(DDIM) | STSL_LIKE,     1, 100000, 50, 1, 0},
    {STSL_PARAM_STEPS,                K(DPS) | K(LDPS) | K(PSLD), 1, 100000, 1000, 1, 0},
    {STSL_PARAM_STEPS,                K(RMP),                  1, 100000, 400, 1, 0},
    /* DPS-MO: 50 levels x 2 denoiser passes x (1 + 1) directions = 200 UNet VJPs, 1/5 of DPS's */
    {STSL_PARAM_STEPS,                K(DPS_MO),               2, 100000, 50, 1, 0},
    {STSL_PARAM_INNER_STEPS,          K(STSL),                 1, 10000, 5, 1, 0},
    {STSL_PARAM_INNER_STEPS,          K(STSL_BIASED) | K(RMP), 1, 10000, 1, 1, 0},
    /* DPS-MO: MO's directions per level after the DPS one, one UNet VJP each (dps_mo.c) */
    {STSL_PARAM_INNER_STEPS,          K(DPS_MO),               0, 64, 1, 1, 0},
    {STSL_PARAM_PROBES,               STSL_LIKE,               1, 256, 2, 1, 0},
    {STSL_PARAM_PROBES,               K(RMP),                  1, 256, 1, 1, 0},
    {STSL_PARAM_ETA,                  K(STSL),                 0, BIG, 0.02, 0, 0},
    {STSL_PARAM_ETA,                  K(STSL_BIASED),          0, BIG, 0.0, 0, 0},
    {STSL_PARAM_ETA,                  K(DDIM),                 0, 1, 0.0, 0, 0},
    /* DPS-MO: DDIM's eta on its ladder (dps_mo.c), the ancestral step (ETA 1) above sigma 8 and
     * the probability-flow ODE below.  Guidance off at 50 levels the ancestral step's coarse low
     * levels under-disperse a component (ETA 1 everywhere: spread 0.90; ETA 0.5, the default
     * until 2026-12-07: 0.94 at d_x 20-40, target >= 0.95) and the ODE's top levels misplace the
     * components' weights (TV 0.13-0.17 at d_x 24-40, target <= 0.1) (docs/algorithms.md, dps-mo) */
    {STSL_PARAM_ETA,                  K(DPS_MO),               0, 1, 1.0, 0, 0},
    {STSL_PARAM_ETA_SIGMA,            K(DPS_MO),               0, 1e6, 8.0, 0, 0},
    {STSL_PARAM_LAMBDA,               STSL_LIKE,               0, BIG, 1.0, 0, 0},
    /* STSL: the scaled step's fraction (STEP_RULE scaled); Adam's lr is a rule below */
    {STSL_PARAM_LEARNING_RATE,        STSL_LIKE,               1e-12, BIG, 0.2, 0, 0},
    {STSL_PARAM_LEARNING_RATE,        K(RMP),                  1e-12, 2.0, 1.0, 0, 0},
    {STSL_PARAM_LR_DECAY,             STSL_LIKE,               1e-6, 10, 0.998, 0, 0},
    {STSL_PARAM_KAPPA,                STSL_LIKE,               0, BIG, 0.0, 0, 0},
    {STSL_PARAM_ZETA,                 K(DPS),                  0, BIG, 0.3, 0, 0},
    /* STSL: the DPS pull on the upper levels' first passes (issue 28: the Polyak step alone sent
     * 7-12 % of the samples to components of posterior weight ~0; docs/algorithms.md); the
     * first-order ablation keeps the Polyak step alone */
    {STSL_PARAM_ZETA,                 K(STSL),                 0, BIG, 0.3, 0, 0},
    {STSL_PARAM_ZETA,                 K(STSL_BIASED),          0, BIG, 0.0, 0, 0},
    {STSL_PARAM_ZETA,                 K(RMP),                  0, BIG, 1.0, 0, 0},
    /* DPS-MO: 1 = DPS's Gaussian likelihood, in posterior-mean units (dps_mo.c) */
    {STSL_PARAM_ZETA,                 K(DPS_MO),               0, BIG, 1.0, 0, 0},
    {STSL_PARAM_OMEGA,                K(LDPS) | K(PSLD),       0, BIG, 1.0, 0, 0},
    {STSL_PARAM_GAMMA,                K(PSLD),                 0, BIG, 0.1, 0, 0},
    {STSL_PARAM_SIGMA_MIN,            K(DPS_MO) | K(RMP),      1e-6, 1e6, 0.01, 0, 0},
    {STSL_PARAM_SIGMA_MAX,            K(DPS_MO) | K(RMP),      1e-6, 1e6, 80.0, 0, 0},
    {STSL_PARAM_VARIANT,              K(RMP),                  0, 2, STSL_VARIANT_RMP_VP, 1, 0},
    {STSL_PARAM_VARIANT,              STSL_LIKE,               0, 3, STSL_VARIANT_STSL_SCORE_PLUS, 1,
     (1u << STSL_VARIANT_DEFAULT) | (1u << STSL_VARIANT_STSL_SCORE_PLUS)},
    {STSL_PARAM_INIT,                 STSL_LIKE,               0, 3, STSL_INIT_FRESH_NOISE, 1, 0},
    {STSL_PARAM_SQUARED_LOSS,         STSL_LIKE,               0, 1, 1, 1, 0},
    {STSL_PARAM_INNER_INCLUSIVE,      STSL_LIKE,               0, 1, 0, 1, 0},
    {STSL_PARAM_ADAM_PERSIST,         STSL_LIKE,               0, 1, 0, 1, 0},
    {STSL_PARAM_STEP_RULE,            STSL_LIKE,               0, 1, STSL_STEP_SCALED, 1, 0},
    {STSL_PARAM_STEP_NOISE,           STSL_LIKE,               0, 1, 1.0, 0, 0},
    {STSL_PARAM_LIKELIHOOD_VARIANCE,  K(RMP),                  0, 1, STSL_LIKVAR_TWEEDIE, 1, 0},   /* issue 28 */
    {STSL_PARAM_LIKELIHOOD_VARIANCE,  K(STSL),                 0, 1, STSL_LIKVAR_TWEEDIE, 1, 0},  /* issue 28 */
    {STSL_PARAM_RENOISE_LEVEL,        K(DPS_MO),               0, 1, 0, 1, 0},
    /* DPS-MO: 2 passes per level (issue 28: the second pass corrects the Gaussian surrogate's
     * mode weights on mixtures; docs/algorithms.md, dps-mo) */
    {STSL_PARAM_DENOISE_PASSES,       K(DPS_MO),               1, 8, 2, 1, 0},
};
#define N_ROWS (sizeof ROWS / sizeof ROWS[0])

/* ---- defaults that depend on another setting or on the operator -------------------------- */

typedef enum rule_when {
    WHEN_SETTING,        /* the setting `on` (set or default) equals `match` */
    WHEN_OP_KINDS,       /* the operator's kind is one of `match` (bit per stsl_operator_kind) */
    WHEN_IMPULSE_LOSS,   /* the operator's loss is one of the impulse-noise ones (l1, huber) */
    WHEN_NOT_LINEAR_PIXEL_SQUARED  /* not (a linear operator, the squared loss, a pixel prior) */
} rule_when;

typedef struct sp_rule {
    unsigned kinds;
    stsl_param key;
    rule_when when;
    stsl_param on;       /* WHEN_SETTING: a key no rule changes, or only rules above this one */
    unsigned match;
    double value;
} sp_rule;

#define OPK(kind) (1u << STSL_OP_##kind)

/* The first rule that holds gives an unset key's default; none: the row's. */
static const sp_rule RULES[] = {
    /* RMP on the VE ladder: 30 levels of 20 inner steps with s1 0.1 (docs/algorithms.md) */
    {K(RMP), STSL_PARAM_STEPS, WHEN_SETTING, STSL_PARAM_VARIANT, STSL_VARIANT_RMP_VE, 30},
    {K(RMP), STSL_PARAM_INNER_STEPS, WHEN_SETTING, STSL_PARAM_VARIANT, STSL_VARIANT_RMP_VE, 20},
    {K(RMP), STSL_PARAM_LEARNING_RATE, WHEN_SETTING, STSL_PARAM_VARIANT, STSL_VARIANT_RMP_VE, 0.1},
    /* Adam's LEARNING_RATE (App. B.1); the row's 0.2 is the scaled step's */
    {STSL_LIKE, STSL_PARAM_LEARNING_RATE, WHEN_SETTING, STSL_PARAM_STEP_RULE, STSL_STEP_ADAM, 1e-2},
    /* DPS's zeta by task (the reference configurations: 0.3 blur/SR, 0.5 inpainting, 1.0 phase
     * retrieval) */
    {K(DPS), STSL_PARAM_ZETA, WHEN_OP_KINDS, 0, OPK(RANDOM_INPAINT) | OPK(BOX_INPAINT) | OPK(MASK_INPAINT), 0.5},
    {K(DPS), STSL_PARAM_ZETA, WHEN_OP_KINDS, 0, OPK(PHASE_RETRIEVAL), 1.0},
    /* The impulse-noise losses' bounded gradient (Huber: delta per pixel) starves a guidance
     * step sized for Gaussian noise (docs/algorithms.md). */
    {K(RMP), STSL_PARAM_ZETA, WHEN_IMPULSE_LOSS, 0, 0, 10.0},
    /* RMP's full Tweedie covariance needs A^T, J_x0hat in pixel space and the squared loss; where
     * it has no products its trace form has not been shown to win (salt-pepper +0.8 +- 1.4 dB,
     * docs/algorithms.md), so the default there stays the flat-prior variance */
    {K(RMP), STSL_PARAM_LIKELIHOOD_VARIANCE, WHEN_NOT_LINEAR_PIXEL_SQUARED, 0, 0, STSL_LIKVAR_FLAT},
    /* STSL's covariance step has the same needs and no trace form: elsewhere (the latent prior of
     * the image benchmarks among them) the Polyak step on every level, as before issue 28 */
    {K(STSL), STSL_PARAM_LIKELIHOOD_VARIANCE, WHEN_NOT_LINEAR_PIXEL_SQUARED, 0, 0, STSL_LIKVAR_FLAT},
    /* DPS-MO's second denoiser pass re-noises with the first pass's shift u - D(x), an exact
     * Gaussian posterior step only for a linear operator and the squared loss in pixel space;
     * elsewhere it threw images off the prior (20 images, one pass at 100 levels -> two at 50:
     * salt-pepper 27.1 -> 24.6 dB with two images at 4 and 7 dB, phase retrieval 26.4 -> 22.3,
     * hdr 21.0 -> 16.5), so there one pass.  Steps and ETA follow the passes, set or ruled (the
     * rule above comes first): one pass runs 100 levels at ETA 0.75 on every level (ETA_SIGMA 0),
     * the same 200 VJPs as two passes on 50 (docs/algorithms.md, dps-mo) */
    {K(DPS_MO), STSL_PARAM_DENOISE_PASSES, WHEN_NOT_LINEAR_PIXEL_SQUARED, 0, 0, 1},
    {K(DPS_MO), STSL_PARAM_STEPS, WHEN_SETTING, STSL_PARAM_DENOISE_PASSES, 1, 100},
    {K(DPS_MO), STSL_PARAM_ETA, WHEN_SETTING, STSL_PARAM_DENOISE_PASSES, 1, 0.75},
    {K(DPS_MO), STSL_PARAM_ETA_SIGMA, WHEN_SETTING, STSL_PARAM_DENOISE_PASSES, 1, 0.0},
};
#define N_RULES (sizeof RULES / sizeof RULES[0])

static int valid_kind(stsl_solver_kind kind) { return (int)kind >= 0 && (int)kind < 8; }

static const sp_row *find_row(stsl_solver_kind kind, stsl_param key)
{
    if (!valid_kind(kind)) return NULL;
    for (size_t i = 0; i < N_ROWS; i++)
        if (ROWS[i].key == key && (ROWS[i].kinds & (1u << kind))) return &ROWS[i];
    return NULL;
}

int stsl__solver_slot(stsl_param key)
{
    if (key == STSL_PARAM_SEED) return 0;
    if ((int)key >= STSL__SP_FIRST && (int)key <= STSL__SP_LAST) return (int)key - STSL__SP_FIRST + 1;
    return -1;
}

/* The key of a slot (inverse of stsl__solver_slot). */
static stsl_param slot_key(int slot)
{
    return slot == 0 ? STSL_PARAM_SEED : (stsl_param)(STSL__SP_FIRST + slot - 1);
}

static int rule_holds(const sp_rule *r, const double *out, const stsl__op_facts *f)
{
    switch (r->when) {
    case WHEN_SETTING: {
        int s = stsl__solver_slot(r->on);
        return s >= 0 && out[s] == (double)r->match;
    }
    case WHEN_OP_KINDS: return f->op_kind >= 0 && f->op_kind < 32 && (r->match & (1u << f->op_kind));
    case WHEN_IMPULSE_LOSS: return f->loss == STSL_LOSS_L1 || f->loss == STSL_LOSS_HUBER;
    case WHEN_NOT_LINEAR_PIXEL_SQUARED: return !(f->linear && !f->latent && f->loss == STSL_LOSS_SQUARED);
    }
    return 0;
}

void stsl__sp_resolve(stsl_solver_kind kind, const double *val, const unsigned char *set,
                      const stsl__op_facts *facts, double *out)
{
    const stsl__op_facts generic = STSL__OP_FACTS_GENERIC;
    const stsl__op_facts *f = facts ? facts : &generic;
    unsigned char ruled[STSL__SP_COUNT] = {0};
    /* the caller's values, else the rows' defaults */
    for (int s = 0; s < STSL__SP_COUNT; s++) {
        const sp_row *r = find_row(kind, slot_key(s));
        out[s] = 0.0;
        if (!r) continue;
        if (set && set[s]) {
            out[s] = val[s];
            ruled[s] = 1;
        } else {
            out[s] = r->def;
        }
    }
    /* then the rules, in order, on keys still at their default; a rule reads settings as the
     * rules above it left them */
    for (size_t i = 0; i < N_RULES; i++) {
        const sp_rule *r = &RULES[i];
        int s = stsl__solver_slot(r->key);
        if (!(r->kinds & (1u << kind)) || s < 0 || ruled[s] || !find_row(kind, r->key)) continue;
        if (rule_holds(r, out, f)) {
            out[s] = r->value;
            ruled[s] = 1;
        }
    }
}

int stsl__sp_bounds(stsl_solver_kind kind, stsl_param key, stsl_param_bounds *b)
{
    const sp_row *r = find_row(kind, key);
    int s = stsl__solver_slot(key);
    if (!r || s < 0) return 0;
    double p[STSL__SP_COUNT];
    stsl__sp_resolve(kind, NULL, NULL, NULL, p);
    b->min = r->min;
    b->max = r->max;
    b->default_value = p[s];
    b->is_integer = r->is_integer;
    return 1;
}

int stsl__sp_value_allowed(stsl_solver_kind kind, stsl_param key, double value)
{
    const sp_row *r = find_row(kind, key);
    if (!r || !(value >= r->min && value <= r->max)) return 0;
    return !r->only || (value < 32 && (r->only & (1u << (int)value)));
}

void stsl__sp_format(stsl_solver_kind kind, const double *p, char *buf, size_t n)
{
    size_t used = 0;
    if (n) buf[0] = '\0';
    for (size_t i = 0; i <= N_META && used < n; i++) {
        /* META's keys in order, then SEED (named in the operator table) */
        stsl_param key = i < N_META ? META[i].key : STSL_PARAM_SEED;
        const sp_row *r = find_row(kind, key);
        if (!r) continue;
        const char *name = stsl_param_name(key);
        double v = p[stsl__solver_slot(key)];
        int w = r->is_integer ? snprintf(buf + used, n - used, "%s%s=%lld", used ? " " : "", name, (long long)v)
                              : snprintf(buf + used, n - used, "%s%s=%.17g", used ? " " : "", name, v);
        if (w < 0) break;
        used += (size_t)w;
    }
}

/* ---- public lookups ------------------------------------------------------------------------ */

STSL_API stsl_status stsl_solver_param_bounds(stsl_solver_kind kind, stsl_param key,
                                              stsl_param_bounds *bounds)
{
    if (!bounds || !valid_kind(kind)) return STSL_ERR_INVALID_ARG;
    return stsl__sp_bounds(kind, key, bounds) ? STSL_OK : STSL_ERR_UNSUPPORTED;
}

STSL_API stsl_status stsl_solver_param_keys(stsl_solver_kind kind, stsl_param *keys, int capacity,
                                            int *count)
{
    if (!count || capacity < 0 || (capacity > 0 && !keys) || !valid_kind(kind)) return STSL_ERR_INVALID_ARG;
    int n = 0;
    for (size_t i = 0; i <= N_META; i++) {
        stsl_param key = i < N_META ? META[i].key : STSL_PARAM_SEED;
        if (!find_row(kind, key)) continue;
        if (n < capacity) keys[n] = key;
        n++;
    }
    *count = n;
    return STSL_OK;
}

/* The metadata of any key: operators own 1..99 (SEED among them), solvers 100.. */
static const stsl__param_meta *any_meta(stsl_param key)
{
    const stsl__param_meta *m = stsl__op_param_meta(key);
    return m ? m : sp_meta(key);
}

/* 1 when `name` is one of the space-separated words of `list` */
static int in_list(const char *name, const char *list)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        while (*p == ' ') p++;
        size_t len = strcspn(p, " ");
        if (len == n && n && strncmp(p, name, n) == 0) return 1;
        p += len;
    }
    return 0;
}

STSL_API const char *stsl_param_name(stsl_param key)
{
    const stsl__param_meta *m = any_meta(key);
    return m ? m->name : NULL;
}

STSL_API const char *stsl_param_aliases(stsl_param key)
{
    const stsl__param_meta *m = any_meta(key);
    return m ? m->aliases : NULL;
}

STSL_API const char *stsl_param_help(stsl_param key)
{
    const stsl__param_meta *m = any_meta(key);
    return m ? m->help : NULL;
}

STSL_API stsl_status stsl_param_from_name(const char *name, stsl_param *key)
{
    if (!name || !key) return STSL_ERR_INVALID_ARG;
    for (int k = 1; k <= STSL__SP_LAST; k++) {
        const stsl__param_meta *m = any_meta((stsl_param)k);
        if (m && (strcmp(m->name, name) == 0 || in_list(name, m->aliases))) {
            *key = m->key;
            return STSL_OK;
        }
    }
    return STSL_ERR_INVALID_ARG;
}

STSL_API const char *stsl_param_value_name(stsl_param key, int64_t value)
{
    const stsl__param_meta *m = any_meta(key);
    for (const stsl__value_name *v = m ? m->values : NULL; v && v->name; v++)
        if (v->value == value) return v->name;
    return NULL;
}

STSL_API stsl_status stsl_param_value_from_name(stsl_param key, const char *name, int64_t *value)
{
    if (!name || !value) return STSL_ERR_INVALID_ARG;
    const stsl__param_meta *m = any_meta(key);
    if (!m) return STSL_ERR_INVALID_ARG;
    if (!m->values) return STSL_ERR_UNSUPPORTED;
    for (const stsl__value_name *v = m->values; v->name; v++)
        if (strcmp(v->name, name) == 0) {
            *value = v->value;
            return STSL_OK;
        }
    return STSL_ERR_INVALID_ARG;
}
