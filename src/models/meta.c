/*
 * meta.c -- parser and validator of the stsl_meta.txt record (see meta.h, docs/models.md).
 *
 * The input is untrusted (it comes out of a user's model file and is fuzzed): every size is
 * bounded, nothing is allocated before the whole record is known to be well formed, and numbers
 * are parsed by a strict grammar that does not depend on the C locale.
 */
#include "models/meta.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static stsl_status meta_fail(char *err, const char *fmt, ...) STSL_PRINTF(2, 3);

static stsl_status meta_fail(char *err, const char *fmt, ...)
{
    char msg[STSL_ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (err) return stsl__fail(err, STSL_ERR_MODEL, "stsl_meta.txt: %s", msg);
    return STSL_ERR_MODEL;
}

static bool is_blank(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static bool is_key_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF) without control characters other
 * than tab.  Returns the offset of the first bad byte, or n when all is well. */
static size_t check_text(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            if ((c < 0x20 && c != '\t') || c == 0x7f) return i;
            i++;
            continue;
        }
        size_t len;
        unsigned cp, min;
        if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; min = 0x80; }
        else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; min = 0x800; }
        else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return i;
        if (n - i < len) return i;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        /* C1 control characters U+0080..U+009F */
        if (cp >= 0x80 && cp <= 0x9f) return i;
        i += len;
    }
    return n;
}

typedef struct span {
    size_t key, key_len, value, value_len;
    int line;
} span;

stsl_status stsl__meta_parse(const char *text, size_t len, stsl__meta_entry **entries,
                             int *count, char *err)
{
    if (entries) *entries = NULL;
    if (count) *count = 0;
    if (!entries || !count || (!text && len > 0)) {
        if (err) return stsl__fail(err, STSL_ERR_INVALID_ARG, "stsl__meta_parse: NULL argument");
        return STSL_ERR_INVALID_ARG;
    }
    if (len == 0) return meta_fail(err, "the record is empty");
    if (len > STSL_META_MAX_BYTES)
        return meta_fail(err, "the record is %zu bytes, over the %d-byte limit", len,
                         STSL_META_MAX_BYTES);
    const unsigned char *p = (const unsigned char *)text;
    if (memchr(p, '\0', len)) return meta_fail(err, "the record contains a NUL byte");

    size_t pos = 0;
    if (len >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf) pos = 3;   /* BOM */

    span spans[STSL_META_MAX_LINES];
    int n = 0, line = 0;
    while (pos < len) {
        const unsigned char *nl = memchr(p + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - p) : len;
        size_t next = nl ? end + 1 : len;
        line++;
        if (line > STSL_META_MAX_LINES)
            return meta_fail(err, "more than %d lines", STSL_META_MAX_LINES);
        if (end > pos && p[end - 1] == '\r') end--;
        size_t bad = check_text(p + pos, end - pos);
        if (bad != end - pos)
            return meta_fail(err, "line %d: invalid UTF-8 or control character at column %zu",
                             line, bad + 1);
        size_t b = pos;
        while (b < end && is_blank(p[b])) b++;
        if (b == end || p[b] == '#') { pos = next; continue; }

        size_t k = b;
        while (k < end && is_key_char(p[k])) k++;
        size_t key_len = k - b;
        size_t e = k;
        while (e < end && is_blank(p[e])) e++;
        if (e == end || p[e] != '=') {
            if (key_len == 0 || (k < end && !is_blank(p[k]) && p[k] != '='))
                return meta_fail(err, "line %d: keys are lower-case [a-z0-9_] followed by '=' "
                                      "(expected 'key = value')", line);
            return meta_fail(err, "line %d: expected 'key = value', found no '='", line);
        }
        if (key_len == 0) return meta_fail(err, "line %d: '=' without a key", line);
        if (key_len > STSL_META_MAX_KEY)
            return meta_fail(err, "line %d: key longer than %d characters", line,
                             STSL_META_MAX_KEY);
        size_t v = e + 1;
        while (v < end && is_blank(p[v])) v++;
        size_t ve = end;
        while (ve > v && is_blank(p[ve - 1])) ve--;
        if (ve - v > STSL_META_MAX_VALUE)
            return meta_fail(err, "line %d: value longer than %d bytes", line,
                             STSL_META_MAX_VALUE);
        for (int j = 0; j < n; j++) {
            if (spans[j].key_len == key_len && memcmp(p + spans[j].key, p + b, key_len) == 0)
                return meta_fail(err, "line %d: key '%.*s' already given on line %d", line,
                                 (int)key_len, text + b, spans[j].line);
        }
        spans[n].key = b;
        spans[n].key_len = key_len;
        spans[n].value = v;
        spans[n].value_len = ve - v;
        spans[n].line = line;
        n++;
        pos = next;
    }
    if (n == 0) return meta_fail(err, "the record has no 'key = value' line");

    stsl__meta_entry *out = stsl__calloc((size_t)n, sizeof *out);
    if (!out) goto nomem;
    for (int j = 0; j < n; j++) {
        out[j].key = stsl__malloc(spans[j].key_len + 1);
        out[j].value = stsl__malloc(spans[j].value_len + 1);
        if (!out[j].key || !out[j].value) {
            stsl__meta_free(out, j + 1);
            goto nomem;
        }
        memcpy(out[j].key, p + spans[j].key, spans[j].key_len);
        out[j].key[spans[j].key_len] = '\0';
        memcpy(out[j].value, p + spans[j].value, spans[j].value_len);
        out[j].value[spans[j].value_len] = '\0';
    }
    *entries = out;
    *count = n;
    return STSL_OK;
nomem:
    if (err) return stsl__fail(err, STSL_ERR_NOMEM, "out of memory reading stsl_meta.txt");
    return STSL_ERR_NOMEM;
}

void stsl__meta_free(stsl__meta_entry *entries, int count)
{
    if (!entries) return;
    for (int i = 0; i < count; i++) {
        stsl__free(entries[i].key);
        stsl__free(entries[i].value);
    }
    stsl__free(entries);
}

const char *stsl__meta_get(const stsl__meta_entry *entries, int count, const char *key)
{
    if (!entries || !key) return NULL;
    for (int i = 0; i < count; i++)
        if (entries[i].key && strcmp(entries[i].key, key) == 0) return entries[i].value;
    return NULL;
}

/* ---- value parsers ---- */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

bool stsl__meta_parse_int(const char *text, long min, long max, long *out)
{
    if (!text || !is_digit(text[0])) return false;
    long v = 0;
    size_t i = 0;
    for (; is_digit(text[i]); i++) {
        if (v > (1L << 40)) return false;   /* far beyond any limit: stop before overflow */
        v = v * 10 + (text[i] - '0');
    }
    if (text[i] != '\0' || v < min || v > max) return false;
    if (out) *out = v;
    return true;
}

/* Length of a number at s following the strict grammar, 0 when there is none. */
static size_t number_len(const char *s)
{
    size_t i = 0, digits = 0;
    if (s[i] == '+' || s[i] == '-') i++;
    while (is_digit(s[i])) { i++; digits++; }
    if (s[i] == '.') {
        i++;
        while (is_digit(s[i])) { i++; digits++; }
    }
    if (digits == 0 || digits > 64) return 0;
    if (s[i] == 'e' || s[i] == 'E') {
        size_t j = i + 1, ed = 0;
        if (s[j] == '+' || s[j] == '-') j++;
        while (is_digit(s[j])) { j++; ed++; }
        if (ed == 0 || ed > 4) return 0;
        i = j;
    }
    return i;
}

static bool convert_number(const char *s, size_t n, double *out)
{
    char buf[96];
    if (n == 0 || n >= sizeof buf) return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end = NULL;
    double v;
#if defined(__GLIBC__)
    /* strtod follows LC_NUMERIC ("0,5" in some locales): parse in the C locale. */
    locale_t c_loc = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (c_loc != (locale_t)0) {
        v = strtod_l(buf, &end, c_loc);
        freelocale(c_loc);
    } else {
        v = strtod(buf, &end);
    }
#else
    v = strtod(buf, &end);
#endif
    if (end != buf + n || !isfinite(v)) return false;
    *out = v;
    return true;
}

bool stsl__meta_parse_double(const char *text, double *out)
{
    if (!text) return false;
    size_t n = number_len(text);
    if (n == 0 || text[n] != '\0') return false;
    double v;
    if (!convert_number(text, n, &v)) return false;
    if (out) *out = v;
    return true;
}

static const char *skip_blanks(const char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    return s;
}

bool stsl__meta_parse_pair(const char *text, double *lo, double *hi)
{
    if (!text) return false;
    const char *s = skip_blanks(text);
    size_t n = number_len(s);
    double a, b;
    if (n == 0 || !convert_number(s, n, &a)) return false;
    s = skip_blanks(s + n);
    if (*s != ',') return false;
    s = skip_blanks(s + 1);
    n = number_len(s);
    if (n == 0 || !convert_number(s, n, &b)) return false;
    s = skip_blanks(s + n);
    if (*s != '\0') return false;
    if (lo) *lo = a;
    if (hi) *hi = b;
    return true;
}

bool stsl__meta_parse_shape(const char *text, stsl_shape *out)
{
    if (!text) return false;
    long v[3];
    const char *s = skip_blanks(text);
    for (int i = 0; i < 3; i++) {
        if (!is_digit(*s)) return false;
        long x = 0;
        int nd = 0;
        while (is_digit(*s)) {
            if (++nd > 6) return false;
            x = x * 10 + (*s - '0');
            s++;
        }
        v[i] = x;
        s = skip_blanks(s);
        if (i < 2) {
            if (*s != ',') return false;
            s = skip_blanks(s + 1);
        }
    }
    if (*s != '\0') return false;
    if (v[0] < 1 || v[0] > 4096 || v[1] < 1 || v[1] > STSL_MAX_IMAGE_DIM || v[2] < 1 ||
        v[2] > STSL_MAX_IMAGE_DIM || v[1] * v[2] > (long)STSL_MAX_IMAGE_PIXELS)
        return false;
    if (out) {
        out->channels = (int32_t)v[0];
        out->height = (int32_t)v[1];
        out->width = (int32_t)v[2];
    }
    return true;
}

/* ---- validation ---- */

static const char *const role_names[] = {"unet", "autoencoder", "encoder", "decoder"};

static stsl_status need(const stsl__meta_entry *e, int n, const char *key, const char *role,
                        const char **value, char *err)
{
    *value = stsl__meta_get(e, n, key);
    if (!*value) return meta_fail(err, "required key '%s' is missing (role %s)", key, role);
    if (!**value) return meta_fail(err, "key '%s' has an empty value", key);
    return STSL_OK;
}

static stsl_status get_shape(const stsl__meta_entry *e, int n, const char *key, const char *role,
                             stsl_shape *out, char *err)
{
    const char *v;
    stsl_status st = need(e, n, key, role, &v, err);
    if (st != STSL_OK) return st;
    if (!stsl__meta_parse_shape(v, out))
        return meta_fail(err, "%s = '%.64s' is not a shape 'C,H,W' of positive integers within "
                              "the limits (H, W <= %d)", key, v, STSL_MAX_IMAGE_DIM);
    return STSL_OK;
}

/* A declared shape the load's probe can afford (STSL_MAX_MODEL_SAMPLE_VALUES). */
static stsl_status probe_fits(const char *key, stsl_shape s, char *err)
{
    const long long values = (long long)s.channels * s.height * s.width;
    if (values <= STSL_MAX_MODEL_SAMPLE_VALUES) return STSL_OK;
    return meta_fail(err,
                     "%s = %d,%d,%d is %lld values a sample; a model is probed at load on one "
                     "sample, and this library allows at most %ld (16 MiB; docs/models.md: "
                     "rebuild with a larger STSL_MAX_MODEL_SAMPLE_VALUES for larger models)",
                     key, (int)s.channels, (int)s.height, (int)s.width, values,
                     (long)STSL_MAX_MODEL_SAMPLE_VALUES);
}

static stsl_status get_double(const stsl__meta_entry *e, int n, const char *key,
                              const char *role, double *out, char *err)
{
    const char *v;
    stsl_status st = need(e, n, key, role, &v, err);
    if (st != STSL_OK) return st;
    if (!stsl__meta_parse_double(v, out))
        return meta_fail(err, "%s = '%.64s' is not a finite decimal number", key, v);
    return STSL_OK;
}

stsl_status stsl__meta_validate(const stsl__meta_entry *e, int n, unsigned allowed_roles,
                                stsl__model_meta *m, char *err)
{
    if (!m) return meta_fail(err, "internal: NULL output");
    memset(m, 0, sizeof *m);
    const char *v;
    stsl_status st;
    long lv;

    v = stsl__meta_get(e, n, "stsl_model_format");
    if (!v) return meta_fail(err, "required key 'stsl_model_format' is missing (it must be 1)");
    if (!stsl__meta_parse_int(v, 1, 1000000, &lv))
        return meta_fail(err, "stsl_model_format = '%.64s' is not a positive integer", v);
    if (lv != 1)
        return meta_fail(err, "stsl_model_format %ld is newer than this library supports (1)", lv);
    m->format = 1;

    v = stsl__meta_get(e, n, "role");
    if (!v) return meta_fail(err, "required key 'role' is missing (unet, autoencoder, encoder, decoder)");
    int role = -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(v, role_names[i]) == 0) role = i;
    if (role < 0)
        return meta_fail(err, "role = '%.64s' is not one of unet, autoencoder, encoder, decoder", v);
    if (!(allowed_roles & (1u << role))) {
        char want[64] = "";
        for (int i = 0; i < 4; i++)
            if (allowed_roles & (1u << i)) {
                if (want[0]) strcat(want, " or ");
                strcat(want, role_names[i]);
            }
        return meta_fail(err, "the file holds a model of role '%s', expected %s", role_names[role],
                         want);
    }
    m->role = (stsl__model_role)role;
    const char *rn = role_names[role];
    m->name = stsl__meta_get(e, n, "name");

    st = need(e, n, "value_range", rn, &v, err);
    if (st != STSL_OK) return st;
    if (!stsl__meta_parse_pair(v, &m->value_lo, &m->value_hi) || !(m->value_lo < m->value_hi))
        return meta_fail(err, "value_range = '%.64s' is not 'lo,hi' with lo < hi", v);
    if (m->value_lo != -1.0 || m->value_hi != 1.0)
        return meta_fail(err, "value_range = %g,%g is not supported: libstsl feeds images in -1,1 "
                              "(wrap the model so that it takes -1,1: scripts/export_torchscript.py "
                              "--value-range does it for autoencoders)", m->value_lo, m->value_hi);

    if (m->role == STSL__ROLE_UNET) {
        st = need(e, n, "prediction", rn, &v, err);
        if (st != STSL_OK) return st;
        if (strcmp(v, "eps") == 0) m->prediction = STSL__PRED_EPS;
        else if (strcmp(v, "v") == 0) m->prediction = STSL__PRED_V;
        else if (strcmp(v, "x0") == 0) m->prediction = STSL__PRED_X0;
        else return meta_fail(err, "prediction = '%.64s' is not one of eps, v, x0", v);

        st = need(e, n, "timesteps", rn, &v, err);
        if (st != STSL_OK) return st;
        if (!stsl__meta_parse_int(v, 1, 100000, &lv))
            return meta_fail(err, "timesteps = '%.64s' is not an integer in 1..100000", v);
        m->timesteps = (int)lv;

        st = need(e, n, "schedule", rn, &v, err);
        if (st != STSL_OK) return st;
        if (strcmp(v, "linear") == 0 || strcmp(v, "scaled-linear") == 0) {
            m->schedule = v[0] == 'l' ? STSL_SCHEDULE_LINEAR : STSL_SCHEDULE_SCALED_LINEAR;
            st = get_double(e, n, "beta_start", rn, &m->beta_start, err);
            if (st != STSL_OK) return st;
            st = get_double(e, n, "beta_end", rn, &m->beta_end, err);
            if (st != STSL_OK) return st;
            if (!(m->beta_start > 0 && m->beta_start <= m->beta_end && m->beta_end < 1))
                return meta_fail(err, "beta_start = %g, beta_end = %g: need 0 < beta_start <= "
                                      "beta_end < 1", m->beta_start, m->beta_end);
        } else if (strcmp(v, "cosine") == 0) {
            m->schedule = STSL_SCHEDULE_COSINE;
            m->beta_start = 0.008;
            m->beta_end = 0.999;
            if (stsl__meta_get(e, n, "cosine_s")) {
                st = get_double(e, n, "cosine_s", rn, &m->beta_start, err);
                if (st != STSL_OK) return st;
                if (!(m->beta_start >= 0 && m->beta_start < 1))
                    return meta_fail(err, "cosine_s = %g is not in [0, 1)", m->beta_start);
            }
        } else {
            return meta_fail(err, "schedule = '%.64s' is not one of linear, scaled-linear, cosine", v);
        }

        st = get_shape(e, n, "sample_shape", rn, &m->sample_shape, err);
        if (st == STSL_OK) st = probe_fits("sample_shape", m->sample_shape, err);
        if (st != STSL_OK) return st;

        st = need(e, n, "space", rn, &v, err);
        if (st != STSL_OK) return st;
        if (strcmp(v, "pixel") == 0) m->latent = 0;
        else if (strcmp(v, "latent") == 0) m->latent = 1;
        else return meta_fail(err, "space = '%.64s' is not one of pixel, latent", v);
        if (m->latent) {
            st = need(e, n, "pairs_with", rn, &m->pairs_with, err);
            if (st != STSL_OK) return st;
        } else {
            m->pairs_with = stsl__meta_get(e, n, "pairs_with");
            if (m->sample_shape.channels > STSL_MAX_CHANNELS)
                return meta_fail(err, "sample_shape has %d channels: a pixel-space model has at "
                                      "most %d", (int)m->sample_shape.channels, STSL_MAX_CHANNELS);
        }
    } else {
        st = get_shape(e, n, "image_shape", rn, &m->image_shape, err);
        if (st != STSL_OK) return st;
        if (m->image_shape.channels > STSL_MAX_CHANNELS)
            return meta_fail(err, "image_shape has %d channels, at most %d",
                             (int)m->image_shape.channels, STSL_MAX_CHANNELS);
        st = get_shape(e, n, "latent_shape", rn, &m->latent_shape, err);
        if (st == STSL_OK) st = probe_fits("image_shape", m->image_shape, err);
        if (st == STSL_OK) st = probe_fits("latent_shape", m->latent_shape, err);
        if (st != STSL_OK) return st;
        st = get_double(e, n, "latent_scale", rn, &m->latent_scale, err);
        if (st != STSL_OK) return st;
        if (!(m->latent_scale > 0) || m->latent_scale > 1e6 || m->latent_scale < 1e-6)
            return meta_fail(err, "latent_scale = %g is not in [1e-6, 1e6]", m->latent_scale);
    }
    return STSL_OK;
}
