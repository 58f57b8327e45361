/* Version, status strings, per-handle error text and small shared checks. */
#include "core/internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define STSL_STR2(x) #x
#define STSL_STR(x) STSL_STR2(x)

STSL_API const char *stsl_version(void)
{
    return STSL_STR(STSL_VERSION_MAJOR) "." STSL_STR(STSL_VERSION_MINOR) "." STSL_STR(STSL_VERSION_PATCH);
}

STSL_API unsigned stsl_version_number(void) { return STSL_VERSION_NUMBER; }

STSL_API const char *stsl_strerror(stsl_status status)
{
    switch (status) {
    case STSL_OK: return "success";
    case STSL_ERR_INVALID_ARG: return "invalid argument";
    case STSL_ERR_NOMEM: return "out of memory";
    case STSL_ERR_IO: return "input/output error";
    case STSL_ERR_FORMAT: return "corrupt or unsupported file format";
    case STSL_ERR_MODEL: return "model error";
    case STSL_ERR_BACKEND: return "device or backend unavailable";
    case STSL_ERR_SHAPE: return "shape mismatch";
    case STSL_ERR_UNSUPPORTED: return "not supported";
    case STSL_CANCELLED: return "cancelled";
    case STSL_ERR_NUMERIC: return "non-finite value (NaN or Inf)";
    case STSL_ERR_LIMIT: return "size limit exceeded";
    case STSL_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

stsl_status stsl__fail(char *buf, stsl_status status, const char *fmt, ...)
{
    if (buf) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, STSL_ERRMSG_SIZE, fmt, ap);
        va_end(ap);
    }
    return status;
}

void stsl__clear_error(char *buf)
{
    if (buf) buf[0] = '\0';
}

stsl_status stsl__check_shape(char *err, stsl_shape s)
{
    if (s.channels < 1 || s.height < 1 || s.width < 1)
        return stsl__fail(err, STSL_ERR_INVALID_ARG, "shape %dx%dx%d: every dimension must be >= 1",
                          (int)s.channels, (int)s.height, (int)s.width);
    if (s.height > STSL_MAX_IMAGE_DIM || s.width > STSL_MAX_IMAGE_DIM)
        return stsl__fail(err, STSL_ERR_LIMIT, "shape %dx%dx%d: height and width are limited to %d",
                          (int)s.channels, (int)s.height, (int)s.width, STSL_MAX_IMAGE_DIM);
    if ((int64_t)s.height * s.width > STSL_MAX_IMAGE_PIXELS)
        return stsl__fail(err, STSL_ERR_LIMIT, "shape %dx%dx%d: more than %d pixels",
                          (int)s.channels, (int)s.height, (int)s.width, STSL_MAX_IMAGE_PIXELS);
    /* Latent and feature tensors may have more channels than images; 4096 bounds the size
     * arithmetic (4096 * 2^26 floats stays far below SIZE_MAX). */
    if (s.channels > 4096)
        return stsl__fail(err, STSL_ERR_LIMIT, "shape %dx%dx%d: more than 4096 channels",
                          (int)s.channels, (int)s.height, (int)s.width);
    return STSL_OK;
}

size_t stsl__find_nonfinite(const float *x, size_t n)
{
    /* Every solver step checks its iterate: blocks of 256 without an early exit (the exponent
     * bits all set is Inf or NaN), which the compiler vectorises; the exact place only once a
     * block has one. */
    enum { BLOCK = 256 };
    size_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK) {
        uint32_t any = 0;
        for (size_t k = 0; k < BLOCK; k++) {
            uint32_t bits;
            memcpy(&bits, x + i + k, sizeof bits);
            any |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
        }
        if (any) break;
    }
    for (; i < n; i++)
        if (!isfinite(x[i])) return i;
    return (size_t)-1;
}

STSL_API int stsl_has_torch(void)
{
#ifdef STSL_WITH_TORCH
    return 1;
#else
    return 0;
#endif
}
