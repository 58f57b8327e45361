/*
 * meta.h -- the stsl_meta.txt record of a model file (docs/models.md, section 3): a pure-C,
 * bounded, strict parser (it is fuzzed) and the validation of a record against a role.
 */
#ifndef STSL_META_H
#define STSL_META_H

#include "core/internal.h"

/* One key/value pair of a record (both NUL-terminated, owned by the entry array). */
typedef struct stsl__meta_entry {
    char *key;
    char *value;
} stsl__meta_entry;

/* The largest sample a model file may declare, in values per sample (sample_shape of a UNet;
 * image_shape and latent_shape of an autoencoder): 2^22, 16 MiB of float32 (4x1024x1024).  A
 * load probes the network on one sample of the declared shape, and a network's activations are
 * tens of times its input: a larger declaration (a hostile file's 1,8192,8192 asked 17 GB of a
 * two-layer convolution) is refused before anything runs (STSL_ERR_MODEL, docs/models.md).
 * Rebuild with -DSTSL_MAX_MODEL_SAMPLE_VALUES=N to allow larger models. */
#ifndef STSL_MAX_MODEL_SAMPLE_VALUES
#define STSL_MAX_MODEL_SAMPLE_VALUES (1L << 22)
#endif

/* Documented limits of a record. */
#define STSL_META_MAX_BYTES (64 * 1024)
#define STSL_META_MAX_LINES 256
#define STSL_META_MAX_KEY 64       /* key length in bytes */
#define STSL_META_MAX_VALUE 1024   /* value length in bytes */

/* Parse `len` bytes of `text` (need not be NUL-terminated; NUL bytes are refused).
 * Grammar, one entry per line ('\n' or "\r\n"):
 *   blank line | '#' comment (first non-blank character) | key '=' value
 * key: [a-z0-9_]{1,64}; blanks around key and value are dropped; value: UTF-8 without control
 * characters, up to 1024 bytes, may be empty; a key may appear once.  A leading UTF-8 BOM is
 * skipped.  On success *entries (stsl__malloc'd array; each key/value stsl__strdup'd; NULL when
 * *count is 0) and *count are set; free with stsl__meta_free.  On failure nothing is allocated
 * and err (STSL_ERRMSG_SIZE, may be NULL) says which line and why: STSL_ERR_MODEL, or
 * STSL_ERR_NOMEM. */
stsl_status stsl__meta_parse(const char *text, size_t len, stsl__meta_entry **entries,
                             int *count, char *err);
void stsl__meta_free(stsl__meta_entry *entries, int count);
/* Value of `key`, NULL when absent. */
const char *stsl__meta_get(const stsl__meta_entry *entries, int count, const char *key);

/* Strict value parsers (NULL-safe: NULL text is an error).  Return true on success. */
/* Decimal integer without sign, leading zeros allowed, in [min, max]. */
bool stsl__meta_parse_int(const char *text, long min, long max, long *out);
/* Finite decimal number: [+-]digits[.digits][(e|E)[+-]digits] or [+-].digits..., locale-proof. */
bool stsl__meta_parse_double(const char *text, double *out);
/* "C,H,W", blanks allowed around the commas; each 1..STSL_MAX_IMAGE_DIM, C <= 4096,
 * H*W <= STSL_MAX_IMAGE_PIXELS. */
bool stsl__meta_parse_shape(const char *text, stsl_shape *out);
/* "lo,hi", two finite numbers. */
bool stsl__meta_parse_pair(const char *text, double *lo, double *hi);

typedef enum stsl__model_role {
    STSL__ROLE_UNET = 0,
    STSL__ROLE_AUTOENCODER = 1,
    STSL__ROLE_ENCODER = 2,
    STSL__ROLE_DECODER = 3
} stsl__model_role;

typedef enum stsl__prediction {
    STSL__PRED_EPS = 0,
    STSL__PRED_V = 1,
    STSL__PRED_X0 = 2
} stsl__prediction;

/* A validated record.  String pointers point into the entries (valid while they live). */
typedef struct stsl__model_meta {
    int format;                   /* stsl_model_format (1) */
    stsl__model_role role;
    const char *name;             /* NULL when absent */
    /* unet */
    stsl__prediction prediction;
    stsl_schedule_kind schedule;
    double beta_start, beta_end;  /* cosine: beta_start = cosine_s, beta_end = 0.999 (unused) */
    int timesteps;
    stsl_shape sample_shape;
    int latent;                   /* space = latent */
    const char *pairs_with;       /* latent unets */
    /* autoencoder / encoder / decoder */
    stsl_shape image_shape, latent_shape;
    double latent_scale;
    double value_lo, value_hi;
} stsl__model_meta;

/* Validate a parsed record for use as one of the roles in `allowed_roles` (a bit mask of
 * 1 << STSL__ROLE_*).  STSL_ERR_MODEL with a message naming the key on failure (a declared
 * shape over STSL_MAX_MODEL_SAMPLE_VALUES included). */
stsl_status stsl__meta_validate(const stsl__meta_entry *entries, int count, unsigned allowed_roles,
                                stsl__model_meta *out, char *err);

#endif
