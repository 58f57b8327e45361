/*
 * stsl-degrade INPUT OUTPUT --task TASK [--noise SIGMA] [--seed N] [task options]
 *
 * Simulates a measurement y = A x + noise of an image and writes it as an image: same size for
 * blur / inpainting / noise tasks, smaller for super-resolution, and for phase-retrieval the
 * Fourier magnitude (DC in the centre) shown as log(1 + |y|) scaled to the image range.
 * Exit status: 0 success, 2 bad usage, 1 any other failure, with one line on stderr.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "stsl.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: stsl-degrade INPUT OUTPUT --task TASK [--noise SIGMA] [--seed N] [task options]\n\n"
               "Degrades INPUT (PNG or JPEG) with a measurement operator and writes OUTPUT (.png or .jpg).\n\n"
               "  --task TASK     the degradation (see Tasks)\n"
               "  --seed N        seed of the noise, the random mask and the motion kernel (default 0)\n"
               "  --help          this text\n"
               "  --version       the library version\n");
    cli_groups noise = {0};
    cli_task_defaults(STSL_PARAM_NOISE_SIGMA, &noise);
    cli_print_param(f, STSL_PARAM_NOISE_SIGMA, 0, &noise);
    fprintf(f, "\n");
    cli_print_task_help(f);
    fprintf(f, "\nSuper-resolution writes the small image; phase-retrieval writes log(1 + |F|) of the\n"
               "magnitude (DC centred), scaled so its maximum is white.\n");
}

/* log(1 + y) per image, scaled to [-1, 1] by its maximum: a viewable magnitude. */
static void magnitude_view(float *y, size_t n)
{
    double mx = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, log1p(fmax(0.0, y[i])));
    for (size_t i = 0; i < n; i++) y[i] = mx > 0 ? (float)(2.0 * log1p(fmax(0.0, y[i])) / mx - 1.0) : -1.0f;
}

int main(int argc, char **argv)
{
    cli_set_program("stsl-degrade");
    char err[CLI_ERR_LEN] = "";
    const char *pos[2] = {NULL, NULL}, *task = NULL, *val;
    int npos = 0;
    double noise = -1;
    long long seed = 0;
    cli_task_opts topts;
    memset(&topts, 0, sizeof topts);
    for (int i = 1; i < argc;) {
        int r;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return CLI_EXIT_OK;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("stsl-degrade (libstsl %s)\n", stsl_version());
            return CLI_EXIT_OK;
        }
        if ((r = cli_match(argc, argv, &i, "--task", &val, err)) != 0) {
            if (r < 0) return cli_usage_error("%s", err);
            task = val;
        } else if ((r = cli_match(argc, argv, &i, "--noise", &val, err)) != 0) {
            if (r < 0 || cli_parse_noise(val, &noise, err) != 0) return cli_usage_error("%s", err);
        } else if ((r = cli_match(argc, argv, &i, "--seed", &val, err)) != 0) {
            if (r < 0 || cli_parse_int(val, 0, INT64_MAX, "--seed", &seed, err) != 0) return cli_usage_error("%s", err);
        } else if ((r = cli_take_task_option(argc, argv, &i, &topts, err)) != 0) {
            if (r < 0) return cli_usage_error("%s", err);
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            return cli_usage_error("unknown option '%.64s'", argv[i]);
        } else {
            if (npos == 2) return cli_usage_error("too many arguments: expected INPUT OUTPUT");
            pos[npos++] = argv[i++];
        }
    }
    if (npos < 2) return cli_usage_error("expected INPUT OUTPUT");
    if (!task) return cli_usage_error("--task TASK is required");
    if (!cli_is_image_name(pos[1])) {   /* before any work, as stsl-restore */
        return cli_usage_error("OUTPUT '%.256s' must end in .png, .jpg or .jpeg", pos[1]);
    }

    stsl_context *ctx = NULL;
    stsl_image *in = NULL, *out = NULL;
    stsl_operator *op = NULL;
    int rc = CLI_EXIT_FAIL;
    if (stsl_context_create(&ctx) != STSL_OK) return cli_failure("cannot create a context");
    if (cli_load_image(ctx, pos[0], 0, &in, err) != 0) goto done;
    stsl_shape shape = {in->channels, in->height, in->width};
    rc = cli_make_operator(ctx, task, shape, &topts, (uint64_t)seed, noise, &op, err);
    if (rc != CLI_EXIT_OK) goto done;
    rc = CLI_EXIT_FAIL;
    stsl_shape ys;
    stsl_status st = stsl_operator_output_shape(op, &ys);
    if (st == STSL_OK) st = stsl_image_create(ys.channels, ys.height, ys.width, &out);
    if (st != STSL_OK) {
        snprintf(err, sizeof err, "measurement image: %s", stsl_strerror(st));
        goto done;
    }
    if ((st = stsl_operator_measure(op, in->data, out->data, 1, (uint64_t)seed)) != STSL_OK) {
        snprintf(err, sizeof err, "task %.64s: %s", task, stsl_operator_last_error(op));
        goto done;
    }
    if (stsl_operator_get_kind(op) == STSL_OP_PHASE_RETRIEVAL)
        magnitude_view(out->data, (size_t)ys.channels * ys.height * ys.width);
    if (cli_save_image(ctx, out, pos[1], err) != 0) goto done;
    rc = CLI_EXIT_OK;
done:
    if (rc != CLI_EXIT_OK) cli_failure("%s", err);
    stsl_operator_destroy(op);
    stsl_image_destroy(in);
    stsl_image_destroy(out);
    stsl_context_destroy(ctx);
    return rc;
}
