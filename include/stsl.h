/*
 * stsl.h -- libstsl public API, version 1.
 *
 * libstsl restores degraded images (blur, low resolution, missing pixels, impulse noise) by
 * posterior sampling with diffusion-model priors.  This is the library's only public header.
 *
 * Conventions (read once, they hold for every call below):
 *  - Every function that can fail returns an stsl_status; STSL_OK is 0.  Nothing aborts, nothing
 *    prints to stdout.  Detail for the last failure is available from the handle the call was made
 *    on (stsl_<noun>_last_error), or from the context for calls that create a handle.
 *  - Constructors return a status and hand the new object out through their last argument; on
 *    failure *out is set to NULL.  Every object has a _destroy, and destroy(NULL) is a no-op.
 *  - Ownership: pointer inputs are BORROWED for the duration of the call only, unless a comment
 *    says the handle keeps a reference.  Outputs go into caller memory whose size the library
 *    tells (shape queries).  Anything the library allocates is freed by the library's own call.
 *  - Images and tensors are float32, planar CHW (channel-major, then rows, then columns), and a
 *    batch of N is N such blocks back to back.  Pixel values are on the diffusion scale [-1, 1]:
 *    the loaders map 0 -> -1 and the format's maximum (255 or 65535) -> +1.
 *  - Parameters are set through typed setters with numbered enum keys (stsl_param), with a bounds
 *    query, so adding a parameter never breaks a compiled caller.  Enum values are numbered
 *    explicitly and only ever appended.  Structs that cross the ABI start with their own size.
 *  - Threads: a handle is used by one thread at a time unless its comment says otherwise.
 *    stsl_version*, stsl_strerror, stsl_solver_cancel and the stsl_random_* functions may be
 *    called from any thread.  A score or autoencoder handle MAY be shared by solvers running in
 *    different threads: it serialises its own network calls internally.  An operator handle may
 *    be shared by several threads for its const operations (forward, adjoint, vjp, backproject,
 *    data_fit, measure) once it has been prepared (stsl_operator_prepare or its first use in a
 *    single thread); setters are not thread-safe.
 */
#ifndef STSL_H
#define STSL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* Version and export                                                                          */
/* ------------------------------------------------------------------------------------------ */

#define STSL_VERSION_MAJOR 1
#define STSL_VERSION_MINOR 2
#define STSL_VERSION_PATCH 0
#define STSL_VERSION_NUMBER (STSL_VERSION_MAJOR * 10000 + STSL_VERSION_MINOR * 100 + STSL_VERSION_PATCH)

#if defined(_WIN32) && defined(STSL_BUILDING_DLL)
#define STSL_API __declspec(dllexport)
#elif defined(_WIN32) && !defined(STSL_STATIC)
#define STSL_API __declspec(dllimport)
#elif defined(__GNUC__) && __GNUC__ >= 4
#define STSL_API __attribute__((visibility("default")))
#else
#define STSL_API
#endif

/* "MAJOR.MINOR.PATCH" of the library actually loaded; static string. */
STSL_API const char *stsl_version(void);
/* STSL_VERSION_NUMBER of the library actually loaded (compare with the macro to detect a
 * header/library mismatch). */
STSL_API unsigned stsl_version_number(void);

/* ------------------------------------------------------------------------------------------ */
/* Status                                                                                      */
/* ------------------------------------------------------------------------------------------ */

typedef enum stsl_status {
    STSL_OK = 0,
    STSL_ERR_INVALID_ARG = 1,  /* NULL where a handle or buffer is required, value out of range */
    STSL_ERR_NOMEM = 2,        /* an allocation failed; the handle is left usable/destroyable */
    STSL_ERR_IO = 3,           /* file cannot be opened, read or written */
    STSL_ERR_FORMAT = 4,       /* file is truncated, corrupt or not of the expected format */
    STSL_ERR_MODEL = 5,        /* model file or its metadata is unusable, or the model failed */
    STSL_ERR_BACKEND = 6,      /* device unavailable (e.g. CUDA requested, none present) */
    STSL_ERR_SHAPE = 7,        /* shapes of the arguments do not fit together */
    STSL_ERR_UNSUPPORTED = 8,  /* feature not built in, or not applicable to this object */
    STSL_CANCELLED = 9,        /* the run was stopped by stsl_solver_cancel or a progress callback */
    STSL_ERR_NUMERIC = 10,     /* NaN or Inf detected (input, model output or a diverging step) */
    STSL_ERR_LIMIT = 11,       /* a size exceeds a documented limit (STSL_MAX_*) */
    STSL_ERR_INTERNAL = 12     /* a bug: please report it */
} stsl_status;

/* Fixed English text for a status; never NULL, static storage, any thread. */
STSL_API const char *stsl_strerror(stsl_status status);

/* Documented limits: images beyond them are refused with STSL_ERR_LIMIT before any allocation
 * (decompression bombs, integer overflow in size arithmetic). */
#define STSL_MAX_IMAGE_DIM 16384          /* width or height */
#define STSL_MAX_IMAGE_PIXELS (1 << 26)   /* width * height: 67 Mpixel */
#define STSL_MAX_CHANNELS 4
#define STSL_MAX_KERNEL_SIZE 1025         /* blur kernels: odd sizes 1..1025 */
#define STSL_MAX_BATCH 4096

/* ------------------------------------------------------------------------------------------ */
/* Context: log sink, threads and device.  No global state lives in the library.               */
/* ------------------------------------------------------------------------------------------ */

typedef struct stsl_context stsl_context;

typedef enum stsl_log_level {
    STSL_LOG_DEBUG = 0,
    STSL_LOG_INFO = 1,
    STSL_LOG_WARN = 2,
    STSL_LOG_ERROR = 3,
    STSL_LOG_NONE = 4
} stsl_log_level;

/* Log sink.  May be called from any thread that uses a handle of this context; it must not
 * call libstsl with the handle that is logging.  `msg` is valid during the call only. */
typedef void (*stsl_log_fn)(void *user, stsl_log_level level, const char *msg);

/* The device of a new context, and of every tool that is not given one.  The CPU, not "auto":
 * an embedder gets no surprise from the machine it happens to run on -- no GPU memory taken and
 * no CUDA initialisation in a process that did not ask for them, the same numbers on every
 * machine (a GPU's kernels round differently), and float16 never silently turned into float32
 * (which "auto" does without a GPU).  A program that wants the GPU says "auto" or "cuda". */
#define STSL_DEFAULT_DEVICE "cpu"

/* Create a context: 1 thread, device STSL_DEFAULT_DEVICE ("cpu"), no log sink (messages are
 * dropped). */
STSL_API stsl_status stsl_context_create(stsl_context **out);
/* Destroy; every handle created from it must have been destroyed first. */
STSL_API void stsl_context_destroy(stsl_context *ctx);
/* Install a log sink (fn NULL removes it); messages below min_level are not formatted. */
STSL_API stsl_status stsl_context_set_log(stsl_context *ctx, stsl_log_fn fn, void *user,
                                          stsl_log_level min_level);
/* Threads for CPU work (operators, random numbers, the CPU backend of models): 1..256.
 * The library's own work is bit-identical whatever the thread count; libtorch's may round
 * differently (its convolutions and backward passes split sums by thread), so a TorchScript
 * model's results are bit-identical for one thread count. Applies to handles created afterwards
 * and to calls made afterwards. */
STSL_API stsl_status stsl_context_set_threads(stsl_context *ctx, int threads);
STSL_API int stsl_context_get_threads(const stsl_context *ctx);
/* Device for models loaded and operators prepared afterwards: exactly "cpu", "cuda" (= "cuda:0"),
 * "cuda:N" with N a decimal 0..255 without sign or leading zeros, or "auto" (CUDA device 0 when
 * the library was built with a CUDA libtorch and a GPU is present at load, else the CPU); lower
 * case, no blanks.  Anything else is STSL_ERR_INVALID_ARG and leaves the device as it was; the
 * message (stsl_context_last_error) names the accepted spellings.  This is the library's one
 * reader of device strings: the tools pass their --device through it.  The string is not kept.  A
 * device that is not there (no CUDA, too few GPUs) is reported when a model is loaded or an
 * operator prepared (STSL_ERR_BACKEND).  On CUDA an operator's forward, adjoint and VJP run there
 * as libtorch ops, its host buffers copied in and out once per call (user-callback operators stay
 * on the host); on the CPU they are the library's C code.  Default: STSL_DEFAULT_DEVICE. */
STSL_API stsl_status stsl_context_set_device(stsl_context *ctx, const char *device);
/* Precision of the network evaluations of TorchScript models loaded afterwards (the library's
 * own arithmetic stays float32/float64).  FLOAT16 and BFLOAT16 are mixed precision, libtorch's
 * autocast around each forward evaluation: matrix products and convolutions in the reduced
 * type, reductions, normalisations and softmax in float32, weights kept in float32, inputs and
 * outputs float32 at the API; VJPs differentiate that same evaluation.  Devices: float16 on
 * CUDA, and on the CPU with libtorch >= 2 (not 1.13); bfloat16 on the CPU and on GPUs that run
 * it.  A precision the device cannot run fails at load with STSL_ERR_BACKEND, except on device
 * "auto" without a GPU, which then loads in float32 (the load's log line names the precision).
 * Accuracy against float32 (relative error max|a - b| / (1 + max|b|) of eps and of VJPs,
 * measured on the CPU for the shipped models, docs/models.md section 5): up to 7.2e-4 in
 * float16 and 6.1e-3 in bfloat16; tolerance 2e-2 in float16, 5e-2 in bfloat16.  FLOAT32 (the
 * default) is unchanged to the bit. */
typedef enum stsl_precision {
    STSL_PRECISION_FLOAT32 = 0,
    STSL_PRECISION_FLOAT16 = 1,
    STSL_PRECISION_BFLOAT16 = 2
} stsl_precision;
STSL_API stsl_status stsl_context_set_precision(stsl_context *ctx, stsl_precision precision);
STSL_API stsl_precision stsl_context_get_precision(const stsl_context *ctx);
/* Same as stsl_context_set_precision(ctx, enable ? STSL_PRECISION_FLOAT16 : STSL_PRECISION_FLOAT32):
 * 0 (default) or 1.  (Before 1.2 it was ignored on the CPU; it now applies there too.) */
STSL_API stsl_status stsl_context_set_half(stsl_context *ctx, int enable);
/* Detail of the last failure of a call made with this context (constructors, image I/O).
 * Owned by the context, valid until the next call with it. Never NULL ("" when none). */
STSL_API const char *stsl_context_last_error(const stsl_context *ctx);
/* 1 when the library was built with the TorchScript backend, else 0. */
STSL_API int stsl_has_torch(void);
/* 1 when a CUDA device is usable by the TorchScript backend, else 0. */
STSL_API int stsl_cuda_available(void);

/* ------------------------------------------------------------------------------------------ */
/* Random numbers: counter-based (Philox4x32-10).  Value i of (seed, stream) is a pure         */
/* function of (seed, stream, i), so results do not depend on threads, batch or device.        */
/* ------------------------------------------------------------------------------------------ */

/* Fill out[0..n) with standard normal draws number offset .. offset+n-1 of (seed, stream)
 * (Box-Muller in float without libm: the same bits on any machine).  ctx may be NULL (1 thread).
 * Any thread. */
STSL_API stsl_status stsl_random_normal(const stsl_context *ctx, uint64_t seed, uint64_t stream,
                                        uint64_t offset, float *out, size_t n);
/* Same for uniform draws in [0, 1). */
STSL_API stsl_status stsl_random_uniform(const stsl_context *ctx, uint64_t seed, uint64_t stream,
                                         uint64_t offset, float *out, size_t n);

/* ------------------------------------------------------------------------------------------ */
/* Noise schedules (VP: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps)                          */
/* ------------------------------------------------------------------------------------------ */

typedef struct stsl_schedule stsl_schedule;

typedef enum stsl_schedule_kind {
    STSL_SCHEDULE_LINEAR = 0,        /* DDPM: betas linear in [beta_start, beta_end] */
    STSL_SCHEDULE_SCALED_LINEAR = 1, /* Stable Diffusion: sqrt(betas) linear */
    STSL_SCHEDULE_COSINE = 2         /* Nichol & Dhariwal; beta_start is the offset s (0.008) */
} stsl_schedule_kind;

/* timesteps: 1..100000.  For LINEAR/SCALED_LINEAR 0 < beta_start <= beta_end < 1. */
STSL_API stsl_status stsl_schedule_create(stsl_context *ctx, stsl_schedule_kind kind,
                                          double beta_start, double beta_end, int timesteps,
                                          stsl_schedule **out);
STSL_API void stsl_schedule_destroy(stsl_schedule *sched);
STSL_API int stsl_schedule_timesteps(const stsl_schedule *sched);
/* abar at integer step t (0 <= t < timesteps); t == -1 gives 1 (the clean end); else NaN. */
STSL_API double stsl_schedule_alpha_bar(const stsl_schedule *sched, int t);
/* DDIM subset: n steps (1..timesteps), evenly spaced ("leading" spacing t_i = i * T / n, as in
 * the DDIM reference code), written ascending into out[0..n). */
STSL_API stsl_status stsl_schedule_ddim_steps(const stsl_schedule *sched, int n, int *out);
/* EDM (Karras et al.) sigma ladder: n >= 2 sigmas from sigma_max down to sigma_min with
 * exponent rho, written descending into out[0..n). */
STSL_API stsl_status stsl_sigmas_edm(int n, double sigma_min, double sigma_max, double rho,
                                     double *out);
/* VE (geometric) ladder sigma_max -> sigma_min, n >= 2, descending. */
STSL_API stsl_status stsl_sigmas_ve(int n, double sigma_min, double sigma_max, double *out);

/* ------------------------------------------------------------------------------------------ */
/* Images and image I/O (PNG through libpng, JPEG through libjpeg-turbo)                       */
/* ------------------------------------------------------------------------------------------ */

typedef struct stsl_image {
    size_t struct_size;   /* sizeof(stsl_image), written by the library */
    int32_t channels;     /* 1 (grey), 3 (RGB) or 4 (RGBA); 1..STSL_MAX_CHANNELS */
    int32_t height;
    int32_t width;
    float *data;          /* channels*height*width floats, planar CHW, values in [-1, 1] */
} stsl_image;

/* Allocate a zero-filled image. Free with stsl_image_destroy. */
STSL_API stsl_status stsl_image_create(int channels, int height, int width, stsl_image **out);
STSL_API void stsl_image_destroy(stsl_image *img);

/* Load a PNG (8 or 16 bit; grey, grey+alpha, RGB, RGBA, palette) or JPEG (grey or RGB) file.
 * channels: 0 keeps the file's channels (grey+alpha becomes RGBA), or 1/3/4 converts
 * (RGB -> grey uses Rec. 601 luma; alpha is dropped or set opaque).  The result is owned by the
 * caller (stsl_image_destroy).  ctx may be NULL; when given it receives the error detail. */
STSL_API stsl_status stsl_image_load(stsl_context *ctx, const char *path, int channels,
                                     stsl_image **out);
/* Same, from a buffer in memory (size bytes, borrowed). */
STSL_API stsl_status stsl_image_decode(stsl_context *ctx, const void *data, size_t size,
                                       int channels, stsl_image **out);

typedef enum stsl_image_format {
    STSL_FORMAT_AUTO = 0, /* from the file name: .png, .jpg/.jpeg */
    STSL_FORMAT_PNG = 1,
    STSL_FORMAT_JPEG = 2
} stsl_image_format;

/* Save: values are clipped to [-1, 1] and rounded.  bit_depth 8 or 16 (PNG only; 0 = 8);
 * quality 1..100 (JPEG only; 0 = 90).  JPEG cannot store alpha: an RGBA image is refused. */
STSL_API stsl_status stsl_image_save(stsl_context *ctx, const stsl_image *img, const char *path,
                                     stsl_image_format format, int bit_depth, int quality);

/* ------------------------------------------------------------------------------------------ */
/* Parameters: one numbered key space shared by operators and solvers.  A setter with a key   */
/* the object does not use returns STSL_ERR_UNSUPPORTED; a value out of bounds returns         */
/* STSL_ERR_INVALID_ARG.  Integer keys accept stsl_*_set_int, real keys stsl_*_set_float.      */
/* ------------------------------------------------------------------------------------------ */

typedef enum stsl_param {
    /* operators (1..99) */
    STSL_PARAM_NOISE_SIGMA = 1,      /* float, >= 0: Gaussian noise std on the [-1,1] scale */
    STSL_PARAM_SEED = 2,             /* int, >= 0: seed for masks, kernels, noise, sampling */
    STSL_PARAM_KERNEL_SIZE = 3,      /* int, odd, 1..STSL_MAX_KERNEL_SIZE */
    STSL_PARAM_BLUR_SIGMA = 4,       /* float, > 0: Gaussian blur std in pixels */
    STSL_PARAM_BOUNDARY = 5,         /* int: stsl_boundary */
    STSL_PARAM_MOTION_INTENSITY = 6, /* float in [0, 1]: camera-shake trajectory intensity */
    STSL_PARAM_SR_FILTER = 7,        /* int: stsl_sr_filter */
    STSL_PARAM_DROP_RATE = 8,        /* float in [0, 1]: random-inpaint fraction of pixels lost */
    STSL_PARAM_BOX_HEIGHT = 9,       /* int >= 1 */
    STSL_PARAM_BOX_WIDTH = 10,       /* int >= 1 */
    STSL_PARAM_BOX_TOP = 11,         /* int, -1 = centred (default) */
    STSL_PARAM_BOX_LEFT = 12,        /* int, -1 = centred (default) */
    STSL_PARAM_IMPULSE_FRACTION = 13,/* float in [0, 1]: salt-pepper fraction of corrupted pixels */
    STSL_PARAM_LOSS = 14,            /* int: stsl_loss, the data-fit loss of the noise model */
    STSL_PARAM_HUBER_DELTA = 15,     /* float > 0 */
    STSL_PARAM_HDR_ALPHA = 16,       /* float > 0 */
    STSL_PARAM_OVERSAMPLING = 17,    /* float >= 1: phase retrieval zero-padding factor */
    STSL_PARAM_FFT_THRESHOLD = 18,   /* int >= 1: kernels this wide or wider use the FFT path */

    /* solvers (100..) */
    STSL_PARAM_STEPS = 100,          /* int: reverse (outer) steps T */
    STSL_PARAM_INNER_STEPS = 101,    /* int: STSL K, RMP T_in, DPS-MO's MO directions N per level
                                      * (one UNet VJP each, after the DPS one) */
    STSL_PARAM_PROBES = 102,         /* int: STSL / RMP Hutchinson probes N */
    STSL_PARAM_ETA = 103,            /* float: STSL second-order step eta; DDIM eta; DPS-MO's
                                      * step eta on the levels above ETA_SIGMA (1 DDPM ancestral,
                                      * 0 probability-flow ODE) */
    STSL_PARAM_LAMBDA = 104,         /* float: STSL likelihood strength */
    STSL_PARAM_LEARNING_RATE = 105,  /* float: STSL step (STEP_RULE); RMP s1 */
    STSL_PARAM_LR_DECAY = 106,       /* float: STSL lr multiplier per reverse step */
    STSL_PARAM_KAPPA = 107,          /* float >= 0: STSL proximal weight */
    STSL_PARAM_ZETA = 108,           /* float >= 0: DPS / RMP guidance scale; DPS-MO likelihood
                                      * weight (1: the noise model's likelihood, 0: the prior);
                                      * STSL: DPS's step zeta grad ||y - A D(zbar)|| added to the
                                      * scaled step on the first pass of each level in the upper half
                                      * of the schedule, Gaussian noise only (0.3; 0: the Polyak
                                      * step alone, as before issue 28; stsl-biased 0) */
    STSL_PARAM_OMEGA = 109,          /* float >= 0: LDPS/PSLD data weight */
    STSL_PARAM_GAMMA = 110,          /* float >= 0: PSLD gluing weight */
    STSL_PARAM_TEMPERATURE = 111,    /* no solver since issue 28 (was DPS-MO's SGLD temperature;
                                      * setting it returns STSL_ERR_UNSUPPORTED) */
    STSL_PARAM_SIGMA_MIN = 112,      /* float > 0: EDM/VE ladder end */
    STSL_PARAM_SIGMA_MAX = 113,      /* float > 0: EDM/VE ladder start */
    STSL_PARAM_VARIANT = 114,        /* int: solver-specific variant (see stsl_variant) */
    STSL_PARAM_INIT = 115,           /* int: stsl_init, how STSL reaches t = T */
    STSL_PARAM_SQUARED_LOSS = 116,   /* int 0/1: data term squared (eq. 5) or plain norm (line 10) */
    STSL_PARAM_INNER_INCLUSIVE = 117,/* int 0/1: STSL "for k = 0 to K" read as K+1 passes */
    STSL_PARAM_ADAM_PERSIST = 118,   /* int 0/1: keep Adam moments across reverse steps */
    STSL_PARAM_PROGRESS_ESTIMATE = 119, /* int 0/1: pass the current x0 estimate to progress */
    STSL_PARAM_BATCH_LIMIT = 120,    /* int >= 1: max samples per network call (memory bound) */
    STSL_PARAM_STEP_RULE = 121,      /* int: stsl_step_rule, STSL's inner update (lines 10-11) */
    STSL_PARAM_STEP_NOISE = 122,     /* float in [0, 1]: STSL line-14 noise, sigma = value *
                                      * sqrt(beta~_k) (1 = DDPM ancestral, 0 = as written) */
    STSL_PARAM_LIKELIHOOD_VARIANCE = 123, /* int: stsl_likelihood_variance, RMP's v_k, STSL's
                                           * upper-level likelihood step */
    STSL_PARAM_RENOISE_LEVEL = 124,  /* int 0/1: DPS-MO steps to the next level with DDIM's ETA
                                      * step (0) or re-noises its estimate with all fresh noise (1) */
    STSL_PARAM_PAD_BATCH = 125,      /* int >= 0: 0 off (default: calls hold the whole batch); P:
                                      * a batch runs as groups of at most P samples, each group's
                                      * network and autoencoder calls shaped as in a run of P
                                      * samples (short calls padded); P = 1 makes a sample's bits
                                      * independent of its batch on any CPU (see
                                      * stsl_solver_run_seeded) */
    STSL_PARAM_DENOISE_PASSES = 126, /* int >= 1: DPS-MO posterior-denoiser passes per level; pass
                                      * p > 1 re-noises pass p-1's estimate with the noise the
                                      * iterate carries and denoises again (MO l.9-10) */
    STSL_PARAM_ETA_SIGMA = 127       /* float >= 0: DPS-MO takes ETA's step on the levels with
                                      * sigma above this and the probability-flow ODE step (ETA 0)
                                      * below; 0: ETA on every level */
} stsl_param;

typedef enum stsl_step_rule {
    STSL_STEP_ADAM = 0,              /* Adam, lr LEARNING_RATE (App. B.1 as written) */
    STSL_STEP_SCALED = 1             /* Polyak step towards the noise level: the first-order model
                                      * of the data term drops by the fraction LEARNING_RATE of its
                                      * excess over its value at the truth, plus the ZETA pull on the
                                      * first pass of the upper levels; with LIKELIHOOD_VARIANCE
                                      * TWEEDIE the upper levels take the pull alone
                                      * (docs/algorithms.md) */
} stsl_step_rule;

typedef enum stsl_likelihood_variance {
    STSL_LIKVAR_FLAT = 0,            /* RMP v_k = sigma_y^2 + tr(A A^T)/d_y r_k^2 (flat prior);
                                      * STSL: no covariance step, the Polyak step on every level */
    STSL_LIKVAR_TWEEDIE = 1          /* default: RMP y | x_k ~ N(A x0hat, sigma_y^2 I + A Cov[x0|x_k] A^T),
                                      * the Tweedie covariance in full (one warm-started CG step,
                                      * 2 VJPs per step) on a pixel prior with a linear operator and
                                      * the squared loss; elsewhere the default acts as FLAT and an
                                      * explicit TWEEDIE takes the trace tr(A Cov A^T)/d_y by
                                      * Hutchinson with PROBES probes.
                                      * STSL (same needs, the same default rule; an explicit TWEEDIE
                                      * elsewhere is STSL_ERR_UNSUPPORTED): each level of the upper
                                      * half begins with Z += (1 - alpha_k) grad log N(y; A x0hat,
                                      * sigma_y^2 I + A Cov A^T) (3 Galerkin steps, 4 VJPs) and its
                                      * passes take DPS's ZETA pull instead of the Polyak step; a
                                      * lower level begins with the same step for the samples whose
                                      * data term the level above left over 4x its noise level
                                      * (4 VJPs per such level) */
} stsl_likelihood_variance;

typedef enum stsl_boundary {
    STSL_BOUNDARY_REFLECT = 0,       /* symmetric reflection without edge repeat ("reflect") */
    STSL_BOUNDARY_ZERO = 1
} stsl_boundary;

typedef enum stsl_sr_filter {
    STSL_SR_BICUBIC = 0,             /* anti-aliased bicubic (a = -0.5), as the DPS reference */
    STSL_SR_BOX = 1                  /* box average over factor x factor blocks */
} stsl_sr_filter;

typedef enum stsl_loss {
    STSL_LOSS_SQUARED = 0,           /* ||y - A x||^2 (Gaussian noise) */
    STSL_LOSS_L1 = 1,                /* ||y - A x||_1 (impulse noise) */
    STSL_LOSS_HUBER = 2              /* sum huber_delta(y - A x) (impulse noise, smooth) */
} stsl_loss;

typedef enum stsl_init {
    STSL_INIT_PREDICTED_NOISE = 0,   /* Alg. 1 line 3 read literally, with the network's eps:
                                      * diverges on the exact-posterior testbed (docs/algorithms.md) */
    STSL_INIT_FRESH_NOISE = 1,       /* Z_0 ~ p_T(. | E(B y)) with fresh Gaussian noise (default) */
    STSL_INIT_DDIM_INVERSION = 2,    /* deterministic DDIM inversion */
    STSL_INIT_PRIOR = 3              /* Z_0 ~ N(0, I), as PSLD */
} stsl_init;

typedef enum stsl_variant {
    STSL_VARIANT_DEFAULT = 0,
    STSL_VARIANT_RMP_VP = 1,         /* RMP on the VP schedule (default for rmp) */
    STSL_VARIANT_RMP_VE = 2,         /* RMP on a VE ladder */
    STSL_VARIANT_STSL_SCORE_PLUS = 3 /* STSL line 9 read with '+' (1 - abar) s (default) */
} stsl_variant;

typedef struct stsl_param_bounds {
    double min;
    double max;
    double default_value;
    int is_integer;
} stsl_param_bounds;

/* Parameter metadata (added in 1.2, symbol version STSL_1.2): what a key is called, what it does
 * and the names of its values, so that programs build their options from the library instead of
 * copying them.  Every string returned is static (never freed, valid for the process, any
 * thread).  A key's name is its command-line spelling without dashes ("inner-steps"); names and
 * aliases are unique over all keys. */
/* The name of a key ("steps", "noise"), NULL for a value that is not a key. */
STSL_API const char *stsl_param_name(stsl_param key);
/* Other accepted spellings of a key, space-separated ("K k inner"; "" when none), NULL for a
 * value that is not a key. */
STSL_API const char *stsl_param_aliases(stsl_param key);
/* One line saying what the key does (defaults are not in it: see the *_param_bounds), NULL
 * for a value that is not a key. */
STSL_API const char *stsl_param_help(stsl_param key);
/* The key called `name` (its name or an alias, exact case).  STSL_ERR_INVALID_ARG for NULL
 * arguments or a name no key has (*key untouched). */
STSL_API stsl_status stsl_param_from_name(const char *name, stsl_param *key);
/* The symbolic name of value `value` of an enum-valued key ("rmp-ve" for STSL_PARAM_VARIANT 2),
 * NULL when the key has no value of that name or is not enum-valued. */
STSL_API const char *stsl_param_value_name(stsl_param key, int64_t value);
/* The value of an enum-valued key called `name` (its name or an alias such as "l2").
 * STSL_ERR_INVALID_ARG for NULL arguments, an unknown key or an unknown name;
 * STSL_ERR_UNSUPPORTED for a key whose values have no names. */
STSL_API stsl_status stsl_param_value_from_name(stsl_param key, const char *name, int64_t *value);

/* ------------------------------------------------------------------------------------------ */
/* Operators: the measurement A.  Each has a forward map, its vector-Jacobian product (the      */
/* exact adjoint when linear), a cheap back-projection and a noise model that simulates        */
/* measurements and defines the data-fit loss.                                                 */
/* ------------------------------------------------------------------------------------------ */

typedef struct stsl_operator stsl_operator;

typedef enum stsl_operator_kind {
    STSL_OP_IDENTITY = 0,            /* "denoise": y = x + n */
    STSL_OP_GAUSSIAN_BLUR = 1,       /* "gaussian-blur" */
    STSL_OP_MOTION_BLUR = 2,         /* "motion-blur" */
    STSL_OP_SR = 3,                  /* "sr2", "sr4", "sr8": factor set at creation */
    STSL_OP_RANDOM_INPAINT = 4,      /* "random-inpaint" */
    STSL_OP_BOX_INPAINT = 5,         /* "box-inpaint" */
    STSL_OP_MASK_INPAINT = 6,        /* "mask-inpaint": mask set with stsl_operator_set_mask */
    STSL_OP_SALT_PEPPER = 7,         /* "salt-pepper": identity with impulse noise */
    STSL_OP_HDR = 8,                 /* "hdr": y = clip(alpha x, -1, 1), nonlinear */
    STSL_OP_PHASE_RETRIEVAL = 9,     /* "phase-retrieval": y = |F(P x)|, nonlinear */
    STSL_OP_MATRIX = 10,             /* dense matrix on the flattened image (stsl_operator_create_matrix) */
    STSL_OP_CUSTOM = 11,             /* user callbacks (stsl_operator_create_custom) */
    STSL_OP_CONVOLVE = 12            /* blur with a user kernel (stsl_operator_set_kernel) */
} stsl_operator_kind;

typedef struct stsl_shape {
    int32_t channels;
    int32_t height;
    int32_t width;
} stsl_shape;

/* Create an operator acting on images of `input` shape.  For STSL_OP_SR pass the factor
 * (2, 4 or 8) in `factor`; other kinds ignore it (pass 0).  Parameters take their documented
 * defaults (kernel 61 / sigma 3.0 at >= 256 px, scaled down for smaller images; drop rate 0.4;
 * impulse fraction 0.02; ...) and may be changed with the setters until the first use. */
STSL_API stsl_status stsl_operator_create(stsl_context *ctx, stsl_operator_kind kind,
                                          stsl_shape input, int factor, stsl_operator **out);
/* Create from a tool name ("gaussian-blur", "sr4", ...; see stsl_operator_names). */
STSL_API stsl_status stsl_operator_create_by_name(stsl_context *ctx, const char *name,
                                                  stsl_shape input, stsl_operator **out);
/* Space-separated list of the names accepted above; static string. */
STSL_API const char *stsl_operator_names(void);
/* Dense linear operator y = M x on the flattened input: M is rows x (C*H*W), row-major,
 * copied.  The output shape is (1, 1, rows). */
STSL_API stsl_status stsl_operator_create_matrix(stsl_context *ctx, stsl_shape input, int rows,
                                                 const float *matrix, stsl_operator **out);

/* User-defined operator.  Callbacks get batch-sized buffers (batch * size floats) and return
 * 0 on success, non-zero on failure (reported as STSL_ERR_INTERNAL with the code in the
 * message). `vjp` may be NULL for a linear operator (then adjoint is used); `adjoint` may be
 * NULL for a nonlinear one.  `destroy` (may be NULL) is called with `user` when the operator is
 * destroyed. */
typedef struct stsl_operator_vtable {
    size_t struct_size;   /* sizeof(stsl_operator_vtable) */
    int linear;           /* 1 when A is linear */
    stsl_shape output;    /* measurement shape */
    int (*forward)(void *user, const float *x, float *y, int batch);
    int (*adjoint)(void *user, const float *y, float *x, int batch);
    int (*vjp)(void *user, const float *x, const float *v, float *out, int batch);
    void (*destroy)(void *user);
} stsl_operator_vtable;
/* The vtable is copied; `user` is kept (borrowed) until the operator is destroyed. */
STSL_API stsl_status stsl_operator_create_custom(stsl_context *ctx, stsl_shape input,
                                                 const stsl_operator_vtable *vtable, void *user,
                                                 stsl_operator **out);
STSL_API void stsl_operator_destroy(stsl_operator *op);

STSL_API stsl_status stsl_operator_set_int(stsl_operator *op, stsl_param key, int64_t value);
STSL_API stsl_status stsl_operator_set_float(stsl_operator *op, stsl_param key, double value);
STSL_API stsl_status stsl_operator_get_int(const stsl_operator *op, stsl_param key, int64_t *value);
STSL_API stsl_status stsl_operator_get_float(const stsl_operator *op, stsl_param key, double *value);
/* Bounds of a parameter for a kind of operator (min, max, default).  The defaults are those of
 * a 256x256 image (the blur kernel and the box scale with smaller images). */
STSL_API stsl_status stsl_operator_param_bounds(stsl_operator_kind kind, stsl_param key,
                                                stsl_param_bounds *bounds);
/* The keys a kind of operator uses, in the order a tool lists them: the first min(capacity, n)
 * into keys (may be NULL when capacity is 0) and n into *count.  STSL_ERR_INVALID_ARG for an
 * unknown kind, a NULL count, a negative capacity or NULL keys with capacity > 0.  Added in 1.2. */
STSL_API stsl_status stsl_operator_param_keys(stsl_operator_kind kind, stsl_param *keys,
                                              int capacity, int *count);
/* Blur kernel for STSL_OP_MOTION_BLUR (replaces the random trajectory) or STSL_OP_CONVOLVE:
 * size x size floats, odd size, copied; normalised to sum 1 unless its sum is 0 (refused). */
STSL_API stsl_status stsl_operator_set_kernel(stsl_operator *op, const float *kernel, int size);
/* Inpainting mask for STSL_OP_MASK_INPAINT: height*width floats (shared by channels) or
 * channels*height*width, 1 = observed, 0 = missing (values >= 0.5 count as observed); copied. */
STSL_API stsl_status stsl_operator_set_mask(stsl_operator *op, const float *mask, size_t count);
/* Validate the parameter combination and precompute (kernels, masks, FFT plans), and, when the
 * context's device is CUDA, the same maps as libtorch ops there (STSL_ERR_BACKEND when the device
 * is not there; "auto" without a GPU keeps the CPU).  Called by the first forward/adjoint/... if
 * not called explicitly.  After it, setters return STSL_ERR_INVALID_ARG ("operator already
 * prepared"). */
STSL_API stsl_status stsl_operator_prepare(stsl_operator *op);

STSL_API stsl_status stsl_operator_input_shape(const stsl_operator *op, stsl_shape *shape);
/* Measurement shape (prepares the operator if needed, hence not const). */
STSL_API stsl_status stsl_operator_output_shape(stsl_operator *op, stsl_shape *shape);
/* 1 when A is linear (adjoint and A^T A structure available), 0 otherwise, <0 on error. */
STSL_API int stsl_operator_is_linear(stsl_operator *op);
STSL_API stsl_operator_kind stsl_operator_get_kind(const stsl_operator *op);

/* y = A x for a batch: x holds batch * input floats, y batch * output floats. */
STSL_API stsl_status stsl_operator_forward(stsl_operator *op, const float *x, float *y, int batch);
/* x = A^T y (linear operators only; STSL_ERR_UNSUPPORTED otherwise). */
STSL_API stsl_status stsl_operator_adjoint(stsl_operator *op, const float *y, float *x, int batch);
/* out = J_A(x)^T v: the vector-Jacobian product at x (equals A^T v for linear operators). */
STSL_API stsl_status stsl_operator_vjp(stsl_operator *op, const float *x, const float *v,
                                       float *out, int batch);
/* x = B y, a cheap initialisation: A^T y, or a pseudo-inverse where cheap (zero-filled
 * inpainting, bicubic upsampling for super-resolution, clip(y)/alpha for hdr). */
STSL_API stsl_status stsl_operator_backproject(stsl_operator *op, const float *y, float *x,
                                               int batch);
/* Simulate a measurement: y = A x + noise under the operator's noise model (Gaussian with
 * NOISE_SIGMA; salt-pepper adds impulses), reproducible from `seed`. */
STSL_API stsl_status stsl_operator_measure(stsl_operator *op, const float *x, float *y, int batch,
                                           uint64_t seed);
/* Data-fit loss l(y, A x) of the noise model, summed over the batch into loss[i] per sample
 * (loss may be NULL), and its gradient with respect to x into grad_x (may be NULL). */
STSL_API stsl_status stsl_operator_data_fit(stsl_operator *op, const float *y, const float *x,
                                            int batch, double *loss, float *grad_x);
STSL_API const char *stsl_operator_last_error(const stsl_operator *op);

/* ------------------------------------------------------------------------------------------ */
/* Scores: the diffusion prior.  eps(x, t) and J_eps(x, t)^T v, with its schedule.             */
/* ------------------------------------------------------------------------------------------ */

typedef struct stsl_score stsl_score;

/* Load a TorchScript UNet with its metadata record (docs/models.md).  Device and threads come
 * from ctx.  STSL_ERR_UNSUPPORTED when built without torch.
 * Environment, read at each load (this and stsl_autoencoder_load): STSL_JIT_OPTIMIZE=0 runs the
 * model's TorchScript graphs unoptimised from the first call (no profiling runs, no fusion:
 * faster first calls, possibly slower later ones, most of all on CUDA); 1 or unset: libtorch's
 * default.  Any other value fails the load with STSL_ERR_INVALID_ARG (docs/cuda.md, start-up).
 * With libtorch 1.x, 0 together with float16/bfloat16 fails the load with STSL_ERR_BACKEND
 * (1.x autocasts only optimised graphs); 2.x runs both.  STSL_CUDNN_BENCHMARK=1 turns libtorch's
 * cuDNN benchmark mode on when the model goes onto CUDA (each new convolution shape's first call
 * tries cuDNN's algorithms and keeps the fastest), 0 turns it off, unset leaves libtorch's
 * setting (off unless the process changed it); the mode is libtorch's, one per process, and
 * then holds for every convolution in it.  Any other value fails the load with
 * STSL_ERR_INVALID_ARG, on any device.  STSL_CUDA_GRAPHS=1 serves a model on CUDA from CUDA graphs:
 * each call that repeats (one method, one input shape) is captured on its third call and then
 * replayed with one launch; a call whose capture fails runs as before.  Each captured shape keeps
 * its activations on the GPU until the model is destroyed, which logs at STSL_LOG_INFO what was
 * captured and why a capture failed (docs/cuda.md, CUDA graphs).  0 or unset: no graphs; on the
 * CPU the switch changes nothing; 1 on CUDA in a build without CUDA graphs fails the load with
 * STSL_ERR_UNSUPPORTED; any other value with STSL_ERR_INVALID_ARG, on any device. */
STSL_API stsl_status stsl_score_load(stsl_context *ctx, const char *path, stsl_score **out);

/* Exact Gaussian-mixture prior p_0 = sum_k w_k N(mu_k, diag(var_k)) on `shape` (d = C*H*W),
 * with VP marginals under `sched` (borrowed: it must outlive the score).  weights: k floats
 * (normalised internally; > 0), means: k*d, variances: k (isotropic) or k*d (diagonal, set
 * diagonal = 1), all > 0; copied. */
STSL_API stsl_status stsl_score_create_gmm(stsl_context *ctx, stsl_shape shape, int components,
                                           const double *weights, const double *means,
                                           const double *variances, int diagonal,
                                           const stsl_schedule *sched, stsl_score **out);

/* User-supplied eps and its VJP (t is the timestep per sample). Return 0 on success. */
typedef struct stsl_score_vtable {
    size_t struct_size;   /* sizeof(stsl_score_vtable) */
    int (*eps)(void *user, const float *x, const float *t, float *eps, int batch);
    int (*eps_vjp)(void *user, const float *x, const float *t, const float *v, float *eps,
                   float *vjp, int batch);   /* eps may be NULL when not wanted */
    void (*destroy)(void *user);
} stsl_score_vtable;
STSL_API stsl_status stsl_score_create_custom(stsl_context *ctx, stsl_shape shape,
                                              const stsl_score_vtable *vtable, void *user,
                                              const stsl_schedule *sched, stsl_score **out);
STSL_API void stsl_score_destroy(stsl_score *score);

/* Shape of one sample the score works on. */
STSL_API stsl_status stsl_score_shape(const stsl_score *score, stsl_shape *shape);
/* The score's schedule (owned by the score or borrowed from the caller, valid while it lives). */
STSL_API const stsl_schedule *stsl_score_schedule(const stsl_score *score);
/* 1 when the prior lives in an autoencoder's latent space (metadata space = latent). */
STSL_API int stsl_score_is_latent(const stsl_score *score);

/* eps(x, t) for a batch; t holds one timestep per sample (float, training-step units). */
STSL_API stsl_status stsl_score_eps(stsl_score *score, const float *x, const float *t, float *eps,
                                    int batch);
/* vjp = J_eps(x, t)^T v; eps (may be NULL) receives eps(x, t) of the same evaluation. */
STSL_API stsl_status stsl_score_eps_vjp(stsl_score *score, const float *x, const float *t,
                                        const float *v, float *eps, float *vjp, int batch);
/* Derived: s = -eps / sqrt(1 - abar_t) and Tweedie x0hat = (x - sqrt(1 - abar) eps)/sqrt(abar),
 * for integer timesteps t (one per sample).  Either output may be NULL. */
STSL_API stsl_status stsl_score_tweedie(stsl_score *score, const float *x, const int *t,
                                        float *score_out, float *x0hat, int batch);
/* Metadata value of a loaded model ("prediction", "name", ...), NULL when absent; owned by
 * the score. */
STSL_API const char *stsl_score_meta(const stsl_score *score, const char *key);
STSL_API const char *stsl_score_last_error(const stsl_score *score);

/* ------------------------------------------------------------------------------------------ */
/* A model file's record, read without loading the model (since 1.2).                          */
/* ------------------------------------------------------------------------------------------ */

/* The stsl_meta.txt record of a model file (docs/models.md), read from the file's archive and
 * validated as a load validates it -- without loading the network: no weights are read and
 * nothing runs, so it costs milliseconds whatever the file declares.  A program can thus
 * compare its input with what a model declares (and refuse a mismatch) before a load, whose
 * probe forward runs the network on one sample of the declared shape.  Roles: unet,
 * autoencoder, encoder, decoder; a record a load would refuse is refused with the load's
 * message (STSL_ERR_MODEL), a file that is not TorchScript is STSL_ERR_FORMAT, an unreadable
 * one STSL_ERR_IO; STSL_ERR_UNSUPPORTED without the TorchScript backend.  The caller owns
 * *out (stsl_model_record_destroy). */
typedef struct stsl_model_record stsl_model_record;
STSL_API stsl_status stsl_model_record_read(stsl_context *ctx, const char *path,
                                            stsl_model_record **out);
/* NULL is a no-op. */
STSL_API void stsl_model_record_destroy(stsl_model_record *rec);
/* Value of `key` as written ("role", "name", "pairs_with", ...), NULL when absent; owned by the
 * record. */
STSL_API const char *stsl_model_record_get(const stsl_model_record *rec, const char *key);
/* The shapes a model declares, per sample: image (what it restores, or encodes/decodes) and
 * latent.  A pixel-space unet: image = its sample_shape, latent all zero; a latent unet: image
 * all zero (its autoencoder's record says it), latent = its sample_shape; an autoencoder,
 * encoder or decoder: its image_shape and latent_shape.  Either pointer may be NULL. */
STSL_API stsl_status stsl_model_record_shapes(const stsl_model_record *rec, stsl_shape *image,
                                              stsl_shape *latent);

/* ------------------------------------------------------------------------------------------ */
/* Autoencoders: E(x), D(z) and J_D(z)^T u.                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef struct stsl_autoencoder stsl_autoencoder;

/* One TorchScript file with encode/decode methods, or (decoder_path non-NULL) an encoder file and
 * a decoder file. */
STSL_API stsl_status stsl_autoencoder_load(stsl_context *ctx, const char *path,
                                           const char *decoder_path, stsl_autoencoder **out);
/* Identity autoencoder on `shape`: pixel-space solvers use it. */
STSL_API stsl_status stsl_autoencoder_create_identity(stsl_context *ctx, stsl_shape shape,
                                                      stsl_autoencoder **out);
STSL_API void stsl_autoencoder_destroy(stsl_autoencoder *ae);
STSL_API stsl_status stsl_autoencoder_image_shape(const stsl_autoencoder *ae, stsl_shape *shape);
STSL_API stsl_status stsl_autoencoder_latent_shape(const stsl_autoencoder *ae, stsl_shape *shape);
/* z = latent_scale * encode(x) */
STSL_API stsl_status stsl_autoencoder_encode(stsl_autoencoder *ae, const float *x, float *z,
                                             int batch);
/* x = decode(z / latent_scale) */
STSL_API stsl_status stsl_autoencoder_decode(stsl_autoencoder *ae, const float *z, float *x,
                                             int batch);
/* out = J_D(z)^T u; x (may be NULL) receives D(z) of the same evaluation. */
STSL_API stsl_status stsl_autoencoder_decode_vjp(stsl_autoencoder *ae, const float *z,
                                                 const float *u, float *x, float *out, int batch);
STSL_API const char *stsl_autoencoder_last_error(const stsl_autoencoder *ae);

/* ------------------------------------------------------------------------------------------ */
/* Solvers                                                                                     */
/* ------------------------------------------------------------------------------------------ */

typedef struct stsl_solver stsl_solver;

typedef enum stsl_solver_kind {
    STSL_SOLVER_DDIM = 0,            /* "ddim": unconditional DDIM (ignores y) */
    STSL_SOLVER_DPS = 1,             /* "dps" */
    STSL_SOLVER_LDPS = 2,            /* "ldps" */
    STSL_SOLVER_PSLD = 3,            /* "psld" */
    STSL_SOLVER_STSL = 4,            /* "stsl" */
    STSL_SOLVER_STSL_BIASED = 5,     /* "stsl-biased": eta = 0, K = 1 */
    STSL_SOLVER_RMP = 6,             /* "rmp" */
    STSL_SOLVER_DPS_MO = 7           /* "dps-mo" */
} stsl_solver_kind;

/* Network-evaluation ledger of the last run (per-sample counts: a call on a batch of b counts b).
 * A VJP includes its forward: it is counted under *_vjp only. */
typedef struct stsl_nfe {
    size_t struct_size;       /* set by the caller to sizeof(stsl_nfe) before the call */
    uint64_t unet_forward;
    uint64_t unet_vjp;
    uint64_t decoder_forward;
    uint64_t decoder_vjp;
    uint64_t encoder_forward;
    uint64_t unet_calls;      /* batched network invocations (forward or VJP) */
    double seconds;           /* wall time of the run */
} stsl_nfe;

/* Per-step progress: step counts 1..total.  x0 is the current clean-image estimate (batch *
 * image floats) when STSL_PARAM_PROGRESS_ESTIMATE is 1, else NULL; valid during the call.
 * Return non-zero to stop the run (it then returns STSL_CANCELLED within one network
 * evaluation). */
typedef int (*stsl_progress_fn)(void *user, int step, int total, const float *x0, int batch);

STSL_API stsl_status stsl_solver_create(stsl_context *ctx, stsl_solver_kind kind,
                                        stsl_solver **out);
STSL_API stsl_status stsl_solver_create_by_name(stsl_context *ctx, const char *name,
                                                stsl_solver **out);
/* Space-separated list of solver names; static string. */
STSL_API const char *stsl_solver_names(void);
STSL_API void stsl_solver_destroy(stsl_solver *solver);
STSL_API stsl_solver_kind stsl_solver_get_kind(const stsl_solver *solver);
STSL_API stsl_status stsl_solver_set_int(stsl_solver *solver, stsl_param key, int64_t value);
STSL_API stsl_status stsl_solver_set_float(stsl_solver *solver, stsl_param key, double value);
/* The value the next run uses: the one set, else the default that applies.  Some defaults depend
 * on other settings (RMP's VE variant has its own steps, inner steps and learning rate; STSL's
 * Adam step rule its own learning rate; DPS-MO with one denoiser pass 100 steps at eta 0.75) and
 * the getters follow them at once.  Others depend on the operator (DPS's zeta by the operator's
 * kind; RMP's zeta for the l1/huber losses and its likelihood variance, DPS-MO's denoiser passes
 * wherever the operator is not linear, the loss not squared or the prior latent, and with them
 * its steps and eta): the getters report them for the operator of the solver's last run, and
 * before its first run for a generic operator (linear, no kind of its own, squared loss, pixel
 * prior).  A run logs the values it uses at STSL_LOG_DEBUG. */
STSL_API stsl_status stsl_solver_get_int(const stsl_solver *solver, stsl_param key, int64_t *value);
STSL_API stsl_status stsl_solver_get_float(const stsl_solver *solver, stsl_param key,
                                           double *value);
/* Bounds of a parameter for a kind of solver; default_value is what stsl_solver_get_* reports
 * for a new solver of that kind (every other parameter at its default, the generic operator). */
STSL_API stsl_status stsl_solver_param_bounds(stsl_solver_kind kind, stsl_param key,
                                              stsl_param_bounds *bounds);
/* The keys a kind of solver uses, in the order a tool lists them (as stsl_operator_param_keys).
 * Added in 1.2. */
STSL_API stsl_status stsl_solver_param_keys(stsl_solver_kind kind, stsl_param *keys, int capacity,
                                            int *count);
STSL_API stsl_status stsl_solver_set_progress(stsl_solver *solver, stsl_progress_fn fn,
                                              void *user);

/* Restore a batch of `batch` independent measurements.
 *  score: the prior (borrowed); op: the measurement operator (borrowed); ae: the autoencoder
 *  (borrowed), or NULL for a pixel-space prior (then the identity is used).
 *  y: batch * op-output floats; x_out: batch * image floats (the autoencoder's image shape, or
 *  the score's shape in pixel space), written only on success or cancellation (then it holds
 *  the current estimate).  Sample i of a batch run with STSL_PARAM_SEED s draws its randomness
 *  exactly as a single run with seed s + i, so a batch gives the same results as the samples run
 *  one by one; use seeds at least `batch` apart for independent batches. */
STSL_API stsl_status stsl_solver_run(stsl_solver *solver, stsl_score *score, stsl_operator *op,
                                     stsl_autoencoder *ae, const float *y, float *x_out,
                                     int batch);
/* stsl_solver_run with each sample's randomness chosen by the caller: sample i draws exactly as a
 * single run with STSL_PARAM_SEED seeds[i] (seeds: `batch` values, borrowed for the call; NULL
 * gives stsl_solver_run's rule, seed s + i).  Key the seed by the item's identity (say, a hash of
 * its name) and an item restores the same whichever batch, shard or neighbours it runs with, to
 * float rounding: libtorch's kernels (oneDNN convolutions, BLAS GEMMs) pick their code by the
 * call's size and may round a sample by its place in the call (on AMD EPYC with AVX-512, even at
 * one call size), about 1e-6 after a few steps.  Bit for bit: set STSL_PARAM_PAD_BATCH to 1 in
 * every run; each sample then runs as a run of its own (one sample a call), the same program
 * whatever the batch, on any CPU, for the same build, thread count and device.  That costs the
 * batching's speed.  With P > 1 the calls have one size, but the place in the call still counts on
 * some CPUs, so only P = 1 carries the promise.  With P set, progress steps count across the
 * groups (total = groups * steps) and the callback sees the current group's samples; after a
 * cancel, samples of groups not yet started are left as they were.  Padded points cost compute
 * but are not counted in the NFE ledger.  Added in 1.1 (symbol version STSL_1.1). */
STSL_API stsl_status stsl_solver_run_seeded(stsl_solver *solver, stsl_score *score,
                                            stsl_operator *op, stsl_autoencoder *ae,
                                            const float *y, float *x_out, int batch,
                                            const uint64_t *seeds);
/* Stop a run in progress; safe from any thread (and from the progress callback). */
STSL_API void stsl_solver_cancel(stsl_solver *solver);
/* NFE ledger of the last run (also after a failed or cancelled run). */
STSL_API stsl_status stsl_solver_get_nfe(const stsl_solver *solver, stsl_nfe *nfe);
/* Progress step (1..total) at which the last run failed (e.g. STSL_ERR_NUMERIC), 0 when it failed
 * during initialisation, -1 when it did not fail. */
STSL_API int stsl_solver_failed_step(const stsl_solver *solver);
STSL_API const char *stsl_solver_last_error(const stsl_solver *solver);

#ifdef __cplusplus
}
#endif

#endif /* STSL_H */
