/*
 * common.c -- what all solvers share (see solver_internal.h): network calls with cancel check,
 * chunking and NFE ledger; the Tweedie step and its VJP; the data-fit gradient through the whole
 * chain; Adam; progress; NaN/Inf detection; per-sample random streams.
 */
#include "solvers/solver_internal.h"

#include <math.h>
#include <string.h>

/* The scratch pool (stsl__run_floats) hides a use after stsl__run_give and a read of stale data
 * from the checkers, which see one long-lived block: tell them what is lent and what is not. */
#if defined(__SANITIZE_ADDRESS__)
#define SCRATCH_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SCRATCH_ASAN 1
#endif
#endif
#if defined(SCRATCH_ASAN)
#include <sanitizer/asan_interface.h>
#define SCRATCH_LEND_ASAN(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n) * sizeof(float))
#define SCRATCH_TAKE_ASAN(p, n) ASAN_POISON_MEMORY_REGION((p), (n) * sizeof(float))
#else
#define SCRATCH_LEND_ASAN(p, n) ((void)0)
#define SCRATCH_TAKE_ASAN(p, n) ((void)0)
#endif
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define SCRATCH_LEND_VG(p, n) VALGRIND_MAKE_MEM_UNDEFINED((p), (n) * sizeof(float))
#define SCRATCH_TAKE_VG(p, n) VALGRIND_MAKE_MEM_NOACCESS((p), (n) * sizeof(float))
#endif
#endif
#ifndef SCRATCH_LEND_VG
#define SCRATCH_LEND_VG(p, n) ((void)0)
#define SCRATCH_TAKE_VG(p, n) ((void)0)
#endif
/* lent: the n floats asked for become addressable and undefined; taken back: the whole slot
 * becomes unaddressable until it is lent again (and addressable before it is freed) */
#define SCRATCH_LEND(p, n) (SCRATCH_LEND_ASAN(p, n), SCRATCH_LEND_VG(p, n))
#define SCRATCH_TAKE(p, n) (SCRATCH_TAKE_ASAN(p, n), SCRATCH_TAKE_VG(p, n))

static float *new_floats(stsl__run *R, size_t n)
{
    float *p = stsl__alloc_floats(n ? n : 1);
    if (!p) stsl__fail(R->err, STSL_ERR_NOMEM, "solver: out of memory (%zu floats)", n);
    return p;
}

/* The smallest idle slot that holds n floats; else an empty slot, else the largest idle one
 * (grown); -1 when every slot is lent (the caller then gets a buffer of its own). */
static int scratch_slot_for(const stsl__run *R, size_t n)
{
    int fit = -1, empty = -1, grow = -1;
    for (int i = 0; i < STSL__RUN_SCRATCH_MAX; i++) {
        const stsl__scratch_slot *s = &R->scratch[i];
        if (!s->p) {
            if (empty < 0) empty = i;
        } else if (!s->busy) {
            if (s->n >= n) {
                if (fit < 0 || s->n < R->scratch[fit].n) fit = i;
            } else if (grow < 0 || s->n > R->scratch[grow].n) {
                grow = i;
            }
        }
    }
    return fit >= 0 ? fit : empty >= 0 ? empty : grow;
}

float *stsl__run_floats(stsl__run *R, size_t n)
{
    if (!n) n = 1;
    int i = scratch_slot_for(R, n);
    if (i < 0) return new_floats(R, n);
    stsl__scratch_slot *s = &R->scratch[i];
    if (s->n < n) {
        if (s->p) SCRATCH_LEND(s->p, s->n);
        stsl__free(s->p);
        s->n = 0;
        if (!(s->p = new_floats(R, n))) return NULL;
        s->n = n;
    }
    SCRATCH_TAKE(s->p, s->n);   /* beyond the n asked for stays unaddressable */
    SCRATCH_LEND(s->p, n);
    s->busy = 1;
    return s->p;
}

void stsl__run_give(stsl__run *R, float *p)
{
    if (!p) return;
    for (int i = 0; i < STSL__RUN_SCRATCH_MAX; i++)
        if (R->scratch[i].p == p) {
            R->scratch[i].busy = 0;
            SCRATCH_TAKE(p, R->scratch[i].n);
            return;
        }
    stsl__free(p);   /* lent while every slot was out */
}

static void *run_keep(stsl__run *R, void *p)
{
    if (p && R->n_work == STSL__RUN_WORK_MAX) {
        stsl__free(p);
        stsl__fail(R->err, STSL_ERR_INTERNAL, "solver: more than %d work buffers", STSL__RUN_WORK_MAX);
        return NULL;
    }
    if (p) R->work[R->n_work++] = p;
    return p;
}

float *stsl__run_buffer(stsl__run *R, size_t n) { return run_keep(R, new_floats(R, n)); }

double *stsl__run_doubles(stsl__run *R, size_t n)
{
    double *p = stsl__alloc_doubles(n ? n : 1);
    if (!p) stsl__fail(R->err, STSL_ERR_NOMEM, "solver: out of memory (%zu doubles)", n);
    return run_keep(R, p);
}

void stsl__run_release(stsl__run *R)
{
    for (int i = 0; i < R->n_work; i++) stsl__free(R->work[i]);
    R->n_work = 0;
    for (int i = 0; i < STSL__RUN_SCRATCH_MAX; i++) {
        if (R->scratch[i].p) SCRATCH_LEND(R->scratch[i].p, R->scratch[i].n);
        stsl__free(R->scratch[i].p);
    }
    memset(R->scratch, 0, sizeof R->scratch);
}

stsl_status stsl__ddim_seq(stsl__run *R, int n, int **out)
{
    *out = NULL;
    if (n < 1 || n > R->T_train)
        return stsl__fail(R->err, STSL_ERR_INVALID_ARG,
                          "solver: %d steps requested but the schedule has %d timesteps", n,
                          R->T_train);
    int *seq = (int *)stsl__malloc((size_t)n * sizeof(int));
    if (!seq) return stsl__fail(R->err, STSL_ERR_NOMEM, "solver: out of memory");
    stsl_status st = stsl_schedule_ddim_steps(R->sched, n, seq);
    if (st != STSL_OK) {
        stsl__free(seq);
        return stsl__fail(R->err, st, "solver: cannot build %d DDIM steps", n);
    }
    *out = seq;
    return STSL_OK;
}

void stsl__noise(const stsl__run *R, uint32_t tag, uint64_t a, uint64_t b, float *out, size_t n)
{
    /* over the context's threads (the draws do not depend on the split); it cannot fail here */
    for (int i = 0; i < R->batch; i++)
        (void)stsl_random_normal(R->ctx, stsl__sample_seed(R, i), stsl__stream(tag, 0, a, b), 0,
                                 out + (size_t)i * n, n);
}

static void *noise_ahead_main(void *arg)
{
    stsl__noise_ahead *job = arg;
    stsl__noise(job->R, job->tag, job->a, job->b, job->out, job->n);
    return NULL;
}

void stsl__noise_ahead_begin(const stsl__run *R, stsl__noise_ahead *job, uint32_t tag, uint64_t a,
                             uint64_t b, float *out, size_t n)
{
    *job = (stsl__noise_ahead){.R = R, .tag = tag, .a = a, .b = b, .out = out, .n = n, .started = 0};
    if ((size_t)R->batch * n >= STSL__NOISE_AHEAD_MIN &&
        pthread_create(&job->thread, NULL, noise_ahead_main, job) == 0) {
        job->started = 1;
        return;
    }
    stsl__noise(R, tag, a, b, out, n);
}

void stsl__noise_ahead_end(stsl__noise_ahead *job)
{
    if (job->started) pthread_join(job->thread, NULL);
    job->started = 0;
}

stsl_status stsl__check_cancel(stsl__run *R)
{
    if (atomic_load(&R->sv->cancel))
        return stsl__fail(R->err, STSL_CANCELLED, "solver: cancelled at step %d of %d",
                          stsl__run_step(R, R->step), stsl__run_total(R));
    return STSL_OK;
}

/* ---- network calls ---- */

/* One place for the six kinds of network call: their row sizes, their backend call, their line
 * in the ledger, and the chunking (and, with STSL_PARAM_PAD_BATCH, the padding) around them. */
typedef enum net_kind { NET_EPS, NET_EPS_VJP, NET_DEC, NET_DEC_VJP, NET_ENC, NET_ENC_VJP } net_kind;

/* in: the points; t: their times (UNet); v: the cotangent (VJPs); out: the value (eps, D(z),
 * E(x)), NULL when a VJP's caller does not want it; out2: the VJP. */
typedef struct net_io {
    const float *in, *t, *v;
    float *out, *out2;
} net_io;

typedef struct net_rows {
    size_t in, v, out, out2;   /* floats per point of each buffer (0: the kind has none) */
} net_rows;

static net_rows rows_of(const stsl__run *R, net_kind kind)
{
    switch (kind) {
    case NET_EPS: return (net_rows){R->dz, 0, R->dz, 0};
    case NET_EPS_VJP: return (net_rows){R->dz, R->dz, R->dz, R->dz};
    case NET_DEC: return (net_rows){R->dz, 0, R->dx, 0};
    case NET_DEC_VJP: return (net_rows){R->dz, R->dx, R->dx, R->dz};
    case NET_ENC: return (net_rows){R->dx, 0, R->dz, 0};
    case NET_ENC_VJP: return (net_rows){R->dx, R->dz, 0, R->dx};
    }
    return (net_rows){0, 0, 0, 0};
}

static net_io io_at(const net_io *io, net_rows r, int t_used, size_t i)
{
    net_io o;
    o.in = io->in + i * r.in;
    o.t = t_used ? io->t + i : NULL;
    o.v = io->v ? io->v + i * r.v : NULL;
    o.out = io->out ? io->out + i * r.out : NULL;
    o.out2 = io->out2 ? io->out2 + i * r.out2 : NULL;
    return o;
}

/* One backend call of c points; `real` of them count in the ledger (the rest are padding).
 * `cancellable` 0: the call runs whatever the cancel flag (the final decode writes the estimate). */
static stsl_status net_call(stsl__run *R, net_kind kind, const net_io *io, int c, int real,
                            int cancellable)
{
    stsl_status st = cancellable ? stsl__check_cancel(R) : STSL_OK;
    if (st != STSL_OK) return st;
    stsl_nfe *nfe = &R->sv->nfe;
    switch (kind) {
    case NET_EPS:
        st = stsl__score_eps(R->score, io->in, io->t, io->out, c, R->err);
        nfe->unet_calls++;
        nfe->unet_forward += (uint64_t)real;
        break;
    case NET_EPS_VJP:
        st = stsl__score_eps_vjp(R->score, io->in, io->t, io->v, io->out, io->out2, c, R->err);
        nfe->unet_calls++;
        nfe->unet_vjp += (uint64_t)real;
        break;
    case NET_DEC:
        st = stsl__ae_decode(R->ae, io->in, io->out, c, R->err);
        nfe->decoder_forward += (uint64_t)real;
        break;
    case NET_DEC_VJP:
        st = stsl__ae_decode_vjp(R->ae, io->in, io->v, io->out, io->out2, c, R->err);
        nfe->decoder_vjp += (uint64_t)real;
        break;
    case NET_ENC:
        st = stsl__ae_encode(R->ae, io->in, io->out, c, R->err);
        nfe->encoder_forward += (uint64_t)real;
        break;
    case NET_ENC_VJP:
        st = stsl__ae_encode_vjp(R->ae, io->in, io->v, io->out2, c, R->err);
        nfe->encoder_forward += (uint64_t)real;   /* the ledger has no encoder-VJP field */
        break;
    }
    return st;
}

/* Points per backend call for n points: the limit, or with STSL_PARAM_PAD_BATCH P the points a
 * run of P samples would give this call (n / batch per sample), capped by the limit.  It depends
 * on P, not on the real batch, so every point is computed in calls of one size. */
static int call_size(const stsl__run *R, int n)
{
    if (R->pad_batch <= 0) return R->limit;
    long long per_sample = (n + R->batch - 1) / R->batch;
    long long c = per_sample * R->pad_batch;
    return c < R->limit ? (int)c : R->limit;
}

/* Padded copies of c points as `size` points: inputs and times repeat the last point (a valid
 * input), cotangents are 0, outputs are scratch; net_unpad copies the c real outputs back. */
typedef struct net_pad {
    float *buf;
    net_io io;
} net_pad;

static stsl_status net_pad_make(stsl__run *R, net_kind kind, const net_io *io, int c, int size,
                                net_pad *p)
{
    const net_rows r = rows_of(R, kind);
    const int has_t = kind == NET_EPS || kind == NET_EPS_VJP;
    const size_t S = (size_t)size;
    size_t total = S * ((io->in ? r.in : 0) + (has_t && io->t ? 1 : 0) + (io->v ? r.v : 0) +
                        (io->out ? r.out : 0) + (io->out2 ? r.out2 : 0));
    memset(p, 0, sizeof *p);
    p->buf = stsl__run_floats(R, total);
    if (!p->buf) return STSL_ERR_NOMEM;
    memset(p->buf, 0, total * sizeof(float));
    float *q = p->buf;
    if (io->in) {   /* a kept pass's VJP has its points in the backend already: no inputs */
        float *in = q;
        q += S * r.in;
        memcpy(in, io->in, (size_t)c * r.in * sizeof(float));
        for (int i = c; i < size; i++)
            memcpy(in + (size_t)i * r.in, io->in + (size_t)(c - 1) * r.in, r.in * sizeof(float));
        p->io.in = in;
    }
    if (has_t && io->t) {
        float *t = q;
        q += S;
        memcpy(t, io->t, (size_t)c * sizeof(float));
        for (int i = c; i < size; i++) t[i] = io->t[c - 1];
        p->io.t = t;
    }
    if (io->v) {
        float *v = q;
        q += S * r.v;
        memcpy(v, io->v, (size_t)c * r.v * sizeof(float));
        p->io.v = v;
    }
    if (io->out) p->io.out = q, q += S * r.out;
    if (io->out2) p->io.out2 = q;
    return STSL_OK;
}

static void net_unpad(const stsl__run *R, net_kind kind, const net_pad *p, const net_io *io, int c)
{
    const net_rows r = rows_of(R, kind);
    if (io->out) memcpy(io->out, p->io.out, (size_t)c * r.out * sizeof(float));
    if (io->out2) memcpy(io->out2, p->io.out2, (size_t)c * r.out2 * sizeof(float));
}

/* n points in calls of call_size(R, n); with PAD_BATCH a short last call is padded. */
static stsl_status net_chunked(stsl__run *R, net_kind kind, const net_io *io, int n, int cancellable)
{
    const net_rows r = rows_of(R, kind);
    const int has_t = kind == NET_EPS || kind == NET_EPS_VJP;
    const int size = call_size(R, n);
    for (int i = 0; i < n; i += size) {
        int c = n - i < size ? n - i : size;
        net_io part = io_at(io, r, has_t, (size_t)i);
        if (R->pad_batch <= 0 || c == size) {
            stsl_status st = net_call(R, kind, &part, c, c, cancellable);
            if (st != STSL_OK) return st;
            continue;
        }
        net_pad p;
        stsl_status st = net_pad_make(R, kind, &part, c, size, &p);
        if (st == STSL_OK) st = net_call(R, kind, &p.io, size, c, cancellable);
        if (st == STSL_OK) net_unpad(R, kind, &p, &part, c);
        stsl__run_give(R, p.buf);
        if (st != STSL_OK) return st;
    }
    return STSL_OK;
}

stsl_status stsl__net_eps_vjp(stsl__run *R, const float *z, const float *t, const float *v,
                              float *eps, float *vjp, int n)
{
    net_io io = {z, t, v, eps, vjp};
    return net_chunked(R, v ? NET_EPS_VJP : NET_EPS, &io, n, 1);
}

stsl_status stsl__net_eps(stsl__run *R, const float *z, const float *t, float *eps, int n)
{
    return stsl__net_eps_vjp(R, z, t, NULL, eps, NULL, n);
}

/* tt[0..n) = t; tt (NULL passes through, the allocation having failed) */
static float *fill_t(float *tt, double t, int n)
{
    if (tt)
        for (int i = 0; i < n; i++) tt[i] = (float)t;
    return tt;
}

stsl_status stsl__net_eps_t(stsl__run *R, const float *z, double t, float *eps, int n)
{
    float *tt = fill_t(stsl__run_floats(R, (size_t)n), t, n);
    if (!tt) return STSL_ERR_NOMEM;
    stsl_status st = stsl__net_eps(R, z, tt, eps, n);
    stsl__run_give(R, tt);
    return st;
}

/* ---- kept evaluations: one pass for an output and its VJP ---- */

/* n points fit one kept call.  With PAD_BATCH the answer must not depend on the real batch
 * either (a kept call and a forward-only call may round differently: libtorch picks its kernels
 * for inference or for training), so it is the answer for a run of P samples. */
static int fits_one_call(const stsl__run *R, int n)
{
    if (R->pad_batch <= 0) return n <= R->limit;
    long long per_sample = (n + R->batch - 1) / R->batch;
    return per_sample * (R->batch > R->pad_batch ? R->batch : R->pad_batch) <= R->limit;
}

int stsl__net_can_keep(const stsl__run *R, int n)
{
    return stsl__score_can_keep(R->score) && fits_one_call(R, n);
}

/* The kept call of k->n points, padded to call_size when PAD_BATCH asks for it: the value now;
 * the backend copies its inputs, so the padded buffer goes at once. */
static stsl_status keep_call(stsl__run *R, net_kind kind, const net_io *io, stsl__kept *k)
{
    int size = R->pad_batch > 0 ? call_size(R, k->n) : k->n;
    net_pad p = {NULL, *io};
    stsl_status st = STSL_OK;
    if (size > k->n) st = net_pad_make(R, kind, io, k->n, size, &p);
    if (st == STSL_OK) st = stsl__check_cancel(R);
    if (st == STSL_OK) {
        if (kind == NET_EPS) {
            st = stsl__score_eps_keep(R->score, p.io.in, p.io.t, p.io.out, size, &k->unet, R->err);
            R->sv->nfe.unet_calls++;
            R->sv->nfe.unet_vjp += (uint64_t)k->n;   /* the forward of a VJP is part of the VJP */
        } else {
            st = stsl__ae_decode_keep(R->ae, p.io.in, p.io.out, size, &k->dec, R->err);
            R->sv->nfe.decoder_vjp += (uint64_t)k->n;
        }
    }
    if (st == STSL_OK && size > k->n) net_unpad(R, kind, &p, io, k->n);
    stsl__run_give(R, p.buf);
    k->rows = size;
    return st;
}

/* J^T v at a kept call: the cotangent padded with zeros to the call's points when it was padded. */
static stsl_status kept_vjp(stsl__run *R, net_kind kind, stsl__kept *k, const float *v, float *out)
{
    net_io io = {NULL, NULL, v, NULL, out};   /* the backend kept the points and times */
    net_pad p = {NULL, io};
    stsl_status st = STSL_OK;
    if (k->rows > k->n) st = net_pad_make(R, kind, &io, k->n, k->rows, &p);
    if (st == STSL_OK) st = stsl__check_cancel(R);
    if (st == STSL_OK)
        st = kind == NET_EPS_VJP ? stsl__score_pass_vjp(k->unet, p.io.v, p.io.out2, R->err)
                                 : stsl__ae_pass_vjp(k->dec, p.io.v, p.io.out2, R->err);
    if (st == STSL_OK && k->rows > k->n) net_unpad(R, kind, &p, &io, k->n);
    stsl__run_give(R, p.buf);
    return st;
}

stsl_status stsl__net_eps_keep(stsl__run *R, const float *z, const float *t, float *eps, int n,
                               stsl__kept *k)
{
    k->z = z;
    k->t = t;
    k->n = n;
    if (!stsl__net_can_keep(R, n)) return stsl__net_eps(R, z, t, eps, n);
    net_io io = {z, t, NULL, eps, NULL};
    return keep_call(R, NET_EPS, &io, k);
}

stsl_status stsl__net_kept_vjp(stsl__run *R, stsl__kept *k, const float *v, float *vjp)
{
    if (!k->unet) return stsl__net_eps_vjp(R, k->z, k->t, v, NULL, vjp, k->n);
    stsl_status st = kept_vjp(R, NET_EPS_VJP, k, v, vjp);
    stsl__score_pass_free(k->unet);
    k->unet = NULL;
    return st;
}

stsl_status stsl__dec_keep(stsl__run *R, const float *z, float *x, int n, stsl__kept *k)
{
    k->z = z;
    k->n = n;
    if (R->ae_identity || !stsl__ae_can_keep(R->ae) || !fits_one_call(R, n))
        return stsl__dec(R, z, x, n);
    net_io io = {z, NULL, NULL, x, NULL};
    return keep_call(R, NET_DEC, &io, k);
}

stsl_status stsl__dec_kept_vjp(stsl__run *R, stsl__kept *k, const float *u, float *out)
{
    if (!k->dec) return stsl__dec_vjp(R, k->z, u, NULL, out, k->n);
    stsl_status st = kept_vjp(R, NET_DEC_VJP, k, u, out);
    stsl__ae_pass_free(k->dec);
    k->dec = NULL;
    return st;
}

void stsl__kept_free(stsl__kept *k)
{
    stsl__score_pass_free(k->unet);
    stsl__ae_pass_free(k->dec);
    stsl__free(k->own_t);
    memset(k, 0, sizeof *k);
}

/* One autoencoder pass, NET_ENC or NET_DEC, over n points (the identity's: a copy; its latent
 * is the image, dz = dx) */
static stsl_status ae_map(stsl__run *R, net_kind kind, const float *in, float *out, int n, int cancellable)
{
    if (R->ae_identity) {
        if (out != in) memmove(out, in, (size_t)n * R->dz * sizeof(float));
        return STSL_OK;
    }
    net_io io = {in, NULL, NULL, out, NULL};
    return net_chunked(R, kind, &io, n, cancellable);
}

stsl_status stsl__dec(stsl__run *R, const float *z, float *x, int n) { return ae_map(R, NET_DEC, z, x, n, 1); }

stsl_status stsl__dec_vjp(stsl__run *R, const float *z, const float *u, float *x, float *out, int n)
{
    if (R->ae_identity) {
        if (x && x != z) memmove(x, z, (size_t)n * R->dz * sizeof(float));
        if (out != u) memmove(out, u, (size_t)n * R->dz * sizeof(float));
        return STSL_OK;
    }
    net_io io = {z, NULL, u, x, out};
    return net_chunked(R, NET_DEC_VJP, &io, n, 1);
}

stsl_status stsl__enc(stsl__run *R, const float *x, float *z, int n) { return ae_map(R, NET_ENC, x, z, n, 1); }

stsl_status stsl__enc_vjp(stsl__run *R, const float *x, const float *v, float *out, int n)
{
    if (R->ae_identity) {
        if (out != v) memmove(out, v, (size_t)n * R->dx * sizeof(float));
        return STSL_OK;
    }
    net_io io = {x, NULL, v, NULL, out};
    return net_chunked(R, NET_ENC_VJP, &io, n, 1);
}

/* ---- Tweedie ---- */

void stsl__tweedie(double ab, const float *z, const float *eps, float *x0, size_t n)
{
    const double sa = sqrt(ab), s1 = sqrt(1.0 - ab);
    for (size_t i = 0; i < n; i++) x0[i] = (float)(((double)z[i] - s1 * (double)eps[i]) / sa);
}

stsl_status stsl__tweedie_keep(stsl__run *R, const float *z, double t, float *eps, float *x0,
                               int n, stsl__kept *k)
{
    k->t_value = t;
    /* from the heap, not the pool: stsl__kept_free frees it */
    if (!(k->own_t = fill_t(new_floats(R, (size_t)n), t, n))) return STSL_ERR_NOMEM;
    stsl_status st = stsl__net_eps_keep(R, z, k->own_t, eps, n, k);
    if (st == STSL_OK) stsl__tweedie(stsl__ab(R, t), z, eps, x0, (size_t)n * R->dz);
    return st;
}

stsl_status stsl__tweedie_kept_vjp(stsl__run *R, stsl__kept *k, const float *c, float *grad)
{
    const double ab = stsl__ab(R, k->t_value), sa = sqrt(ab), s1 = sqrt(1.0 - ab);
    const size_t m = (size_t)k->n * R->dz;
    float *v = stsl__run_floats(R, m);
    if (!v) return STSL_ERR_NOMEM;
    for (size_t i = 0; i < m; i++) v[i] = (float)(-s1 / sa * (double)c[i]);
    stsl_status st = stsl__net_kept_vjp(R, k, v, grad);
    if (st == STSL_OK)
        for (size_t i = 0; i < m; i++) grad[i] = (float)((double)c[i] / sa + (double)grad[i]);
    stsl__run_give(R, v);
    return st;
}

/* ---- data fit ---- */

static stsl_status op_fail(stsl__run *R, stsl_status st, const char *what)
{
    return stsl__fail(R->err, st, "solver: operator %s failed: %s", what,
                      stsl_operator_last_error(R->op));
}

stsl_status stsl__data_grad(stsl__run *R, const float *x, double weight, int squared, double *loss,
                            float *grad)
{
    const int B = R->batch;
    const size_t dx = R->dx, dy = R->dy;
    double *l = (double *)stsl__calloc((size_t)B, sizeof(double));
    if (!l) return stsl__fail(R->err, STSL_ERR_NOMEM, "solver: out of memory");
    stsl_status st = STSL_OK;
    double l_scale = 1.0;   /* grad l = l_scale * what the operator's VJP wrote */
    if (R->loss_kind == STSL_LOSS_SQUARED) {
        /* l = ||A x - y||^2, grad = 2 J_A^T (A x - y): independent of the operator's own scaling */
        float *r = stsl__run_floats(R, (size_t)B * dy);
        if (!r) {
            stsl__free(l);
            return STSL_ERR_NOMEM;
        }
        st = stsl_operator_forward(R->op, x, r, B);
        if (st != STSL_OK) {
            stsl__run_give(R, r);
            stsl__free(l);
            return op_fail(R, st, "forward");
        }
        for (size_t k = 0; k < (size_t)B * dy; k++) r[k] -= R->y[k];
        for (int b = 0; b < B; b++) l[b] = stsl__dot(r + (size_t)b * dy, r + (size_t)b * dy, dy);
        st = stsl_operator_vjp(R->op, x, r, grad, B);
        stsl__run_give(R, r);
        if (st != STSL_OK) {
            stsl__free(l);
            return op_fail(R, st, "vjp");
        }
        l_scale = 2.0;   /* folded into the scaling below: one pass over grad, the same bits */
    } else {
        st = stsl_operator_data_fit(R->op, R->y, x, B, l, grad);
        if (st != STSL_OK) {
            stsl__free(l);
            return op_fail(R, st, "data_fit");
        }
    }
    for (int b = 0; b < B; b++) {
        double scale = weight;
        if (!squared) {
            /* grad ||r|| = grad ||r||^2 / (2 ||r||); 0 at r = 0 */
            double nr = sqrt(l[b] > 0 ? l[b] : 0);
            scale = nr > 0 ? weight / (2.0 * nr) : 0.0;
            l[b] = nr;
        }
        float *g = grad + (size_t)b * dx;
        scale *= l_scale;
        for (size_t i = 0; i < dx; i++) g[i] = (float)((double)g[i] * scale);
        if (loss) loss[b] = weight * l[b];
    }
    stsl__free(l);
    return STSL_OK;
}

stsl_status stsl__data_cotangent(stsl__run *R, const float *zbar, double weight, int squared,
                                 double *loss, float *x, float *g_zbar)
{
    const int B = R->batch;
    if (R->ae_identity) return stsl__data_grad(R, zbar, weight, squared, loss, g_zbar);
    float *xx = x ? x : stsl__run_floats(R, (size_t)B * R->dx);
    float *gx = stsl__run_floats(R, (size_t)B * R->dx);
    stsl__kept k = {0};
    stsl_status st = (xx && gx) ? STSL_OK : STSL_ERR_NOMEM;
    if (st == STSL_OK) st = stsl__dec_keep(R, zbar, xx, B, &k);
    if (st == STSL_OK) st = stsl__data_grad(R, xx, weight, squared, loss, gx);
    if (st == STSL_OK) st = stsl__dec_kept_vjp(R, &k, gx, g_zbar);
    stsl__kept_free(&k);
    if (!x) stsl__run_give(R, xx);
    stsl__run_give(R, gx);
    return st;
}

stsl_status stsl__chain_grad(stsl__run *R, const float *z, double t, double weight, int squared,
                             float *eps, float *zbar, double *loss, float *grad)
{
    const int B = R->batch;
    const size_t m = (size_t)B * R->dz;
    float *e = eps ? eps : stsl__run_floats(R, m);
    float *zb = zbar ? zbar : stsl__run_floats(R, m);
    float *c = stsl__run_floats(R, m);
    stsl__kept k = {0};
    stsl_status st = (e && zb && c) ? STSL_OK : STSL_ERR_NOMEM;
    if (st == STSL_OK) st = stsl__tweedie_keep(R, z, t, e, zb, B, &k);
    if (st == STSL_OK) st = stsl__data_cotangent(R, zb, weight, squared, loss, NULL, c);
    if (st == STSL_OK) st = stsl__tweedie_kept_vjp(R, &k, c, grad);
    stsl__kept_free(&k);
    if (!eps) stsl__run_give(R, e);
    if (!zbar) stsl__run_give(R, zb);
    stsl__run_give(R, c);
    return st;
}

/* ---- the Tweedie-covariance likelihood (RMP, STSL) ---- */

int stsl__cov_guidance_applies(const stsl__run *R)
{
    return R->op_linear == 1 && R->ae_identity && R->loss_kind == STSL_LOSS_SQUARED;
}

/* The guard of stsl__cov_guidance: per sample, the quadratic form u.Cov u = f u.J^T u (f =
 * (1-ab)/sqrt(ab), so that f J = Cov[x0|x_k]) must be positive (and finite): a covariance is PSD.
 * Otherwise (the image prior's Jacobian at high noise carries the 1/sqrt(abar)-amplified eps error;
 * an off-manifold mean gives negative forms) the product j = J_x0hat^T u is replaced by the flat
 * prior's, J^T u = u/sqrt(ab) (Cov = r^2 I).  No upper bound: Cov <= r^2 I holds on average over
 * x_k, not pointwise -- between two modes of a mixture the spread along their axis exceeds r^2 (up
 * to 2.8 r^2 on GMM 18/5/416, where bounding it sent the path to a mode of weight 0.002). */
static void cov_guard(const stsl__run *R, double ab, const float *u, float *j)
{
    const double sa = sqrt(ab);
    for (int b = 0; b < R->batch; b++) {
        const float *ub = u + (size_t)b * R->dz;
        float *jb = j + (size_t)b * R->dz;
        const double q = stsl__dot(ub, jb, R->dz), jj = stsl__dot(jb, jb, R->dz);
        if (!(q > 0 && isfinite(jj)))   /* also NaN */
            for (size_t i = 0; i < R->dz; i++) jb[i] = (float)((double)ub[i] / sa);
    }
}

/* J_x0hat^T u from J_eps^T u (in place in j: J_x0hat = (I - sqrt(1-ab) J_eps)/sqrt(ab)), guarded */
static void cov_vjp_guarded(const stsl__run *R, double ab, const float *u, float *j)
{
    const double sa = sqrt(ab), c = sqrt(1 - ab) / sa;
    const size_t m = (size_t)R->batch * R->dz;
    for (size_t i = 0; i < m; i++) j[i] = (float)((double)u[i] / sa - c * (double)j[i]);
    cov_guard(R, ab, u, j);
}

/* stsl__cov_guidance's buffers, held for the run (one allocation, not one per evaluation: a fresh
 * 3x256x256 buffer per call cost page faults on every step) */
stsl_status stsl__cov_work_alloc(stsl__run *R, stsl__cov_work *w)
{
    const size_t B = (size_t)R->batch, m = B * R->dz, dy = R->dy;
    *w = (stsl__cov_work){stsl__run_buffer(R, B), stsl__run_buffer(R, m), stsl__run_buffer(R, m),
                    stsl__run_buffer(R, m), stsl__run_buffer(R, m), stsl__run_buffer(R, m),
                    stsl__run_buffer(R, B * dy), stsl__run_buffer(R, B * dy), stsl__run_buffer(R, B * dy),
                    stsl__run_buffer(R, B * dy)};
    if (!(w->tt && w->u0 && w->u1 && w->j0 && w->j1 && w->e1 && w->r && w->rr && w->aj && w->zy))
        return STSL_ERR_NOMEM;
    memset(w->zy, 0, B * dy * sizeof(float));
    return STSL_OK;
}

/* The Tweedie-covariance likelihood gradient (RMP's box line 6 with STSL_LIKVAR_TWEEDIE, STSL's
 * upper levels; a pixel prior, a linear operator, the squared loss): the "MMSE" likelihood y | x_k ~ N(A x0hat, M),
 * M = sigma_y^2 I + A Cov[x0|x_k] A^T, Cov = (1 - abar)/sqrt(abar) J_x0hat (Tweedie's second
 * moment), and
 *     g = -grad_x log N(y; A x0hat(x), M) = -J_x0hat^T A^T M^-1 (y - A x0hat)   (M held fixed).
 * M^-1 r by `steps` Krylov steps, warm-started from the previous evaluation's solution zy (B x d_y,
 * kept in w, 0 at the start): M moves little between neighbouring levels, so the steps
 * accumulate along the ladder (on the GMM testbed one warm step per evaluation matches the exact
 * M^-1 r; 2 cold CG steps do not).  Each step is Galerkin on span{zy, rr}, rr = r - M zy:
 *     z = beta zy + alpha rr minimising z.M z/2 - z.r   (a 2 x 2 solve),
 * which rescales a stale zy; the plain CG step (beta = 1) kept one whose J^T A^T zy threw a
 * gaussian-blur validation image to 4.9 dB.  M v = sigma_y^2 v + f A J_x0hat A^T v needs
 * J_x0hat u, u = A^T v: a VJP (J is symmetric for a true score).  1 + steps VJPs: J^T A^T zy (with
 * eps and x0hat: one pass), then one J^T A^T rr per step; the new zy's product is the combination
 * beta J^T A^T zy + alpha J^T A^T rr by linearity (no VJP of its own), and g = -J^T A^T zy at the
 * last.  Products guarded (cov_guard, the combinations too).  wb receives the noise-model weight of
 * v_eff = ||r||^2 / r.M^-1 r (the scalar variance with the same step along r; the flat
 * sigma_y^2 + cflat when undefined), for the damping. */
stsl_status stsl__cov_guidance(stsl__run *R, const stsl__cov_work *w, const float *z, double t, double sy,
                               double cflat, int steps, float *eps, float *x0, float *g, double *wb)
{
    const int B = R->batch;
    const size_t dz = R->dz, dy = R->dy, m = (size_t)B * dz;
    const double ab = stsl__ab(R, t), f = (1 - ab) / sqrt(ab), s2 = sy * sy;
    float *tt = w->tt, *u0 = w->u0, *u1 = w->u1, *j0 = w->j0, *j1 = w->j1, *e1 = w->e1, *r = w->r,
          *rr = w->rr, *aj = w->aj, *zy = w->zy;
    if (steps < 1) return stsl__fail(R->err, STSL_ERR_INTERNAL, "solver: cov_guidance needs a step");
    for (int b = 0; b < B; b++) tt[b] = (float)t;
    /* u0 = A^T zy (linear operator: the VJP is A^T at any point); eps, J_eps^T u0: one pass */
    stsl_status st = stsl_operator_vjp(R->op, z, zy, u0, B);
    if (st == STSL_OK) st = stsl__net_eps_vjp(R, z, tt, u0, eps, j0, B);
    else st = stsl__fail(R->err, st, "solver: operator vjp failed: %s", stsl_operator_last_error(R->op));
    if (st == STSL_OK) {
        stsl__tweedie(ab, z, eps, x0, m);
        cov_vjp_guarded(R, ab, u0, j0);
        /* r = y - A x0hat */
        st = stsl_operator_forward(R->op, x0, r, B);
        if (st == STSL_OK)
            for (size_t i = 0; i < (size_t)B * dy; i++) r[i] = R->y[i] - r[i];
        else
            st = stsl__fail(R->err, st, "solver: operator failed: %s", stsl_operator_last_error(R->op));
    }
    for (int s = 0; s < steps && st == STSL_OK; s++) {
        /* rr = r - M zy = r - sigma_y^2 zy - f A (J^T u0), u1 = A^T rr */
        st = stsl_operator_forward(R->op, j0, aj, B);
        if (st == STSL_OK) {
            for (size_t i = 0; i < (size_t)B * dy; i++)
                rr[i] = (float)((double)r[i] - s2 * (double)zy[i] - f * (double)aj[i]);
            st = stsl_operator_vjp(R->op, z, rr, u1, B);
        }
        if (st != STSL_OK) {
            st = stsl__fail(R->err, st, "solver: operator failed: %s", stsl_operator_last_error(R->op));
            break;
        }
        if ((st = stsl__net_eps_vjp(R, z, tt, u1, e1, j1, B)) != STSL_OK) break;
        cov_vjp_guarded(R, ab, u1, j1);
        for (int b = 0; b < B; b++) {
            const size_t oy = (size_t)b * dy, oz = (size_t)b * dz;
            /* Galerkin step on span{zy, rr}: z = beta zy + alpha rr minimising z.M z/2 - z.r, with
             * v.M w = sigma_y^2 v.w + f (A^T v).J^T(A^T w) from the products at hand; it rescales
             * a stale warm start (beta), which the plain CG step (beta = 1) cannot */
            const float *zb = zy + oy, *pb = rr + oy, *rb = r + oy;
            const double zz = stsl__dot(zb, zb, dy), zr = stsl__dot(zb, pb, dy),
                         rr2 = stsl__dot(pb, pb, dy), rrr = stsl__dot(pb, rb, dy);
            const double q00 = stsl__dot(u0 + oz, j0 + oz, dz), q01 = stsl__dot(u0 + oz, j1 + oz, dz),
                         q10 = stsl__dot(u1 + oz, j0 + oz, dz), q11 = stsl__dot(u1 + oz, j1 + oz, dz);
            const double a11 = s2 * zz + f * q00, a12 = s2 * zr + f * 0.5 * (q01 + q10), a22 = s2 * rr2 + f * q11;
            const double zyr = stsl__dot(zb, rb, dy);   /* zy.r = zy.(rr + M zy) */
            const double det = a11 * a22 - a12 * a12;
            double beta = 0, alpha = a22 > 0 ? rrr / a22 : 0.0;
            if (a11 > 0 && a22 > 0 && det > 1e-12 * a11 * a22) {
                beta = (a22 * zyr - a12 * rrr) / det;
                alpha = (a11 * rrr - a12 * zyr) / det;
            }
            if (!isfinite(alpha) || !isfinite(beta)) alpha = beta = 0;
            /* the new zy and, by linearity, its products A^T zy and J^T A^T zy */
            for (size_t i = 0; i < dy; i++)
                zy[oy + i] = (float)(beta * zy[oy + i] + alpha * rr[oy + i]);
            for (size_t i = 0; i < dz; i++) {
                j0[oz + i] = (float)(beta * (double)j0[oz + i] + alpha * (double)j1[oz + i]);
                u0[oz + i] = (float)(beta * (double)u0[oz + i] + alpha * (double)u1[oz + i]);
            }
        }
        if (s + 1 < steps) cov_guard(R, ab, u0, j0);
    }
    if (st == STSL_OK) {
        for (size_t i = 0; i < m; i++) g[i] = -j0[i];
        for (int b = 0; b < B && wb; b++) {
            const float *zb = zy + (size_t)b * dy, *rb = r + (size_t)b * dy;
            const double rz = stsl__dot(rb, zb, dy), r2n = stsl__dot(rb, rb, dy);
            const double veff = rz > 0 && r2n > 0 ? r2n / rz : s2 + cflat;
            wb[b] = stsl__nll_weight(R, isfinite(veff) ? veff : s2 + cflat);
        }
    }
    return st;
}

/* ---- operator gain ---- */

stsl_status stsl__op_norm2(stsl__run *R, double *L2)
{
    enum { ITERS = 30 };
    *L2 = 1.0;
    float *u = stsl__run_floats(R, R->dx), *au = stsl__run_floats(R, R->dy), *w = stsl__run_floats(R, R->dx);
    stsl_status st = (u && au && w) ? STSL_OK : STSL_ERR_NOMEM;
    double est = 0;
    if (st == STSL_OK)
        stsl__rng_normal(0x4f504e32u, stsl__stream(STSL_TAG_PROBE, 0, 0, 1), 0, u, R->dx);
    for (int it = 0; it < ITERS && st == STSL_OK; it++) {
        double nu = 0;
        for (size_t i = 0; i < R->dx; i++) nu += (double)u[i] * u[i];
        nu = sqrt(nu);
        if (!(nu > 0) || !isfinite(nu)) break;
        for (size_t i = 0; i < R->dx; i++) u[i] = (float)(u[i] / nu);
        st = stsl_operator_forward(R->op, u, au, 1);
        if (st != STSL_OK) {
            st = op_fail(R, st, "forward");
            break;
        }
        if ((st = stsl_operator_vjp(R->op, u, au, w, 1)) != STSL_OK) {
            st = op_fail(R, st, "vjp");
            break;
        }
        /* Rayleigh quotient u^T A^T A u = ||A u||^2 with ||u|| = 1 */
        double q = 0;
        for (size_t i = 0; i < R->dy; i++) q += (double)au[i] * au[i];
        est = q;
        memcpy(u, w, R->dx * sizeof(float));
    }
    if (st == STSL_OK && isfinite(est) && est > 0) *L2 = est;
    stsl__run_give(R, u);
    stsl__run_give(R, au);
    stsl__run_give(R, w);
    return st;
}

/* ---- Adam ---- */

stsl_status stsl__adam_init(stsl__run *R, stsl__adam *a, size_t n)
{
    a->m = stsl__alloc_doubles(n ? n : 1);
    a->v = stsl__alloc_doubles(n ? n : 1);
    a->n = n;
    a->t = 0;
    if (!a->m || !a->v) {
        stsl__adam_free(a);
        return stsl__fail(R->err, STSL_ERR_NOMEM, "solver: out of memory (Adam state)");
    }
    stsl__adam_reset(a);
    return STSL_OK;
}

void stsl__adam_reset(stsl__adam *a)
{
    memset(a->m, 0, a->n * sizeof(double));
    memset(a->v, 0, a->n * sizeof(double));
    a->t = 0;
}

void stsl__adam_step(stsl__adam *a, float *x, const float *g, double lr)
{
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    a->t++;
    const double c1 = 1.0 - pow(b1, (double)a->t), c2 = 1.0 - pow(b2, (double)a->t);
    for (size_t i = 0; i < a->n; i++) {
        double gi = g[i];
        a->m[i] = b1 * a->m[i] + (1 - b1) * gi;
        a->v[i] = b2 * a->v[i] + (1 - b2) * gi * gi;
        x[i] = (float)((double)x[i] - lr * (a->m[i] / c1) / (sqrt(a->v[i] / c2) + eps));
    }
}

void stsl__adam_free(stsl__adam *a)
{
    stsl__free(a->m);
    stsl__free(a->v);
    a->m = a->v = NULL;
}

/* ---- progress, numerics ---- */

stsl_status stsl__progress(stsl__run *R, int step, const float *z0_est)
{
    R->step = step;
    stsl_solver *sv = R->sv;
    if (sv->progress) {
        float *x = NULL;
        stsl_status st = STSL_OK;
        if (z0_est && stsl__param_int(R, STSL_PARAM_PROGRESS_ESTIMATE)) {
            if (R->ae_identity) {
                x = (float *)z0_est;
            } else {
                x = stsl__run_floats(R, (size_t)R->batch * R->dx);
                if (!x) return STSL_ERR_NOMEM;
                st = stsl__dec(R, z0_est, x, R->batch);
            }
        }
        /* a batch split into groups (PAD_BATCH) reports one count across them */
        int rc = st == STSL_OK ? sv->progress(sv->progress_user, stsl__run_step(R, step),
                                              stsl__run_total(R), x, R->batch)
                               : 0;
        if (x != z0_est) stsl__run_give(R, x);
        if (st != STSL_OK) return st;
        if (rc != 0) {
            atomic_store(&sv->cancel, 1);
            return stsl__fail(R->err, STSL_CANCELLED,
                              "solver: cancelled by the progress callback at step %d of %d",
                              stsl__run_step(R, step), stsl__run_total(R));
        }
    }
    return stsl__check_cancel(R);
}

stsl_status stsl__check_finite(stsl__run *R, const float *buf, size_t n, const char *what)
{
    size_t i = stsl__find_nonfinite(buf, n);
    if (i != (size_t)-1) {
        R->sv->failed_step = stsl__run_step(R, R->step);
        return stsl__fail(R->err, STSL_ERR_NUMERIC,
                          "solver: non-finite value in %s at step %d of %d (sample %zu)", what,
                          R->sv->failed_step, stsl__run_total(R),
                          (size_t)R->first + i / (R->dz ? R->dz : 1));
    }
    return STSL_OK;
}

void stsl__start_from_noise(stsl__run *R, int total, float *z)
{
    R->total = total;
    R->step = 0;
    stsl__noise(R, STSL_TAG_INIT_NOISE, 0, 0, z, R->dz);
    R->est = z;
}

stsl_status stsl__step_end(stsl__run *R, const float *z, size_t m, const char *what, float *est)
{
    stsl_status st = stsl__check_finite(R, z, m, what);
    if (st != STSL_OK) return st;
    R->est = est;
    return stsl__progress(R, R->step, est);
}

stsl_status stsl__end_run(stsl__run *R, stsl_status st, const float *result, float *x_out)
{
    if (st == STSL_OK && result)
        st = stsl__finish(R, result, x_out);
    else if (st == STSL_CANCELLED && R->est)
        stsl__finish(R, R->est, x_out);
    R->est = NULL;
    return st;
}

double stsl__noise_sigma(const stsl__run *R)
{
    double sy = 0;
    if (stsl_operator_get_float(R->op, STSL_PARAM_NOISE_SIGMA, &sy) != STSL_OK || !(sy > 0)) return 0.0;
    return sy;
}

stsl_status stsl__finish(stsl__run *R, const float *z, float *x_out)
{
    /* the final decode is not subject to the cancel flag (it writes the estimate) */
    return ae_map(R, NET_DEC, z, x_out, R->batch, 0);
}

/* continuous VP time with (1 - abar)/abar = sigma^2 (bisection on the interpolated table) */
stsl_status stsl__sigma_range(stsl__run *R, const char *solver, double *smin, double *smax)
{
    const double lo = sqrt((1 - stsl__ab(R, 0)) / stsl__ab(R, 0));
    const double hi = sqrt((1 - stsl__ab(R, R->T_train - 1)) / stsl__ab(R, R->T_train - 1));
    *smin = stsl__param(R, STSL_PARAM_SIGMA_MIN);
    *smax = stsl__param(R, STSL_PARAM_SIGMA_MAX);
    if (*smin < lo) *smin = lo;
    if (*smax > hi) *smax = hi;
    if (!(*smax > *smin))
        return stsl__fail(R->err, STSL_ERR_INVALID_ARG,
                          "solver %s: sigma ladder [%g, %g] is empty on this schedule", solver, *smin,
                          *smax);
    return STSL_OK;
}

double stsl__time_of_sigma(const stsl__run *R, double sigma)
{
    const double target = 1.0 / (1.0 + sigma * sigma);
    double lo = 0, hi = R->T_train - 1;
    if (stsl__ab(R, lo) <= target) return lo;
    if (stsl__ab(R, hi) >= target) return hi;
    for (int it = 0; it < 60; it++) {
        double mid = 0.5 * (lo + hi);
        if (stsl__ab(R, mid) > target)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

double stsl__noise_var(const stsl__run *R)
{
    const double sy = stsl__noise_sigma(R);
    if (sy > 0 || R->loss_kind == STSL_LOSS_SQUARED) return sy * sy;
    double delta = 0;
    if (stsl_operator_get_float(R->op, STSL_PARAM_HUBER_DELTA, &delta) != STSL_OK || !(delta > 0)) return 0.0;
    return delta * delta;
}

double stsl__nll_weight(const stsl__run *R, double v)
{
    if (!(v > 0)) return 0.0;
    switch (R->loss_kind) {
    case STSL_LOSS_HUBER: return 1.0 / v;           /* huber = r^2/2 inside delta */
    case STSL_LOSS_L1: return sqrt(2.0 / v);        /* Laplace of variance v: |r| / b, b = sqrt(v/2) */
    default: return 1.0 / (2.0 * v);                /* ||r||^2 / (2 v) */
    }
}
