/*
 * device_ops.h -- the measurement operators on a device (issue 27 item 2): the maps that
 * src/operators prepared (kernels, index maps, resampling tables, masks), run as libtorch ops
 * through the shim (shim/ops.cpp) on CUDA, or on the CPU for the tests that compare them with
 * the C code.  src/operators describes an operator (stsl__devop_desc) and calls these; it never
 * sees the shim.  Built without libtorch (WITH_TORCH=0), stsl__devop_create fails with
 * STSL_ERR_BACKEND and no device op ever exists.
 *
 * Cost: the operator API takes host buffers, so every call copies its inputs to the device once
 * and the result back once (into device buffers the op keeps, grown to the largest batch).
 */
#ifndef STSL_MODELS_DEVICE_OPS_H
#define STSL_MODELS_DEVICE_OPS_H

#include "core/internal.h"

/* stsl__devop_target's answer for "run the C code". */
#define STSL__DEVOP_HOST (-2)
/* stsl__devop_create's index for libtorch ops on the CPU. */
#define STSL__DEVOP_CPU (-1)

typedef enum stsl__devop_kind {
    STSL__DEVOP_POINTWISE = 0,   /* y = x, or y = mask . x (values: C*H*W mask, or NULL) */
    STSL__DEVOP_CLIP = 1,        /* y = clip(alpha x, -1, 1), nonlinear */
    STSL__DEVOP_CONV = 2,        /* pad through rows/cols, correlate with values (k*k, or k taps) */
    STSL__DEVOP_RESAMPLE = 3,    /* y = V X Hm^T per plane (tables v, h) */
    STSL__DEVOP_PHASE = 4,       /* y = fftshift |DFT(canvas)|, nonlinear; canvas = out's plane */
    STSL__DEVOP_MATRIX = 5       /* y = M x, values: out.width x size(in) */
} stsl__devop_kind;

/* One resampling axis: out_len rows of `taps` (index, weight) pairs. */
typedef struct stsl__devop_axis {
    int out_len, taps;
    const int *idx;
    const float *w;
} stsl__devop_axis;

/* What an operator is, for the device.  Pointers are borrowed for stsl__devop_create only. */
typedef struct stsl__devop_desc {
    stsl__devop_kind kind;
    stsl_shape in, out;          /* per sample */
    const float *values;         /* see the kinds */
    int k, separable;            /* CONV: kernel width; 1 when values holds k taps used on both axes */
    int fft_n1, fft_n2;          /* CONV: > 0, the FFT size the C code uses (large kernels), else 0 */
    const int *rows, *cols;      /* CONV: padded index -> source index or -1 (H+k-1, W+k-1 entries) */
    stsl__devop_axis v, h;       /* RESAMPLE: vertical and horizontal tables */
    float alpha;                 /* CLIP */
    int top, left;               /* PHASE: the image's place in the canvas */
} stsl__devop_desc;

typedef enum stsl__devop_mode {
    STSL__DEVOP_FORWARD = 0,     /* out = A x */
    STSL__DEVOP_ADJOINT = 1,     /* out = A^T v (linear kinds) */
    STSL__DEVOP_VJP = 2          /* out = J_A(x)^T v */
} stsl__devop_mode;

typedef struct stsl__devop stsl__devop;

/* Where an operator of this context runs: a CUDA index for "cuda[:N]", and for "auto" when a GPU
 * is usable now; STSL__DEVOP_HOST (the C code) for "cpu", "auto" without a GPU, and ctx NULL.
 * Whether the GPU named is there is stsl__devop_create's question. */
int stsl__devop_target(const stsl_context *ctx);
/* Build the op on CUDA device `index`, or with libtorch on the CPU (STSL__DEVOP_CPU).  On failure
 * *out is NULL and err (STSL_ERRMSG_SIZE) says why: STSL_ERR_BACKEND (no libtorch, no CUDA, no
 * such GPU), STSL_ERR_NOMEM. */
stsl_status stsl__devop_create(const stsl__devop_desc *d, int index, stsl__devop **out, char *err);
/* One call on `batch` samples (x: the input shape; v, out: as mode says).  Thread-safe: calls on
 * one op are serialised.  threads: libtorch's thread count on the CPU. */
stsl_status stsl__devop_apply(stsl__devop *op, stsl__devop_mode mode, const float *x,
                              const float *v, float *out, int batch, int threads, char *err);
/* "cuda:0", or "cpu" (libtorch ops on the CPU), for log lines. */
const char *stsl__devop_device(const stsl__devop *op);
/* NULL is a no-op. */
void stsl__devop_free(stsl__devop *op);

#endif
