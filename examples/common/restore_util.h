/*
 * restore_util.h -- what stsl-restore and the image benchmark (stsl-bench --task) share: finding
 * and loading the bundled models, solver options by flag name, restoring one image (degrade it
 * with the task unless it is already a measurement, run the solver), montages and image metrics.
 *
 * Every function reports failure with a non-zero return and one line of text in `err` (no
 * trailing newline); nothing here prints except the progress bar.
 */
#ifndef STSL_RESTORE_UTIL_H
#define STSL_RESTORE_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/cli.h"
#include "stsl.h"

#define RU_ERR_LEN 1024
#define RU_MAX_SETTINGS 64

/* ---- parameters given by flag ------------------------------------------------------------ */

/* Solver options are the library's solver parameters by name or alias (stsl_param_name:
 * --steps, --inner-steps or --K, --lr, --variant rmp-ve, ...), but for the seed and the progress
 * estimate, which the tools set themselves.  Task (operator) options are those of stsl-degrade:
 * common/cli.h (cli_take_task_option). */

typedef struct ru_settings {
    cli_setting item[RU_MAX_SETTINGS];
    int n;
} ru_settings;

/* If argv[*i] is a solver option ("--flag V" or "--flag=V"), parse its value into `out`, advance
 * *i past it and return 1; return 0 when it is not one; -1 on a bad value (err set). */
int ru_take_solver_flag(int argc, char **argv, int *i, ru_settings *out, char *err);
/* Set one parameter given by `flag`: a key the solver does not use, a non-integer for an integer
 * parameter or a value outside its bounds is an error naming the flag. */
int ru_set_solver_param(stsl_solver *solver, const char *flag, stsl_param key, double value,
                        char *err);
/* Set every setting on the solver (ru_set_solver_param). */
int ru_apply_solver(stsl_solver *solver, const ru_settings *s, char *err);
/* Print the solver options for --help, generated from the library: each with its help and the
 * default of every solver that uses it (and the defaults other settings change). */
void ru_print_solver_flags(FILE *file);

/* ---- models ------------------------------------------------------------------------------- */

/* 1 for the solvers whose default prior is the latent one (stsl stsl-biased psld ldps). */
int ru_solver_default_latent(const char *solver);
/* Directory of the bundled models: $STSL_MODEL_DIR, <exe>/../models, <exe>/../share/stsl/models,
 * /usr/local/share/stsl/models, /usr/share/stsl/models -- the first that holds `file`.
 * Returns 0 and fills buf, or -1 with err listing where it looked. */
int ru_find_model(const char *file, char *buf, size_t n, char *err);

typedef struct ru_models {
    stsl_score *score;
    stsl_autoencoder *ae;     /* NULL for a pixel-space prior */
    stsl_shape image;         /* shape of the images restored */
    char model_path[4096];
    char vae_path[4096];
} ru_models;

/* Load the prior (model_path NULL: the bundled default for `solver`) and, for a latent prior,
 * its autoencoder (vae_path NULL: the file named by the prior's pairs_with, next to the prior or
 * among the bundled models; missing there, an error naming it).  Returns 0, CLI_EXIT_USAGE (a
 * vae_path given for a pixel-space prior) or -1 (any other failure), err set. */
int ru_load_models(stsl_context *ctx, const char *solver, const char *model_path,
                   const char *vae_path, ru_models *m, char *err);
/* ru_load_models in two halves.  ru_find_models resolves the paths and reads what the files
 * declare (stsl_model_record_read: no network loaded, nothing run), m->image included, with
 * ru_load_models' refusals; ru_open_models then loads them (each load probes its network on
 * the declared shape), so a caller can compare its input with m->image in between. */
int ru_find_models(stsl_context *ctx, const char *solver, const char *model_path,
                   const char *vae_path, ru_models *m, char *err);
int ru_open_models(stsl_context *ctx, ru_models *m, char *err);
void ru_models_free(ru_models *m);

/* ---- one restoration ---------------------------------------------------------------------- */

typedef struct ru_job {
    const char *task;
    const char *solver;
    const cli_task_opts *task_opts;
    const ru_settings *solver_opts;
    uint64_t seed;
    double noise;              /* < 0: the operator's default */
    int measured;              /* the input is already y */
    int progress;              /* draw a progress bar on stderr */
    stsl_solver **running;     /* if non-NULL, set to the solver while it runs (for cancel) */
} ru_job;

typedef struct ru_result {
    stsl_image *measurement;   /* y as an image (SR: the small one); NULL if not image-shaped */
    stsl_image *measurement_view; /* y shown at image size (nearest upsampling or B y) */
    stsl_image *restored;
    stsl_nfe nfe;
    double seconds;            /* degrade + solve (a batch's time shared equally) */
    int batch;                 /* images in the solver run (the ledger above is per image) */
} ru_result;

/* Restore `input` (clean image of m->image shape, or with job->measured the measurement).
 * Returns 0, CLI_EXIT_USAGE (an option the task or solver refuses) or CLI_EXIT_FAIL, err set. */
int ru_restore(stsl_context *ctx, ru_models *m, const ru_job *job, const stsl_image *input,
               ru_result *res, char *err);
/* Restore n inputs in one solver run: image i is degraded with and restored from seeds[i]
 * (stsl_solver_run_seeded), the task's operator (masks, kernels) comes from job->seed.  res: n
 * results, each with the run's ledger and seconds divided by n.  On failure no result holds an
 * image (the caller may retry the inputs one by one: with --pad-batch 1 among the solver options,
 * a retried image restores exactly as it would have in the batch). */
int ru_restore_batch(stsl_context *ctx, ru_models *m, const ru_job *job,
                     const stsl_image *const *inputs, const uint64_t *seeds, int n,
                     ru_result *res, char *err);
/* 0 when `input` has the shape a restoration of m needs (image, or measurement of shape ys with
 * job->measured), else an error saying both shapes. */
int ru_check_input(const ru_models *m, const ru_job *job, stsl_shape ys, const stsl_image *input,
                   char *err);
/* The seed of an image in batch mode: a hash of (seed, name), so that an image draws the same
 * noise whatever batch, shard or neighbours it comes with, and different images draw
 * independent noise.  < 2^53 (fits STSL_PARAM_SEED). */
uint64_t ru_image_seed(uint64_t seed, const char *name);
void ru_result_free(ru_result *res);

/* ---- fitting an input to the model -------------------------------------------------------- */

typedef enum ru_fit {
    RU_FIT_NONE = 0,    /* a size mismatch is an error that says what to do */
    RU_FIT_RESIZE = 1,  /* scale to the model's size (aspect ratio not kept) */
    RU_FIT_CROP = 2     /* cut the centred window of the model's aspect ratio, then scale */
} ru_fit;

/* "cannot VERB PATH: why" into buf (n bytes), or the library's last message alone when it
 * already names PATH (so the path is never said twice). */
void ru_io_message(stsl_context *ctx, stsl_status st, const char *verb, const char *path,
                   char *buf, size_t n);

/* Resample `in` to height x width (separable linear filter, widened when shrinking so that it
 * averages); RU_FIT_CROP first restricts it to the centred window of that aspect ratio. */
int ru_fit_image(const stsl_image *in, ru_fit mode, int height, int width, stsl_image **out,
                 char *err);
/* The size and channels of a PNG or JPEG file from its header, without decoding it (channels as
 * stsl_image_load gives them: PNG transparency adds one).  Opens without blocking: a FIFO, a
 * device or a directory is refused ("not a regular file"), never waited on.  0, or -1 with err. */
int ru_image_header(const char *path, int *channels, int *height, int *width, char *err);
/* 0 when an input of file_ch x file_h x file_w fits the model `m` (as ru_load_input decides:
 * same size, or fit / measured), else -1 with ru_load_input's message. */
int ru_check_size(int file_ch, int file_h, int file_w, const ru_models *m, ru_fit fit,
                  int measured, char *err);
/* Load an input for the model `m`: channels converted to the model's; a size that differs is
 * fitted with `fit`, or (RU_FIT_NONE) an error naming the file's size and channels, the model's,
 * and the options that fit it -- found from the file's header, before it is decoded.  A file that
 * is not a regular one is refused (ru_image_header).  A measurement (measured = 1) is returned as
 * read. */
int ru_load_input(stsl_context *ctx, const char *path, const ru_models *m, ru_fit fit,
                  int measured, stsl_image **out, char *err);

/* Side-by-side montage of 1..4 images of equal channels and height (NULL entries skipped), with a
 * 2-pixel white gutter, each scaled by `scale` (nearest). */
int ru_montage(stsl_image *const *tiles, int n, int scale, stsl_image **out, char *err);

/* Monotonic seconds. */
double ru_now(void);

#endif
