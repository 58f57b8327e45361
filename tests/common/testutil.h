/*
 * testutil.h -- helpers shared by the CUnit suites.  Each test program is one process (libtorch
 * costs ~0.4 s to start, so a suite shares it) and calls stsl_test_main() from main().
 */
#ifndef STSL_TESTUTIL_H
#define STSL_TESTUTIL_H

#include <CUnit/CUnit.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "stsl.h"

typedef struct stsl_test {
    const char *name;
    void (*fn)(void);
} stsl_test;

/* Register one suite of tests (terminated by {NULL, NULL}) and run it with CUnit's basic
 * interface; prints CUnit's summary and returns the process exit code (0 iff all passed). */
int stsl_test_main(const char *suite, const stsl_test *tests);

/* Deterministic test data: uniform in [lo, hi) from the library's RNG. */
void tu_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi);
void tu_fill_normal(float *x, size_t n, uint64_t seed);
double tu_dot(const float *a, const float *b, size_t n);
double tu_max_abs_diff(const float *a, const float *b, size_t n);
/* max |a - b| / (1 + max |b|): the relative error every TorchScript tolerance is stated in */
double tu_rel_err(const float *a, const float *b, size_t n);
double tu_norm(const float *a, size_t n);
/* Path of a file under the source tree's tests/ directory (STSL_TEST_DIR or "tests"). */
const char *tu_path(const char *rel);
/* A fresh temporary directory (removed by the OS, not by the test). */
const char *tu_tmpdir(void);
/* 1 when both files exist and are byte for byte equal */
int tu_same_file(const char *a, const char *b);

/* Where a test finds what it runs; tests/run.sh sets both variables (tests/env.sh).
 * tu_tool: path of the built tool `name`, in $STSL_BIN_DIR (make's BINOUT), else in bin/.
 * tu_tool_required: 1 under tests/run.sh (STSL_BIN_DIR set), where a missing tool is a failure;
 *   0 when a suite runs on its own, where the tests that need a tool may skip.
 * tu_python: a python that imports torch: $STSL_PYTHON, else what scripts/torch_python.sh finds
 *   now; NULL when there is none. */
const char *tu_tool(const char *name);
int tu_tool_required(void);
const char *tu_python(void);

/* The device and precision the TorchScript suites run their models on: STSL_TEST_DEVICE
 * ("cpu" when unset; "cuda", "cuda:N", "auto") and STSL_TEST_PRECISION (float32, float16,
 * bfloat16; STSL_TEST_HALF=1 is float16).  `make check` leaves them unset; scripts/check-cuda.sh
 * sets them on a GPU machine. */
const char *tu_device(void);
stsl_precision tu_precision(void);
/* 1 when tu_precision() is a reduced one (float16 or bfloat16). */
int tu_half(void);
/* 1 when the suites' models run on a CUDA device (STSL_TEST_DEVICE names one and it is usable). */
int tu_on_cuda(void);
/* A context on tu_device() and tu_half(); NULL (and a message) on failure. */
stsl_context *tu_context(void);
/* The tolerance of a comparison for the device in use: `cpu` on CPU, `cuda` on CUDA in float32
 * (cuDNN may run convolutions in TF32, a 10-bit mantissa), `half` in float16 and 2.5 `half` in
 * bfloat16 on any device.  The values each suite uses are listed in docs/cuda.md. */
double tu_tol(double cpu, double cuda, double half);

/* 1 when a tool's generated --help (text) lists `flag` ("--steps") with a "default:" line that
 * has a group "VALUE (a, b, ...)" whose value is `value` and whose list holds `who` -- the form
 * examples/common/cli.c writes: "default: 50 (ddim, stsl); 1000 (dps)". */
int tu_help_lists_default(const char *text, const char *flag, const char *value, const char *who);
/* The same for parameter `key` with bounds `b`: flag --<stsl_param_name>, value its default's
 * name (named integer values) or %g; a miss is printed to stderr. */
int tu_help_lists_param_default(const char *text, stsl_param key, const stsl_param_bounds *b, const char *who);
/* For every operator name (solvers 0: stsl_operator_names) or solver name (1), every parameter its
 * kind uses but the n_skip keys in skip (those a tool sets itself): `text` lists its default for
 * that name (tu_help_lists_param_default, asserted).  Returns how many were checked. */
int tu_help_lists_library_defaults(const char *text, int solvers, const stsl_param *skip, int n_skip);

/* Assert a call returns the given status; on mismatch print the handle's message. */
#define TU_ASSERT_STATUS(expr, expected)                                                  \
    do {                                                                                   \
        stsl_status tu_st_ = (expr);                                                       \
        if (tu_st_ != (expected))                                                          \
            fprintf(stderr, "\n  %s:%d: %s returned %d (%s), expected %d\n", __FILE__,    \
                    __LINE__, #expr, (int)tu_st_, stsl_strerror(tu_st_), (int)(expected)); \
        CU_ASSERT_EQUAL(tu_st_, (expected));                                               \
    } while (0)
#define TU_ASSERT_OK(expr) TU_ASSERT_STATUS(expr, STSL_OK)

/* Destroy the images in order (NULL ones skipped, as stsl_image_destroy does): the end of a test
 * that made several, as one statement. */
void tu_destroy_images(stsl_image *const *images, size_t n);
#define TU_DESTROY_IMAGES(...)                                                               \
    tu_destroy_images((stsl_image *const[]){__VA_ARGS__},                                   \
                      sizeof((stsl_image *const[]){__VA_ARGS__}) / sizeof(stsl_image *))

/* Patch the height and width of a JPEG held in memory at its first SOF0/1/2 marker: 1, or 0 when
 * it has none. */
int tu_jpeg_patch_sof(unsigned char *b, size_t size, unsigned h, unsigned w);

/* Crafted PNG files for the decoders' size checks: the chunk CRC, a big-endian 32-bit store, and
 * a PNG of signature + IHDR (w x h, depth, colour type) + IEND with correct CRCs (45 bytes into
 * buf; returns 45). */
uint32_t tu_png_crc(const unsigned char *p, size_t n);
void tu_put_be32(unsigned char *p, uint32_t v);
size_t tu_craft_png(unsigned char *buf, uint32_t w, uint32_t h, int depth, int color_type);

#endif
