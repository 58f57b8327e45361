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

/* ---- task options ---- */

typedef struct named {
    const char *name;
    int value;
} named;

static const named FILTERS[] = {{"bicubic", STSL_SR_BICUBIC}, {"box", STSL_SR_BOX}, {NULL, 0}};
static const named BOUNDARIES[] = {{"reflect", STSL_BOUNDARY_REFLECT}, {"zero", STSL_BOUNDARY_ZERO}, {NULL, 0}};
static const named LOSSES[] = {{"squared", STSL_LOSS_SQUARED}, {"l1", STSL_LOSS_L1}, {"huber", STSL_LOSS_HUBER}, {NULL, 0}};

typedef struct task_flag {
    const char *flag;
    stsl_param key;
    const named *names;   /* symbolic values, or NULL for a number */
    const char *help;     /* NULL: an alias, not listed */
} task_flag;

static const task_flag FLAGS[] = {
    {"--kernel-size", STSL_PARAM_KERNEL_SIZE, NULL, "N      blur kernel size (odd; default 61 from 256 px, scaled down below)"},
    {"--blur-sigma", STSL_PARAM_BLUR_SIGMA, NULL, "S       gaussian-blur std in pixels (default 3.0 from 256 px)"},
    {"--intensity", STSL_PARAM_MOTION_INTENSITY, NULL, "I        motion-blur trajectory intensity in [0, 1] (0.5)"},
    {"--drop-rate", STSL_PARAM_DROP_RATE, NULL, "R        random-inpaint fraction of pixels lost (0.4)"},
    {"--fraction", STSL_PARAM_IMPULSE_FRACTION, NULL, "F         salt-pepper fraction of corrupted values (0.02)"},
    {"--filter", STSL_PARAM_SR_FILTER, FILTERS, "bicubic|box  super-resolution filter (bicubic)"},
    {"--boundary", STSL_PARAM_BOUNDARY, BOUNDARIES, "reflect|zero  blur boundary (reflect)"},
    {"--alpha", STSL_PARAM_HDR_ALPHA, NULL, "A            hdr gain (2)"},
    {"--loss", STSL_PARAM_LOSS, LOSSES, "squared|l1|huber  data-fit loss (huber for salt-pepper, else squared)"},
    {"--huber-delta", STSL_PARAM_HUBER_DELTA, NULL, "D      Huber delta (0.1)"},
    {"--oversampling", STSL_PARAM_OVERSAMPLING, NULL, "S     phase-retrieval padded size / image size (2)"},
    {"--fft-threshold", STSL_PARAM_FFT_THRESHOLD, NULL, "N    kernels this wide or wider use the FFT (11)"},
    /* spellings shared with stsl-restore's task flags */
    {"--sr-filter", STSL_PARAM_SR_FILTER, FILTERS, NULL},
    {"--box-height", STSL_PARAM_BOX_HEIGHT, NULL, NULL},
    {"--box-width", STSL_PARAM_BOX_WIDTH, NULL, NULL},
    {"--box-top", STSL_PARAM_BOX_TOP, NULL, NULL},
    {"--box-left", STSL_PARAM_BOX_LEFT, NULL, NULL},
    {"--impulse", STSL_PARAM_IMPULSE_FRACTION, NULL, NULL},
    {"--impulse-fraction", STSL_PARAM_IMPULSE_FRACTION, NULL, NULL},
    {"--hdr-alpha", STSL_PARAM_HDR_ALPHA, NULL, NULL},
    {NULL, 0, NULL, NULL},
};

static int add_setting(cli_task_opts *o, const char *flag, stsl_param key, double value, char *err)
{
    if (o->n >= CLI_MAX_TASK_SETTINGS) return fail(err, "too many task options");
    o->set[o->n].flag = flag;
    o->set[o->n].key = key;
    o->set[o->n].value = value;
    o->n++;
    return 0;
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
    if ((r = cli_match(argc, argv, i, "--box", &val, err)) != 0) {
        int h, w;
        if (r < 0 || cli_parse_pair(val, "--box", &h, &w, err) != 0) return -1;
        if (add_setting(o, "--box", STSL_PARAM_BOX_HEIGHT, h, err) || add_setting(o, "--box", STSL_PARAM_BOX_WIDTH, w, err))
            return -1;
        return 1;
    }
    if ((r = cli_match(argc, argv, i, "--box-pos", &val, err)) != 0) {
        int t, l;
        if (r < 0 || cli_parse_pair(val, "--box-pos", &t, &l, err) != 0) return -1;
        if (add_setting(o, "--box-pos", STSL_PARAM_BOX_TOP, t, err) || add_setting(o, "--box-pos", STSL_PARAM_BOX_LEFT, l, err))
            return -1;
        return 1;
    }
    for (const task_flag *f = FLAGS; f->flag; f++) {
        if ((r = cli_match(argc, argv, i, f->flag, &val, err)) == 0) continue;
        if (r < 0) return -1;
        double v;
        if (f->names) {
            const named *n = f->names;
            while (n->name && strcmp(n->name, val) != 0) n++;
            if (!n->name) return fail(err, "%s: '%.64s' is not one of the accepted values", f->flag, val);
            v = n->value;
        } else if (cli_parse_double(val, -HUGE_VAL, HUGE_VAL, f->flag, &v, err) != 0) {
            return -1;
        }
        return add_setting(o, f->flag, f->key, v, err) == 0 ? 1 : -1;
    }
    return 0;
}

void cli_print_task_help(FILE *f)
{
    fprintf(f, "Tasks: %s\n%s\nTask options (a task ignores none: an option it does not use is an error):\n",
            stsl_operator_names(), CLI_SR_NOTE);
    for (const task_flag *t = FLAGS; t->flag; t++)
        if (t->help) fprintf(f, "  %s %s\n", t->flag, t->help);
    fprintf(f, "  --kernel FILE.png    motion-blur: use this kernel (grey, square, odd size) instead of a random one\n"
               "  --box HxW            box-inpaint box size (default half the image side)\n"
               "  --box-pos TOPxLEFT   box-inpaint box position (default centred)\n"
               "  --mask FILE.png      mask-inpaint mask, image-sized, white = observed, black = missing\n");
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
        if (stsl_operator_get_kind(op) != STSL_OP_MOTION_BLUR) {
            fail(err, "--kernel applies to motion-blur only");
            rc = CLI_EXIT_USAGE;
            goto done;
        }
        if (load_grey01(ctx, o->kernel_path, &img, err) != 0) goto done;
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
        if (stsl_operator_get_kind(op) != STSL_OP_MASK_INPAINT) {
            fail(err, "--mask applies to mask-inpaint only");
            rc = CLI_EXIT_USAGE;
            goto done;
        }
        if (load_grey01(ctx, o->mask_path, &img, err) != 0) goto done;
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
