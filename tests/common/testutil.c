#include "common/testutil.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int stsl_test_main(const char *suite_name, const stsl_test *tests)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite suite = CU_add_suite(suite_name, NULL, NULL);
    if (!suite) {
        CU_cleanup_registry();
        return 2;
    }
    for (const stsl_test *t = tests; t->name; t++) {
        if (!CU_add_test(suite, t->name, t->fn)) {
            CU_cleanup_registry();
            return 2;
        }
    }
    CU_basic_set_mode(getenv("STSL_TEST_VERBOSE") ? CU_BRM_VERBOSE : CU_BRM_NORMAL);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    unsigned run = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    return (failed == 0 && run > 0) ? 0 : 1;
}

void tu_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    stsl_random_uniform(NULL, seed, 12345, 0, x, n);
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * x[i];
}

void tu_fill_normal(float *x, size_t n, uint64_t seed) { stsl_random_normal(NULL, seed, 54321, 0, x, n); }

double tu_dot(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

double tu_max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || isnan(d)) m = isnan(d) ? INFINITY : d;
    }
    return m;
}

double tu_rel_err(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(b[i]));
    return tu_max_abs_diff(a, b, n) / (1 + m);
}

double tu_norm(const float *a, size_t n) { return sqrt(tu_dot(a, a, n)); }

const char *tu_path(const char *rel)
{
    static char buf[4096];
    const char *dir = getenv("STSL_TEST_DIR");
    snprintf(buf, sizeof buf, "%s/%s", dir ? dir : "tests", rel);
    return buf;
}

int tu_same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

const char *tu_tool(const char *name)
{
    static char bufs[2][4096];
    static int next;
    char *b = bufs[next++ % 2];
    const char *dir = getenv("STSL_BIN_DIR");
    snprintf(b, sizeof bufs[0], "%s/%s", dir && *dir ? dir : "bin", name);
    return b;
}

int tu_tool_required(void)
{
    const char *dir = getenv("STSL_BIN_DIR");
    return dir && *dir;
}

const char *tu_python(void)
{
    static char buf[4096];
    static int looked;
    const char *env = getenv("STSL_PYTHON");
    if (env && *env) return env;
    if (!looked) {
        looked = 1;
        /* the project's one finder, run as tests/env.sh runs it */
        char cmd[4400];
        snprintf(cmd, sizeof cmd,
                 "bash -c '. \"$0\" && torch_python \"\" torch' '%s' 2>/dev/null",
                 tu_path("../scripts/torch_python.sh"));
        FILE *p = popen(cmd, "r");
        if (p) {
            if (!fgets(buf, sizeof buf, p)) buf[0] = '\0';
            buf[strcspn(buf, "\n")] = '\0';
            pclose(p);
        }
    }
    return buf[0] ? buf : NULL;
}

const char *tu_tmpdir(void)
{
    static char buf[256];
    if (!buf[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(buf, sizeof buf, "%s/stsl-test-XXXXXX", base ? base : "/tmp");
        if (!mkdtemp(buf)) return "/tmp";
    }
    return buf;
}

const char *tu_device(void)
{
    const char *d = getenv("STSL_TEST_DEVICE");
    return d && *d ? d : STSL_DEFAULT_DEVICE;
}

stsl_precision tu_precision(void)
{
    const char *p = getenv("STSL_TEST_PRECISION");
    if (p && strcmp(p, "bfloat16") == 0) return STSL_PRECISION_BFLOAT16;
    if (p && strcmp(p, "float16") == 0) return STSL_PRECISION_FLOAT16;
    const char *h = getenv("STSL_TEST_HALF");
    return h && *h && strcmp(h, "0") != 0 ? STSL_PRECISION_FLOAT16 : STSL_PRECISION_FLOAT32;
}

int tu_half(void)
{
    return tu_precision() != STSL_PRECISION_FLOAT32;
}

int tu_on_cuda(void)
{
    const char *d = tu_device();
    if (strcmp(d, "cpu") == 0 || !stsl_cuda_available()) return 0;
    return strcmp(d, "auto") == 0 || strncmp(d, "cuda", 4) == 0;
}

stsl_context *tu_context(void)
{
    stsl_context *ctx = NULL;
    if (stsl_context_create(&ctx) != STSL_OK) {
        fprintf(stderr, "\n  stsl_context_create failed\n");
        return NULL;
    }
    if (stsl_context_set_device(ctx, tu_device()) != STSL_OK ||
        stsl_context_set_precision(ctx, tu_precision()) != STSL_OK) {
        fprintf(stderr, "\n  device %s (precision %d): %s\n", tu_device(), (int)tu_precision(),
                stsl_context_last_error(ctx));
        stsl_context_destroy(ctx);
        return NULL;
    }
    return ctx;
}

double tu_tol(double cpu, double cuda, double half)
{
    /* bfloat16 keeps 8 significand bits to float16's 11: 2.5 times the float16 column (5e-2 for
     * 2e-2, docs/cuda.md, Tolerances) */
    if (tu_precision() == STSL_PRECISION_BFLOAT16) return 2.5 * half;
    if (tu_half()) return half;
    return tu_on_cuda() ? cuda : cpu;
}

int tu_help_lists_default(const char *text, const char *flag, const char *value, const char *who)
{
    /* the flag's line: "  --flag ARG ..." at the start of a line */
    char pat[96];
    snprintf(pat, sizeof pat, "\n  %s ", flag);
    const char *p = strstr(text, pat);
    if (!p) return 0;
    const char *d = strstr(p + 1, "default:");
    const char *next = strstr(p + 1, "\n  --");
    if (!d || (next && d > next)) return 0;
    const char *end = strchr(d, '\n');
    size_t len = end ? (size_t)(end - d) : strlen(d);
    char line[4096];
    if (len >= sizeof line) len = sizeof line - 1;
    memcpy(line, d + strlen("default:"), len - strlen("default:"));
    line[len - strlen("default:")] = '\0';
    /* groups "VALUE (who, who)" separated by ";" */
    char *save = NULL;
    for (char *g = strtok_r(line, ";", &save); g; g = strtok_r(NULL, ";", &save)) {
        while (*g == ' ') g++;
        char *open = strchr(g, '(');
        char *close = open ? strrchr(open, ')') : NULL;
        if (!open || !close) continue;
        size_t vl = (size_t)(open - g);
        while (vl > 0 && g[vl - 1] == ' ') vl--;
        if (vl != strlen(value) || strncmp(g, value, vl) != 0) continue;
        *close = '\0';
        char *save2 = NULL;
        for (char *w = strtok_r(open + 1, ",", &save2); w; w = strtok_r(NULL, ",", &save2)) {
            while (*w == ' ') w++;
            if (strcmp(w, who) == 0) return 1;
        }
    }
    return 0;
}

uint32_t tu_png_crc(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
}

void tu_put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

size_t tu_craft_png(unsigned char *buf, uint32_t w, uint32_t h, int depth, int color_type)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(buf, sig, 8);
    tu_put_be32(buf + 8, 13);
    memcpy(buf + 12, "IHDR", 4);
    tu_put_be32(buf + 16, w);
    tu_put_be32(buf + 20, h);
    buf[24] = (unsigned char)depth;
    buf[25] = (unsigned char)color_type;
    buf[26] = buf[27] = buf[28] = 0;   /* compression, filter, interlace */
    tu_put_be32(buf + 29, tu_png_crc(buf + 12, 17));
    tu_put_be32(buf + 33, 0);
    memcpy(buf + 37, "IEND", 4);
    tu_put_be32(buf + 41, tu_png_crc(buf + 37, 4));
    return 45;
}

int tu_help_lists_param_default(const char *text, stsl_param key, const stsl_param_bounds *b, const char *who)
{
    char flag[80], value[64];
    const char *vn = b->is_integer ? stsl_param_value_name(key, (int64_t)b->default_value) : NULL;
    snprintf(flag, sizeof flag, "--%s", stsl_param_name(key));
    if (vn) snprintf(value, sizeof value, "%s", vn);
    else snprintf(value, sizeof value, "%g", b->default_value);
    int ok = tu_help_lists_default(text, flag, value, who);
    if (!ok) fprintf(stderr, "\n  --help: %s lacks default %s for %s\n", flag, value, who);
    return ok;
}

/* The kind an operator or solver name makes, or -1: the library has no name-to-kind lookup, so
 * an object is made (operators on a 3x256x256 image, as the tools' help assumes) and asked. */
static int kind_of_name(int solvers, const char *name)
{
    int kind = -1;
    if (solvers) {
        stsl_solver *s = NULL;
        if (stsl_solver_create_by_name(NULL, name, &s) == STSL_OK) kind = (int)stsl_solver_get_kind(s);
        stsl_solver_destroy(s);
    } else {
        stsl_operator *op = NULL;
        if (stsl_operator_create_by_name(NULL, name, (stsl_shape){3, 256, 256}, &op) == STSL_OK)
            kind = (int)stsl_operator_get_kind(op);
        stsl_operator_destroy(op);
    }
    return kind;
}

int tu_help_lists_library_defaults(const char *text, int solvers, const stsl_param *skip, int n_skip)
{
    char names[1024];
    snprintf(names, sizeof names, "%s", solvers ? stsl_solver_names() : stsl_operator_names());
    int checked = 0;
    for (char *name = strtok(names, " "); name; name = strtok(NULL, " ")) {
        const int kind = kind_of_name(solvers, name);
        if (kind < 0) continue;
        stsl_param keys[64];
        int n = 0;
        TU_ASSERT_OK(solvers ? stsl_solver_param_keys(kind, keys, 64, &n) : stsl_operator_param_keys(kind, keys, 64, &n));
        for (int i = 0; i < n; i++) {
            int tools_own = 0;
            for (int k = 0; k < n_skip; k++) tools_own |= keys[i] == skip[k];
            if (tools_own) continue;
            stsl_param_bounds b;
            TU_ASSERT_OK(solvers ? stsl_solver_param_bounds(kind, keys[i], &b)
                                 : stsl_operator_param_bounds(kind, keys[i], &b));
            CU_ASSERT(tu_help_lists_param_default(text, keys[i], &b, name));
            checked++;
        }
    }
    return checked;
}

void tu_destroy_images(stsl_image *const *images, size_t n)
{
    for (size_t i = 0; i < n; i++) stsl_image_destroy(images[i]);
}

int tu_jpeg_patch_sof(unsigned char *b, size_t size, unsigned h, unsigned w)
{
    for (size_t i = 2; i + 9 < size; i++)
        if (b[i] == 0xFF && (b[i + 1] == 0xC0 || b[i + 1] == 0xC1 || b[i + 1] == 0xC2)) {
            b[i + 5] = (unsigned char)(h >> 8);
            b[i + 6] = (unsigned char)h;
            b[i + 7] = (unsigned char)(w >> 8);
            b[i + 8] = (unsigned char)w;
            return 1;
        }
    return 0;
}
