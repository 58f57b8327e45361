/*
 * cli.h -- command-line helpers shared by the tools (stsl-degrade, stsl-restore, stsl-bench,
 * bench-operators): option matching and value parsing, the task options that configure a
 * measurement operator (with kernels and masks from PNG files), and image load/save with
 * one-line error messages.
 *
 * Every function reports failure through its return value and one line in `err` (CLI_ERR_LEN,
 * no trailing newline); nothing here prints except the help text.
 */
#ifndef STSL_CLI_H
#define STSL_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "stsl.h"

#define CLI_ERR_LEN 512
#define CLI_MAX_TASK_SETTINGS 32

/* Exit statuses of the tools (DESIGN.md section 5). */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

/* The tools' messages: one line on stderr, "PROGRAM: message" (PROGRAM as set by
 * cli_set_program, at the start of main; "stsl" before).  cli_usage_error adds
 * " (see PROGRAM --help)" and returns CLI_EXIT_USAGE; cli_failure returns CLI_EXIT_FAIL. */
void cli_set_program(const char *name);
const char *cli_program(void);
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int cli_failure(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The restoring tools' allocator policy (glibc only; a no-op elsewhere): keep freed memory in the
 * process instead of returning it to the kernel after every network call.  libtorch frees all of a
 * VJP's activations at its end; with glibc's defaults the heap is then trimmed (or the blocks
 * unmapped) and the next call faults every page back in, 2 000+ page faults per DPS step at batch 8,
 * about a tenth of the step (docs/peer-bench.md).  Sets M_MMAP_THRESHOLD to 32 MiB and
 * M_TRIM_THRESHOLD to 256 MiB.  A program, not the library, owns this choice: libstsl itself never
 * changes the process's allocator.  Skipped when GLIBC_TUNABLES or STSL_TOOL_MALLOC=system is set
 * (the user's choice wins).  Returns 1 when applied. */
int cli_tune_malloc(void);
/* The start of a restoring tool's main: cli_tune_malloc, cli_set_program(program), then -h/--help
 * or --version anywhere on the line (the first one seen wins): help() or "PROGRAM (libstsl
 * VERSION)" goes to stdout and 1 is returned (exit with CLI_EXIT_OK); 0 when neither is there. */
int cli_start(const char *program, int argc, char **argv, void (*help)(void));

/* If argv[*i] is `name` ("--name V" or "--name=V"): store the value in *val, advance *i past it
 * and return 1.  0 when argv[*i] is another argument; -1 when the value is missing (err set). */
int cli_match(int argc, char **argv, int *i, const char *name, const char **val, char *err);

/* Strict number parsing with a range: 0 on success, -1 with err naming `what`. */
int cli_parse_int(const char *s, long long min, long long max, const char *what, long long *out, char *err);
int cli_parse_double(const char *s, double min, double max, const char *what, double *out, char *err);
/* "AxB" (e.g. --box 64x48): two non-negative integers. */
int cli_parse_pair(const char *s, const char *what, int *a, int *b, char *err);

/* ---- options named after library parameters: "--NAME V" or "--NAME=V", NAME a key's name or
 * alias (stsl_param_name, stsl_param_aliases), V a number or one of the key's value names ---- */

/* Which keys an option set takes (1) */
typedef int (*cli_param_filter)(stsl_param key);
/* If argv[*i] is such an option for a key `want` takes: the key, its value and the flag as typed
 * ("--K", into flag), *i advanced, 1.  0 when it is not; -1 on a missing or bad value (err). */
int cli_take_param(int argc, char **argv, int *i, cli_param_filter want, char *flag, size_t flag_size,
                   stsl_param *key, double *value, char *err);
/* A value of key: one of its value names, or a finite number; -1 with err naming `flag` */
int cli_parse_param_value(stsl_param key, const char *flag, const char *val, double *out, char *err);
/* "adam|scaled": the key's value names ("" when it has none) */
void cli_param_value_names(stsl_param key, char *buf, size_t n);
/* A value as the help shows it: its name, or %g */
void cli_format_param_value(stsl_param key, int is_integer, double v, char *buf, size_t n);

/* An option that sets a library parameter, as given. */
typedef struct cli_setting {
    char flag[64];   /* as typed: "--K", "--impulse" */
    stsl_param key;
    double value;
} cli_setting;
/* Append one to set[0 .. *n) of room `cap`: 0, or -1 with "too many <what>" in err. */
int cli_add_setting(cli_setting *set, int *n, int cap, const char *flag, stsl_param key, double value,
                    const char *what, char *err);

/* Defaults grouped by value for the help: "50 (ddim, stsl); 1000 (dps)". */
#define CLI_MAX_GROUPS 24
typedef struct cli_groups {
    int n;
    struct {
        char value[48];
        char who[256];
    } item[CLI_MAX_GROUPS];
} cli_groups;
void cli_group_add(cli_groups *g, const char *value, const char *who);
/* "  --name ARG   help (also --alias)" and, when `defaults` has any, a "default: ..." line */
void cli_print_param(FILE *f, stsl_param key, int is_integer, const cli_groups *defaults);
/* The keys of one kind of object (stsl_operator_param_keys, stsl_solver_param_keys) */
typedef stsl_status (*cli_kind_keys)(int kind, stsl_param *keys, int cap, int *n);
/* A key's defaults for the help, grouped, and whether it is an integer key */
typedef void (*cli_key_defaults)(stsl_param key, cli_groups *g, int *is_integer);
/* cli_print_param for every key that some kind 0..last_kind uses and `want` takes, in key order,
 * with the defaults `defaults_of` gives. */
void cli_print_params(FILE *f, int last_kind, cli_kind_keys keys_of, cli_param_filter want,
                      cli_key_defaults defaults_of);

/* Task (operator) options as given on the command line. */
typedef struct cli_task_opts {
    cli_setting set[CLI_MAX_TASK_SETTINGS];
    int n;
    const char *kernel_path;   /* --kernel FILE.png (motion-blur) */
    const char *mask_path;     /* --mask FILE.png (mask-inpaint) */
} cli_task_opts;

/* Consume one task option at argv[*i]: 1 consumed (and *i advanced), 0 not a task option,
 * -1 bad value (err set; a usage error).  Accepted: every operator parameter but the seed and
 * the noise by its library name or alias (--kernel-size, --filter, --sr-filter, ...), and
 * --box HxW, --box-pos TOPxLEFT, --kernel FILE, --mask FILE. */
int cli_take_task_option(int argc, char **argv, int *i, cli_task_opts *o, char *err);
/* Said wherever the tasks are listed: super-resolution needs sizes divisible by its factor. */
#define CLI_SR_NOTE                                                                              \
    "  (sr2, sr4, sr8 need height and width divisible by 2, 4, 8: the bundled 28x28 models\n"   \
    "   take sr2 and sr4; sr8 fails on them, 28 is not divisible by 8)\n"
/* The default of an operator key for every task (256x256 images), grouped; returns 1 when the key
 * is an integer. */
int cli_task_defaults(stsl_param key, cli_groups *g);
/* --noise SIGMA, in the library's bounds of STSL_PARAM_NOISE_SIGMA */
int cli_parse_noise(const char *val, double *out, char *err);
/* Help text for the task options and the list of tasks. */
void cli_print_task_help(FILE *f);

/* Create the operator for `task` on `shape`: seed (masks, kernels), noise sigma (< 0 keeps the
 * operator's default), task options, kernel and mask files; then prepare it.
 * Returns CLI_EXIT_OK, CLI_EXIT_USAGE (unknown task, option refused by the operator) or
 * CLI_EXIT_FAIL (anything else), with err set. */
int cli_make_operator(stsl_context *ctx, const char *task, stsl_shape shape, const cli_task_opts *o,
                      uint64_t seed, double noise, stsl_operator **out, char *err);

/* The extension of the file name in `path` (".png"; "" when none). */
const char *cli_ext_of(const char *path);
/* The directory a file `path` would be written into ("." for a bare name, "/" at the root). */
void cli_dir_of(const char *path, char *buf, size_t n);
/* 1 when `path` ends in .png, .jpg or .jpeg (any case): the names the tools read and write. */
int cli_is_image_name(const char *path);

/* Load (channels 0 keeps the file's) / save (format from the extension) with err set. */
int cli_load_image(stsl_context *ctx, const char *path, int channels, stsl_image **out, char *err);
int cli_save_image(stsl_context *ctx, const stsl_image *img, const char *path, char *err);

#endif
