/* Parser and validator of the stsl_meta.txt record (src/models/meta.c). */
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/testutil.h"
#include "models/meta.h"

static const char UNET[] =
    "stsl_model_format = 1\n"
    "role = unet\n"
    "name = fmnist-ddpm-28\n"
    "prediction = eps\n"
    "schedule = linear\n"
    "beta_start = 0.0001\n"
    "beta_end = 0.02\n"
    "timesteps = 1000\n"
    "sample_shape = 1,28,28\n"
    "space = pixel\n"
    "value_range = -1,1\n";

static const char AE[] =
    "stsl_model_format = 1\n"
    "role = autoencoder\n"
    "image_shape = 3,64,64\n"
    "latent_shape = 4,8,8\n"
    "latent_scale = 0.18215\n"
    "value_range = -1,1\n";

/* Parse and return the status; err holds the message. */
static stsl_status parse(const char *text, size_t len, char *err)
{
    stsl__meta_entry *e = NULL;
    int n = -1;
    err[0] = '\0';
    stsl_status st = stsl__meta_parse(text, len, &e, &n, err);
    if (st != STSL_OK) {
        CU_ASSERT_PTR_NULL(e);
        CU_ASSERT_EQUAL(n, 0);
        CU_ASSERT(err[0] != '\0');
    }
    stsl__meta_free(e, n);
    return st;
}

static stsl_status parse_s(const char *text, char *err)
{
    return parse(text, strlen(text), err);
}

/* Parse + validate a NUL-terminated record for the given roles. */
/* The entries of the last call stay alive until the next one (m's strings point into them). */
static stsl__meta_entry *kept;
static int kept_n;

static stsl_status validate(const char *text, unsigned roles, stsl__model_meta *m, char *err)
{
    stsl__meta_free(kept, kept_n);
    kept = NULL;
    kept_n = 0;
    err[0] = '\0';
    stsl_status st = stsl__meta_parse(text, strlen(text), &kept, &kept_n, err);
    if (st == STSL_OK) st = stsl__meta_validate(kept, kept_n, roles, m, err);
    return st;
}

/* UNET with one line replaced (key's line) or removed (repl NULL) or appended (key absent). */
static char *unet_with(const char *key, const char *repl)
{
    static char buf[4096];
    buf[0] = '\0';
    const char *p = UNET;
    int done = 0;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = (size_t)(nl - p) + 1;
        size_t kl = strlen(key);
        if (!strncmp(p, key, kl) && p[kl] == ' ') {
            if (repl) {
                strcat(buf, repl);
                strcat(buf, "\n");
            }
            done = 1;
        } else {
            strncat(buf, p, len);
        }
        p += len;
    }
    if (!done && repl) {
        strcat(buf, repl);
        strcat(buf, "\n");
    }
    return buf;
}

static void test_valid_unet(void)
{
    stsl__meta_entry *e = NULL;
    int n = 0;
    char err[STSL_ERRMSG_SIZE] = "";
    TU_ASSERT_OK(stsl__meta_parse(UNET, strlen(UNET), &e, &n, err));
    CU_ASSERT_EQUAL(n, 11);
    CU_ASSERT_STRING_EQUAL(stsl__meta_get(e, n, "name"), "fmnist-ddpm-28");
    CU_ASSERT_STRING_EQUAL(stsl__meta_get(e, n, "sample_shape"), "1,28,28");
    CU_ASSERT_PTR_NULL(stsl__meta_get(e, n, "latent_scale"));
    CU_ASSERT_PTR_NULL(stsl__meta_get(e, n, NULL));
    stsl__model_meta m;
    TU_ASSERT_OK(stsl__meta_validate(e, n, 1u << STSL__ROLE_UNET, &m, err));
    CU_ASSERT_EQUAL(m.role, STSL__ROLE_UNET);
    CU_ASSERT_EQUAL(m.prediction, STSL__PRED_EPS);
    CU_ASSERT_EQUAL(m.schedule, STSL_SCHEDULE_LINEAR);
    CU_ASSERT_DOUBLE_EQUAL(m.beta_start, 0.0001, 1e-15);
    CU_ASSERT_DOUBLE_EQUAL(m.beta_end, 0.02, 1e-15);
    CU_ASSERT_EQUAL(m.timesteps, 1000);
    CU_ASSERT_EQUAL(m.sample_shape.channels, 1);
    CU_ASSERT_EQUAL(m.sample_shape.height, 28);
    CU_ASSERT_EQUAL(m.sample_shape.width, 28);
    CU_ASSERT_EQUAL(m.latent, 0);
    CU_ASSERT_STRING_EQUAL(m.name, "fmnist-ddpm-28");
    stsl__meta_free(e, n);
    stsl__meta_free(NULL, 0);
}

static void test_valid_autoencoder(void)
{
    char err[STSL_ERRMSG_SIZE];
    stsl__model_meta m;
    TU_ASSERT_OK(validate(AE, 1u << STSL__ROLE_AUTOENCODER, &m, err));
    CU_ASSERT_EQUAL(m.image_shape.channels, 3);
    CU_ASSERT_EQUAL(m.latent_shape.channels, 4);
    CU_ASSERT_EQUAL(m.latent_shape.height, 8);
    CU_ASSERT_DOUBLE_EQUAL(m.latent_scale, 0.18215, 1e-12);
    CU_ASSERT_PTR_NULL(m.name);
    /* role mismatch */
    TU_ASSERT_STATUS(validate(AE, 1u << STSL__ROLE_UNET, &m, err), STSL_ERR_MODEL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "role 'autoencoder', expected unet"));
    TU_ASSERT_STATUS(validate(UNET, (1u << STSL__ROLE_ENCODER) | (1u << STSL__ROLE_DECODER), &m,
                              err), STSL_ERR_MODEL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "expected encoder or decoder"));
}

static void test_layout(void)
{
    /* comments, blanks, CRLF, BOM, unknown keys, '=' inside a value, empty value, no final \n;
     * line 9 differs between the two texts */
#define LINES_1_TO_8                                                            \
    "\xef\xbb\xbf# a comment\r\n"                                               \
    "\n"                                                                        \
    "   \t\n"                                                                   \
    "  # indented comment = not a key\n"                                        \
    "  stsl_model_format\t=\t1  \r\n"                                           \
    "role=unet\n"                                                               \
    "name = a = b # not a comment\n"                                            \
    "future_key_2 =\n"
    const char text[] = LINES_1_TO_8 "caf\xc3\xa9_note_ok = \xc3\xa9t\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80\n"
                                     "last = x";
    /* the non-ASCII key is refused; drop it for the success case */
    char err[STSL_ERRMSG_SIZE];
    TU_ASSERT_STATUS(parse_s(text, err), STSL_ERR_MODEL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 9"));

    const char ok[] = LINES_1_TO_8 "note = \xc3\xa9t\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80\n"
                                   "last = x";
#undef LINES_1_TO_8
    stsl__meta_entry *e = NULL;
    int n = 0;
    TU_ASSERT_OK(stsl__meta_parse(ok, strlen(ok), &e, &n, err));
    CU_ASSERT_EQUAL(n, 6);
    CU_ASSERT_STRING_EQUAL(stsl__meta_get(e, n, "stsl_model_format"), "1");
    CU_ASSERT_STRING_EQUAL(stsl__meta_get(e, n, "role"), "unet");
    CU_ASSERT_STRING_EQUAL(stsl__meta_get(e, n, "name"), "a = b # not a comment");
    CU_ASSERT_STRING_EQUAL(stsl__meta_get(e, n, "future_key_2"), "");
    CU_ASSERT_STRING_EQUAL(stsl__meta_get(e, n, "note"), "\xc3\xa9t\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80");
    CU_ASSERT_STRING_EQUAL(stsl__meta_get(e, n, "last"), "x");
    stsl__meta_free(e, n);

    /* not NUL-terminated input: only len bytes are read */
    char buf[16];
    memcpy(buf, "a = 1\nb = 2XXXXX", 16);
    TU_ASSERT_OK(stsl__meta_parse(buf, 11, &e, &n, err));
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_STRING_EQUAL(stsl__meta_get(e, n, "b"), "2");
    stsl__meta_free(e, n);
}

static void test_syntax_errors(void)
{
    char err[STSL_ERRMSG_SIZE];
    static const struct {
        const char *text;
        const char *needle;
    } cases[] = {
        {"", "empty"},
        {"# only a comment\n\n", "no 'key = value'"},
        {"role unet\n", "line 1: expected 'key = value'"},
        {"a = 1\nRole = unet\n", "line 2: keys are lower-case"},
        {"a = 1\nro-le = unet\n", "line 2: keys are lower-case"},
        {"= unet\n", "line 1"},
        {"a = 1\nb = 2\na = 3\n", "line 3: key 'a' already given on line 1"},
        {"a = \x01\n", "line 1: invalid UTF-8 or control character"},
        {"a = x\x7f\n", "control character"},
        {"a = \xc0\xaf\n", "invalid UTF-8"},          /* overlong '/' */
        {"a = \xed\xa0\x80\n", "invalid UTF-8"},      /* surrogate */
        {"a = \xe2\x9c\n", "invalid UTF-8"},          /* truncated */
        {"a = \xf4\x90\x80\x80\n", "invalid UTF-8"},  /* > U+10FFFF */
        {"a = \xc2\x85\n", "control character"},      /* C1 control */
        {"a = \xff\n", "invalid UTF-8"},
        {"a = b\rc\n", "control character"},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa = 1\n", "longer than 64"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        stsl_status st = parse_s(cases[i].text, err);
        if (st != STSL_ERR_MODEL || !strstr(err, cases[i].needle))
            fprintf(stderr, "\n  case %zu: status %d, message '%s', expected '%s'\n", i, (int)st,
                    err, cases[i].needle);
        CU_ASSERT_EQUAL(st, STSL_ERR_MODEL);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, cases[i].needle));
    }
    /* NUL byte inside the length */
    TU_ASSERT_STATUS(parse("a = 1\0b = 2\n", 12, err), STSL_ERR_MODEL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "NUL"));
    /* NULL arguments */
    stsl__meta_entry *e = NULL;
    int n = 0;
    TU_ASSERT_STATUS(stsl__meta_parse(NULL, 5, &e, &n, err), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl__meta_parse("a = 1", 5, NULL, &n, err), STSL_ERR_INVALID_ARG);
    TU_ASSERT_STATUS(stsl__meta_parse("a = 1", 5, &e, &n, NULL), STSL_OK);   /* err optional */
    stsl__meta_free(e, n);
    TU_ASSERT_STATUS(stsl__meta_parse("a 1", 3, &e, &n, NULL), STSL_ERR_MODEL);
}

static void test_limits(void)
{
    char err[STSL_ERRMSG_SIZE];
    /* 256 lines is fine, 257 is not */
    char *buf = malloc(STSL_META_MAX_BYTES + 16);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    size_t len = 0;
    for (int i = 0; i < 256; i++) len += (size_t)sprintf(buf + len, "k%d = %d\n", i, i);
    TU_ASSERT_OK(parse(buf, len, err));
    len += (size_t)sprintf(buf + len, "\n");
    TU_ASSERT_STATUS(parse(buf, len, err), STSL_ERR_MODEL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "more than 256 lines"));
    /* value of 1024 bytes is fine, 1025 is not */
    memcpy(buf, "v = ", 4);
    memset(buf + 4, 'x', 1024);
    TU_ASSERT_OK(parse(buf, 4 + 1024, err));
    memset(buf + 4, 'x', 1025);
    TU_ASSERT_STATUS(parse(buf, 4 + 1025, err), STSL_ERR_MODEL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "longer than 1024"));
    /* the whole record */
    memset(buf, '#', STSL_META_MAX_BYTES + 1);
    TU_ASSERT_STATUS(parse(buf, STSL_META_MAX_BYTES + 1, err), STSL_ERR_MODEL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "65536-byte limit"));
    free(buf);
}

static void test_numbers(void)
{
    double d = 0;
    static const struct {
        const char *s;
        double v;
    } good[] = {{"0.0001", 0.0001}, {"1e-4", 1e-4}, {"1E-4", 1e-4}, {"-1", -1}, {"+2.5", 2.5},
                {".5", 0.5}, {"5.", 5.0}, {"0.18215", 0.18215}, {"1e+3", 1000}, {"007", 7}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        CU_ASSERT_TRUE(stsl__meta_parse_double(good[i].s, &d));
        CU_ASSERT_DOUBLE_EQUAL(d, good[i].v, 1e-15 * (1 + fabs(good[i].v)));
    }
    static const char *const bad[] = {"", " ", "1e", "e5", "0x10", "nan", "inf", "-inf", "1.0.0",
                                      "1e99999", "1e400", "1,5", "1 ", " 1", "--1", ".", "+",
                                      "1e-", "infinity", "1d"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (stsl__meta_parse_double(bad[i], &d)) fprintf(stderr, "\n  accepted '%s'\n", bad[i]);
        CU_ASSERT_FALSE(stsl__meta_parse_double(bad[i], &d));
    }
    CU_ASSERT_FALSE(stsl__meta_parse_double(NULL, &d));

    /* locale-proof: a locale whose decimal point is ',' must not change anything */
    const char *old = setlocale(LC_NUMERIC, NULL);
    char saved[64];
    snprintf(saved, sizeof saved, "%s", old ? old : "C");
    if (setlocale(LC_NUMERIC, "de_DE.UTF-8") || setlocale(LC_NUMERIC, "fr_FR.UTF-8")) {
        CU_ASSERT_TRUE(stsl__meta_parse_double("0.5", &d));
        CU_ASSERT_DOUBLE_EQUAL(d, 0.5, 0);
        CU_ASSERT_FALSE(stsl__meta_parse_double("0,5", &d));
    }
    setlocale(LC_NUMERIC, saved);

    long l = 0;
    CU_ASSERT_TRUE(stsl__meta_parse_int("1000", 1, 100000, &l));
    CU_ASSERT_EQUAL(l, 1000);
    CU_ASSERT_FALSE(stsl__meta_parse_int("0", 1, 100000, &l));
    CU_ASSERT_FALSE(stsl__meta_parse_int("100001", 1, 100000, &l));
    CU_ASSERT_FALSE(stsl__meta_parse_int("-1", -5, 5, &l));
    CU_ASSERT_FALSE(stsl__meta_parse_int("1.0", 0, 5, &l));
    CU_ASSERT_FALSE(stsl__meta_parse_int("", 0, 5, &l));
    CU_ASSERT_FALSE(stsl__meta_parse_int("99999999999999999999999999", 0, 5, &l));
    CU_ASSERT_FALSE(stsl__meta_parse_int(NULL, 0, 5, &l));

    double lo, hi;
    CU_ASSERT_TRUE(stsl__meta_parse_pair("-1,1", &lo, &hi));
    CU_ASSERT_TRUE(stsl__meta_parse_pair(" -1 , 1.0 ", &lo, &hi));
    CU_ASSERT_DOUBLE_EQUAL(lo, -1, 0);
    CU_ASSERT_DOUBLE_EQUAL(hi, 1, 0);
    CU_ASSERT_FALSE(stsl__meta_parse_pair("-1", &lo, &hi));
    CU_ASSERT_FALSE(stsl__meta_parse_pair("-1,1,2", &lo, &hi));
    CU_ASSERT_FALSE(stsl__meta_parse_pair("a,b", &lo, &hi));
}

static void test_shapes(void)
{
    stsl_shape s;
    CU_ASSERT_TRUE(stsl__meta_parse_shape("3,64,64", &s));
    CU_ASSERT_EQUAL(s.channels, 3);
    CU_ASSERT_EQUAL(s.height, 64);
    CU_ASSERT_TRUE(stsl__meta_parse_shape(" 4 , 8 ,\t16 ", &s));
    CU_ASSERT_EQUAL(s.width, 16);
    static const char *const bad[] = {"3,64", "3,64,64,1", "0,1,1", "1,0,1", "3,x,64", "3,64,",
                                      ",3,64,64", "3;64;64", "5000,8,8", "1,20000,8",
                                      "1,16384,16384", "-1,8,8", "1,8,8x", "9999999,1,1", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (stsl__meta_parse_shape(bad[i], &s)) fprintf(stderr, "\n  accepted '%s'\n", bad[i]);
        CU_ASSERT_FALSE(stsl__meta_parse_shape(bad[i], &s));
    }
    CU_ASSERT_TRUE(stsl__meta_parse_shape("1,8192,8192", &s));
}

static void expect_invalid(const char *text, unsigned roles, const char *needle)
{
    char err[STSL_ERRMSG_SIZE];
    stsl__model_meta m;
    stsl_status st = validate(text, roles, &m, err);
    if (st != STSL_ERR_MODEL || !strstr(err, needle))
        fprintf(stderr, "\n  status %d, message '%s', expected '%s'\n", (int)st, err, needle);
    CU_ASSERT_EQUAL(st, STSL_ERR_MODEL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, needle));
}

static void test_validation(void)
{
    const unsigned U = 1u << STSL__ROLE_UNET;
    /* the valid UNet record with one key's line replaced (NULL: removed); what the message says */
    static const struct {
        const char *key, *line, *needle;
    } unet_cases[] = {
        {"stsl_model_format", NULL, "'stsl_model_format' is missing"},
        {"stsl_model_format", "stsl_model_format = 2", "newer"},
        {"stsl_model_format", "stsl_model_format = one", "not a positive"},
        {"role", NULL, "'role' is missing"},
        {"role", "role = vae", "role = 'vae'"},
        {"prediction", NULL, "'prediction' is missing"},
        {"prediction", "prediction = noise", "prediction = 'noise'"},
        {"prediction", "prediction =", "'prediction' has an empty value"},
        {"schedule", "schedule = sigmoid", "schedule = 'sigmoid'"},
        {"beta_start", NULL, "'beta_start' is missing"},
        {"beta_start", "beta_start = 0.1", "need 0 < beta_start <= beta_end"},
        {"beta_end", "beta_end = 1.5", "beta_end"},
        {"beta_end", "beta_end = 2e", "'2e' is not a finite"},
        {"timesteps", "timesteps = 0", "timesteps = '0'"},
        {"timesteps", "timesteps = 1000.5", "timesteps"},
        {"sample_shape", NULL, "'sample_shape' is missing"},
        {"sample_shape", "sample_shape = 28,28", "sample_shape = '28,28'"},
        {"sample_shape", "sample_shape = 8,28,28", "at most 4"},
        /* within the image limits, over what the load's probe may take (issue 30) */
        {"sample_shape", "sample_shape = 1,4096,4096", "probed at load"},
        {"sample_shape", "sample_shape = 4,1024,1025", "4198400 values"},
        {"space", "space = latent", "'pairs_with' is missing"},
        {"space", "space = feature", "space = 'feature'"},
        {"value_range", NULL, "'value_range' is missing"},
        {"value_range", "value_range = 0,1", "not supported"},
        {"value_range", "value_range = 1,-1", "lo < hi"},
    };
    for (size_t i = 0; i < sizeof unet_cases / sizeof unet_cases[0]; i++)
        expect_invalid(unet_with(unet_cases[i].key, unet_cases[i].line), U, unet_cases[i].needle);

    char err[STSL_ERRMSG_SIZE];
    stsl__model_meta m;
    /* cosine: betas not needed, cosine_s optional */
    char text[4096];
    snprintf(text, sizeof text, "%s", unet_with("schedule", "schedule = cosine"));
    TU_ASSERT_OK(validate(text, U, &m, err));
    CU_ASSERT_EQUAL(m.schedule, STSL_SCHEDULE_COSINE);
    CU_ASSERT_DOUBLE_EQUAL(m.beta_start, 0.008, 1e-15);
    strcat(text, "cosine_s = 0.01\n");
    TU_ASSERT_OK(validate(text, U, &m, err));
    CU_ASSERT_DOUBLE_EQUAL(m.beta_start, 0.01, 1e-15);
    /* latent with pairs_with */
    snprintf(text, sizeof text, "%s", unet_with("space", "space = latent"));
    strcat(text, "pairs_with = vae.pt\nsample_shape_extra = 1\n");
    TU_ASSERT_OK(validate(text, U, &m, err));
    CU_ASSERT_EQUAL(m.latent, 1);
    CU_ASSERT_STRING_EQUAL(m.pairs_with, "vae.pt");
    /* v and x0 */
    TU_ASSERT_OK(validate(unet_with("prediction", "prediction = v"), U, &m, err));
    CU_ASSERT_EQUAL(m.prediction, STSL__PRED_V);
    TU_ASSERT_OK(validate(unet_with("prediction", "prediction = x0"), U, &m, err));
    CU_ASSERT_EQUAL(m.prediction, STSL__PRED_X0);
    /* autoencoder keys */
    const unsigned A = 1u << STSL__ROLE_AUTOENCODER;
    expect_invalid("stsl_model_format = 1\nrole = autoencoder\nvalue_range = -1,1\n"
                   "latent_shape = 4,8,8\nlatent_scale = 1\n", A, "'image_shape' is missing");
    expect_invalid("stsl_model_format = 1\nrole = autoencoder\nvalue_range = -1,1\n"
                   "image_shape = 3,8,8\nlatent_shape = 4,8,8\nlatent_scale = 0\n", A,
                   "latent_scale = 0");
    expect_invalid("stsl_model_format = 1\nrole = autoencoder\nvalue_range = -1,1\n"
                   "image_shape = 3,8,8\nlatent_shape = 4,8,8\n", A, "'latent_scale' is missing");
    expect_invalid("stsl_model_format = 1\nrole = autoencoder\nvalue_range = -1,1\n"
                   "image_shape = 3,2048,2048\nlatent_shape = 4,256,256\nlatent_scale = 1\n", A,
                   "image_shape = 3,2048,2048 is 12582912 values");
    expect_invalid("stsl_model_format = 1\nrole = autoencoder\nvalue_range = -1,1\n"
                   "image_shape = 3,64,64\nlatent_shape = 4096,64,64\nlatent_scale = 1\n", A,
                   "latent_shape = 4096,64,64");
}

/* Deterministic mutations of valid records: every outcome must be a status, never a crash or
 * a leak (the real fuzzing runs under libFuzzer; this is the cheap smoke version). */
static void test_mutations(void)
{
    char buf[sizeof UNET + 64];
    char err[STSL_ERRMSG_SIZE];
    uint32_t r = 12345;
    int ok = 0;
    for (int iter = 0; iter < 4000; iter++) {
        const char *src = (iter & 1) ? UNET : AE;
        size_t len = strlen(src);
        memcpy(buf, src, len);
        int flips = 1 + (int)((r >> 7) % 4);
        for (int k = 0; k < flips; k++) {
            r = r * 1664525u + 1013904223u;
            size_t at = (r >> 8) % len;
            r = r * 1664525u + 1013904223u;
            buf[at] = (char)(r >> 24);
        }
        r = r * 1664525u + 1013904223u;
        size_t cut = (iter % 7 == 0) ? (r >> 8) % (len + 1) : len;
        stsl__meta_entry *e = NULL;
        int n = 0;
        stsl_status st = stsl__meta_parse(buf, cut, &e, &n, err);
        CU_ASSERT(st == STSL_OK || st == STSL_ERR_MODEL);
        if (st == STSL_OK) {
            stsl__model_meta m;
            st = stsl__meta_validate(e, n, 0xf, &m, err);
            CU_ASSERT(st == STSL_OK || st == STSL_ERR_MODEL);
            ok += st == STSL_OK;
        }
        stsl__meta_free(e, n);
    }
    CU_ASSERT(ok > 0);
    stsl__meta_free(kept, kept_n);
    kept = NULL;
    kept_n = 0;
}

int main(void)
{
    static const stsl_test tests[] = {
        {"valid unet record", test_valid_unet},
        {"valid autoencoder record, role checks", test_valid_autoencoder},
        {"comments, blanks, CRLF, BOM, unknown keys", test_layout},
        {"syntax errors name the line", test_syntax_errors},
        {"size limits", test_limits},
        {"numbers: strict and locale-proof", test_numbers},
        {"shapes", test_shapes},
        {"validation of required keys and values", test_validation},
        {"mutated records never crash", test_mutations},
        {NULL, NULL},
    };
    return stsl_test_main("meta", tests);
}
