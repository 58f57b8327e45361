/* Context: the log sink, thread count and precision (its device: models/device.c, beside the one
 * reader of device strings).  The library has no global mutable state besides the
 * fault-injection test hook. */
#include "core/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

STSL_API stsl_status stsl_context_create(stsl_context **out)
{
    if (!out) return STSL_ERR_INVALID_ARG;
    *out = NULL;
    stsl_context *ctx = stsl__calloc(1, sizeof *ctx);
    if (!ctx) return STSL_ERR_NOMEM;
    ctx->threads = 1;
    ctx->log_level = STSL_LOG_INFO;
    /* ctx->device: calloc's zero is STSL__DEVICE_CPU, the default (STSL_DEFAULT_DEVICE);
     * stsl_context_set_device is in models/device.c, with the one reader of device strings */
    *out = ctx;
    return STSL_OK;
}

STSL_API void stsl_context_destroy(stsl_context *ctx) { stsl__free(ctx); }

STSL_API stsl_status stsl_context_set_log(stsl_context *ctx, stsl_log_fn fn, void *user,
                                          stsl_log_level min_level)
{
    if (!ctx) return STSL_ERR_INVALID_ARG;
    if ((int)min_level < STSL_LOG_DEBUG || (int)min_level > STSL_LOG_NONE)
        return stsl__fail(ctx->err, STSL_ERR_INVALID_ARG, "log level %d out of range 0..4",
                          (int)min_level);
    ctx->log_fn = fn;
    ctx->log_user = user;
    ctx->log_level = min_level;
    stsl__clear_error(ctx->err);
    return STSL_OK;
}

STSL_API stsl_status stsl_context_set_threads(stsl_context *ctx, int threads)
{
    if (!ctx) return STSL_ERR_INVALID_ARG;
    if (threads < 1 || threads > 256)
        return stsl__fail(ctx->err, STSL_ERR_INVALID_ARG, "threads %d out of range 1..256", threads);
    ctx->threads = threads;
    stsl__clear_error(ctx->err);
    return STSL_OK;
}

STSL_API int stsl_context_get_threads(const stsl_context *ctx) { return ctx ? ctx->threads : 1; }

STSL_API stsl_status stsl_context_set_precision(stsl_context *ctx, stsl_precision precision)
{
    if (!ctx) return STSL_ERR_INVALID_ARG;
    if (precision != STSL_PRECISION_FLOAT32 && precision != STSL_PRECISION_FLOAT16 &&
        precision != STSL_PRECISION_BFLOAT16)
        return stsl__fail(ctx->err, STSL_ERR_INVALID_ARG,
                          "precision %d is not STSL_PRECISION_FLOAT32, _FLOAT16 or _BFLOAT16",
                          (int)precision);
    ctx->precision = precision;
    stsl__clear_error(ctx->err);
    return STSL_OK;
}

STSL_API stsl_precision stsl_context_get_precision(const stsl_context *ctx)
{
    return ctx ? ctx->precision : STSL_PRECISION_FLOAT32;
}

STSL_API stsl_status stsl_context_set_half(stsl_context *ctx, int enable)
{
    if (!ctx) return STSL_ERR_INVALID_ARG;
    if (enable != 0 && enable != 1)
        return stsl__fail(ctx->err, STSL_ERR_INVALID_ARG, "half must be 0 or 1, got %d", enable);
    return stsl_context_set_precision(ctx, enable ? STSL_PRECISION_FLOAT16 : STSL_PRECISION_FLOAT32);
}

STSL_API const char *stsl_context_last_error(const stsl_context *ctx)
{
    return ctx ? ctx->err : "context is NULL";
}

stsl_status stsl__ctx_fail(stsl_context *ctx, stsl_status status, const char *fmt, ...)
{
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
        va_end(ap);
    }
    return status;
}

void stsl__log(const stsl_context *ctx, stsl_log_level level, const char *fmt, ...)
{
    if (!ctx || !ctx->log_fn || level < ctx->log_level || ctx->log_level == STSL_LOG_NONE) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ctx->log_fn(ctx->log_user, level, msg);
}

int stsl__ctx_threads(const stsl_context *ctx) { return ctx ? ctx->threads : 1; }

void *stsl__shared_new(stsl_context *ctx, size_t size, size_t lock_at, const char *what)
{
    unsigned char *h = stsl__calloc(1, size);
    if (!h) {
        stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "%s: out of memory", what);
        return NULL;
    }
    if (pthread_mutex_init((pthread_mutex_t *)(h + lock_at), NULL) != 0) {
        stsl__free(h);
        stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "%s: cannot create a mutex", what);
        return NULL;
    }
    return h;
}

stsl_status stsl__shared_record(pthread_mutex_t *lock, char *dst, stsl_status st, const char *err)
{
    if (st != STSL_OK) {
        pthread_mutex_lock(lock);
        memcpy(dst, err, STSL_ERRMSG_SIZE);
        pthread_mutex_unlock(lock);
    }
    return st;
}
