/*
 * The metadata record between its two implementations (issue 29): the Python writer and reader
 * every script uses (scripts/stsl_export/meta.py, driven through tests/models/record_tool.py,
 * torch-free) and the library's C parser and validator (src/models/meta.c).
 *   - Python writes a record for every role with every field set to a value that is not its
 *     default; the C validator reads each field back to that value.
 *   - A corpus of records (edge cases of the grammar, good and bad) is read by both: the same
 *     ones are refused, and the accepted ones give the same keys and values, byte for byte.
 *   - Model files: Python's read_record (from the zip archive, without torch) gives the record
 *     the library reads from the same file (stsl_model_record_read).
 */
#include "common/testutil.h"
#include "models/meta.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *python(void)
{
    const char *p = getenv("STSL_TEST_PYTHON");
    return p && *p ? p : "python3";
}

static char g_dir[1024];

static const char *tmp(const char *name)
{
    static char bufs[4][1200];
    static int next;
    char *b = bufs[next++ % 4];
    if (!g_dir[0]) snprintf(g_dir, sizeof g_dir, "%s", tu_tmpdir());
    snprintf(b, sizeof bufs[0], "%s/%s", g_dir, name);
    return b;
}

/* Runs record_tool.py with `args`; its stdout (at most n - 1 bytes) into out.  0 on success. */
static int tool(const char *args, char *out, size_t n)
{
    char cmd[16384], res[1200];
    snprintf(res, sizeof res, "%s", tmp("tool-out.txt"));
    snprintf(cmd, sizeof cmd, "'%s' '%s' %s > '%s'", python(), tu_path("models/record_tool.py"),
             args, res);
    fflush(stdout);
    int rc = system(cmd);
    if (out) {
        out[0] = '\0';
        FILE *f = fopen(res, "rb");
        if (f) {
            size_t got = fread(out, 1, n - 1, f);
            out[got] = '\0';
            fclose(f);
        }
    }
    return rc;
}

static int python_present(void)
{
    static int present = -1;
    if (present < 0) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "'%s' -c pass >/dev/null 2>&1", python());
        present = system(cmd) == 0;
        if (!present) fprintf(stderr, "\n  skipped: no %s (set STSL_TEST_PYTHON)\n", python());
    }
    return present;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

static int same_shape(stsl_shape a, int c, int h, int w)
{
    return a.channels == c && a.height == h && a.width == w;
}

/* Python writes, the C validator reads every field. */
static void test_python_writes_c_reads(void)
{
    if (!python_present()) return;
    static const struct {
        const char *role, *kwargs;
        unsigned roles;
    } cases[] = {
        {"unet",
         "{\"name\": \"rt-unet v\", \"prediction\": \"v\", \"schedule\": \"scaled-linear\", "
         "\"beta_start\": 0.00085, \"beta_end\": 0.012, \"timesteps\": 321, "
         "\"sample_shape\": [3, 16, 24], \"space\": \"pixel\", \"pairs_with\": \"x.pt\", "
         "\"extra\": {\"note\": \"caf\\u00e9\"}, \"comment\": \"made by the round trip\"}",
         1u << STSL__ROLE_UNET},
        {"unet",
         "{\"prediction\": \"x0\", \"schedule\": \"cosine\", \"cosine_s\": 0.01, "
         "\"timesteps\": 77, \"sample_shape\": [4, 8, 12], \"space\": \"latent\", "
         "\"pairs_with\": \"my vae.pt\"}",
         1u << STSL__ROLE_UNET},
        {"autoencoder",
         "{\"name\": \"rt-ae\", \"image_shape\": [3, 32, 48], \"latent_shape\": [4, 4, 6], "
         "\"latent_scale\": 0.18215}",
         1u << STSL__ROLE_AUTOENCODER},
        {"encoder",
         "{\"image_shape\": [1, 8, 8], \"latent_shape\": [2, 2, 2], \"latent_scale\": 3.5}",
         1u << STSL__ROLE_ENCODER},
        {"decoder",
         "{\"image_shape\": [2, 10, 6], \"latent_shape\": [7, 5, 3], \"latent_scale\": 1e-3}",
         1u << STSL__ROLE_DECODER},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char file[64], args[4096];
        snprintf(file, sizeof file, "written-%zu.txt", i);
        snprintf(args, sizeof args, "write '%s' %s '%s'", tmp(file), cases[i].role, cases[i].kwargs);
        CU_ASSERT_EQUAL_FATAL(tool(args, NULL, 0), 0);
        size_t len = 0;
        char *text = read_all(tmp(file), &len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(text);
        stsl__meta_entry *e = NULL;
        int n = 0;
        char err[STSL_ERRMSG_SIZE] = "";
        stsl__model_meta m;
        stsl_status st = stsl__meta_parse(text, len, &e, &n, err);
        if (st == STSL_OK) st = stsl__meta_validate(e, n, cases[i].roles, &m, err);
        if (st != STSL_OK) fprintf(stderr, "\n  case %zu: %s\n%s\n", i, err, text);
        TU_ASSERT_OK(st);
        if (st == STSL_OK) {
            CU_ASSERT_EQUAL(m.format, 1);
            CU_ASSERT_EQUAL(m.value_lo, -1.0);
            CU_ASSERT_EQUAL(m.value_hi, 1.0);
            switch (i) {
            case 0:
                CU_ASSERT_EQUAL(m.role, STSL__ROLE_UNET);
                CU_ASSERT_STRING_EQUAL(m.name, "rt-unet v");
                CU_ASSERT_EQUAL(m.prediction, STSL__PRED_V);
                CU_ASSERT_EQUAL(m.schedule, STSL_SCHEDULE_SCALED_LINEAR);
                CU_ASSERT_EQUAL(m.beta_start, 0.00085);
                CU_ASSERT_EQUAL(m.beta_end, 0.012);
                CU_ASSERT_EQUAL(m.timesteps, 321);
                CU_ASSERT(same_shape(m.sample_shape, 3, 16, 24));
                CU_ASSERT_EQUAL(m.latent, 0);
                CU_ASSERT_STRING_EQUAL(m.pairs_with, "x.pt");
                CU_ASSERT_STRING_EQUAL(stsl__meta_get(e, n, "note"), "caf\xc3\xa9");
                CU_ASSERT_PTR_NOT_NULL(strstr(text, "# made by the round trip\n"));
                break;
            case 1:
                CU_ASSERT_PTR_NULL(m.name);
                CU_ASSERT_EQUAL(m.prediction, STSL__PRED_X0);
                CU_ASSERT_EQUAL(m.schedule, STSL_SCHEDULE_COSINE);
                CU_ASSERT_EQUAL(m.beta_start, 0.01);   /* cosine_s */
                CU_ASSERT_EQUAL(m.timesteps, 77);
                CU_ASSERT(same_shape(m.sample_shape, 4, 8, 12));
                CU_ASSERT_EQUAL(m.latent, 1);
                CU_ASSERT_STRING_EQUAL(m.pairs_with, "my vae.pt");
                break;
            case 2:
                CU_ASSERT_EQUAL(m.role, STSL__ROLE_AUTOENCODER);
                CU_ASSERT_STRING_EQUAL(m.name, "rt-ae");
                CU_ASSERT(same_shape(m.image_shape, 3, 32, 48));
                CU_ASSERT(same_shape(m.latent_shape, 4, 4, 6));
                CU_ASSERT_EQUAL(m.latent_scale, 0.18215);
                break;
            case 3:
                CU_ASSERT_EQUAL(m.role, STSL__ROLE_ENCODER);
                CU_ASSERT(same_shape(m.image_shape, 1, 8, 8));
                CU_ASSERT(same_shape(m.latent_shape, 2, 2, 2));
                CU_ASSERT_EQUAL(m.latent_scale, 3.5);
                break;
            default:
                CU_ASSERT_EQUAL(m.role, STSL__ROLE_DECODER);
                CU_ASSERT(same_shape(m.image_shape, 2, 10, 6));
                CU_ASSERT(same_shape(m.latent_shape, 7, 5, 3));
                CU_ASSERT_EQUAL(m.latent_scale, 1e-3);
                break;
            }
        }
        stsl__meta_free(e, n);
        free(text);
    }
    /* what the C validator refuses, the Python writer refuses too (it never writes one) */
    const char *refused[] = {
        "unet '{\"sample_shape\": [1, 8, 8], \"prediction\": \"noise\"}'",
        "unet '{\"sample_shape\": [1, 8, 8], \"space\": \"latent\"}'",
        "unet '{\"sample_shape\": [1, 8, 8], \"beta_start\": 0.5, \"beta_end\": 0.1}'",
        "autoencoder '{\"image_shape\": [1, 8, 8], \"latent_shape\": [1, 2, 2], \"latent_scale\": 0}'",
        "unet '{\"sample_shape\": [1, 8, 8], \"value_range\": [0, 1]}'",
        "gan '{}'",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char args[1024];
        snprintf(args, sizeof args, "write '%s' %s 2>/dev/null", tmp("refused.txt"), refused[i]);
        CU_ASSERT_NOT_EQUAL(tool(args, NULL, 0), 0);
    }
}

/* Hex of n bytes. */
static void hex(const char *s, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", (unsigned char)s[i]);
    out[2 * n] = '\0';
}

/* Compare the tool's answer for one record (starting at *p, advanced past it) with C's. */
static void compare_answer(const char *what, const char **p, stsl_status st,
                           const stsl__meta_entry *e, int n, const char *c_err)
{
    const char *line = *p;
    const char *nl = strchr(line, '\n');
    *p = nl ? nl + 1 : line + strlen(line);
    int py_ok = !strncmp(line, "ok ", 3);
    if (py_ok != (st == STSL_OK))
        fprintf(stderr, "\n  %s: C %s (%s), Python '%.*s'\n", what, st == STSL_OK ? "accepts" : "refuses",
                c_err, (int)(nl ? nl - line : (long)strlen(line)), line);
    CU_ASSERT_EQUAL(py_ok, st == STSL_OK);
    if (!py_ok || st != STSL_OK) return;
    CU_ASSERT_EQUAL(atoi(line + 3), n);
    static char kh[2 * STSL_META_MAX_KEY + 2], vh[2 * STSL_META_MAX_VALUE + 2];
    for (int i = 0; i < n && i < atoi(line + 3); i++) {
        const char *l = *p;
        nl = strchr(l, '\n');
        *p = nl ? nl + 1 : l + strlen(l);
        hex(e[i].key, strlen(e[i].key), kh);
        hex(e[i].value, strlen(e[i].value), vh);
        size_t kl = strlen(kh), vl = strlen(vh);
        int same = !strncmp(l, kh, kl) && l[kl] == ' ' && !strncmp(l + kl + 1, vh, vl) &&
                   l[kl + 1 + vl] == '\n';
        if (!same) fprintf(stderr, "\n  %s: entry %d: C '%s' = '%s', Python line '%.80s'\n", what, i,
                           e[i].key, e[i].value, l);
        CU_ASSERT(same);
    }
}

/* The grammar's edge cases, read by both. */
static void test_same_grammar(void)
{
    if (!python_present()) return;
    static char big[STSL_META_MAX_BYTES + 16], many[8192], longval[1100], longkey[80];
    memset(big, 'x', sizeof big - 1);
    memcpy(big, "a = ", 4);
    big[sizeof big - 1] = '\0';
    size_t m = 0;
    for (int i = 0; i < STSL_META_MAX_LINES + 1; i++) m += (size_t)sprintf(many + m, "k%d = %d\n", i, i);
    snprintf(longval, sizeof longval, "v = %01030d\n", 7);
    snprintf(longkey, sizeof longkey, "%065d = 1\n", 0);
    static const struct {
        const char *text;
        size_t len;   /* 0: strlen */
    } corpus[] = {
        {"stsl_model_format = 1\nrole = unet\n", 0},
        {"\xef\xbb\xbf" "a = 1\r\nb=2\r\n", 0},                       /* BOM, CRLF, no blanks */
        {"# comment\n\n   \t\n  key_1 \t=\t value with  inner  blanks \t\nlast = x", 0},
        {"name = a = b # not a comment\nempty =\n", 0},
        {"note = \xc3\xa9t\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80\n", 0},   /* UTF-8 */
        {"tab = a\tb\n", 0},
        {"a = 1\na = 2\n", 0},                                        /* duplicate */
        {"A = 1\n", 0},                                               /* upper case */
        {"a b = 1\n", 0},
        {"= 1\n", 0},
        {"novalue\n", 0},
        {"", 0},
        {"# only a comment\n\n", 0},
        {"a = \x01\n", 0},                                            /* control */
        {"a = \x7f\n", 0},
        {"a = \xc2\x85\n", 0},                                        /* C1 control */
        {"a = \xc0\xaf\n", 0},                                        /* overlong */
        {"a = \xed\xa0\x80\n", 0},                                    /* surrogate */
        {"a = \xff\n", 0},
        {"a = 1\rb = 2\n", 0},                                        /* bare CR */
        {"a = 1\0b = 2\n", 12},                                       /* NUL */
        {big, 0},                                                      /* over 64 KiB */
        {many, 0},                                                     /* 257 lines */
        {longval, 0},                                                  /* 1030-byte value */
        {longkey, 0},                                                  /* 65-byte key */
    };
    const size_t nc = sizeof corpus / sizeof corpus[0];
    char args[16384] = "read";
    for (size_t i = 0; i < nc; i++) {
        char name[32];
        snprintf(name, sizeof name, "corpus-%02zu.txt", i);
        FILE *f = fopen(tmp(name), "wb");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        size_t len = corpus[i].len ? corpus[i].len : strlen(corpus[i].text);
        CU_ASSERT_EQUAL(fwrite(corpus[i].text, 1, len, f), len);
        fclose(f);
        size_t used = strlen(args);
        snprintf(args + used, sizeof args - used, " '%s'", tmp(name));
    }
    static char out[1 << 20];
    CU_ASSERT_EQUAL_FATAL(tool(args, out, sizeof out), 0);
    const char *p = out;
    int accepted = 0;
    for (size_t i = 0; i < nc; i++) {
        size_t len = corpus[i].len ? corpus[i].len : strlen(corpus[i].text);
        stsl__meta_entry *e = NULL;
        int n = 0;
        char err[STSL_ERRMSG_SIZE] = "", what[32];
        stsl_status st = stsl__meta_parse(corpus[i].text, len, &e, &n, err);
        accepted += st == STSL_OK;
        snprintf(what, sizeof what, "corpus %zu", i);
        compare_answer(what, &p, st, e, n, err);
        stsl__meta_free(e, n);
    }
    /* the corpus holds both kinds: a comparison of refusals alone would prove little */
    CU_ASSERT(accepted >= 5 && accepted <= (int)nc - 15);
}

/* Bytes of a hex string of n digits into out (NUL-terminated). */
static void unhex(const char *h, size_t n, char *out)
{
    for (size_t i = 0; i + 1 < n; i += 2) {
        unsigned v = 0;
        sscanf(h + i, "%2x", &v);
        out[i / 2] = (char)v;
    }
    out[n / 2] = '\0';
}

/* A model file's record: Python's zip reader and the library's reader give the same. */
static void test_model_files(void)
{
    if (!python_present()) return;
    static const char *const files[] = {"scores/fixtures/unet_eps.pt", "scores/fixtures/ae.pt",
                                        "scores/fixtures/ae_decoder.pt",
                                        "scores/fixtures/unet_latent.pt"};
    char args[8192] = "model";
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        size_t used = strlen(args);
        snprintf(args + used, sizeof args - used, " '%s'", tu_path(files[i]));
    }
    static char out[1 << 16];
    CU_ASSERT_EQUAL_FATAL(tool(args, out, sizeof out), 0);
    const char *p = out;
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    for (size_t i = 0; ctx && i < sizeof files / sizeof files[0]; i++) {
        CU_ASSERT_FATAL(!strncmp(p, "ok ", 3));   /* Python reads it, libtorch or not */
        const int n = atoi(p + 3);
        p = strchr(p, '\n') + 1;
        stsl_model_record *rec = NULL;
        stsl_status st = stsl_model_record_read(ctx, tu_path(files[i]), &rec);
        if (!stsl_has_torch()) TU_ASSERT_STATUS(st, STSL_ERR_UNSUPPORTED);
        else TU_ASSERT_OK(st);
        CU_ASSERT(n >= 5);
        for (int k = 0; k < n; k++) {
            const char *sp = strchr(p, ' '), *nl = strchr(p, '\n');
            CU_ASSERT_FATAL(sp && nl && sp < nl);
            static char key[STSL_META_MAX_KEY + 1], value[STSL_META_MAX_VALUE + 1];
            unhex(p, (size_t)(sp - p), key);
            unhex(sp + 1, (size_t)(nl - sp - 1), value);
            p = nl + 1;
            if (!rec) continue;
            const char *got = stsl_model_record_get(rec, key);
            if (!got || strcmp(got, value))
                fprintf(stderr, "\n  %s: %s = '%s' in Python, '%s' in C\n", files[i], key, value,
                        got ? got : "(absent)");
            CU_ASSERT(got && !strcmp(got, value));
        }
        stsl_model_record_destroy(rec);
    }
    stsl_context_destroy(ctx);
}

int main(void)
{
    static const stsl_test tests[] = {
        {"Python writes every field, C reads it back", test_python_writes_c_reads},
        {"Python and C read the grammar's edge cases alike", test_same_grammar},
        {"a model file's record: Python's zip reader = the library's", test_model_files},
        {NULL, NULL},
    };
    return stsl_test_main("record_roundtrip", tests);
}
