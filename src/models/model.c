/*
 * model.c -- TorchScript model files over the libtorch shim (see model.h, docs/models.md).
 * The shim is handed a resolved device (models/device.c) and host buffers; the record it
 * returns is parsed and validated here (models/meta.c).
 */
#include "models/model.h"

#include "models/device.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define NO_TORCH_MSG "built without TorchScript support (rebuild with libtorch, WITH_TORCH=1)"

stsl_status stsl__model_check_readable(stsl_context *ctx, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        return stsl__ctx_fail(ctx, STSL_ERR_IO, "cannot open model file '%s': %s", path,
                              strerror(e));
    }
    fclose(f);
    return STSL_OK;
}

#ifndef STSL_WITH_TORCH

/* No model can be opened: the other entry points are never reached with one. */
stsl_status stsl__model_open(stsl_context *ctx, const char *path, unsigned allowed_roles,
                             stsl__model **out)
{
    (void)allowed_roles;
    if (out) *out = NULL;
    return stsl__ctx_fail(ctx, STSL_ERR_UNSUPPORTED, "'%s': " NO_TORCH_MSG, path ? path : "");
}
void stsl__model_free(stsl__model *m) { (void)m; }
const stsl__model_meta *stsl__model_get_meta(const stsl__model *m)
{
    (void)m;
    return NULL;
}
const stsl__meta_entry *stsl__model_record(const stsl__model *m, int *count)
{
    (void)m;
    *count = 0;
    return NULL;
}
void stsl__model_take_record(stsl__model *m, stsl__meta_entry **entries, int *count)
{
    (void)m;
    *entries = NULL;
    *count = 0;
}
const char *stsl__model_device(const stsl__model *m)
{
    (void)m;
    return "";
}
const char *stsl__model_precision_name(const stsl__model *m)
{
    (void)m;
    return "";
}
int stsl__model_is_frozen(const stsl__model *m)
{
    (void)m;
    return 0;
}
static stsl_status no_torch(char *err) { return stsl__fail(err, STSL_ERR_UNSUPPORTED, NO_TORCH_MSG); }
stsl_status stsl__model_check_method(stsl__model *m, const char *method, int n_inputs, char *err)
{
    (void)m, (void)method, (void)n_inputs;
    return no_torch(err);
}
stsl_status stsl__model_forward(stsl__model *m, const char *method, const float *x,
                                stsl_shape in, const float *t, float *out, stsl_shape out_shape,
                                int batch, char *err)
{
    (void)m, (void)method, (void)x, (void)in, (void)t, (void)out, (void)out_shape, (void)batch;
    return no_torch(err);
}
stsl_status stsl__model_vjp(stsl__model *m, const char *method, const float *x, stsl_shape in,
                            const float *t, const float *v, stsl_shape out_shape, float *out,
                            float *grad, int batch, char *err)
{
    (void)m, (void)method, (void)x, (void)in, (void)t, (void)v, (void)out_shape, (void)out;
    (void)grad, (void)batch;
    return no_torch(err);
}
stsl_status stsl__model_forward_keep(stsl__model *m, const char *method, const float *x,
                                     stsl_shape in, const float *t, float *out,
                                     stsl_shape out_shape, int batch, stsl__model_pass **pass,
                                     char *err)
{
    (void)m, (void)method, (void)x, (void)in, (void)t, (void)out, (void)out_shape, (void)batch;
    if (pass) *pass = NULL;
    return no_torch(err);
}
stsl_status stsl__model_pass_vjp(stsl__model *m, stsl__model_pass *pass, const float *v,
                                 float *grad, char *err)
{
    (void)m, (void)pass, (void)v, (void)grad;
    return no_torch(err);
}
void stsl__model_pass_free(stsl__model_pass *pass) { (void)pass; }
stsl_status stsl__model_probe(stsl__model *m, const char *method, stsl_shape in,
                              stsl_shape out_shape, int with_t, char *err)
{
    (void)m, (void)method, (void)in, (void)out_shape, (void)with_t;
    return no_torch(err);
}

#else

#include "../../shim/shim.h"   /* src/models alone includes it (Makefile: STSL_SHIM_USER) */

struct stsl__model {
    stsl_context *ctx;
    stsl_shim_module *mod;
    stsl__meta_entry *entries;
    int n_entries;
    stsl__model_meta meta;
};

stsl_status stsl__model_open(stsl_context *ctx, const char *path, unsigned allowed_roles,
                             stsl__model **out)
{
    *out = NULL;
    stsl_status st = stsl__model_check_readable(ctx, path);
    if (st == STSL_OK) st = stsl__model_verify_archive(ctx, path);
    if (st != STSL_OK) return st;

    stsl__model *m = stsl__calloc(1, sizeof *m);
    if (!m) return stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "'%s': out of memory", path);
    m->ctx = ctx;
    char err[STSL_ERRMSG_SIZE] = "";
    int auto_cpu = 0;
    const int cuda_index = stsl__device_resolve(ctx->device, &auto_cpu);
    /* "auto" asks for the best the machine has: without a GPU that is float32 */
    st = stsl_shim_load(path, cuda_index, ctx->precision, auto_cpu, &m->mod, err,
                                    sizeof err);
    if (st != STSL_OK) {
        stsl__free(m);
        return stsl__ctx_fail(ctx, st, "%s", err);
    }
    size_t len = 0;
    const char *text = stsl_shim_meta(m->mod, &len);
    st = stsl__meta_parse(text, len, &m->entries, &m->n_entries, err);
    if (st == STSL_OK && allowed_roles)
        st = stsl__meta_validate(m->entries, m->n_entries, allowed_roles, &m->meta, err);
    if (st != STSL_OK) {
        stsl__model_free(m);
        return stsl__ctx_fail(ctx, st, "'%s': %s", path, err);
    }
    *out = m;
    return STSL_OK;
}

void stsl__model_free(stsl__model *m)
{
    if (!m) return;
    char report[512];
    if (stsl_shim_cuda_graphs_report(m->mod, report, sizeof report) > 0)   /* STSL_CUDA_GRAPHS */
        stsl__log(m->ctx, STSL_LOG_INFO, "CUDA graphs of the %s model: %s", stsl__model_device(m), report);
    stsl_shim_free(m->mod);
    stsl__meta_free(m->entries, m->n_entries);
    stsl__free(m);
}

const stsl__model_meta *stsl__model_get_meta(const stsl__model *m) { return &m->meta; }

const stsl__meta_entry *stsl__model_record(const stsl__model *m, int *count)
{
    *count = m->n_entries;
    return m->entries;
}

void stsl__model_take_record(stsl__model *m, stsl__meta_entry **entries, int *count)
{
    *entries = m->entries;
    *count = m->n_entries;
    m->entries = NULL;
    m->n_entries = 0;
}

const char *stsl__model_device(const stsl__model *m) { return stsl_shim_device(m->mod); }

const char *stsl__model_precision_name(const stsl__model *m)
{
    return stsl_shim_precision_name(stsl_shim_precision(m->mod));
}

int stsl__model_is_frozen(const stsl__model *m) { return stsl_shim_is_frozen(m->mod); }

stsl_status stsl__model_check_method(stsl__model *m, const char *method, int n_inputs, char *err)
{
    return stsl_shim_check_method(m->mod, method, n_inputs, err, STSL_ERRMSG_SIZE);
}

/* NCHW dimensions of a batch of samples of shape s. */
static void dims_of(stsl_shape s, int batch, int64_t d[4])
{
    d[0] = batch;
    d[1] = s.channels;
    d[2] = s.height;
    d[3] = s.width;
}

stsl_status stsl__model_forward(stsl__model *m, const char *method, const float *x,
                                stsl_shape in, const float *t, float *out, stsl_shape out_shape,
                                int batch, char *err)
{
    int64_t di[4], dout[4];
    dims_of(in, batch, di);
    dims_of(out_shape, batch, dout);
    return stsl_shim_forward(m->mod, method, x, di, t, out, dout, stsl__ctx_threads(m->ctx), err,
                             STSL_ERRMSG_SIZE);
}

stsl_status stsl__model_vjp(stsl__model *m, const char *method, const float *x, stsl_shape in,
                            const float *t, const float *v, stsl_shape out_shape, float *out,
                            float *grad, int batch, char *err)
{
    int64_t di[4], dout[4];
    dims_of(in, batch, di);
    dims_of(out_shape, batch, dout);
    return stsl_shim_vjp(m->mod, method, x, di, t, v, dout, out, grad, stsl__ctx_threads(m->ctx),
                         err, STSL_ERRMSG_SIZE);
}

/* A pass is the shim's kept graph under another name (never dereferenced here). */
static stsl_shim_graph *graph_of(stsl__model_pass *pass) { return (stsl_shim_graph *)pass; }

stsl_status stsl__model_forward_keep(stsl__model *m, const char *method, const float *x,
                                     stsl_shape in, const float *t, float *out,
                                     stsl_shape out_shape, int batch, stsl__model_pass **pass,
                                     char *err)
{
    int64_t di[4], dout[4];
    dims_of(in, batch, di);
    dims_of(out_shape, batch, dout);
    stsl_shim_graph *g = NULL;
    stsl_status st = stsl_shim_forward_graph(m->mod, method, x, di, t, out, dout,
                                             stsl__ctx_threads(m->ctx), &g, err, STSL_ERRMSG_SIZE);
    *pass = (stsl__model_pass *)g;
    return st;
}

stsl_status stsl__model_pass_vjp(stsl__model *m, stsl__model_pass *pass, const float *v,
                                 float *grad, char *err)
{
    return stsl_shim_graph_vjp(graph_of(pass), v, grad, stsl__ctx_threads(m->ctx), err,
                               STSL_ERRMSG_SIZE);
}

void stsl__model_pass_free(stsl__model_pass *pass) { stsl_shim_graph_free(graph_of(pass)); }

stsl_status stsl__model_probe(stsl__model *m, const char *method, stsl_shape in,
                              stsl_shape out_shape, int with_t, char *err)
{
    const size_t ni = stsl__shape_size(in), no = stsl__shape_size(out_shape);
    float *buf = stsl__alloc_floats(ni + no + 1);
    if (!buf) return stsl__fail(err, STSL_ERR_NOMEM, "out of memory probing the model");
    memset(buf, 0, (ni + no + 1) * sizeof *buf);
    stsl_status st = stsl__model_forward(m, method, buf, in, with_t ? buf + ni + no : NULL,
                                         buf + ni, out_shape, 1, err);
    stsl__free(buf);
    return st;
}

#endif /* STSL_WITH_TORCH */
