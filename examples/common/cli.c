/*
 * cli.c -- see cli.h.
 */
#include "common/cli.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int fail(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, CLI_ERR_LEN, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *g_program = "stsl";

void cli_set_program(const char *name)
{
    if (name && *name) g_program = name;
}

const char *cli_program(void) { return g_program; }

static int report(int status, const char *tail, const char *fmt, va_list ap)
{
    fprintf(stderr, "%s: ", g_program);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "%s\n", tail);
    return status;
}

int cli_usage_error(const char *fmt, ...)
{
    char tail[128];
    snprintf(tail, sizeof tail, " (see %s --help)", g_program);
    va_list ap;
    va_start(ap, fmt);
    int rc = report(CLI_EXIT_USAGE, tail, fmt, ap);
    va_end(ap);
    return rc;
}

int cli_failure(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = report(CLI_EXIT_FAIL, "", fmt, ap);
    va_end(ap);
    return rc;
}

int cli_tune_malloc(void)
{
#ifdef __GLIBC__
    const char *own = getenv("STSL_TOOL_MALLOC");
    if (getenv("GLIBC_TUNABLES") || (own && strcmp(own, "system") == 0)) return 0;
    /* 32 MiB is glibc's ceiling for the mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX) */
    return mallopt(M_MMAP_THRESHOLD, 32 << 20) && mallopt(M_TRIM_THRESHOLD, 256 << 20);
#else
    return 0;
#endif
}

int cli_start(const char *program, int argc, char **argv, void (*help)(void))
{
    cli_tune_malloc();   /* before libtorch allocates anything */
    cli_set_program(program);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            help();
            return 1;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("%s (libstsl %s)\n", program, stsl_version());
            return 1;
        }
    }
    return 0;
}

int cli_match(int argc, char **argv, int *i, const char *name, const char **val, char *err)
{
    const char *arg = argv[*i];
    size_t len = strlen(name);
    if (strcmp(arg, name) == 0) {
        if (*i + 1 >= argc) return fail(err, "%s needs a value", name);
        *val = argv[*i + 1];
        *i += 2;
        return 1;
    }
    if (strncmp(arg, name, len) == 0 && arg[len] == '=') {
        *val = arg + len + 1;
        *i += 1;
        return 1;
    }
    return 0;
}

int cli_parse_int(const char *s, long long min, long long max, const char *what, long long *out, char *err)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno) return fail(err, "%s: '%.64s' is not an integer", what, s);
    if (v < min || v > max) return fail(err, "%s: %lld is outside [%lld, %lld]", what, v, min, max);
    *out = v;
    return 0;
}

int cli_parse_double(const char *s, double min, double max, const char *what, double *out, char *err)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v)) return fail(err, "%s: '%.64s' is not a number", what, s);
    if (v < min || v > max) return fail(err, "%s: %g is outside [%g, %g]", what, v, min, max);
    *out = v;
    return 0;
}

int cli_parse_pair(const char *s, const char *what, int *a, int *b, char *err)
{
    char *end = NULL;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (end == s || (*end != 'x' && *end != 'X') || errno || x < 0 || x > 1000000)
        return fail(err, "%s: '%.64s' is not of the form AxB", what, s);
    const char *p = end + 1;
    long y = strtol(p, &end, 10);
    if (end == p || *end || errno || y < 0 || y > 1000000)
        return fail(err, "%s: '%.64s' is not of the form AxB", what, s);
    *a = (int)x;
    *b = (int)y;
    return 0;
}

/* ---- options named after library parameters ---- */

int cli_parse_param_value(stsl_param key, const char *flag, const char *val, double *out, char *err)
{
    int64_t named;
    if (stsl_param_value_from_name(key, val, &named) == STSL_OK) {
        *out = (double)named;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    double v = strtod(val, &end);
    if (!*val || *end || errno || !isfinite(v)) {
        char names[256];
        cli_param_value_names(key, names, sizeof names);
        return *names ? fail(err, "%s: '%.64s' is not a number or one of %s", flag, val, names)
                      : fail(err, "%s: '%.64s' is not a number", flag, val);
    }
    *out = v;
    return 0;
}

int cli_take_param(int argc, char **argv, int *i, cli_param_filter want, char *flag, size_t flag_size,
                   stsl_param *key, double *value, char *err)
{
    const char *arg = argv[*i];
    if (strncmp(arg, "--", 2) != 0) return 0;
    char name[64];
    size_t len = strcspn(arg + 2, "=");
    if (len == 0 || len >= sizeof name) return 0;
    memcpy(name, arg + 2, len);
    name[len] = '\0';
    stsl_param k;
    if (stsl_param_from_name(name, &k) != STSL_OK || !want(k)) return 0;
    snprintf(flag, flag_size, "--%s", name);
    const char *val;
    if (arg[2 + len] == '=') {
        val = arg + 2 + len + 1;
        *i += 1;
    } else {
        if (*i + 1 >= argc) return fail(err, "%s needs a value", flag);
        val = argv[*i + 1];
        *i += 2;
    }
    if (cli_parse_param_value(k, flag, val, value, err) != 0) return -1;
    *key = k;
    return 1;
}

void cli_param_value_names(stsl_param key, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int64_t v = -1; v < 64 && used < n; v++) {
        const char *name = stsl_param_value_name(key, v);
        if (name) used += (size_t)snprintf(buf + used, n - used, "%s%s", used ? "|" : "", name);
    }
}

void cli_format_param_value(stsl_param key, int is_integer, double v, char *buf, size_t n)
{
    const char *name = is_integer ? stsl_param_value_name(key, (int64_t)v) : NULL;
    if (name) snprintf(buf, n, "%s", name);
    else snprintf(buf, n, "%g", v);
}

void cli_group_add(cli_groups *g, const char *value, const char *who)
{
    int k = 0;
    while (k < g->n && strcmp(g->item[k].value, value) != 0) k++;
    if (k == g->n) {
        if (g->n >= CLI_MAX_GROUPS) return;
        snprintf(g->item[k].value, sizeof g->item[k].value, "%s", value);
        g->item[k].who[0] = '\0';
        g->n++;
    }
    size_t used = strlen(g->item[k].who);
    snprintf(g->item[k].who + used, sizeof g->item[k].who - used, "%s%s", used ? ", " : "", who);
}

void cli_print_param(FILE *f, stsl_param key, int is_int, const cli_groups *defaults)
{
    char arg[160], flag[256];
    cli_param_value_names(key, arg, sizeof arg);
    snprintf(flag, sizeof flag, "--%s %s", stsl_param_name(key), *arg ? arg : is_int ? "N" : "X");
    if (strlen(flag) > 22) fprintf(f, "  %s\n  %-22s %s", flag, "", stsl_param_help(key));
    else fprintf(f, "  %-22s %s", flag, stsl_param_help(key));
    /* the other spellings, as flags */
    char aliases[128];
    snprintf(aliases, sizeof aliases, "%s", stsl_param_aliases(key));
    int first = 1;
    for (char *a = strtok(aliases, " "); a; a = strtok(NULL, " "), first = 0) fprintf(f, "%s--%s", first ? " (also " : " ", a);
    fprintf(f, "%s\n", first ? "" : ")");
    if (defaults && defaults->n) {
        fprintf(f, "  %-22s default:", "");
        for (int k = 0; k < defaults->n; k++)
            fprintf(f, "%s %s (%s)", k ? ";" : "", defaults->item[k].value, defaults->item[k].who);
        fprintf(f, "\n");
    }
}

/* ---- task options ---- */

/* Operator keys a task option sets: all but the seed and the noise, which the tools take as
 * --seed and --noise of their own (they also seed the sampler / apply to every task). */
static int is_task_key(stsl_param key)
{
    return (int)key >= 1 && (int)key < 100 && key != STSL_PARAM_SEED && key != STSL_PARAM_NOISE_SIGMA;
}

int cli_add_setting(cli_setting *set, int *n, int cap, const char *flag, stsl_param key, double value,
                    const char *what, char *err)
{
    if (*n >= cap) return fail(err, "too many %s", what);
    snprintf(set[*n].flag, sizeof set[*n].flag, "%s", flag);
    set[*n].key = key;
    set[*n].value = value;
    (*n)++;
    return 0;
}

static int add_setting(cli_task_opts *o, const char *flag, stsl_param key, double value, char *err)
{
    return cli_add_setting(o->set, &o->n, CLI_MAX_TASK_SETTINGS, flag, key, value, "task options", err);
}

/* --box HxW, --box-pos TOPxLEFT: `flag` sets two keys; as cli_take_task_option */
static int take_pair(int argc, char **argv, int *i, cli_task_opts *o, const char *flag, stsl_param first,
                     stsl_param second, char *err)
{
    const char *val;
    int a, b, r = cli_match(argc, argv, i, flag, &val, err);
    if (r == 0) return 0;
    if (r < 0 || cli_parse_pair(val, flag, &a, &b, err) != 0) return -1;
    if (add_setting(o, flag, first, a, err) || add_setting(o, flag, second, b, err)) return -1;
    return 1;
}

int cli_take_task_option(int argc, char **argv, int *i, cli_task_opts *o, char *err)
{
    const char *val;
    int r;
    if ((r = cli_match(argc, argv, i, "--kernel", &val, err)) != 0) {
        if (r > 0) o->kernel_path = val;
        return r;
    }
    if ((r = cli_match(argc, argv, i, "--mask", &val, err)) != 0) {
        if (r > 0) o->mask_path = val;
        return r;
    }
    if ((r = take_pair(argc, argv, i, o, "--box", STSL_PARAM_BOX_HEIGHT, STSL_PARAM_BOX_WIDTH, err)) != 0)
        return r;
    if ((r = take_pair(argc, argv, i, o, "--box-pos", STSL_PARAM_BOX_TOP, STSL_PARAM_BOX_LEFT, err)) != 0)
        return r;
    char flag[64];
    stsl_param key;
    double v;
    if ((r = cli_take_param(argc, argv, i, is_task_key, flag, sizeof flag, &key, &v, err)) <= 0) return r;
    return add_setting(o, flag, key, v, err) == 0 ? 1 : -1;
}

int cli_task_defaults(stsl_param key, cli_groups *g)
{
    int is_int = 0;
    char names[1024];
    snprintf(names, sizeof names, "%s", stsl_operator_names());
    for (char *task = strtok(names, " "); task; task = strtok(NULL, " ")) {
        stsl_operator *op = NULL;
        stsl_param_bounds b;
        char value[48];
        if (stsl_operator_create_by_name(NULL, task, (stsl_shape){3, 256, 256}, &op) != STSL_OK) continue;
        if (stsl_operator_param_bounds(stsl_operator_get_kind(op), key, &b) == STSL_OK) {
            cli_format_param_value(key, b.is_integer, b.default_value, value, sizeof value);
            cli_group_add(g, value, task);
            is_int = b.is_integer;
        }
        stsl_operator_destroy(op);
    }
    return is_int;
}

int cli_parse_noise(const char *val, double *out, char *err)
{
    stsl_param_bounds b;
    if (stsl_operator_param_bounds(STSL_OP_IDENTITY, STSL_PARAM_NOISE_SIGMA, &b) != STSL_OK)
        return fail(err, "--noise: the library has no noise parameter");
    return cli_parse_double(val, b.min, b.max, "--noise", out, err);
}

void cli_print_params(FILE *f, int last_kind, cli_kind_keys keys_of, cli_param_filter want,
                      cli_key_defaults defaults_of)
{
    unsigned char used[256] = {0};
    for (int kind = 0; kind <= last_kind; kind++) {
        stsl_param keys[64];
        int n = 0;
        if (keys_of(kind, keys, 64, &n) != STSL_OK) continue;
        for (int k = 0; k < n && k < 64; k++)
            if ((int)keys[k] >= 0 && (int)keys[k] < 256) used[keys[k]] = 1;
    }
    int shown = 0;
    for (int key = 0; key < 256 && shown < 64; key++) {
        if (!used[key] || !want((stsl_param)key)) continue;
        cli_groups g = {0};
        int is_int = 0;
        defaults_of((stsl_param)key, &g, &is_int);
        cli_print_param(f, (stsl_param)key, is_int, &g);
        shown++;
    }
}

static stsl_status operator_keys(int kind, stsl_param *keys, int cap, int *n)
{
    return stsl_operator_param_keys((stsl_operator_kind)kind, keys, cap, n);
}

static void task_defaults(stsl_param key, cli_groups *g, int *is_int) { *is_int = cli_task_defaults(key, g); }

void cli_print_task_help(FILE *f)
{
    fprintf(f, "Tasks: %s\n%s\nTask options (a task ignores none: an option it does not use is an error;\n"
               "defaults for a 256x256 image, per task):\n",
            stsl_operator_names(), CLI_SR_NOTE);
    cli_print_params(f, STSL_OP_CONVOLVE, operator_keys, is_task_key, task_defaults);
    fprintf(f, "  --kernel FILE.png      motion-blur: use this kernel (grey, square, odd size) instead of a random one\n"
               "  --box HxW              box-inpaint box size (--box-height, --box-width)\n"
               "  --box-pos TOPxLEFT     box-inpaint box position (--box-top, --box-left; default centred)\n"
               "  --mask FILE.png        mask-inpaint mask, image-sized, white = observed, black = missing\n");
}

const char *cli_ext_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(path, '.');
    return dot && (!slash || dot > slash) ? dot : "";
}

void cli_dir_of(const char *path, char *buf, size_t n)
{
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(buf, n, ".");
    else if (slash == path) snprintf(buf, n, "/");
    else snprintf(buf, n, "%.*s", (int)(slash - path), path);
}

int cli_is_image_name(const char *path)
{
    const char *e = cli_ext_of(path);
    return !strcasecmp(e, ".png") || !strcasecmp(e, ".jpg") || !strcasecmp(e, ".jpeg");
}

int cli_load_image(stsl_context *ctx, const char *path, int channels, stsl_image **out, char *err)
{
    stsl_status st = stsl_image_load(ctx, path, channels, out);
    if (st != STSL_OK) {
        const char *d = ctx ? stsl_context_last_error(ctx) : "";
        return fail(err, "cannot load '%.256s': %s", path, *d ? d : stsl_strerror(st));
    }
    return 0;
}

int cli_save_image(stsl_context *ctx, const stsl_image *img, const char *path, char *err)
{
    stsl_status st = stsl_image_save(ctx, img, path, STSL_FORMAT_AUTO, 0, 0);
    if (st != STSL_OK) {
        const char *d = ctx ? stsl_context_last_error(ctx) : "";
        return fail(err, "cannot save '%.256s': %s", path, *d ? d : stsl_strerror(st));
    }
    return 0;
}

/* Grey PNG in [-1, 1] -> [0, 1]. */
static int load_grey01(stsl_context *ctx, const char *path, stsl_image **img, char *err)
{
    if (cli_load_image(ctx, path, 1, img, err) != 0) return -1;
    size_t n = (size_t)(*img)->height * (*img)->width;
    for (size_t k = 0; k < n; k++) (*img)->data[k] = 0.5f * ((*img)->data[k] + 1.0f);
    return 0;
}

/* --kernel, --mask: load_grey01 of `path`, for an operator of `kind` only.  CLI_EXIT_OK,
 * CLI_EXIT_USAGE (another kind) or CLI_EXIT_FAIL, with err set. */
static int load_for_kind(stsl_context *ctx, const stsl_operator *op, stsl_operator_kind kind,
                         const char *flag, const char *path, stsl_image **img, char *err)
{
    if (stsl_operator_get_kind(op) != kind) {
        fail(err, "%s applies to %s only", flag,
             kind == STSL_OP_MOTION_BLUR ? "motion-blur" : "mask-inpaint");
        return CLI_EXIT_USAGE;
    }
    return load_grey01(ctx, path, img, err) != 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

int cli_make_operator(stsl_context *ctx, const char *task, stsl_shape shape, const cli_task_opts *o,
                      uint64_t seed, double noise, stsl_operator **out, char *err)
{
    stsl_operator *op = NULL;
    stsl_image *img = NULL;
    int rc = CLI_EXIT_FAIL;
    *out = NULL;
    stsl_status st = stsl_operator_create_by_name(ctx, task, shape, &op);
    if (st != STSL_OK) {
        fail(err, "task %.64s: %s", task, stsl_context_last_error(ctx));
        /* an unknown name is a usage error; a shape the task cannot take is not */
        return st == STSL_ERR_INVALID_ARG ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    }
    if ((st = stsl_operator_set_int(op, STSL_PARAM_SEED, (int64_t)(seed & INT64_MAX))) != STSL_OK) {
        fail(err, "--seed: %s", stsl_operator_last_error(op));
        goto done;
    }
    if (noise >= 0 && (st = stsl_operator_set_float(op, STSL_PARAM_NOISE_SIGMA, noise)) != STSL_OK) {
        fail(err, "--noise %g: %s", noise, stsl_operator_last_error(op));
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    for (int k = 0; o && k < o->n; k++) {
        stsl_param_bounds b;
        stsl_param key = o->set[k].key;
        double v = o->set[k].value;
        if (stsl_operator_param_bounds(stsl_operator_get_kind(op), key, &b) != STSL_OK) {
            fail(err, "%s does not apply to task %.64s", o->set[k].flag, task);
            rc = CLI_EXIT_USAGE;
            goto done;
        }
        /* an integer value outside [min, max] is refused before the conversion to int64_t,
         * which would be undefined for values beyond its range (found by fuzz_cli) */
        if (b.is_integer && (v != floor(v) || v < b.min || v > b.max || fabs(v) >= 9.2e18)) {
            fail(err, "%s: %g is not an integer in [%g, %g]", o->set[k].flag, v, b.min, b.max);
            rc = CLI_EXIT_USAGE;
            goto done;
        }
        if (!b.is_integer && !(v >= b.min && v <= b.max)) {   /* named by its flag, not its number */
            fail(err, "%s: %g is outside [%g, %g]", o->set[k].flag, v, b.min, b.max);
            rc = CLI_EXIT_USAGE;
            goto done;
        }
        st = b.is_integer ? stsl_operator_set_int(op, key, (int64_t)v) : stsl_operator_set_float(op, key, v);
        if (st != STSL_OK) {
            fail(err, "%s: %s", o->set[k].flag, stsl_operator_last_error(op));
            rc = CLI_EXIT_USAGE;
            goto done;
        }
    }
    if (o && o->kernel_path) {
        int r = load_for_kind(ctx, op, STSL_OP_MOTION_BLUR, "--kernel", o->kernel_path, &img, err);
        if (r != CLI_EXIT_OK) {
            rc = r;
            goto done;
        }
        if (img->height != img->width || img->height % 2 == 0) {
            fail(err, "--kernel %.256s: the kernel image must be square with an odd size (it is %dx%d)",
                 o->kernel_path, (int)img->height, (int)img->width);
            goto done;
        }
        if ((st = stsl_operator_set_kernel(op, img->data, img->height)) != STSL_OK) {
            fail(err, "--kernel %.256s: %s", o->kernel_path, stsl_operator_last_error(op));
            goto done;
        }
        stsl_image_destroy(img);
        img = NULL;
    }
    if (o && o->mask_path) {
        int r = load_for_kind(ctx, op, STSL_OP_MASK_INPAINT, "--mask", o->mask_path, &img, err);
        if (r != CLI_EXIT_OK) {
            rc = r;
            goto done;
        }
        if (img->height != shape.height || img->width != shape.width) {
            fail(err, "--mask %.256s is %dx%d but the image is %dx%d", o->mask_path, (int)img->height,
                 (int)img->width, (int)shape.height, (int)shape.width);
            goto done;
        }
        if ((st = stsl_operator_set_mask(op, img->data, (size_t)img->height * img->width)) != STSL_OK) {
            fail(err, "--mask %.256s: %s", o->mask_path, stsl_operator_last_error(op));
            goto done;
        }
    } else if (stsl_operator_get_kind(op) == STSL_OP_MASK_INPAINT) {
        fail(err, "task mask-inpaint needs --mask FILE.png");
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    if ((st = stsl_operator_prepare(op)) != STSL_OK) {
        fail(err, "task %.64s: %s", task, stsl_operator_last_error(op));
        goto done;
    }
    *out = op;
    op = NULL;
    rc = CLI_EXIT_OK;
done:
    stsl_image_destroy(img);
    stsl_operator_destroy(op);
    return rc;
}
