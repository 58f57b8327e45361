/*
 * shim.h -- the C interface of the TorchScript shim (private, never installed).
 *
 * The shim is the only code that sees libtorch.  It is deliberately thin: it loads a module and
 * its metadata record, answers signature questions and runs one method (forward, VJP) on host
 * float buffers (torchscript_shim.cpp); and it runs the measurement operators' maps, prepared by
 * the C code, as libtorch ops (ops.cpp, "Measurement operators" below).  Everything that is not libtorch (metadata parsing and validation, schedules,
 * the v/x0 -> eps conversion, locking) lives in C under src/.
 *
 * Conventions:
 *  - Every function returns an stsl_status (STSL_OK = 0) and never throws: each entry point
 *    catches c10::Error, std::exception and `...`.
 *  - `err` (err_size bytes, may be NULL when err_size is 0) receives a one-line message on failure:
 *    the first useful line of the exception (TorchScript tracebacks and C++ backtraces dropped).
 *  - Tensors cross as host float32 buffers, planar NCHW, with their shape as int64_t[ndim].
 *    Inputs are borrowed for the call (on CPU they are wrapped with from_blob, not copied);
 *    outputs are written into caller memory whose size the caller computed from the shape it
 *    expects; a different output shape is an error (STSL_ERR_MODEL) and nothing is written.
 *  - A module handle holds no global state; it is NOT thread-safe (the score / autoencoder
 *    handles lock around every call).  Thread count is libtorch's process-wide setting
 *    (at::set_num_threads) and is applied at every call when it differs.
 *  - Compiled only when STSL_WITH_TORCH is defined (WITH_TORCH=1); the C callers hide it otherwise.
 */
#ifndef STSL_SHIM_H
#define STSL_SHIM_H

#include <stddef.h>
#include <stdint.h>

#include "stsl.h"

/* Only src/models includes this header (its objects are compiled with STSL_SHIM_USER): every
 * other C file reaches libtorch through models/model.h. */
#if !defined(__cplusplus) && !defined(STSL_SHIM_USER)
#error "shim/shim.h is src/models' alone: include models/model.h instead"
#endif

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define STSL_SHIM_API __attribute__((visibility("hidden")))
#else
#define STSL_SHIM_API
#endif

typedef struct stsl_shim_module stsl_shim_module;

/* Name of the metadata extra file every model file carries. */
#define STSL_SHIM_META_NAME "stsl_meta.txt"
/* Largest metadata record the shim hands out (docs/models.md: 64 KiB); larger is refused. */
#define STSL_SHIM_META_MAX (64 * 1024)

/* Load a TorchScript file onto CUDA device `cuda_index`, or the CPU when it is -1 (the caller,
 * src/models, has read the device setting and resolved "auto": no string reaches the shim).
 * Every device the file's graphs fix as a constant becomes the device of the method's first
 * tensor input (a file traced on the CPU runs on CUDA, and the other way round).
 * precision: FLOAT32, or FLOAT16 / BFLOAT16 as autocast (mixed precision) around every forward
 * evaluation; the weights stay float32.  A precision the device cannot run (libtorch 1.13's CPU
 * has no float16 autocast) is STSL_ERR_BACKEND, unless float32_fallback is 1: then the module
 * runs in float32 (stsl_shim_precision says which).
 * STSL_JIT_OPTIMIZE (environment, read here): 0 runs the module's graphs unoptimised, 1 or unset
 * optimised (libtorch's default); another value is STSL_ERR_INVALID_ARG.
 * STSL_CUDNN_BENCHMARK (environment, read here): 1 or 0 sets libtorch's process-wide cuDNN
 * benchmark mode when the module goes onto CUDA, unset leaves it; another value is
 * STSL_ERR_INVALID_ARG on any device.
 * STSL_CUDA_GRAPHS (environment, read here): 1 serves a module on CUDA's repeated calls (one
 * method, one input shape) from CUDA graphs, captured on a key's third call (cuda_graphs.cpp);
 * 0 or unset does not; another value is STSL_ERR_INVALID_ARG on any device; 1 on CUDA in a build
 * without CUDA graphs is STSL_ERR_UNSUPPORTED; on the CPU it changes nothing.
 * Errors: STSL_ERR_BACKEND (CUDA not available, no such GPU, precision not supported there),
 * STSL_ERR_IO (cannot read the file), STSL_ERR_FORMAT (not a TorchScript archive),
 * STSL_ERR_MODEL (no stsl_meta.txt record, or the record is over STSL_SHIM_META_MAX). */
STSL_SHIM_API stsl_status stsl_shim_load(const char *path, int cuda_index,
                                         stsl_precision precision, int float32_fallback,
                                         stsl_shim_module **out, char *err, size_t err_size);
/* The stsl_meta.txt record of a TorchScript file, read from its archive without loading the
 * module (no code, no weights: libtorch's archive reader only), into buf (cap bytes, at least
 * STSL_SHIM_META_MAX); *len its length.  Errors as stsl_shim_load's (STSL_ERR_IO,
 * STSL_ERR_FORMAT, STSL_ERR_MODEL: no record or over STSL_SHIM_META_MAX). */
STSL_SHIM_API stsl_status stsl_shim_read_meta(const char *path, char *buf, size_t cap, size_t *len,
                                              char *err, size_t err_size);
/* Free the module and everything it holds; NULL is a no-op. */
STSL_SHIM_API void stsl_shim_free(stsl_shim_module *m);

/* The metadata record (not NUL-terminated: use len; owned by the module). */
STSL_SHIM_API const char *stsl_shim_meta(const stsl_shim_module *m, size_t *len);
/* The resolved device ("cpu", "cuda:0", ...), owned by the module. */
STSL_SHIM_API const char *stsl_shim_device(const stsl_shim_module *m);
/* The precision the module's forward evaluations run in. */
STSL_SHIM_API stsl_precision stsl_shim_precision(const stsl_shim_module *m);
/* "float32", "float16", "bfloat16" (static strings). */
STSL_SHIM_API const char *stsl_shim_precision_name(stsl_precision precision);
/* 1 when the module was frozen at load (weights inlined as constants; not done for a module whose
 * methods detach, requires_grad_ or open no_grad blocks, whose VJPs freezing would change). */
STSL_SHIM_API int stsl_shim_is_frozen(const stsl_shim_module *m);
/* What the module's CUDA graphs did ("2 captured, 340 replays, ..."), into buf (cap bytes,
 * NUL-terminated, truncated); its length, 0 when the module has none (STSL_CUDA_GRAPHS off, or
 * the CPU). */
STSL_SHIM_API size_t stsl_shim_cuda_graphs_report(const stsl_shim_module *m, char *buf, size_t cap);

/* Check that `method` exists, takes exactly `n_inputs` Tensor arguments without defaults
 * (besides self; further arguments must have defaults) and returns a Tensor.
 * STSL_ERR_MODEL with a message naming the method and its schema otherwise. */
STSL_SHIM_API stsl_status stsl_shim_check_method(stsl_shim_module *m, const char *method,
                                                 int n_inputs, char *err, size_t err_size);

/* out = method(x) or method(x, t).
 *  x: prod(x_shape[0..4)) floats, NCHW; t: x_shape[0] floats, or NULL for one-input methods.
 *  out: prod(out_shape[0..4)) floats; the method's result must have exactly out_shape.
 *  threads > 0 sets libtorch's intra-op thread count first (when it differs).
 * Runs under c10::InferenceMode (no autograd bookkeeping at all).  Errors: STSL_ERR_MODEL (the method threw, or returned a non-tensor
 * or a tensor of another shape). */
STSL_SHIM_API stsl_status stsl_shim_forward(stsl_shim_module *m, const char *method,
                                            const float *x, const int64_t x_shape[4],
                                            const float *t, float *out,
                                            const int64_t out_shape[4], int threads, char *err,
                                            size_t err_size);

/* One evaluation kept for its vector-Jacobian product (see stsl_shim_forward_graph). */
typedef struct stsl_shim_graph stsl_shim_graph;

/* out = method(x[, t]) evaluated with autograd on, the graph kept in *graph for ONE later
 * stsl_shim_graph_vjp: a solver that needs the output before it can form its cotangent (DPS:
 * eps -> x0hat -> the data-fit gradient) then pays one forward and one backward, not a forward
 * plus a full VJP.  Shapes and conventions as stsl_shim_forward.  The graph owns a copy of x
 * (the caller may reuse x at once) and references the module: free the graph, with
 * stsl_shim_graph_free, before the module.  *graph is NULL on failure.  The module is used by
 * this call only; the graph may be differentiated later (not concurrently with another call on
 * the same module: the callers' lock covers both). */
STSL_SHIM_API stsl_status stsl_shim_forward_graph(stsl_shim_module *m, const char *method,
                                                  const float *x, const int64_t x_shape[4],
                                                  const float *t, float *out,
                                                  const int64_t out_shape[4], int threads,
                                                  stsl_shim_graph **graph, char *err,
                                                  size_t err_size);
/* grad = J^T v for the evaluation kept in `graph`, v of its out_shape, grad of its x_shape.
 * The graph is spent by this call whatever it returns (a second call is STSL_ERR_INVALID_ARG);
 * free it with stsl_shim_graph_free. */
STSL_SHIM_API stsl_status stsl_shim_graph_vjp(stsl_shim_graph *graph, const float *v,
                                              float *grad, int threads, char *err,
                                              size_t err_size);
/* Releases the kept graph and its tensors; NULL is a no-op. */
STSL_SHIM_API void stsl_shim_graph_free(stsl_shim_graph *graph);

/* Vector-Jacobian product of the same method with respect to x:
 *  grad = J_method(x[, t])^T v, with v of out_shape and grad of x_shape;
 *  out (may be NULL) receives method(x[, t]) of the same evaluation.
 * Equals stsl_shim_forward_graph + stsl_shim_graph_vjp. */
STSL_SHIM_API stsl_status stsl_shim_vjp(stsl_shim_module *m, const char *method, const float *x,
                                        const int64_t x_shape[4], const float *t,
                                        const float *v, const int64_t out_shape[4], float *out,
                                        float *grad, int threads, char *err, size_t err_size);

/* 1 when libtorch reports a usable CUDA device, else 0 (never throws). */
STSL_SHIM_API int stsl_shim_cuda_available(void);

/* ---- Measurement operators as libtorch ops (shim/ops.cpp; issue 27 item 2) ----
 *
 * The maps of src/operators, built once from what the C code prepared (kernels, index maps,
 * resampling tables, masks) and run with libtorch ops on CUDA device `cuda_index`, or on the CPU
 * (-1: how the library's tests compare them with the C code).  Conventions as above: host float32
 * buffers in and out, planar NCHW, `batch` samples of the per-sample shapes given at creation;
 * status codes, one-line messages, nothing thrown.  An op keeps device buffers for its inputs
 * (grown to the largest batch seen): it is NOT thread-safe (src/models locks around every call).
 * Creation errors: STSL_ERR_BACKEND (no CUDA, no such GPU), STSL_ERR_NOMEM. */
typedef struct stsl_shim_op stsl_shim_op;

/* y = x (denoise, salt-and-pepper), or, with mask (C*H*W values), y = mask . x (inpainting). */
STSL_SHIM_API stsl_status stsl_shim_op_pointwise(int cuda_index, const int64_t shape[3],
                                                 const float *mask, stsl_shim_op **out, char *err,
                                                 size_t err_size);
/* y = clip(alpha x, -1, 1) (hdr; nonlinear: its VJP is alpha v where |alpha x| < 1, else 0). */
STSL_SHIM_API stsl_status stsl_shim_op_clip(int cuda_index, const int64_t shape[3], float alpha,
                                            stsl_shim_op **out, char *err, size_t err_size);
/* Blur: each plane padded to (H + k - 1) x (W + k - 1) through the index maps rows / cols
 * (padded index -> source index, or -1 for zero), then cross-correlated with a k x k kernel
 * (weights: k*k floats), or, when separable, with the k taps `weights` along both axes.
 * fft_n1, fft_n2 > 0 (at least the padded size; not with separable): through real FFTs of that
 * size (large kernels), else conv2d. */
STSL_SHIM_API stsl_status stsl_shim_op_conv(int cuda_index, const int64_t shape[3], int k,
                                            int separable, const float *weights, const int *rows,
                                            const int *cols, int fft_n1, int fft_n2,
                                            stsl_shim_op **out, char *err, size_t err_size);
/* Resampling: each plane X (H x W) becomes V X Hm^T (out_h x out_w), V and Hm given as
 * tables: row i of V has taps_v (index, weight) pairs at idx_v / w_v + i * taps_v (repeated
 * indices add up); the same for Hm. */
STSL_SHIM_API stsl_status stsl_shim_op_resample(int cuda_index, const int64_t shape[3], int out_h,
                                                int out_w, int taps_v, const int *idx_v,
                                                const float *w_v, int taps_h, const int *idx_h,
                                                const float *w_h, stsl_shim_op **out, char *err,
                                                size_t err_size);
/* Fourier magnitude: each plane placed at (top, left) in an n1 x n2 zero canvas, orthonormal 2-D
 * DFT, modulus, fftshifted (nonlinear: phase retrieval). */
STSL_SHIM_API stsl_status stsl_shim_op_phase(int cuda_index, const int64_t shape[3], int n1,
                                             int n2, int top, int left, stsl_shim_op **out,
                                             char *err, size_t err_size);
/* y = M x on each flattened sample, M: rows x (C*H*W) floats, row-major. */
STSL_SHIM_API stsl_status stsl_shim_op_matrix(int cuda_index, const int64_t shape[3], int rows,
                                              const float *matrix, stsl_shim_op **out, char *err,
                                              size_t err_size);

/* What stsl_shim_op_apply computes. */
typedef enum stsl_shim_op_mode {
    STSL_SHIM_OP_FORWARD = 0,   /* out = A x                      (v unused) */
    STSL_SHIM_OP_ADJOINT = 1,   /* out = A^T v, linear ops only   (x unused) */
    STSL_SHIM_OP_VJP = 2        /* out = J_A(x)^T v               (linear: A^T v) */
} stsl_shim_op_mode;
/* One call on `batch` samples: x and out / v of the input and output shapes as mode says.
 * threads > 0 sets libtorch's thread count first (the CPU).  Inputs are copied to the op's
 * device once, the result back once.  Errors: STSL_ERR_INVALID_ARG (NULL, bad mode),
 * STSL_ERR_NOMEM, STSL_ERR_BACKEND (libtorch failed). */
STSL_SHIM_API stsl_status stsl_shim_op_apply(stsl_shim_op *op, stsl_shim_op_mode mode,
                                             const float *x, const float *v, float *out, int batch,
                                             int threads, char *err, size_t err_size);
/* NULL is a no-op. */
STSL_SHIM_API void stsl_shim_op_free(stsl_shim_op *op);

#ifdef __cplusplus
}
#endif

#endif
