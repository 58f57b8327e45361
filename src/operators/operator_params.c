/*
 * operator_params.c -- the operators' parameters, written once: what each key (1..99) is called
 * and does (META), its bounds and default and which kinds use it (ROWS), the defaults that
 * depend on the kind or on the image shape (KIND_DEFAULTS, the shaped functions).  operator.c
 * stores the values; this file says which are allowed and what they start as.
 */
#include "operators/operator_internal.h"

#include <math.h>
#include <string.h>

/* ---- what each key is called ------------------------------------------------------------- */

static const stsl__value_name BOUNDARY_NAMES[] = {
    {"reflect", STSL_BOUNDARY_REFLECT}, {"zero", STSL_BOUNDARY_ZERO}, {NULL, 0}};
static const stsl__value_name SR_FILTER_NAMES[] = {
    {"bicubic", STSL_SR_BICUBIC}, {"box", STSL_SR_BOX}, {NULL, 0}};
static const stsl__value_name LOSS_NAMES[] = {
    {"squared", STSL_LOSS_SQUARED}, {"l1", STSL_LOSS_L1}, {"huber", STSL_LOSS_HUBER},
    {"l2", STSL_LOSS_SQUARED}, {NULL, 0}};

/* In the order the tools list them; the aliases keep the tools' older spellings. */
static const stsl__param_meta META[] = {
    {STSL_PARAM_KERNEL_SIZE, "kernel-size", "", "blur kernel size (odd; scaled down below 256 px)", NULL},
    {STSL_PARAM_BLUR_SIGMA, "blur-sigma", "", "gaussian-blur std in pixels (scaled down below 256 px)", NULL},
    {STSL_PARAM_MOTION_INTENSITY, "intensity", "motion-intensity", "motion-blur trajectory intensity", NULL},
    {STSL_PARAM_FFT_THRESHOLD, "fft-threshold", "", "kernels this wide or wider use the FFT", NULL},
    {STSL_PARAM_BOUNDARY, "boundary", "", "blur boundary", BOUNDARY_NAMES},
    {STSL_PARAM_SR_FILTER, "filter", "sr-filter", "super-resolution filter", SR_FILTER_NAMES},
    {STSL_PARAM_DROP_RATE, "drop-rate", "", "random-inpaint fraction of pixels lost", NULL},
    {STSL_PARAM_BOX_HEIGHT, "box-height", "", "box-inpaint box height (scales with the image)", NULL},
    {STSL_PARAM_BOX_WIDTH, "box-width", "", "box-inpaint box width (scales with the image)", NULL},
    {STSL_PARAM_BOX_TOP, "box-top", "", "box-inpaint box top row (-1: centred)", NULL},
    {STSL_PARAM_BOX_LEFT, "box-left", "", "box-inpaint box left column (-1: centred)", NULL},
    {STSL_PARAM_IMPULSE_FRACTION, "fraction", "impulse impulse-fraction", "salt-pepper fraction of corrupted values", NULL},
    {STSL_PARAM_HDR_ALPHA, "alpha", "hdr-alpha", "hdr gain", NULL},
    {STSL_PARAM_OVERSAMPLING, "oversampling", "", "phase-retrieval padded size / image size", NULL},
    {STSL_PARAM_LOSS, "loss", "", "data-fit loss of the noise model", LOSS_NAMES},
    {STSL_PARAM_HUBER_DELTA, "huber-delta", "", "Huber delta", NULL},
    {STSL_PARAM_NOISE_SIGMA, "noise", "", "Gaussian measurement noise std on the [-1, 1] scale", NULL},
    {STSL_PARAM_SEED, "seed", "",
     "seed: a solver's sampling noise; an operator's masks, kernels and measurement noise", NULL},
};
#define N_META (sizeof META / sizeof META[0])

const stsl__param_meta *stsl__op_param_meta(stsl_param key)
{
    return stsl__param_meta_find(META, N_META, key);
}

/* ---- bounds, defaults and the kinds that use a key ---------------------------------------- */

#define OPK(kind) (1u << STSL_OP_##kind)
#define ALL_KINDS 0x1fffu
#define BLURS (OPK(GAUSSIAN_BLUR) | OPK(MOTION_BLUR))

/* Shape-dependent defaults (docs/operators.md) */
static double shaped_default(stsl_param key, stsl_shape s)
{
    int k;
    double sigma;
    switch (key) {
    case STSL_PARAM_KERNEL_SIZE: stsl__op_default_blur(s, &k, NULL); return k;
    case STSL_PARAM_BLUR_SIGMA: stsl__op_default_blur(s, NULL, &sigma); return sigma;
    case STSL_PARAM_BOX_HEIGHT: return s.height / 2 > 0 ? s.height / 2 : 1;
    case STSL_PARAM_BOX_WIDTH: return s.width / 2 > 0 ? s.width / 2 : 1;
    default: return 0;
    }
}

typedef struct op_row {
    stsl_param key;
    unsigned kinds;        /* bit per stsl_operator_kind */
    int is_integer;
    double min, max;
    int min_exclusive;     /* "> min" rather than ">= min" */
    double def;            /* NAN: shaped_default */
} op_row;

static const op_row ROWS[] = {
    /* key                         kinds                                       int  min  max  excl default */
    {STSL_PARAM_NOISE_SIGMA,       ALL_KINDS,                                   0, 0.0, 100.0, 0, 0.05},
    {STSL_PARAM_SEED,              ALL_KINDS,                                   1, 0.0, 9223372036854775807.0, 0, 0},
    {STSL_PARAM_LOSS,              ALL_KINDS,                                   1, 0.0, 2.0, 0, STSL_LOSS_SQUARED},
    {STSL_PARAM_HUBER_DELTA,       ALL_KINDS,                                   0, 0.0, 100.0, 1, 0.1},
    {STSL_PARAM_KERNEL_SIZE,       BLURS,                                       1, 1.0, STSL_MAX_KERNEL_SIZE, 0, NAN},
    {STSL_PARAM_BLUR_SIGMA,        OPK(GAUSSIAN_BLUR),                          0, 0.0, 1000.0, 1, NAN},
    {STSL_PARAM_BOUNDARY,          BLURS | OPK(CONVOLVE),                       1, 0.0, 1.0, 0, STSL_BOUNDARY_REFLECT},
    /* direct and FFT cost the same near 11 (operators-bench.md) */
    {STSL_PARAM_FFT_THRESHOLD,     OPK(MOTION_BLUR) | OPK(CONVOLVE),            1, 1.0, STSL_MAX_KERNEL_SIZE + 1, 0, 11},
    {STSL_PARAM_MOTION_INTENSITY,  OPK(MOTION_BLUR),                            0, 0.0, 1.0, 0, 0.5},
    {STSL_PARAM_SR_FILTER,         OPK(SR),                                     1, 0.0, 1.0, 0, STSL_SR_BICUBIC},
    {STSL_PARAM_DROP_RATE,         OPK(RANDOM_INPAINT),                         0, 0.0, 1.0, 0, 0.4},
    {STSL_PARAM_BOX_HEIGHT,        OPK(BOX_INPAINT),                            1, 1.0, STSL_MAX_IMAGE_DIM, 0, NAN},
    {STSL_PARAM_BOX_WIDTH,         OPK(BOX_INPAINT),                            1, 1.0, STSL_MAX_IMAGE_DIM, 0, NAN},
    {STSL_PARAM_BOX_TOP,           OPK(BOX_INPAINT),                            1, -1.0, STSL_MAX_IMAGE_DIM - 1, 0, -1},
    {STSL_PARAM_BOX_LEFT,          OPK(BOX_INPAINT),                            1, -1.0, STSL_MAX_IMAGE_DIM - 1, 0, -1},
    {STSL_PARAM_IMPULSE_FRACTION,  OPK(SALT_PEPPER),                            0, 0.0, 1.0, 0, 0.02},
    {STSL_PARAM_HDR_ALPHA,         OPK(HDR),                                    0, 0.0, 1000.0, 1, 2.0},
    {STSL_PARAM_OVERSAMPLING,      OPK(PHASE_RETRIEVAL),                        0, 1.0, 8.0, 0, 2.0},
};
#define N_ROWS (sizeof ROWS / sizeof ROWS[0])

/* Defaults of their own for some kinds: salt-pepper's noise is the impulses, fitted robustly. */
static const struct {
    unsigned kinds;
    stsl_param key;
    double value;
} KIND_DEFAULTS[] = {
    {OPK(SALT_PEPPER), STSL_PARAM_NOISE_SIGMA, 0.0},
    {OPK(SALT_PEPPER), STSL_PARAM_LOSS, STSL_LOSS_HUBER},
};

static const op_row *find_row(stsl_param key)
{
    for (size_t i = 0; i < N_ROWS; i++)
        if (ROWS[i].key == key) return &ROWS[i];
    return NULL;
}

int stsl__op_valid_kind(stsl_operator_kind kind)
{
    return (int)kind >= (int)STSL_OP_IDENTITY && (int)kind <= (int)STSL_OP_CONVOLVE;
}

int stsl__op_param_known(stsl_param key) { return find_row(key) != NULL; }

int stsl__op_param_limits(stsl_operator_kind kind, stsl_param key, stsl__op_limits *out)
{
    const op_row *r = find_row(key);
    if (!r || !stsl__op_valid_kind(kind) || !(r->kinds & (1u << kind))) return 0;
    out->is_integer = r->is_integer;
    out->min = r->min;
    out->max = r->max;
    out->min_exclusive = r->min_exclusive;
    return 1;
}

int stsl__op_param_default(stsl_operator_kind kind, stsl_shape shape, stsl_param key, double *value)
{
    const op_row *r = find_row(key);
    if (!r) return 0;
    *value = isnan(r->def) ? shaped_default(key, shape) : r->def;
    for (size_t i = 0; i < sizeof KIND_DEFAULTS / sizeof KIND_DEFAULTS[0]; i++)
        if (KIND_DEFAULTS[i].key == key && stsl__op_valid_kind(kind) && (KIND_DEFAULTS[i].kinds & (1u << kind)))
            *value = KIND_DEFAULTS[i].value;
    return 1;
}

void stsl__op_default_blur(stsl_shape s, int *kernel_size, double *sigma)
{
    /* The papers' 61x61 / sigma 3 at >= 256 px; smaller images scale the kernel linearly and
     * sigma with the square root (a linear sigma would vanish at 28 px), keep at least +-4 sigma
     * of support, and never exceed the largest kernel the image allows (2*side - 1). */
    int side = s.height < s.width ? s.height : s.width;
    double scale = side >= 256 ? 1.0 : side / 256.0;
    double sg = 3.0 * sqrt(scale);
    int k_lin = (int)ceil(61.0 * scale);
    if (k_lin % 2 == 0) k_lin++;
    int k_sup = 2 * (int)ceil(4.0 * sg) + 1;
    int k = k_lin > k_sup ? k_lin : k_sup;
    if (k > 61) k = 61;
    int kmax = 2 * side - 1;
    if (k > kmax) k = kmax;
    if (k < 1) k = 1;
    if (kernel_size) *kernel_size = k;
    if (sigma) *sigma = sg;
}

STSL_API stsl_status stsl_operator_param_bounds(stsl_operator_kind kind, stsl_param key,
                                                stsl_param_bounds *bounds)
{
    if (!bounds || !stsl__op_valid_kind(kind)) return STSL_ERR_INVALID_ARG;
    stsl__op_limits l;
    double def = 0;
    if (!stsl__op_param_limits(kind, key, &l)) return STSL_ERR_UNSUPPORTED;
    /* defaults reported for a 256x256 image (shape-dependent ones are scaled on creation) */
    stsl__op_param_default(kind, (stsl_shape){3, 256, 256}, key, &def);
    bounds->min = l.min;
    bounds->max = l.max;
    bounds->default_value = def;
    bounds->is_integer = l.is_integer;
    return STSL_OK;
}

STSL_API stsl_status stsl_operator_param_keys(stsl_operator_kind kind, stsl_param *keys,
                                              int capacity, int *count)
{
    if (!count || capacity < 0 || (capacity > 0 && !keys) || !stsl__op_valid_kind(kind))
        return STSL_ERR_INVALID_ARG;
    int n = 0;
    stsl__op_limits l;
    for (size_t i = 0; i < N_META; i++) {
        if (!stsl__op_param_limits(kind, META[i].key, &l)) continue;
        if (n < capacity) keys[n] = META[i].key;
        n++;
    }
    *count = n;
    return STSL_OK;
}
