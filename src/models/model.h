/*
 * model.h -- the models room: a TorchScript model file loaded through the libtorch shim on the
 * context's device, with its stsl_meta.txt record parsed and validated (models/meta.h).
 * scores/torchscript.c and autoencoders/torchscript.c are its users; nothing outside
 * src/models sees the shim.
 *
 * Built without libtorch (WITH_TORCH=0), stsl__model_open fails with STSL_ERR_UNSUPPORTED and
 * no model ever exists.
 */
#ifndef STSL_MODELS_MODEL_H
#define STSL_MODELS_MODEL_H

#include "models/meta.h"

typedef struct stsl__model stsl__model;

/* Open a model file: load it on the context's device and precision, and parse its record;
 * validate the record for one of `allowed_roles` (bit mask of 1 << STSL__ROLE_*), or, with 0,
 * parse it only (a file of a role the library does not run, e.g. a classifier; *meta is then
 * zeroed).  The model keeps `ctx` (its thread count applies at every call).  On failure *out is
 * NULL and the context carries the message (naming the path). */
stsl_status stsl__model_open(stsl_context *ctx, const char *path, unsigned allowed_roles,
                             stsl__model **out);
/* STSL_OK when `path` opens for reading, else STSL_ERR_IO and the context says why: checked
 * before libtorch sees the path, so that a missing file gets the system's reason. */
stsl_status stsl__model_check_readable(stsl_context *ctx, const char *path);
/* STSL_OK unless `path` is a zip archive one of whose records is damaged: a record (stored, or
 * deflated and inflated) whose CRC-32 differs from its directory's, or a record outside the file
 * (STSL_ERR_FORMAT, the context names the record).  A file that is not a readable archive is left to libtorch.
 * (models/archive.c; libtorch itself does not check the CRCs.) */
stsl_status stsl__model_verify_archive(stsl_context *ctx, const char *path);
/* NULL is a no-op. */
void stsl__model_free(stsl__model *m);

/* The validated record; its strings point into the record's entries (see stsl__model_take_record). */
const stsl__model_meta *stsl__model_get_meta(const stsl__model *m);
/* The record's entries (owned by the model until taken). */
const stsl__meta_entry *stsl__model_record(const stsl__model *m, int *count);
/* Hand the entries to the caller (stsl__meta_free; stsl__model_get_meta's strings live as long as
 * they do); the model keeps none. */
void stsl__model_take_record(stsl__model *m, stsl__meta_entry **entries, int *count);

/* For log lines: the resolved device ("cpu", "cuda:0"), the precision evaluations run in
 * ("float32", ...), and whether the module was frozen at load (shim/shim.h). */
const char *stsl__model_device(const stsl__model *m);
const char *stsl__model_precision_name(const stsl__model *m);
int stsl__model_is_frozen(const stsl__model *m);

/* STSL_ERR_MODEL unless `method` takes n_inputs tensors (x, or x and t) and returns one. */
stsl_status stsl__model_check_method(stsl__model *m, const char *method, int n_inputs,
                                     char *err);

/* out = method(x[, t]) on a batch: x of shape in, out of shape out (per sample); t NULL for a
 * one-input method, else `batch` timesteps.  err: STSL_ERRMSG_SIZE bytes. */
stsl_status stsl__model_forward(stsl__model *m, const char *method, const float *x,
                                stsl_shape in, const float *t, float *out, stsl_shape out_shape,
                                int batch, char *err);
/* grad = J^T v of the same evaluation (v of out_shape, grad of in); out (may be NULL) receives
 * method(x[, t]). */
stsl_status stsl__model_vjp(stsl__model *m, const char *method, const float *x, stsl_shape in,
                            const float *t, const float *v, stsl_shape out_shape, float *out,
                            float *grad, int batch, char *err);

/* One evaluation kept for ONE later VJP (one forward and one backward in all). */
typedef struct stsl__model_pass stsl__model_pass;
/* As stsl__model_forward, the evaluation kept in *pass (NULL on failure); free the pass before
 * the model. */
stsl_status stsl__model_forward_keep(stsl__model *m, const char *method, const float *x,
                                     stsl_shape in, const float *t, float *out,
                                     stsl_shape out_shape, int batch, stsl__model_pass **pass,
                                     char *err);
/* grad = J^T v at the point kept by m; spends the pass (free it still). */
stsl_status stsl__model_pass_vjp(stsl__model *m, stsl__model_pass *pass, const float *v,
                                 float *grad, char *err);
/* NULL is a no-op. */
void stsl__model_pass_free(stsl__model_pass *pass);

/* A load's check that the network runs on what its record declares: one forward of a batch of
 * one zero sample (t = 0 when with_t) that must return out_shape.  STSL_ERR_NOMEM, or the
 * shim's status with its message in err. */
stsl_status stsl__model_probe(stsl__model *m, const char *method, stsl_shape in,
                              stsl_shape out_shape, int with_t, char *err);

#endif
