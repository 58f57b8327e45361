/* libFuzzer target: the tools' command-line argument parsing (examples/common/cli.c and
 * restore_util.c).  The input is split at NUL bytes into argv; options are consumed the way the
 * tools consume them, then the task options configure an operator and the solver options a
 * solver.  Any argv must give a usage error or a configured object, never a crash or a leak.
 * File arguments (--kernel, --mask) are dropped so the fuzzer never opens files. */
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "common/restore_util.h"

#define MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    argv[argc++] = "stsl-fuzz";
    for (size_t p = 0; p < size && argc < MAX_ARGS;) {
        argv[argc++] = buf + p;
        p += strlen(buf + p) + 1;
    }
    argv[argc] = NULL;

    cli_task_opts task;
    memset(&task, 0, sizeof task);
    ru_settings solver_settings;
    memset(&solver_settings, 0, sizeof solver_settings);
    const char *task_name = NULL, *solver_name = NULL, *val = NULL;
    char err[CLI_ERR_LEN];
    int usage = 0;
    for (int i = 1; i < argc && !usage;) {
        int r;
        if ((r = cli_match(argc, argv, &i, "--task", &val, err)) != 0) {
            if (r > 0) task_name = val; else usage = 1;
        } else if ((r = cli_match(argc, argv, &i, "--solver", &val, err)) != 0) {
            if (r > 0) solver_name = val; else usage = 1;
        } else if ((r = cli_match(argc, argv, &i, "--seed", &val, err)) != 0) {
            long long seed;
            if (r < 0 || cli_parse_int(val, 0, INT64_MAX, "--seed", &seed, err) != 0) usage = 1;
        } else if ((r = cli_match(argc, argv, &i, "--noise", &val, err)) != 0) {
            double noise;
            if (r < 0 || cli_parse_double(val, 0, 10, "--noise", &noise, err) != 0) usage = 1;
        } else if ((r = cli_take_task_option(argc, argv, &i, &task, err)) != 0) {
            if (r < 0) usage = 1;
        } else if ((r = ru_take_solver_flag(argc, argv, &i, &solver_settings, err)) != 0) {
            if (r < 0) usage = 1;
        } else {
            i++;   /* a positional argument */
        }
    }
    task.kernel_path = NULL;
    task.mask_path = NULL;
    if (!usage && task_name) {
        stsl_shape shape = {1, 8, 8};   /* small: the parser, not the operator, is fuzzed here */
        stsl_operator *op = NULL;
        cli_make_operator(NULL, task_name, shape, &task, 1, -1.0, &op, err);
        stsl_operator_destroy(op);
    }
    if (!usage && solver_name) {
        stsl_solver *solver = NULL;
        if (stsl_solver_create_by_name(NULL, solver_name, &solver) == STSL_OK)
            ru_apply_solver(solver, &solver_settings, err);
        stsl_solver_destroy(solver);
    }
    free(buf);
    return 0;
}
