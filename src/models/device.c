/*
 * device.c -- the device setting (see device.h): parsed once, here, when a program sets it;
 * the loader (model.c) hands the shim a resolved device, never a string.
 */
#include "models/device.h"

#ifdef STSL_WITH_TORCH
#include "../../shim/shim.h"   /* src/models alone includes it (Makefile: STSL_SHIM_USER) */
#endif

#include <stdio.h>
#include <string.h>

#define DEVICE_SPELLINGS "cpu, cuda, cuda:N (N = 0..255) or auto"

stsl_status stsl__device_parse(const char *text, stsl__device *out, char *err)
{
    if (!text) return stsl__fail(err, STSL_ERR_INVALID_ARG, "device is NULL");
    stsl__device d = {STSL__DEVICE_CPU, 0};
    if (!strcmp(text, "cpu")) {
        d.kind = STSL__DEVICE_CPU;
    } else if (!strcmp(text, "auto")) {
        d.kind = STSL__DEVICE_AUTO;
    } else if (!strcmp(text, "cuda")) {
        d.kind = STSL__DEVICE_CUDA;
    } else if (!strncmp(text, "cuda:", 5)) {
        /* 1 to 3 digits, no leading zero, <= 255: one spelling per device */
        const char *p = text + 5;
        size_t n = strspn(p, "0123456789");
        int index = 0;
        for (size_t i = 0; i < n && i < 3; i++) index = index * 10 + (p[i] - '0');
        if (n == 0 || n > 3 || p[n] != '\0' || (n > 1 && p[0] == '0') || index > 255)
            return stsl__fail(err, STSL_ERR_INVALID_ARG,
                              "device '%.32s': the GPU index after 'cuda:' is a number 0..255 "
                              "without sign or leading zeros (devices: " DEVICE_SPELLINGS ")",
                              text);
        d.kind = STSL__DEVICE_CUDA;
        d.index = index;
    } else {
        return stsl__fail(err, STSL_ERR_INVALID_ARG,
                          "device '%.32s' is not one of " DEVICE_SPELLINGS " (lower case, no "
                          "blanks)", text);
    }
    *out = d;
    return STSL_OK;
}

const char *stsl__device_name(stsl__device d, char buf[STSL__DEVICE_NAME_SIZE])
{
    if (d.kind == STSL__DEVICE_CUDA) snprintf(buf, STSL__DEVICE_NAME_SIZE, "cuda:%d", d.index);
    else snprintf(buf, STSL__DEVICE_NAME_SIZE, "%s", d.kind == STSL__DEVICE_AUTO ? "auto" : "cpu");
    return buf;
}

STSL_API stsl_status stsl_context_set_device(stsl_context *ctx, const char *device)
{
    if (!ctx) return STSL_ERR_INVALID_ARG;
    stsl_status st = stsl__device_parse(device, &ctx->device, ctx->err);
    if (st == STSL_OK) stsl__clear_error(ctx->err);
    return st;
}

#ifdef STSL_WITH_TORCH

STSL_API int stsl_cuda_available(void) { return stsl_shim_cuda_available(); }

int stsl__device_resolve(stsl__device d, int *auto_cpu)
{
    *auto_cpu = 0;
    if (d.kind == STSL__DEVICE_CUDA) return d.index;
    if (d.kind == STSL__DEVICE_CPU) return -1;
    if (stsl_shim_cuda_available()) return 0;
    *auto_cpu = 1;
    return -1;
}

#else

/* stsl_has_torch is in core/status.c; without libtorch there is no CUDA backend. */
STSL_API int stsl_cuda_available(void) { return 0; }

int stsl__device_resolve(stsl__device d, int *auto_cpu)
{
    *auto_cpu = d.kind == STSL__DEVICE_AUTO;
    return d.kind == STSL__DEVICE_CUDA ? d.index : -1;
}

#endif
