/*
 * device.h -- device selection for models: the library's one reader of a device string, and
 * what a choice becomes on this machine (CUDA probing).
 */
#ifndef STSL_MODELS_DEVICE_H
#define STSL_MODELS_DEVICE_H

#include "core/internal.h"

/* Longest device spelling, "cuda:255", with its NUL. */
#define STSL__DEVICE_NAME_SIZE 16

/* Read `text` (the spellings of stsl_context_set_device, include/stsl.h).  On failure *out is
 * untouched and err (STSL_ERRMSG_SIZE) says why: STSL_ERR_INVALID_ARG. */
stsl_status stsl__device_parse(const char *text, stsl__device *out, char *err);
/* The canonical spelling of a choice ("cpu", "auto", "cuda:1"), into buf. */
const char *stsl__device_name(stsl__device d, char buf[STSL__DEVICE_NAME_SIZE]);

/* What a choice means at a load: the CUDA device index, or -1 for the CPU; "auto" becomes
 * CUDA device 0 when one is usable now, else the CPU (*auto_cpu is then 1: a precision the CPU
 * cannot run falls back to float32 there, as include/stsl.h promises for "auto"). */
int stsl__device_resolve(stsl__device d, int *auto_cpu);

#endif
