/*
 * operator_internal.h -- the measurement-operator handle and the per-kind implementations.
 *
 * Layout: operator.c holds the public API (creation, parameters, validation, the noise model,
 * measure and data_fit); each family of kinds lives in its own file and exposes a prepare
 * function that fills op->impl/op->state.  After prepare the handle is read-only, so every
 * const operation may run concurrently: scratch memory is allocated per call.
 */
#ifndef STSL_OPERATOR_INTERNAL_H
#define STSL_OPERATOR_INTERNAL_H

#include "core/internal.h"
#include "models/device_ops.h"

#include <fftw3.h>

/* Every parameter an operator may use; which keys a kind accepts is decided in operator.c. */
typedef struct stsl__op_params {
    double noise_sigma;
    int64_t seed;
    int kernel_size;
    double blur_sigma;
    int boundary;            /* stsl_boundary */
    double motion_intensity;
    int sr_filter;           /* stsl_sr_filter */
    double drop_rate;
    int box_height, box_width, box_top, box_left;
    double impulse_fraction;
    int loss;                /* stsl_loss */
    double huber_delta;
    double hdr_alpha;
    double oversampling;
    int fft_threshold;
} stsl__op_params;

/* Per-kind implementation, chosen at prepare.  Buffers hold `batch` samples; `err` is the
 * caller's error buffer (written only on failure, so concurrent calls do not race on it). */
typedef struct stsl__op_impl {
    stsl_status (*forward)(const stsl_operator *op, const float *x, float *y, int batch, char *err);
    /* NULL for nonlinear operators */
    stsl_status (*adjoint)(const stsl_operator *op, const float *y, float *x, int batch, char *err);
    /* NULL for linear operators (the adjoint is the VJP) */
    stsl_status (*vjp)(const stsl_operator *op, const float *x, const float *v, float *out,
                       int batch, char *err);
    /* NULL: the adjoint is the back-projection */
    stsl_status (*backproject)(const stsl_operator *op, const float *y, float *x, int batch,
                               char *err);
    void (*release)(void *state);
    int mask_noise;   /* measure() applies A to the noise too, so missing pixels stay 0 */
    /* The prepared map for the device path (models/device_ops.h): forward, adjoint and VJP as
     * libtorch ops.  NULL: the kind stays on the host (user callbacks). */
    void (*describe)(const stsl_operator *op, stsl__devop_desc *d);
} stsl__op_impl;

struct stsl_operator {
    stsl_context *ctx;
    stsl_operator_kind kind;
    stsl_shape in, out;
    int factor;                 /* STSL_OP_SR */
    int prepared;
    int linear;
    stsl__op_params p;
    /* user inputs, copied */
    float *user_kernel;         /* user_kernel_size^2, normalised */
    int user_kernel_size;
    float *user_mask;           /* C*H*W, 0/1 */
    float *matrix;              /* rows x d */
    int rows;
    stsl_operator_vtable vt;
    void *user;
    /* prepared */
    const stsl__op_impl *impl;
    void *state;
    /* forward, adjoint and VJP as libtorch ops (the context's device is CUDA, or a test forced
     * it: stsl__operator_use_device); NULL: the C code of impl */
    stsl__devop *dev;
    char err[STSL_ERRMSG_SIZE];
};

/* ---- per-family prepare functions: fill op->impl, op->state and op->out ---- */
stsl_status stsl__op_prepare_conv(stsl_operator *op);      /* gaussian, motion, convolve */
stsl_status stsl__op_prepare_resize(stsl_operator *op);    /* sr */
stsl_status stsl__op_prepare_pointwise(stsl_operator *op); /* identity, inpaint, salt-pepper, hdr */
stsl_status stsl__op_prepare_phase(stsl_operator *op);     /* phase retrieval */

/* ---- the parameter table (operator_params.c) ---- */

/* What a key allows for a kind. */
typedef struct stsl__op_limits {
    int is_integer;
    double min, max;
    int min_exclusive;   /* "> min" rather than ">= min" */
} stsl__op_limits;
/* 1 for a kind of the enum */
int stsl__op_valid_kind(stsl_operator_kind kind);
/* 1 when key is an operator key (of any kind) */
int stsl__op_param_known(stsl_param key);
/* 1 and the limits when the kind uses the key, else 0 */
int stsl__op_param_limits(stsl_operator_kind kind, stsl_param key, stsl__op_limits *out);
/* 1 and the default of an operator key for a kind on images of `shape` (every operator key has
 * one, used or not by the kind), else 0 */
int stsl__op_param_default(stsl_operator_kind kind, stsl_shape shape, stsl_param key, double *value);
/* Default kernel size and Gaussian sigma for an image of this shape (docs/operators.md). */
void stsl__op_default_blur(stsl_shape s, int *kernel_size, double *sigma);
/* Random camera-shake kernel (size x size, sum 1) from (seed, intensity): motion.c. */
stsl_status stsl__op_motion_kernel(int size, double intensity, uint64_t seed, float *kernel);

/* ---- helpers shared by the implementations (kernel_support.c) ---- */

/* Run fn(arg, begin, end) over n independent items (planes or samples) with the context's
 * thread count. */
stsl_status stsl__op_parallel(const stsl_operator *op, size_t n, stsl__range_fn fn, void *arg);
/* The same, for work that needs a buffer per worker: each range gets its own 64-byte aligned
 * scratch of scratch_floats floats.  A worker that cannot allocate it does nothing, and the call
 * returns STSL_ERR_NOMEM with "out of memory <what>" in err. */
typedef void (*stsl__scratch_range_fn)(void *arg, size_t begin, size_t end, float *scratch);
stsl_status stsl__op_parallel_scratch(const stsl_operator *op, size_t n, size_t scratch_floats,
                                      stsl__scratch_range_fn fn, void *arg, const char *what,
                                      char *err);
/* A family's prepare: a zeroed state of `size` bytes, attached to the handle with its `impl` at
 * once, so that the impl's release frees a partial state when the prepare fails later.  NULL
 * when out of memory (nothing attached). */
void *stsl__op_new_state(stsl_operator *op, size_t size, const stsl__op_impl *impl);
/* Work done plane by plane (conv, phase, resize): fn maps one channel plane of `in` (in_plane
 * floats; for a VJP also the plane of `v`, v_plane floats) to one of `out` (out_plane floats), in
 * the family's `mode` (forward, adjoint, ...), with the worker's scratch. */
typedef void (*stsl__plane_fn)(const void *state, int mode, const float *in, const float *v,
                               float *out, float *scratch);
typedef struct stsl__planes {
    stsl__plane_fn fn;
    const void *state;
    int mode;
    const float *in, *v;   /* v: NULL but for a VJP */
    float *out;
    size_t in_plane, v_plane, out_plane;
} stsl__planes;
/* fn on planes 0..n-1, in parallel with per-worker scratch as stsl__op_parallel_scratch. */
stsl_status stsl__op_run_planes(const stsl_operator *op, size_t n, size_t scratch_floats,
                                const stsl__planes *p, const char *what, char *err);
/* Index of padded coordinate p (may be < 0 or >= n) under the boundary: reflect without edge
 * repeat (period 2n-2), or -1 for zero padding outside [0, n). */
int stsl__op_boundary_index(int p, int n, int boundary);

/* FFTW's planner is not thread-safe; every plan creation/destruction in the library holds this
 * process-wide lock. */
void stsl__fftw_lock(void);
void stsl__fftw_unlock(void);
/* Destroy a family's forward/inverse plan pair under that lock (either may be NULL). */
void stsl__fftw_destroy_plans(fftwf_plan fwd, fftwf_plan inv);
/* 64-byte aligned float buffer through stsl__malloc (so FFTW plans made on one buffer can be
 * executed on another: equal alignment).  *raw is what to pass to stsl__free. */
float *stsl__op_aligned_floats(size_t count, void **raw);
/* A size >= n with prime factors 2 and 3 only: fast FFTs. */
int stsl__fft_good_size(int n);

/* ---- thread-safe entry points for other layers (solvers): errors go into `err` ---- */
stsl_status stsl__operator_forward(stsl_operator *op, const float *x, float *y, int batch,
                                   char *err);
stsl_status stsl__operator_vjp(stsl_operator *op, const float *x, const float *v, float *out,
                               int batch, char *err);
stsl_status stsl__operator_backproject(stsl_operator *op, const float *y, float *x, int batch,
                                       char *err);
/* Where forward, adjoint and VJP run (prepares the operator first; not thread-safe, as the
 * setters): STSL__DEVOP_HOST the C code, STSL__DEVOP_CPU libtorch ops on the CPU (the tests'
 * comparison with the C code), N >= 0 CUDA device N.  stsl_operator_prepare chooses from the
 * context's device; this switch overrides it.  STSL_ERR_UNSUPPORTED for user-callback operators
 * (they stay on the host), STSL_ERR_BACKEND when the device path cannot be built there. */
stsl_status stsl__operator_use_device(stsl_operator *op, int device_index);
stsl_status stsl__operator_data_fit(stsl_operator *op, const float *y, const float *x, int batch,
                                   double *loss, float *grad_x, char *err);

#endif
